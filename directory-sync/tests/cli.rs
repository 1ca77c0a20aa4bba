//! The `directory-sync` binary as people run it: real processes, real folders.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str], database: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_directory-sync"));
    command.args(args).env_remove("DATABASE_URL");
    if let Some(url) = database {
        command.env("DATABASE_URL", url);
    }
    command.output().unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|err| panic!("{err}: {stdout:?} / {}", String::from_utf8_lossy(&output.stderr)))
}

fn write(root: &Path, relative: &str, text: &[u8]) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn sync_import_export_and_status(database: Option<&str>) {
    let folder = tempfile::tempdir().unwrap();
    let root = folder.path().to_str().unwrap();
    write(folder.path(), "Hello.md", b"---\ntitle: Hello\n---\nworld\n");
    write(folder.path(), "person/Ada.md", b"---\nborn: 1815\n---\nMathematician\n");
    write(folder.path(), "broken.md", b"\xff\xfe not text");

    let first = run(&["--json", "sync", root], database);
    assert_eq!(first.status.code(), Some(1), "a failed file makes exit code 1");
    let summary = json(&first);
    assert_eq!(summary["imported"], 2);
    assert_eq!(summary["failed"][0]["path"], "broken.md");
    assert!(summary["failed"][0]["error"].as_str().unwrap().contains("UTF-8"));

    // Text output: the last sync and its failure in `status`, true job
    // counts; a quick sync prints its summary without a stale first
    // progress line ("Importing: 0/3 files").
    let status = run(&["status", root], database);
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(said.contains("Sync complete: 2 imported, 0 updated, 0 unchanged"), "{said}");
    assert!(said.contains("  failed broken.md: "), "the last sync's failure: {said}");
    assert!(said.contains("jobs: 0 running, 0 queued, 0 waiting to retry, 0 dead"), "{said}");
    assert!(said.contains("vectors: none (search is text search; `sync --embedder lexical`"), "{said}");
    let again = run(&["sync", root], database);
    let progress = String::from_utf8_lossy(&again.stderr);
    assert!(!progress.contains("Importing: 0/"), "{progress}");
    assert!(String::from_utf8_lossy(&again.stdout).contains(" unchanged, "));

    std::fs::remove_file(folder.path().join("broken.md")).unwrap();
    let second = run(&["--json", "sync", root], database);
    assert_eq!(second.status.code(), Some(0));
    assert_eq!(json(&second)["imported"], 0);
    assert!(Path::new(root).join(".directory-sync/config.json").exists(), "the folder's settings are saved");

    let status = run(&["--json", "status", root], database);
    assert_eq!(status.status.code(), Some(0));
    let status = json(&status);
    assert_eq!(status["entities"]["person"], 1, "person/ was discovered as a type: {status}");
    assert_eq!(status["entities"]["note"], 1);
    assert_eq!(status["embedder"], "none", "{status}");

    let detached = run(&["--json", "export", "--detach", root], database);
    assert_eq!(detached.status.code(), Some(0));
    let id = json(&detached)["job_id"].as_str().unwrap().to_owned();
    let shown = run(&["--json", "jobs", "--path", root, "show", &id], database);
    assert_eq!(json(&shown)["state"], "queued");
    assert!(json(&shown).get("input").is_none(), "the view, not the queue's row: {}", json(&shown));
    let listed = run(&["--json", "jobs", "--path", root, "list"], database);
    assert!(json(&listed).as_array().unwrap().iter().all(|job| job.get("input").is_none() && job["current"].is_u64()));
    let cancelled = run(&["--json", "jobs", "--path", root, "cancel", &id], database);
    assert_eq!(json(&cancelled)["cancelled"], true);

    let hits = run(&["--json", "search", "Mathematician", "--mode", "text", "--path", root], database);
    assert_eq!(json(&hits)["hits"][0]["key"]["id"], "Ada");
}

#[test]
fn sqlite_by_default_inside_the_folder() {
    sync_import_export_and_status(None);
}

#[tokio::test]
async fn postgres_by_database_url() {
    let Some(scratch) = scratch_pg::ScratchPg::from_env("DATABASE_URL", "ds_cli", "postgres_by_database_url").await
    else {
        return;
    };
    let url = scratch.url.clone();
    // The binary runs to completion; keep the runtime's threads free meanwhile.
    tokio::task::spawn_blocking(move || sync_import_export_and_status(Some(&url))).await.unwrap();
    scratch.drop_database().await.unwrap();
}

#[test]
fn bad_usage_and_configuration_exit_2_with_one_line() {
    let folder = tempfile::tempdir().unwrap();
    let root = folder.path().to_str().unwrap();
    let usage = run(&["sync"], None);
    assert_eq!(usage.status.code(), Some(2));
    let config = run(&["sync", "--priority", "11", root], None);
    assert_eq!(config.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&config.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("sync_priority"), "{stderr}");
    let url = run(&["--database", "mysql://x", "status", root], None);
    assert_eq!(url.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&url.stderr).contains("unsupported database URL"));
}

#[test]
fn watch_syncs_then_imports_each_change_until_interrupted() {
    use std::io::BufRead;
    let folder = tempfile::tempdir().unwrap();
    write(folder.path(), "first.md", b"already here\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_directory-sync"))
        .args(["--json", "watch", folder.path().to_str().unwrap()])
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_summary = || -> serde_json::Value {
        let line = lines.next().expect("watch printed a summary per job").unwrap();
        serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line}"))
    };
    let initial = loop {
        let line = next_summary();
        if line["job_type"] == "directory-sync" {
            break line;
        }
    };
    assert_eq!(initial["imported"], 1, "the initial sync: {initial}");
    write(folder.path(), "second.md", b"written while watching\n");
    let change = loop {
        let summary = next_summary();
        if summary["job_type"] == "directory-import" && summary["imported"] == 1 {
            break summary;
        }
    };
    assert_eq!(change["failed"], serde_json::json!([]));
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(child.wait().unwrap().code(), Some(0), "Ctrl-C stops the watch cleanly");
}

#[test]
fn batch_tools_from_the_command_line() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().to_str().unwrap();
    let docs = r#"{"documents": [{"id": "a", "content": "sourdough bread"}, {"id": "b", "content": "sponge cake"}],
                   "collection": "recipe"}"#;
    // By default a folder keeps no vectors: a vector query says why it
    // cannot run, a hybrid one is a text search.
    let plain = tempfile::tempdir().unwrap();
    let plain_path = plain.path().to_str().unwrap();
    let added = run(&["tool", "batch_add", docs, "--path", plain_path], None);
    assert_eq!(added.status.code(), Some(0), "{}", String::from_utf8_lossy(&added.stderr));
    assert_eq!(json(&added)["embedding_jobs"], serde_json::json!([]), "no model, no embedding jobs");
    let queries = r#"{"queries": [{"query": "sourdough", "search_type": "vector"}, {"query": "sourdough"}]}"#;
    let found = run(&["tool", "batch_search", queries, "--path", plain_path], None);
    assert_eq!(found.status.code(), Some(1), "the vector query failed");
    let found = json(&found);
    assert_eq!(found["errors"][0]["item"], "query 0", "{found}");
    assert!(found["errors"][0]["reason"].as_str().unwrap().contains("needs an embedding model"), "{found}");
    assert_eq!(found["results"][0]["hits"][0]["id"], "a", "hybrid is text search here: {found}");
    assert_eq!(found["results"][0]["hits"][0]["score"], 1.0, "with text scores: {found}");

    let chosen = run(&["sync", path, "--embedder", "lexical"], None);
    assert_eq!(chosen.status.code(), Some(0), "{}", String::from_utf8_lossy(&chosen.stderr));
    let added = run(&["tool", "batch_add", docs, "--path", path], None);
    assert_eq!(added.status.code(), Some(0), "{}", String::from_utf8_lossy(&added.stderr));
    assert_eq!(json(&added)["processed"], 2);

    let mut search = Command::new(env!("CARGO_BIN_EXE_directory-sync"))
        .args(["tool", "batch_search", "-", "--path", path])
        .env_remove("DATABASE_URL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let queries =
        br#"{"queries": [{"query": "sourdough", "search_type": "vector"}, {"query": "x", "filter": "nope ="}]}"#;
    std::io::Write::write_all(&mut search.stdin.take().unwrap(), queries).unwrap();
    let found = search.wait_with_output().unwrap();
    assert_eq!(found.status.code(), Some(1), "one query failed");
    let found = json(&found);
    assert_eq!(found["results"][0]["hits"][0]["id"], "a", "embedded before the command returned: {found}");
    assert_eq!(found["errors"][0]["item"], "query 1");

    let unknown = run(&["tool", "batch_frobnicate", "{}", "--path", path], None);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown tool `batch_frobnicate`"));
    let bad = run(&["tool", "batch_delete", "{\"filter\": 1}", "--path", path], None);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("batch_delete"));
}

/// A folder that keeps vectors gets them for every note, however the notes
/// came without: synced before vectors were chosen, under a settings file
/// of an older version (no `embedder` key, read as lexical), or through
/// another database. Each sync queues what is missing and waits for it.
#[test]
fn a_folder_that_keeps_vectors_gets_them_for_every_note() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().to_str().unwrap();
    std::fs::write(folder.path().join("zebra.md"), "The zebra grazes on the savanna.\n").unwrap();
    let vector = |expect_found: bool| {
        let found = run(&["--json", "search", "zebra savanna", "--mode", "vector", "--path", path], None);
        let text = String::from_utf8_lossy(&found.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&found.stderr).into_owned();
        assert_eq!(text.contains(r#""id":"zebra""#), expect_found, "{text} {stderr}");
        found.status.code()
    };
    let synced = run(&["sync", path], None);
    assert_eq!(synced.status.code(), Some(0), "{}", String::from_utf8_lossy(&synced.stderr));
    assert_eq!(vector(false), Some(2), "no vectors by default: vector search refuses");

    // The settings file of an older version: no `embedder` key.
    let config = folder.path().join(".directory-sync/config.json");
    let mut settings: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    settings.as_object_mut().unwrap().remove("embedder");
    std::fs::write(&config, settings.to_string()).unwrap();
    let synced = run(&["sync", path], None);
    assert_eq!(synced.status.code(), Some(0), "{}", String::from_utf8_lossy(&synced.stderr));
    assert_eq!(vector(true), Some(0), "the note synced before has its vector now");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(saved["embedder"], "lexical", "and the setting is written out");
}
