//! `batch_enhance`: fills `title`, `tags` and `context` (a short summary)
//! in the metadata of many documents, `batch_size` documents per call of an
//! [`Enhancer`]: an OpenAI-compatible chat model when one is configured, or
//! the built-in [`LocalEnhancer`] (title from the first heading or line,
//! tags by TF-IDF across the collection, context = the first paragraph).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use batch_core::ProgressTracker;
use entity_store::{Entity, NewEntity, UpsertOptions, UpsertStatus};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::select::Selection;
use crate::{BatchTools, Call, DocumentRef, ItemError, ToolError, invalid};

/// What an enhancer is given for one document.
#[derive(Debug, Clone, PartialEq)]
pub struct EnhanceInput {
    /// The document's id.
    pub id: String,
    /// Its content (markdown).
    pub content: String,
}

/// What an enhancer found for one document; `None` and empty leave a field alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Enhancement {
    /// A title for the document.
    #[serde(default)]
    pub title: Option<String>,
    /// Tags for it (lowercase words).
    #[serde(default)]
    pub tags: Vec<String>,
    /// A sentence saying what it is about.
    #[serde(default)]
    pub context: Option<String>,
    /// Further metadata to merge (e.g. `word_count`).
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// How often each word occurs across a collection, for TF-IDF.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    /// Documents added.
    pub documents: usize,
    /// For each word, the documents it occurs in.
    pub document_frequency: HashMap<String, usize>,
}

impl Corpus {
    /// Counts the words of one more document.
    pub fn add(&mut self, text: &str) {
        self.documents += 1;
        for word in words(text).collect::<BTreeSet<_>>() {
            *self.document_frequency.entry(word).or_default() += 1;
        }
    }

    fn idf(&self, word: &str) -> f64 {
        let df = self.document_frequency.get(word).copied().unwrap_or(0);
        ((1 + self.documents) as f64 / (1 + df) as f64).ln() + 1.0
    }
}

/// Why an enhancer failed: in words, and the API's error underneath when there is one.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct EnhanceError {
    /// What failed, for a person.
    pub reason: String,
    /// The chat API's error, when that was the cause.
    #[source]
    pub source: Option<embedding::ApiError>,
}

impl From<String> for EnhanceError {
    fn from(reason: String) -> Self {
        Self { reason, source: None }
    }
}

impl From<embedding::ApiError> for EnhanceError {
    fn from(source: embedding::ApiError) -> Self {
        Self { reason: source.to_string(), source: Some(source) }
    }
}

/// Fills document fields, a batch per call; answers in the input's order.
#[async_trait::async_trait]
pub trait Enhancer: Send + Sync {
    /// Recorded as `enhanced_by` in each document's metadata.
    fn name(&self) -> &str;

    /// Whether [`enhance`](Self::enhance) reads the corpus (building it
    /// costs a pass over the collection).
    fn needs_corpus(&self) -> bool {
        false
    }

    /// One enhancement per document of `batch`, in order.
    async fn enhance(&self, batch: &[EnhanceInput], corpus: &Corpus) -> Result<Vec<Enhancement>, EnhanceError>;
}

/// No model: rules any reader can predict.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalEnhancer;

/// Tags per document.
const TAGS: usize = 5;
/// Longest context, in characters.
const CONTEXT_CHARS: usize = 300;
const TITLE_CHARS: usize = 100;

#[async_trait::async_trait]
impl Enhancer for LocalEnhancer {
    fn name(&self) -> &'static str {
        "local"
    }

    fn needs_corpus(&self) -> bool {
        true
    }

    async fn enhance(&self, batch: &[EnhanceInput], corpus: &Corpus) -> Result<Vec<Enhancement>, EnhanceError> {
        Ok(batch.iter().map(|input| local_enhancement(&input.content, corpus)).collect())
    }
}

fn local_enhancement(content: &str, corpus: &Corpus) -> Enhancement {
    let mut metadata = Map::new();
    metadata.insert("word_count".into(), content.split_whitespace().count().into());
    Enhancement {
        title: title_of(content),
        tags: keywords(content, corpus),
        context: first_paragraph(content),
        metadata,
    }
}

/// The first heading, else the first line with words, without markup.
fn title_of(content: &str) -> Option<String> {
    let lines = || content.lines().map(str::trim).filter(|line| !line.is_empty());
    let heading = lines().find(|line| line.starts_with('#')).map(|line| line.trim_start_matches('#'));
    let line = heading.or_else(|| lines().next())?;
    let plain = plain_text(line);
    (!plain.is_empty()).then(|| cut(&plain, TITLE_CHARS))
}

/// The first paragraph that is prose (not a heading, list, quote, code or table).
fn first_paragraph(content: &str) -> Option<String> {
    let mut in_code = false;
    let mut paragraph: Vec<&str> = Vec::new();
    for line in content.lines().map(str::trim) {
        if line.starts_with("```") || line.starts_with("~~~") {
            in_code = !in_code;
            continue;
        }
        let prose = !in_code && !line.is_empty() && !line.starts_with(['#', '|', '>', '-', '*', '<']);
        if prose {
            paragraph.push(line);
        } else if !paragraph.is_empty() {
            break;
        }
    }
    let text = plain_text(&paragraph.join(" "));
    (!text.is_empty()).then(|| cut(&text, CONTEXT_CHARS))
}

/// Markdown emphasis and link syntax dropped, whitespace collapsed.
fn plain_text(markdown: &str) -> String {
    let unmarked: String = markdown.chars().filter(|c| !matches!(c, '*' | '_' | '`' | '[' | ']')).collect();
    unmarked.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` characters, cut at a word boundary with an ellipsis.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let head: String = text.chars().take(max - 1).collect();
    let at_word = head.rfind(' ').filter(|&at| at > max / 2).map_or(head.as_str(), |at| &head[..at]);
    format!("{}…", at_word.trim_end())
}

/// The words of a text for TF-IDF: lowercase, three letters or more, no
/// stop words, no numbers.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| word.chars().count() >= 3 && !word.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_lowercase)
        .filter(|word| !STOP_WORDS.contains(&word.as_str()))
}

/// The `TAGS` words scoring highest by TF-IDF; ties by the word.
fn keywords(content: &str, corpus: &Corpus) -> Vec<String> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for word in words(content) {
        *counts.entry(word).or_default() += 1;
    }
    let mut scored: Vec<(f64, String)> =
        counts.into_iter().map(|(word, tf)| (tf as f64 * corpus.idf(&word), word)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.into_iter().take(TAGS).map(|(_, word)| word).collect()
}

const STOP_WORDS: &[&str] = &[
    "about", "after", "again", "all", "also", "and", "any", "are", "because", "been", "before", "being", "between",
    "both", "but", "can", "could", "did", "does", "doing", "down", "during", "each", "few", "for", "from", "further",
    "had", "has", "have", "having", "her", "here", "hers", "him", "his", "how", "into", "its", "just", "more", "most",
    "not", "now", "off", "once", "only", "other", "our", "out", "over", "own", "same", "she", "should", "some", "such",
    "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "those", "through", "too",
    "under", "until", "very", "was", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will",
    "with", "would", "you", "your", "yours",
];

/// An OpenAI-compatible chat model (OpenAI, Ollama, vLLM, ...) asked for
/// JSON: one object per document, in order.
pub struct ChatEnhancer {
    client: embedding::OpenAiClient,
    model: String,
    name: String,
}

/// Characters of each document sent to the model.
const CHAT_INPUT_CHARS: usize = 4_000;

impl ChatEnhancer {
    /// `base_url` up to and including `/v1`; the key (if any) is read from `api_key_env`.
    pub fn new(base_url: &str, model: &str, api_key_env: &str) -> Result<Self, EnhanceError> {
        let retry = batch_core::RetryPolicy {
            max_attempts: 4,
            base_delay: std::time::Duration::from_millis(500),
            ..batch_core::RetryPolicy::default()
        };
        let client = embedding::OpenAiClient::new(base_url, api_key_env, std::time::Duration::from_secs(120), retry)?;
        Ok(Self { client, model: model.to_owned(), name: format!("chat:{model}") })
    }
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<ChatChoice>,
}

#[derive(Deserialize)]
struct ChatChoice {
    message: ChatMessage,
}

#[derive(Deserialize)]
struct ChatMessage {
    content: String,
}

#[derive(Deserialize)]
struct ChatAnswer {
    documents: Vec<Enhancement>,
}

#[async_trait::async_trait]
impl Enhancer for ChatEnhancer {
    fn name(&self) -> &str {
        &self.name
    }

    async fn enhance(&self, batch: &[EnhanceInput], _corpus: &Corpus) -> Result<Vec<Enhancement>, EnhanceError> {
        let documents: Vec<Value> = batch
            .iter()
            .enumerate()
            .map(|(index, input)| serde_json::json!({"index": index, "content": cut(&input.content, CHAT_INPUT_CHARS)}))
            .collect();
        let body = serde_json::json!({
            "model": self.model,
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": "You label documents for a search index. For each document give a short \
                    title, up to 5 lowercase topic tags, and a one or two sentence context summary. Answer with JSON \
                    only: {\"documents\": [{\"title\": ..., \"tags\": [...], \"context\": ...}]}, one object per \
                    document, in the order given."},
                {"role": "user", "content": Value::Array(documents).to_string()},
            ],
        });
        let response: ChatResponse = self.client.post("chat/completions", &body).await?;
        let text = response
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| EnhanceError::from("the model gave no answer".to_owned()))?;
        let answer: ChatAnswer = serde_json::from_str(&text.message.content)
            .map_err(|err| EnhanceError::from(format!("the model's answer is not the JSON asked for: {err}")))?;
        if answer.documents.len() != batch.len() {
            return Err(EnhanceError::from(format!(
                "asked about {} documents, the model answered for {}",
                batch.len(),
                answer.documents.len()
            )));
        }
        Ok(answer.documents)
    }
}

/// Arguments of `batch_enhance`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnhanceArgs {
    /// Which documents.
    #[serde(flatten)]
    pub selection: Selection,
    /// Which of `title`, `tags` and `context` to fill (default all three).
    #[serde(default = "all_fields")]
    pub fields: Vec<EnhanceField>,
    /// Replace values already there (default false: only fill what is missing).
    #[serde(default)]
    pub overwrite: bool,
    /// Documents per enhancer call (default 10).
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 1000))]
    pub batch_size: usize,
    /// Refuse selections larger than this (default 1000).
    #[serde(default = "crate::default_max_documents")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_documents: usize,
}

/// A metadata field `batch_enhance` can fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EnhanceField {
    /// `title`
    Title,
    /// `tags`
    Tags,
    /// `context`
    Context,
}

impl EnhanceField {
    fn key(self) -> &'static str {
        match self {
            EnhanceField::Title => "title",
            EnhanceField::Tags => "tags",
            EnhanceField::Context => "context",
        }
    }
}

fn all_fields() -> Vec<EnhanceField> {
    vec![EnhanceField::Title, EnhanceField::Tags, EnhanceField::Context]
}

fn default_batch_size() -> usize {
    10
}

/// What `batch_enhance` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EnhanceOutput {
    /// Documents the selection matched.
    pub matched: usize,
    /// Documents whose metadata was filled in.
    pub updated: Vec<DocumentRef>,
    /// Matched documents that already had everything asked for.
    pub unchanged: usize,
    /// Documents whose batch the enhancer failed, and ids that named nothing.
    pub errors: Vec<ItemError>,
    /// The enhancer used (`local`, or `chat:MODEL`).
    pub enhancer: String,
}

impl EnhanceArgs {
    /// What can be checked without the store.
    pub fn check(&self) -> Result<(), ToolError> {
        if self.batch_size == 0 || self.batch_size > 1_000 {
            return Err(invalid(format!("batch_size must be 1 to 1000, not {}", self.batch_size)));
        }
        if self.fields.is_empty() {
            return Err(invalid("fields is empty: give some of title, tags, context"));
        }
        self.selection.check(self.max_documents)
    }
}

impl BatchTools {
    /// Fills titles, tags and context of the selected documents by the enhancer.
    pub async fn batch_enhance(&self, args: EnhanceArgs, call: &Call) -> Result<EnhanceOutput, ToolError> {
        args.check()?;
        let enhancer = self.enhancer.clone();
        let selected = self.select(&args.selection, args.max_documents).await?;
        let matched = selected.entities.len(); // unknown ids are errors, not matches
        let mut output = EnhanceOutput {
            matched,
            updated: Vec::new(),
            unchanged: 0,
            errors: selected.missing,
            enhancer: enhancer.name().to_owned(),
        };
        // Only documents missing something asked for go to the enhancer.
        let (todo, complete): (Vec<Entity>, Vec<Entity>) =
            selected.entities.into_iter().partition(|e| args.overwrite || args.fields.iter().any(|f| !has(e, *f)));
        output.unchanged = complete.len();
        let corpus = if enhancer.needs_corpus() { self.corpus(&todo).await? } else { Corpus::default() };
        let tracker = ProgressTracker::new(todo.len() as u64, call.progress.clone());
        tracker.set_message("enhancing");
        for batch in todo.chunks(args.batch_size) {
            if call.cancel.is_cancelled() {
                return Err(ToolError::Cancelled);
            }
            let inputs: Vec<EnhanceInput> =
                batch.iter().map(|e| EnhanceInput { id: e.id.clone(), content: e.content.clone() }).collect();
            let found = match enhancer.enhance(&inputs, &corpus).await {
                Ok(found) if found.len() == batch.len() => found,
                Ok(found) => {
                    let reason = format!("answered for {} of {} documents", found.len(), batch.len());
                    fail_batch(batch, &reason, &mut output.errors);
                    Vec::new()
                }
                Err(err) => {
                    fail_batch(batch, &err.reason, &mut output.errors);
                    Vec::new()
                }
            };
            if found.is_empty() {
                tracker.advance(0, batch.len() as u64);
                continue;
            }
            let writes: Vec<NewEntity> = batch
                .iter()
                .zip(found)
                .map(|(entity, found)| enhanced(entity, found, &args, enhancer.name()))
                .collect();
            let options = UpsertOptions { cancel: Some(call.cancel.clone()), ..UpsertOptions::default() };
            let report = self.store.batch_upsert(writes, &options).await?;
            for done in &report.succeeded {
                if done.outcome.status == UpsertStatus::Unchanged {
                    output.unchanged += 1;
                } else {
                    output.updated.push(DocumentRef::from(done.key.clone()));
                }
            }
            let failed = report.failed.len() as u64;
            for failure in report.failed {
                output.errors.push(ItemError { item: failure.key.id, reason: failure.reason });
            }
            tracker.advance(batch.len() as u64 - failed, failed);
        }
        tracker.finish();
        Ok(output)
    }

    /// Word statistics of every collection the documents are in.
    async fn corpus(&self, documents: &[Entity]) -> Result<Corpus, ToolError> {
        let collections: BTreeSet<&str> = documents.iter().map(|e| e.entity_type.as_str()).collect();
        let mut corpus = Corpus::default();
        for collection in collections {
            let mut after: Option<String> = None;
            loop {
                let page = self.store.list(collection, after.as_deref(), 1_000).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.id.clone());
                for entity in &page {
                    corpus.add(&entity.content);
                }
            }
        }
        Ok(corpus)
    }
}

fn has(entity: &Entity, field: EnhanceField) -> bool {
    match entity.metadata.get(field.key()) {
        None | Some(Value::Null) => false,
        Some(Value::String(text)) => !text.trim().is_empty(),
        Some(Value::Array(items)) => !items.is_empty(),
        Some(_) => true,
    }
}

fn fail_batch(batch: &[Entity], reason: &str, errors: &mut Vec<ItemError>) {
    errors.extend(batch.iter().map(|e| ItemError { item: e.id.clone(), reason: format!("enhancer: {reason}") }));
}

/// The entity with what was found filled in, as a write that expects the
/// version it was read at (a concurrent change fails as a conflict).
fn enhanced(entity: &Entity, found: Enhancement, args: &EnhanceArgs, enhancer: &str) -> NewEntity {
    let mut metadata = entity.metadata.clone();
    let mut set = |field: EnhanceField, value: Value| {
        if args.fields.contains(&field) && (args.overwrite || !has(entity, field)) {
            metadata.insert(field.key().to_owned(), value);
        }
    };
    if let Some(title) = found.title.filter(|t| !t.trim().is_empty()) {
        set(EnhanceField::Title, title.into());
    }
    if !found.tags.is_empty() {
        set(EnhanceField::Tags, found.tags.into());
    }
    if let Some(context) = found.context.filter(|c| !c.trim().is_empty()) {
        set(EnhanceField::Context, context.into());
    }
    for (key, value) in found.metadata {
        if args.overwrite || !metadata.contains_key(&key) {
            metadata.insert(key, value);
        }
    }
    metadata.insert("enhanced_by".into(), enhancer.into());
    NewEntity::new(&entity.entity_type, &entity.id, entity.content.clone())
        .with_metadata(Value::Object(metadata))
        .with_frontmatter(entity.frontmatter.clone())
        .expecting_version(entity.version)
}

/// The enhancer the tools use unless told otherwise.
pub(crate) fn default_enhancer() -> Arc<dyn Enhancer> {
    Arc::new(LocalEnhancer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_comes_from_the_first_heading_else_the_first_line() {
        assert_eq!(title_of("intro\n\n## The **Real** Title\ntext").as_deref(), Some("The Real Title"));
        assert_eq!(title_of("\n\n  First line here\nsecond").as_deref(), Some("First line here"));
        assert_eq!(title_of("   \n"), None);
    }

    #[test]
    fn context_is_the_first_prose_paragraph_cut_at_a_word() {
        let text = "# Title\n\n- a list\n\nThe first\nparagraph here.\n\nThe second.";
        assert_eq!(first_paragraph(text).as_deref(), Some("The first paragraph here."));
        let long = format!("# T\n\n{}", "word ".repeat(200));
        let context = first_paragraph(&long).unwrap();
        assert!(context.chars().count() <= CONTEXT_CHARS && context.ends_with("word…"), "{context}");
        assert_eq!(first_paragraph("```\ncode only\n```"), None);
    }

    #[test]
    fn tags_prefer_words_rare_in_the_collection() {
        let mut corpus = Corpus::default();
        for text in ["bread flour water", "cake flour sugar", "soup flour tomato", "flour flour"] {
            corpus.add(text);
        }
        // "flour" is in every document; "sourdough" in none: it ranks first.
        let tags = keywords("Sourdough bread: flour, flour, water and the sourdough starter.", &corpus);
        assert_eq!(tags[0], "sourdough");
        assert!(tags.iter().position(|t| t == "flour") > tags.iter().position(|t| t == "starter"), "{tags:?}");
        assert!(!tags.contains(&"the".to_owned()) && !tags.contains(&"and".to_owned()), "stop words are not tags");
        assert!(tags.len() <= TAGS);
    }
}
