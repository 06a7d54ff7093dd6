//! Fair start-up: replicas started together split the scopes with their first claims (each
//! waits a join window for the others' heartbeats before it counts them), and a replica
//! started alone still takes every scope with its first claim.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{
    ReplicaBed, Running, all_caught_up, assert_no_overlap, caught_up_under, committed_runs,
    eventually, held_by, source_name,
};
use crate::support::app::spawn_app;
use crate::support::truth::{Truth, TruthSource};

/// A lease long enough that the join window is its full 3 s, so that engines started in
/// one loop of this process announce themselves well within it even on a loaded machine.
const TOGETHER_TTL: Duration = Duration::from_secs(9);

/// Each scope's epoch, by scope: 1 for a scope claimed once and never moved.
async fn epochs(store: &convsync::store::Store) -> BTreeMap<String, i64> {
    store
        .lease_owners()
        .await
        .unwrap()
        .into_iter()
        .map(|lease| (lease.scope, lease.epoch))
        .collect()
}

/// Three replicas started together (the first announced before the others start) over six
/// scopes hold two each from their first claims:
/// every lease is at epoch 1 (claimed once, never handed on), each replica caught up the
/// two scopes it holds, and the mirror equals the truth.
#[tokio::test]
async fn replicas_started_together_split_the_scopes_from_their_first_claims() {
    let bed = ReplicaBed::start(6).await;
    let all: Vec<usize> = (0..6).collect();
    let names: Vec<String> = all.iter().map(|&i| source_name(i)).collect();
    // Built first (configuration, pool, migrations), then started in one go: "together".
    let mut apps = Vec::new();
    for replica in ["r1", "r2", "r3"] {
        let mut config = bed.config(replica, &all);
        config.replicas.lease_ttl = TOGETHER_TTL;
        let truth = all
            .iter()
            .map(|&i| TruthSource::spruce(&bed.sim, i, &source_name(i)))
            .collect();
        apps.push(
            spawn_app(&config)
                .await
                .following(Truth::simulator(&bed.sim, truth)),
        );
    }
    // As processes started together do: one is first, and has announced itself (its
    // heartbeat) before the others start; without the join window it would count itself
    // alone and claim everything.
    let mut apps = apps.into_iter();
    let first = Running::start(apps.next().unwrap());
    let store = first.store().clone();
    eventually("r1 announced itself", || async {
        let live = store.live_replicas(TOGETHER_TTL).await.unwrap();
        live.iter().any(|name| name.as_str() == "r1")
    })
    .await;
    let mut replicas: Vec<Running> = std::iter::once(first)
        .chain(apps.map(Running::start))
        .collect();

    eventually("every scope is owned", || async {
        held_by(&store).await.values().sum::<usize>() == 6
    })
    .await;
    let held = held_by(&store).await;
    assert_eq!(
        held,
        BTreeMap::from([("r1".into(), 2), ("r2".into(), 2), ("r3".into(), 2)]),
        "each replica holds its fair share from the start"
    );
    eventually("every source caught up", || all_caught_up(&store, &names)).await;
    for replica in ["r1", "r2", "r3"] {
        assert_eq!(
            caught_up_under(&store, replica).await,
            2,
            "{replica} synced its own two scopes"
        );
    }
    let epochs = epochs(&store).await;
    assert!(
        epochs.values().all(|&epoch| epoch == 1),
        "no scope was claimed twice: {epochs:?}"
    );

    for replica in &mut replicas {
        replica.stop().await;
    }
    replicas[0].app.assert_mirror_matches_truth().await;
    assert_eq!(assert_no_overlap(&committed_runs(&store).await), 6);
}

/// A replica started alone claims every scope with its first claim (all at epoch 1) and
/// syncs them all.
#[tokio::test]
async fn a_lone_replica_takes_every_scope_with_its_first_claim() {
    let bed = ReplicaBed::start(3).await;
    let all = [0, 1, 2];
    let names: Vec<String> = all.iter().map(|&i| source_name(i)).collect();
    let mut alone = bed.run("r1", &all).await;
    let store = alone.store().clone();
    eventually("r1 holds every scope", || async {
        held_by(&store).await.get("r1") == Some(&3)
    })
    .await;
    let epochs = epochs(&store).await;
    assert_eq!(epochs.len(), 3);
    assert!(epochs.values().all(|&epoch| epoch == 1), "{epochs:?}");
    eventually("every source caught up under r1", || async {
        all_caught_up(&store, &names).await && caught_up_under(&store, "r1").await == 3
    })
    .await;
    alone.stop().await;
    alone.app.assert_mirror_matches_truth().await;
}
