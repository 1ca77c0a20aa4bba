//! The pgvector path of `PgVectors` against the exact search it replaces.
//! Needs a server with pgvector at `PGVECTOR_URL`; `.ci/pgvector-server`
//! starts one (CI does), Debian's PostgreSQL here has no pgvector.

use embedding::{ChunkVector, EntityVectors, HashingEmbedder, PgVectors, VectorIndex};
use entity_store::EntityKey;

fn entity(id: &str, texts: &[&str], embedder: &HashingEmbedder) -> EntityVectors {
    let chunks = texts
        .iter()
        .enumerate()
        .map(|(chunk, text)| ChunkVector { chunk: chunk as u32, span: 0..text.len(), vector: embedder.embed(text) })
        .collect();
    EntityVectors { key: EntityKey::new("note", id), content_hash: format!("h-{id}"), text_hash: None, chunks }
}

#[tokio::test]
async fn pgvector_ranks_like_the_exact_search() {
    let test = "pgvector_ranks_like_the_exact_search";
    let Some(scratch) = scratch_pg::ScratchPg::from_env("PGVECTOR_URL", "pgv_test", test).await else { return };
    let pool = sqlx::PgPool::connect(&scratch.url).await.unwrap();

    let with_pgvector = PgVectors::new(pool.clone()).await.unwrap();
    assert!(with_pgvector.uses_pgvector(), "the server has pgvector");
    let exact = PgVectors::exact_only(pool.clone()).await.unwrap();
    let embedder = HashingEmbedder::default();
    let entities = vec![
        entity("bread", &["sourdough starter feeding", "bake the loaf at 240 degrees"], &embedder),
        entity("garden", &["raised beds and compost", "tomatoes need sun"], &embedder),
        entity("trip", &["train to Lisbon", "pastel de nata and sourdough toast"], &embedder),
        entity("empty", &["nothing in common"], &embedder),
    ];
    with_pgvector.replace("hash-384", &entities).await.unwrap();
    let query = embedder.embed("sourdough loaf");
    let fast = with_pgvector.nearest("hash-384", &query, 3).await.unwrap();
    let slow = exact.nearest("hash-384", &query, 3).await.unwrap();
    assert_eq!(fast.len(), 3);
    for (a, b) in fast.iter().zip(&slow) {
        assert_eq!((&a.key, a.chunk), (&b.key, b.chunk));
        // Without pgvector, search scores from an 8-bit copy of the vectors:
        // the cosine to within 1% (`snapshot.rs`); the order is the same.
        assert!((a.score - b.score).abs() < 1e-2, "{} vs {}", a.score, b.score);
    }
    assert_eq!(fast[0].key.id, "bread");

    // Replacing an entity's vectors replaces what pgvector ranks too.
    with_pgvector.replace("hash-384", &[entity("bread", &["something else entirely"], &embedder)]).await.unwrap();
    let after = with_pgvector.nearest("hash-384", &query, 1).await.unwrap();
    assert_eq!(after[0].key.id, "trip");
    with_pgvector.remove(&[EntityKey::new("note", "trip")]).await.unwrap();
    assert!(with_pgvector.nearest("hash-384", &query, 4).await.unwrap().iter().all(|h| h.key.id != "trip"));

    // A filtered search: bounded by k, ranked within the filter's matches, like the exact search.
    let allowed: std::collections::HashSet<EntityKey> =
        ["garden", "empty"].iter().map(|id| EntityKey::new("note", *id)).collect();
    let filtered = [embedding::NearestQuery { vector: &query, k: 1, allowed: Some(&allowed) }];
    let fast = with_pgvector.nearest_many("hash-384", &filtered).await.unwrap();
    let slow = exact.nearest_many("hash-384", &filtered).await.unwrap();
    assert_eq!(fast[0].len(), 1);
    assert_eq!(fast[0][0].key, slow[0][0].key);
    assert!(allowed.contains(&fast[0][0].key));

    pool.close().await;
    scratch.drop_database().await.unwrap();
}
