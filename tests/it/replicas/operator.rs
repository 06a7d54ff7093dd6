//! What an operator sees of replicas: `convsync status` names each source's replica and
//! since when (or `unowned`), `/readyz` leaves a source another replica runs to it, and
//! `/metrics` counts the replica's leases; a replica left with nothing it could run exits
//! non-zero naming what stopped.

use std::sync::Arc;
use std::time::Duration;

use convsync::health::metrics::{StoreFigures, encode, registry};
use convsync::health::readiness::SourceState;
use convsync::health::{HealthApp, Liveness};
use convsync::time::Timestamp;

use convsync::sim_config::SourceTuning;

use super::{ReplicaBed, all_caught_up, eventually, held_by, source_name};
use crate::support::reliability::{BINARY, PATIENCE};
use crate::support::replicas::ReplicaConfig;

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
        engine.registry().clone(),
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

/// The real binary: two `convsync run` replicas whose every source has its credentials
/// rejected each give up every scope once it failed in them (released, never claimed
/// again, so each scope goes round the replicas once instead of bouncing), then exit
/// non-zero naming every source and why, as a SQLite daemon does; the leases end unowned
/// and nothing was committed.
#[tokio::test]
async fn replicas_whose_every_source_is_refused_exit_non_zero_naming_them() {
    let sim = convsync_sim::Simulator::start(convsync_sim::SimOptions {
        spruce_accounts: 2,
        d365_accounts: 0,
        sinch_accounts: 0,
        highlevel_locations: 0,
        conversations: 5,
        activity_rate: 0.0,
        ..convsync_sim::SimOptions::default()
    })
    .await
    .expect("simulator starts");
    let db = convsync_testpg::TestPgDb::new().await;
    let config = ReplicaConfig::write(
        &sim,
        &db.url,
        "lease_ttl = \"5s\"",
        &SourceTuning::default(),
    );
    for i in 0..2 {
        let secret = config
            .dir
            .path()
            .join("secrets")
            .join(format!("SIM_SPRUCE_API_TOKEN_{i}"));
        std::fs::write(secret, "a-token-spruce-refuses").unwrap();
    }

    let mut replicas = [config.spawn("refused-1"), config.spawn("refused-2")];
    for replica in &mut replicas {
        let status = replica.exit_within(PATIENCE).await;
        let output = replica.output();
        assert_eq!(status.code(), Some(1), "{}:\n{output}", replica.name);
        for source in ["spruce-0", "spruce-1"] {
            assert!(
                output.contains(&format!("{source}: credentials rejected")),
                "{} does not name {source}:\n{output}",
                replica.name
            );
        }
        assert!(output.contains("no source is left running"), "{output}");
        assert_eq!(
            output
                .matches("every source of this scope stopped here")
                .count(),
            2,
            "each scope given up once in {}:\n{output}",
            replica.name
        );
    }

    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let owners: Vec<Option<String>> = sqlx::query_scalar("SELECT owner FROM leases ORDER BY scope")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(owners, [None, None], "every lease released");
    let claims: Vec<i64> = sqlx::query_scalar("SELECT epoch FROM leases ORDER BY scope")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        claims.iter().all(|&epoch| epoch >= 2),
        "each scope tried by both replicas: {claims:?}"
    );
    let committed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sync_runs WHERE last_commit_at IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(committed, 0);
    pool.close().await;
    sim.shutdown().await;
}
