//! The default embedder: feature hashing of words and character trigrams.
//!
//! It is lexical, not semantic: texts that share words and spellings come
//! out close, synonyms do not. It needs no files and is deterministic, so it
//! works everywhere and in tests; configure a real model for meaning.

use batch_core::{BatchRunner, RunnerConfig};

use crate::provider::{EmbedError, Embedder, ProviderLimits};

/// Feature-hashing embedder with a fixed dimension, L2-normalised.
#[derive(Debug, Clone)]
pub struct HashingEmbedder {
    dimensions: usize,
    model_id: String,
    min_similarity: f32,
}

impl HashingEmbedder {
    /// An embedder of `dimensions` (at least 8) values per vector.
    pub fn new(dimensions: usize) -> Self {
        let dimensions = dimensions.max(8);
        Self { dimensions, model_id: format!("hashing-v1-{dimensions}"), min_similarity: Self::MIN_SIMILARITY }
    }

    /// The default similarity floor. Measured on short notes: texts that
    /// share no word came out between -0.15 and 0.14 (shared trigrams and
    /// signed-hash collisions), a query word the text holds at 0.26 and
    /// more. A word met once in a long chunk can fall under it: text and
    /// hybrid search still find it.
    pub const MIN_SIMILARITY: f32 = 0.15;

    /// The same embedder with another similarity floor (-1 keeps every hit).
    #[must_use]
    pub fn with_min_similarity(mut self, floor: f32) -> Self {
        self.min_similarity = floor;
        self
    }

    /// Embeds one text (synchronously; it is cheap).
    pub fn embed(&self, text: &str) -> Vec<f32> {
        let mut vector = vec![0f32; self.dimensions];
        let normalised = text.to_lowercase();
        let mut padded: Vec<char> = Vec::new();
        for word in normalised.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
            self.add(&mut vector, fnv1a(word.as_bytes()), 1.0);
            padded.clear();
            padded.push(' ');
            padded.extend(word.chars());
            padded.push(' ');
            for gram in padded.windows(3) {
                let mut buffer = [0u8; 12];
                let mut length = 0;
                for c in gram {
                    length += c.encode_utf8(&mut buffer[length..]).len();
                }
                self.add(&mut vector, fnv1a(&buffer[..length]), 0.5);
            }
        }
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            for v in &mut vector {
                *v /= norm;
            }
        }
        vector
    }

    /// The signed hashing trick: a second hash bit picks the sign so
    /// collisions cancel out on average.
    fn add(&self, vector: &mut [f32], hash: u64, weight: f32) {
        let index = (hash % self.dimensions as u64) as usize;
        let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
        vector[index] += sign * weight;
    }
}

impl Default for HashingEmbedder {
    fn default() -> Self {
        Self::new(384)
    }
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

#[async_trait::async_trait]
impl Embedder for HashingEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn min_similarity(&self) -> f32 {
        self.min_similarity
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn limits(&self) -> ProviderLimits {
        ProviderLimits { max_inputs: 256, max_request_tokens: 1_000_000, max_input_tokens: 512 }
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.len() < 4 {
            return Ok(texts.iter().map(|t| self.embed(t)).collect());
        }
        // Use every core, as a real model does; a few texts are not worth the hop.
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let runner = BatchRunner::new(RunnerConfig { max_parallel: cores, ..RunnerConfig::default() });
        let embedder = self.clone();
        let items: Vec<(usize, String)> = texts.iter().cloned().enumerate().collect();
        let report = runner.run_blocking(items, move |text: &String| Ok(embedder.embed(text))).await;
        if let Some(failure) = report.failed.first() {
            return Err(EmbedError::Provider(format!("text {}: {}", failure.key, failure.reason)));
        }
        Ok(report.succeeded.into_iter().map(|s| s.outcome).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cosine;

    #[test]
    fn deterministic_normalised_and_lexical() {
        let e = HashingEmbedder::new(256);
        let a = e.embed("The quick brown fox jumps");
        assert_eq!(a, e.embed("The quick brown fox jumps"));
        assert!((a.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-5);
        let near = cosine(&a, &e.embed("a quick brown fox jumped"));
        let far = cosine(&a, &e.embed("quarterly tax filing deadline"));
        assert!(near > 0.5 && far < 0.2, "near {near}, far {far}");
        assert!(e.embed("").iter().all(|v| *v == 0.0));
    }
}
