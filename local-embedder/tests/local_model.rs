//! The in-process all-MiniLM-L6-v2 model against the reference vectors of
//! sentence-transformers. These run in `cargo test --workspace` when the
//! model files are there: `cargo xtask fetch-model` (or
//! `EMBEDDING_MODEL_DIR`). Without them each test says SKIPPED and passes,
//! unless `REQUIRE_MODEL` is set, as CI sets it.

use std::io::Write as _;
use std::path::PathBuf;

use embedding::{Embedder, cosine};
use local_embedder::LocalEmbedder;

/// The model, or `None` (with a line on stderr) when its files are absent
/// and not required.
fn model() -> Option<LocalEmbedder> {
    let dir = std::env::var_os("EMBEDDING_MODEL_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(LocalEmbedder::DEFAULT_DIR),
        PathBuf::from,
    );
    if !dir.join("model.safetensors").is_file() && std::env::var_os("REQUIRE_MODEL").is_none() {
        // Straight to stderr: the harness would hide an `eprintln!` of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED (no model in {}; run `cargo xtask fetch-model`): the local model's test",
            dir.display()
        );
        return None;
    }
    Some(LocalEmbedder::load(&dir).unwrap_or_else(|err| panic!("{err}")))
}

#[tokio::test]
async fn matches_the_reference_vector() {
    let Some(model) = model() else { return };
    let vectors = model.embed_batch(&["This is an example sentence".to_owned()]).await.unwrap();
    assert_eq!(vectors[0].len(), 384);
    let reference = [0.06766, 0.06350, 0.04871, 0.07930, 0.03745];
    for (got, want) in vectors[0].iter().zip(reference) {
        assert!((got - want).abs() < 1e-3, "got {:?}, want a start of {reference:?}", &vectors[0][..5]);
    }
    let norm: f32 = vectors[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
}

#[tokio::test]
async fn padding_in_a_batch_does_not_change_a_vector() {
    let Some(model) = model() else { return };
    let short = "A cat sat on the mat.".to_owned();
    let long =
        "The annual report covers revenue, costs, hiring plans and the roadmap for next year in detail.".to_owned();
    let alone = model.embed_batch(std::slice::from_ref(&short)).await.unwrap();
    let batched = model.embed_batch(&[long, short]).await.unwrap();
    assert!(cosine(&alone[0], &batched[1]) > 0.9999);
}

#[tokio::test]
async fn similar_meaning_scores_higher_than_shared_words() {
    let Some(model) = model() else { return };
    let texts =
        ["How do I bake bread at home?", "A recipe for homemade sourdough loaf", "Home insurance rates at a glance"]
            .map(str::to_owned);
    let v = model.embed_batch(&texts).await.unwrap();
    assert!(cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]), "semantic neighbour must win over word overlap");
}

#[tokio::test]
async fn an_over_long_input_is_refused_not_cut() {
    let Some(model) = model() else { return };
    let long = "word ".repeat(400);
    assert!(model.count_tokens(&long) > 256);
    let err = model.embed_batch(&["fine".to_owned(), long]).await.unwrap_err();
    assert!(matches!(err, embedding::EmbedError::TooLong { index: 1, .. }), "{err}");
}

/// A missing or broken model file is named, and the reader's error is kept
/// as the source (needs no model files).
#[test]
fn load_errors_name_the_file_and_keep_their_cause() {
    use std::error::Error as _;
    let dir = tempfile::tempdir().unwrap();
    let missing = LocalEmbedder::load(dir.path()).err().expect("no files");
    assert!(
        matches!(missing, local_embedder::LoadError::Read { ref path, .. } if path.ends_with("config.json")),
        "{missing}"
    );
    let io = missing.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("the I/O error is the source");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    assert!(missing.to_string().contains("cargo xtask fetch-model"), "{missing}");

    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    let invalid = LocalEmbedder::load(dir.path()).err().expect("bad config");
    let cause = invalid.source().expect("the parser's error is the source");
    assert!(cause.downcast_ref::<serde_json::Error>().is_some(), "{cause:?}");
    assert!(invalid.to_string().contains("config.json is not a valid model file"), "{invalid}");
}
