//! Whole engines in this process sharing one PostgreSQL mirror of a simulated world: the
//! scopes spread fairly, no scope is run by two replicas at once, a stopped replica's
//! scopes move at once, a scope new in one replica's configuration is picked up, and
//! `sync --once` refuses a scope another replica keeps.

use convsync::sync::{CycleOutcome, SyncError};

use super::{
    ReplicaBed, all_caught_up, assert_no_overlap, committed_runs, eventually, held_by, owners,
    source_name,
};
use crate::support::app::Sweep;

/// Two replicas over four scopes end with two each, every source synced by whichever holds
/// it: the mirror equals the truth, every run records its replica and epoch, and no scope's
/// runs of different epochs overlap.
#[tokio::test]
async fn two_replicas_share_four_scopes_fairly() {
    let bed = ReplicaBed::start(4).await;
    let all = [0, 1, 2, 3];
    let names: Vec<String> = all.iter().map(|&i| source_name(i)).collect();
    let mut first = bed.run("r1", &all).await;
    let store = first.store().clone();
    eventually("r1 alone holds every scope", || async {
        held_by(&store).await.get("r1") == Some(&4)
    })
    .await;

    let mut second = bed.run("r2", &all).await;
    eventually("the scopes are split 2/2", || async {
        let held = held_by(&store).await;
        held.get("r1") == Some(&2) && held.get("r2") == Some(&2)
    })
    .await;
    eventually("every source caught up", || all_caught_up(&store, &names)).await;
    eventually("r2 caught up the scopes it took over", || async {
        let caught_up: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT source) FROM sync_runs WHERE replica = 'r2' AND outcome = 'caught_up'",
        )
        .fetch_one(store.as_postgres().unwrap().pool())
        .await
        .unwrap();
        caught_up == 2
    })
    .await;

    second.stop().await;
    first.stop().await;
    first.app.assert_mirror_matches_truth().await;
    let runs = committed_runs(&store).await;
    assert!(!runs.is_empty());
    let epochs = assert_no_overlap(&runs);
    assert!(epochs >= 6, "4 first claims and at least 2 moves: {epochs}");
    let unleased: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sync_runs WHERE replica IS NULL OR epoch IS NULL")
            .fetch_one(store.as_postgres().unwrap().pool())
            .await
            .unwrap();
    assert_eq!(unleased, 0, "every run of a replica records its lease");
}

/// A replica stopped by SIGTERM releases its leases before it exits (unowned at once, no
/// wait for expiry) and leaves; the other replica takes every scope over on its next loop
/// and keeps the mirror current.
#[tokio::test]
async fn shutdown_releases_the_leases_and_the_other_replica_takes_over() {
    let bed = ReplicaBed::start(2).await;
    let both = [0, 1];
    let mut first = bed.run("r1", &both).await;
    let store = first.store().clone();
    let mut second = bed.run("r2", &both).await;
    eventually("the scopes are split 1/1", || async {
        let held = held_by(&store).await;
        held.get("r1") == Some(&1) && held.get("r2") == Some(&1)
    })
    .await;

    first.stop().await;
    let after_stop = owners(&store).await;
    assert!(
        after_stop
            .values()
            .all(|owner| owner.as_deref() != Some("r1")),
        "r1 released everything before it exited: {after_stop:?}"
    );
    let live = store.live_replicas(super::TEST_TTL).await.unwrap();
    assert!(live.iter().all(|r| r.as_str() != "r1"), "{live:?}");
    eventually("r2 holds both scopes", || async {
        held_by(&store).await.get("r2") == Some(&2)
    })
    .await;
    let names: Vec<String> = both.iter().map(|&i| source_name(i)).collect();
    eventually("both sources caught up under r2", || async {
        let caught_up: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT source) FROM sync_runs WHERE replica = 'r2' AND outcome = 'caught_up' AND source = ANY($1)",
        )
        .bind(&names)
        .fetch_one(store.as_postgres().unwrap().pool())
        .await
        .unwrap();
        caught_up == 2
    })
    .await;
    second.stop().await;
    second.app.assert_mirror_matches_truth().await;
    assert_no_overlap(&committed_runs(&store).await);
}

/// A scope added to one replica's configuration (that replica restarted with it) is
/// registered and claimed on its next loop; the other replica, which does not know it,
/// keeps running without a restart.
#[tokio::test]
async fn a_scope_new_in_one_replicas_config_is_picked_up() {
    let bed = ReplicaBed::start(3).await;
    let mut old = bed.run("r1", &[0, 1]).await;
    let store = old.store().clone();
    eventually("r1 holds its two scopes", || async {
        held_by(&store).await.get("r1") == Some(&2)
    })
    .await;

    let mut new = bed.run("r2", &[0, 1, 2]).await;
    let added = bed.source(2).setup.budget_key;
    eventually("r2 claimed the new scope", || async {
        owners(&store)
            .await
            .get(&added)
            .cloned()
            .flatten()
            .as_deref()
            == Some("r2")
    })
    .await;
    let added_source = [source_name(2)];
    eventually("the new source caught up", || {
        all_caught_up(&store, &added_source)
    })
    .await;
    assert!(!old.task.as_ref().unwrap().is_finished(), "r1 kept running");
    new.stop().await;
    old.stop().await;
    new.app.assert_mirror_matches_truth().await;
}

/// `sync --once` while a daemon replica holds the scope: it waits a lease's lifetime for
/// it, then fails the source naming the replica that holds it, and syncs nothing.
#[tokio::test]
async fn sync_once_refuses_a_scope_another_replica_keeps() {
    let bed = ReplicaBed::start(1).await;
    let mut daemon = bed.run("r1", &[0]).await;
    let store = daemon.store().clone();
    eventually("r1 holds the scope", || async {
        held_by(&store).await.get("r1") == Some(&1)
    })
    .await;

    let once = bed.app("once", &[0]).await;
    let results = once.sync_all(Sweep::IfDue).await;
    assert_eq!(results.len(), 1);
    match &results[0].outcome {
        CycleOutcome::Failed(SyncError::LeaseHeld { owner, .. }) => assert_eq!(owner, "r1"),
        other => panic!("expected the scope to be held elsewhere, got {other:?}"),
    }
    assert!(!results[0].succeeded());
    let by_once: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sync_runs WHERE replica = 'once'")
        .fetch_one(store.as_postgres().unwrap().pool())
        .await
        .unwrap();
    assert_eq!(by_once, 0);

    daemon.stop().await;
    // Released: the next `sync --once` claims it at once and syncs.
    once.sync_caught_up(Sweep::IfDue).await;
    once.assert_mirror_matches_truth().await;
    assert_eq!(owners(&store).await.into_values().flatten().count(), 0);
}
