//! The batch embedding job type: reads entities in batches, skips what is
//! already embedded or has changed since, embeds in padded-token batches and
//! stores each entity's vectors as a unit.

use std::collections::HashMap;
use std::sync::Arc;

use batch_core::{Failure, ProgressTracker};
use entity_store::{EntityKey, EntityStore};
use job_queue::{JobContext, JobError, JobHandler};
use serde::{Deserialize, Serialize};

use crate::chunk::chunk_spans;
use crate::provider::Embedder;
use crate::vectors::{ChunkVector, EntityVectors, VectorIndex};

/// The job type name handlers are registered under.
pub const EMBED_JOB: &str = "embed";

/// Entities to embed, with the content hash each had when queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedInput {
    /// The entities, each at most once.
    pub items: Vec<EmbedItem>,
}

/// One entity to embed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedItem {
    /// The entity.
    pub key: EntityKey,
    /// Its content hash when queued: a newer version is left to a newer job.
    pub content_hash: String,
}

/// What an embedding job did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbedOutput {
    /// Entities whose vectors were written.
    pub embedded: usize,
    /// Already embedded for this hash and model, or for the same text (a
    /// metadata-only change), changed since (a newer job follows) or deleted.
    pub skipped: usize,
    /// Entities not embedded, with the reason.
    pub failed: Vec<Failure<EntityKey>>,
}

/// Queues `embed` jobs, `batch` entities each, for every live entity whose
/// vectors for `model_id` are missing or were made from other content, so
/// the index converges (also after a model change). Each job has a dedup
/// key derived from its items, so running this twice queues nothing twice.
/// Returns the number of jobs queued.
pub async fn embed_stale(
    queue: &job_queue::Queue,
    store: &dyn EntityStore,
    vectors: &dyn VectorIndex,
    model_id: &str,
    batch: usize,
) -> Result<usize, crate::search::SearchError> {
    const PAGE: usize = 1000;
    let mut after: Option<EntityKey> = None;
    let mut queued = 0;
    loop {
        let page = store.list_hashes(after.as_ref(), PAGE).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        let keys: Vec<EntityKey> = page.iter().map(|(k, _)| k.clone()).collect();
        let embedded = vectors.hashes(model_id, &keys).await.map_err(crate::search::SearchError::Vectors)?;
        let stale: Vec<EmbedItem> = page
            .into_iter()
            .filter(|(key, hash)| embedded.get(key) != Some(hash))
            .map(|(key, content_hash)| EmbedItem { key, content_hash })
            .collect();
        let jobs = embed_jobs(&stale, batch, "embed_stale");
        if !jobs.is_empty() {
            queued += jobs.len();
            queue.enqueue_many(jobs).await?;
        }
    }
    Ok(queued)
}

/// `embed` jobs for `items`, `batch` per job, each with a dedup key derived
/// from its items and their hashes, so queueing the same work twice while
/// it waits makes one job.
pub fn embed_jobs(items: &[EmbedItem], batch: usize, source: &str) -> Vec<job_queue::NewJob> {
    items
        .chunks(batch.max(1))
        .map(|items| {
            let fingerprint = items.iter().fold(String::new(), |mut acc, i| {
                acc.push_str(&i.key.to_string());
                acc.push('\0');
                acc.push_str(&i.content_hash);
                acc
            });
            let dedup_key = format!("embed:{:016x}", crate::hashing::fnv1a(fingerprint.as_bytes()));
            let input = serde_json::to_value(EmbedInput { items: items.to_vec() }).unwrap_or_default();
            let options = job_queue::EnqueueOptions {
                dedup_key: Some(dedup_key),
                source: Some(source.to_owned()),
                ..job_queue::EnqueueOptions::default()
            };
            job_queue::NewJob::new(EMBED_JOB, input).with_options(options)
        })
        .collect()
}

/// The hash vectors are kept under: the exact text embedded and how it is
/// cut into chunks (the model is a key of its own). 32 hex digits of BLAKE3.
pub fn text_hash(settings: &EmbedSettings, content: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(
        format!("chunks of {} tokens, {} overlapping\0", settings.chunk_tokens, settings.overlap_tokens).as_bytes(),
    );
    hasher.update(content.as_bytes());
    hasher.finalize().to_hex()[..32].to_owned()
}

/// Chunking and batching settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedSettings {
    /// Estimated tokens per chunk; keep under the model's window.
    pub chunk_tokens: usize,
    /// Estimated tokens a chunk repeats from the one before, so no sentence is only ever cut.
    pub overlap_tokens: usize,
    /// Entities read per `batch_get`.
    pub read_batch: usize,
    /// Padded tokens per provider call: the longest text of a batch times its count.
    pub padded_token_budget: usize,
}

impl Default for EmbedSettings {
    fn default() -> Self {
        Self { chunk_tokens: 200, overlap_tokens: 30, read_batch: 200, padded_token_budget: 16_384 }
    }
}

/// Handles `embed` jobs.
pub struct EmbedHandler {
    /// Where the entities are read.
    pub store: Arc<dyn EntityStore>,
    /// Where the vectors are written.
    pub vectors: Arc<dyn VectorIndex>,
    /// The model.
    pub embedder: Arc<dyn Embedder>,
    /// Chunking and batching.
    pub settings: EmbedSettings,
}

/// One piece of text to embed.
struct Piece {
    entity: usize,
    chunk: u32,
    span: std::ops::Range<usize>,
    text: String,
    tokens: usize,
}

#[async_trait::async_trait]
impl JobHandler for EmbedHandler {
    type Input = EmbedInput;
    type Output = EmbedOutput;

    async fn process(&self, input: EmbedInput, ctx: JobContext) -> Result<EmbedOutput, JobError> {
        let tracker = ProgressTracker::new(input.items.len() as u64, ctx.progress.clone());
        tracker.start();
        let mut output = EmbedOutput::default();
        for part in input.items.chunks(self.settings.read_batch.max(1)) {
            if ctx.cancel.is_cancelled() {
                return Err(JobError::permanent("cancelled"));
            }
            let done = self.embed_part(part).await?;
            tracker.advance((done.embedded + done.skipped) as u64, done.failed.len() as u64);
            output.embedded += done.embedded;
            output.skipped += done.skipped;
            output.failed.extend(done.failed);
        }
        tracker.finish();
        Ok(output)
    }
}

impl EmbedHandler {
    async fn embed_part(&self, items: &[EmbedItem]) -> Result<EmbedOutput, JobError> {
        let model = self.embedder.model_id().to_owned();
        let keys: Vec<EntityKey> = items.iter().map(|i| i.key.clone()).collect();
        let entities = self.store.batch_get(&keys).await.map_err(|e| JobError::retryable(e.to_string()))?;
        let embedded = self.vectors.hashes(&model, &keys).await.map_err(|e| JobError::retryable(e.to_string()))?;
        let todo: Vec<&entity_store::Entity> = items
            .iter()
            .filter_map(|item| entities.get(&item.key).filter(|e| e.content_hash == item.content_hash))
            .filter(|e| embedded.get(&e.key()) != Some(&e.content_hash))
            .collect();
        // Vectors whose embedded text is unchanged (a metadata-only edit, the
        // same content imported again) move on to the entity's new hash.
        let todo_keys: Vec<EntityKey> = todo.iter().map(|e| e.key()).collect();
        let texts =
            self.vectors.text_hashes(&model, &todo_keys).await.map_err(|e| JobError::retryable(e.to_string()))?;
        let hashed: Vec<(&entity_store::Entity, String)> =
            todo.into_iter().map(|e| (e, text_hash(&self.settings, &e.content))).collect();
        let (current, todo): (Vec<_>, Vec<_>) =
            hashed.into_iter().partition(|(e, hash)| texts.get(&e.key()) == Some(hash));
        if !current.is_empty() {
            let retagged: Vec<(EntityKey, String)> =
                current.iter().map(|(e, _)| (e.key(), e.content_hash.clone())).collect();
            self.vectors.retag(&model, &retagged).await.map_err(|e| JobError::retryable(e.to_string()))?;
        }
        let (todo, text_hashes): (Vec<&entity_store::Entity>, Vec<String>) = todo.into_iter().unzip();
        let mut output = EmbedOutput { skipped: items.len() - todo.len(), ..EmbedOutput::default() };

        let pieces = self.pieces(&todo);
        let (vectors, errors) = self.embed_pieces(&pieces).await;
        let mut per_entity: Vec<Vec<ChunkVector>> = vec![Vec::new(); todo.len()];
        for (piece, vector) in pieces.iter().zip(vectors) {
            if let Some(vector) = vector {
                per_entity[piece.entity].push(ChunkVector { chunk: piece.chunk, span: piece.span.clone(), vector });
            }
        }
        let mut ready = Vec::new();
        for (index, (entity, mut chunks)) in todo.iter().zip(per_entity).enumerate() {
            if let Some(reason) = errors.get(&index) {
                output.failed.push(Failure { key: entity.key(), reason: reason.clone() });
                continue;
            }
            chunks.sort_by_key(|c| c.chunk);
            ready.push(EntityVectors {
                key: entity.key(),
                content_hash: entity.content_hash.clone(),
                text_hash: Some(text_hashes[index].clone()),
                chunks,
            });
        }
        self.vectors.replace(&model, &ready).await.map_err(|e| JobError::retryable(e.to_string()))?;
        output.embedded = ready.len();
        Ok(output)
    }

    /// Chunks of every entity; an empty entity gets one empty chunk so it
    /// counts as embedded.
    fn pieces(&self, entities: &[&entity_store::Entity]) -> Vec<Piece> {
        let mut pieces = Vec::new();
        for (index, entity) in entities.iter().enumerate() {
            for (chunk, (span, tokens)) in self.fitting_spans(&entity.content).into_iter().enumerate() {
                let text = entity.content[span.clone()].to_owned();
                pieces.push(Piece { entity: index, chunk: chunk as u32, span, text, tokens });
            }
        }
        pieces
    }

    /// Chunk spans with the model's own token counts. Chunking works on an
    /// estimate; when the model counts more than it takes (dense or
    /// non-English text), the text is chunked again with a smaller budget,
    /// so nothing is cut short. What still does not fit fails its entity.
    fn fitting_spans(&self, content: &str) -> Vec<(std::ops::Range<usize>, usize)> {
        let limit = self.embedder.limits().max_input_tokens.max(1);
        let mut budget = self.settings.chunk_tokens.min(limit).max(1);
        loop {
            let spans = chunk_spans(content, budget, self.settings.overlap_tokens);
            if spans.is_empty() {
                return vec![(0..0, 0)];
            }
            let counted: Vec<_> =
                spans.into_iter().map(|span| (span.clone(), self.embedder.count_tokens(&content[span]))).collect();
            let worst = counted.iter().map(|(_, tokens)| *tokens).max().unwrap_or(0);
            if worst <= limit || budget == 1 {
                return counted;
            }
            budget = (budget * limit * 9 / (worst * 10)).clamp(1, budget - 1);
        }
    }

    /// Embeds pieces shortest first in batches bounded by count and padded
    /// tokens. A failing batch is retried piece by piece so one bad text
    /// fails only its entity. Returns a vector per piece (in order) and the
    /// reason per failed entity.
    async fn embed_pieces(&self, pieces: &[Piece]) -> (Vec<Option<Vec<f32>>>, HashMap<usize, String>) {
        let limits = self.embedder.limits();
        let mut order: Vec<usize> = (0..pieces.len()).collect();
        order.sort_by_key(|&i| pieces[i].tokens);
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; pieces.len()];
        let mut errors = HashMap::new();
        let mut batch: Vec<usize> = Vec::new();
        let budget = self.settings.padded_token_budget.min(limits.max_request_tokens).max(1);
        for index in order {
            if pieces[index].tokens > limits.max_input_tokens {
                let reason = format!(
                    "chunk {} is about {} tokens, over the model's {}",
                    pieces[index].chunk, pieces[index].tokens, limits.max_input_tokens
                );
                errors.insert(pieces[index].entity, reason);
                continue;
            }
            let longest = pieces[index].tokens.max(1);
            if !batch.is_empty() && (batch.len() == limits.max_inputs || longest * (batch.len() + 1) > budget) {
                self.embed_batch(pieces, &std::mem::take(&mut batch), &mut vectors, &mut errors).await;
            }
            batch.push(index);
        }
        if !batch.is_empty() {
            self.embed_batch(pieces, &batch, &mut vectors, &mut errors).await;
        }
        (vectors, errors)
    }

    async fn embed_batch(
        &self,
        pieces: &[Piece],
        batch: &[usize],
        vectors: &mut [Option<Vec<f32>>],
        errors: &mut HashMap<usize, String>,
    ) {
        let texts: Vec<String> = batch.iter().map(|&i| pieces[i].text.clone()).collect();
        match self.embedder.embed_batch(&texts).await {
            Ok(embedded) if embedded.len() == batch.len() => {
                for (&index, vector) in batch.iter().zip(embedded) {
                    vectors[index] = Some(vector);
                }
            }
            Ok(_) | Err(_) if batch.len() > 1 => {
                for &index in batch {
                    Box::pin(self.embed_batch(pieces, &[index], vectors, errors)).await;
                }
            }
            Ok(embedded) => {
                errors.insert(
                    pieces[batch[0]].entity,
                    format!("provider returned {} vectors for 1 text", embedded.len()),
                );
            }
            Err(error) => {
                errors.insert(pieces[batch[0]].entity, error.to_string());
            }
        }
    }
}
