//! The YAML side of frontmatter: reading a block into JSON metadata
//! exactly, writing values that every YAML reader reads back as the same
//! type, and editing a block in place so that what did not change keeps
//! its bytes.
//!
//! Reading follows YAML 1.2's core schema (what `serde_yaml_ng` resolves).
//! Writing also satisfies YAML 1.1 readers (PyYAML, many static-site
//! tools), whose implicit types are wider: `yes/no/on/off/y/n` are booleans,
//! `2026-03-18` a date, `12:30` the sexagesimal number 750, `1_000` is 1000,
//! `=` and `<<` are special keys (YAML 1.1 type repository,
//! <https://yaml.org/type/>). A string is written plain only when it starts
//! with a letter, is none of those words and holds no indicator; anything
//! else is double-quoted, so no reader can take it for another type.

use std::fmt::Write as _;

use serde_json::{Map, Number, Value};
use serde_yaml_ng::Value as Yaml;

/// A value JSON cannot hold exactly (an integer beyond 64 bits, `.inf`,
/// `.nan`, a tagged value): its key is kept as the string of its YAML text.
struct Inexact;

/// Parses the YAML between the delimiters into metadata, keys in the
/// author's order. A top-level key whose value JSON cannot hold exactly is
/// kept as a string holding that value's YAML source (`big_id:
/// 12345678901234567890123` gives `"12345678901234567890123"`), so the
/// other keys stay metadata and the file's line is written back as it was.
pub(crate) fn parse_mapping(yaml: &str) -> Result<Map<String, Value>, String> {
    let mut text = std::borrow::Cow::Borrowed(yaml);
    let parsed = loop {
        match serde_yaml_ng::from_str::<Yaml>(&text) {
            // An integer beyond 128 bits fails the whole document in the
            // parser: read it as the string of its digits and try again.
            Err(err) if is_out_of_range(&err) => match quote_at(&text, &err) {
                Some(quoted) if quoted.len() < yaml.len() + 4096 => text = std::borrow::Cow::Owned(quoted),
                _ => break Err(err),
            },
            other => break other,
        }
    };
    match parsed.map(|mut value| {
        // YAML 1.1 merge keys (`<<: *base`), as PyYAML and most tools apply
        // them; only a plain `<<` is one (a quoted "<<" is an ordinary key,
        // and the parser's value no longer tells them apart).
        if has_plain_merge_key(&text) {
            let _ = value.apply_merge();
        }
        value
    }) {
        Ok(Yaml::Mapping(mapping)) => {
            let mut split = None;
            let mut metadata = Map::with_capacity(mapping.len());
            for (key, value) in &mapping {
                let key = key_string(key)?;
                let value = if let Ok(value) = to_json(value) {
                    value
                } else {
                    let split = split.get_or_insert_with(|| split_entries(yaml));
                    let entry = split.as_ref().and_then(|s| s.entries.iter().find(|e| e.key == key));
                    let Some(entry) = entry else {
                        return Err(format!("the value of `{key}` cannot be read as JSON"));
                    };
                    Value::String(entry.value_source().to_owned())
                };
                metadata.insert(key, value);
            }
            Ok(metadata)
        }
        Ok(Yaml::Null) => Ok(Map::new()),
        Ok(other) => Err(format!("frontmatter is a YAML {}, not a mapping", kind(&other))),
        Err(err) => Err(err.to_string()),
    }
}

fn has_plain_merge_key(yaml: &str) -> bool {
    yaml.lines().any(|line| {
        let line = line.trim_start().trim_start_matches("- ");
        line.starts_with("<<:") || line.starts_with("<< :") || line.contains("{<<:") || line.contains(", <<:")
    })
}

/// `yaml` with the number the error points at in double quotes.
fn quote_at(yaml: &str, err: &serde_yaml_ng::Error) -> Option<String> {
    let start = err.location()?.index();
    let rest = yaml.get(start..)?;
    if !rest.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') {
        return None;
    }
    let len =
        rest.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '_' | '.'))).unwrap_or(rest.len());
    Some(format!("{}\"{}\"{}", &yaml[..start], &rest[..len], &rest[len..]))
}

fn is_out_of_range(err: &serde_yaml_ng::Error) -> bool {
    let message = err.to_string();
    message.contains("as u128") || message.contains("as i128") || message.contains("out of range")
}

/// A mapping key as the JSON key it becomes (`1: a` has the key `"1"`).
fn key_string(key: &Yaml) -> Result<String, String> {
    match key {
        Yaml::String(text) => Ok(text.clone()),
        Yaml::Number(number) => Ok(number.to_string()),
        Yaml::Bool(flag) => Ok(flag.to_string()),
        Yaml::Null => Ok("null".into()),
        Yaml::Sequence(_) | Yaml::Mapping(_) => Err("a key is a list or a mapping; keys must be text".into()),
        Yaml::Tagged(_) => Err("a key carries a tag; keys must be text".into()),
    }
}

fn to_json(value: &Yaml) -> Result<Value, Inexact> {
    Ok(match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(flag) => Value::Bool(*flag),
        Yaml::Number(number) => {
            if let Some(int) = number.as_i64() {
                Value::from(int)
            } else if let Some(int) = number.as_u64() {
                Value::from(int)
            } else {
                number.as_f64().and_then(Number::from_f64).map(Value::Number).ok_or(Inexact)?
            }
        }
        Yaml::String(text) => Value::String(text.clone()),
        Yaml::Sequence(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Yaml::Mapping(mapping) => {
            let mut map = Map::with_capacity(mapping.len());
            for (key, value) in mapping {
                map.insert(key_string(key).map_err(|_| Inexact)?, to_json(value)?);
            }
            Value::Object(map)
        }
        Yaml::Tagged(_) => return Err(Inexact),
    })
}

fn kind(value: &Yaml) -> &'static str {
    match value {
        Yaml::Sequence(_) => "list",
        Yaml::String(_) => "string",
        Yaml::Number(_) => "number",
        Yaml::Bool(_) => "boolean",
        _ => "value",
    }
}

/// A block cut at its top-level keys: `preamble` then every entry's
/// `lead` and `body`, concatenated, is the block again.
struct Split<'a> {
    preamble: &'a str,
    entries: Vec<Entry<'a>>,
}

struct Entry<'a> {
    key: String,
    /// Comment lines right above the key: they go with it.
    lead: &'a str,
    /// From the key's line to the next entry.
    body: &'a str,
    /// Length of the key as written, up to its colon.
    key_len: usize,
}

impl Entry<'_> {
    fn text(&self) -> String {
        format!("{}{}", self.lead, self.body)
    }

    /// The value as written: after the colon, without surrounding blanks.
    fn value_source(&self) -> &str {
        self.body[self.key_len + 1..].trim_start_matches([' ', '\t']).trim_end()
    }

    /// The value starts on the key's own line (`k: v`, `k: [a]`), rather
    /// than on the lines below (`k:` then `  - a`).
    fn is_inline(&self) -> bool {
        let rest = self.body[self.key_len + 1..].lines().next().unwrap_or("").trim();
        !rest.is_empty() && !rest.starts_with('#')
    }

    /// Blank lines and comments at column 0 that end the body (a value's
    /// own lines are indented): kept when the value is rewritten or removed.
    fn trailing_trivia(&self) -> &str {
        let first_line = self.body.find('\n').map_or(self.body.len(), |i| i + 1);
        let mut start = self.body.len();
        for line in self.body[first_line..].split_inclusive('\n').rev() {
            if line.trim().is_empty() || line.starts_with('#') {
                start -= line.len();
            } else {
                break;
            }
        }
        &self.body[start..]
    }

    /// Indentation of the first line below the key, for a value written in block style.
    fn block_indent(&self) -> Option<usize> {
        self.body
            .lines()
            .skip(1)
            .find(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
            .map(|line| line.len() - line.trim_start_matches(' ').len())
    }
}

/// Cuts `yaml` at its top-level keys (lines that start at column 0 and are
/// not comments or sequence items). `None` when a key's line cannot be
/// read on its own; callers then fall back to rendering the whole block.
fn split_entries(yaml: &str) -> Option<Split<'_>> {
    let mut offsets = Vec::new();
    let mut at = 0;
    while at < yaml.len() {
        offsets.push(at);
        at += yaml[at..].find('\n').map_or(yaml.len() - at, |i| i + 1);
    }
    let line = |index: usize| {
        let end = offsets.get(index + 1).copied().unwrap_or(yaml.len());
        &yaml[offsets[index]..end]
    };
    let starts: Vec<usize> = (0..offsets.len()).filter(|&i| is_key_start(line(i))).collect();
    // Comment lines right above a key belong to it.
    let mut leads = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        let floor = if n == 0 { 0 } else { starts[n - 1] + 1 };
        let mut lead = start;
        while lead > floor && line(lead - 1).starts_with('#') {
            lead -= 1;
        }
        leads.push(lead);
    }
    let preamble_end = leads.first().map_or(yaml.len(), |&lead| offsets[lead]);
    let preamble = &yaml[..preamble_end];
    if preamble.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')) {
        return None;
    }
    let mut entries = Vec::with_capacity(starts.len());
    for (n, (&start, &lead)) in starts.iter().zip(&leads).enumerate() {
        let end = leads.get(n + 1).map_or(yaml.len(), |&next| offsets[next]);
        let body = &yaml[offsets[start]..end];
        let key_len = key_end(body)?;
        let key = match serde_yaml_ng::from_str::<Yaml>(&format!("{}: ~", &body[..key_len])) {
            Ok(Yaml::Mapping(mapping)) if mapping.len() == 1 => key_string(mapping.keys().next()?).ok()?,
            _ => return None,
        };
        entries.push(Entry { key, lead: &yaml[offsets[lead]..offsets[start]], body, key_len });
    }
    Some(Split { preamble, entries })
}

fn is_key_start(line: &str) -> bool {
    let Some(first) = line.chars().next() else { return false };
    if matches!(first, ' ' | '\t' | '#' | '\r' | '\n') {
        return false;
    }
    // A sequence item at column 0 (`tags:` then `- a`) belongs to the key above.
    !(first == '-' && line[1..].starts_with([' ', '\t', '\r', '\n']) || line.trim_end() == "-")
}

/// Where the key of a `key: value` line ends (the index of its colon).
fn key_end(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut at = 0;
    match bytes.first()? {
        b'"' => {
            at = 1;
            while *bytes.get(at)? != b'"' {
                at += if bytes[at] == b'\\' { 2 } else { 1 };
            }
            at += 1;
        }
        b'\'' => {
            at = 1;
            loop {
                if *bytes.get(at)? == b'\'' {
                    if bytes.get(at + 1) == Some(&b'\'') {
                        at += 2;
                        continue;
                    }
                    break;
                }
                at += 1;
            }
            at += 1;
        }
        _ => {}
    }
    loop {
        match bytes.get(at)? {
            b':' if matches!(bytes.get(at + 1), None | Some(b' ' | b'\t' | b'\r' | b'\n')) => return Some(at),
            b'\n' => return None,
            _ => at += 1,
        }
    }
}

/// `yaml` changed to say `new` instead of `old`, editing in place: the
/// preamble and every untouched key keep their exact lines (comments,
/// quoting, flow style, order, indentation); a changed key's lines are
/// rewritten where they are, keeping the comments above it; a removed key's
/// lines go; a new key is appended at the end. `None` when the block cannot
/// be cut at its keys or the edit would not read back as `new`.
pub(crate) fn edit(yaml: &str, old: &Map<String, Value>, new: &Map<String, Value>, nl: &str) -> Option<String> {
    let split = split_entries(yaml)?;
    if split.entries.len() != old.len() || split.entries.iter().any(|e| !old.contains_key(&e.key)) {
        return None;
    }
    let seq_indent = split.entries.iter().filter(|e| !e.is_inline()).find_map(Entry::block_indent).unwrap_or(2);
    let mut out = String::with_capacity(yaml.len() + 64);
    out.push_str(split.preamble);
    for entry in &split.entries {
        let Some(value) = new.get(&entry.key) else {
            out.push_str(entry.trailing_trivia());
            continue;
        };
        if old.get(&entry.key) == Some(value) {
            out.push_str(&entry.text());
            continue;
        }
        out.push_str(entry.lead);
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str(nl);
        }
        let indent = if entry.is_inline() { None } else { Some(entry.block_indent().unwrap_or(seq_indent)) };
        // The key as the author wrote it (its quoting), the value anew.
        write_entry(&mut out, &entry.body[..entry.key_len], value, 0, indent, nl);
        out.push_str(entry.trailing_trivia());
    }
    for (key, value) in new {
        if !old.contains_key(key) {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push_str(nl);
            }
            write_entry(&mut out, &key_text(key), value, 0, Some(seq_indent), nl);
        }
    }
    (parse_mapping(&out).ok().as_ref() == Some(new)).then_some(out)
}

/// A whole block's YAML for `metadata`, collections in block style.
pub(crate) fn render_mapping(metadata: &Map<String, Value>, nl: &str) -> String {
    let mut out = String::new();
    for (key, value) in metadata {
        write_entry(&mut out, &key_text(key), value, 0, Some(2), nl);
    }
    out
}

/// A key as written before its colon: plain or double-quoted like any
/// scalar, and in the explicit form (`? "key"`, ending in a newline) when
/// it is over YAML's 1,024-character limit for implicit keys.
fn key_text(key: &str) -> String {
    let text = scalar_text(key, false);
    if text.chars().count() > 1000 { format!("? {text}\n") } else { text }
}

/// Writes `key: value` at `indent`, `key` as [`key_text`] gives it.
/// `block` is the indentation step for a non-empty collection written
/// below its key; `None` writes it inline in flow style.
fn write_entry(out: &mut String, key: &str, value: &Value, indent: usize, block: Option<usize>, nl: &str) {
    pad(out, indent);
    match key.strip_suffix('\n') {
        // The explicit form: `? key`, then `:` on the next line.
        Some(explicit) => {
            out.push_str(explicit);
            out.push_str(nl);
            pad(out, indent);
        }
        None => out.push_str(key),
    }
    out.push(':');
    match (value, block) {
        (Value::Object(map), Some(step)) if !map.is_empty() => {
            out.push_str(nl);
            for (key, value) in map {
                write_entry(out, &key_text(key), value, indent + step.max(1), block, nl);
            }
        }
        (Value::Array(items), Some(step)) if !items.is_empty() => {
            out.push_str(nl);
            write_items(out, items, indent + step, step.max(1), nl);
        }
        _ => {
            out.push(' ');
            write_flow(out, value);
            out.push_str(nl);
        }
    }
}

/// Block sequence items at `indent`; a collection item starts on the dash's line.
fn write_items(out: &mut String, items: &[Value], indent: usize, step: usize, nl: &str) {
    for item in items {
        let mut nested = String::new();
        match item {
            Value::Object(map) if !map.is_empty() => {
                for (key, value) in map {
                    write_entry(&mut nested, &key_text(key), value, indent + 2, Some(step), nl);
                }
            }
            Value::Array(inner) if !inner.is_empty() => write_items(&mut nested, inner, indent + 2, step, nl),
            scalar => {
                pad(out, indent);
                out.push_str("- ");
                write_flow(out, scalar);
                out.push_str(nl);
                continue;
            }
        }
        // "  - " replaces the nested block's first indentation: `- key: v` then `  key2: w`.
        pad(out, indent);
        out.push_str("- ");
        out.push_str(&nested[indent + 2..]);
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A value on one line: scalars as [`scalar_text`], collections in flow style.
fn write_flow(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) if number.is_f64() => out.push_str(&float_text(&number.to_string())),
        Value::Number(number) => out.push_str(&number.to_string()),
        Value::String(text) => out.push_str(&scalar_text(text, true)),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                write_flow(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (index, (key, value)) in map.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                out.push_str(&scalar_text(key, true));
                out.push_str(": ");
                write_flow(out, value);
            }
            out.push('}');
        }
    }
}

/// A float as both YAML 1.1 and 1.2 read it: with a `.` in the mantissa and
/// a signed exponent (`1e21` is a string to YAML 1.1; `1.0e+21` is a float).
fn float_text(shortest: &str) -> String {
    let (mantissa, exponent) = match shortest.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, Some(exponent)),
        None => (shortest, None),
    };
    let mantissa = if mantissa.contains('.') { mantissa.to_owned() } else { format!("{mantissa}.0") };
    match exponent {
        Some(exponent) if exponent.starts_with(['-', '+']) => format!("{mantissa}e{exponent}"),
        Some(exponent) => format!("{mantissa}e+{exponent}"),
        None => mantissa,
    }
}

/// Words YAML 1.1 reads as booleans or null in any case (`Yes`, `OFF`, `Null`).
const RESERVED_WORDS: [&str; 9] = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"];

/// A string as a YAML scalar every reader reads back as this same string:
/// plain when that is certain, else double-quoted. `flow`: it sits inside
/// `[...]` or `{...}`, where `,[]{}` are indicators too.
pub(crate) fn scalar_text(text: &str, flow: bool) -> String {
    if is_plain_safe(text, flow) { text.to_owned() } else { double_quoted(text) }
}

fn is_plain_safe(text: &str, flow: bool) -> bool {
    // A letter first rules out numbers, dates, times, `.inf`, `~`, `=`, `<<`,
    // indicators (`- ? : , [ ] { } # & * ! | > ' " % @ \``) and blanks.
    if !text.chars().next().is_some_and(char::is_alphabetic) || text.ends_with(' ') {
        return false;
    }
    if text.len() <= 5 && RESERVED_WORDS.contains(&text.to_ascii_lowercase().as_str()) {
        return false;
    }
    text.chars().all(|c| match c {
        ':' | '#' | '"' | '\\' | '\u{feff}' => false,
        ',' | '[' | ']' | '{' | '}' => !flow,
        ' ' => true,
        // Tabs, line breaks (NEL, LS and PS are breaks in YAML 1.1) and other controls.
        c => !c.is_control() && !c.is_whitespace(),
    })
}

fn double_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn map(value: Value) -> Map<String, Value> {
        let Value::Object(map) = value else { panic!("not an object: {value}") };
        map
    }

    #[test]
    fn strings_another_reader_would_retype_are_quoted() {
        let cases = [
            ("2026-03-18", "\"2026-03-18\""),
            ("yes", "\"yes\""),
            ("On", "\"On\""),
            ("n", "\"n\""),
            ("12:30", "\"12:30\""),
            ("1_000", "\"1_000\""),
            ("0o17", "\"0o17\""),
            ("0x1F", "\"0x1F\""),
            (".nan", "\".nan\""),
            ("~", "\"~\""),
            ("null", "\"null\""),
            ("=", "\"=\""),
            ("<<", "\"<<\""),
            (" padded", "\" padded\""),
            ("padded ", "\"padded \""),
            ("", "\"\""),
            ("a: b", "\"a: b\""),
            ("a #b", "\"a #b\""),
            ("line\nbreak", "\"line\\nbreak\""),
            ("tab\there", "\"tab\\there\""),
            ("nel\u{85}", "\"nel\\u0085\""),
            ("say \"hi\"", "\"say \\\"hi\\\"\""),
            ("plain words", "plain words"),
            ("Übersicht", "Übersicht"),
            ("适者生存", "适者生存"),
            ("yesterday", "yesterday"),
        ];
        for (text, expected) in cases {
            assert_eq!(scalar_text(text, false), expected, "{text:?}");
        }
        assert_eq!(scalar_text("a, b", true), "\"a, b\"");
        assert_eq!(scalar_text("a, b", false), "a, b");
    }

    #[test]
    fn values_json_cannot_hold_keep_their_text_and_the_rest_stays_metadata() {
        let parsed = parse_mapping("title: Plan\nbig_id: 12345678901234567890123\nstatus: open\n").unwrap();
        assert_eq!(
            Value::Object(parsed),
            json!({"title": "Plan", "big_id": "12345678901234567890123", "status": "open"})
        );
        let parsed = parse_mapping("a: .nan\nb: -.inf\nc: !custom thing\nd: [1, 2]\n").unwrap();
        assert_eq!(Value::Object(parsed), json!({"a": ".nan", "b": "-.inf", "c": "!custom thing", "d": [1, 2]}));
        let parsed = parse_mapping("ids: [1, -12345678901234567890123]\nok: true\n").unwrap();
        assert_eq!(Value::Object(parsed), json!({"ids": [1, "-12345678901234567890123"], "ok": true}));
        // Aliases stay aliases around a big number.
        let parsed = parse_mapping("base: &b\n  x: 1\nref: *b\nbig: 123456789012345678901234567890\n").unwrap();
        assert_eq!(
            Value::Object(parsed),
            json!({"base": {"x": 1}, "ref": {"x": 1}, "big": "123456789012345678901234567890"})
        );
        // YAML 1.1 merge keys are applied, as PyYAML does.
        let parsed = parse_mapping("base: &b\n  x: 1\nderived:\n  <<: *b\n  y: 2\n").unwrap();
        assert_eq!(parsed["derived"], json!({"x": 1, "y": 2}));
    }

    #[test]
    fn keys_keep_the_authors_order() {
        let parsed = parse_mapping("zeta: 1\nalpha: 2\nmid: 3\n").unwrap();
        assert_eq!(parsed.keys().collect::<Vec<_>>(), ["zeta", "alpha", "mid"]);
    }

    #[test]
    fn an_edit_touches_only_the_changed_keys_lines() {
        let yaml = "# top comment\ntitle: 'Plan'   # keep me\ntags: [a, b]\n# about the date\ndate: '2026-03-18'\nlist:\n- x\n- y\n\nwrapped: this is\n  hand wrapped\n";
        let old = parse_mapping(yaml).unwrap();
        let cases = [
            // change a flow list: rewritten in place, flow style kept
            (
                json!({"tags": ["a", "c"]}),
                "# top comment\ntitle: 'Plan'   # keep me\ntags: [a, c]\n# about the date\ndate: '2026-03-18'\nlist:\n- x\n- y\n\nwrapped: this is\n  hand wrapped\n",
            ),
            // change a block list: its indentation kept
            (
                json!({"list": ["z"]}),
                "# top comment\ntitle: 'Plan'   # keep me\ntags: [a, b]\n# about the date\ndate: '2026-03-18'\nlist:\n- z\n\nwrapped: this is\n  hand wrapped\n",
            ),
            // change a quoted date: still quoted
            (
                json!({"date": "2026-04-01"}),
                "# top comment\ntitle: 'Plan'   # keep me\ntags: [a, b]\n# about the date\ndate: \"2026-04-01\"\nlist:\n- x\n- y\n\nwrapped: this is\n  hand wrapped\n",
            ),
            // add a key: appended
            (
                json!({"status": "on"}),
                "# top comment\ntitle: 'Plan'   # keep me\ntags: [a, b]\n# about the date\ndate: '2026-03-18'\nlist:\n- x\n- y\n\nwrapped: this is\n  hand wrapped\nstatus: \"on\"\n",
            ),
        ];
        for (change, expected) in cases {
            let mut new = old.clone();
            for (key, value) in map(change) {
                new.insert(key, value);
            }
            assert_eq!(edit(yaml, &old, &new, "\n").as_deref(), Some(expected));
        }
        // remove a key: its lines and the comment above it go
        let mut new = old.clone();
        new.shift_remove("date");
        assert_eq!(
            edit(yaml, &old, &new, "\n").as_deref(),
            Some(
                "# top comment\ntitle: 'Plan'   # keep me\ntags: [a, b]\nlist:\n- x\n- y\n\nwrapped: this is\n  hand wrapped\n"
            )
        );
    }

    #[test]
    fn floats_long_keys_trailing_comments_and_key_quoting_survive_an_edit() {
        // Floats keep a `.` and a signed exponent, which YAML 1.1 needs.
        let floats = map(json!({"a": 1e21, "b": 1e-7, "c": 5e-324, "d": 1.5, "e": [1e300]}));
        assert_eq!(render_mapping(&floats, "\n"), "a: 1.0e+21\nb: 1.0e-7\nc: 5.0e-324\nd: 1.5\ne:\n  - 1.0e+300\n");
        assert_eq!(parse_mapping(&render_mapping(&floats, "\n")).unwrap(), floats);
        // A key over 1,024 characters takes the explicit form.
        let long = "k".repeat(1100);
        let keyed = map(json!({&long: "v", "yes": "on"}));
        let yaml = render_mapping(&keyed, "\n");
        assert_eq!(yaml, format!("? {long}\n: v\n\"yes\": \"on\"\n"));
        assert_eq!(parse_mapping(&yaml).unwrap(), keyed);
        // Comments after the last key stay when it changes or goes; a
        // changed key keeps its quoting.
        let yaml = "\"dq\": x\ntitle: t\n\n# closing comment\n";
        let old = parse_mapping(yaml).unwrap();
        let changed = map(json!({"dq": "changed", "title": "NEW"}));
        assert_eq!(
            edit(yaml, &old, &changed, "\n").as_deref(),
            Some("\"dq\": changed\ntitle: NEW\n\n# closing comment\n")
        );
        let removed = map(json!({"dq": "x"}));
        assert_eq!(edit(yaml, &old, &removed, "\n").as_deref(), Some("\"dq\": x\n\n# closing comment\n"));
    }

    #[test]
    fn an_edit_keeps_crlf() {
        let yaml = "title: a\r\ntags:\r\n  - x\r\n";
        let old = parse_mapping(yaml).unwrap();
        let mut new = old.clone();
        new.insert("tags".into(), json!(["x", "why"]));
        new.insert("count".into(), json!(2));
        assert_eq!(
            edit(yaml, &old, &new, "\r\n").as_deref(),
            Some("title: a\r\ntags:\r\n  - x\r\n  - why\r\ncount: 2\r\n")
        );
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e300f64..1e300).prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            prop::sample::select(vec![
                "yes",
                "No",
                "ON",
                "2026-03-18",
                "12:30",
                "1_000",
                "0o17",
                "0x1F",
                ".nan",
                "-.inf",
                "~",
                "null",
                "=",
                "<<",
                " x",
                "x ",
                "a: b",
                "- a",
                "[a]",
                "{a}",
                "#c",
                "&a",
                "*a",
                "!t",
                "|",
                ">",
                "'q'",
                "\"q\"",
                "%",
                "@",
                "`",
                "a\nb",
                "\t",
                "\u{85}",
                "\u{2028}",
                "\u{feff}x",
                "é",
                "1e3",
                "+1",
                "0",
                "-",
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("\\PC{0,6}", inner), 0..4)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever is written reads back as the same metadata, keys in order.
        #[test]
        fn rendered_blocks_read_back_the_same(
            pairs in prop::collection::vec((prop_oneof![9 => "\\PC{0,8}", 1 => "[a-z]{1000,1100}"], value_strategy()), 0..6),
            crlf in any::<bool>(),
        ) {
            let metadata: Map<String, Value> = pairs.into_iter().collect();
            let nl = if crlf { "\r\n" } else { "\n" };
            let yaml = render_mapping(&metadata, nl);
            let back = parse_mapping(&yaml).unwrap();
            prop_assert_eq!(&back, &metadata);
            prop_assert!(back.keys().eq(metadata.keys()));
        }

        /// Changing one key of a rendered block changes only that key's lines.
        #[test]
        fn an_edit_changes_only_its_key(
            pairs in prop::collection::vec(("[a-z]{1,6}", value_strategy()), 1..6),
            value in value_strategy(),
            pick in any::<prop::sample::Index>(),
        ) {
            let old: Map<String, Value> = pairs.into_iter().collect();
            let yaml = render_mapping(&old, "\n");
            let key = old.keys().nth(pick.index(old.len())).unwrap().clone();
            let mut new = old.clone();
            new.insert(key.clone(), value);
            let edited = edit(&yaml, &old, &new, "\n").expect("a rendered block can be edited");
            prop_assert_eq!(parse_mapping(&edited).unwrap(), new.clone());
            let others = |text: &str| -> Vec<String> {
                split_entries(text).unwrap().entries.iter().filter(|e| e.key != key).map(Entry::text).collect()
            };
            prop_assert_eq!(others(&yaml), others(&edited));
        }
    }
}
