//! The write locks that give PostgreSQL SQLite's one-writer guarantees where they matter:
//! transaction-scoped advisory locks, released by the commit or rollback that ends the
//! transaction (or by the server when a connection dies), never by hand.
//!
//! - A write of a source's data (a page, a sweep's absences, follow-up answers, cursors)
//!   holds that source's lock, so one source's writes never interleave: a sweep counts and
//!   marks its absences against rows no other transaction is changing, and two writes of
//!   one conversation never race. Different sources write in parallel.
//! - Those writes also hold the whole mirror's lock in shared mode; what rewrites every
//!   source at once (retention, renaming or forgetting a source) holds it exclusively.
//!
//! - A refresh of a rotating refresh token holds its vault key's lock from reading the
//!   token to storing its successor, across the request to the token endpoint. That lock
//!   is a session's, on a connection of its own (`vault.rs`), because the refresh commits
//!   its steps as it goes; closing the connection (or losing it) releases it.
//!
//! Locks are taken in one order (the mirror's, then sources by name), so two transactions
//! never wait on each other. A lock not granted within `lock_timeout` fails the write as
//! busy, to be tried again.

use sqlx::PgConnection;

use crate::store::StoreError;

/// The advisory-lock namespace (the first key) of a source's lock; the second key is a hash
/// of its name. Distinct names sharing a hash only share a lock.
const SOURCE_LOCKS: i32 = 0x6376_7301;
/// The namespace of the whole mirror's lock (its second key is 0).
const MIRROR_LOCK: i32 = 0x6376_7300;
/// The namespace of the vault keys' locks; the second key is a hash of the vault key.
const VAULT_LOCKS: i32 = 0x6376_7302;

/// Holds, until the transaction ends, the mirror's lock in shared mode and the locks of
/// `sources` (any order, repeats allowed) exclusively.
pub(super) async fn lock_sources(
    tx: &mut PgConnection,
    sources: &[&str],
) -> Result<(), StoreError> {
    let mut sorted = sources.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1, 0)")
        .bind(MIRROR_LOCK)
        .execute(&mut *tx)
        .await?;
    for source in sorted {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(SOURCE_LOCKS)
            .bind(source)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Holds the whole mirror's lock exclusively until the transaction ends: no source is
/// written meanwhile.
pub(super) async fn lock_mirror(tx: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
        .bind(MIRROR_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Holds the lock of the vault key `key` for the session of `conn` (waiting at most its
/// `lock_timeout`), until [`unlock_vault_key`] or the session's end.
pub(super) async fn lock_vault_key(conn: &mut PgConnection, key: &str) -> Result<(), StoreError> {
    on_vault_key(conn, "SELECT pg_advisory_lock($1, hashtext($2))", key).await
}

/// Releases the lock [`lock_vault_key`] took.
pub(super) async fn unlock_vault_key(conn: &mut PgConnection, key: &str) -> Result<(), StoreError> {
    on_vault_key(conn, "SELECT pg_advisory_unlock($1, hashtext($2))", key).await
}

/// Runs `sql`, a session advisory-lock call, on the lock of the vault key `key`.
async fn on_vault_key(
    conn: &mut PgConnection,
    sql: &'static str,
    key: &str,
) -> Result<(), StoreError> {
    sqlx::query(sql)
        .bind(VAULT_LOCKS)
        .bind(key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
