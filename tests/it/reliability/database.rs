//! Database faults, on both stores: a long report read (SQLite's WAL, PostgreSQL's MVCC),
//! another process holding the write lock, a full disk (SQLite's page limit; on PostgreSQL
//! a write failing mid-transaction with the server's `disk_full`), databases that are not
//! convsync's or have a newer schema, and rows whose reply facts live outside their raw
//! JSON. The file's permissions are SQLite's alone; connections ended by the server,
//! PostgreSQL's.

use std::time::Duration;

use convsync::config::Config;
use convsync::provider::{ConversationRecord, Direction};
use convsync::store::{CursorState, PageWrite, Store};
use convsync::sync::Engine;
use convsync::sync::WalkCursor;
use convsync::time::Timestamp;
use convsync_sim::{Faults, PlatformSelector};
use tokio_util::sync::CancellationToken;

use crate::support::TestDb;
use crate::support::mirror::MirrorPool;
use crate::support::reliability::{
    PATIENCE, Site, SiteOptions, latency, nearly_full_store, run_outcomes, sim_options,
    small_pages, wait_every_source_caught_up,
};
use crate::support::stores::{Backend, MirrorSql, on_both_stores};

/// A report holding a read transaction open for the whole sync does not stop it (SQLite's
/// WAL; a repeatable-read snapshot on PostgreSQL).
async fn a_long_report_read_does_not_stop_syncing(backend: Backend) {
    let site = Site::start_on(backend, sim_options(41, 60), SiteOptions::default()).await;
    assert!(site.run(&["migrate"]).await.status.success());
    let pool = site.mirror().await;
    let report = ReportRead::begin(&pool).await;

    site.sync_full().await;

    site.assert_mirror_matches_truth().await;
    report.end().await;
    pool.close().await;
}

/// A report's read transaction, open from its first read to [`ReportRead::end`].
enum ReportRead {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl ReportRead {
    /// Opens the transaction and reads, so that it holds its snapshot from here on.
    async fn begin(pool: &MirrorPool) -> ReportRead {
        const READ: &str = "SELECT COUNT(*) FROM conversations";
        match pool {
            MirrorPool::Sqlite(pool) => {
                let mut report = pool.begin().await.unwrap();
                let _: i64 = sqlx::query_scalar(READ)
                    .fetch_one(&mut *report)
                    .await
                    .unwrap();
                ReportRead::Sqlite(report)
            }
            MirrorPool::Postgres(pool) => {
                let mut report = pool.begin().await.unwrap();
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    .execute(&mut *report)
                    .await
                    .unwrap();
                let _: i64 = sqlx::query_scalar(READ)
                    .fetch_one(&mut *report)
                    .await
                    .unwrap();
                ReportRead::Postgres(report)
            }
        }
    }

    async fn end(self) {
        match self {
            ReportRead::Sqlite(report) => report.rollback().await.unwrap(),
            ReportRead::Postgres(report) => report.rollback().await.unwrap(),
        }
    }
}

/// Another process holding the write lock longer than the busy timeout makes the cycle
/// wait and try again: the sync succeeds, no run fails, nothing is lost. (On SQLite the
/// lock is the file's; on PostgreSQL, exclusive locks on every table convsync writes,
/// which its `lock_timeout` meets as SQLite's busy timeout.)
async fn another_writer_holding_the_lock_makes_the_cycle_wait(backend: Backend) {
    let site = Site::start_on(
        backend,
        sim_options(42, 150),
        SiteOptions {
            busy_timeout: "200ms",
            ..small_pages()
        },
    )
    .await;
    assert!(site.run(&["migrate"]).await.status.success());
    let pool = site.mirror().await;
    // The lock is taken before the sync starts, so the sync meets it however fast it runs
    // (waiting for its first page instead raced with a sync that finished first).
    let release = hold_write_lock(&pool).await;
    let hold_lock = async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        release.await;
    };

    let (sync, ()) = tokio::join!(site.run(&["sync", "--once", "--full"]), hold_lock);

    assert!(sync.status.success(), "{}", sync.tail());
    assert!(
        sync.stderr
            .contains("the database is locked by another process"),
        "the wait is logged"
    );
    assert_eq!(run_outcomes(&pool).await.get("failed"), None);
    pool.close().await;
    site.assert_converged().await;
}

/// Takes the mirror's write lock as another process would, and returns the commit that
/// releases it.
async fn hold_write_lock(pool: &MirrorPool) -> impl Future<Output = ()> + use<> {
    let (mut writer, take, release) = match pool {
        MirrorPool::Sqlite(pool) => (
            MirrorConnection::Sqlite(pool.acquire().await.unwrap()),
            "BEGIN IMMEDIATE",
            "COMMIT",
        ),
        MirrorPool::Postgres(pool) => (
            MirrorConnection::Postgres(pool.acquire().await.unwrap()),
            "BEGIN; LOCK TABLE conversations, cursors, sync_runs, follow_ups, \
             rejected_records, refresh_tokens IN EXCLUSIVE MODE",
            "COMMIT",
        ),
    };
    writer.execute(take).await;
    async move { writer.execute(release).await }
}

/// One connection of a [`MirrorPool`].
enum MirrorConnection {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

impl MirrorConnection {
    /// Runs `sql` (statements separated by `;`).
    async fn execute(&mut self, sql: &'static str) {
        match self {
            MirrorConnection::Sqlite(c) => sqlx::raw_sql(sql).execute(&mut **c).await.map(drop),
            MirrorConnection::Postgres(c) => sqlx::raw_sql(sql).execute(&mut **c).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// A full disk fails the cycle cleanly while the daemon keeps running; once space returns
/// it catches up, and the database stays intact.
async fn a_full_disk_fails_cleanly_and_the_daemon_catches_up(backend: Backend) {
    let site = Site::start_on(backend, sim_options(43, 120), SiteOptions::default()).await;
    let mut config = Config::load(&site.config).unwrap();
    let store = nearly_full(backend, &mut config).await;
    // Assembled by hand: the engine must write through this store, whose page limit
    // stands for the full disk on SQLite (`App::build` would open a store of its own).
    let engine = Engine::new(store.clone(), &config.http, &config.sources).unwrap();
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn({
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        async move { engine.run(shutdown).await }
    });

    let deadline = tokio::time::Instant::now() + PATIENCE;
    let full = loop {
        let errors: Vec<String> = engine
            .sources()
            .iter()
            .filter_map(|s| s.progress.state().last_error)
            .collect();
        if let Some(e) = errors.iter().find(|e| e.contains("full")) {
            break e.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the disk never filled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(full.contains("database is full"), "{full}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!daemon.is_finished(), "the daemon keeps running");
    assert!(engine.sources().iter().all(|s| !s.progress.state().stopped));
    store.integrity_check().await.unwrap();

    free_space(backend, &store).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let caught_up = engine.sources().iter().all(|s| {
            let state = s.progress.state();
            state.last_error.is_none() && state.last_success_at.is_some()
        });
        if caught_up && site.truth().differences(&store).await.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let states: Vec<_> = engine
                .sources()
                .iter()
                .map(|s| (s.name.clone(), s.progress.state().last_error))
                .collect();
            let diff = site.truth().differences(&store).await;
            panic!(
                "the daemon never caught up after space returned: {states:?}\n{}",
                diff.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
    store.integrity_check().await.unwrap();
    store.close().await;
    site.assert_integrity().await;
}

/// The site's store, migrated, on a disk that fills after a few pages. SQLite: one
/// connection whose database may grow by only four pages (its page limit, a full disk
/// that is real to SQLite). PostgreSQL: once the mirror holds 40 conversations, every new
/// row fails its transaction with the server's own `disk_full` (SQLSTATE 53100), which is
/// what PostgreSQL raises when it cannot extend a table's file.
async fn nearly_full(backend: Backend, config: &mut Config) -> Store {
    match backend {
        Backend::Sqlite => nearly_full_store(config, 4).await,
        Backend::Postgres => {
            let store = Store::open(&config.store).await.unwrap();
            store
                .sql_execute(
                    "CREATE FUNCTION test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN
                         IF (SELECT COUNT(*) FROM conversations) >= 40 THEN
                             RAISE EXCEPTION 'could not extend file: No space left on device'
                                 USING ERRCODE = 'disk_full';
                         END IF;
                         RETURN NEW;
                     END $$",
                )
                .await;
            store
                .sql_execute(
                    "CREATE TRIGGER test_disk_full BEFORE INSERT ON conversations
                     FOR EACH ROW EXECUTE FUNCTION test_disk_full()",
                )
                .await;
            store
        }
    }
}

/// Space returns to the disk [`nearly_full`] filled.
async fn free_space(backend: Backend, store: &Store) {
    let sql = match backend {
        Backend::Sqlite => "PRAGMA max_page_count = 1073741823",
        Backend::Postgres => "DROP TRIGGER test_disk_full ON conversations",
    };
    store.sql_execute(sql).await;
}

/// PostgreSQL only (a SQLite file has no connection to lose): the server ending convsync's
/// connections while pages are being written (`pg_terminate_backend`, as an operator, a
/// failover or a restarted pooler does) rolls back at most the transactions in flight and
/// fails at most their cycles; the daemon keeps running, reconnects, catches up, and the
/// mirror ends equal to the truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_ended_by_the_server_mid_page_are_survived() {
    const KILLS: usize = 3;
    let site = Site::start_on(Backend::Postgres, sim_options(46, 150), small_pages()).await;
    site.sim.set_faults(PlatformSelector::All, latency(20, 60));
    let mut daemon = site.spawn_daemon_mid_sync().await;
    let pool = site.mirror().await;

    // Only backends inside a transaction: a page (or run, or cursor) being written. Until
    // one of them has failed a cycle, which the run log names.
    let mut killed = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while killed < KILLS || ended_cycles(&pool).await == 0 {
        let ended: Vec<bool> = pool
            .sql_column(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = 'convsync' AND datname = current_database()
                   AND xact_start IS NOT NULL AND pid <> pg_backend_pid()",
            )
            .await;
        killed += ended.into_iter().filter(|ended| *ended).count();
        assert!(daemon.is_running(), "the daemon died:\n{}", daemon.output());
        assert!(
            tokio::time::Instant::now() < deadline,
            "no transaction of convsync's to end"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after_kills: i64 = pool
        .sql_value("SELECT COALESCE(MAX(id), 0) FROM sync_runs")
        .await;

    wait_every_source_caught_up(&site, &pool, &mut daemon, after_kills).await;
    assert_eq!(daemon.sigterm().await.code(), Some(0));
    pool.close().await;

    site.sim
        .set_faults(PlatformSelector::All, Faults::default());
    site.sync_full().await;
    site.assert_converged().await;
}

/// Runs that failed because the server ended their connection.
async fn ended_cycles(pool: &MirrorPool) -> i64 {
    pool.sql_value(
        "SELECT COUNT(*) FROM sync_runs
         WHERE outcome = 'failed' AND error LIKE '%terminating connection%'",
    )
    .await
}

/// A database that belongs to something else, or was written by a newer convsync, is
/// refused with a clear message and left untouched.
async fn foreign_or_newer_databases_are_refused(backend: Backend) {
    let site = Site::start_on(backend, sim_options(44, 20), SiteOptions::default()).await;
    let foreign = match backend {
        Backend::Sqlite => {
            MirrorPool::Sqlite(crate::support::reliability::create_pool(&site.db_path()).await)
        }
        Backend::Postgres => site.mirror().await,
    };
    foreign
        .sql_execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        .await;
    foreign.close().await;
    let refused = site.run(&["sync", "--once"]).await;
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("is not a convsync database"),
        "{}",
        refused.tail()
    );
    assert!(!refused.stderr.contains("panicked"));
    let pool = site.mirror().await;
    let tables: Vec<String> = pool
        .sql_column(match backend {
            Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'",
            Backend::Postgres => {
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = 'public'"
            }
        })
        .await;
    assert_eq!(
        tables,
        ["invoices"],
        "the foreign database is left untouched"
    );
    pool.sql_execute("DROP TABLE invoices").await;

    assert!(site.run(&["migrate"]).await.status.success());
    pool.sql_execute(match backend {
        Backend::Sqlite => {
            "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time)
             VALUES (999999, 'from the future', CURRENT_TIMESTAMP, 1, x'00', 0)"
        }
        Backend::Postgres => {
            "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time)
             VALUES (999999, 'from the future', CURRENT_TIMESTAMP, true, '\\x00', 0)"
        }
    })
    .await;
    pool.close().await;
    for command in [&["sync", "--once"][..], &["migrate"], &["status"]] {
        let refused = site.run(command).await;
        assert!(!refused.status.success(), "{command:?}");
        assert!(
            refused
                .stderr
                .contains("newer than this convsync understands"),
            "{command:?}: {}",
            refused.tail()
        );
    }
}

/// The database file (and its WAL companions) are created readable by the owner only.
/// SQLite only: a PostgreSQL mirror has no file of convsync's (the server owns its files).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_file_is_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::start(sim_options(45, 20), SiteOptions::default()).await;
    site.sync_full().await;
    let db = site.db_path();
    let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", db.display());
    for companion in ["mirror.db-wal", "mirror.db-shm"] {
        let path = site.dir.path().join(companion);
        if let Ok(meta) = std::fs::metadata(&path) {
            assert_eq!(meta.permissions().mode() & 0o077, 0, "{}", path.display());
        }
    }
}

/// Who spoke last can come from outside a record's raw JSON (Sinch's recent listing reads
/// it from the last message): a re-listed conversation whose raw JSON did not change but
/// whose direction did is updated, not skipped as unchanged.
async fn reply_facts_outside_the_raw_json_are_not_skipped(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    let run = store.begin_run("s").await.unwrap();
    let raw = serde_json::value::RawValue::from_string(r#"{"id":"c1"}"#.into()).unwrap();
    let at = Timestamp::now();
    let page = |direction: Direction| {
        let mut record = ConversationRecord::new("c1", raw.clone());
        record.last_activity_at = Some(at);
        record.set_last_message(direction, Some(at));
        record
    };
    let cursor = WalkCursor::default().to_state().unwrap();
    let write = |records: Vec<ConversationRecord>| {
        let store = store.clone();
        let cursor = cursor.clone();
        async move {
            store
                .apply_page(&delta_page(run, &records), &cursor)
                .await
                .unwrap()
        }
    };
    assert_eq!(write(vec![page(Direction::Inbound)]).await.inserted, 1);
    assert_eq!(write(vec![page(Direction::Inbound)]).await.unchanged, 1);

    let counts = write(vec![page(Direction::Outbound)]).await;

    assert_eq!(counts.updated, 1, "{counts:?}");
    let rows: Vec<(String, bool)> = store
        .sql_rows(
            "SELECT last_message_direction, awaiting_reply FROM conversations
             WHERE conversation_id = 'c1'",
        )
        .await;
    assert_eq!(rows, [("outbound".to_owned(), false)]);
}

/// A delta's pages applied in one transaction insert their new rows in one pass and
/// compare the rest with the mirror in page order: a row mirrored before is updated or
/// left alone, and a row that is new on one page and listed again, changed, on a later
/// page ends with the later content.
async fn pages_applied_together_insert_first_then_compare_in_page_order(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    let run = store.begin_run("s").await.unwrap();
    let record = |id: &str, content: &str| {
        let raw = format!(r#"{{"id":"{id}","v":"{content}"}}"#);
        ConversationRecord::new(id, serde_json::value::RawValue::from_string(raw).unwrap())
    };
    let cursor: CursorState = WalkCursor::default().to_state().unwrap();
    let page = |records: &'static [ConversationRecord]| delta_page(run, records);
    let before: &'static [ConversationRecord] = Vec::leak(vec![record("b", "1"), record("c", "1")]);
    store.apply_page(&page(before), &cursor).await.unwrap();

    let first: &'static [ConversationRecord] =
        Vec::leak(vec![record("a", "1"), record("b", "2"), record("c", "1")]);
    let second: &'static [ConversationRecord] = Vec::leak(vec![record("a", "2"), record("d", "1")]);
    let counts = store
        .apply_pages(&[page(first), page(second)], &cursor)
        .await
        .unwrap();

    let summary: Vec<(u64, u64, u64)> = counts
        .iter()
        .map(|c| (c.inserted, c.updated, c.unchanged))
        .collect();
    assert_eq!(summary, [(1, 1, 1), (1, 1, 0)]);
    let rows: Vec<(String, String)> = store
        .sql_rows::<(String, String)>(
            "SELECT conversation_id, CAST(raw AS TEXT) FROM conversations
             ORDER BY conversation_id",
        )
        .await
        .into_iter()
        .map(|(id, raw)| {
            let raw: serde_json::Value = serde_json::from_str(&raw).unwrap();
            (id, raw["v"].as_str().unwrap().to_owned())
        })
        .collect();
    let expected = [("a", "2"), ("b", "2"), ("c", "1"), ("d", "1")];
    assert_eq!(
        rows,
        expected.map(|(id, v)| (id.to_owned(), v.to_owned())),
        "one row per conversation, with its latest content"
    );
}

/// A page of source `s`'s delta walk `recent`, written by run `run_id`.
fn delta_page(run_id: i64, records: &[ConversationRecord]) -> PageWrite<'_> {
    PageWrite {
        source: "s",
        provider: "sinch",
        account: "a",
        walk: "recent",
        run_id,
        records,
        rejected: &[],
        follow_ups: &[],
        touch_seen_before: None,
        insert_first: true,
    }
}

on_both_stores!(
    multi_thread: a_long_report_read_does_not_stop_syncing,
    another_writer_holding_the_lock_makes_the_cycle_wait,
    a_full_disk_fails_cleanly_and_the_daemon_catches_up,
    foreign_or_newer_databases_are_refused,
    reply_facts_outside_the_raw_json_are_not_skipped,
    pages_applied_together_insert_first_then_compare_in_page_order,
);
