//! `batch_upsert`'s writes on SQLite, without a result row per entity.
//!
//! Rows a statement returns cross from sqlx's SQLite thread to the caller
//! one at a time, each a wake-up of the other thread: `RETURNING` one row
//! per entity cost about a fifth of a 10,000-entity upsert. So a chunk is
//! written in statements that return one row or none:
//!
//! 1. While chunks are new keys only (a first import), one plain `INSERT`
//!    of the whole chunk at version 1; a key already stored (tombstones
//!    included) fails it as a whole, and nothing of it is written.
//! 2. Otherwise the stored state of the chunk's keys, as one JSON row; the
//!    chunk is decided here (unchanged, conflict, insert, update) and the
//!    rows to write go in one `INSERT … ON CONFLICT DO UPDATE` that only
//!    updates a row still at the version read (compare-and-set). Another
//!    process writing one of them meanwhile shows in the count of rows
//!    written; those rows are then read again and the caller decides.
//!
//! Within this process the store's single writer connection makes the read
//! and the write of a chunk one turn.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqliteConnection};

use super::{SqliteStore, format_time};
use crate::model::EntityKey;
use crate::upsert::{StoredState, UpsertBackend, WriteOutcome, WrittenRow, key_of};
use crate::validate::{Prepared, metadata_json};

/// Rows per statement: 8 binds a row, under SQLite's limit of 32,766 bind parameters.
const MAX_ROWS_PER_STATEMENT: usize = 4000;

#[async_trait::async_trait]
impl UpsertBackend for SqliteStore {
    type Conn = PoolConnection<Sqlite>;

    fn parallel_chunks(&self) -> usize {
        1
    }

    async fn connection(&self) -> Result<Self::Conn, sqlx::Error> {
        self.writer.acquire().await
    }

    const BEGIN: &'static str = "BEGIN IMMEDIATE";

    async fn execute(&self, conn: &mut Self::Conn, sql: &'static str) -> Result<(), sqlx::Error> {
        self.count();
        sqlx::query(sql).execute(&mut **conn).await.map(drop)
    }

    async fn write(
        &self,
        conn: &mut Self::Conn,
        rows: &[&Prepared],
        now: DateTime<Utc>,
    ) -> Result<WriteOutcome, sqlx::Error> {
        let now = format_time(now);
        let mut outcome = WriteOutcome::default();
        for part in rows.chunks(MAX_ROWS_PER_STATEMENT) {
            self.write_part(conn, part, &now, &mut outcome).await?;
        }
        Ok(outcome)
    }

    async fn read_state(
        &self,
        conn: &mut Self::Conn,
        keys: &[EntityKey],
    ) -> Result<HashMap<EntityKey, StoredState>, sqlx::Error> {
        self.stored_states(conn, keys).await
    }
}

/// A row to write at `version`, and whether that creates the entity (no
/// row stored, or a tombstone).
struct Decided<'a> {
    row: &'a Prepared,
    version: i64,
    created: bool,
}

impl SqliteStore {
    async fn write_part(
        &self,
        conn: &mut SqliteConnection,
        part: &[&Prepared],
        now: &str,
        outcome: &mut WriteOutcome,
    ) -> Result<(), sqlx::Error> {
        let may_all_be_new = part.iter().all(|p| matches!(p.expected_version, None | Some(0)));
        if may_all_be_new
            && self.insert_first.load(Ordering::Relaxed)
            && self.insert_if_all_new(conn, part, now).await?
        {
            outcome.written.extend(part.iter().map(|p| WrittenRow { key: key_of(p), version: 1, created: true }));
            return Ok(());
        }
        let keys: Vec<EntityKey> = part.iter().map(|p| key_of(p)).collect();
        let mut states = self.stored_states(conn, &keys).await?;
        // Try the insert first next time only if it would have done this chunk.
        self.insert_first.store(states.is_empty(), Ordering::Relaxed);
        let mut decided = Vec::with_capacity(part.len());
        for (row, key) in part.iter().zip(&keys) {
            let state = states.get(key);
            let live_version = state.map_or(0, |s| if s.deleted { 0 } else { s.version });
            let conflict = row.expected_version.is_some_and(|expected| expected != live_version);
            let unchanged = state.is_some_and(|s| !s.deleted && s.content_hash == row.content_hash);
            if conflict || unchanged {
                // Left in `states`: the caller accounts for it.
                continue;
            }
            let created = state.is_none_or(|s| s.deleted);
            decided.push(Decided { row, version: state.map_or(0, |s| s.version) + 1, created });
            states.remove(key);
        }
        if !decided.is_empty() {
            let written = self.write_rows(conn, &decided, now, true).await?;
            if written == decided.len() {
                outcome.written.extend(decided.iter().map(|d| WrittenRow {
                    key: key_of(d.row),
                    version: d.version,
                    created: d.created,
                }));
            } else {
                // Another process wrote some of these rows since they were
                // read: ours are the ones stored at our version and hash.
                let keys: Vec<EntityKey> = decided.iter().map(|d| key_of(d.row)).collect();
                let mut now_stored = self.stored_states(conn, &keys).await?;
                for (d, key) in decided.iter().zip(keys) {
                    match now_stored.remove(&key) {
                        Some(s) if !s.deleted && s.version == d.version && s.content_hash == d.row.content_hash => {
                            outcome.written.push(WrittenRow { key, version: d.version, created: d.created });
                        }
                        Some(s) => {
                            states.insert(key, s);
                        }
                        None => {}
                    }
                }
            }
        }
        outcome.states.extend(states);
        Ok(())
    }

    /// Inserts every row of `part` at version 1 if none of their keys is
    /// stored (tombstones included), else nothing; says which. A plain
    /// `INSERT` fails as a whole on a stored key, and that failure is the
    /// answer. (Asking first, with `NOT EXISTS` over the chunk, made SQLite
    /// copy the chunk once more: a tenth of a first import.)
    async fn insert_if_all_new(
        &self,
        conn: &mut SqliteConnection,
        part: &[&Prepared],
        now: &str,
    ) -> Result<bool, sqlx::Error> {
        let rows: Vec<Decided<'_>> = part.iter().map(|row| Decided { row, version: 1, created: true }).collect();
        match self.write_rows(conn, &rows, now, false).await {
            Ok(written) => Ok(written == rows.len()),
            Err(sqlx::Error::Database(error)) if error.kind() == sqlx::error::ErrorKind::UniqueViolation => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Writes each row at its decided version, in one statement; returns
    /// how many were written. With `update_stored`, a stored row is updated
    /// where it is still at the version before (compare-and-set); without
    /// it, a stored key fails the statement.
    async fn write_rows(
        &self,
        conn: &mut SqliteConnection,
        rows: &[Decided<'_>],
        now: &str,
        update_stored: bool,
    ) -> Result<usize, sqlx::Error> {
        let metadata: Vec<String> = rows.iter().map(|d| metadata_json(&d.row.metadata)).collect();
        let mut query = sqlx::QueryBuilder::<Sqlite>::new(
            "WITH input (entity_type, id, content, metadata, content_hash, frontmatter, version, ord) AS (",
        );
        query.push_values(rows.iter().zip(&metadata).enumerate(), |mut row, (ord, (d, meta))| {
            row.push_bind(&d.row.entity_type)
                .push_bind(&d.row.id)
                .push_bind(&d.row.content)
                .push_bind(meta)
                .push_bind(&d.row.content_hash)
                .push_bind(&d.row.frontmatter)
                .push_bind(d.version)
                .push_bind(ord as i64);
        });
        query.push(
            ") INSERT INTO entities (entity_type, id, content, metadata, content_hash, frontmatter, created_at, updated_at, version, revision, deleted)
             SELECT i.entity_type, i.id, i.content, i.metadata, i.content_hash, i.frontmatter, ",
        );
        query.push_bind(now).push(", ").push_bind(now).push(
            ", i.version, (SELECT COALESCE(MAX(revision), 0) FROM entities) + 1 + i.ord, 0
             FROM input AS i",
        );
        if update_stored {
            query.push(
                " WHERE TRUE
                 ON CONFLICT (entity_type, id) DO UPDATE SET
                    content = excluded.content,
                    metadata = excluded.metadata,
                    content_hash = excluded.content_hash,
                    frontmatter = excluded.frontmatter,
                    updated_at = excluded.updated_at,
                    created_at = CASE WHEN entities.deleted THEN excluded.created_at ELSE entities.created_at END,
                    version = excluded.version,
                    revision = excluded.revision,
                    deleted = 0
                 WHERE entities.version = excluded.version - 1",
            );
        }
        self.count();
        let written = query.build().execute(&mut *conn).await?.rows_affected();
        Ok(written as usize)
    }

    /// Version, hash and tombstone flag of the stored `keys`, in one
    /// statement that returns one row (a JSON array).
    pub(super) async fn stored_states(
        &self,
        conn: &mut SqliteConnection,
        keys: &[EntityKey],
    ) -> Result<HashMap<EntityKey, StoredState>, sqlx::Error> {
        self.count();
        let json: String = sqlx::query_scalar(
            "SELECT json_group_array(json_array(e.entity_type, e.id, e.version, e.content_hash, e.deleted))
             FROM json_each(?) AS j JOIN entities AS e ON e.entity_type = j.value ->> 0 AND e.id = j.value ->> 1",
        )
        .bind(Self::keys_json(keys))
        .fetch_one(&mut *conn)
        .await?;
        let rows: Vec<(String, String, i64, String, i64)> =
            serde_json::from_str(&json).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
        Ok(rows
            .into_iter()
            .map(|(entity_type, id, version, content_hash, deleted)| {
                (EntityKey::new(entity_type, id), StoredState { version, content_hash, deleted: deleted != 0 })
            })
            .collect())
    }
}
