//! OpenAI-compatible `/v1/embeddings` (OpenAI, Ollama, TEI, vLLM, ...).

use std::sync::Arc;
use std::time::Duration;

use batch_core::{ItemError, RetryPolicy};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::provider::{EmbedError, Embedder, ProviderLimits, estimate_tokens};

/// Where and how to call the service.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Up to and including `/v1`, e.g. `http://localhost:11434/v1` for Ollama.
    pub base_url: String,
    /// The model's name, as the API knows it (`text-embedding-3-small`).
    pub model: String,
    /// Environment variable holding the API key; unset means no key is sent.
    pub api_key_env: String,
    /// Values per vector the model returns.
    pub dimensions: usize,
    /// What one request may carry.
    pub limits: ProviderLimits,
    /// Limit of one HTTP request.
    pub timeout: Duration,
    /// Backoff for 429 and 5xx answers; a `Retry-After` header wins.
    pub retry: RetryPolicy,
}

impl OpenAiConfig {
    /// Settings for `model` at `base_url`, key from `OPENAI_API_KEY`, default limits, timeout and retries.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>, dimensions: usize) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key_env: "OPENAI_API_KEY".to_owned(),
            dimensions,
            limits: ProviderLimits::default(),
            timeout: Duration::from_secs(60),
            retry: RetryPolicy {
                max_attempts: 5,
                base_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(30),
                multiplier: 2.0,
                jitter: 0.2,
            },
        }
    }
}

/// Why a call to an OpenAI-compatible API failed (after its retries),
/// with the URL and the error underneath.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The HTTP client could not be set up (TLS roots, settings).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] Arc<reqwest::Error>),
    /// No answer: connection refused, DNS, timeout.
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        /// The endpoint called.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// An answer that is not the JSON expected.
    #[error("{url} sent an unreadable answer: {source}")]
    Unreadable {
        /// The endpoint called.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// The server answered with an error status.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// The endpoint called.
        url: String,
        /// The status of the last attempt.
        status: reqwest::StatusCode,
        /// The start of its answer.
        body: String,
    },
}

/// Errors compare by what they say (their causes are not comparable).
impl PartialEq for ApiError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for ApiError {}

/// An OpenAI-compatible HTTP API: JSON POSTs with the key from the
/// environment, retried with backoff on 429 and 5xx (after `Retry-After`
/// when given). Shared by the embedder and other clients of such services.
pub struct OpenAiClient {
    client: reqwest::Client,
    base_url: String,
    api_key_env: String,
    retry: RetryPolicy,
}

impl OpenAiClient {
    /// A client of the API at `base_url` (up to `/v1`), sending the key in `api_key_env` if set.
    pub fn new(base_url: &str, api_key_env: &str, timeout: Duration, retry: RetryPolicy) -> Result<Self, ApiError> {
        let client =
            reqwest::Client::builder().timeout(timeout).build().map_err(|err| ApiError::Client(Arc::new(err)))?;
        Ok(Self { client, base_url: base_url.to_owned(), api_key_env: api_key_env.to_owned(), retry })
    }

    /// `endpoint` (e.g. `embeddings`) under the base URL.
    pub fn url(&self, endpoint: &str) -> String {
        format!("{}/{endpoint}", self.base_url.trim_end_matches('/'))
    }

    /// POSTs `body` to `endpoint` and reads the answer as `T`; the error
    /// is the last attempt's, with the URL and its cause.
    pub async fn post<T: DeserializeOwned>(&self, endpoint: &str, body: &serde_json::Value) -> Result<T, ApiError> {
        let url = self.url(endpoint);
        let key = std::env::var(&self.api_key_env).ok();
        // The retry loop sees each failure as retryable or not; the typed error of the last is kept here.
        let last = std::sync::Mutex::new(None);
        let attempt = |_| async {
            self.attempt(&url, body, key.as_deref()).await.map_err(|(error, item)| {
                *last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
                item
            })
        };
        let outcome = batch_core::retry(&self.retry, &batch_core::CancellationToken::new(), attempt).await;
        outcome.map_err(|item| {
            let last = last.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Never empty after a failed attempt; the status form keeps the reason if it were.
            last.unwrap_or(ApiError::Status { url, status: reqwest::StatusCode::BAD_GATEWAY, body: item.reason })
        })
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        url: &str,
        body: &serde_json::Value,
        key: Option<&str>,
    ) -> Result<T, (ApiError, ItemError)> {
        let mut request = self.client.post(url).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(source) => {
                let error = ApiError::Unreachable { url: url.to_owned(), source: Arc::new(source) };
                let item = ItemError::retryable(error.to_string());
                return Err((error, item));
            }
        };
        let status = response.status();
        if status.is_success() {
            return response.json().await.map_err(|source| {
                let error = ApiError::Unreadable { url: url.to_owned(), source: Arc::new(source) };
                let item = ItemError::permanent(error.to_string());
                (error, item)
            });
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        let error = ApiError::Status { url: url.to_owned(), status, body: text.chars().take(300).collect() };
        let reason = error.to_string();
        tracing::warn!(%reason, "request failed");
        if status != reqwest::StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
            return Err((error, ItemError::permanent(reason)));
        }
        let item = match retry_after {
            Some(delay) => ItemError::retry_after(reason, delay),
            None => ItemError::retryable(reason),
        };
        Err((error, item))
    }
}

/// An embedder behind an OpenAI-compatible `/embeddings` endpoint (OpenAI, Ollama, vLLM...).
pub struct OpenAiEmbedder {
    config: OpenAiConfig,
    client: OpenAiClient,
    model_id: String,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Datum>,
}

#[derive(Deserialize)]
struct Datum {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    /// An embedder with these settings; its model id is `openai:{model}:{dimensions}`.
    pub fn new(config: OpenAiConfig) -> Result<Self, EmbedError> {
        let client = OpenAiClient::new(&config.base_url, &config.api_key_env, config.timeout, config.retry)?;
        let model_id = format!("openai:{}:{}", config.model, config.dimensions);
        Ok(Self { config, client, model_id })
    }

    /// Splits texts into requests within the count and token limits.
    fn requests<'a>(&self, texts: &'a [String]) -> Result<Vec<&'a [String]>, EmbedError> {
        let limits = self.config.limits;
        let mut requests = Vec::new();
        let (mut start, mut tokens) = (0, 0);
        for (index, text) in texts.iter().enumerate() {
            let estimate = estimate_tokens(text);
            if estimate > limits.max_input_tokens {
                return Err(EmbedError::TooLong { index, tokens: estimate, limit: limits.max_input_tokens });
            }
            let count = index - start;
            if count > 0 && (count == limits.max_inputs || tokens + estimate > limits.max_request_tokens) {
                requests.push(&texts[start..index]);
                (start, tokens) = (index, 0);
            }
            tokens += estimate;
        }
        if start < texts.len() {
            requests.push(&texts[start..]);
        }
        Ok(requests)
    }

    async fn call(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let body = serde_json::json!({ "model": self.config.model, "input": texts });
        let mut parsed: Response = self.client.post("embeddings", &body).await?;
        if parsed.data.len() != texts.len() {
            return Err(EmbedError::Provider(format!("asked for {} vectors, got {}", texts.len(), parsed.data.len())));
        }
        parsed.data.sort_by_key(|d| d.index);
        parsed
            .data
            .into_iter()
            .map(|d| {
                if d.embedding.len() == self.config.dimensions {
                    Ok(normalised(d.embedding))
                } else {
                    Err(EmbedError::Provider(format!(
                        "model {} returned {} dimensions, configured for {}",
                        self.config.model,
                        d.embedding.len(),
                        self.config.dimensions
                    )))
                }
            })
            .collect()
    }
}

fn normalised(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        for v in &mut vector {
            *v /= norm;
        }
    }
    vector
}

#[async_trait::async_trait]
impl Embedder for OpenAiEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimensions(&self) -> usize {
        self.config.dimensions
    }

    fn limits(&self) -> ProviderLimits {
        self.config.limits
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut vectors = Vec::with_capacity(texts.len());
        for request in self.requests(texts)? {
            vectors.extend(self.call(request).await?);
        }
        Ok(vectors)
    }
}
