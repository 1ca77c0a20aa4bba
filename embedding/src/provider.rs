//! The provider trait: texts in, vectors out.

/// How much one request to a provider may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderLimits {
    /// Texts per request.
    pub max_inputs: usize,
    /// Estimated tokens per request, summed over its inputs.
    pub max_request_tokens: usize,
    /// Longest single input, in estimated tokens; longer texts are chunked.
    pub max_input_tokens: usize,
}

impl Default for ProviderLimits {
    fn default() -> Self {
        Self { max_inputs: 32, max_request_tokens: 300_000, max_input_tokens: 8_192 }
    }
}

/// Why embedding failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    /// The model failed (an in-process model's error, in words).
    #[error("embedding provider failed: {0}")]
    Provider(String),
    /// An OpenAI-compatible API failed; its error (and cause) is the source.
    #[error("embedding provider failed: {0}")]
    Api(#[from] crate::openai::ApiError),
    /// An input is longer than the model takes (the job chunks texts to fit).
    #[error("input {index} is {tokens} tokens, over the provider's limit of {limit}")]
    TooLong {
        /// The input's position in the call, from 0.
        index: usize,
        /// Its length in the model's tokens.
        tokens: usize,
        /// The model's longest input.
        limit: usize,
    },
}

/// An embedding model behind one interface.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync {
    /// Identifies the model and its settings; vectors of different ids are never compared.
    fn model_id(&self) -> &str;
    /// Values per vector.
    fn dimensions(&self) -> usize;
    /// What one call may carry.
    fn limits(&self) -> ProviderLimits;
    /// Tokens the model sees for `text`; providers with a tokenizer count exactly.
    fn count_tokens(&self, text: &str) -> usize {
        estimate_tokens(text)
    }
    /// One vector per text, in order, each of `dimensions()` values.
    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// The cosine similarity under which a vector hit is no match at all:
    /// vector and hybrid search drop such hits, so a query unlike every
    /// document finds nothing. It depends on the model (how close
    /// unrelated texts come out); [`DEFAULT_MIN_SIMILARITY`] unless the
    /// provider knows better.
    fn min_similarity(&self) -> f32 {
        DEFAULT_MIN_SIMILARITY
    }
}

/// The similarity floor of models that do not set their own: unrelated
/// sentences score about 0.0-0.15 with sentence-transformer models such as
/// all-MiniLM-L6-v2, related ones 0.3 and more.
pub const DEFAULT_MIN_SIMILARITY: f32 = 0.2;

/// A rough token count (words and punctuation, about what a WordPiece model
/// sees for English prose), used for budgets and chunking.
pub fn estimate_tokens(text: &str) -> usize {
    let words = text.split_whitespace().count();
    let punctuation = text.chars().filter(char::is_ascii_punctuation).count();
    words + punctuation / 2
}
