//! The schema: the migrations of `migrations/sqlite/`, and the check that a database is
//! convsync's and no newer than this binary before anything writes to it.

use sqlx::sqlite::SqliteConnection;

use crate::store::StoreError;
use crate::store::admin::{holds_convsync_schema, refuse_newer_schema};

/// The schema, from `migrations/sqlite/`.
pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The newest schema version this binary knows.
pub(super) fn newest_known_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Whether the schema on `conn` is a convsync one this binary understands (or empty).
pub(super) async fn check_schema(
    conn: &mut SqliteConnection,
    shown_name: &str,
) -> Result<(), StoreError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&mut *conn)
    .await?;
    if holds_convsync_schema(&tables, shown_name)? {
        let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&mut *conn)
            .await?;
        refuse_newer_schema(found, &MIGRATOR)?;
    }
    Ok(())
}
