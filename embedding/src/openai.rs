//! OpenAI-compatible `/v1/embeddings` (OpenAI, Ollama, TEI, vLLM, ...).

use std::time::Duration;

use batch_core::{ItemError, RetryPolicy};
use serde::Deserialize;

use crate::provider::{EmbedError, Embedder, ProviderLimits, estimate_tokens};

/// Where and how to call the service.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Up to and including `/v1`, e.g. `http://localhost:11434/v1` for Ollama.
    pub base_url: String,
    pub model: String,
    /// Environment variable holding the API key; unset means no key is sent.
    pub api_key_env: String,
    pub dimensions: usize,
    pub limits: ProviderLimits,
    pub timeout: Duration,
    /// Backoff for 429 and 5xx answers; a `Retry-After` header wins.
    pub retry: RetryPolicy,
}

impl OpenAiConfig {
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

pub struct OpenAiEmbedder {
    config: OpenAiConfig,
    client: reqwest::Client,
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
    pub fn new(config: OpenAiConfig) -> Result<Self, EmbedError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| EmbedError::Provider(format!("cannot build the HTTP client: {e}")))?;
        let model_id = format!("openai:{}:{}", config.model, config.dimensions);
        Ok(Self { config, client, model_id })
    }

    fn url(&self) -> String {
        format!("{}/embeddings", self.config.base_url.trim_end_matches('/'))
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
        let key = std::env::var(&self.config.api_key_env).ok();
        let attempt = |_| self.attempt(&body, key.as_deref(), texts.len());
        batch_core::retry(&self.config.retry, &batch_core::CancellationToken::new(), attempt)
            .await
            .map_err(|error| EmbedError::Provider(error.reason))
    }

    /// One request; 429 and 5xx are retryable (after `Retry-After` when given).
    async fn attempt(
        &self,
        body: &serde_json::Value,
        key: Option<&str>,
        expected: usize,
    ) -> Result<Vec<Vec<f32>>, ItemError> {
        let mut request = self.client.post(self.url()).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Err(ItemError::retryable(format!("cannot reach {}: {error}", self.url()))),
        };
        let status = response.status();
        if status.is_success() {
            return self.parse(response, expected).await.map_err(|e| ItemError::permanent(e.to_string()));
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        let reason = format!("{} answered {status}: {}", self.url(), text.chars().take(300).collect::<String>());
        tracing::warn!(%reason, "embedding request failed");
        if status != reqwest::StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
            return Err(ItemError::permanent(reason));
        }
        Err(match retry_after {
            Some(delay) => ItemError::retry_after(reason, delay),
            None => ItemError::retryable(reason),
        })
    }

    async fn parse(&self, response: reqwest::Response, expected: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut parsed: Response = response
            .json()
            .await
            .map_err(|e| EmbedError::Provider(format!("{} sent an unreadable answer: {e}", self.url())))?;
        if parsed.data.len() != expected {
            return Err(EmbedError::Provider(format!("asked for {expected} vectors, got {}", parsed.data.len())));
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
