//! A hostile host (issue #16, items 7–13): idle sockets on the health port, the same bad
//! item on every cycle, a foreign SQLite file, another writer's lock at start-up, a second
//! daemon on the same database, a database file others can read, and a full disk behind a
//! `/readyz` that must say so.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use convsync::config::Config;
use convsync::health::{HealthApp, Liveness};
use convsync::provider::RejectedRecord;
use convsync::store::{CursorState, PageWrite, RunOutcome, RunReport, Store};
use convsync::sync::Engine;
use convsync::sync::WalkCursor;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::support::StorePool;
use crate::support::TestDb;
use crate::support::reliability::{
    BINARY, PATIENCE, Site, SiteOptions, nearly_full_store, sim_options,
};

/// Idle sockets on the health port: this many, more than a default descriptor limit.
const IDLE_SOCKETS: usize = 1100;

/// The daemon's descriptor limit in the idle-socket test, far below [`IDLE_SOCKETS`].
const DAEMON_FD_LIMIT: u32 = 256;

/// 1,100 idle sockets on the health port neither exhaust the daemon's file descriptors nor
/// starve its provider requests, and a socket that sends nothing is closed by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_health_sockets_are_bounded_and_closed() {
    let site = Site::start(sim_options(71, 20), SiteOptions::default()).await;
    append_to_section(
        &site,
        "[health]\n",
        "read_timeout = \"1s\"\nmax_connections = 16\n",
    );
    assert!(site.run(&["migrate"]).await.status.success());
    let log = site.dir.path().join("logs").join("limited-daemon.log");
    let file = std::fs::File::create(&log).unwrap();
    // The daemon under a descriptor limit far below the number of idle sockets.
    let mut daemon = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {DAEMON_FD_LIMIT} && exec \"$0\" \"$@\""))
        .arg(BINARY)
        .args(["run", "--config"])
        .arg(&site.config)
        .env("RUST_LOG", "debug")
        .env_remove("CONVSYNC_CONFIG")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pool = site.pool().await;
    wait_for_caught_up_runs(&pool, 0, source_count(&site)).await;
    // Sources that poll often enough to run again while the sockets are held.
    let frequent = Config::load(&site.config)
        .unwrap()
        .sources
        .iter()
        .filter(|s| s.schedule.poll_interval <= Duration::from_secs(60))
        .count() as i64;
    assert!(frequent > 0);
    let before_flood: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM sync_runs")
        .fetch_one(&pool)
        .await
        .unwrap();

    let mut held = TcpStream::connect(&site.health).await.unwrap();
    let flood: Vec<TcpStream> = futures::future::join_all((0..IDLE_SOCKETS).map(|_| {
        let addr = site.health.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                .await
                .ok()
                .and_then(Result::ok)
        }
    }))
    .await
    .into_iter()
    .flatten()
    .collect();
    assert!(!flood.is_empty(), "no idle socket could connect");

    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(PATIENCE, held.read(&mut buf))
        .await
        .expect("the server never closed a socket that sent nothing");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "an idle socket got an answer: {read:?}"
    );
    // Every frequently polled source completes a cycle that started after the flood.
    if !caught_up_runs(&pool, before_flood, frequent).await {
        let runs: Vec<(String, String)> =
            sqlx::query_as("SELECT source, outcome FROM sync_runs WHERE id > ? ORDER BY id")
                .bind(before_flood)
                .fetch_all(&pool)
                .await
                .unwrap();
        panic!("not every source caught up after the flood: {runs:?}");
    }
    assert!(daemon.try_wait().unwrap().is_none(), "the daemon died");
    drop(flood);
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(
        !output.contains("Too many open files"),
        "the daemon ran out of file descriptors"
    );
    let failed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sync_runs WHERE outcome = 'failed' AND id > ?")
            .bind(before_flood)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(failed, 0, "a cycle failed during the flood");
    pool.close().await;
}

/// The same bad item read on every walk of every cycle is one row with a count and the
/// time it was last seen; another walk's sighting is its own row.
#[tokio::test]
async fn a_rejected_item_is_recorded_once_with_a_count() {
    let db = TestDb::new();
    let store = db.open().await;
    let bad = [RejectedRecord {
        reason: "no id".into(),
        raw: r#"{"name":"no id here"}"#.into(),
    }];
    for _ in 0..4 {
        let run = store.begin_run("s").await.unwrap();
        for walk in ["recent", "recent", "sweep"] {
            store
                .apply_page(&rejected_page(run, walk, &bad), &no_cursor())
                .await
                .unwrap();
        }
        finish(&store, run).await;
    }

    let rows: Vec<(String, i64, String, String)> = sqlx::query_as(
        "SELECT walk, times_seen, rejected_at, last_seen_at FROM rejected_records ORDER BY walk",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let counts: Vec<(&str, i64)> = rows.iter().map(|r| (r.0.as_str(), r.1)).collect();
    assert_eq!(counts, [("recent", 8), ("sweep", 4)]);
    assert!(rows.iter().all(|r| r.2 <= r.3), "{rows:?}");
}

/// Rejected items not seen for `rejected_records_retention` are removed when a run of
/// their source ends; recent ones and other sources' stay.
#[tokio::test]
async fn rejected_items_older_than_the_retention_are_removed() {
    let mut db = TestDb::new();
    db.settings.rejected_records_retention = Duration::from_secs(24 * 3600);
    let store = db.open().await;
    let item = |name: &str| RejectedRecord {
        reason: "no id".into(),
        raw: format!(r#"{{"name":"{name}"}}"#),
    };
    let run = store.begin_run("s").await.unwrap();
    let items = [item("old"), item("recent")];
    store
        .apply_page(&rejected_page(run, "recent", &items), &no_cursor())
        .await
        .unwrap();
    let other = store.begin_run("t").await.unwrap();
    let mut other_page = rejected_page(other, "recent", &items[..1]);
    other_page.source = "t";
    store.apply_page(&other_page, &no_cursor()).await.unwrap();
    sqlx::query(
        "UPDATE rejected_records SET last_seen_at = '2020-01-01T00:00:00.000000Z'
         WHERE raw LIKE '%old%'",
    )
    .execute(store.pool())
    .await
    .unwrap();

    finish(&store, run).await;

    let left: Vec<(String, String)> =
        sqlx::query_as("SELECT source, raw FROM rejected_records ORDER BY source, raw")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let expected = [("s", r#"{"name":"recent"}"#), ("t", r#"{"name":"old"}"#)];
    assert_eq!(left, expected.map(|(s, r)| (s.to_owned(), r.to_owned())));
}

/// A foreign SQLite file is refused before anything writes to it: every byte is the same
/// afterwards, and no journal file appears beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_foreign_file_keeps_every_byte() {
    let site = Site::start(sim_options(72, 5), SiteOptions::default()).await;
    let db = site.db_path();
    {
        let foreign = crate::support::reliability::create_pool(&db).await;
        sqlx::query("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
            .execute(&foreign)
            .await
            .unwrap();
        sqlx::query("INSERT INTO invoices (total) VALUES (12.5)")
            .execute(&foreign)
            .await
            .unwrap();
        foreign.close().await;
    }
    let before = blake3::hash(&std::fs::read(&db).unwrap());

    for command in [&["sync", "--once"][..], &["migrate"], &["status"]] {
        let refused = site.run(command).await;
        assert!(!refused.status.success(), "{command:?}");
        assert!(
            refused.stderr.contains("is not a convsync database"),
            "{command:?}: {}",
            refused.tail()
        );
    }

    assert_eq!(blake3::hash(&std::fs::read(&db).unwrap()), before);
    for companion in ["mirror.db-wal", "mirror.db-shm", "mirror.db-journal"] {
        assert!(
            !site.dir.path().join(companion).exists(),
            "{companion} was created"
        );
    }
}

/// Another process holding the write lock when `sync --once` or `reset` starts is waited
/// out (logged) instead of failing the start after the busy timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_at_start_up_is_waited_out() {
    let site = Site::start(
        sim_options(73, 10),
        SiteOptions {
            busy_timeout: "200ms",
            ..SiteOptions::default()
        },
    )
    .await;
    assert!(site.run(&["migrate"]).await.status.success());
    let source = Config::load(&site.config).unwrap().sources[0].name.clone();
    let pool = site.pool().await;
    for command in [&["sync", "--once"][..], &["reset", "--source", &source]] {
        let mut writer = pool.acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *writer)
            .await
            .unwrap();
        let log = site
            .dir
            .path()
            .join("logs")
            .join(format!("locked-{}.log", command[0]));
        let file = std::fs::File::create(&log).unwrap();
        let mut child = site
            .command(command)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();

        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let output = std::fs::read_to_string(&log).unwrap();
            if output.contains("the database is locked by another process") {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{command:?} ended ({status}) instead of waiting:\n{output}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{command:?}: no wait logged"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sqlx::query("COMMIT").execute(&mut *writer).await.unwrap();
        drop(writer);

        let status = tokio::time::timeout(PATIENCE, child.wait())
            .await
            .expect("the command finishes")
            .unwrap();
        let output = std::fs::read_to_string(&log).unwrap();
        assert!(status.success(), "{command:?}: {output}");
    }
    pool.close().await;
}

/// A second `convsync run` or `sync --once` on a database a daemon syncs is refused with
/// the holder's pid, host and start time; `status` and `migrate` still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_database_is_refused() {
    let site = Site::start(sim_options(74, 10), SiteOptions::default()).await;
    let daemon = site.spawn_daemon();
    let pid = daemon.id();
    let lock = site.dir.path().join("mirror.db.lock");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("running since")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the daemon never took the lock: {}",
            daemon.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();

    for command in [&["run"][..], &["sync", "--once"]] {
        let refused = site.run(command).await;
        assert!(!refused.status.success(), "{command:?}");
        let expected =
            format!("in use by another convsync (pid {pid} on host {host}, running since ");
        assert!(
            refused.stderr.contains(&expected),
            "{command:?}: {}",
            refused.tail()
        );
    }
    for command in [&["status"][..], &["migrate"]] {
        let done = site.run(command).await;
        assert!(done.status.success(), "{command:?}: {}", done.tail());
    }
    let log = daemon.log_path();
    let stopped = daemon.sigterm().await;
    assert!(
        stopped.success(),
        "{stopped:?}: {}",
        String::from_utf8_lossy(&std::fs::read(log).unwrap())
    );
    site.sync_full().await;
}

/// A database file others can read is reported, and its WAL and SHM files are owner-only
/// anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn companions_are_owner_only_when_the_database_file_is_not() {
    let site = Site::start(sim_options(75, 10), SiteOptions::default()).await;
    assert!(site.run(&["migrate"]).await.status.success());
    let db = site.db_path();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let daemon = site.spawn_daemon();
    let pool = site.pool().await;
    wait_for_caught_up_runs(&pool, 0, source_count(&site)).await;

    for companion in ["mirror.db-wal", "mirror.db-shm"] {
        let path = site.dir.path().join(companion);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let output = daemon.output();
    assert!(
        output.contains("the database file can be read by other users"),
        "{output}"
    );
    pool.close().await;
    assert!(daemon.sigterm().await.success());
}

/// `/readyz` reports the database unwritable when the last write of mirror data met a
/// full database (SQLite's page limit), although the lock probe still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_the_last_write_meeting_a_full_disk() {
    let site = Site::start(sim_options(76, 60), SiteOptions::default()).await;
    let mut config = Config::load(&site.config).unwrap();
    let store = nearly_full_store(&mut config, 2).await;
    // Assembled by hand: the engine must write through this store, whose page limit
    // stands for the full disk (`App::build` would open a store of its own).
    let engine = Engine::new(store.clone(), &config.http, &config.sources).unwrap();
    let app = HealthApp::new(&engine, 3.0, std::sync::Arc::new(Liveness::default()));

    let results = engine
        .sync_once(None, Default::default(), CancellationToken::new())
        .await
        .unwrap();
    assert!(
        results
            .iter()
            .any(|r| format!("{:?}", r.outcome).contains("Full")),
        "no write met the full database: {results:?}"
    );

    let readiness = app.readiness().await;
    assert!(!readiness.ready);
    assert!(!readiness.database.writable);
    let reason = readiness.database.reason.unwrap_or_default();
    assert!(reason.contains("database is full"), "{reason}");
    store.close().await;
}

/// Records run `run` as caught up.
async fn finish(store: &Store, run: i64) {
    store
        .finish_run(run, RunOutcome::CaughtUp, &RunReport::default())
        .await
        .unwrap();
}

/// A page of source `s` carrying only rejected items.
fn rejected_page<'a>(run_id: i64, walk: &'a str, rejected: &'a [RejectedRecord]) -> PageWrite<'a> {
    PageWrite {
        source: "s",
        provider: "sinch",
        account: "a",
        walk,
        run_id,
        records: &[],
        rejected,
        follow_ups: &[],
        touch_seen_before: None,
        insert_first: true,
    }
}

/// The cursor of a walk that has not run.
fn no_cursor() -> CursorState {
    WalkCursor::default().to_state().unwrap()
}

/// Adds `lines` at the start of `section` in the site's configuration.
fn append_to_section(site: &Site, section: &str, lines: &str) {
    let text = std::fs::read_to_string(&site.config).unwrap();
    assert!(text.contains(section));
    std::fs::write(
        &site.config,
        text.replacen(section, &format!("{section}{lines}"), 1),
    )
    .unwrap();
}

/// Enabled sources in the site's configuration.
fn source_count(site: &Site) -> i64 {
    Config::load(&site.config).unwrap().sources.len() as i64
}

/// Waits until every source has a caught-up run with an id above `after`.
async fn wait_for_caught_up_runs(pool: &sqlx::SqlitePool, after: i64, sources: i64) {
    assert!(
        caught_up_runs(pool, after, sources).await,
        "not every source caught up after run {after}"
    );
}

/// Whether every source gets a caught-up run with an id above `after` (waiting up to
/// [`PATIENCE`]).
async fn caught_up_runs(pool: &sqlx::SqlitePool, after: i64, sources: i64) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT source) FROM sync_runs WHERE outcome = 'caught_up' AND id > ?",
        )
        .bind(after)
        .fetch_one(pool)
        .await
        .unwrap();
        if done >= sources {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
