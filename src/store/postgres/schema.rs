//! The schema: the migrations of `migrations/postgres/` (version 5 and on, the same numbers
//! as SQLite's for the same schema), and the check that a database is convsync's and no
//! newer than this binary before anything writes to it.

use sqlx::PgConnection;

use crate::store::StoreError;
use crate::store::admin::{holds_convsync_schema, refuse_newer_schema};

/// The schema, from `migrations/postgres/`.
pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Whether the schema on `conn` (its current schema, `public` by default) is a convsync one
/// this binary understands, or empty.
pub(super) async fn check_schema(
    conn: &mut PgConnection,
    shown_name: &str,
) -> Result<(), StoreError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
    )
    .fetch_all(&mut *conn)
    .await?;
    if holds_convsync_schema(&tables, shown_name)? {
        let found: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
            .fetch_one(&mut *conn)
            .await?;
        refuse_newer_schema(found, &MIGRATOR)?;
    }
    Ok(())
}
