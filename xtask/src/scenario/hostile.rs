//! `hostile`: a folder of bad inputs imported by the real `directory-sync`
//! binary, then an export of database rows whose ids try to leave the
//! folder. Every bad input must end as a clear per-file error or a safe
//! import, with no panic, nothing written outside the folder, and every good
//! file imported.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::Value;

use super::Checks;

/// Files that must import (possibly with a warning), relative to the folder.
const GOOD: &[(&str, &[u8])] = &[
    ("plain.md", b"just text\n"),
    ("crlf.md", b"---\r\ntitle: crlf\r\n---\r\nbody\r\n"),
    ("empty.md", b""),
    ("frontmatter only.md", b"---\ntitle: only\n---\n"),
    ("unterminated.md", b"---\ntitle: never closed\nbody\n"),
    ("yaml list.md", b"---\n- a\n- b\n---\nbody\n"),
    ("yaml scalar.md", b"---\njust a sentence\n---\nbody\n"),
    ("-leading dash.md", b"dash\n"),
    ("CON.md", b"a reserved name elsewhere\n"),
    ("Case.md", b"upper\n"),
    ("case.md", b"lower\n"),
    ("a..b.md", b"two dots inside a name\n"),
    ("ünïcödé 名前 🚀.md", b"unicode name\n"),
    ("deep/er/still/deeper.md", b"nested\n"),
];

pub fn run(quick: bool) -> Result<()> {
    let _ = quick; // the hostile folder is small either way
    let binary = super::workspace_binary("directory-sync", "directory-sync")?;
    let outer = tempfile::tempdir()?;
    let root = outer.path().join("vault");
    let outside = outer.path().join("outside");
    std::fs::create_dir_all(&root)?;
    std::fs::create_dir_all(&outside)?;
    std::fs::write(outside.join("secret.md"), "outside the folder")?;
    let expected_failures = build(&root, &outside)?;
    let before = listing(outer.path());
    let mut checks = Checks::default();

    let import = Command::new(&binary).arg("--json").arg("import").arg(&root).env_remove("DATABASE_URL").output()?;
    let stderr = String::from_utf8_lossy(&import.stderr);
    checks.check(!stderr.contains("panicked"), "no panic while importing");
    checks.check(
        import.status.code() == Some(1),
        &format!("exit code 1 (some files failed), got {:?}", import.status.code()),
    );
    let summary: Value = serde_json::from_slice(&import.stdout).context("the import printed no JSON summary")?;
    let failed: BTreeSet<String> = summary["failed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["path"].as_str().map(str::to_owned))
        .collect();
    let reasons_clear =
        summary["failed"].as_array().into_iter().flatten().all(|p| p["error"].as_str().is_some_and(|e| e.len() > 10));
    checks.check(failed == expected_failures, &format!("failed exactly the bad files: {failed:?}"));
    checks.check(reasons_clear, "every failure has a reason");
    // The good files, the alias bomb, the huge line, and the unreadable file when root can read it.
    let good = GOOD.len() + 2 + usize::from(!expected_failures.contains("unreadable.md"));
    checks.check(
        summary["imported"].as_u64() == Some(good as u64),
        &format!("every good file imported ({} of {good})", summary["imported"]),
    );
    let warned: BTreeSet<&str> =
        summary["warnings"].as_array().into_iter().flatten().filter_map(|w| w["path"].as_str()).collect();
    let expected = BTreeSet::from(["alias bomb.md", "yaml list.md", "yaml scalar.md"]);
    checks.check(
        warned == expected,
        &format!("non-mapping frontmatter and the alias bomb imported whole, with warnings: {warned:?}"),
    );

    changing_while_read(&binary, &root, &mut checks)?;

    // Rows whose ids try to escape, written behind the store's back.
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(insert_escaping_rows(&root.join(".directory-sync/store.db")))?;
    let export = Command::new(&binary).arg("--json").arg("export").arg(&root).env_remove("DATABASE_URL").output()?;
    checks.check(!String::from_utf8_lossy(&export.stderr).contains("panicked"), "no panic while exporting");
    let summary: Value = serde_json::from_slice(&export.stdout).context("the export printed no JSON summary")?;
    let refused = summary["failed"].as_array().map_or(0, Vec::len);
    checks.check(refused == 3, &format!("3 escaping ids refused on export, {refused} failures"));
    checks.check(listing(outer.path()) == before, "nothing written outside the folder");
    checks.check(
        std::fs::read_to_string(outside.join("secret.md"))? == "outside the folder",
        "the symlink target outside is untouched",
    );
    checks.finish()
}

/// A file rewritten again and again while an import reads the folder: the
/// import must not fail or panic, and once the writes stop, the next import
/// must hold the file's last version (its mtime was too fresh to trust).
fn changing_while_read(binary: &Path, root: &Path, checks: &mut Checks) -> Result<()> {
    let path = root.join("changing.md");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || -> std::io::Result<String> {
            let mut text = String::new();
            for round in 0.. {
                text = format!("version {round}\n{}", "line of text\n".repeat(round % 500));
                std::fs::write(&path, &text)?;
                if stop.load(std::sync::atomic::Ordering::Relaxed) && round > 100 {
                    break;
                }
            }
            Ok(text)
        })
    };
    let during = Command::new(binary).arg("--json").arg("import").arg(root).env_remove("DATABASE_URL").output()?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let last = writer.join().map_err(|_| anyhow::anyhow!("the writer thread panicked"))??;
    let summary: Value = serde_json::from_slice(&during.stdout).context("no JSON summary")?;
    let failed_it = summary["failed"].as_array().into_iter().flatten().any(|p| p["path"] == "changing.md");
    checks.check(
        !String::from_utf8_lossy(&during.stderr).contains("panicked") && !failed_it,
        "a file rewritten during the import: no panic, no failure",
    );
    let after = Command::new(binary).arg("--json").arg("import").arg(root).env_remove("DATABASE_URL").output()?;
    anyhow::ensure!(after.status.code().is_some_and(|c| c <= 1), "the import after the writes failed");
    let runtime = tokio::runtime::Runtime::new()?;
    let stored: String = runtime.block_on(async {
        let url = format!("sqlite://{}", root.join(".directory-sync/store.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await?;
        let content = sqlx::query_scalar("SELECT content FROM entities WHERE id = 'changing'").fetch_one(&pool).await;
        pool.close().await;
        anyhow::Ok(content?)
    })?;
    checks.check(stored == last, "after the writes stop, the next import holds the file's last version");
    Ok(())
}

/// Writes the hostile folder; returns the paths that must fail.
fn build(root: &Path, outside: &Path) -> Result<BTreeSet<String>> {
    for (path, bytes) in GOOD {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap_or(root))?;
        std::fs::write(full, bytes)?;
    }
    let mut bomb = String::from("---\na: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
    for (prev, next) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().zip(["b", "c", "d", "e", "f", "g", "h", "i"]) {
        writeln!(bomb, "{next}: &{next} [{}]", vec![format!("*{prev}"); 9].join(","))?;
    }
    bomb.push_str("---\nbody\n");
    std::fs::write(root.join("alias bomb.md"), bomb)?;
    std::fs::write(root.join("huge line.md"), "x".repeat(2_000_000))?;
    let mut failing = BTreeSet::new();
    let mut bad = |path: &str, bytes: &[u8]| -> Result<()> {
        std::fs::write(root.join(path), bytes)?;
        failing.insert(path.to_owned());
        Ok(())
    };
    bad("invalid utf8.md", b"caf\xe9\n")?;
    bad("utf16 bom.md", &[0xff, 0xfe, b'h', 0, b'i', 0])?;
    bad("binary.md", b"abc\0def")?;
    bad("too big.md", &vec![b'a'; 11 * 1024 * 1024])?;
    std::os::unix::fs::symlink(outside.join("secret.md"), root.join("escape link.md"))?;
    std::os::unix::fs::symlink(root.join("loop.md"), root.join("loop.md"))?;
    failing.insert("escape link.md".into());
    failing.insert("loop.md".into());
    // Unreadable to anyone but root (who reads it anyway): a failure or an import, as this process can read.
    let unreadable = root.join("unreadable.md");
    std::fs::write(&unreadable, "secret\n")?;
    std::fs::set_permissions(&unreadable, std::os::unix::fs::PermissionsExt::from_mode(0o000))?;
    if std::fs::read(&unreadable).is_err() {
        failing.insert("unreadable.md".into());
    }
    let fifo = root.join("fifo.md");
    let status = Command::new("mkfifo").arg(&fifo).status()?;
    anyhow::ensure!(status.success(), "mkfifo failed");
    failing.insert("fifo.md".into());
    Ok(failing)
}

async fn insert_escaping_rows(database: &Path) -> Result<()> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", database.display())).await?;
    for (revision, id) in ["../../outside/pwned", "../escape", "/tmp/abs"].iter().enumerate() {
        sqlx::query(
            "INSERT INTO entities (entity_type, id, content, metadata, content_hash, created_at, updated_at, version, revision)
             VALUES ('note', ?, 'evil', '{}', ?, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 1,
                     (SELECT COALESCE(MAX(revision), 0) + 1 FROM entities))",
        )
        .bind(id)
        .bind(format!("evil{revision}"))
        .execute(&pool)
        .await?;
    }
    pool.close().await;
    Ok(())
}

/// Every path under `dir` outside the vault folder.
fn listing(dir: &Path) -> BTreeSet<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.path().to_path_buf())
        .filter(|p| !p.starts_with(dir.join("vault")))
        .collect()
}
