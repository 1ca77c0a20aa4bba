//! Embeddings for entities: providers behind the [`Embedder`] trait, vector
//! storage beside the entities ([`VectorIndex`]: SQLite or PostgreSQL), the
//! batch embedding job type ([`EmbedHandler`], job type `embed`) and
//! [`Search`] (vector, full-text and hybrid by reciprocal rank fusion).
//!
//! Providers: the [`HashingEmbedder`] (lexical, not semantic; the default
//! when nothing else is configured), the OpenAI-compatible HTTP provider
//! ([`OpenAiEmbedder`]); all-MiniLM-L6-v2 in process is the `local-embedder`
//! crate's `LocalEmbedder` (files from `cargo xtask fetch-model`).
//! Chunking is token-aware with overlap and re-cut by the model's own token
//! count. Search is exact cosine: on PostgreSQL with pgvector the database
//! ranks (`<=>`), otherwise the same exact search runs in the process.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn entity_store::EntityStore>, pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use embedding::{HashingEmbedder, Search, SqliteVectors};
//! let search = Search {
//!     store,
//!     vectors: Arc::new(SqliteVectors::new(pool).await?),
//!     embedder: Some(Arc::new(HashingEmbedder::default())),
//! };
//! for hit in search.hybrid("sourdough starter", 10, None).await? {
//!     println!("{} {:.3} {}", hit.key, hit.score, hit.snippet);
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod chunk;
mod hashing;
mod job;
mod openai;
mod provider;
mod search;
mod vectors;

pub use chunk::chunk_spans;
pub use hashing::HashingEmbedder;
pub use job::{
    EMBED_JOB, EmbedHandler, EmbedInput, EmbedItem, EmbedOutput, EmbedSettings, embed_jobs, embed_stale, text_hash,
};
pub use openai::{ApiError, OpenAiClient, OpenAiConfig, OpenAiEmbedder};
pub use provider::{DEFAULT_MIN_SIMILARITY, EmbedError, Embedder, ProviderLimits, estimate_tokens};
pub use search::{RRF_K, Search, SearchError, SearchHit, VectorQuery};
pub use vectors::{ChunkVector, EntityVectors, NearestQuery, PgVectors, SqliteVectors, VectorHit, VectorIndex};

/// Cosine similarity of two vectors (0 when either is all zeros).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|y| y * y).sum::<f32>().sqrt();
    if norm > 0.0 { dot / norm } else { 0.0 }
}

/// A migration file added to the folder but not to `embed!` would never run.
#[cfg(test)]
#[test]
fn every_migration_file_is_embedded() {
    for migrations in [vectors::SQLITE_MIGRATIONS, vectors::POSTGRES_MIGRATIONS] {
        assert_eq!(migrations.unlisted().unwrap(), Vec::<String>::new(), "{migrations:?}");
    }
}
