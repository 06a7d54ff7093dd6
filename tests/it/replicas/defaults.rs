//! Replicas as the product ships them: two real `convsync run` processes with the default
//! `[replicas]` and every source at its default schedule and request budget, against the
//! simulator enforcing each provider's limits at their defaults (HighLevel's documented 100
//! requests per 10 s and 200,000 a day per location; Spruce, whose numbers are not
//! published, 1,000 a minute per organization announced in its `s-ratelimit-*` headers),
//! with HighLevel on rotating OAuth refresh tokens. The first sync is shared between them
//! and handed over as the fair share moves scopes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use convsync::sim_config::SourceTuning;
use convsync_sim::{Platform, SimOptions, Simulator};
use sqlx::postgres::PgPoolOptions;

use crate::support::mirror::MirrorDb;
use crate::support::reliability::site_sources;
use crate::support::replicas::{Replica, ReplicaConfig, eventually, overlaps, scope_runs};
use crate::support::truth::{Truth, first_lines};

/// How long the replicas get to share the scopes out and catch up with the world.
const CATCH_UP: Duration = Duration::from_secs(240);

/// Two replicas at every default sync two Spruce organizations, three HighLevel locations
/// and a Sinch project: the mirror ends equal to the truth, both replicas ran scopes, no
/// scope had two workers at once, the simulator answered no 429 and saw no refresh token
/// twice, and each location's refresh tokens were redeemed once per replica that ran it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_default_replicas_keep_to_every_providers_limits() {
    let db = convsync_testpg::TestPgDb::new().await;
    let sim = Simulator::start(SimOptions {
        seed: 0xDEFA,
        // Several pages per scope, and over a minute's quota of reply-state reads per
        // Spruce organization: its header-paced budget must stop at the window's end.
        conversations: 1_500,
        activity_rate: 0.0,
        d365_accounts: 0,
        spruce_accounts: 2,
        sinch_accounts: 1,
        highlevel_locations: 3,
        ..SimOptions::default()
    })
    .await
    .expect("simulator starts");
    let config = ReplicaConfig::write(
        &sim,
        &db.url,
        "",
        &SourceTuning {
            highlevel_oauth: true,
            ..SourceTuning::default()
        },
    );
    let mut replicas: Vec<Replica> = ["default-1", "default-2"]
        .into_iter()
        .map(|name| config.spawn(name))
        .collect();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await
        .unwrap();

    let shared = eventually(CATCH_UP, || async {
        // No table until the first replica has migrated the database.
        let held: Result<Vec<(String, i64)>, _> = sqlx::query_as(
            "SELECT owner, count(*) FROM leases WHERE owner IS NOT NULL GROUP BY owner ORDER BY owner",
        )
        .fetch_all(&pool)
        .await;
        match held {
            Ok(held) if held == [("default-1".to_owned(), 3), ("default-2".to_owned(), 3)] => {
                Vec::new()
            }
            other => vec![format!("leases held: {other:?}")],
        }
    })
    .await;
    assert!(
        shared.is_empty(),
        "{shared:?}\n{}",
        config.notable_log_lines(20)
    );
    let truth = Truth::simulator(&sim, site_sources(&sim));
    let problems = eventually(CATCH_UP, || truth.differences(MirrorDb::Postgres(&pool))).await;
    assert!(
        problems.is_empty(),
        "{} difference(s) between mirror and truth:\n{}\n--- replica warnings ---\n{}",
        problems.len(),
        first_lines(&problems, 15),
        config.notable_log_lines(40)
    );
    for replica in &mut replicas {
        assert!(
            replica.is_running(),
            "{}:\n{}",
            replica.name,
            replica.output()
        );
    }
    for replica in replicas {
        let name = replica.name.clone();
        let status = replica.sigterm().await;
        assert!(
            status.success(),
            "{name} exited with {status} after SIGTERM"
        );
    }

    let runs = scope_runs(&pool).await;
    let found = overlaps(&runs);
    assert!(found.is_empty(), "{}", first_lines(&found, 15));
    let scopes: BTreeSet<&str> = runs.iter().map(|r| r.scope.as_str()).collect();
    let workers: BTreeSet<&str> = runs.iter().map(|r| r.replica.as_str()).collect();
    assert_eq!(scopes.len(), 6, "every scope ran: {scopes:?}");
    assert_eq!(workers.len(), 2, "both replicas ran scopes: {workers:?}");

    let counts = sim.request_counts();
    assert_eq!(
        counts.total_quota_refusals(),
        0,
        "429s from a scope's own quota: {:?}\n--- replica warnings ---\n{}",
        counts.quota_refusals,
        config.notable_log_lines(40)
    );
    let refused: u64 = counts
        .entries
        .iter()
        .filter(|e| e.status == Some(429))
        .map(|e| e.count)
        .sum();
    assert_eq!(refused, 0, "{:?}", counts.entries);
    assert_eq!(
        counts.total_refresh_token_reuses(),
        0,
        "refresh tokens spent twice: {:?}",
        counts.refresh_token_reuses
    );
    // Access tokens live in each process's memory only, and last an hour here: a replica
    // asks for a credential's token once, when it first runs one of its sources (and
    // redeems a HighLevel location's refresh token then).
    let mut grants = BTreeMap::new();
    for (provider, sources, endpoint) in [
        (Platform::HighLevel, "highlevel/%", "token"),
        (Platform::Sinch, "sinch-%", "oauth2/token"),
    ] {
        let ran_by: Vec<(String, i64)> = sqlx::query_as(
            "SELECT source, count(DISTINCT replica) FROM sync_runs
             WHERE source LIKE $1 GROUP BY source ORDER BY source",
        )
        .bind(sources)
        .fetch_all(&pool)
        .await
        .unwrap();
        let expected: i64 = ran_by.iter().map(|(_, replicas)| replicas).sum();
        let granted = counts.with_status(provider, endpoint, Some(200));
        assert_eq!(
            granted,
            u64::try_from(expected).unwrap(),
            "{provider:?}: one token per source and replica that ran it: {ran_by:?}"
        );
        grants.insert(format!("{provider:?}"), granted);
    }
    let by_status: BTreeMap<Option<u16>, u64> =
        counts.entries.iter().fold(BTreeMap::new(), |mut all, e| {
            *all.entry(e.status).or_default() += e.count;
            all
        });
    assert_eq!(
        by_status.keys().copied().collect::<Vec<_>>(),
        [Some(200)],
        "every request succeeded: {by_status:?}"
    );
    eprintln!(
        "default replicas: {} runs over {} scopes, requests by status {by_status:?}, \
         token grants {grants:?}; by endpoint: {:?}",
        runs.len(),
        scopes.len(),
        counts
            .entries
            .iter()
            .map(|e| (e.provider, e.endpoint.as_str(), e.count))
            .collect::<Vec<_>>()
    );
    pool.close().await;
    sim.shutdown().await;
}
