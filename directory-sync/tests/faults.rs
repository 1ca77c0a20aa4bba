//! Faults as people meet them, on the real binary: a disk that fills up
//! under the database, and a sync killed at a random moment.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use directory_sync::Database;
use entity_store::{NewEntity, UpsertOptions};

const BIN: &str = env!("CARGO_BIN_EXE_directory-sync");
/// No command of these tests may take longer; past it, it hung.
const HANG: Duration = Duration::from_secs(120);

/// A running `directory-sync`, its stdout and stderr going to files.
struct Proc {
    child: Child,
    started: Instant,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// How a command ended.
struct Ended {
    code: Option<i32>,
    took: Duration,
    stdout: String,
    stderr: String,
}

fn spawn(args: &[&str], logs: &Path) -> Proc {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (stdout, stderr) = (logs.join(format!("{n}.out")), logs.join(format!("{n}.err")));
    let child = Command::new(BIN)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).unwrap())
        .stderr(File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    Proc { child, started: Instant::now(), stdout, stderr }
}

/// Polls until the process ends or `limit` (from now) passes.
fn wait_up_to(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Proc {
    fn read_logs(&self) -> (String, String) {
        let read = |path: &Path| String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
        (read(&self.stdout), read(&self.stderr))
    }

    /// Waits up to `limit` more; a process still running then is killed and the test fails.
    fn finish(mut self, limit: Duration, what: &str) -> Ended {
        let Some(status) = wait_up_to(&mut self.child, limit) else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let (stdout, stderr) = self.read_logs();
            panic!(
                "{what}: hung, still running after {:.1}s (killed)\nstdout: {stdout}\nstderr: {stderr}",
                self.started.elapsed().as_secs_f64()
            );
        };
        let took = self.started.elapsed();
        let (stdout, stderr) = self.read_logs();
        Ended { code: status.code(), took, stdout, stderr }
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success(), "kill -{name} {}", self.child.id());
    }
}

fn run(args: &[&str], logs: &Path, what: &str) -> Ended {
    spawn(args, logs).finish(HANG, what)
}

fn json(ended: &Ended) -> serde_json::Value {
    serde_json::from_str(ended.stdout.trim())
        .unwrap_or_else(|err| panic!("{err}: stdout {:?} / stderr {:?}", ended.stdout, ended.stderr))
}

/// A tmpfs mounted on a folder, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status();
        matches!(mounted, Ok(status) if status.success()).then(|| Self(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `path` (a new file) until `free` bytes are left.
fn fill_leaving(path: &Path, free: u64) {
    let mut file = File::create(path).unwrap();
    let chunk = vec![0x5a_u8; 1 << 20];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::StorageFull => break,
            Err(err) => panic!("filling {}: {err}", path.display()),
        }
    }
    let full = file.metadata().unwrap().len();
    file.set_len(full.saturating_sub(free)).unwrap();
    file.sync_all().unwrap();
}

/// `count` notes of about 2 KB of varied words each.
fn write_notes(folder: &Path, count: usize) {
    for i in 0..count {
        let mut body = String::with_capacity(2100);
        let mut j = 0_usize;
        while body.len() < 2000 {
            body.push('w');
            body.push_str(&((i * 7919 + j * 104_729) % 99_991).to_string());
            body.push(' ');
            j += 1;
        }
        std::fs::write(folder.join(format!("note{i}.md")), format!("---\ntitle: note {i}\n---\n{body}\n")).unwrap();
    }
}

/// The tmpfs (MB) the database lives on: room for the whole database
/// (about 40 MB with its WAL for the notes below) once the filler is gone.
const TMPFS_SIZE: &str = "96m";
const NOTES: usize = 3000;
/// Room left beside the filler: the import gets under way, then the disk is full.
const LEFT_FREE: u64 = 8 << 20;

/// A notes folder (outside the tmpfs) and a database inside it, the tmpfs nearly full.
struct FullDisk {
    notes: tempfile::TempDir,
    logs: tempfile::TempDir,
    filler: PathBuf,
    database: String,
    // Unmounted before the folder it is mounted on is removed (fields drop in order).
    _tmpfs: Tmpfs,
    _mount_point: tempfile::TempDir,
}

impl FullDisk {
    fn new() -> Option<Self> {
        let mount_point = tempfile::tempdir().unwrap();
        let tmpfs = Tmpfs::mount(mount_point.path(), TMPFS_SIZE)?;
        let notes = tempfile::tempdir().unwrap();
        write_notes(notes.path(), NOTES);
        let filler = mount_point.path().join("filler");
        fill_leaving(&filler, LEFT_FREE);
        let database = format!("sqlite://{}", mount_point.path().join("store.db").display());
        Some(Self {
            notes,
            logs: tempfile::tempdir().unwrap(),
            filler,
            database,
            _tmpfs: tmpfs,
            _mount_point: mount_point,
        })
    }

    fn sync_args(&self) -> [&str; 5] {
        ["--json", "sync", self.notes.path().to_str().unwrap(), "--database", &self.database]
    }
}

#[test]
fn a_full_disk_ends_the_command_with_an_error_and_a_rerun_completes() {
    let Some(disk) = FullDisk::new() else {
        println!("SKIPPED: cannot mount tmpfs");
        return;
    };
    let full = run(&disk.sync_args(), disk.logs.path(), "sync on a full disk");
    println!("full disk: exit {:?} after {:.1}s; stderr: {}", full.code, full.took.as_secs_f64(), full.stderr.trim());
    assert_ne!(full.code, Some(0), "the database cannot fit, yet the sync succeeded: {}", full.stdout);
    assert_eq!(full.code, Some(2), "a fatal error is exit code 2; stderr: {}", full.stderr);
    assert!(full.took < Duration::from_secs(60), "took {:.1}s to give up", full.took.as_secs_f64());
    assert!(full.stderr.to_lowercase().contains("full"), "stderr names the cause: {:?}", full.stderr);

    std::fs::remove_file(&disk.filler).unwrap();
    let rerun = run(&disk.sync_args(), disk.logs.path(), "sync after freeing space");
    println!("rerun: exit {:?} after {:.1}s; stdout: {}", rerun.code, rerun.took.as_secs_f64(), rerun.stdout.trim());
    assert_eq!(rerun.code, Some(0), "stdout: {}\nstderr: {}", rerun.stdout, rerun.stderr);
    assert_eq!(json(&rerun)["failed"], serde_json::json!([]));

    let folder = disk.notes.path().to_str().unwrap();
    let status = run(&["--json", "status", folder, "--database", &disk.database], disk.logs.path(), "status");
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let status = json(&status);
    assert_eq!(status["entities"]["note"], NOTES, "every note is in the database: {}", status["entities"]);
}

#[test]
fn sigterm_while_the_disk_is_full_ends_the_command_promptly() {
    let Some(disk) = FullDisk::new() else {
        println!("SKIPPED: cannot mount tmpfs");
        return;
    };
    let mut proc = spawn(&disk.sync_args(), disk.logs.path());
    // A second and a half in, the import has met the full disk.
    std::thread::sleep(Duration::from_millis(1500));
    let running = proc.child.try_wait().unwrap().is_none();
    if running {
        proc.signal("TERM");
    }
    let signalled = Instant::now();
    let ended = proc.finish(Duration::from_secs(15), "sync after SIGTERM on a full disk (15s allowed)");
    println!(
        "SIGTERM {}; exit {:?} {:.1}s after it; stderr: {}",
        if running { "sent while it ran" } else { "not sent: it had already ended" },
        ended.code,
        signalled.elapsed().as_secs_f64(),
        ended.stderr.trim()
    );
    assert_ne!(ended.code, Some(0), "the database cannot fit, yet the sync succeeded: {}", ended.stdout);
}

/// A random number in `range` (no crate: the hasher's random keys).
fn random_in(range: std::ops::Range<u64>) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos());
    range.start + hasher.finish() % (range.end - range.start)
}

/// File names (relative, `/`-separated) under `folder` that are conflict copies.
fn conflict_copies(folder: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![folder.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                if !name.starts_with('.') {
                    dirs.push(entry.path());
                }
            } else if name.contains(".conflict-") {
                let relative = entry.path().strip_prefix(folder).unwrap().to_string_lossy().into_owned();
                found.insert(relative);
            }
        }
    }
    found
}

#[test]
fn every_conflict_copy_on_disk_is_listed_after_kills() {
    const COUNT: usize = 800;
    const ROUNDS: usize = 6;
    let folder = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let root = folder.path().to_str().unwrap();
    let a_minute_ago = SystemTime::now() - Duration::from_secs(60);
    for i in 0..COUNT {
        let path = folder.path().join(format!("n{i}.md"));
        std::fs::write(&path, format!("---\ntitle: n{i}\n---\nbody {i}\n")).unwrap();
        File::options().write(true).open(&path).unwrap().set_modified(a_minute_ago).unwrap();
    }
    let first = run(&["--json", "sync", root], logs.path(), "first sync");
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(json(&first)["imported"], COUNT);

    let url = format!("sqlite://{}", folder.path().join(".directory-sync/store.db").display());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let edit_both_sides = |round: usize| {
        for i in 0..COUNT {
            let mut file = File::options().append(true).open(folder.path().join(format!("n{i}.md"))).unwrap();
            writeln!(file, "file edit {round}").unwrap();
        }
        runtime.block_on(async {
            let db = Database::open(&url).await.unwrap();
            let entities = (0..COUNT)
                .map(|i| {
                    NewEntity::new("note", format!("n{i}"), format!("body {i}\ndatabase edit {round}\n"))
                        .with_metadata(serde_json::json!({ "title": format!("n{i}") }))
                })
                .collect();
            let report = db.store.batch_upsert(entities, &UpsertOptions::default()).await.unwrap();
            assert!(report.failed.is_empty(), "{:?}", report.failed);
        });
    };

    for round in 0..ROUNDS {
        edit_both_sides(round);
        let before = conflict_copies(folder.path()).len();
        let mut proc = spawn(&["--json", "sync", root], logs.path());
        // The first round is killed anywhere in its first 400 ms (the scan,
        // the reads, the conflicts). A sync after a killed one first waits
        // for the killed job's lease to run out, so the later rounds are
        // killed at random once their first conflict copy appears.
        let waited = if round == 0 {
            Duration::ZERO
        } else {
            let deadline = Instant::now() + HANG;
            while conflict_copies(folder.path()).len() == before
                && proc.child.try_wait().unwrap().is_none()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            proc.started.elapsed()
        };
        let after = Duration::from_millis(if round == 0 { random_in(50..400) } else { random_in(0..300) });
        std::thread::sleep(after);
        let ended_before = proc.child.try_wait().unwrap();
        let _ = proc.child.kill();
        let status = proc.child.wait().unwrap();
        println!(
            "round {round}: SIGKILL {}ms after {}: {}; conflict copies on disk {before} -> {}",
            after.as_millis(),
            if round == 0 {
                "its start".to_owned()
            } else {
                format!("its first conflict copy (at {:.1}s)", waited.as_secs_f64())
            },
            match ended_before {
                Some(status) => format!("it had already ended ({status}; stderr {:?})", proc.read_logs().1.trim()),
                None => format!("killed ({status})"),
            },
            conflict_copies(folder.path()).len()
        );
        // A sync after a killed one takes over and finishes, whatever the kills used up.
        if let Some(status) = ended_before {
            assert!(status.success(), "round {round}: the sync after a kill failed: {:?}", proc.read_logs().1);
        }
    }

    let last = run(&["--json", "sync", root], logs.path(), "the sync after the kills");
    println!("last sync: exit {:?} after {:.1}s", last.code, last.took.as_secs_f64());
    assert_eq!(last.code, Some(0), "stdout: {}\nstderr: {}", last.stdout, last.stderr);

    let status = run(&["--json", "status", root], logs.path(), "status");
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let status = json(&status);
    let listed: BTreeSet<String> = status["conflicts"]
        .as_array()
        .unwrap_or_else(|| panic!("no conflicts list: {status}"))
        .iter()
        .map(|c| c["conflict_path"].as_str().unwrap().to_owned())
        .collect();
    let on_disk = conflict_copies(folder.path());
    println!("conflict copies: {} on disk, {} listed by status", on_disk.len(), listed.len());
    assert!(on_disk.len() >= COUNT, "every note changed on both sides keeps both versions: {} copies", on_disk.len());
    let unlisted: Vec<_> = on_disk.difference(&listed).collect();
    let missing: Vec<_> = listed.difference(&on_disk).collect();
    assert!(
        unlisted.is_empty() && missing.is_empty(),
        "{} copies on disk are not listed (e.g. {:?}); {} listed are not on disk (e.g. {:?})",
        unlisted.len(),
        unlisted.iter().take(5).collect::<Vec<_>>(),
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
}
