//! Markdown files <-> (metadata, content): YAML frontmatter between `---`
//! lines, the body as content.
//!
//! Parsing never loses a byte: a file whose frontmatter does not parse is
//! kept whole as content with a warning. Rendering puts back the original
//! frontmatter text when the metadata did not change, so a sync never
//! rewrites a file just to reformat it.

use serde_json::{Map, Value};

/// YAML above this size is not parsed (a bomb or not frontmatter at all).
const MAX_FRONTMATTER_BYTES: usize = 256 * 1024;
/// Deepest nesting accepted in frontmatter.
const MAX_DEPTH: usize = 32;

/// A parsed markdown file.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub metadata: Map<String, Value>,
    pub content: String,
    /// The frontmatter block exactly as in the file (delimiters and the
    /// newline after the closing one included), when it parsed.
    pub frontmatter: Option<String>,
    /// Why the frontmatter was kept as content, if it was.
    pub warning: Option<String>,
}

/// Why a file cannot be text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid UTF-8 (byte {offset}); binary or another encoding")]
    NotUtf8 { offset: usize },
    #[error("contains NUL bytes; binary files are not notes")]
    Binary,
}

/// Reads a file's bytes as a markdown document.
pub fn parse(bytes: &[u8]) -> Result<Document, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|err| DecodeError::NotUtf8 { offset: err.valid_up_to() })?;
    if text.contains('\0') {
        return Err(DecodeError::Binary);
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    Ok(parse_text(text))
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
    let first_len = line_len(text, 0);
    if text[..first_len].trim_end_matches(['\r', '\n']) != "---" {
        return None;
    }
    let mut at = first_len;
    while at < text.len() {
        let len = line_len(text, at);
        let line = text[at..at + len].trim_end_matches(['\r', '\n']);
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
    let value: Value = serde_yaml_ng::from_str(yaml).map_err(|err| err.to_string())?;
    if depth(&value) > MAX_DEPTH {
        return Err(format!("frontmatter nests deeper than {MAX_DEPTH} levels"));
    }
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => Err(format!("frontmatter is a YAML {}, not a mapping", kind(&other))),
    }
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "list",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "boolean",
        _ => "value",
    }
}

/// The file for `metadata` and `content`. `previous` is the frontmatter
/// block last read from or written to the file: when it still says the same
/// metadata it is reused byte for byte.
pub fn render(metadata: &Map<String, Value>, content: &str, previous: Option<&str>) -> String {
    let kept = previous.filter(|block| {
        split_frontmatter(block).and_then(|(yaml, _)| parse_yaml(yaml).ok()).as_ref() == Some(metadata)
    });
    if let Some(block) = kept {
        return format!("{block}{content}");
    }
    if !metadata.is_empty() {
        return format!("{}{content}", render_frontmatter(metadata));
    }
    // No metadata: the content alone, unless reading it back would take its
    // start for a byte-order mark or a frontmatter block.
    if content.starts_with('\u{feff}') {
        format!("\u{feff}{content}")
    } else if parse_text(content).frontmatter.is_some() {
        format!("---\n---\n{content}")
    } else {
        content.to_owned()
    }
}

fn render_frontmatter(metadata: &Map<String, Value>) -> String {
    // Serialising a JSON object to YAML cannot fail.
    let yaml = serde_yaml_ng::to_string(metadata).unwrap_or_default();
    format!("---\n{yaml}---\n")
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
