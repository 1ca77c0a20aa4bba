//! Markdown files <-> (metadata, content): YAML frontmatter between `---`
//! lines, the body as content.
//!
//! Parsing never loses a byte: a file whose frontmatter does not parse is
//! kept whole as content with a warning, and [`Document::frontmatter`]
//! holds everything before the content as written (byte-order mark,
//! delimiters, comments, quoting, line endings). Rendering from that text
//! gives the file back byte for byte while the metadata says the same; a
//! metadata change edits the block in place (see `yaml::edit`), so what
//! did not change keeps its lines.

use serde_json::{Map, Value};

use crate::yaml;

/// YAML above this size is not parsed (a bomb or not frontmatter at all).
const MAX_FRONTMATTER_BYTES: usize = 256 * 1024;
/// Deepest nesting accepted in frontmatter.
const MAX_DEPTH: usize = 32;
const BOM: char = '\u{feff}';

/// A parsed markdown file.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The frontmatter's keys in the file's order. A value JSON cannot hold
    /// exactly (an integer beyond 64 bits, `.inf`, `.nan`, a tagged value)
    /// is the string of its YAML text.
    pub metadata: Map<String, Value>,
    /// The body after the frontmatter, exactly as written.
    pub content: String,
    /// The file's text before `content`, exactly as written: a UTF-8
    /// byte-order mark if the file had one, then the frontmatter block with
    /// its delimiters and the newline after the closing one, when it parsed.
    /// `None` when nothing precedes the content.
    pub frontmatter: Option<String>,
    /// Why the frontmatter was kept as content, if it was.
    pub warning: Option<String>,
}

/// Why a file cannot be text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not UTF-8.
    #[error("not valid UTF-8 (byte {offset}); binary or another encoding")]
    NotUtf8 {
        /// Where the first invalid byte is.
        offset: usize,
    },
    /// The text holds NUL bytes.
    #[error("contains NUL bytes; binary files are not notes")]
    Binary,
}

/// Reads a file's bytes as a markdown document.
pub fn parse(bytes: &[u8]) -> Result<Document, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|err| DecodeError::NotUtf8 { offset: err.valid_up_to() })?;
    if text.contains('\0') {
        return Err(DecodeError::Binary);
    }
    let (bom, text) = match text.strip_prefix(BOM) {
        Some(rest) => ("\u{feff}", rest),
        None => ("", text),
    };
    let mut doc = parse_text(text);
    if !bom.is_empty() {
        doc.frontmatter = Some(format!("{bom}{}", doc.frontmatter.unwrap_or_default()));
    }
    Ok(doc)
}

fn parse_text(text: &str) -> Document {
    let whole = |warning| Document { metadata: Map::new(), content: text.to_owned(), frontmatter: None, warning };
    let Some((yaml, block_len)) = split_frontmatter(text) else { return whole(None) };
    match parse_yaml(yaml) {
        Ok(metadata) => Document {
            metadata,
            content: text[block_len..].to_owned(),
            frontmatter: Some(text[..block_len].to_owned()),
            warning: None,
        },
        Err(reason) => whole(Some(format!("frontmatter kept as content: {reason}"))),
    }
}

/// The YAML between the delimiters and the length of the whole block.
fn split_frontmatter(text: &str) -> Option<(&str, usize)> {
    // Delimiters may end in blanks, as most frontmatter readers allow.
    let first_len = line_len(text, 0);
    if text[..first_len].trim_end() != "---" {
        return None;
    }
    let mut at = first_len;
    while at < text.len() {
        let len = line_len(text, at);
        let line = text[at..at + len].trim_end();
        if line == "---" || line == "..." {
            return Some((&text[first_len..at], at + len));
        }
        at += len;
    }
    None
}

/// Length of the line starting at `at`, its newline included.
fn line_len(text: &str, at: usize) -> usize {
    text[at..].find('\n').map_or(text.len() - at, |i| i + 1)
}

fn parse_yaml(yaml: &str) -> Result<Map<String, Value>, String> {
    if yaml.len() > MAX_FRONTMATTER_BYTES {
        return Err(format!("frontmatter is over {MAX_FRONTMATTER_BYTES} bytes"));
    }
    if yaml.trim().is_empty() {
        return Ok(Map::new());
    }
    // serde_yaml_ng bounds alias expansion and recursion itself, so a YAML bomb is an error here.
    let metadata = yaml::parse_mapping(yaml)?;
    if metadata.values().map(depth).max().unwrap_or(0) + 1 > MAX_DEPTH {
        return Err(format!("frontmatter nests deeper than {MAX_DEPTH} levels"));
    }
    Ok(metadata)
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The file for `metadata` and `content`. `previous` is the text that
/// preceded the content when the file was last read or written
/// ([`Document::frontmatter`]): its byte-order mark and line ending are
/// kept; while it says the same metadata it is reused byte for byte, and
/// when the metadata changed it is edited in place. Without it a new block
/// is written, its line ending taken from the content.
pub fn render(metadata: &Map<String, Value>, content: &str, previous: Option<&str>) -> String {
    let previous = previous.unwrap_or("");
    let (bom, block) = match previous.strip_prefix(BOM) {
        Some(rest) => ("\u{feff}", rest),
        None => ("", previous),
    };
    let old = split_frontmatter(block)
        .filter(|(_, len)| *len == block.len())
        .and_then(|(yaml, _)| parse_yaml(yaml).ok().map(|old| (yaml, old)));
    let head = match old {
        Some((_, old)) if &old == metadata => block.to_owned(),
        Some((yaml, old)) => {
            let nl = newline_of(block);
            let open = &block[..line_len(block, 0)];
            let close = &block[open.len() + yaml.len()..];
            match yaml::edit(yaml, &old, metadata, nl) {
                Some(edited) => format!("{open}{edited}{close}"),
                None => new_block(metadata, nl),
            }
        }
        None if metadata.is_empty() => {
            // The content alone, unless reading it back would take its
            // start for a byte-order mark or a frontmatter block.
            if content.starts_with(BOM) && bom.is_empty() {
                return format!("{BOM}{content}");
            }
            if parse_text(content).frontmatter.is_some() {
                let nl = newline_of(content);
                format!("---{nl}---{nl}")
            } else {
                String::new()
            }
        }
        None => new_block(metadata, newline_of(content)),
    };
    format!("{bom}{head}{content}")
}

/// `\r\n` when the text's first line ends so, else `\n`.
fn newline_of(text: &str) -> &'static str {
    match text.find('\n') {
        Some(at) if text[..at].ends_with('\r') => "\r\n",
        _ => "\n",
    }
}

fn new_block(metadata: &Map<String, Value>, nl: &str) -> String {
    let mut yaml = yaml::render_mapping(metadata, nl);
    // Our writer quotes for every YAML reader; a key it cannot write plainly
    // (over 1,024 characters) falls back to the YAML library's own output.
    if parse_yaml(&yaml).ok().as_ref() != Some(metadata) {
        yaml = serde_yaml_ng::to_string(metadata).unwrap_or_default();
        if nl != "\n" {
            yaml = yaml.replace('\n', nl);
        }
    }
    format!("---{nl}{yaml}---{nl}")
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn frontmatter_becomes_metadata_and_the_body_content() {
        let doc = parse(b"---\ntitle: Plan\ntags: [a, b]\n---\n# Plan\nbody\n").unwrap();
        assert_eq!(Value::Object(doc.metadata), json!({"title": "Plan", "tags": ["a", "b"]}));
        assert_eq!(doc.content, "# Plan\nbody\n");
        assert_eq!(doc.frontmatter.as_deref(), Some("---\ntitle: Plan\ntags: [a, b]\n---\n"));
    }

    #[test]
    fn no_frontmatter_means_no_metadata_and_renders_without_a_block() {
        let doc = parse(b"just text\n---\nnot yaml\n").unwrap();
        assert!(doc.metadata.is_empty());
        assert_eq!(render(&doc.metadata, &doc.content, None), "just text\n---\nnot yaml\n");
    }

    #[test]
    fn malformed_frontmatter_is_kept_whole_with_a_warning() {
        for text in ["---\n- @alias\n---\nbody", "---\n<% tp.date %>: [\n---\nx", "---\nunterminated\nbody\n"] {
            let doc = parse(text.as_bytes()).unwrap();
            assert_eq!(doc.content, text, "nothing of {text:?} may be lost");
            assert!(doc.metadata.is_empty());
        }
        let list = parse(b"---\n- a\n- b\n---\nbody").unwrap();
        assert!(list.warning.unwrap().contains("list"));
    }

    #[test]
    fn yaml_bombs_are_warnings() {
        let mut yaml =
            String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for (prev, next) in
            ["a", "b", "c", "d", "e", "f", "g", "h", "i"].iter().zip(["b", "c", "d", "e", "f", "g", "h", "i", "j"])
        {
            let refs = vec![format!("*{prev}"); 9].join(",");
            writeln!(yaml, "{next}: &{next} [{refs}]").unwrap();
        }
        let doc = parse(format!("---\n{yaml}---\nbody").as_bytes()).unwrap();
        assert!(doc.warning.is_some(), "an alias bomb must not expand");
        let deep = format!("---\nk: {}{}\n---\n", "[".repeat(100), "]".repeat(100));
        assert!(parse(deep.as_bytes()).unwrap().warning.is_some());
    }

    #[test]
    fn bytes_that_are_not_text_fail_with_a_reason() {
        assert_eq!(parse(b"ok \xff\xfe").unwrap_err(), DecodeError::NotUtf8 { offset: 3 });
        assert_eq!(parse(b"a\0b").unwrap_err(), DecodeError::Binary);
    }

    #[test]
    fn crlf_and_bom_files_parse() {
        let doc = parse("\u{feff}---\r\ntitle: x\r\n---\r\nbody\r\n".as_bytes()).unwrap();
        assert_eq!(doc.metadata["title"], "x");
        assert_eq!(doc.content, "body\r\n");
    }

    #[test]
    fn unchanged_metadata_keeps_the_original_frontmatter_text() {
        let original = "---\n# a comment\ntitle:   Plan\n---\nold body\n";
        let doc = parse(original.as_bytes()).unwrap();
        let rendered = render(&doc.metadata, "new body\n", doc.frontmatter.as_deref());
        assert_eq!(rendered, "---\n# a comment\ntitle:   Plan\n---\nnew body\n");
        let mut changed = doc.metadata.clone();
        changed.insert("title".into(), json!("Other"));
        let rendered = render(&changed, "new body\n", doc.frontmatter.as_deref());
        assert_eq!(parse(rendered.as_bytes()).unwrap().metadata, changed);
    }

    #[test]
    fn a_file_comes_back_byte_for_byte_bom_and_crlf_included() {
        let files = [
            "\u{feff}---\r\ntitle: x\r\n---\r\nbody\r\n",
            "\u{feff}no frontmatter\r\n",
            "\u{feff}---\nbad: [\n---\nkept as content\n",
            "---\n# c\nb: 'quoted'\na: [x, y]  # flow\n---\nbody",
            "---\nbig_id: 12345678901234567890123\ntitle: T\n---\n",
            "--- \ntitle: blanks after the delimiters\n---\t\nbody\n",
        ];
        for file in files {
            let doc = parse(file.as_bytes()).unwrap();
            assert_eq!(render(&doc.metadata, &doc.content, doc.frontmatter.as_deref()), file);
        }
    }

    #[test]
    fn an_edit_keeps_the_bom_the_line_ending_and_every_other_line() {
        let file =
            "\u{feff}---\r\n# owner below\r\nowner: 'ann'\r\ndate: '2026-03-18'\r\ntags: [a, b]\r\n---\r\nbody\r\n";
        let doc = parse(file.as_bytes()).unwrap();
        let mut metadata = doc.metadata.clone();
        metadata.insert("status".into(), json!("yes"));
        metadata.insert("owner".into(), json!("bob"));
        let written = render(&metadata, &doc.content, doc.frontmatter.as_deref());
        assert_eq!(
            written,
            "\u{feff}---\r\n# owner below\r\nowner: bob\r\ndate: '2026-03-18'\r\ntags: [a, b]\r\nstatus: \"yes\"\r\n---\r\nbody\r\n"
        );
    }

    #[test]
    fn a_big_integer_keeps_the_other_keys_as_metadata() {
        let doc = parse(b"---\ntitle: Plan\nbig_id: 12345678901234567890123\ntags: [a]\n---\nbody").unwrap();
        assert_eq!(doc.warning, None);
        assert_eq!(
            Value::Object(doc.metadata),
            json!({"title": "Plan", "big_id": "12345678901234567890123", "tags": ["a"]})
        );
    }

    #[test]
    fn a_new_block_uses_the_contents_line_ending_and_quotes_for_yaml_1_1() {
        let metadata = json!({"when": "2026-03-18", "ok": "on", "n": 3}).as_object().cloned().unwrap();
        assert_eq!(
            render(&metadata, "body\r\n", None),
            "---\r\nwhen: \"2026-03-18\"\r\nok: \"on\"\r\n\"n\": 3\r\n---\r\nbody\r\n"
        );
    }

    /// One top-level entry of a generated block, in one of the styles authors use.
    fn entry_strategy() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "{k}: plain words",
            "{k}: 'single ''quoted'''",
            r#"{k}: "double \"q\" \u00e9""#,
            "{k}: [a, 'b', 1, yes]",
            "{k}:\n  - a\n  - 'b'",
            "{k}:\n- compact\n- list",
            "{k}: |\n  line one\n  line two",
            "{k}: >-\n  folded\n  text",
            "{k}: 12345678901234567890123",
            "{k}: .nan",
            "{k}: !custom tagged",
            "# about {k}\n{k}: v  # trailing comment",
            "{k}: hand\n  wrapped plain",
            "{k}:\n  sub: 1\n  other: [x]",
            "{k}: 2026-03-18",
            "{k}: ~",
            "{k}:   spaced   # c",
        ])
        .prop_map(str::to_owned)
    }

    proptest! {
        /// Generated frontmatter: read, then written back from what was read,
        /// gives the same bytes; changing one key changes only its lines.
        #[test]
        fn generated_frontmatter_round_trips_and_edits_touch_one_key(
            entries in prop::collection::vec(entry_strategy(), 1..7),
            bom in any::<bool>(),
            crlf in any::<bool>(),
            pick in any::<prop::sample::Index>(),
            value in prop_oneof![Just(json!("on")), Just(json!([1, "2026-01-01"])), Just(json!({"a": null}))],
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let yaml: Vec<String> =
                entries.iter().enumerate().map(|(i, e)| e.replace("{k}", &format!("key{i}"))).collect();
            let mut file = format!("---\n{}\n---\n# Body\ntext\n", yaml.join("\n"));
            if crlf {
                file = file.replace('\n', "\r\n");
            }
            if bom {
                file.insert(0, BOM);
            }
            let doc = parse(file.as_bytes()).unwrap();
            prop_assert_eq!(doc.warning.as_deref(), None);
            prop_assert_eq!(doc.metadata.len(), entries.len());
            prop_assert_eq!(render(&doc.metadata, &doc.content, doc.frontmatter.as_deref()), file.clone());

            let changed = format!("key{}", pick.index(entries.len()));
            let mut metadata = doc.metadata.clone();
            metadata.insert(changed.clone(), value);
            let written = render(&metadata, &doc.content, doc.frontmatter.as_deref());
            let again = parse(written.as_bytes()).unwrap();
            prop_assert_eq!(&again.metadata, &metadata);
            prop_assert_eq!(written.starts_with(BOM), bom);
            prop_assert_eq!(written.matches('\n').count(), written.matches(nl).count());
            for (i, entry) in yaml.iter().enumerate() {
                if format!("key{i}") != changed {
                    let entry = if crlf { entry.replace('\n', "\r\n") } else { entry.clone() };
                    prop_assert!(written.contains(&format!("{entry}{nl}")), "{entry:?} kept in {written:?}");
                }
            }
        }
    }

    fn metadata_strategy() -> impl Strategy<Value = Map<String, Value>> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[ -~\\p{L}]{0,20}".prop_map(Value::from),
        ];
        let value = leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z][a-z0-9_]{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        prop::collection::btree_map("[a-z][a-z0-9_ ]{0,8}", value, 0..6).prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        #[test]
        fn file_entity_file_is_stable(
            metadata in metadata_strategy(),
            content in prop_oneof!["(\\PC|\n){0,200}", "(---\n|\u{feff}|a: 1\n|x){0,8}"],
        ) {
            let written = render(&metadata, &content, None);
            let doc = parse(written.as_bytes()).unwrap();
            prop_assert_eq!(&doc.metadata, &metadata);
            prop_assert_eq!(&doc.content, &content);
            prop_assert_eq!(render(&doc.metadata, &doc.content, doc.frontmatter.as_deref()), written);
        }
    }

    /// Lines that look like frontmatter and YAML, to reach the parser's corners.
    fn markdown_soup() -> impl Strategy<Value = String> {
        let pieces = vec![
            "---",
            "\n",
            "\r\n",
            "a: 1",
            "b: [x, y]",
            "- item",
            "&a [1]",
            "*a",
            "<<: *a",
            "{",
            "}",
            "[",
            "\"",
            "'",
            "#",
            "key:",
            " ",
            "\t",
            "\u{feff}",
            "é",
            "!!binary",
            "? ",
            "|",
            ">",
            "...",
            "null",
            "~",
        ];
        prop::collection::vec(prop::sample::select(pieces), 0..40).prop_map(|p| p.concat())
    }

    proptest! {
        /// Any bytes: a document or a clear error, never a panic. Valid UTF-8
        /// without NUL always parses, and writing a parsed file back gives a
        /// file that parses to the same document.
        #[test]
        fn fuzz_codec_parse(
            bytes in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..300),
                markdown_soup().prop_map(String::into_bytes),
                "\\PC{0,200}".prop_map(String::into_bytes),
            ]
        ) {
            let text_ok = std::str::from_utf8(&bytes).is_ok_and(|t| !t.contains('\0'));
            match parse(&bytes) {
                Err(err) => prop_assert!(!text_ok, "valid text refused: {err}"),
                Ok(doc) => {
                    prop_assert!(text_ok);
                    let written = render(&doc.metadata, &doc.content, doc.frontmatter.as_deref());
                    let again = parse(written.as_bytes()).unwrap();
                    prop_assert_eq!(&again.metadata, &doc.metadata);
                    prop_assert_eq!(&again.content, &doc.content);
                }
            }
        }
    }
}
