//! Provider faults against the real binary, all providers at once: 429 storms with and
//! without `Retry-After`, 5xx, latency beyond the request timeout, connection resets,
//! malformed pages (transient and persistent), expired page tokens, credentials that
//! expire mid-walk, eventual consistency shorter and longer than the lookback, tie
//! clusters across page boundaries and provider timestamps in the future.
//!
//! Each scenario ends with the mirror equal to the simulator's truth and checks that what
//! happened is visible in `sync_runs`, the logs (at `RUST_LOG=trace`) and, where a daemon
//! ran, `/metrics` — and that no secret or token appears in any of them. Every scenario
//! runs on both stores.

use std::time::Duration;

use convsync_sim::{Faults, MessageKind, Platform, PlatformSelector, RateLimitFault, RetryAfter};

use crate::support::mirror::{MirrorPool, read_conversation};
use crate::support::reliability::{
    Site, SiteOptions, latency, run_reports, sim_options, site_sources, small_pages,
    wait_every_source_caught_up, wait_for_rows, watermarks,
};
use crate::support::stores::{Backend, MirrorSql, on_both_stores};

/// What a daemon scenario saw.
struct Observed {
    metrics: String,
    reports: String,
}

/// Sum of the samples of `metric` whose line contains every one of `filters`.
fn metric_sum(metrics: &str, metric: &str, filters: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(metric) && filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs `convsync run` under the site's faults until every source caught up, scrapes
/// `/metrics`, stops it with SIGTERM (exit 0), then runs `sync --once --full` with the
/// faults still on until it succeeds with no follow-up left, and checks the mirror, the
/// file and the secrets.
async fn daemon_scenario(site: &Site) -> Observed {
    let mut daemon = site.spawn_daemon();
    let pool = site.mirror().await;
    wait_every_source_caught_up(site, &pool, &mut daemon, 0).await;
    let metrics = site.scrape_metrics().await;
    let status = daemon.sigterm().await;
    assert_eq!(status.code(), Some(0), "SIGTERM exit status");
    settle(site, &pool).await;
    let reports = run_reports(&pool).await;
    pool.close().await;
    finish(site, &[&metrics]).await;
    Observed { metrics, reports }
}

/// `sync --once --full` until it succeeds with no follow-up pending (bounded: faults may
/// fail a cycle now and then).
async fn settle(site: &Site, pool: &MirrorPool) {
    for _ in 0..6 {
        let done = site.run(&["sync", "--once", "--full"]).await;
        let pending: i64 = pool.sql_value("SELECT COUNT(*) FROM follow_ups").await;
        if done.status.success() && pending == 0 {
            return;
        }
    }
    panic!(
        "sync --once --full never succeeded:\n{}",
        run_reports(pool).await
    );
}

/// The mirror equals the truth, the file is intact, `status` works and nothing leaked.
async fn finish(site: &Site, texts: &[&str]) {
    site.assert_converged().await;
    let status = site.run(&["status"]).await;
    assert!(status.status.success(), "{}", status.tail());
    let mut all = texts.to_vec();
    all.push(&status.stdout);
    site.assert_no_secrets(&all).await;
}

async fn site_with(backend: Backend, faults: Faults, site: SiteOptions) -> Site {
    let site = Site::start_on(backend, sim_options(31, 60), site).await;
    site.sim.set_faults(PlatformSelector::All, faults);
    site
}

fn rate_limit(retry_after: RetryAfter) -> Option<RateLimitFault> {
    Some(RateLimitFault {
        max_requests: 4,
        window_ms: 1_000,
        retry_after,
    })
}

/// A 429 storm whose answers say when to come back (seconds for D365 and Spruce, an HTTP
/// date for Sinch and HighLevel) is waited out: nothing fails, nothing is lost.
async fn rate_limit_storm_with_retry_after_is_waited_out(backend: Backend) {
    let site = site_with(backend, Faults::default(), SiteOptions::default()).await;
    for (provider, style) in [
        (Platform::D365, RetryAfter::Seconds),
        (Platform::Spruce, RetryAfter::Seconds),
        (Platform::Sinch, RetryAfter::HttpDate),
        (Platform::HighLevel, RetryAfter::HttpDate),
    ] {
        site.sim.set_faults(
            provider,
            Faults {
                rate_limit: rate_limit(style),
                ..Faults::default()
            },
        );
    }
    let seen = daemon_scenario(&site).await;
    assert!(
        metric_sum(
            &seen.metrics,
            "convsync_requests_total",
            &["status=\"429\""]
        ) > 0.0,
        "{}",
        seen.metrics
    );
    assert!(metric_sum(&seen.metrics, "convsync_rate_limit_wait_seconds_total", &[]) > 0.0);
    assert!(site.logs().contains("429"), "the 429s are logged");
    assert!(!seen.reports.contains(" failed "), "{}", seen.reports);
}

/// A 429 storm without `Retry-After` is retried with backoff (or resumed next cycle) until
/// everything is mirrored.
async fn rate_limit_storm_without_retry_after_is_retried(backend: Backend) {
    let site = site_with(
        backend,
        Faults {
            rate_limit: rate_limit(RetryAfter::None),
            ..Faults::default()
        },
        SiteOptions::default(),
    )
    .await;
    let seen = daemon_scenario(&site).await;
    assert!(
        metric_sum(
            &seen.metrics,
            "convsync_requests_total",
            &["status=\"429\""]
        ) > 0.0,
        "{}",
        seen.metrics
    );
    assert!(metric_sum(&seen.metrics, "convsync_request_retries_total", &[]) > 0.0);
}

/// 30 % of requests answered 500/503 are retried; the retries show in metrics and in the
/// runs' request counts.
async fn thirty_percent_server_errors_are_retried(backend: Backend) {
    let site = site_with(
        backend,
        Faults {
            error_5xx_ratio: 0.3,
            ..Faults::default()
        },
        SiteOptions::default(),
    )
    .await;
    let seen = daemon_scenario(&site).await;
    let errors = metric_sum(
        &seen.metrics,
        "convsync_requests_total",
        &["status=\"500\""],
    ) + metric_sum(
        &seen.metrics,
        "convsync_requests_total",
        &["status=\"503\""],
    );
    assert!(errors > 0.0, "{}", seen.metrics);
    assert!(metric_sum(&seen.metrics, "convsync_request_retries_total", &[]) > 0.0);
    assert_requests_exceed_pages(&site).await;
    assert!(site.logs().contains("request failed, retrying"));
}

/// Responses slower than the request timeout are abandoned and retried.
async fn latency_beyond_the_request_timeout_is_retried(backend: Backend) {
    let site = site_with(
        backend,
        latency(0, 1_600),
        SiteOptions {
            http_timeout: "1s",
            ..SiteOptions::default()
        },
    )
    .await;
    let seen = daemon_scenario(&site).await;
    assert!(
        metric_sum(
            &seen.metrics,
            "convsync_requests_total",
            &["status=\"none\""]
        ) > 0.0,
        "{}",
        seen.metrics
    );
    assert!(site.logs().contains("timed out"), "timeouts are logged");
}

/// Connections dropped without an answer are retried.
async fn connection_resets_are_retried(backend: Backend) {
    let site = site_with(
        backend,
        Faults {
            reset_ratio: 0.3,
            ..Faults::default()
        },
        SiteOptions::default(),
    )
    .await;
    let seen = daemon_scenario(&site).await;
    assert!(
        metric_sum(
            &seen.metrics,
            "convsync_requests_total",
            &["status=\"none\""]
        ) > 0.0,
        "{}",
        seen.metrics
    );
    assert_requests_exceed_pages(&site).await;
}

/// A truncated JSON page is fetched again; the mirror ends complete.
async fn malformed_pages_are_fetched_again(backend: Backend) {
    let site = site_with(
        backend,
        Faults {
            malformed_ratio: 0.25,
            ..Faults::default()
        },
        SiteOptions::default(),
    )
    .await;
    daemon_scenario(&site).await;
    assert!(site.logs().contains("malformed page; fetching it again"));
}

/// A page that stays malformed fails the cycle (non-zero exit, `failed` runs naming the
/// problem) without advancing any cursor or touching any row; once the provider recovers,
/// the next sync completes the mirror.
async fn persistently_malformed_pages_fail_without_advancing_anything(backend: Backend) {
    let site = site_with(backend, Faults::default(), SiteOptions::default()).await;
    site.sync_full().await;
    site.sim.apply_activity(40).await;
    let pool = site.mirror().await;
    let before = snapshot(&pool).await;
    site.sim.set_faults(
        PlatformSelector::All,
        Faults {
            malformed_ratio: 1.0,
            ..Faults::default()
        },
    );

    let failed = site.run(&["sync", "--once"]).await;

    assert!(
        !failed.status.success(),
        "a persistently malformed provider fails the sync"
    );
    assert!(failed.stdout.contains("FAILED"), "{}", failed.tail());
    assert_eq!(snapshot(&pool).await, before, "nothing advanced or changed");
    let errors: Vec<String> = pool
        .sql_column(
            "SELECT error FROM sync_runs WHERE outcome = 'failed' AND error LIKE '%malformed%'",
        )
        .await;
    assert_eq!(
        errors.len(),
        site_sources(&site.sim).len(),
        "one failed run per source"
    );

    site.sim
        .set_faults(PlatformSelector::All, Faults::default());
    site.sync_full().await;
    pool.close().await;
    finish(&site, &[&failed.stderr]).await;
}

/// Cursors and rows (with their provenance), as text.
async fn snapshot(
    pool: &MirrorPool,
) -> (
    Vec<(String, String, String)>,
    Vec<(String, String, String, String)>,
) {
    let cursors = pool
        .sql_rows("SELECT source, walk, state FROM cursors ORDER BY source, walk")
        .await;
    let rows = pool
        .sql_rows(
            "SELECT source, conversation_id, CAST(raw AS TEXT), CAST(last_changed_at AS TEXT)
             FROM conversations ORDER BY source, conversation_id",
        )
        .await;
    (cursors, rows)
}

/// Page tokens that expired while the daemon was stopped mid-walk are refused by the
/// providers; the walk restarts from its watermark, says so in `sync_runs.notes`, and loses
/// nothing.
async fn expired_page_tokens_restart_the_walk(backend: Backend) {
    let site = Site::start_on(backend, sim_options(33, 150), small_pages()).await;
    site.sim.set_faults(
        PlatformSelector::All,
        Faults {
            page_token_ttl_ms: Some(1_500),
            ..latency(20, 40)
        },
    );
    let mut daemon = site.spawn_daemon();
    let pool = site.mirror().await;
    wait_for_rows(&pool, &mut daemon).await;
    assert_eq!(daemon.sigterm().await.code(), Some(0));
    let saved: i64 = pool
        .sql_value("SELECT COUNT(*) FROM cursors WHERE state LIKE '%\"position\"%'")
        .await;
    assert!(
        saved > 0,
        "some walk stopped mid-way with its page token saved"
    );
    tokio::time::sleep(Duration::from_millis(2_000)).await;

    settle(&site, &pool).await;

    let notes = run_reports(&pool).await;
    assert!(
        notes.contains("page position rejected, walk restarted"),
        "{notes}"
    );
    pool.close().await;
    finish(&site, &[]).await;
}

/// Access tokens revoked mid-walk (and short-lived ones) are refreshed and the request
/// retried; HighLevel's rotating refresh token survives every rotation.
async fn credentials_expiring_mid_walk_are_refreshed(backend: Backend) {
    let site = Site::start_on(
        backend,
        sim_options(34, 150),
        SiteOptions {
            highlevel_oauth: true,
            ..small_pages()
        },
    )
    .await;
    site.sim.set_faults(
        PlatformSelector::All,
        Faults {
            access_token_ttl_ms: Some(3_000),
            ..latency(10, 30)
        },
    );
    let mut daemon = site.spawn_daemon();
    let pool = site.mirror().await;
    wait_for_rows(&pool, &mut daemon).await;
    site.sim.revoke_tokens(PlatformSelector::All);
    wait_every_source_caught_up(&site, &pool, &mut daemon, 0).await;
    let metrics = site.scrape_metrics().await;
    assert_eq!(daemon.sigterm().await.code(), Some(0));
    assert!(
        metric_sum(&metrics, "convsync_requests_total", &["status=\"401\""]) > 0.0,
        "{metrics}"
    );
    let counts = site.sim.request_counts();
    for provider in [Platform::D365, Platform::Sinch, Platform::HighLevel] {
        assert!(
            counts.total(provider, "token") >= 2,
            "{provider:?} fetched a new token"
        );
    }
    assert!(!run_reports(&pool).await.contains(" failed "));
    settle(&site, &pool).await;
    pool.close().await;
    finish(&site, &[&metrics]).await;
}

/// Two conversations per provider with messages, the first older.
async fn two_conversations(site: &Site, provider: Platform, account: &str) -> (String, String) {
    let mut truth: Vec<_> = site
        .sim
        .truth(provider, account)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| {
            !t.deleted
                && t.last_activity_at.is_some()
                && t.state == convsync_sim::ConversationState::Active
        })
        .collect();
    truth.sort_by_key(|t| t.created_at);
    (truth[0].id.clone(), truth[1].id.clone())
}

/// For each message-listing provider: `late` gets a message that the listing shows only
/// after `delay`; after `gap`, `early` gets one shown at once. Returns the `late` ids and
/// when the late ones become visible.
async fn late_and_early_messages(
    site: &Site,
    providers: &[Platform],
    delay_ms: u64,
    gap: Duration,
) -> (Vec<(Platform, String, String)>, tokio::time::Instant) {
    let accounts = site.sim.accounts();
    let targets: Vec<(Platform, String)> = providers
        .iter()
        .map(|p| {
            let account = match p {
                Platform::Spruce => &accounts.spruce[0].account,
                Platform::Sinch => &accounts.sinch[0].account,
                Platform::HighLevel => &accounts.highlevel[0].account,
                Platform::D365 => unreachable!("D365 lists no message activity"),
            };
            (*p, account.clone())
        })
        .collect();
    let mut pairs = Vec::new();
    for (provider, account) in &targets {
        let (late, early) = two_conversations(site, *provider, account).await;
        pairs.push((*provider, account.clone(), late, early));
    }
    let visible = tokio::time::Instant::now() + Duration::from_millis(delay_ms + 300);
    for (provider, account, late, _) in &pairs {
        site.sim.set_faults(
            *provider,
            Faults {
                consistency_delay_ms: delay_ms,
                ..Faults::default()
            },
        );
        site.sim
            .add_message(*provider, account, late, MessageKind::Inbound)
            .unwrap();
        site.sim.set_faults(*provider, Faults::default());
    }
    tokio::time::sleep(gap).await;
    for (provider, account, _, early) in &pairs {
        site.sim
            .add_message(*provider, account, early, MessageKind::Inbound)
            .unwrap();
    }
    (
        pairs
            .into_iter()
            .map(|(p, a, late, _)| (p, a, late))
            .collect(),
        visible,
    )
}

/// The mirrored `last_activity_at` of `id` equals the truth.
async fn is_current(
    site: &Site,
    pool: &MirrorPool,
    provider: Platform,
    account: &str,
    id: &str,
) -> bool {
    let truth = site.sim.truth(provider, account).await.unwrap();
    let want = truth
        .iter()
        .find(|t| t.id == id)
        .and_then(|t| t.last_activity_at)
        .map(|t| convsync::time::Timestamp::from(t).to_mirror_text());
    let rows = read_conversation(pool, id).await;
    assert_eq!(rows.len(), 1, "{id} is mirrored once");
    rows[0].last_activity_at == want
}

/// A change that shows up in the listing later than a newer one, but within the lookback,
/// is caught by the next delta (no sweep) and is not reported as late.
async fn consistency_delay_within_the_lookback_loses_nothing(backend: Backend) {
    let site = site_with(backend, Faults::default(), SiteOptions::default()).await;
    site.sync_full().await;
    let pool = site.mirror().await;
    let (late, visible) = late_and_early_messages(
        &site,
        &[Platform::Spruce, Platform::Sinch, Platform::HighLevel],
        8_000,
        Duration::from_millis(1_100),
    )
    .await;
    let first = site.run(&["sync", "--once"]).await;
    assert!(first.status.success(), "{}", first.tail());
    for (provider, account, id) in &late {
        assert!(
            !is_current(&site, &pool, *provider, account, id).await,
            "{provider:?}: not visible yet"
        );
    }
    tokio::time::sleep_until(visible).await;

    let second = site.run(&["sync", "--once"]).await;

    assert!(second.status.success(), "{}", second.tail());
    for (provider, account, id) in &late {
        assert!(
            is_current(&site, &pool, *provider, account, id).await,
            "{provider:?}: caught by the delta"
        );
    }
    assert!(!run_reports(&pool).await.contains("later than the lookback"));
    pool.close().await;
    finish(&site, &[]).await;
}

/// A change that shows up later than the lookback allows for is missed by the deltas; the
/// next sweep repairs it and reports it in `sync_runs.notes` and the logs. (Spruce: its
/// delta filters by time; the newest-first walks of Sinch and HighLevel read whole pages
/// past the bound and may catch such a change early.)
async fn consistency_delay_beyond_the_lookback_is_reported_and_repaired(backend: Backend) {
    let site = site_with(
        backend,
        Faults::default(),
        SiteOptions {
            source_extra: "lookback = \"1s\"",
            ..SiteOptions::default()
        },
    )
    .await;
    site.sync_full().await;
    let pool = site.mirror().await;
    let (late, visible) = late_and_early_messages(
        &site,
        &[Platform::Spruce],
        8_000,
        Duration::from_millis(2_000),
    )
    .await;
    let first = site.run(&["sync", "--once"]).await;
    assert!(first.status.success(), "{}", first.tail());
    tokio::time::sleep_until(visible).await;
    let second = site.run(&["sync", "--once"]).await;
    assert!(second.status.success(), "{}", second.tail());
    for (provider, account, id) in &late {
        assert!(
            !is_current(&site, &pool, *provider, account, id).await,
            "{provider:?}: a delta cannot see it (it is older than the watermark minus the lookback)"
        );
    }

    let sweep = site.run(&["sync", "--once", "--full"]).await;

    assert!(sweep.status.success(), "{}", sweep.tail());
    let notes = run_reports(&pool).await;
    assert!(
        notes.contains("later than the lookback allows for"),
        "{notes}"
    );
    assert!(
        sweep
            .stderr
            .contains("records arrived later than the lookback window")
    );
    pool.close().await;
    finish(&site, &[]).await;
}

/// Conversations sharing one timestamp across page boundaries are all mirrored, by the
/// initial sync and by the deltas. (Clusters stay smaller than a page: HighLevel's only
/// cursor is a timestamp, so a larger cluster cannot be paged through; see
/// src/provider/highlevel/keyset.rs.)
async fn tie_clusters_across_page_boundaries_are_not_lost(backend: Backend) {
    let mut options = sim_options(35, 60);
    options.tie_cluster_size = 4;
    let site = Site::start_on(backend, options, small_pages()).await;
    site.sync_full().await;
    site.assert_mirror_matches_truth().await;
    let a = site.sim.accounts().clone();
    for (provider, account) in [
        (Platform::D365, &a.d365[0].account),
        (Platform::Spruce, &a.spruce[0].account),
        (Platform::Sinch, &a.sinch[0].account),
        (Platform::HighLevel, &a.highlevel[0].account),
        (Platform::HighLevel, &a.highlevel[1].account),
    ] {
        let cluster = site.sim.tie_cluster(provider, account, 4).unwrap();
        // Newer activity above the cluster pushes it across the first page boundary.
        if provider == Platform::D365 {
            site.sim.create_conversations(provider, account, 3).unwrap();
        } else {
            let others: Vec<String> = site
                .sim
                .truth(provider, account)
                .await
                .unwrap()
                .into_iter()
                .filter(|t| !t.deleted && t.state == convsync_sim::ConversationState::Active)
                .map(|t| t.id)
                .filter(|id| !cluster.contains(id))
                .take(3)
                .collect();
            for id in others {
                tokio::time::sleep(Duration::from_millis(3)).await;
                site.sim
                    .add_message(provider, account, &id, MessageKind::Outbound)
                    .unwrap();
            }
        }
    }

    let delta = site.run(&["sync", "--once"]).await;

    assert!(delta.status.success(), "{}", delta.tail());
    finish(&site, &[]).await;
}

/// Provider timestamps ahead of the clock are mirrored as given, but no watermark moves
/// past now plus `max_clock_skew`; the run notes say so.
async fn future_timestamps_do_not_move_the_watermark_ahead(backend: Backend) {
    let site = site_with(backend, Faults::default(), SiteOptions::default()).await;
    site.sync_full().await;
    site.sim.set_faults(
        PlatformSelector::All,
        Faults {
            future_timestamp_ratio: 1.0,
            future_skew_ms: 3_600_000,
            ..Faults::default()
        },
    );
    site.sim.apply_activity(40).await;

    site.sync_full().await;

    let pool = site.mirror().await;
    let ceiling = convsync::time::Timestamp::now().saturating_add(Duration::from_secs(120));
    for (walk, watermark) in watermarks(&pool).await {
        assert!(watermark <= ceiling, "{walk:?} jumped ahead to {watermark}");
    }
    let notes = run_reports(&pool).await;
    assert!(notes.contains("lies in the future"), "{notes}");
    pool.close().await;
    finish(&site, &[]).await;
}

/// Retries are counted: the runs sent more requests than they applied pages.
async fn assert_requests_exceed_pages(site: &Site) {
    let pool = site.mirror().await;
    let (requests, pages): (i64, i64) = pool
        .sql_rows("SELECT CAST(SUM(requests) AS BIGINT), CAST(SUM(pages) AS BIGINT) FROM sync_runs")
        .await[0];
    assert!(requests > pages, "requests {requests}, pages {pages}");
    pool.close().await;
}

on_both_stores!(
    multi_thread: rate_limit_storm_with_retry_after_is_waited_out,
    rate_limit_storm_without_retry_after_is_retried,
    thirty_percent_server_errors_are_retried,
    latency_beyond_the_request_timeout_is_retried,
    connection_resets_are_retried,
    malformed_pages_are_fetched_again,
    persistently_malformed_pages_fail_without_advancing_anything,
    expired_page_tokens_restart_the_walk,
    credentials_expiring_mid_walk_are_refreshed,
    consistency_delay_within_the_lookback_loses_nothing,
    consistency_delay_beyond_the_lookback_is_reported_and_repaired,
    tie_clusters_across_page_boundaries_are_not_lost,
    future_timestamps_do_not_move_the_watermark_ahead,
);
