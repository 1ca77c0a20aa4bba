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
    checks.check(
        summary["imported"].as_u64() == Some(GOOD.len() as u64 + 2),
        &format!("every good file imported ({} of {})", summary["imported"], GOOD.len() + 2),
    );
    let warned: BTreeSet<&str> =
        summary["warnings"].as_array().into_iter().flatten().filter_map(|w| w["path"].as_str()).collect();
    let expected = BTreeSet::from(["alias bomb.md", "yaml list.md", "yaml scalar.md"]);
    checks.check(
        warned == expected,
        &format!("non-mapping frontmatter and the alias bomb imported whole, with warnings: {warned:?}"),
    );

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
