//! The four file formats of `batch_export` and `batch_import`: JSON (one
//! array), JSON Lines, CSV and Parquet. Writers take records a page at a
//! time; readers yield rows one at a time as JSON objects, so neither side
//! holds a whole file. Both are blocking: callers run them on a blocking
//! thread.
//!
//! Columns (CSV, Parquet) are `collection`, `id`, `content`, `metadata`
//! (a JSON object as text) and, with embeddings, `embedding` (JSON text).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A file format of `batch_import` and `batch_export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON array of records.
    Json,
    /// One JSON record per line.
    Jsonl,
    /// A header row, then one record per row (metadata as JSON text).
    Csv,
    /// Apache Parquet, one row per record.
    Parquet,
}

impl Format {
    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }

    /// The format a file name's extension names.
    pub fn of_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }
}

/// One document as exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The document's collection (entity type).
    pub collection: String,
    /// Its id.
    pub id: String,
    /// Its content.
    pub content: String,
    /// Its metadata.
    pub metadata: Map<String, Value>,
    /// Its vectors, when exported with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<RecordEmbedding>,
}

/// A document's stored vectors: valid for `content_hash` under `model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RecordEmbedding {
    /// The model id the vectors were made with.
    pub model: String,
    /// The content hash they were made for.
    pub content_hash: String,
    /// One vector per chunk, in order.
    pub chunks: Vec<RecordChunk>,
}

/// One chunk's vector and where the chunk lies in the content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RecordChunk {
    /// Byte offset of the chunk's start in the content.
    pub start: usize,
    /// Byte offset just past its end.
    pub end: usize,
    /// The vector (L2-normalised).
    pub vector: Vec<f32>,
}

/// Writes records to one file; `finish` completes it (closing brackets,
/// footers) and flushes.
pub trait RecordWriter: Send {
    fn write(&mut self, records: &[Record]) -> std::io::Result<()>;
    fn finish(self: Box<Self>) -> std::io::Result<()>;
}

/// A writer of records in `format` to `file` (CSV and Parquet carry vectors only with `with_embeddings`).
pub fn writer(format: Format, file: File, with_embeddings: bool) -> std::io::Result<Box<dyn RecordWriter>> {
    let out = BufWriter::new(file);
    Ok(match format {
        Format::Json => Box::new(JsonWriter { out, first: true }),
        Format::Jsonl => Box::new(JsonlWriter { out }),
        Format::Csv => Box::new(CsvWriter::new(out, with_embeddings)?),
        Format::Parquet => Box::new(ParquetWriter::new(out, with_embeddings)?),
    })
}

struct JsonWriter {
    out: BufWriter<File>,
    first: bool,
}

impl RecordWriter for JsonWriter {
    fn write(&mut self, records: &[Record]) -> std::io::Result<()> {
        for record in records {
            self.out.write_all(if self.first { b"[\n" } else { b",\n" })?;
            self.first = false;
            serde_json::to_writer(&mut self.out, record)?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> std::io::Result<()> {
        self.out.write_all(if self.first { b"[]\n" } else { b"\n]\n" })?;
        self.out.flush()
    }
}

struct JsonlWriter {
    out: BufWriter<File>,
}

impl RecordWriter for JsonlWriter {
    fn write(&mut self, records: &[Record]) -> std::io::Result<()> {
        for record in records {
            serde_json::to_writer(&mut self.out, record)?;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> std::io::Result<()> {
        self.out.flush()
    }
}

const COLUMNS: [&str; 4] = ["collection", "id", "content", "metadata"];
const EMBEDDING_COLUMN: &str = "embedding";

/// A record as column texts, in [`COLUMNS`] order (plus the embedding).
fn columns(record: &Record, with_embeddings: bool) -> Vec<Option<String>> {
    let mut texts = vec![
        Some(record.collection.clone()),
        Some(record.id.clone()),
        Some(record.content.clone()),
        Some(Value::Object(record.metadata.clone()).to_string()),
    ];
    if with_embeddings {
        texts.push(record.embedding.as_ref().map(|e| serde_json::to_string(e).unwrap_or_default()));
    }
    texts
}

fn header(with_embeddings: bool) -> Vec<&'static str> {
    let mut names = COLUMNS.to_vec();
    if with_embeddings {
        names.push(EMBEDDING_COLUMN);
    }
    names
}

struct CsvWriter {
    out: csv::Writer<BufWriter<File>>,
    with_embeddings: bool,
}

impl CsvWriter {
    fn new(out: BufWriter<File>, with_embeddings: bool) -> std::io::Result<Self> {
        let mut out = csv::Writer::from_writer(out);
        out.write_record(header(with_embeddings))?;
        Ok(Self { out, with_embeddings })
    }
}

impl RecordWriter for CsvWriter {
    fn write(&mut self, records: &[Record]) -> std::io::Result<()> {
        for record in records {
            let texts = columns(record, self.with_embeddings);
            self.out.write_record(texts.iter().map(|t| t.as_deref().unwrap_or_default()))?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// One row group per page of records: memory holds a page, not the file.
struct ParquetWriter {
    out: SerializedFileWriter<BufWriter<File>>,
    with_embeddings: bool,
}

impl ParquetWriter {
    fn new(out: BufWriter<File>, with_embeddings: bool) -> std::io::Result<Self> {
        let mut schema = String::from(
            "message document {
                REQUIRED BYTE_ARRAY collection (UTF8);
                REQUIRED BYTE_ARRAY id (UTF8);
                REQUIRED BYTE_ARRAY content (UTF8);
                REQUIRED BYTE_ARRAY metadata (JSON);",
        );
        if with_embeddings {
            schema.push_str("OPTIONAL BYTE_ARRAY embedding (JSON);");
        }
        schema.push('}');
        let schema = parquet::schema::parser::parse_message_type(&schema).map_err(std::io::Error::other)?;
        let properties = WriterProperties::builder().set_compression(parquet::basic::Compression::SNAPPY).build();
        let out =
            SerializedFileWriter::new(out, Arc::new(schema), Arc::new(properties)).map_err(std::io::Error::other)?;
        Ok(Self { out, with_embeddings })
    }

    fn write_group(&mut self, records: &[Record]) -> parquet::errors::Result<()> {
        let rows: Vec<Vec<Option<String>>> = records.iter().map(|r| columns(r, self.with_embeddings)).collect();
        let mut group = self.out.next_row_group()?;
        let mut index = 0;
        while let Some(mut column) = group.next_column()? {
            let texts = rows.iter().map(|row| row[index].as_deref());
            let present: Vec<ByteArray> = texts.clone().flatten().map(ByteArray::from).collect();
            let levels: Vec<i16> = texts.map(|text| i16::from(text.is_some())).collect();
            let optional = index >= COLUMNS.len();
            column.typed::<ByteArrayType>().write_batch(&present, optional.then_some(&levels[..]), None)?;
            column.close()?;
            index += 1;
        }
        group.close()?;
        Ok(())
    }
}

impl RecordWriter for ParquetWriter {
    fn write(&mut self, records: &[Record]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.write_group(records).map_err(std::io::Error::other)
    }

    fn finish(self: Box<Self>) -> std::io::Result<()> {
        let mut out = self.out.into_inner().map_err(std::io::Error::other)?;
        out.flush()
    }
}

/// One row read from a file: its label (`line 3`, `row 2`, `element 7`) and
/// its fields, or why it could not be read.
pub type Row = (String, Result<Map<String, Value>, String>);

/// Reads `path` row by row, handing each to `each`; stops early when `each`
/// returns false. An error is a file that cannot be read at all.
pub fn read_rows(format: Format, path: &Path, each: &mut dyn FnMut(Row) -> bool) -> Result<(), String> {
    let file = File::open(path).map_err(|err| err.to_string())?;
    match format {
        Format::Json => read_json(BufReader::new(file), each),
        Format::Jsonl => read_jsonl(BufReader::new(file), each),
        Format::Csv => read_csv(BufReader::new(file), each),
        Format::Parquet => read_parquet(file, each),
    }
}

fn read_jsonl(input: BufReader<File>, each: &mut dyn FnMut(Row) -> bool) -> Result<(), String> {
    for (index, line) in input.lines().enumerate() {
        let line = line.map_err(|err| format!("line {}: {err}", index + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let fields = serde_json::from_str::<Value>(&line).map_err(|err| err.to_string()).and_then(object);
        if !each((format!("line {}", index + 1), fields)) {
            break;
        }
    }
    Ok(())
}

fn object(value: Value) -> Result<Map<String, Value>, String> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(format!("expected a JSON object, got {}", kind(&other))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A top-level JSON array, element by element (serde visits the sequence;
/// no element but the current one is held).
fn read_json(input: BufReader<File>, each: &mut dyn FnMut(Row) -> bool) -> Result<(), String> {
    struct Elements<'a> {
        each: &'a mut dyn FnMut(Row) -> bool,
    }
    impl<'de> serde::de::Visitor<'de> for Elements<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array of documents")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut index = 0;
            while let Some(value) = seq.next_element::<Value>()? {
                index += 1;
                if !(self.each)((format!("element {index}"), object(value))) {
                    // Stopped early: the rest of the file is not read.
                    return Err(serde::de::Error::custom(STOPPED));
                }
            }
            Ok(())
        }
    }
    const STOPPED: &str = "stopped by the reader";
    let mut deserializer = serde_json::Deserializer::from_reader(input);
    match serde::Deserializer::deserialize_seq(&mut deserializer, Elements { each }) {
        Ok(()) => deserializer.end().map_err(|err| err.to_string()),
        Err(err) if err.to_string().starts_with(STOPPED) => Ok(()),
        Err(err) => Err(err.to_string()),
    }
}

fn read_csv(input: BufReader<File>, each: &mut dyn FnMut(Row) -> bool) -> Result<(), String> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(input);
    let header: Vec<String> = reader.headers().map_err(|err| err.to_string())?.iter().map(str::to_owned).collect();
    for (index, record) in reader.records().enumerate() {
        // Row 1 is the header.
        let label = format!("row {}", index + 2);
        let fields = record.map_err(|err| err.to_string()).map(|record| {
            header
                .iter()
                .zip(record.iter())
                .map(|(name, text)| (name.clone(), Value::String(text.to_owned())))
                .collect()
        });
        if !each((label, fields)) {
            break;
        }
    }
    Ok(())
}

fn read_parquet(file: File, each: &mut dyn FnMut(Row) -> bool) -> Result<(), String> {
    let reader = SerializedFileReader::new(file).map_err(|err| err.to_string())?;
    let rows = reader.get_row_iter(None).map_err(|err| err.to_string())?;
    for (index, row) in rows.enumerate() {
        let label = format!("row {}", index + 1);
        let fields = row
            .map_err(|err| err.to_string())
            .map(|row| row.get_column_iter().map(|(name, field)| (name.clone(), field_value(field))).collect());
        if !each((label, fields)) {
            break;
        }
    }
    Ok(())
}

/// A Parquet field as JSON: text stays text (JSON columns are parsed later,
/// like CSV's), numbers and booleans keep their type.
fn field_value(field: &Field) -> Value {
    match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Str(text) => Value::String(text.clone()),
        Field::Bytes(bytes) => Value::String(String::from_utf8_lossy(bytes.data()).into_owned()),
        Field::Byte(n) => Value::from(*n),
        Field::Short(n) => Value::from(*n),
        Field::Int(n) => Value::from(*n),
        Field::Long(n) => Value::from(*n),
        Field::UByte(n) => Value::from(*n),
        Field::UShort(n) => Value::from(*n),
        Field::UInt(n) => Value::from(*n),
        Field::ULong(n) => Value::from(*n),
        Field::Float(n) => Value::from(f64::from(*n)),
        Field::Double(n) => Value::from(*n),
        other => Value::String(other.to_string()),
    }
}
