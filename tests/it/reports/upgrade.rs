//! Upgrading a mirror to schema version 7 gives the D365 rows mirrored before it their
//! channel (`custom`), so that the views give them a kind like the rows written since.

use std::borrow::Cow;

use sqlx::migrate::Migrator;

use crate::support::mirror::MirrorDb;
use crate::support::stores::{Backend, MirrorSql, on_both_stores};
use convsync_testpg::TestPgDb;

on_both_stores!(d365_rows_from_before_version_7_get_their_channel);

/// `migrator` with only the migrations up to `version`.
fn up_to(mut migrator: Migrator, version: i64) -> Migrator {
    let older: Vec<_> = migrator
        .migrations
        .iter()
        .filter(|m| m.version <= version)
        .cloned()
        .collect();
    migrator.migrations = Cow::Owned(older);
    migrator
}

/// A D365 row and a Spruce row written by schema version 6 (no channel): after the
/// upgrade the D365 one is `custom` with kind `custom`, the other keeps its NULL.
async fn d365_rows_from_before_version_7_get_their_channel(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let _postgres;
    let (sqlite, postgres, migrator, insert) = match backend {
        Backend::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(dir.path().join("mirror.db"))
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            let insert = "INSERT INTO conversations (source, conversation_id, provider, account, \
                 raw, payload_hash, first_seen_at, last_seen_at, last_changed_at) VALUES \
                 ('d', 'c1', 'd365', 'a', '{}', X'00', '2026-01-01T00:00:00.000000Z', \
                  '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z'), \
                 ('s', 'c1', 'spruce', 'a', '{}', X'00', '2026-01-01T00:00:00.000000Z', \
                  '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')";
            (
                Some(pool),
                None,
                sqlx::migrate!("./migrations/sqlite"),
                insert,
            )
        }
        Backend::Postgres => {
            let database = TestPgDb::new().await;
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            _postgres = database;
            let insert = "INSERT INTO conversations (source, conversation_id, provider, account, \
                 raw, payload_hash, first_seen_at, last_seen_at, last_changed_at) VALUES \
                 ('d', 'c1', 'd365', 'a', '{}', '\\x00', now(), now(), now()), \
                 ('s', 'c1', 'spruce', 'a', '{}', '\\x00', now(), now(), now())";
            (
                None,
                Some(pool),
                sqlx::migrate!("./migrations/postgres"),
                insert,
            )
        }
    };
    let db = match (&sqlite, &postgres) {
        (Some(pool), _) => MirrorDb::Sqlite(pool),
        (_, Some(pool)) => MirrorDb::Postgres(pool),
        _ => unreachable!(),
    };
    let old = up_to(migrator, 6);
    match db {
        MirrorDb::Sqlite(pool) => old.run(pool).await.unwrap(),
        MirrorDb::Postgres(pool) => old.run(pool).await.unwrap(),
    }
    assert_eq!(db.sql_execute(insert).await, 2);

    let current = match backend {
        Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
    };
    match db {
        MirrorDb::Sqlite(pool) => current.run(pool).await.unwrap(),
        MirrorDb::Postgres(pool) => current.run(pool).await.unwrap(),
    }

    let rows: Vec<(String, Option<String>, Option<String>)> = db
        .sql_rows("SELECT provider, channel, channel_kind FROM v1_conversations ORDER BY provider")
        .await;
    assert_eq!(
        rows,
        [
            (
                "d365".to_owned(),
                Some("custom".to_owned()),
                Some("custom".to_owned())
            ),
            ("spruce".to_owned(), None, None),
        ]
    );
}
