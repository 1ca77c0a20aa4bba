//! SQL migration files compiled into the binary and handed to sqlx's
//! [`Migrator`], without sqlx's `migrate!` proc macro.
//!
//! The macro is the only reason the workspace would enable sqlx's `macros`
//! feature, which compiles sqlx's PostgreSQL and SQLite drivers (and tokio)
//! a second time for the host: about 165 s of CPU in a clean build here.
//! [`embed!`] lists the files by name instead (a file that is not listed
//! is caught by [`Embedded::unlisted`], which each crate's tests call).
//!
//! Files are named as sqlx names them: `{version}_{description}.sql`, the
//! description's underscores read as spaces; a file that starts with
//! `-- no-transaction` runs outside a transaction. The checksum is sqlx's
//! own (SHA-384 of the text, by [`Migration::new`]), so a database migrated
//! by `migrate!` before is recognised as up to date.
#![warn(missing_docs)]

use std::borrow::Cow;
use std::path::Path;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

/// Embeds migration files of a folder below the calling crate's manifest:
/// `embed!("migrations/sqlite", ["0001_entities.sql", "0002_more.sql"])`.
#[macro_export]
macro_rules! embed {
    ($dir:literal, [$($file:literal),+ $(,)?]) => {
        $crate::Embedded::new(
            concat!(env!("CARGO_MANIFEST_DIR"), "/", $dir),
            &[$(($file, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $dir, "/", $file)))),+],
        )
    };
}

/// Migration files as (file name, SQL text) pairs, in any order.
#[derive(Debug, Clone, Copy)]
pub struct Embedded {
    dir: &'static str,
    files: &'static [(&'static str, &'static str)],
}

/// A file name that is not `{version}_{description}.sql`.
#[derive(Debug, thiserror::Error)]
#[error("migration file {file:?} in {dir} is not named {{version}}_{{description}}.sql: {reason}")]
pub struct NameError {
    /// The folder the files were embedded from.
    pub dir: &'static str,
    /// The file's name.
    pub file: &'static str,
    /// What is wrong with the name.
    pub reason: &'static str,
}

impl Embedded {
    /// Use [`embed!`], which reads the files at compile time.
    pub const fn new(dir: &'static str, files: &'static [(&'static str, &'static str)]) -> Self {
        Self { dir, files }
    }

    /// The migrations, ordered by version.
    pub fn migrations(&self) -> Result<Vec<Migration>, NameError> {
        let mut migrations = self
            .files
            .iter()
            .map(|&(file, sql)| {
                let (version, description) =
                    parse_name(file).map_err(|reason| NameError { dir: self.dir, file, reason })?;
                let no_tx = sql.starts_with("-- no-transaction");
                Ok(Migration::new(version, Cow::Owned(description), MigrationType::Simple, Cow::Borrowed(sql), no_tx))
            })
            .collect::<Result<Vec<_>, NameError>>()?;
        migrations.sort_by_key(|m| m.version);
        Ok(migrations)
    }

    /// A migrator for these files that ignores versions applied by other
    /// crates' migrators sharing the database (each crate numbers its own
    /// range: 0001 entities, 1001 queue, 2001 vectors, 3001 sync state).
    pub async fn migrator(self) -> Result<Migrator, sqlx::migrate::MigrateError> {
        let mut migrator = Migrator::new(self).await?;
        migrator.set_ignore_missing(true);
        Ok(migrator)
    }

    /// `.sql` files in the folder on disk that the list leaves out (a new
    /// migration someone forgot to add to [`embed!`]); for tests.
    pub fn unlisted(&self) -> std::io::Result<Vec<String>> {
        let mut unlisted = Vec::new();
        for entry in std::fs::read_dir(Path::new(self.dir))? {
            let path = entry?.path();
            let sql = path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("sql"));
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if sql && !self.files.iter().any(|(file, _)| *file == name) {
                unlisted.push(name);
            }
        }
        unlisted.sort();
        Ok(unlisted)
    }
}

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> futures::future::BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { self.migrations().map_err(Into::into) })
    }
}

/// `0002_search_watermark.sql` -> (2, "search watermark"), as sqlx reads it.
fn parse_name(file: &str) -> Result<(i64, String), &'static str> {
    let stem = file.strip_suffix(".sql").ok_or("it does not end in .sql")?;
    let (version, description) = stem.split_once('_').ok_or("it has no '_' after the version")?;
    let version = version.parse::<i64>().map_err(|_| "its version is not a number")?;
    Ok((version, description.replace('_', " ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_sqlx_reads_them() {
        type Expected = Result<(i64, &'static str), &'static str>;
        let cases: &[(&str, Expected)] = &[
            ("0001_entities.sql", Ok((1, "entities"))),
            ("1002_state_check.sql", Ok((1002, "state check"))),
            ("20240101120000_a_b_c.sql", Ok((20_240_101_120_000, "a b c"))),
            ("0001_entities.txt", Err("it does not end in .sql")),
            ("0001.sql", Err("it has no '_' after the version")),
            ("v1_entities.sql", Err("its version is not a number")),
        ];
        for (file, expected) in cases {
            let got = parse_name(file);
            let got = got.as_ref().map(|(v, d)| (*v, d.as_str())).map_err(|e| *e);
            assert_eq!(got, *expected, "{file}");
        }
    }

    #[test]
    fn checksums_are_sqlx_own_and_order_is_by_version() {
        static FILES: &[(&str, &str)] = &[("0002_b.sql", "SELECT 2;"), ("0001_a.sql", "-- no-transaction\nSELECT 1;")];
        let migrations = Embedded::new("unused", FILES).migrations().unwrap();
        assert_eq!(migrations.iter().map(|m| m.version).collect::<Vec<_>>(), [1, 2]);
        assert!(migrations[0].no_tx && !migrations[1].no_tx);
        let by_sqlx = Migration::new(2, "b".into(), MigrationType::Simple, "SELECT 2;".into(), false);
        assert_eq!(migrations[1].checksum, by_sqlx.checksum);
        let bad = Embedded::new("dir", &[("x.sql", "")]).migrations().unwrap_err();
        assert!(bad.to_string().contains("\"x.sql\" in dir"), "{bad}");
    }

    #[tokio::test]
    async fn a_migrator_runs_the_files_once() {
        static FILES: &[(&str, &str)] = &[("0001_t.sql", "CREATE TABLE t (x INTEGER);")];
        // One connection: each in-memory connection is a database of its own.
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
        let migrator = Embedded::new("unused", FILES).migrator().await.unwrap();
        migrator.run(&pool).await.unwrap();
        migrator.run(&pool).await.unwrap();
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(&pool).await.unwrap();
        assert_eq!(applied, 1);
    }
}
