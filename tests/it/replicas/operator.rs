//! What an operator sees of replicas: `convsync status` names each source's replica and
//! since when (or `unowned`), `/readyz` leaves a source another replica runs to it, and
//! `/metrics` counts the replica's leases.

use std::sync::Arc;
use std::time::Duration;

use convsync::health::metrics::{StoreFigures, encode, registry};
use convsync::health::readiness::SourceState;
use convsync::health::{HealthApp, Liveness};
use convsync::time::Timestamp;

use super::{ReplicaBed, all_caught_up, eventually, held_by, source_name};
use crate::support::reliability::BINARY;

/// A replica that finds one of its two scopes held by another replica runs the other one;
/// `/readyz` counts the scope held elsewhere as fine, `/metrics` names the replica and
/// counts its lease, and `convsync status` shows who runs what, then `unowned` once the
/// replica stopped.
#[tokio::test]
async fn status_readiness_and_metrics_show_the_leases() {
    let bed = ReplicaBed::start(2).await;
    let store = bed.db.open().await;
    let held_elsewhere = bed.source(1).setup.budget_key;
    store
        .register_scopes(&[(held_elsewhere.clone(), vec![source_name(1)])])
        .await
        .unwrap();
    let other = convsync::store::ReplicaName::new("web-2").unwrap();
    let claimed = store
        .claim(
            &other,
            std::slice::from_ref(&held_elsewhere),
            1,
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);

    let mut replica = bed.run("web-1", &[0, 1]).await;
    eventually("web-1 runs the free scope", || async {
        held_by(&store).await.get("web-1") == Some(&1)
    })
    .await;
    let first = [source_name(0)];
    eventually("its source caught up", || all_caught_up(&store, &first)).await;

    let engine = replica.app.engine();
    let health = HealthApp::new(engine, 3.0, Arc::new(Liveness::default()));
    let readiness = health.readiness().await;
    let states: Vec<(String, SourceState)> = readiness
        .sources
        .iter()
        .map(|s| (s.source.clone(), s.state))
        .collect();
    assert_eq!(
        states,
        [
            (source_name(0), SourceState::Ok),
            (source_name(1), SourceState::Elsewhere)
        ]
    );
    assert!(readiness.ready, "{readiness:?}");

    let metrics = encode(&registry(
        engine.sources().to_vec(),
        3.0,
        Timestamp::now(),
        Arc::new(StoreFigures::default()),
        engine.replica_progress().clone(),
    ))
    .unwrap();
    for line in [
        "convsync_replica_info{replica=\"web-1\"} 1.0",
        "convsync_leases_held 1.0",
        "convsync_lease_claims_total 1",
        "convsync_lease_lost_total 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    let config = bed.config_file(&[0, 1]);
    let status = status_text(&config);
    assert!(
        status.contains(&format!("{}\n  replica: web-1 since ", block_head(0))),
        "{status}"
    );
    assert!(
        status.contains(&format!("{}\n  replica: web-2 since ", block_head(1))),
        "{status}"
    );

    replica.stop().await;
    let status = status_text(&config);
    assert!(
        status.contains(&format!("{}\n  replica: unowned", block_head(0))),
        "{status}"
    );
}

/// The first line of a source's block in `convsync status`.
fn block_head(index: usize) -> String {
    format!("{} (spruce)", source_name(index))
}

/// `convsync status --config <config>`'s text.
fn status_text(config: &std::path::Path) -> String {
    let output = std::process::Command::new(BINARY)
        .args(["status", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}
