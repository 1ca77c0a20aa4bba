//! Full-text search on PostgreSQL: the index (`entity_search`, a `tsvector`
//! per live entity under a GIN index), its bulk refresh, and queries.
//!
//! The store tokenises both sides itself ([`crate::terms`]), so index and
//! queries split words alike in every script, and PostgreSQL's parser (about
//! 9 MB/s here) sees neither.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, Row};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::PgStore;
use crate::model::{TextHit, key_at};
use crate::{Result, StoreError};

/// Entities read, tokenised and written per round of a refresh.
const PAGE: i64 = 500;
/// Pages read and tokenised ahead of the one being written.
const PAGES_AHEAD: usize = 2;
/// How long a refresh waits for a connection to read ahead on.
const READER_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// The best `limit` live entities for `query`, ranked by `ts_rank`, after
/// bringing the index up to date.
pub(super) async fn search_text(store: &PgStore, query: &str, limit: usize) -> Result<Vec<TextHit>> {
    refresh(store).await?;
    let Some(tsquery) = tsquery(query) else { return Ok(Vec::new()) };
    store.count();
    // Any word may match (OR), ranked; the text is a bound parameter, never spliced.
    // The terms are lexemes already (`tsquery`), so the literal is not parsed again.
    let rows = sqlx::query(
        "SELECT s.entity_type, s.id, ts_rank(s.search, $1::tsquery)::float8 AS score
         FROM entity_search AS s
         WHERE s.search @@ $1::tsquery ORDER BY score DESC, s.entity_type, s.id LIMIT $2",
    )
    .bind(tsquery)
    .bind(limit as i64)
    .fetch_all(&store.pool)
    .await?;
    let hit = |r: &PgRow| -> Result<TextHit, sqlx::Error> { Ok(TextHit { key: key_at(r)?, score: r.try_get(2)? }) };
    Ok(crate::relative_scores(rows.iter().map(hit).collect::<Result<_, _>>()?))
}

/// Indexes every entity written since the last refresh: the rows whose
/// revision is above the one recorded in `search_indexed`. Writers draw
/// revisions in commit order (they take turns on `ENTITY_WRITE_LOCK`), so
/// no row below the highest committed revision can still appear. Live rows
/// are (re)indexed, deleted ones dropped; returns how many rows that was.
///
/// One refresh runs at a time (a row lock on the watermark; a second
/// waits, then finds less or nothing to do), in one transaction, so a
/// search never sees half a refresh and an interrupted one leaves the
/// watermark where it was. Pages are read on a second connection of the
/// pool (when one is free within 50 ms; refreshes waiting for the lock hold
/// connections too) and tokenised on blocking threads while the writer writes the page
/// before them, so the server and this process work at once.
pub(super) async fn refresh(store: &PgStore) -> Result<u64> {
    store.count();
    let (indexed, latest): (i64, i64) = sqlx::query_as(
        "SELECT s.revision, (SELECT COALESCE(MAX(revision), 0)::int8 FROM entities) FROM search_indexed AS s",
    )
    .fetch_one(&store.pool)
    .await?;
    if latest <= indexed {
        return Ok(0);
    }
    let mut tx = store.pool.begin().await?;
    store.count();
    let indexed: i64 = sqlx::query_scalar("SELECT revision FROM search_indexed FOR UPDATE").fetch_one(&mut *tx).await?;
    store.count();
    let latest: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(revision), 0)::int8 FROM entities").fetch_one(&mut *tx).await?;
    if latest <= indexed {
        return Ok(0);
    }
    let range = Range { after: indexed, latest };
    let mut refreshed = 0;
    // A second connection to read ahead on, if the pool has one soon. Other
    // refreshes may hold every other connection while they wait for this
    // one's lock: then pages are read on the writer's connection.
    let reader = match store.pool.options().get_max_connections() {
        0 | 1 => None,
        _ => tokio::time::timeout(READER_WAIT, store.pool.acquire()).await.ok().and_then(Result::ok),
    };
    if let Some(reader) = reader {
        let (sender, mut pages) = mpsc::channel(PAGES_AHEAD);
        let reader = tokio::spawn(read_ahead(reader, store.statements.clone(), range, sender));
        while let Some(page) = pages.recv().await {
            let page = page.await.map_err(|e| tokeniser_failed(&e))??;
            refreshed += page.rows;
            write_page(store, &mut tx, page).await?;
        }
        reader.await.map_err(|e| tokeniser_failed(&e))??;
    } else {
        let mut range = range;
        while let Some(rows) = read_page(&mut tx, &store.statements, &mut range).await? {
            let page = tokio::task::spawn_blocking(move || SearchPage::of(&rows))
                .await
                .map_err(|e| tokeniser_failed(&e))??;
            refreshed += page.rows;
            write_page(store, &mut tx, page).await?;
        }
    }
    store.count();
    sqlx::query("UPDATE search_indexed SET revision = $1").bind(latest).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(refreshed)
}

/// Revisions still to read: above `after`, up to `latest`.
#[derive(Clone, Copy)]
struct Range {
    after: i64,
    latest: i64,
}

/// The next page of `range` (advancing it), or `None` past its end.
async fn read_page(conn: &mut PgConnection, statements: &AtomicU64, range: &mut Range) -> Result<Option<Vec<PgRow>>> {
    statements.fetch_add(1, Ordering::Relaxed);
    let rows = sqlx::query(
        "SELECT entity_type, id, deleted, coalesce(metadata ->> 'title', '') AS title, content, revision
         FROM entities WHERE revision > $1 AND revision <= $2 ORDER BY revision LIMIT $3",
    )
    .bind(range.after)
    .bind(range.latest)
    .bind(PAGE)
    .fetch_all(&mut *conn)
    .await?;
    let Some(last) = rows.last() else { return Ok(None) };
    range.after = last.try_get(5)?;
    Ok(Some(rows))
}

/// A page being tokenised, in the order read.
type Tokenising = JoinHandle<Result<SearchPage>>;

/// Reads `range` page by page on a connection of its own and sends each
/// page's tokenising task, until the range ends or the writer stops taking
/// them (it failed).
async fn read_ahead(
    mut conn: PoolConnection<Postgres>,
    statements: Arc<AtomicU64>,
    mut range: Range,
    pages: mpsc::Sender<Tokenising>,
) -> Result<()> {
    while let Some(rows) = read_page(&mut conn, &statements, &mut range).await? {
        if pages.send(tokio::task::spawn_blocking(move || SearchPage::of(&rows))).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Only a panic in the tokeniser (or the reader) fails its task itself.
fn tokeniser_failed(error: &tokio::task::JoinError) -> StoreError {
    StoreError::Database(sqlx::Error::Io(std::io::Error::other(format!(
        "tokenising a page of the search index failed: {error}"
    ))))
}

/// One page of rows, ready to write: the keys to drop and the keys to
/// (re)index with their `tsvector`s.
#[derive(Default)]
struct SearchPage {
    rows: u64,
    gone: [Vec<String>; 2],
    live: [Vec<String>; 2],
    vectors: Vec<TsVector>,
}

impl SearchPage {
    fn of(rows: &[PgRow]) -> Result<Self> {
        let mut page = Self { rows: rows.len() as u64, ..Self::default() };
        for row in rows {
            let (entity_type, id): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            if row.try_get::<bool, _>(2)? {
                page.gone[0].push(entity_type);
                page.gone[1].push(id);
            } else {
                page.vectors.push(TsVector(crate::terms::tsvector_binary(row.try_get(3)?, row.try_get(4)?)));
                page.live[0].push(entity_type);
                page.live[1].push(id);
            }
        }
        Ok(page)
    }
}

async fn write_page(store: &PgStore, tx: &mut PgConnection, page: SearchPage) -> Result<()> {
    if !page.gone[0].is_empty() {
        store.count();
        sqlx::query(
            "DELETE FROM entity_search AS s USING UNNEST($1::text[], $2::text[]) AS g(t, i)
             WHERE s.entity_type = g.t AND s.id = g.i",
        )
        .bind(&page.gone[0])
        .bind(&page.gone[1])
        .execute(&mut *tx)
        .await?;
    }
    if !page.live[0].is_empty() {
        store.count();
        sqlx::query(
            "INSERT INTO entity_search (entity_type, id, search)
             SELECT t, i, v FROM UNNEST($1::text[], $2::text[], $3::tsvector[]) AS u(t, i, v)
             ON CONFLICT (entity_type, id) DO UPDATE SET search = EXCLUDED.search",
        )
        .bind(&page.live[0])
        .bind(&page.live[1])
        .bind(&page.vectors)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// A `tsvector` in its binary form, sent as is.
struct TsVector(Vec<u8>);

impl sqlx::Type<sqlx::Postgres> for TsVector {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        sqlx::postgres::PgTypeInfo::with_name("tsvector")
    }
}

impl sqlx::postgres::PgHasArrayType for TsVector {
    fn array_type_info() -> sqlx::postgres::PgTypeInfo {
        sqlx::postgres::PgTypeInfo::with_name("_tsvector")
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for TsVector {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        buf.extend_from_slice(&self.0);
        Ok(sqlx::encode::IsNull::No)
    }
}

/// A `tsquery` literal from free text: any word may match (`|`); a word of
/// an unspaced script matches when all its pairs are present (`&`). Terms
/// are folded as the index's are (`terms::for_each_index_term`); they
/// hold only letters, digits and combining marks, and are quoted all the same.
fn tsquery(text: &str) -> Option<String> {
    let quote = |term: &str| {
        let mut folded = String::with_capacity(term.len());
        crate::terms::fold_case_into(term, &mut folded);
        // A word the index cannot hold matches nothing (and PostgreSQL refuses it).
        (folded.len() <= crate::terms::MAX_LEXEME_BYTES)
            .then(|| format!("'{}'", folded.replace('\\', "\\\\").replace('\'', "''")))
    };
    crate::terms::render_query(text, quote, " & ", " | ")
}
