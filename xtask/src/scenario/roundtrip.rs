//! `roundtrip`: a real folder through the database and back, on SQLite and
//! PostgreSQL. The corpus is `../shared/corpora/windows-powershell-docs`
//! (2,889 real documents, CC BY 4.0, read where it lies; `ROUNDTRIP_CORPUS`
//! names another), with its authors' key order and quoting, BOMs, CRLF
//! files and an unparseable frontmatter.
//!
//! 1. `sync` the corpus into a database, `export` into an empty folder and
//!    `sync` into another: every file byte-identical.
//! 2. Add a key to every entity with `batch_update` and `sync`: in every
//!    file each original frontmatter line is still there, in order; the BOM
//!    and the line endings are unchanged; a YAML 1.1 reading (the type
//!    rules of <https://yaml.org/type/>, written out below) of every
//!    untouched key gives the same type as before, and the new value
//!    (`yes`, a boolean to YAML 1.1) reads as a string.
//!
//! `--quick` takes every file with a BOM, CRLF or a frontmatter that does not
//! parse, and the first 300 others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;

use anyhow::{Context, Result};
use regex::Regex;
use serde_json::{Value, json};

use super::Checks;

const QUICK_OTHERS: usize = 300;
/// The value added to every entity: a string that YAML 1.1 reads as `true` unless quoted.
const ADDED: (&str, &str) = ("roundtrip_checked", "yes");

pub fn run(quick: bool) -> Result<()> {
    let binary = super::workspace_binary("directory-sync", "directory-sync")?;
    let files = corpus(quick)?;
    let mut checks = Checks::default();
    let outer = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}", outer.path().join("store.db").display());
    backend(&binary, "SQLite", &sqlite, &files, &mut checks)?;
    match std::env::var("DATABASE_URL") {
        Ok(server) if server.starts_with("postgres") => {
            let runtime = tokio::runtime::Runtime::new()?;
            let scratch = runtime.block_on(crate::scratch::ScratchPg::create(&server, "scenario_roundtrip"))?;
            let outcome = backend(&binary, "PostgreSQL", &scratch.url, &files, &mut checks);
            runtime.block_on(scratch.drop_database())?;
            outcome?;
        }
        _ => println!("SKIP PostgreSQL: DATABASE_URL names no PostgreSQL server"),
    }
    checks.finish()
}

/// The corpus's markdown files (relative path, bytes), sorted.
fn corpus(quick: bool) -> Result<Vec<(String, Vec<u8>)>> {
    let root = std::env::var_os("ROUNDTRIP_CORPUS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora/windows-powershell-docs"),
        PathBuf::from,
    );
    if !root.is_dir() {
        println!("NOTE no corpus at {} (set ROUNDTRIP_CORPUS); using generated files instead", root.display());
        return Ok(generated());
    }
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(&root).sort_by_file_name() {
        let entry = entry?;
        if entry.file_type().is_file() && entry.path().extension().is_some_and(|x| x == "md") {
            let relative = entry.path().strip_prefix(&root)?.to_string_lossy().into_owned();
            files.push((relative, std::fs::read(entry.path())?));
        }
    }
    let total = files.len();
    if quick {
        let mut others = 0;
        files.retain(|(_, bytes)| {
            let hard = bytes.starts_with("\u{feff}".as_bytes())
                || bytes.contains(&b'\r')
                || entity_store::markdown::parse(bytes).is_ok_and(|doc| doc.warning.is_some());
            others += usize::from(!hard);
            hard || others <= QUICK_OTHERS
        });
    }
    let count = |test: &dyn Fn(&[u8]) -> bool| files.iter().filter(|(_, b)| test(b)).count();
    println!(
        "corpus {}: {} of {total} files ({} with a BOM, {} with CRLF)",
        root.display(),
        files.len(),
        count(&|b| b.starts_with("\u{feff}".as_bytes())),
        count(&|b| b.contains(&b'\r')),
    );
    Ok(files)
}

/// Files in the styles the real corpus has, for machines without it:
/// authors' key order and quoting, comments, flow and block lists, folded
/// text, a BOM, CRLF, values JSON cannot hold, a frontmatter that does not parse.
fn generated() -> Vec<(String, Vec<u8>)> {
    let heads = [
        "---\ntitle: Get-Thing\nms.date: 03/18/2026\nschema: 2.0.0\n---\n",
        "---\n# external help\nexternal help file: Thing.dll-Help.xml\nModule Name: Thing\nonline version: https://example.org\n---\n",
        "---\ntags: [a, 'b', \"c\"]\nlist:\n  - x\n  - 'y'\nwhen: '2026-03-18'\nok: 'yes'\n---\n",
        "---\ndescription: >-\n  folded\n  text\nbig_id: 12345678901234567890123\nratio: .nan\n---\n",
        "---\nbad: [\n---\n",
        "",
    ];
    let mut files = Vec::new();
    for n in 0..60 {
        let mut text = format!("{}# Note {n}\n\nSome text, line one.\nLine two.\n", heads[n % heads.len()]);
        if n % 4 == 1 {
            text = text.replace('\n', "\r\n");
        }
        if n % 5 == 2 {
            text.insert(0, '\u{feff}');
        }
        files.push((format!("docs/part-{}/note-{n:03}.md", n % 3), text.into_bytes()));
    }
    files
}

fn backend(binary: &Path, name: &str, url: &str, files: &[(String, Vec<u8>)], checks: &mut Checks) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    for (relative, bytes) in files {
        let full = a.join(relative);
        std::fs::create_dir_all(full.parent().context("a file has a folder")?)?;
        std::fs::write(full, bytes)?;
    }
    std::fs::create_dir_all(&b)?;
    std::fs::create_dir_all(&c)?;
    let original: BTreeMap<String, Vec<u8>> = files.iter().cloned().collect();

    let synced = cli(binary, url, &["sync", path(&a)])?;
    checks.check(synced.0 == 0, &format!("{name}: sync of the corpus exits 0 ({})", synced.1.trim()));
    for (verb, folder) in [("export", &b), ("sync", &c)] {
        let done = cli(binary, url, &[verb, path(folder)])?;
        let written = markdown_files(folder)?;
        let same = original.iter().filter(|(p, bytes)| written.get(*p) == Some(bytes)).count();
        checks.check(
            done.0 == 0 && same == original.len() && written.len() == original.len(),
            &format!(
                "{name}: {verb} into an empty folder: {same}/{} files byte-identical ({:.1}%), {} files written, exit {}",
                original.len(),
                percent(same, original.len()),
                written.len(),
                done.0
            ),
        );
    }

    let update = json!({
        "filter": "version > 0",
        "metadata_updates": {ADDED.0: ADDED.1},
        "max_documents": 10_000,
        "regenerate_embeddings": false,
    });
    let updated = cli(binary, url, &["tool", "batch_update", &update.to_string(), "--path", path(&a)])?;
    let answer: Value = serde_json::from_str(&updated.1)
        .with_context(|| format!("batch_update answered no JSON (exit {}): {}", updated.0, updated.1))?;
    let count = answer["updated"].as_array().map_or(0, Vec::len);
    checks.check(count == original.len(), &format!("{name}: batch_update added a key to {count} entities"));
    let synced = cli(binary, url, &["sync", path(&a)])?;
    checks.check(synced.0 == 0, &format!("{name}: sync after the edit exits 0 ({})", synced.1.trim()));
    let edited = markdown_files(&a)?;
    let mut kept = Kept::default();
    for (relative, before) in &original {
        let after = edited.get(relative).map_or(&[][..], Vec::as_slice);
        kept.compare(relative, before, after);
    }
    let n = original.len();
    checks.check(
        kept.lines == n,
        &format!(
            "{name}: every original frontmatter line kept, in order, in {}/{n} files ({:.1}%)",
            kept.lines,
            percent(kept.lines, n)
        ),
    );
    checks.check(kept.bom == n, &format!("{name}: BOM as before in {}/{n} files", kept.bom));
    checks.check(kept.endings == n, &format!("{name}: line endings as before in {}/{n} files", kept.endings));
    checks.check(
        kept.types == n,
        &format!(
            "{name}: a YAML 1.1 reading of every untouched key is unchanged in {}/{n} files ({} keys)",
            kept.types, kept.keys
        ),
    );
    checks.check(
        kept.added == n,
        &format!("{name}: the added value reads as a string in YAML 1.1 in {}/{n} files", kept.added),
    );
    for problem in kept.problems.iter().take(5) {
        println!("  {problem}");
    }
    Ok(())
}

#[derive(Default)]
struct Kept {
    lines: usize,
    bom: usize,
    endings: usize,
    types: usize,
    keys: usize,
    added: usize,
    problems: Vec<String>,
}

impl Kept {
    fn compare(&mut self, relative: &str, before: &[u8], after: &[u8]) {
        let (before, after) = (String::from_utf8_lossy(before), String::from_utf8_lossy(after));
        // A block that does not parse is content to the tool: the edit puts
        // a new block before it, so its lines are looked for in the whole file.
        let parsed = entity_store::markdown::parse(before.as_bytes()).is_ok_and(|doc| doc.warning.is_none());
        let old = if parsed { frontmatter_lines(&before) } else { Vec::new() };
        let old_lines = frontmatter_lines(&before);
        let new = frontmatter_lines(&after);
        let mut rest = after.split_inclusive('\n');
        if old_lines.iter().all(|line| rest.any(|l| l == *line)) {
            self.lines += 1;
        } else {
            self.problems.push(format!("{relative}: an original frontmatter line is gone or moved"));
        }
        if before.starts_with('\u{feff}') == after.starts_with('\u{feff}') {
            self.bom += 1;
        }
        if crlf(&before) == crlf(&after) {
            self.endings += 1;
        } else {
            self.problems.push(format!("{relative}: line endings changed"));
        }
        let (old_types, new_types) = (top_level_types(&old), top_level_types(&new));
        self.keys += old_types.len();
        if old_types.iter().all(|(key, kind)| new_types.get(key) == Some(kind)) {
            self.types += 1;
        } else {
            self.problems.push(format!("{relative}: a key reads as another YAML 1.1 type"));
        }
        if new_types.get(ADDED.0) == Some(&Yaml11::Str) {
            self.added += 1;
        } else {
            self.problems.push(format!("{relative}: {} reads as {:?}", ADDED.0, new_types.get(ADDED.0)));
        }
    }
}

/// The lines between the first frontmatter block's delimiters, endings
/// included; none when the file has no block (its first line is not `---`).
fn frontmatter_lines(text: &str) -> Vec<&str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    if lines.next().map(str::trim_end) != Some("---") {
        return Vec::new();
    }
    lines.take_while(|line| !matches!(line.trim_end(), "---" | "...")).collect()
}

/// Whether the file's first line ends with CRLF.
fn crlf(text: &str) -> bool {
    text.split_inclusive('\n').next().is_some_and(|line| line.ends_with("\r\n"))
}

/// The YAML 1.1 type of each top-level key whose value is an inline scalar.
fn top_level_types(lines: &[&str]) -> BTreeMap<String, Yaml11> {
    static ENTRY: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^([A-Za-z_][\w .-]*?):(?:[ \t]+(.*?))?[ \t]*\r?\n?$").unwrap());
    lines
        .iter()
        .filter_map(|line| {
            let found = ENTRY.captures(line)?;
            let value = found.get(2).map_or("", |m| m.as_str());
            if value.starts_with(['[', '{', '|', '>', '&', '*', '!']) || value.starts_with('#') {
                return None; // collections, block scalars, anchors and tags: not an inline scalar
            }
            Some((found[1].to_owned(), yaml11_type(value)))
        })
        .collect()
}

/// The types YAML 1.1 resolves a scalar to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Yaml11 {
    Null,
    Bool,
    Int,
    Float,
    Timestamp,
    Merge,
    Value,
    Str,
}

/// YAML 1.1's implicit typing of a scalar as written (quoted scalars are
/// strings), from the regular expressions of the YAML 1.1 type repository
/// (<https://yaml.org/type/null.html>, `bool`, `int`, `float`,
/// `timestamp`, `merge`, `value`). A trailing comment is not part of it.
fn yaml11_type(written: &str) -> Yaml11 {
    static RULES: LazyLock<Vec<(Regex, Yaml11)>> = LazyLock::new(|| {
        [
            (r"^(~|null|Null|NULL|)$", Yaml11::Null),
            (r"^(y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$", Yaml11::Bool),
            (
                r"^([-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+)$",
                Yaml11::Int,
            ),
            (
                r"^([-+]?([0-9][0-9_]*)?\.[0-9.]*([eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))$",
                Yaml11::Float,
            ),
            (
                r"^([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(\.[0-9]*)?(([ \t]*)Z|[-+][0-9]{1,2}(:[0-9]{2})?)?)$",
                Yaml11::Timestamp,
            ),
            (r"^<<$", Yaml11::Merge),
            (r"^=$", Yaml11::Value),
        ]
        .into_iter()
        .map(|(pattern, kind)| (Regex::new(pattern).unwrap(), kind))
        .collect()
    });
    if written.starts_with(['"', '\'']) {
        return Yaml11::Str;
    }
    let plain = written.split(" #").next().unwrap_or(written).trim();
    RULES.iter().find(|(rule, _)| rule.is_match(plain)).map_or(Yaml11::Str, |(_, kind)| *kind)
}

fn markdown_files(folder: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in walkdir::WalkDir::new(folder).into_iter().filter_entry(|e| e.file_name() != ".directory-sync") {
        let entry = entry?;
        if entry.file_type().is_file() && entry.path().extension().is_some_and(|x| x == "md") {
            let relative = entry.path().strip_prefix(folder)?.to_string_lossy().into_owned();
            files.insert(relative, std::fs::read(entry.path())?);
        }
    }
    Ok(files)
}

fn cli(binary: &Path, url: &str, args: &[&str]) -> Result<(i32, String)> {
    let out = Command::new(binary).args(args).env("DATABASE_URL", url).output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("panicked") {
        text.push_str(&stderr);
    }
    Ok((out.status.code().unwrap_or(-1), text))
}

fn path(folder: &Path) -> &str {
    folder.to_str().unwrap_or_default()
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 { 100.0 } else { part as f64 * 100.0 / whole as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_1_1_types_follow_the_type_repository() {
        let cases = [
            ("yes", Yaml11::Bool),
            ("Off", Yaml11::Bool),
            ("y", Yaml11::Bool),
            ("~", Yaml11::Null),
            ("", Yaml11::Null),
            ("12:30", Yaml11::Int),
            ("1_000", Yaml11::Int),
            ("0x1F", Yaml11::Int),
            ("017", Yaml11::Int),
            ("1.5", Yaml11::Float),
            (".inf", Yaml11::Float),
            ("2026-03-18", Yaml11::Timestamp),
            ("2001-12-14t21:59:43.10-05:00", Yaml11::Timestamp),
            ("<<", Yaml11::Merge),
            ("=", Yaml11::Value),
            ("'yes'", Yaml11::Str),
            ("\"2026-03-18\"", Yaml11::Str),
            ("yesterday", Yaml11::Str),
            ("Get-Help # a comment", Yaml11::Str),
        ];
        for (written, expected) in cases {
            assert_eq!(yaml11_type(written), expected, "{written:?}");
        }
    }
}
