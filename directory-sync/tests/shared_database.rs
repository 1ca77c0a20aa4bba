//! Many commands, many folders, one database: the `directory-sync` binary
//! as people run it from scripts and several terminals. Real processes;
//! SQLite, and PostgreSQL when `DATABASE_URL` is set.

use std::path::Path;
mod common;

use common::{command, run};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

fn json(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|err| panic!("{err}: {stdout:?} / {}", String::from_utf8_lossy(&output.stderr)))
}

fn ok(output: &Output) -> serde_json::Value {
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    json(output)
}

fn notes(folder: &Path, names: &[&str]) {
    let old = SystemTime::now() - Duration::from_secs(60);
    for name in names {
        let path = folder.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("---\ntitle: {name}\n---\nbody\n")).unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
    }
}

fn job_state(id: &str, database: &str, folder: &str) -> String {
    let shown = run(&["--json", "jobs", "--path", folder, "show", id], database);
    ok(&shown)["state"].as_str().unwrap().to_owned()
}

/// A worker process, stopped with SIGTERM when dropped.
struct Worker(Child);

impl Worker {
    fn start(database: &str, folder: &str) -> Self {
        let child = command(&["worker", "--path", folder], database).stderr(Stdio::null()).spawn().unwrap();
        Self(child)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// Waits (bounded) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Each case runs on SQLite and, with `DATABASE_URL`, on a fresh PostgreSQL database.
fn on_both(test: &str, case: impl Fn(&str)) {
    let dir = tempfile::tempdir().unwrap();
    case(&format!("sqlite://{}", dir.path().join("shared.db").display()));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(scratch) = runtime.block_on(scratch_pg::ScratchPg::from_env("DATABASE_URL", "ds_shared", test)) else {
        return;
    };
    case(&scratch.url);
    runtime.block_on(scratch.drop_database()).unwrap();
}

/// A plain `sync` of one folder runs only its own job: another folder's
/// queued job stays queued for a real worker, which then runs it.
#[test]
fn a_sync_of_one_folder_leaves_other_folders_jobs_queued() {
    on_both("other_folders_jobs", |database| {
        let (fa, fb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (fa.path().to_str().unwrap(), fb.path().to_str().unwrap());
        notes(fa.path(), &["a1.md"]);
        notes(fb.path(), &["b1.md", "b2.md"]);
        let queued = ok(&run(&["--json", "sync", a, "--detach"], database));
        let id = queued["job_id"].as_str().unwrap().to_owned();
        let summary = ok(&run(&["--json", "sync", b], database));
        assert_eq!(summary["imported"], 2);
        assert_eq!(job_state(&id, database, b), "queued", "the other folder's job was left alone");
        let _worker = Worker::start(database, a);
        eventually("the worker ran the queued job", || job_state(&id, database, a) == "completed");
    });
}

/// Different work is different jobs: imports of other files, exports of
/// other types; the same request twice is one job.
#[test]
fn different_work_is_never_merged_into_one_job() {
    on_both("different_work", |database| {
        let folder = tempfile::tempdir().unwrap();
        let root = folder.path().to_str().unwrap();
        notes(folder.path(), &["a.md", "b.md", "person/ada.md", "project/x.md"]);
        let id = |args: &[&str]| {
            let mut all = vec!["--json"];
            all.extend_from_slice(args);
            all.push("--detach");
            ok(&run(&all, database))["job_id"].as_str().unwrap().to_owned()
        };
        let (import_a, import_b) = (id(&["import", root, "--file", "a.md"]), id(&["import", root, "--file", "b.md"]));
        assert_ne!(import_a, import_b);
        assert_eq!(import_a, id(&["import", root, "--file", "a.md"]), "the same request joins the queued job");
        let (person, project) = (id(&["export", root, "--only", "person"]), id(&["export", root, "--only", "project"]));
        assert_ne!(person, project);
        let sync = id(&["sync", root]);
        let _worker = Worker::start(database, root);
        for job in [&import_a, &import_b, &person, &project, &sync] {
            eventually("every job completed", || job_state(job, database, root) == "completed");
        }
        let status = ok(&run(&["--json", "status", root], database));
        assert_eq!(status["entities"]["note"], 2, "both listed files imported: {status}");
    });
}

/// Any mix of commands on one folder at once: three processes queueing
/// syncs in a loop beside a `watch` and a `worker`, then pairs of `sync`
/// on a fresh folder: no call fails, and folder and database agree.
#[test]
fn many_processes_on_one_folder_never_fail_because_of_each_other() {
    on_both("many_processes", |database| {
        let folder = tempfile::tempdir().unwrap();
        let root = folder.path().to_str().unwrap().to_owned();
        let names: Vec<String> = (0..40).map(|i| format!("n{i}.md")).collect();
        notes(folder.path(), &names.iter().map(String::as_str).collect::<Vec<_>>());
        ok(&run(&["--json", "sync", &root], database));
        let mut watch = command(&["--quiet", "watch", &root], database).stdout(Stdio::null()).spawn().unwrap();
        let worker = Worker::start(database, &root);
        let failures: Vec<String> = std::thread::scope(|scope| {
            let callers: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        (0..30)
                            .map(|_| run(&["--json", "sync", &root, "--detach"], database))
                            .filter(|out| out.status.code() != Some(0))
                            .map(|out| String::from_utf8_lossy(&out.stderr).into_owned())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            callers.into_iter().flat_map(|caller| caller.join().unwrap()).collect()
        });
        assert!(failures.is_empty(), "{} calls failed: {failures:?}", failures.len());
        let final_sync = ok(&run(&["--json", "sync", &root], database));
        assert_eq!(final_sync["failed"].as_array().unwrap().len(), 0, "{final_sync}");
        let _ = Command::new("kill").args(["-INT", &watch.id().to_string()]).status();
        assert!(watch.wait().unwrap().success(), "watch ends cleanly on Ctrl-C");
        drop(worker);
        let status = ok(&run(&["--json", "status", &root], database));
        assert_eq!(status["entities"]["note"], 40, "{status}");

        // Two first syncs of a fresh folder at once (on SQLite, a fresh database too).
        for round in 0..10 {
            let fresh = tempfile::tempdir().unwrap();
            notes(fresh.path(), &["x.md", "y.md"]);
            let path = fresh.path().to_str().unwrap();
            let own = database.starts_with("sqlite:").then(|| format!("sqlite://{path}/.directory-sync/r{round}.db"));
            let url = own.as_deref().unwrap_or(database);
            syncs_at_once(&[path, path], url, round);
        }
    });
}

/// A folder that does not exist is an error, for a command and for a
/// queued job whose folder vanished: nothing is created.
#[test]
fn a_missing_folder_is_an_error_and_never_created() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("shared.db").display());
    let missing = dir.path().join("typo");
    let out = run(&["sync", missing.to_str().unwrap()], &database);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such folder"), "{out:?}");
    assert!(!missing.exists());

    let folder = dir.path().join("vault");
    std::fs::create_dir(&folder).unwrap();
    notes(&folder, &["a.md"]);
    let root = folder.to_str().unwrap();
    let id = ok(&run(&["--json", "sync", root, "--detach"], &database))["job_id"].as_str().unwrap().to_owned();
    std::fs::remove_dir_all(&folder).unwrap();
    let _worker = Worker::start(&database, dir.path().to_str().unwrap());
    let at = dir.path().to_str().unwrap();
    eventually("the job for the vanished folder died", || job_state(&id, &database, at) == "dead");
    assert!(!folder.exists(), "the worker did not create the folder again");
}

/// Two first commands at once on a brand-new PostgreSQL database (no
/// tables yet): the tables are created once, under the migrations' lock,
/// and neither command fails.
#[test]
fn two_first_syncs_on_a_fresh_postgres_database_both_succeed() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for round in 0..5 {
        let test = format!("fresh_{round}");
        let Some(scratch) = runtime.block_on(scratch_pg::ScratchPg::from_env("DATABASE_URL", "ds_fresh", &test)) else {
            return;
        };
        let (fa, fb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        notes(fa.path(), &["x.md"]);
        notes(fb.path(), &["y.md"]);
        syncs_at_once(&[fa.path().to_str().unwrap(), fb.path().to_str().unwrap()], &scratch.url, round);
        runtime.block_on(scratch.drop_database()).unwrap();
    }
}

/// A `sync` of each folder, all started at once; each must succeed.
fn syncs_at_once(folders: &[&str], database: &str, round: usize) {
    let started: Vec<Child> = folders
        .iter()
        .map(|folder| {
            command(&["--json", "sync", folder], database).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for child in started {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
