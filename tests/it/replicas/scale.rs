//! Scale-out under chaos: three real `convsync run` replicas with the same configuration
//! share one PostgreSQL mirror of a busy simulated world (12 HighLevel locations on rotating
//! OAuth refresh tokens, a Spruce organization, a Sinch project, a D365 channel) while a
//! seeded sequence of rounds SIGKILLs a replica and restarts it, freezes one (SIGSTOP) for
//! longer than its lease lives and lets it wake after the lease moved (the classic fencing
//! case), and restarts PostgreSQL itself once. At the end the mirror equals the truth, the
//! runs prove that no scope ever had two workers at once, and the simulator saw neither a
//! 429 nor a refresh token spent twice.
//!
//! `CONVSYNC_SCALE_SEED` replays a run; the seed is printed either way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use convsync::sim_config::SourceTuning;
use convsync_sim::{Platform, SimOptions, Simulator};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgPoolOptions;

use crate::support::mirror::MirrorDb;
use crate::support::reliability::site_sources;
use crate::support::replicas::{Replica, ReplicaConfig, eventually, overlaps, scope_runs};
use crate::support::truth::{Truth, first_lines};
use convsync_testpg::OwnPgCluster;

/// The lease lifetime of the test (the shortest allowed); everything else is the default.
const LEASE_TTL: Duration = Duration::from_secs(5);
/// Replicas sharing the work.
const REPLICAS: usize = 3;
/// Chaos rounds; PostgreSQL restarts in the middle one.
const ROUNDS: usize = 7;
/// How long the replicas get to catch up once the world is quiet: D365 polls at most once a
/// minute, and a scope whose owner was frozen last waits out its lease first.
const CATCH_UP: Duration = Duration::from_secs(120);

/// One chaos round's disruption.
#[derive(Debug, Clone, Copy)]
enum Disruption {
    /// SIGKILL a replica (its leases stay until they expire), then start it again.
    Kill,
    /// SIGSTOP a replica for longer than the lease lives, then SIGCONT.
    Pause,
    /// Restart PostgreSQL under everyone.
    RestartPostgres,
}

/// The rounds in a seeded order: kills and pauses alike, PostgreSQL in the middle.
fn disruptions(rng: &mut StdRng) -> Vec<Disruption> {
    let mut rounds: Vec<Disruption> = (0..ROUNDS - 1)
        .map(|i| {
            if i % 2 == 0 {
                Disruption::Kill
            } else {
                Disruption::Pause
            }
        })
        .collect();
    rounds.shuffle(rng);
    rounds.insert(ROUNDS / 2, Disruption::RestartPostgres);
    rounds
}

/// What the chaos did, for the figures the test prints.
#[derive(Debug, Default)]
struct Chaos {
    kills: u32,
    pauses: u32,
    postgres_restarts: u32,
}

/// Three replicas survive SIGKILLs, SIGSTOPs longer than the lease and a PostgreSQL restart
/// with the mirror equal to the truth, no scope ever worked by two replicas at once, no 429
/// and no refresh token spent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_work_through_kills_pauses_and_a_postgres_restart() {
    let started = Instant::now();
    let seed = std::env::var("CONVSYNC_SCALE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5CA1E);
    eprintln!("scale-out: seed {seed} (replay with CONVSYNC_SCALE_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let postgres = Arc::new(
        tokio::task::spawn_blocking(OwnPgCluster::start)
            .await
            .unwrap(),
    );
    let url = postgres.create_database("mirror").await;
    let sim = Simulator::start(SimOptions {
        seed,
        conversations: 40,
        activity_rate: 6.0,
        d365_accounts: 1,
        spruce_accounts: 1,
        sinch_accounts: 1,
        highlevel_locations: 12,
        // Short-lived access tokens: owners refresh (and rotate refresh tokens) often.
        token_ttl: Duration::from_secs(20),
        // A tight quota per location (one owner polling every 10 s needs 2 or 3 requests
        // per window): a second client polling the same location runs into it.
        highlevel_burst_limit: 5,
        ..SimOptions::default()
    })
    .await
    .expect("simulator starts");
    let config = ReplicaConfig::write(
        &sim,
        &url,
        &format!("lease_ttl = \"{}s\"", LEASE_TTL.as_secs()),
        &SourceTuning {
            poll_interval: Some("10s".into()),
            sweep_interval: Some("15s".into()),
            highlevel_oauth: true,
            webhooks: None,
        },
    );
    let names: Vec<String> = (1..=REPLICAS).map(|i| format!("replica-{i}")).collect();
    let mut replicas: Vec<Replica> = names.iter().map(|n| config.spawn(n)).collect();

    // Chaos, while the world keeps changing.
    let mut chaos = Chaos::default();
    for (round, disruption) in disruptions(&mut rng).into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(3_000..6_000))).await;
        for replica in &mut replicas {
            assert!(
                replica.is_running(),
                "{} died:\n{}",
                replica.name,
                replica.output()
            );
        }
        let victim = rng.random_range(0..REPLICAS);
        let name = names[victim].clone();
        match disruption {
            Disruption::RestartPostgres => {
                let restarting = postgres.clone();
                let down = tokio::task::spawn_blocking(move || restarting.restart())
                    .await
                    .unwrap();
                chaos.postgres_restarts += 1;
                eprintln!(
                    "round {round}: PostgreSQL restarted ({} ms down)",
                    down.as_millis()
                );
            }
            Disruption::Kill => {
                // As a supervisor would: the same name comes back once the process is gone.
                replicas.remove(victim).sigkill().await;
                replicas.insert(victim, config.spawn(&name));
                chaos.kills += 1;
                eprintln!("round {round}: SIGKILL {name}, restarted");
            }
            Disruption::Pause => {
                let frozen = LEASE_TTL + Duration::from_millis(rng.random_range(2_000..4_000));
                replicas[victim].sigstop();
                tokio::time::sleep(frozen).await;
                replicas[victim].sigcont();
                chaos.pauses += 1;
                eprintln!(
                    "round {round}: SIGSTOP {name} for {} ms, then SIGCONT",
                    frozen.as_millis()
                );
            }
        }
    }

    // A quiet world: the replicas catch up with it.
    sim.pause_activity();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    let truth = Truth::simulator(&sim, site_sources(&sim));
    let caught_up = Instant::now();
    let problems = eventually(CATCH_UP, || truth.differences(MirrorDb::Postgres(&pool))).await;
    assert!(
        problems.is_empty(),
        "{} difference(s) between mirror and truth {} s after the world went quiet:\n{}\n\
         --- replica warnings ---\n{}",
        problems.len(),
        CATCH_UP.as_secs(),
        first_lines(&problems, 15),
        config.notable_log_lines(40)
    );
    let catch_up = caught_up.elapsed();
    for replica in replicas {
        let name = replica.name.clone();
        let status = replica.sigterm().await;
        assert!(
            status.success(),
            "{name} exited with {status} after SIGTERM"
        );
    }

    // No scope ever had two workers: epochs follow each other in time.
    let runs = scope_runs(&pool).await;
    let unfenced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sync_runs
         WHERE last_commit_at IS NOT NULL AND (epoch IS NULL OR replica IS NULL)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unfenced, 0, "runs that committed without a lease");
    let found = overlaps(&runs);
    assert!(
        found.is_empty(),
        "{} overlap(s):\n{}",
        found.len(),
        first_lines(&found, 15)
    );
    let scopes: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.scope.as_str()).collect();
    let epochs: std::collections::BTreeSet<(&str, i64)> =
        runs.iter().map(|r| (r.scope.as_str(), r.epoch)).collect();
    let workers: std::collections::BTreeSet<&str> =
        runs.iter().map(|r| r.replica.as_str()).collect();
    assert_eq!(scopes.len(), 15, "every scope ran: {scopes:?}");
    assert_eq!(workers.len(), REPLICAS, "every replica worked: {workers:?}");

    // The providers saw one client per scope.
    let counts = sim.request_counts();
    assert_eq!(
        counts.total_quota_refusals(),
        0,
        "429s from a scope's own quota: {:?}",
        counts.quota_refusals
    );
    assert_eq!(
        counts.total_refresh_token_reuses(),
        0,
        "refresh tokens spent twice: {:?}",
        counts.refresh_token_reuses
    );
    let refreshes = counts.with_status(Platform::HighLevel, "token", Some(200));
    let requests: u64 = counts.entries.iter().map(|e| e.count).sum();
    let mut rows = 0;
    for source in site_sources(&sim) {
        rows += sim
            .truth(source.provider, &source.account)
            .await
            .unwrap()
            .len();
    }

    eprintln!(
        "scale-out figures (seed {seed}): {REPLICAS} replicas, {} scopes, {ROUNDS} rounds: \
         {} SIGKILLs, {} SIGSTOPs longer than the {} s lease, {} PostgreSQL restart(s); \
         {} runs in {} epochs checked, overlaps found = 0; {rows} conversations compared \
         with the truth, differences = 0 (caught up {:.0} s after the world went quiet); \
         {requests} requests, 429s = 0, HighLevel refreshes {refreshes}, refresh tokens \
         spent twice = 0; {:.0} s in all",
        scopes.len(),
        chaos.kills,
        chaos.pauses,
        LEASE_TTL.as_secs(),
        chaos.postgres_restarts,
        runs.len(),
        epochs.len(),
        catch_up.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    pool.close().await;
    sim.shutdown().await;
}
