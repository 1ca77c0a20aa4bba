//! PostgreSQL only (with `DATABASE_URL`): upgrades from earlier releases and
//! pools short of connections.

mod common;

use common::{ids, note, upsert};
use entity_store::{EntityKey, NewEntity};

/// A PostgreSQL database of the release that queued keys for the search
/// index: what was still queued is indexed once the store opens it, what
/// was indexed stays found, and what is written after is followed.
#[tokio::test]
async fn a_postgres_queue_of_an_earlier_release_is_indexed_after_the_migration() {
    for queued in [true, false] {
        let Some(scratch) = scratch_pg::ScratchPg::from_env("DATABASE_URL", "es_test", "pg_queue_migration").await
        else {
            return;
        };
        let pool = sqlx::PgPool::connect(&scratch.url).await.unwrap();
        let release = sql_migrations::embed!(
            "migrations/postgres",
            ["0001_entities.sql", "0002_source_form.sql", "0003_own_tokens.sql"]
        );
        release.migrator().await.unwrap().run(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO entities (entity_type, id, content, metadata, content_hash, created_at, updated_at, version, revision)
             VALUES ('note', 'old', 'a lighthouse of the earlier release', '{}', 'h', now(), now(), 1, nextval('entity_revision'))",
        )
        .execute(&pool)
        .await
        .unwrap();
        if queued {
            sqlx::query("INSERT INTO search_queue (entity_type, id) VALUES ('note', 'old')")
                .execute(&pool)
                .await
                .unwrap();
        } else {
            // Indexed by that release: its own row in the index, nothing queued.
            sqlx::query(
                "INSERT INTO entity_search (entity_type, id, search) VALUES ('note', 'old', 'lighthouse:1 release:2')",
            )
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;

        let store = entity_store::PgStore::connect(&scratch.url).await.unwrap();
        let api: &dyn entity_store::EntityStore = &store;
        let expected_refreshed = u64::from(queued);
        assert_eq!(api.refresh_search_index().await.unwrap(), expected_refreshed, "queued: {queued}");
        assert_eq!(ids(api.search_text("lighthouse", 10).await.unwrap()), ["old"], "queued: {queued}");
        upsert(common::Store::Postgres(&store), vec![note("new", "a lighthouse of this release")]).await;
        api.batch_delete(&[EntityKey::new("note", "old")]).await.unwrap();
        assert_eq!(ids(api.search_text("lighthouse", 10).await.unwrap()), ["new"], "queued: {queued}");
        store.pool().close().await;
        scratch.drop_database().await.unwrap();
    }
}

/// A store on a pool of one connection has none to read ahead on: its
/// refresh reads on the writer's connection and indexes everything all the same.
#[tokio::test]
async fn a_postgres_store_on_one_connection_refreshes_its_index() {
    let Some(scratch) = scratch_pg::ScratchPg::from_env("DATABASE_URL", "es_test", "pg_one_connection").await else {
        return;
    };
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&scratch.url).await.unwrap();
    let store = entity_store::PgStore::from_pool(pool).await.unwrap();
    let api: &dyn entity_store::EntityStore = &store;
    upsert(
        common::Store::Postgres(&store),
        (0..1_100).map(|i| note(&format!("n{i}"), &format!("shared w{i}"))).collect(),
    )
    .await;
    assert_eq!(api.refresh_search_index().await.unwrap(), 1_100);
    assert_eq!(api.search_text("shared", 2_000).await.unwrap().len(), 1_100);
    assert_eq!(ids(api.search_text("w1099", 10).await.unwrap()), ["n1099"]);
    store.pool().close().await;
    scratch.drop_database().await.unwrap();
}

/// More searches at once than the pool has connections, right after a
/// write: every search refreshes the index first, waiting its turn on the
/// refresh lock with a connection in hand. The one holding the lock must
/// never need another connection it cannot get, or all of them wait for
/// the pool's timeout and fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_concurrent_searches_than_connections_all_finish() {
    let Some(scratch) = scratch_pg::ScratchPg::from_env("DATABASE_URL", "es_test", "pg_search_crowd").await else {
        return;
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(&scratch.url)
        .await
        .unwrap();
    let store = entity_store::PgStore::from_pool(pool).await.unwrap();
    for round in 0..3 {
        let notes: Vec<NewEntity> =
            (0..1_500).map(|i| note(&format!("r{round}-{i}"), &format!("crowd w{round}x{i}"))).collect();
        upsert(common::Store::Postgres(&store), notes).await;
        let searches = (0..12).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let api: &dyn entity_store::EntityStore = &store;
                api.search_text(&format!("w{round}x1499"), 10).await.map(ids)
            })
        });
        for search in futures::future::join_all(searches).await {
            let found = search.unwrap().expect("every search finishes without error");
            assert_eq!(found, [format!("r{round}-1499")]);
        }
    }
    store.pool().close().await;
    scratch.drop_database().await.unwrap();
}
