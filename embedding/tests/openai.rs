//! The OpenAI-compatible provider against a small HTTP server on localhost.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use embedding::{EmbedError, Embedder, OpenAiConfig, OpenAiEmbedder, ProviderLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the fake server answers, request by request; the last one repeats.
#[derive(Clone)]
enum Answer {
    Vectors,
    Status(u16, &'static str, Option<u64>),
}

struct Server {
    url: String,
    requests: Arc<Mutex<Vec<serde_json::Value>>>,
}

async fn serve(answers: Vec<Answer>, dimensions: usize) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        let mut served = 0;
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let body = read_request(&mut socket).await;
            let input: serde_json::Value = serde_json::from_slice(&body).unwrap();
            seen.lock().unwrap().push(input.clone());
            let answer = answers.get(served).or(answers.last()).cloned().unwrap();
            served += 1;
            let response = match answer {
                Answer::Vectors => {
                    let count = input["input"].as_array().map_or(0, Vec::len);
                    // Answer out of order, as the API allows; index says which is which.
                    let data: Vec<serde_json::Value> = (0..count)
                        .rev()
                        .map(|i| serde_json::json!({"index": i, "embedding": vec![i as f32 + 1.0; dimensions]}))
                        .collect();
                    let body = serde_json::json!({"data": data, "model": input["model"]}).to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                }
                Answer::Status(code, text, retry_after) => {
                    let header = retry_after.map(|s| format!("retry-after: {s}\r\n")).unwrap_or_default();
                    format!("HTTP/1.1 {code} X\r\n{header}content-length: {}\r\n\r\n{text}", text.len())
                }
            };
            socket.write_all(response.as_bytes()).await.unwrap();
            socket.shutdown().await.ok();
        }
    });
    Server { url, requests }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.unwrap();
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
            let length: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
            while buffer.len() < end + 4 + length {
                let n = socket.read(&mut chunk).await.unwrap();
                buffer.extend_from_slice(&chunk[..n]);
            }
            return buffer[end + 4..end + 4 + length].to_vec();
        }
    }
}

fn config(url: &str) -> OpenAiConfig {
    let mut config = OpenAiConfig::new(url, "test-model", 4);
    config.api_key_env = "EMBEDDING_TEST_KEY_UNSET".into();
    config.retry.base_delay = Duration::from_millis(10);
    config
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("text number {i}")).collect()
}

#[tokio::test]
async fn splits_by_limits_orders_by_index_and_normalises() {
    let server = serve(vec![Answer::Vectors], 4).await;
    let mut config = config(&server.url);
    config.limits = ProviderLimits { max_inputs: 3, max_request_tokens: 1000, max_input_tokens: 100 };
    let embedder = OpenAiEmbedder::new(config).unwrap();
    let vectors = embedder.embed_batch(&texts(7)).await.unwrap();
    assert_eq!(vectors.len(), 7);
    let sizes: Vec<usize> =
        server.requests.lock().unwrap().iter().map(|r| r["input"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, vec![3, 3, 1]);
    // Every vector is normalised and in input order (all values equal per vector).
    for vector in &vectors {
        assert!((vector.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-5);
    }
    assert_eq!(server.requests.lock().unwrap()[0]["model"], "test-model");
}

#[tokio::test]
async fn retries_429_honouring_retry_after_then_succeeds() {
    let server =
        serve(vec![Answer::Status(429, "slow down", Some(1)), Answer::Status(503, "busy", None), Answer::Vectors], 4)
            .await;
    let embedder = OpenAiEmbedder::new(config(&server.url)).unwrap();
    let started = Instant::now();
    let vectors = embedder.embed_batch(&texts(2)).await.unwrap();
    assert_eq!(vectors.len(), 2);
    assert_eq!(server.requests.lock().unwrap().len(), 3);
    assert!(started.elapsed() >= Duration::from_secs(1), "waited as Retry-After asked");
}

#[tokio::test]
async fn client_errors_and_bad_answers_are_clear() {
    let server = serve(vec![Answer::Status(400, "model not found", None)], 4).await;
    let embedder = OpenAiEmbedder::new(config(&server.url)).unwrap();
    let error = embedder.embed_batch(&texts(1)).await.unwrap_err().to_string();
    assert!(error.contains("400") && error.contains("model not found"), "{error}");
    assert_eq!(server.requests.lock().unwrap().len(), 1, "a 400 is not retried");

    let wrong_size = serve(vec![Answer::Vectors], 8).await;
    let error = OpenAiEmbedder::new(config(&wrong_size.url)).unwrap().embed_batch(&texts(1)).await.unwrap_err();
    assert!(error.to_string().contains("returned 8 dimensions, configured for 4"), "{error}");

    let mut limited = config(&wrong_size.url);
    limited.limits.max_input_tokens = 3;
    let error =
        OpenAiEmbedder::new(limited).unwrap().embed_batch(&["far too many words here".into()]).await.unwrap_err();
    assert!(matches!(error, EmbedError::TooLong { index: 0, .. }), "{error}");

    let unreachable =
        OpenAiEmbedder::new(OpenAiConfig { retry: batch_core::RetryPolicy::none(), ..config("http://127.0.0.1:9/v1") })
            .unwrap();
    let error = unreachable.embed_batch(&texts(1)).await.unwrap_err();
    assert!(error.to_string().contains("cannot reach http://127.0.0.1:9/v1/embeddings"), "{error}");
    // The cause is kept down to the HTTP client's error, for whoever reports the chain.
    let api = std::error::Error::source(&error).expect("the API error");
    let cause = api.source().and_then(|cause| cause.downcast_ref::<std::sync::Arc<reqwest::Error>>());
    assert!(cause.is_some_and(|cause| cause.is_connect()), "{error:?}");
}
