//! Crash safety of the real binary: `convsync run` is killed with SIGKILL at seeded random
//! moments while every provider changes and misbehaves, and restarted each time; at the end
//! the mirror equals the truth, no watermark ever went backwards and the database is
//! intact. SIGTERM stops it gracefully with exit status 0. Both stores: on PostgreSQL a
//! kill mid-page leaves the server to roll the page's transaction back, as SQLite's
//! journal does on the next open.
//!
//! The default run kills 30 times; `CONVSYNC_SOAK=1` turns on the long run (300 kills, or
//! `CONVSYNC_SOAK_KILLS`), documented in README.md ("Soak runs").

use std::time::Duration;

use convsync::config::ReplicaSettings;
use convsync::sync::join_window;
use convsync_sim::{Faults, PlatformSelector};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::reliability::{
    Site, SiteOptions, WatermarkHistory, latency, run_outcomes, sim_options, small_pages,
};
use crate::support::stores::{Backend, on_both_stores};

/// Faults on during the storms: some 5xx, dropped connections, truncated bodies, latency.
fn storm_faults() -> Faults {
    Faults {
        error_5xx_ratio: 0.08,
        reset_ratio: 0.03,
        malformed_ratio: 0.02,
        ..latency(0, 40)
    }
}

/// Runs `kills` start/SIGKILL rounds against a busy, faulty simulator, then one clean
/// `sync --once --full`, and checks every promise.
async fn kill_storm(backend: Backend, kills: u32, seed: u64) {
    let mut options = sim_options(seed, 150);
    options.activity_rate = 25.0;
    let site = Site::start_on(
        backend,
        options,
        SiteOptions {
            sweep_interval: "4s",
            page_size: 10,
            ..SiteOptions::default()
        },
    )
    .await;
    site.sim.set_faults(PlatformSelector::All, storm_faults());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut history = WatermarkHistory::default();
    let mut metrics = Vec::new();
    // On PostgreSQL the daemon is a replica: it claims its scopes only after the join
    // window, so the kills' range is that much longer there.
    let start_up = match backend {
        Backend::Sqlite => Duration::ZERO,
        Backend::Postgres => join_window(ReplicaSettings::default().lease_ttl),
    };
    let longest = 2_500 + u64::try_from(start_up.as_millis()).unwrap();
    for round in 0..kills {
        let daemon = site.spawn_daemon();
        // Early kills land in start-up and the first pages; later ones anywhere in a cycle.
        let delay = Duration::from_millis(rng.random_range(50..longest));
        if round % 10 == 9 {
            metrics.push(site.scrape_metrics().await);
        }
        tokio::time::sleep(delay).await;
        daemon.sigkill().await;
        let pool = site.mirror().await;
        history.observe(&pool).await;
        pool.close().await;
    }

    site.sim.pause_activity();
    site.sim
        .set_faults(PlatformSelector::All, Faults::default());
    // A batch of changes the generator began before the pause may still land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    site.sync_full().await;

    site.assert_converged().await;
    let pool = site.mirror().await;
    history.observe(&pool).await;
    assert!(
        history.walks() >= 5,
        "every source should have a delta watermark"
    );
    let outcomes = run_outcomes(&pool).await;
    assert!(
        outcomes.get("interrupted").copied().unwrap_or(0) > 0,
        "some kills should have landed mid-cycle: {outcomes:?}"
    );
    assert_eq!(outcomes.get("running"), None, "{outcomes:?}");
    pool.close().await;
    let status = site.run(&["status"]).await;
    assert!(status.status.success(), "{}", status.tail());
    let mut texts: Vec<&str> = metrics.iter().map(String::as_str).collect();
    texts.push(&status.stdout);
    site.assert_no_secrets(&texts).await;
}

/// 30 SIGKILLs at random moments (all providers, activity and faults on) lose and duplicate
/// nothing, never move a watermark backwards and leave the database intact.
async fn sigkill_at_random_moments_loses_nothing(backend: Backend) {
    kill_storm(backend, 30, 0x5EED_0009).await;
}

/// The opt-in soak: hundreds of SIGKILLs (`CONVSYNC_SOAK=1`, count in `CONVSYNC_SOAK_KILLS`).
async fn soak_sigkill_hundreds_of_times(backend: Backend) {
    if std::env::var_os("CONVSYNC_SOAK").is_none() {
        eprintln!("soak test skipped: set CONVSYNC_SOAK=1 to run it");
        return;
    }
    let kills = std::env::var("CONVSYNC_SOAK_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(300);
    let seed = std::env::var("CONVSYNC_SOAK_SEED")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(0x50AC);
    kill_storm(backend, kills, seed).await;
}

/// The soak commands README.md gives select the soak tests, and nothing else: a filter
/// that matched no test would run nothing and pass.
#[test]
fn the_readme_soak_commands_select_the_soak_tests() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let filters: Vec<&str> = readme
        .lines()
        .filter(|line| line.starts_with("CONVSYNC_SOAK=1 "))
        .filter_map(|line| line.split('#').next()?.split_whitespace().last())
        .collect();
    assert!(
        filters.len() >= 2,
        "the README's soak commands: {filters:?}"
    );
    for filter in filters {
        let listed = std::process::Command::new(std::env::current_exe().unwrap())
            .args([filter, "--list"])
            .output()
            .unwrap();
        let listed = String::from_utf8(listed.stdout).unwrap();
        let tests: Vec<&str> = listed.lines().filter(|l| l.ends_with(": test")).collect();
        assert!(
            !tests.is_empty()
                && tests
                    .iter()
                    .all(|t| t.contains("::soak_sigkill_hundreds_of_times")),
            "{filter} selects {tests:?}"
        );
    }
}

/// SIGTERM mid-sync lets the page in flight commit, then the daemon exits 0 and a restart
/// finishes the job with nothing lost.
async fn sigterm_is_graceful_and_exits_zero(backend: Backend) {
    let site = Site::start_on(backend, sim_options(21, 200), small_pages()).await;
    site.sim.set_faults(PlatformSelector::All, latency(20, 60));
    // Pages are being written, so the signal lands mid-walk.
    let daemon = site.spawn_daemon_mid_sync().await;
    let pool = site.mirror().await;
    let output_log = daemon.log.clone();
    let status = daemon.sigterm().await;
    let output = std::fs::read_to_string(&output_log).unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM:\n{output}"
    );
    assert!(output.contains("shutdown requested"), "{output}");
    assert!(output.contains("convsync stopped"), "{output}");
    let outcomes = run_outcomes(&pool).await;
    assert_eq!(
        outcomes.get("running"),
        None,
        "no run is left running: {outcomes:?}"
    );
    assert_eq!(outcomes.get("failed"), None, "{outcomes:?}");
    assert!(
        outcomes.get("more_to_do").copied().unwrap_or(0) > 0,
        "{outcomes:?}"
    );
    pool.close().await;

    site.sim
        .set_faults(PlatformSelector::All, Faults::default());
    site.sync_full().await;
    site.assert_converged().await;
    site.assert_no_secrets(&[]).await;
}

on_both_stores!(
    multi_thread: sigkill_at_random_moments_loses_nothing,
    soak_sigkill_hundreds_of_times,
    sigterm_is_graceful_and_exits_zero,
);
