//! A small, safe filter language: parsed into an AST, rendered as
//! parameterised SQL per backend. Nothing from the text is spliced into SQL.
//!
//! ```text
//! entity_type = "note" and metadata.tags contains "rust" and updated_at > "2026-01-01"
//! not (metadata.status = "done" or metadata.priority < 2) and metadata.owner exists
//! ```
//!
//! Fields: `entity_type`, `id`, `content`, `version`, `revision`,
//! `created_at`, `updated_at` and `metadata.<key>[.<key>...]` (keys of
//! letters, digits, `_` and `-`). Operators: `=`, `!=`, `<`, `<=`, `>`,
//! `>=`, `contains` (array element or substring), `exists` (metadata only).
//! Values: double-quoted strings (`\"` and `\\` escapes), numbers, `true`,
//! `false`, `null`.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

/// Longest filter text accepted.
pub const MAX_FILTER_BYTES: usize = 16 * 1024;
/// Deepest nesting of `(` and `not`: parsing, rendering and dropping a
/// filter recurse, so depth is what could exhaust the stack.
pub const MAX_FILTER_DEPTH: usize = 32;
/// Most conditions in one filter (a chain of `and`s nests as deep as it is
/// long, and each condition binds a parameter or two).
pub const MAX_FILTER_CONDITIONS: usize = 256;

/// A filter that does not parse, with the byte position of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter at position {position}: {message}")]
pub struct FilterError {
    /// Byte offset in the filter text where the problem starts.
    pub position: usize,
    /// What is wrong there, for a person.
    pub message: String,
}

/// What a condition looks at: a column of the entity or a metadata path.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// `entity_type` (text).
    EntityType,
    /// `id` (text).
    Id,
    /// `content`, the markdown body (text).
    Content,
    /// `version` (whole number).
    Version,
    /// `revision` (whole number).
    Revision,
    /// `created_at` (time).
    CreatedAt,
    /// `updated_at` (time).
    UpdatedAt,
    /// `metadata.a.b`: the keys of the path, outermost first.
    Metadata(Vec<String>),
}

/// A comparison operator of the filter language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A literal after type checking against its field.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A string, for a text column or a metadata string.
    Text(String),
    /// A whole number, for `version` and `revision`.
    Integer(i64),
    /// A time, for `created_at` and `updated_at`.
    Time(DateTime<Utc>),
    /// Any JSON value, for a metadata path.
    Json(Value),
}

/// A parsed filter, in a small language parsed into this tree and rendered
/// as parameterised SQL per backend (nothing from the text is spliced into
/// SQL):
///
/// ```text
/// entity_type = "note" and metadata.tags contains "rust" and updated_at > "2026-01-01"
/// not (metadata.status = "done" or metadata.priority < 2) and metadata.owner exists
/// ```
///
/// - **Fields**: `entity_type`, `id`, `content`, `version`, `revision`,
///   `created_at`, `updated_at` and `metadata.<key>[.<key>...]` (keys of
///   letters, digits, `_` and `-`).
/// - **Operators**: `=`, `!=`, `<`, `<=`, `>`, `>=`, `contains` (array
///   element or substring), `exists` (metadata only); `and`, `or`, `not`
///   and parentheses, `and` binding tighter than `or`.
/// - **Values**: double-quoted strings (`\"` and `\\` escapes), numbers,
///   `true`, `false`, `null`.
/// - **Limits**: [`MAX_FILTER_BYTES`] of text, [`MAX_FILTER_DEPTH`] of
///   nesting, [`MAX_FILTER_CONDITIONS`] conditions.
///
/// Both backends select the same entities; a differential property test
/// (`entity-store/tests/differential.rs`) holds them to it. The rules:
///
/// - **Paths** `metadata.a.b` step through object members only; a key of
///   digits never indexes an array. A path that does not resolve is a
///   *missing* value.
/// - **Comparisons are type-strict** (PostgreSQL's `jsonb` rule): a
///   metadata value matches `=`, `!=`, `<`, `<=`, `>`, `>=` only when it has
///   the literal's JSON type. Numbers compare numerically (`1 = 1.0`),
///   strings by Unicode code point (case-sensitive, no normalisation),
///   booleans `false < true`. A value of another type (`"1"` against `1`,
///   `true` against `1`) or a missing value matches no operator, `!=`
///   included.
/// - `= null` matches a present JSON `null`; `!= null` a present value
///   that is not `null`. `exists` matches any present value, `null`
///   included.
/// - `contains` matches an array with an element equal to the literal
///   (same type rule) or, for a string literal only, a string value that
///   holds it as a substring.
/// - `not` inverts, and a missing value counts as not matching first: so
///   `not metadata.priority = 2` matches entities without a priority.
/// - Columns: `entity_type`, `id` and `content` are text (ordered by code
///   point); `version` and `revision` whole numbers; `created_at` and
///   `updated_at` times (`YYYY-MM-DD` or RFC 3339).
/// - A string literal may not contain U+0000 (no stored text can).
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Both match.
    And(Box<Filter>, Box<Filter>),
    /// Either matches.
    Or(Box<Filter>, Box<Filter>),
    /// The inner filter does not match (a missing value counts as not matching).
    Not(Box<Filter>),
    /// `field op literal`.
    Compare(Field, Comparison, Literal),
    /// `field contains literal`: an array element, or a substring of a string.
    Contains(Field, Literal),
    /// `metadata.path exists`: the path resolves to a value, `null` included.
    Exists(Vec<String>),
}

impl Filter {
    /// Matches every entity (each stored version is at least 1).
    pub fn all() -> Self {
        Self::parse("version >= 1").expect("a constant, valid filter")
    }

    /// Parses the filter language; a filter over [`MAX_FILTER_BYTES`], [`MAX_FILTER_DEPTH`] or [`MAX_FILTER_CONDITIONS`] is refused, naming the limit.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        if text.len() > MAX_FILTER_BYTES {
            let message = format!("the filter is {} bytes; at most {MAX_FILTER_BYTES} are allowed", text.len());
            return Err(FilterError { position: MAX_FILTER_BYTES, message });
        }
        let tokens = tokenize(text)?;
        let mut parser = Parser { tokens, next: 0, end: text.len(), depth: 0, conditions: 0 };
        let filter = parser.or()?;
        match parser.peek() {
            None => Ok(filter),
            Some(token) => Err(parser.error_at(token.position, format!("unexpected {}", token.kind.describe()))),
        }
    }
}

impl std::str::FromStr for Filter {
    type Err = FilterError;
    fn from_str(text: &str) -> Result<Self, FilterError> {
        Self::parse(text)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    Word(String),
    Text(String),
    Number(Value),
    Op(Comparison),
    Open,
    Close,
}

impl TokenKind {
    fn describe(&self) -> String {
        match self {
            Self::Word(w) => format!("`{w}`"),
            Self::Text(_) => "a string".to_owned(),
            Self::Number(n) => format!("number {n}"),
            Self::Op(_) => "an operator".to_owned(),
            Self::Open => "`(`".to_owned(),
            Self::Close => "`)`".to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    position: usize,
}

fn tokenize(text: &str) -> Result<Vec<Token>, FilterError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(position, c)) = chars.peek() {
        let kind = match c {
            c if c.is_whitespace() => {
                chars.next();
                continue;
            }
            '(' => {
                chars.next();
                TokenKind::Open
            }
            ')' => {
                chars.next();
                TokenKind::Close
            }
            '"' => {
                chars.next();
                TokenKind::Text(string_literal(&mut chars, position)?)
            }
            '=' | '!' | '<' | '>' => {
                chars.next();
                let followed_by_eq = chars.next_if(|&(_, c)| c == '=').is_some();
                let op = match (c, followed_by_eq) {
                    ('=', _) => Comparison::Eq,
                    ('!', true) => Comparison::Ne,
                    ('<', false) => Comparison::Lt,
                    ('<', true) => Comparison::Le,
                    ('>', false) => Comparison::Gt,
                    ('>', true) => Comparison::Ge,
                    _ => {
                        return Err(FilterError { position, message: "`!` must be followed by `=`".to_owned() });
                    }
                };
                TokenKind::Op(op)
            }
            c if c.is_ascii_digit() || c == '-' => {
                let word = take_while(&mut chars, |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
                let number: serde_json::Number =
                    word.parse().map_err(|_| FilterError { position, message: format!("`{word}` is not a number") })?;
                TokenKind::Number(Value::Number(number))
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                TokenKind::Word(take_while(&mut chars, |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
            }
            other => {
                return Err(FilterError { position, message: format!("unexpected character {other:?}") });
            }
        };
        tokens.push(Token { kind, position });
    }
    Ok(tokens)
}

fn take_while(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>, keep: impl Fn(char) -> bool) -> String {
    let mut word = String::new();
    while let Some((_, c)) = chars.next_if(|&(_, c)| keep(c)) {
        word.push(c);
    }
    word
}

fn string_literal(
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    start: usize,
) -> Result<String, FilterError> {
    let mut value = String::new();
    loop {
        match chars.next() {
            None => {
                return Err(FilterError { position: start, message: "unterminated string".to_owned() });
            }
            Some((_, '"')) => return Ok(value),
            Some((at, '\\')) => match chars.next() {
                Some((_, c @ ('"' | '\\'))) => value.push(c),
                Some((_, 'n')) => value.push('\n'),
                _ => {
                    return Err(FilterError {
                        position: at,
                        message: "unknown escape; use \\\" \\\\ or \\n".to_owned(),
                    });
                }
            },
            Some((at, '\0')) => {
                // PostgreSQL text cannot hold it, so no stored value does on either backend.
                return Err(FilterError { position: at, message: "a string may not contain U+0000".to_owned() });
            }
            Some((_, c)) => value.push(c),
        }
    }
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    end: usize,
    /// `(` and `not` open around the current position.
    depth: usize,
    conditions: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn error_at(&self, position: usize, message: String) -> FilterError {
        FilterError { position: position.min(self.end), message }
    }

    fn advance(&mut self, expected: &str) -> Result<Token, FilterError> {
        let token = self.tokens.get(self.next).cloned();
        self.next += 1;
        token.ok_or_else(|| self.error_at(self.end, format!("expected {expected}, found the end")))
    }

    fn keyword(&mut self, word: &str) -> bool {
        let found = matches!(self.peek(), Some(Token { kind: TokenKind::Word(w), .. }) if w.eq_ignore_ascii_case(word));
        if found {
            self.next += 1;
        }
        found
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        if let Some(token) = self.peek()
            && matches!(&token.kind, TokenKind::Word(w) if w.eq_ignore_ascii_case("not"))
        {
            let position = token.position;
            self.next += 1;
            self.enter(position)?;
            let inner = self.unary();
            self.depth -= 1;
            return Ok(Filter::Not(Box::new(inner?)));
        }
        let token = self.advance("a field, `not` or `(`")?;
        match token.kind {
            TokenKind::Open => {
                self.enter(token.position)?;
                let inner = self.or();
                self.depth -= 1;
                let inner = inner?;
                let close = self.advance("`)`")?;
                if close.kind == TokenKind::Close {
                    Ok(inner)
                } else {
                    Err(self.error_at(close.position, format!("expected `)`, found {}", close.kind.describe())))
                }
            }
            TokenKind::Word(word) => self.condition(&word, token.position),
            other => Err(self.error_at(token.position, format!("expected a field, found {}", other.describe()))),
        }
    }

    fn enter(&mut self, position: usize) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_FILTER_DEPTH {
            self.depth -= 1;
            return Err(self.error_at(position, format!("nested deeper than {MAX_FILTER_DEPTH} levels")));
        }
        Ok(())
    }

    fn condition(&mut self, word: &str, position: usize) -> Result<Filter, FilterError> {
        self.conditions += 1;
        if self.conditions > MAX_FILTER_CONDITIONS {
            return Err(self.error_at(position, format!("more than {MAX_FILTER_CONDITIONS} conditions")));
        }
        let field = parse_field(word).map_err(|message| self.error_at(position, message))?;
        if self.keyword("exists") {
            return match field {
                Field::Metadata(path) => Ok(Filter::Exists(path)),
                _ => Err(self.error_at(position, format!("`exists` applies to metadata fields, not `{word}`"))),
            };
        }
        let contains = self.keyword("contains");
        let comparison = if contains {
            None
        } else {
            let token = self.advance("an operator")?;
            match token.kind {
                TokenKind::Op(op) => Some(op),
                other => {
                    return Err(self.error_at(
                        token.position,
                        format!("expected an operator (= != < <= > >= contains exists), found {}", other.describe()),
                    ));
                }
            }
        };
        let token = self.advance("a value")?;
        let value = match token.kind {
            TokenKind::Text(s) => Value::String(s),
            TokenKind::Number(n) => n,
            TokenKind::Word(w) if w == "true" => Value::Bool(true),
            TokenKind::Word(w) if w == "false" => Value::Bool(false),
            TokenKind::Word(w) if w == "null" => Value::Null,
            other => {
                return Err(self.error_at(token.position, format!("expected a value, found {}", other.describe())));
            }
        };
        let literal = typed_literal(&field, value).map_err(|message| self.error_at(token.position, message))?;
        Ok(match comparison {
            None => {
                if matches!(field, Field::Metadata(_) | Field::Content | Field::Id) {
                    Filter::Contains(field, literal)
                } else {
                    return Err(self
                        .error_at(position, format!("`contains` applies to metadata, content and id, not `{word}`")));
                }
            }
            Some(op) => Filter::Compare(field, op, literal),
        })
    }
}

fn parse_field(word: &str) -> Result<Field, String> {
    Ok(match word {
        "entity_type" => Field::EntityType,
        "id" => Field::Id,
        "content" => Field::Content,
        "version" => Field::Version,
        "revision" => Field::Revision,
        "created_at" => Field::CreatedAt,
        "updated_at" => Field::UpdatedAt,
        other => {
            let Some(path) = other.strip_prefix("metadata.") else {
                return Err(format!(
                    "unknown field `{other}`; fields are entity_type, id, content, version, revision, created_at, updated_at, metadata.<key>"
                ));
            };
            let keys: Vec<String> = path.split('.').map(str::to_owned).collect();
            let valid = keys
                .iter()
                .all(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
            if !valid {
                return Err(format!("invalid metadata path `{path}`: keys are letters, digits, '_' and '-'"));
            }
            Field::Metadata(keys)
        }
    })
}

fn typed_literal(field: &Field, value: Value) -> Result<Literal, String> {
    match (field, value) {
        (Field::Metadata(_), value) => Ok(Literal::Json(value)),
        (Field::EntityType | Field::Id | Field::Content, Value::String(s)) => Ok(Literal::Text(s)),
        (Field::Version | Field::Revision, Value::Number(n)) => {
            n.as_i64().map(Literal::Integer).ok_or_else(|| format!("{n} is not a whole number"))
        }
        (Field::CreatedAt | Field::UpdatedAt, Value::String(s)) => parse_time(&s).map(Literal::Time),
        (_, value) => Err(format!("{value} is the wrong kind of value for this field")),
    }
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("\"{text}\" is not a date (YYYY-MM-DD) or RFC 3339 time"))
}

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bind {
    Text(String),
    Integer(i64),
    Time(DateTime<Utc>),
    Json(Value),
}

/// The SQL dialect a filter is rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// SQL text with placeholders and the values to bind, in order.
#[derive(Debug, Default)]
pub(crate) struct RenderedFilter {
    pub sql: String,
    pub binds: Vec<Bind>,
}

impl RenderedFilter {
    /// Renders `filter` with placeholders numbered after `first_bind - 1`
    /// earlier ones (PostgreSQL numbering; SQLite uses `?`).
    pub fn new(filter: &Filter, dialect: Dialect, first_bind: usize) -> Self {
        let mut out = Renderer { dialect, sql: String::new(), binds: Vec::new(), first_bind };
        out.filter(filter);
        Self { sql: out.sql, binds: out.binds }
    }
}

struct Renderer {
    dialect: Dialect,
    sql: String,
    binds: Vec<Bind>,
    first_bind: usize,
}

impl Renderer {
    fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        match self.dialect {
            Dialect::Sqlite => "?".to_owned(),
            Dialect::Postgres => format!("${}", self.first_bind + self.binds.len() - 1),
        }
    }

    /// The SQLite JSON path of `keys` (object members only), bound.
    fn sqlite_path(&mut self, keys: &[String]) -> String {
        let path = keys.iter().fold("$".to_owned(), |mut acc, k| {
            let _ = write!(acc, ".\"{k}\"");
            acc
        });
        self.bind(Bind::Text(path))
    }

    /// The PostgreSQL `jsonb` value at `keys`, through object members only:
    /// `->` with a text key, unlike `#>`, does not index arrays, as
    /// SQLite's `$."0"` does not. `as_text` takes the last step with `->>`.
    fn pg_value(&mut self, keys: &[String], as_text: bool) -> String {
        let mut sql = "(metadata::jsonb".to_owned();
        for (i, key) in keys.iter().enumerate() {
            let arrow = if as_text && i + 1 == keys.len() { "->>" } else { "->" };
            let placeholder = self.bind(Bind::Text(key.clone()));
            let _ = write!(sql, " {arrow} {placeholder}::text");
        }
        sql.push(')');
        sql
    }

    /// The JSON type of the value at `keys`, in SQLite's words (`null`,
    /// `true`, `false`, `integer`, `real`, `text`, `array`, `object`) or
    /// PostgreSQL's (`null`, `boolean`, `number`, `string`, `array`, `object`).
    fn json_type(&mut self, keys: &[String]) -> String {
        match self.dialect {
            Dialect::Sqlite => {
                let path = self.sqlite_path(keys);
                format!("json_type(metadata, {path})")
            }
            Dialect::Postgres => format!("jsonb_typeof({})", self.pg_value(keys, false)),
        }
    }

    fn filter(&mut self, filter: &Filter) {
        match filter {
            Filter::And(a, b) | Filter::Or(a, b) => {
                let joiner = if matches!(filter, Filter::And(..)) { " AND " } else { " OR " };
                self.sql.push('(');
                self.filter(a);
                self.sql.push_str(joiner);
                self.filter(b);
                self.sql.push(')');
            }
            Filter::Not(inner) => {
                // A missing field makes a comparison NULL; NOT of it stays
                // unknown, so treat NULL as false first.
                self.sql.push_str("(NOT COALESCE(");
                self.filter(inner);
                self.sql.push_str(", FALSE))");
            }
            Filter::Exists(keys) => {
                let sql = format!("({} IS NOT NULL)", self.json_type(keys));
                self.sql.push_str(&sql);
            }
            Filter::Compare(field, op, literal) => self.compare(field, *op, literal),
            Filter::Contains(field, literal) => self.contains(field, literal),
        }
    }

    fn column(field: &Field) -> &'static str {
        match field {
            Field::EntityType => "entity_type",
            Field::Id => "id",
            Field::Content => "content",
            Field::Version => "version",
            Field::Revision => "revision",
            Field::CreatedAt => "created_at",
            Field::UpdatedAt => "updated_at",
            Field::Metadata(_) => "metadata",
        }
    }

    fn compare(&mut self, field: &Field, op: Comparison, literal: &Literal) {
        let op_sql = match op {
            Comparison::Eq => "=",
            Comparison::Ne => "<>",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
        };
        let sql = match (field, literal) {
            (Field::Metadata(keys), Literal::Json(Value::Null)) => {
                // `= null`: present and JSON null; `!= null`: present and not null.
                let op = if op == Comparison::Ne { "<>" } else { "=" };
                format!("({} {op} 'null')", self.json_type(keys))
            }
            (Field::Metadata(keys), Literal::Json(value)) => self.compare_json(keys, op_sql, value),
            (_, Literal::Time(time)) => {
                let bound = match self.dialect {
                    Dialect::Sqlite => self.bind(Bind::Text(crate::sqlite::format_time(*time))),
                    Dialect::Postgres => self.bind(Bind::Time(*time)),
                };
                format!("({} {op_sql} {bound})", Self::column(field))
            }
            (_, Literal::Text(text)) => {
                let bound = self.bind(Bind::Text(text.clone()));
                format!("({}{} {op_sql} {bound})", Self::column(field), self.ordering_collation(op))
            }
            (_, Literal::Integer(n)) => {
                let bound = self.bind(Bind::Integer(*n));
                format!("({} {op_sql} {bound})", Self::column(field))
            }
            (_, Literal::Json(_)) => "(FALSE)".to_owned(),
        };
        self.sql.push_str(&sql);
    }

    /// Text orders by code point on both backends: SQLite's `BINARY`, and
    /// `C` on PostgreSQL, whatever the database's collation (equality is
    /// the same under every deterministic collation, and keeps the index).
    fn ordering_collation(&self, op: Comparison) -> &'static str {
        match (self.dialect, op) {
            (Dialect::Postgres, Comparison::Lt | Comparison::Le | Comparison::Gt | Comparison::Ge) => " COLLATE \"C\"",
            _ => "",
        }
    }

    /// A metadata value against a string, number or boolean: true only when
    /// the value is of the literal's JSON type (PostgreSQL's rule).
    fn compare_json(&mut self, keys: &[String], op_sql: &str, value: &Value) -> String {
        let kind = json_kind(value);
        let json_type = self.json_type(keys);
        let same_type = match (self.dialect, kind) {
            (Dialect::Sqlite, JsonKind::Number) => format!("{json_type} IN ('integer', 'real')"),
            (Dialect::Sqlite, JsonKind::Bool) => format!("{json_type} IN ('true', 'false')"),
            (Dialect::Sqlite, JsonKind::Text) => format!("{json_type} = 'text'"),
            (Dialect::Postgres, JsonKind::Number) => format!("{json_type} = 'number'"),
            (Dialect::Postgres, JsonKind::Bool) => format!("{json_type} = 'boolean'"),
            (Dialect::Postgres, JsonKind::Text) => format!("{json_type} = 'string'"),
            (_, JsonKind::Other) => return "(FALSE)".to_owned(),
        };
        let compared = match self.dialect {
            Dialect::Sqlite => {
                let path = self.sqlite_path(keys);
                let bound = self.sqlite_json_scalar(value);
                format!("json_extract(metadata, {path}) {op_sql} {bound}")
            }
            Dialect::Postgres if kind == JsonKind::Text => {
                let text = self.pg_value(keys, true);
                let bound = self.bind(Bind::Text(value.as_str().unwrap_or_default().to_owned()));
                format!("{text} COLLATE \"C\" {op_sql} {bound}")
            }
            Dialect::Postgres => {
                let json = self.pg_value(keys, false);
                let bound = self.bind(Bind::Json(value.clone()));
                format!("{json} {op_sql} {bound}::jsonb")
            }
        };
        format!("({same_type} AND {compared})")
    }

    /// SQLite's `json_extract` yields SQL scalars; bind the same kind.
    fn sqlite_json_scalar(&mut self, value: &Value) -> String {
        match value {
            Value::String(s) => self.bind(Bind::Text(s.clone())),
            Value::Bool(b) => self.bind(Bind::Integer(i64::from(*b))),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    self.bind(Bind::Integer(i))
                } else {
                    let placeholder = self.bind(Bind::Text(n.to_string()));
                    format!("CAST({placeholder} AS REAL)")
                }
            }
            other => {
                let placeholder = self.bind(Bind::Text(other.to_string()));
                format!("json({placeholder})")
            }
        }
    }

    /// `contains`: an array holding an element equal to the literal (of its
    /// JSON type), or, for a string literal, a string holding it.
    fn contains(&mut self, field: &Field, literal: &Literal) {
        let sql = match (field, literal) {
            (Field::Metadata(keys), Literal::Json(value)) => {
                let json_type = self.json_type(keys);
                let element = match self.dialect {
                    Dialect::Sqlite => {
                        let path = self.sqlite_path(keys);
                        let element = match json_kind(value) {
                            JsonKind::Number => {
                                format!("type IN ('integer', 'real') AND value = {}", self.sqlite_json_scalar(value))
                            }
                            JsonKind::Text => format!("type = 'text' AND value = {}", self.sqlite_json_scalar(value)),
                            JsonKind::Bool => format!("type = '{value}'"),
                            JsonKind::Other if value.is_null() => "type = 'null'".to_owned(),
                            JsonKind::Other => "FALSE".to_owned(),
                        };
                        format!("EXISTS (SELECT 1 FROM json_each(metadata, {path}) WHERE {element})")
                    }
                    Dialect::Postgres => {
                        let array = self.pg_value(keys, false);
                        let element = self.bind(Bind::Json(Value::Array(vec![value.clone()])));
                        format!("{array} @> {element}::jsonb")
                    }
                };
                let array = format!("({json_type} = 'array' AND {element})");
                match value.as_str() {
                    Some(needle) => {
                        let json_type = self.json_type(keys);
                        let text = match self.dialect {
                            Dialect::Sqlite => {
                                let path = self.sqlite_path(keys);
                                format!("json_extract(metadata, {path})")
                            }
                            Dialect::Postgres => self.pg_value(keys, true),
                        };
                        let needle = self.bind(Bind::Text(needle.to_owned()));
                        let (string, find) = match self.dialect {
                            Dialect::Sqlite => ("text", "instr"),
                            Dialect::Postgres => ("string", "strpos"),
                        };
                        format!("({array} OR ({json_type} = '{string}' AND {find}({text}, {needle}) > 0))")
                    }
                    None => array,
                }
            }
            (_, Literal::Text(text)) => {
                let needle = self.bind(Bind::Text(text.clone()));
                let function = if self.dialect == Dialect::Sqlite { "instr" } else { "strpos" };
                format!("({function}({}, {needle}) > 0)", Self::column(field))
            }
            _ => "(FALSE)".to_owned(),
        };
        self.sql.push_str(&sql);
    }
}

/// The JSON types a filter literal can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonKind {
    Number,
    Text,
    Bool,
    Other,
}

fn json_kind(value: &Value) -> JsonKind {
    match value {
        Value::Number(_) => JsonKind::Number,
        Value::String(_) => JsonKind::Text,
        Value::Bool(_) => JsonKind::Bool,
        _ => JsonKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let filter =
            Filter::parse(r#"entity_type = "note" and metadata.tags contains "rust" and updated_at > "2026-01-01""#)
                .unwrap();
        let Filter::And(left, right) = filter else { panic!("expected and") };
        assert!(matches!(*right, Filter::Compare(Field::UpdatedAt, Comparison::Gt, Literal::Time(_))));
        let Filter::And(a, b) = *left else { panic!("expected and") };
        assert_eq!(*a, Filter::Compare(Field::EntityType, Comparison::Eq, Literal::Text("note".into())));
        assert_eq!(
            *b,
            Filter::Contains(Field::Metadata(vec!["tags".into()]), Literal::Json(Value::String("rust".into())))
        );
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_override() {
        let f = Filter::parse("version = 1 or version = 2 and id = \"x\"").unwrap();
        assert!(matches!(f, Filter::Or(_, ref r) if matches!(**r, Filter::And(..))));
        let g = Filter::parse("(version = 1 or version = 2) and id = \"x\"").unwrap();
        assert!(matches!(g, Filter::And(ref l, _) if matches!(**l, Filter::Or(..))));
    }

    #[test]
    fn errors_name_the_position() {
        let cases = [
            ("colour = \"red\"", 0, "unknown field `colour`"),
            ("id = ", 5, "expected a value"),
            ("id = = \"a\"", 5, "expected a value"),
            ("id = \"unterminated", 5, "unterminated string"),
            ("version = \"one\"", 10, "wrong kind of value"),
            ("updated_at > \"yesterday\"", 13, "is not a date"),
            ("(id = \"a\"", 9, "expected `)`"),
            ("id = \"a\" ; drop table entities", 9, "unexpected character ';'"),
            ("metadata.a'b = 1", 10, "unexpected character"),
            ("id exists", 0, "`exists` applies to metadata"),
        ];
        for (text, position, message) in cases {
            let error = Filter::parse(text).unwrap_err();
            assert!(error.message.contains(message), "{text}: {error}");
            assert_eq!(error.position, position, "{text}: {error}");
        }
    }

    #[test]
    fn hostile_strings_only_ever_become_binds() {
        let payload = "x\" or 1=1; -- '); drop table entities; /*";
        let text = format!("metadata.title = \"{}\" and content contains \"'--\"", payload.replace('"', "\\\""));
        let filter = Filter::parse(&text).unwrap();
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let rendered = RenderedFilter::new(&filter, dialect, 1);
            assert!(!rendered.sql.contains("drop"), "{}", rendered.sql);
            assert!(!rendered.sql.contains("--"), "{}", rendered.sql);
            // Quotes appear only around the renderer's own type names.
            let unquoted = [
                "'null'",
                "'true'",
                "'false'",
                "'integer'",
                "'real'",
                "'text'",
                "'array'",
                "'object'",
                "'number'",
                "'boolean'",
                "'string'",
            ]
            .iter()
            .fold(rendered.sql.clone(), |sql, name| sql.replace(name, ""));
            assert!(!unquoted.contains('\''), "{}", rendered.sql);
            assert!(!rendered.sql.contains("1=1"), "{}", rendered.sql);
            let as_text = Bind::Text(payload.to_owned());
            let as_json = Bind::Json(Value::String(payload.to_owned()));
            assert!(rendered.binds.contains(&as_text) || rendered.binds.contains(&as_json));
        }
    }

    #[test]
    fn limits_refuse_long_deep_and_many() {
        let long = format!("id = \"{}\"", "x".repeat(MAX_FILTER_BYTES));
        assert!(Filter::parse(&long).unwrap_err().message.contains("at most"));
        let deep = format!("{}id = \"x\"{}", "(".repeat(5_000), ")".repeat(5_000));
        assert!(Filter::parse(&deep).unwrap_err().message.contains("nested deeper"));
        let nots = format!("{}id = \"x\"", "not ".repeat(1_000));
        assert!(Filter::parse(&nots).unwrap_err().message.contains("nested deeper"));
        let many = vec!["version = 1"; MAX_FILTER_CONDITIONS + 1].join(" and ");
        assert!(Filter::parse(&many).unwrap_err().message.contains("conditions"));
        let at_limit = format!("{}id = \"x\"{}", "(".repeat(MAX_FILTER_DEPTH), ")".repeat(MAX_FILTER_DEPTH));
        assert!(Filter::parse(&at_limit).is_ok());
        assert!(Filter::parse(&vec!["version = 1"; MAX_FILTER_CONDITIONS].join(" and ")).is_ok());
    }

    /// Any text, or a soup of the language's own tokens.
    fn filter_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let words = vec![
            "id",
            "entity_type",
            "metadata.a",
            "metadata.a-b.c_d",
            "content",
            "version",
            "created_at",
            "=",
            "!=",
            "<",
            ">=",
            "contains",
            "exists",
            "and",
            "or",
            "not",
            "(",
            ")",
            "\"x\"",
            "\"2026-01-01\"",
            "1",
            "-2.5e3",
            "true",
            "null",
            "\"\\\"\"",
            "\"",
            "metadata.",
            "…",
        ];
        prop_oneof!["\\PC{0,80}", prop::collection::vec(prop::sample::select(words), 0..40).prop_map(|w| w.join(" ")),]
    }

    proptest::proptest! {
        /// Parsing never panics; errors point inside the text; whatever parses
        /// renders on both dialects with one bound value per placeholder.
        #[test]
        fn fuzz_filter_parse(text in filter_text()) {
            match Filter::parse(&text) {
                Err(err) => proptest::prop_assert!(err.position <= text.len(), "{err}"),
                Ok(filter) => {
                    let sqlite = RenderedFilter::new(&filter, Dialect::Sqlite, 1);
                    proptest::prop_assert_eq!(sqlite.sql.matches('?').count(), sqlite.binds.len());
                    let postgres = RenderedFilter::new(&filter, Dialect::Postgres, 3);
                    let last = format!("${}", 2 + postgres.binds.len());
                    proptest::prop_assert!(postgres.binds.is_empty() || postgres.sql.contains(&last));
                }
            }
        }
    }
}
