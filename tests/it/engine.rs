//! The engine over the provider-shaped test double: deltas, checkpoints, retries, overlap.

use std::time::{Duration, Instant};

use convsync::sync::{CycleOptions, CycleOutcome, WalkCursor};
use convsync::time::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::support::TestDb;
use crate::support::app::Sweep;
use crate::support::double::{Conv, Double, Fault, spawn_double_app};
use crate::support::stores::{Backend, MirrorSql, on_both_stores};

fn conv(id: usize, at: Timestamp) -> Conv {
    Conv {
        id: format!("c{id:05}"),
        updated_at: at,
        name: format!("Contact {id}"),
        hidden: false,
    }
}

/// Conversations updated a minute apart, ending ten minutes ago (outside the lookback).
fn history(n: usize) -> Vec<Conv> {
    let end = Timestamp::now().saturating_sub(Duration::from_secs(600));
    (0..n)
        .map(|i| {
            conv(
                i,
                end.saturating_sub(Duration::from_secs(60 * (n - i) as u64)),
            )
        })
        .collect()
}

/// A delta cycle after the initial sync asks only for what changed since the watermark.
async fn delta_after_initial_sync_requests_only_changes(backend: Backend) {
    let double = Double::start().await;
    double.upsert(history(250));
    let db = TestDb::on(backend).await;
    let app = spawn_double_app(&double, &db, 100, false).await;

    assert!(matches!(
        app.sync_once(Sweep::IfDue).await,
        CycleOutcome::CaughtUp
    ));
    assert_eq!(double.list_requests().len(), 3, "250 rows at 100 per page");
    app.assert_mirror_matches_truth().await;

    // Nothing changed: one request, no writes.
    double.clear_requests();
    app.sync_once(Sweep::IfDue).await;
    assert_eq!(double.list_requests().len(), 1);
    assert!(double.list_requests()[0].contains("updated_since="));
    let run = app.last_run("double").await;
    assert_eq!((run.requests, run.inserted, run.updated), (1, 0, 0));

    // Five conversations change: still one page, five writes.
    let now = Timestamp::now();
    let changed: Vec<Conv> = double
        .truth()
        .into_iter()
        .take(5)
        .map(|mut c| {
            c.updated_at = now;
            c.name.push_str(" (edited)");
            c
        })
        .collect();
    double.upsert(changed);
    double.clear_requests();
    app.sync_once(Sweep::IfDue).await;
    assert_eq!(double.list_requests().len(), 1);
    let run = app.last_run("double").await;
    assert_eq!((run.inserted, run.updated), (0, 5));
    app.assert_mirror_matches_truth().await;
}

/// Rows re-read inside the overlap window cost no writes.
async fn unchanged_rows_in_the_overlap_are_not_rewritten(backend: Backend) {
    let double = Double::start().await;
    let now = Timestamp::now();
    // All rows inside the lookback window, so every delta re-reads them.
    double.upsert((0..30).map(|i| conv(i, now.saturating_sub(Duration::from_secs(30 - i as u64)))));
    let db = TestDb::on(backend).await;
    let app = spawn_double_app(&double, &db, 50, false).await;
    app.sync_once(Sweep::IfDue).await;
    let changed_at = || {
        app.store().sql_column::<String>(
            "SELECT CAST(last_changed_at AS TEXT) FROM conversations ORDER BY conversation_id",
        )
    };
    let before = changed_at().await;

    app.sync_once(Sweep::IfDue).await;
    let run = app.last_run("double").await;
    assert_eq!((run.inserted, run.updated, run.unchanged), (0, 0, 30));
    assert_eq!(before, changed_at().await);
}

/// A sync aborted between pages resumes from its checkpoint and ends equal to the source,
/// with nothing lost and nothing duplicated.
async fn abort_between_pages_then_restart_loses_nothing(backend: Backend) {
    let double = Double::start().await;
    double.upsert(history(500));
    let db = TestDb::on(backend).await;

    // Five pages are served, then the sixth request hangs: the abort lands mid-walk.
    double.push_faults([
        Fault::Pass,
        Fault::Pass,
        Fault::Pass,
        Fault::Pass,
        Fault::Pass,
        Fault::Hang,
    ]);
    let first = spawn_double_app(&double, &db, 20, false).await;
    let task = {
        let engine = first.engine().clone();
        tokio::spawn(async move {
            engine
                .sync_once(None, CycleOptions::default(), CancellationToken::new())
                .await
        })
    };
    while double.list_requests().len() < 6 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The writer commits the pages received while the next fetch hangs; a sixth page can
    // never arrive, so the count settles at five pages.
    let committed = || async {
        first
            .store()
            .sql_value::<i64>("SELECT COUNT(*) FROM conversations")
            .await
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while committed().await < 100 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    let _ = task.await;
    assert_eq!(
        committed().await,
        100,
        "the five pages received were committed before the abort, and nothing more"
    );
    let cursor: String = first
        .store()
        .sql_value(
            "SELECT state FROM cursors
             WHERE source = 'double'",
        )
        .await;
    assert!(
        cursor.contains("position"),
        "the walk position is checkpointed: {cursor}"
    );
    first.app.close().await;

    // Meanwhile the source changes: a new conversation and an edit.
    double.upsert([conv(9999, Timestamp::now())]);

    let second = spawn_double_app(&double, &db, 20, false).await;
    assert!(matches!(
        second.sync_once(Sweep::IfDue).await,
        CycleOutcome::CaughtUp
    ));
    second.assert_mirror_matches_truth().await;
    let duplicates: i64 = second
        .store()
        .sql_value(
            "SELECT COUNT(*) - COUNT(DISTINCT conversation_id)
             FROM conversations",
        )
        .await;
    assert_eq!(duplicates, 0);
    let interrupted: i64 = second
        .store()
        .sql_value(
            "SELECT COUNT(*) FROM sync_runs
             WHERE outcome = 'interrupted'",
        )
        .await;
    assert_eq!(interrupted, 1, "the aborted run is recorded as interrupted");
}

/// Server errors and connection resets are retried until the page succeeds.
async fn server_errors_and_resets_are_retried(backend: Backend) {
    let double = Double::start().await;
    double.upsert(history(10));
    double.push_faults([
        Fault::Status(500, r#"{"error":"boom"}"#.into(), vec![]),
        Fault::Reset,
        Fault::Status(503, "{}".into(), vec![]),
    ]);
    let db = TestDb::on(backend).await;
    let app = spawn_double_app(&double, &db, 100, false).await;
    assert!(matches!(
        app.sync_once(Sweep::IfDue).await,
        CycleOutcome::CaughtUp
    ));
    assert_eq!(
        double.list_requests().len(),
        4,
        "three failures, then success"
    );
    app.assert_mirror_matches_truth().await;
    let retries = app.engine().sources()[0]
        .client
        .tally()
        .retries
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(retries, 3);
}

/// A 429 with `Retry-After: 2` is retried no sooner than two seconds later.
async fn retry_after_is_honoured(backend: Backend) {
    let double = Double::start().await;
    double.upsert(history(3));
    double.push_faults([Fault::Status(
        429,
        r#"{"error":"slow down"}"#.into(),
        vec![("Retry-After".into(), "2".into())],
    )]);
    let db = TestDb::on(backend).await;
    let app = spawn_double_app(&double, &db, 100, false).await;
    let started = Instant::now();
    assert!(matches!(
        app.sync_once(Sweep::IfDue).await,
        CycleOutcome::CaughtUp
    ));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited only {:?}",
        started.elapsed()
    );
    assert_eq!(double.list_requests().len(), 2);
    app.assert_mirror_matches_truth().await;
}

/// A 400 is not retried; the cycle fails with the provider's message and writes nothing.
async fn bad_request_is_not_retried_and_is_reported(backend: Backend) {
    let double = Double::start().await;
    double.upsert(history(3));
    double.push_faults([Fault::Status(
        400,
        r#"{"error":"StartTimeStamp is not valid"}"#.into(),
        vec![],
    )]);
    let db = TestDb::on(backend).await;
    let app = spawn_double_app(&double, &db, 100, false).await;
    let outcome = app.sync_once(Sweep::IfDue).await;
    let CycleOutcome::Failed(error) = outcome else {
        panic!("expected failure, got {outcome:?}")
    };
    assert!(
        error.to_string().contains("StartTimeStamp is not valid"),
        "{error}"
    );
    assert_eq!(double.list_requests().len(), 1, "no retry");
    let run = app.last_run("double").await;
    assert_eq!((run.outcome.as_str(), run.inserted), ("failed", 0));
    assert!(run.error.unwrap().contains("StartTimeStamp is not valid"));
    assert!(app.mirror("double").await.is_empty());
}

/// Rows sharing one timestamp across a page boundary, and rows that become visible late
/// (within the lookback), are all mirrored.
async fn ties_across_pages_and_late_rows_within_lookback_are_not_lost(backend: Backend) {
    let double = Double::start().await;
    let tie = Timestamp::now().saturating_sub(Duration::from_secs(605));
    let mut convs = history(15);
    // Ten rows with the exact same timestamp straddle the page boundary at 20.
    convs.extend((100..110).map(|i| conv(i, tie)));
    double.upsert(convs);
    let db = TestDb::on(backend).await;
    let app = spawn_double_app(&double, &db, 20, false).await;
    app.sync_once(Sweep::IfDue).await;
    app.assert_mirror_matches_truth().await;

    // A row written 30 s ago becomes visible only now, after the watermark passed it.
    let mut late = conv(
        500,
        Timestamp::now().saturating_sub(Duration::from_secs(30)),
    );
    late.hidden = true;
    double.upsert([late, conv(501, Timestamp::now())]);
    app.sync_once(Sweep::IfDue).await;
    double.reveal_all();
    app.sync_once(Sweep::IfDue).await;
    app.assert_mirror_matches_truth().await;
}

/// A sweep marks conversations that vanished as deleted, and refuses a mass deletion.
async fn sweep_marks_vanished_rows_and_guards_against_mass_deletion(backend: Backend) {
    let double = Double::start().await;
    double.upsert(history(20));
    let db = TestDb::on(backend).await;
    let app = spawn_double_app(&double, &db, 50, true).await;
    app.sync_once(Sweep::IfDue).await;

    double.remove("c00003");
    double.remove("c00007");
    app.sync_once(Sweep::Now).await;
    let deleted: Vec<String> = app
        .store()
        .sql_column(
            "SELECT conversation_id FROM conversations
             WHERE deleted_at IS NOT NULL ORDER BY 1",
        )
        .await;
    assert_eq!(deleted, ["c00003", "c00007"]);

    // The listing suddenly returns almost nothing: the guard applies nothing.
    for c in double.truth().into_iter().skip(2) {
        double.remove(&c.id);
    }
    app.sync_once(Sweep::Now).await;
    let deleted: i64 = app
        .store()
        .sql_value(
            "SELECT COUNT(*) FROM conversations
             WHERE deleted_at IS NOT NULL",
        )
        .await;
    assert_eq!(deleted, 2, "guard must refuse deleting 16 of 18");
    let notes: String = app
        .store()
        .sql_value(
            "SELECT notes FROM sync_runs
             ORDER BY id DESC LIMIT 1",
        )
        .await;
    assert!(notes.contains("REFUSED"), "{notes}");
}

/// An expired page token restarts the walk from the watermark instead of failing.
async fn rejected_page_token_restarts_the_walk(backend: Backend) {
    let double = Double::start().await;
    double.upsert(history(50));
    let db = TestDb::on(backend).await;
    let app = spawn_double_app(&double, &db, 20, false).await;
    // The first page is served; the token it hands out is then rejected once.
    double.push_faults([
        Fault::Pass,
        Fault::Status(400, r#"{"error":"invalid page_token"}"#.into(), vec![]),
    ]);
    assert!(matches!(
        app.sync_once(Sweep::IfDue).await,
        CycleOutcome::CaughtUp
    ));
    app.assert_mirror_matches_truth().await;
}

/// A watermark never moves past now (plus the allowed skew) when a provider reports a
/// timestamp in the future.
async fn future_timestamps_do_not_move_the_watermark_ahead(backend: Backend) {
    let double = Double::start().await;
    let mut future = conv(
        1,
        Timestamp::now().saturating_add(Duration::from_secs(86_400)),
    );
    future.name = "from the future".into();
    double.upsert([future]);
    let db = TestDb::on(backend).await;
    let app = spawn_double_app(&double, &db, 20, false).await;
    app.sync_once(Sweep::IfDue).await;
    let cursors = WalkCursor::load_all(app.store(), "double").await.unwrap();
    let watermark = cursors["delta"].watermark.unwrap();
    assert!(
        watermark <= Timestamp::now().saturating_add(Duration::from_secs(121)),
        "{watermark}"
    );
}

on_both_stores!(
    delta_after_initial_sync_requests_only_changes,
    unchanged_rows_in_the_overlap_are_not_rewritten,
    abort_between_pages_then_restart_loses_nothing,
    server_errors_and_resets_are_retried,
    retry_after_is_honoured,
    bad_request_is_not_retried_and_is_reported,
    ties_across_pages_and_late_rows_within_lookback_are_not_lost,
    sweep_marks_vanished_rows_and_guards_against_mass_deletion,
    rejected_page_token_restarts_the_walk,
    future_timestamps_do_not_move_the_watermark_ahead,
);
