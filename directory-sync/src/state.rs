//! The sync state of each folder, in the same database as the entities:
//! what every file looked like (size, mtime, hash) and which entity hash it
//! matched at the last sync. It is what makes the quick check and the
//! three-way conflict decision possible.

use std::collections::HashMap;

use sqlx::{PgPool, QueryBuilder, Row, SqlitePool};

/// Rows per multi-row statement (well under both databases' bind limits).
const WRITE_CHUNK: usize = 1000;

/// What a file was at the last sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    /// Relative to the root, `/`-separated.
    pub path: String,
    /// The entity the file holds: its type...
    pub entity_type: String,
    /// ...and its id.
    pub entity_id: String,
    /// The file's size in bytes when last synced.
    pub size: i64,
    /// Its modification time then, in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// BLAKE3 of the file's bytes.
    pub file_hash: String,
    /// The entity's content hash that the file matched.
    pub entity_hash: String,
    /// The frontmatter block as in the file, reused when metadata is unchanged.
    pub frontmatter: Option<String>,
}

/// A file's version kept beside the database's after a conflict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Conflict {
    /// The note's path, relative to the folder.
    pub path: String,
    /// Where the other version was kept, relative to the folder.
    pub conflict_path: String,
    /// The entity's type...
    pub entity_type: String,
    /// ...and id.
    pub entity_id: String,
    /// When the sync found it (RFC 3339).
    pub detected_at: String,
}

/// Per-folder bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootState {
    /// Entity changes up to this revision are in the folder.
    pub export_revision: i64,
    /// When the folder was last synced (RFC 3339).
    pub last_sync: Option<String>,
    /// The last summary, as JSON.
    pub last_summary: Option<String>,
    /// The folder's types at that export ([`crate::layout::Layout::signature`]):
    /// when they differ now, the next export reads every change again.
    pub export_types: Option<String>,
}

/// The state tables on SQLite or PostgreSQL.
#[derive(Clone)]
pub enum StateDb {
    /// In a SQLite file (the store's).
    Sqlite(SqlitePool),
    /// In a PostgreSQL database (the store's).
    Postgres(PgPool),
}

/// A `sync_files` row (columns in table order from `path`) as a
/// [`FileState`]; a column that does not decode is the caller's error.
macro_rules! file_state {
    ($row:expr) => {
        FileState {
            path: $row.try_get(0)?,
            entity_type: $row.try_get(1)?,
            entity_id: $row.try_get(2)?,
            size: $row.try_get(3)?,
            mtime_ns: $row.try_get(4)?,
            file_hash: $row.try_get(5)?,
            entity_hash: $row.try_get(6)?,
            frontmatter: $row.try_get(7)?,
        }
    };
}

/// Runs the same sqlx code against whichever pool this is.
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            StateDb::Sqlite($pool) => $body,
            StateDb::Postgres($pool) => $body,
        }
    };
}

/// The sync state's tables on SQLite.
pub(crate) const SQLITE_MIGRATIONS: sql_migrations::Embedded =
    sql_migrations::embed!("migrations/sqlite", ["3001_sync_state.sql", "3002_source_form.sql"]);
/// The sync state's tables on PostgreSQL.
pub(crate) const POSTGRES_MIGRATIONS: sql_migrations::Embedded =
    sql_migrations::embed!("migrations/postgres", ["3001_sync_state.sql", "3002_source_form.sql"]);

impl StateDb {
    /// Creates or upgrades the tables through sqlx's migrations (numbered
    /// from 3001 beside the store's, queue's and vectors'), which on
    /// PostgreSQL hold an advisory lock, so processes starting together
    /// never race on creating them. On SQLite see [`crate::Database::open`].
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            StateDb::Sqlite(pool) => SQLITE_MIGRATIONS.migrator().await?.run(pool).await,
            StateDb::Postgres(pool) => POSTGRES_MIGRATIONS.migrator().await?.run(pool).await,
        }
    }

    /// Takes the folder `root` for `holder` until `expires_at_ms`, if
    /// nobody else holds it, its lease ran out, or its holder is `dead`
    /// (a process known to have ended). Returns who holds it now (`None`:
    /// nobody, its holder let it go meanwhile; ask again).
    pub async fn try_lock(
        &self,
        root: &str,
        holder: &str,
        expires_at_ms: i64,
        dead: Option<&str>,
    ) -> Result<Option<String>, sqlx::Error> {
        let take = "INSERT INTO sync_locks (root, holder, expires_at) VALUES ($1, $2, $3)
                    ON CONFLICT (root) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                    WHERE sync_locks.holder = excluded.holder OR sync_locks.expires_at < $4 OR sync_locks.holder = $5";
        let now = chrono::Utc::now().timestamp_millis();
        let who = "SELECT holder FROM sync_locks WHERE root = $1";
        with_pool!(self, pool => {
            sqlx::query(take).bind(root).bind(holder).bind(expires_at_ms).bind(now).bind(dead).execute(pool).await?;
            sqlx::query_scalar(who).bind(root).fetch_optional(pool).await
        })
    }

    /// Extends `holder`'s lease of `root`; false when it no longer holds it.
    pub async fn renew_lock(&self, root: &str, holder: &str, expires_at_ms: i64) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE sync_locks SET expires_at = $3 WHERE root = $1 AND holder = $2";
        with_pool!(self, pool => Ok(sqlx::query(sql).bind(root).bind(holder).bind(expires_at_ms)
            .execute(pool).await?.rows_affected() == 1))
    }

    /// Gives `root` up, if `holder` still holds it.
    pub async fn unlock(&self, root: &str, holder: &str) -> Result<(), sqlx::Error> {
        let sql = "DELETE FROM sync_locks WHERE root = $1 AND holder = $2";
        with_pool!(self, pool => sqlx::query(sql).bind(root).bind(holder).execute(pool).await.map(drop))
    }

    /// Files recorded for `root`.
    /// Files of `root` that hold an older version of their entity than the
    /// database does (its change not exported yet, or its write failed).
    pub async fn count_outdated(&self, root: &str) -> Result<u64, sqlx::Error> {
        let sql = "SELECT COUNT(*) FROM sync_files AS f
                   JOIN entities AS e ON e.entity_type = f.entity_type AND e.id = f.entity_id
                   WHERE f.root = $1 AND NOT e.deleted AND e.content_hash <> f.entity_hash";
        let count: i64 = with_pool!(self, pool => sqlx::query_scalar(sql).bind(root).fetch_one(pool).await)?;
        Ok(count as u64)
    }

    /// Files of `root` the state knows.
    pub async fn count_files(&self, root: &str) -> Result<u64, sqlx::Error> {
        let sql = "SELECT COUNT(*) FROM sync_files WHERE root = $1";
        with_pool!(self, pool => sqlx::query_scalar::<_, i64>(sql).bind(root).fetch_one(pool).await.map(|n| n as u64))
    }

    /// Every file of `root` as of the last sync, by path.
    pub async fn files(&self, root: &str) -> Result<HashMap<String, FileState>, sqlx::Error> {
        let mut files = HashMap::new();
        self.for_each_file(root, |state| {
            files.insert(state.path.clone(), state);
        })
        .await?;
        Ok(files)
    }

    /// Streams every file of `root` to `visit` in byte order of path (Rust's
    /// `str` order), never holding them all: a merge with a sorted walk
    /// needs only the rows that differ.
    pub async fn for_each_file(&self, root: &str, mut visit: impl FnMut(FileState)) -> Result<(), sqlx::Error> {
        use futures::TryStreamExt;
        let columns = "path, entity_type, entity_id, size, mtime_ns, file_hash, entity_hash, frontmatter";
        match self {
            StateDb::Sqlite(pool) => {
                // SQLite's default BINARY collation compares UTF-8 bytes.
                let sql = format!("SELECT {columns} FROM sync_files WHERE root = $1 ORDER BY path");
                let mut rows = sqlx::query(&sql).bind(root).fetch(pool);
                while let Some(row) = rows.try_next().await? {
                    visit(file_state!(row));
                }
            }
            StateDb::Postgres(pool) => {
                let sql = format!("SELECT {columns} FROM sync_files WHERE root = $1 ORDER BY path COLLATE \"C\"");
                let mut rows = sqlx::query(&sql).bind(root).fetch(pool);
                while let Some(row) = rows.try_next().await? {
                    visit(file_state!(row));
                }
            }
        }
        Ok(())
    }

    /// The recorded files of these entities, by key, one statement per chunk.
    pub async fn files_of(
        &self,
        root: &str,
        keys: &[entity_store::EntityKey],
    ) -> Result<HashMap<entity_store::EntityKey, FileState>, sqlx::Error> {
        let mut files = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(WRITE_CHUNK / 2) {
            with_pool!(self, pool => {
                let mut query = QueryBuilder::new(
                    "SELECT path, entity_type, entity_id, size, mtime_ns, file_hash, entity_hash, frontmatter
                     FROM sync_files WHERE root = ",
                );
                query.push_bind(root).push(" AND (entity_type, entity_id) IN (VALUES ");
                let mut list = query.separated(", ");
                for key in chunk {
                    list.push("(").push_bind_unseparated(&key.entity_type).push_unseparated(", ");
                    list.push_bind_unseparated(&key.id).push_unseparated(")");
                }
                query.push(")");
                for row in query.build().fetch_all(pool).await? {
                    let state = file_state!(row);
                    let key = entity_store::EntityKey::new(&state.entity_type, &state.entity_id);
                    files.insert(key, state);
                }
            });
        }
        Ok(files)
    }

    /// The stored state of these paths of `root` (absent ones are left
    /// out), one statement per chunk.
    pub async fn files_at(&self, root: &str, paths: &[String]) -> Result<HashMap<String, FileState>, sqlx::Error> {
        let mut files = HashMap::with_capacity(paths.len());
        for chunk in paths.chunks(WRITE_CHUNK) {
            with_pool!(self, pool => {
                let mut query = QueryBuilder::new(
                    "SELECT path, entity_type, entity_id, size, mtime_ns, file_hash, entity_hash, frontmatter
                     FROM sync_files WHERE root = ",
                );
                query.push_bind(root).push(" AND path IN (");
                let mut list = query.separated(", ");
                for path in chunk {
                    list.push_bind(path);
                }
                query.push(")");
                for row in query.build().fetch_all(pool).await? {
                    let state = file_state!(row);
                    files.insert(state.path.clone(), state);
                }
            });
        }
        Ok(files)
    }

    /// Records files as synced, in one statement per chunk.
    pub async fn record(&self, root: &str, files: &[FileState]) -> Result<(), sqlx::Error> {
        for chunk in files.chunks(WRITE_CHUNK) {
            with_pool!(self, pool => {
                let mut query = QueryBuilder::new(
                    "INSERT INTO sync_files (root, path, entity_type, entity_id, size, mtime_ns, file_hash, entity_hash, frontmatter) ",
                );
                query.push_values(chunk, |mut row, file| {
                    row.push_bind(root)
                        .push_bind(&file.path)
                        .push_bind(&file.entity_type)
                        .push_bind(&file.entity_id)
                        .push_bind(file.size)
                        .push_bind(file.mtime_ns)
                        .push_bind(&file.file_hash)
                        .push_bind(&file.entity_hash)
                        .push_bind(&file.frontmatter);
                });
                query.push(
                    " ON CONFLICT (root, path) DO UPDATE SET entity_type = excluded.entity_type,
                      entity_id = excluded.entity_id, size = excluded.size, mtime_ns = excluded.mtime_ns,
                      file_hash = excluded.file_hash, entity_hash = excluded.entity_hash,
                      frontmatter = excluded.frontmatter",
                );
                query.build().execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Forgets files (deleted on either side).
    pub async fn forget(&self, root: &str, paths: &[String]) -> Result<(), sqlx::Error> {
        self.delete_in("DELETE FROM sync_files WHERE root = ", "path", root, paths).await
    }

    /// Every folder synced with this database, by path.
    pub async fn roots(&self) -> Result<Vec<String>, sqlx::Error> {
        let sql = "SELECT root FROM sync_roots ORDER BY root";
        with_pool!(self, pool => sqlx::query_scalar(sql).fetch_all(pool).await)
    }

    /// The bookkeeping of `root` (default when never synced).
    pub async fn root(&self, root: &str) -> Result<RootState, sqlx::Error> {
        let sql = "SELECT export_revision, last_sync, last_summary, export_types FROM sync_roots WHERE root = $1";
        let recorded = with_pool!(self, pool => {
            match sqlx::query(sql).bind(root).fetch_optional(pool).await? {
                Some(row) => Some(RootState {
                    export_revision: row.try_get(0)?,
                    last_sync: row.try_get(1)?,
                    last_summary: row.try_get(2)?,
                    export_types: row.try_get(3)?,
                }),
                None => None,
            }
        });
        Ok(recorded.unwrap_or_default())
    }

    /// Replaces the bookkeeping of `root`.
    pub async fn set_root(&self, root: &str, state: &RootState) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO sync_roots (root, export_revision, last_sync, last_summary, export_types)
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (root) DO UPDATE SET export_revision = excluded.export_revision,
                   last_sync = excluded.last_sync, last_summary = excluded.last_summary,
                   export_types = excluded.export_types";
        with_pool!(self, pool => sqlx::query(sql)
            .bind(root)
            .bind(state.export_revision)
            .bind(&state.last_sync)
            .bind(&state.last_summary)
            .bind(&state.export_types)
            .execute(pool)
            .await
            .map(drop))
    }

    /// Records conflicts found in `root`.
    pub async fn add_conflicts(&self, root: &str, conflicts: &[Conflict]) -> Result<(), sqlx::Error> {
        for chunk in conflicts.chunks(WRITE_CHUNK) {
            with_pool!(self, pool => {
                let mut query = QueryBuilder::new(
                    "INSERT INTO sync_conflicts (root, conflict_path, path, entity_type, entity_id, detected_at) ",
                );
                query.push_values(chunk, |mut row, c| {
                    row.push_bind(root)
                        .push_bind(&c.conflict_path)
                        .push_bind(&c.path)
                        .push_bind(&c.entity_type)
                        .push_bind(&c.entity_id)
                        .push_bind(&c.detected_at);
                });
                query.push(" ON CONFLICT (root, conflict_path) DO NOTHING");
                query.build().execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Open conflicts: those whose conflict file still exists are checked by the caller.
    pub async fn conflicts(&self, root: &str) -> Result<Vec<Conflict>, sqlx::Error> {
        let sql = "SELECT path, conflict_path, entity_type, entity_id, detected_at FROM sync_conflicts
                   WHERE root = $1 ORDER BY detected_at, conflict_path";
        with_pool!(self, pool => {
            sqlx::query(sql).bind(root).fetch_all(pool).await?.iter().map(|row| Ok(Conflict {
                path: row.try_get(0)?,
                conflict_path: row.try_get(1)?,
                entity_type: row.try_get(2)?,
                entity_id: row.try_get(3)?,
                detected_at: row.try_get(4)?,
            })).collect()
        })
    }

    /// Drops conflicts the user resolved (their conflict file is gone).
    pub async fn resolve_conflicts(&self, root: &str, conflict_paths: &[String]) -> Result<(), sqlx::Error> {
        self.delete_in("DELETE FROM sync_conflicts WHERE root = ", "conflict_path", root, conflict_paths).await
    }

    /// `{delete_from_root} $root AND {column} IN (...)`, one statement per chunk of `values`.
    async fn delete_in(
        &self,
        delete_from_root: &'static str,
        column: &'static str,
        root: &str,
        values: &[String],
    ) -> Result<(), sqlx::Error> {
        for chunk in values.chunks(WRITE_CHUNK) {
            with_pool!(self, pool => {
                let mut query = QueryBuilder::new(delete_from_root);
                query.push_bind(root).push(" AND ").push(column).push(" IN (");
                let mut list = query.separated(", ");
                for value in chunk {
                    list.push_bind(value);
                }
                query.push(")");
                query.build().execute(pool).await?;
            });
        }
        Ok(())
    }
}
