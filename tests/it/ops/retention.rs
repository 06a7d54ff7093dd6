//! `[retention]` and `convsync purge`, run as a user runs them, on a real mirror whose
//! timestamps the test sets: what ended long ago is redacted or deleted, what is open or
//! changed within the window is never touched, a dry run changes nothing, every applied
//! purge is recorded, and the daemon applies the same policy on its own.

use std::time::Duration;

use convsync::time::Timestamp;
use convsync_sim::{Faults, PlatformSelector};
use sqlx::SqlitePool;

use crate::support::reliability::{PATIENCE, Site, SiteOptions, sim_options};

const DAY: Duration = Duration::from_secs(86_400);

const RETENTION: &str = "\n[retention]\nredact_closed_after = \"30days\"\n\
    delete_closed_after = \"365days\"\nrejected_records_after = \"30days\"\n\
    sync_runs_after = \"30days\"\n";

fn days_ago(days: u64) -> String {
    Timestamp::now()
        .saturating_sub(DAY * days as u32)
        .to_string()
}

/// The conversations the test gave a role, in the order of [`shape_history`].
struct Shaped {
    source: String,
    ids: Vec<String>,
}

/// Gives five conversations of one source a history: closed 40 days ago (redact), closed
/// 400 days ago with a queued follow-up (delete), deleted at the provider 40 days ago
/// (redact), closed 40 days ago but changed yesterday (keep), open with year-old
/// timestamps (keep). Adds one old and one new rejected record and three old runs.
async fn shape_history(pool: &SqlitePool) -> Shaped {
    let (source,): (String,) = sqlx::query_as(
        "SELECT source FROM conversations GROUP BY source HAVING COUNT(*) >= 5 ORDER BY source LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT conversation_id FROM conversations WHERE source = ? ORDER BY conversation_id LIMIT 5",
    )
    .bind(&source)
    .fetch_all(pool)
    .await
    .unwrap();
    let rows = [
        (Some(0), Some(days_ago(40)), None, days_ago(40)),
        (Some(0), Some(days_ago(400)), None, days_ago(400)),
        (Some(1), None, Some(days_ago(40)), days_ago(40)),
        (Some(0), Some(days_ago(40)), None, days_ago(1)),
        (Some(1), None, None, days_ago(400)),
    ];
    for (id, (active, closed, deleted, changed)) in ids.iter().zip(rows) {
        sqlx::query(
            "UPDATE conversations SET active = ?, closed_at = ?, deleted_at = ?, last_changed_at = ?, \
             contact_name = 'Pat Example', contact_phone = '+15550100' WHERE source = ? AND conversation_id = ?",
        )
        .bind(active)
        .bind(closed)
        .bind(deleted)
        .bind(changed)
        .bind(&source)
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO follow_ups (source, conversation_id, kind, queued_at) VALUES (?, ?, 'messages', ?)",
    )
    .bind(&source)
    .bind(&ids[1])
    .bind(days_ago(400))
    .execute(pool)
    .await
    .unwrap();
    for (at, raw) in [(days_ago(100), "old"), (days_ago(1), "new")] {
        sqlx::query(
            "INSERT INTO rejected_records (source, walk, reason, raw, rejected_at) VALUES (?, 'delta', 'test', ?, ?)",
        )
        .bind(&source)
        .bind(raw)
        .bind(at)
        .execute(pool)
        .await
        .unwrap();
    }
    for id in [-3, -2, -1] {
        sqlx::query(
            "INSERT INTO sync_runs (id, source, started_at, finished_at, outcome) VALUES (?, ?, ?, ?, 'caught_up')",
        )
        .bind(id)
        .bind(&source)
        .bind(days_ago(100))
        .bind(days_ago(100))
        .execute(pool)
        .await
        .unwrap();
    }
    Shaped { source, ids }
}

/// [`redaction_states`] of the shaped conversations after a purge: redacted, deleted,
/// redacted, kept (changed within the window), kept (open).
const AFTER_PURGE: [Option<(bool, bool)>; 5] = [
    Some((true, true)),
    None,
    Some((true, true)),
    Some((false, false)),
    Some((false, false)),
];

/// (raw is "{}", contact_name is NULL) of each shaped conversation; `None` when removed.
async fn redaction_states(pool: &SqlitePool, shaped: &Shaped) -> Vec<Option<(bool, bool)>> {
    let mut states = Vec::new();
    for id in &shaped.ids {
        let row: Option<(bool, bool)> = sqlx::query_as(
            "SELECT raw = '{}', contact_name IS NULL FROM conversations WHERE source = ? AND conversation_id = ?",
        )
        .bind(&shaped.source)
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap();
        states.push(row);
    }
    states
}

async fn count(pool: &SqlitePool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// A site of twelve conversations (from `seed`), synced, with
/// [`shape_history`] applied to its mirror.
async fn synced_with_history(seed: u64) -> (Site, SqlitePool, Shaped) {
    let site = Site::start(sim_options(seed, 12), SiteOptions::default()).await;
    site.sync_full().await;
    let pool = site.pool().await;
    let shaped = shape_history(&pool).await;
    (site, pool, shaped)
}

fn add_retention(site: &Site, text: &str) {
    let mut config = std::fs::read_to_string(&site.config).unwrap();
    config.push_str(text);
    std::fs::write(&site.config, config).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_dry_run_then_apply_touches_only_what_ended_long_ago() {
    let (site, pool, shaped) = synced_with_history(0x9E7A).await;
    let untouched = vec![Some((false, false)); 5];
    assert_eq!(redaction_states(&pool, &shaped).await, untouched);

    let nothing = site.run(&["purge", "--dry-run"]).await;
    assert!(nothing.status.success(), "{}", nothing.tail());
    assert!(
        nothing.stdout.contains("everything is kept"),
        "{}",
        nothing.stdout
    );

    add_retention(&site, RETENTION);
    let dry = site.run(&["purge", "--dry-run"]).await;
    assert!(dry.status.success(), "{}", dry.tail());
    let expected = "2 conversation(s) redacted, 1 conversation(s) deleted, 1 rejected record(s), 3 sync run(s)";
    assert_eq!(
        dry.stdout.trim(),
        format!("{}: would purge (dry run): {expected}", shaped.source)
    );
    assert_eq!(
        redaction_states(&pool, &shaped).await,
        untouched,
        "a dry run changes nothing"
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM retention_purges").await,
        0
    );

    let applied = site.run(&["purge", "--apply"]).await;
    assert!(applied.status.success(), "{}", applied.tail());
    assert_eq!(
        applied.stdout.trim(),
        format!("{}: purged: {expected}", shaped.source)
    );
    assert_eq!(redaction_states(&pool, &shaped).await, AFTER_PURGE);
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM follow_ups WHERE queued_at < '2025'"
        )
        .await,
        0
    );
    assert_eq!(
        sqlx::query_scalar::<_, String>("SELECT raw FROM rejected_records")
            .fetch_all(&pool)
            .await
            .unwrap(),
        vec!["new".to_owned()]
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM sync_runs WHERE id < 0").await,
        0
    );
    assert!(count(&pool, "SELECT COUNT(*) FROM sync_runs").await > 0);
    let recorded: (String, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT source, conversations_redacted, conversations_deleted, rejected_records_deleted, sync_runs_deleted FROM retention_purges",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(recorded, (shaped.source.clone(), 2, 1, 1, 3));

    let again = site.run(&["purge", "--apply"]).await;
    assert!(again.status.success(), "{}", again.tail());
    assert_eq!(again.stdout.trim(), "nothing to purge");
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM retention_purges").await,
        1
    );

    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_applies_retention_and_records_it() {
    let (site, pool, shaped) = synced_with_history(0x9E7B).await;
    add_retention(&site, &format!("{RETENTION}interval = \"1h\"\n"));
    // Every provider answers 503, so the daemon's cycles cannot rewrite the rows shaped
    // above: what changes them is retention alone.
    site.sim.set_faults(
        PlatformSelector::All,
        Faults {
            error_5xx_ratio: 1.0,
            ..Faults::default()
        },
    );
    let mut daemon = site.spawn_daemon();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while count(&pool, "SELECT COUNT(*) FROM retention_purges").await == 0 {
        assert!(daemon.is_running(), "daemon died:\n{}", daemon.output());
        assert!(
            tokio::time::Instant::now() < deadline,
            "no purge was recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output_log = daemon.log.clone();
    assert_eq!(daemon.sigterm().await.code(), Some(0));
    let states = redaction_states(&pool, &shaped).await;
    assert_eq!(states, AFTER_PURGE);
    let output = std::fs::read_to_string(output_log).unwrap();
    assert!(
        output.contains("retention purge applied") && output.contains(&shaped.source),
        "{output}"
    );
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_retention_is_refused_naming_the_key() {
    let site = Site::start(sim_options(0x9E7C, 2), SiteOptions::default()).await;
    add_retention(&site, "\n[retention]\ndelete_closed_after = \"0s\"\n");
    for command in [&["check-config"][..], &["purge", "--apply"]] {
        let done = site.run(command).await;
        assert!(!done.status.success());
        assert!(
            done.stderr.contains("retention.delete_closed_after"),
            "{}",
            done.stderr
        );
    }
}
