//! all-MiniLM-L6-v2 in-process with candle: real semantic vectors, no network.
//!
//! Loaded from a directory holding `model.safetensors`, `tokenizer.json` and
//! `config.json` (`cargo xtask fetch-model` puts them in `models/all-MiniLM-L6-v2`).
//! Vectors are the attention-masked mean of the last hidden states, L2-normalised,
//! as sentence-transformers computes them.
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use embedding::{EmbedError, Embedder, ProviderLimits};

/// The model's longest input in tokens, special tokens included; the job
/// chunks texts to fit, and a longer input is an error rather than cut short.
const MAX_TOKENS: usize = 256;

/// Why a model directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is missing or unreadable.
    #[error("cannot read {path}: {source} (run `cargo xtask fetch-model` to get the model files)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file was read but its contents are not what the model needs
    /// (the parser's, tokenizer's or candle's error is the source).
    #[error("{path} is not a valid model file: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What its reader said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The local sentence embedder. Cheap to clone; clones share the weights.
#[derive(Clone)]
pub struct LocalEmbedder {
    inner: Arc<Model>,
    model_id: String,
}

struct Model {
    bert: BertModel,
    tokenizer: Tokenizer,
    dimensions: usize,
}

impl LocalEmbedder {
    /// The default place `cargo xtask fetch-model` writes to, relative to the workspace.
    pub const DEFAULT_DIR: &'static str = "models/all-MiniLM-L6-v2";

    /// Loads the model from `dir`. Takes about a second (90 MB of weights).
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        let config_path = dir.join("config.json");
        let raw: serde_json::Value = serde_json::from_slice(&read(&config_path)?)
            .map_err(|err| LoadError::Invalid { path: config_path.clone(), source: err.into() })?;
        let dimensions = raw.get("hidden_size").and_then(serde_json::Value::as_u64).unwrap_or(384) as usize;
        let config: Config = serde_json::from_value(raw)
            .map_err(|err| LoadError::Invalid { path: config_path.clone(), source: err.into() })?;

        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_bytes(read(&tokenizer_path)?)
            .map_err(|err| LoadError::Invalid { path: tokenizer_path.clone(), source: err })?;
        tokenizer.with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..Default::default() }));
        // Truncation only guards the model; `embed_batch` refuses over-long inputs first.
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|err| LoadError::Invalid { path: tokenizer_path.clone(), source: err })?;

        let weights_path = dir.join("model.safetensors");
        let weights = VarBuilder::from_buffered_safetensors(read(&weights_path)?, DType::F32, &Device::Cpu)
            .map_err(|err| LoadError::Invalid { path: weights_path.clone(), source: err.into() })?;
        let bert = BertModel::load(weights, &config)
            .map_err(|err| LoadError::Invalid { path: weights_path.clone(), source: err.into() })?;

        Ok(Self {
            inner: Arc::new(Model { bert, tokenizer, dimensions }),
            model_id: format!("local:all-MiniLM-L6-v2:{dimensions}"),
        })
    }

    /// Embeds on the calling thread; the async trait method moves this off the runtime.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.inner.embed(texts)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|err| LoadError::Read { path: path.to_owned(), source: err })
}

impl Model {
    fn token_count(&self, text: &str) -> Result<usize, EmbedError> {
        let encoding = self.tokenizer.encode(text, true).map_err(provider_error)?;
        // With truncation on, the overflow tells how long the text really was.
        Ok(encoding.get_ids().len() + encoding.get_overflowing().iter().map(|o| o.get_ids().len()).sum::<usize>())
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(provider_error)?;
        for (index, encoding) in encodings.iter().enumerate() {
            if !encoding.get_overflowing().is_empty() {
                let tokens = self.token_count(&texts[index])?;
                return Err(EmbedError::TooLong { index, tokens, limit: MAX_TOKENS });
            }
        }
        let rows = encodings.len();
        let width = encodings[0].get_ids().len();
        let ids: Vec<u32> = encodings.iter().flat_map(|e| e.get_ids().iter().copied()).collect();
        let mask: Vec<u32> = encodings.iter().flat_map(|e| e.get_attention_mask().iter().copied()).collect();
        let device = &Device::Cpu;
        let pooled = (|| {
            let ids = Tensor::from_vec(ids, (rows, width), device)?;
            let mask = Tensor::from_vec(mask, (rows, width), device)?;
            let type_ids = ids.zeros_like()?;
            let hidden = self.bert.forward(&ids, &type_ids, Some(&mask))?;
            // Mean over real tokens only: padding must not pull short texts towards zero.
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?;
            let mean = summed.broadcast_div(&counts)?;
            let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
            mean.broadcast_div(&norms)?.to_vec2::<f32>()
        })()
        .map_err(provider_error)?;
        debug_assert!(pooled.iter().all(|row| row.len() == self.dimensions));
        Ok(pooled)
    }
}

fn provider_error(err: impl std::fmt::Display) -> EmbedError {
    EmbedError::Provider(format!("local model: {err}"))
}

#[async_trait::async_trait]
impl Embedder for LocalEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimensions(&self) -> usize {
        self.inner.dimensions
    }

    fn limits(&self) -> ProviderLimits {
        // 32 texts per forward pass is where batching stops paying on CPU.
        ProviderLimits { max_inputs: 32, max_request_tokens: 32 * MAX_TOKENS, max_input_tokens: MAX_TOKENS }
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.inner.token_count(text).unwrap_or_else(|_| embedding::estimate_tokens(text))
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let model = Arc::clone(&self.inner);
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || model.embed(&texts))
            .await
            .map_err(|err| EmbedError::Provider(format!("local model task failed: {err}")))?
    }
}
