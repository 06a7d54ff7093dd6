//! Database faults: a long report read (WAL), another process holding the write lock, a
//! full disk (SQLite's page limit), files that are not convsync databases or have a newer
//! schema, the file's permissions, and rows whose reply facts live outside their raw JSON.

use std::time::Duration;

use convsync::config::Config;
use convsync::provider::{ConversationRecord, Direction};
use convsync::store::{CursorState, PageWrite};
use convsync::sync::Engine;
use convsync::sync::WalkCursor;
use convsync::time::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::support::StorePool;
use crate::support::TestDb;
use crate::support::reliability::{
    PATIENCE, Site, SiteOptions, nearly_full_store, run_outcomes, sim_options, small_pages,
};

/// A report holding a read transaction open for the whole sync does not stop it (WAL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_report_read_does_not_stop_syncing() {
    let site = Site::start(sim_options(41, 60), SiteOptions::default()).await;
    assert!(site.run(&["migrate"]).await.status.success());
    let pool = site.pool().await;
    let mut report = pool.begin().await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM conversations")
        .fetch_one(&mut *report)
        .await
        .unwrap();

    site.sync_full().await;

    site.assert_mirror_matches_truth().await;
    report.rollback().await.unwrap();
    pool.close().await;
}

/// Another process holding the write lock longer than the busy timeout makes the cycle
/// wait and try again: the sync succeeds, no run fails, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_writer_holding_the_lock_makes_the_cycle_wait() {
    let site = Site::start(
        sim_options(42, 150),
        SiteOptions {
            busy_timeout: "200ms",
            ..small_pages()
        },
    )
    .await;
    assert!(site.run(&["migrate"]).await.status.success());
    let pool = site.pool().await;
    // The lock is taken before the sync starts, so the sync meets it however fast it runs
    // (waiting for its first page instead raced with a sync that finished first).
    let mut writer = pool.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *writer)
        .await
        .unwrap();
    let hold_lock = async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        sqlx::query("COMMIT").execute(&mut *writer).await.unwrap();
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

/// A full disk (SQLite's page limit) fails the cycle cleanly while the daemon keeps
/// running; once space returns it catches up, and the file stays intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_cleanly_and_the_daemon_catches_up() {
    let site = Site::start(sim_options(43, 120), SiteOptions::default()).await;
    let mut config = Config::load(&site.config).unwrap();
    let store = nearly_full_store(&mut config, 4).await;
    // Assembled by hand: the engine must write through this store, whose page limit
    // stands for the full disk (`App::build` would open a store of its own).
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

    sqlx::query("PRAGMA max_page_count = 1073741823")
        .execute(store.pool())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let caught_up = engine.sources().iter().all(|s| {
            let state = s.progress.state();
            state.last_error.is_none() && state.last_success_at.is_some()
        });
        if caught_up && site.truth().differences(store.pool()).await.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let states: Vec<_> = engine
                .sources()
                .iter()
                .map(|s| (s.name.clone(), s.progress.state().last_error))
                .collect();
            let diff = site.truth().differences(store.pool()).await;
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
}

/// A database that belongs to something else, or was written by a newer convsync, is
/// refused with a clear message and left untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_or_newer_databases_are_refused() {
    let site = Site::start(sim_options(44, 20), SiteOptions::default()).await;
    {
        let foreign = crate::support::reliability::create_pool(&site.db_path()).await;
        sqlx::query("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
            .execute(&foreign)
            .await
            .unwrap();
        foreign.close().await;
    }
    let refused = site.run(&["sync", "--once"]).await;
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("is not a convsync database"),
        "{}",
        refused.tail()
    );
    assert!(!refused.stderr.contains("panicked"));
    let pool = site.pool().await;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(tables, ["invoices"], "the foreign file is left untouched");
    pool.close().await;

    std::fs::remove_file(site.db_path()).unwrap();
    assert!(site.run(&["migrate"]).await.status.success());
    let pool = site.pool().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time)
         VALUES (999999, 'from the future', CURRENT_TIMESTAMP, 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
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
#[tokio::test]
async fn reply_facts_outside_the_raw_json_are_not_skipped() {
    let db = TestDb::new();
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
    let (direction, awaiting): (String, bool) = sqlx::query_as(
        "SELECT last_message_direction, awaiting_reply FROM conversations WHERE conversation_id = 'c1'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!((direction.as_str(), awaiting), ("outbound", false));
}

/// A delta's pages applied in one transaction insert their new rows in one pass and
/// compare the rest with the mirror in page order: a row mirrored before is updated or
/// left alone, and a row that is new on one page and listed again, changed, on a later
/// page ends with the later content.
#[tokio::test]
async fn pages_applied_together_insert_first_then_compare_in_page_order() {
    let db = TestDb::new();
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
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT conversation_id, raw ->> '$.v' FROM conversations ORDER BY conversation_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
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
