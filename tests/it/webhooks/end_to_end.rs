//! Webhooks end to end: the real simulator's signed events for its own activity, sent over
//! loopback to the receiver the daemon runs, for all four providers, with the keys the
//! generated configuration (`sim_config`, as `convsync demo` writes it) gives the sources.
//! Polls are an hour apart and the tests run no cycle while events flow, so what reaches
//! the mirror in between came by an event; the reconciliation poll then proves it
//! complete. Nothing here waits on a timer to decide a result: the tests wait until the
//! simulator's counters say every event is settled. Each test runs on both stores; the
//! checks on the simulator's counters and the receiver's metrics are shared with the test
//! of the real binaries (`process`).

use std::time::Duration;

use convsync::health::{Notifier, Service};
use convsync::sim_config::{
    SecretPlacement, SourceTuning, WebhookKeys, convsync_sources, write_highlevel_public_key,
};
use convsync_sim::{
    Platform, PlatformSelector, SimAccounts, SimHandle, SimOptions, Simulator, WebhookCounts,
    WebhookFaults, WebhookOutcome,
};
use tokio_util::sync::CancellationToken;

use crate::support::TestDb;
use crate::support::app::{Sweep, TestApp, spawn_app};
use crate::support::deploy::Scrape;
use crate::support::reliability::generated_sources;
use crate::support::stores::{Backend, MirrorSql, on_both_stores};
use crate::support::truth::{Reach, Truth, TruthSource};

/// The receiver's path prefix of each provider's entry (`sim_config`'s source names; one
/// account each).
pub(super) const ENTRIES: [(Platform, &str); 4] = [
    (Platform::D365, "d365-0"),
    (Platform::Spruce, "spruce-0"),
    (Platform::Sinch, "sinch-0"),
    (Platform::HighLevel, "highlevel"),
];

/// The simulator, the daemon over its generated configuration, and the receiver.
struct Site {
    sim: SimHandle,
    app: TestApp,
    config: convsync::config::Config,
    service: Option<(Service, CancellationToken)>,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

impl Site {
    /// One account of every provider on the real clock (event times are the simulated
    /// clock's, checked against the receiver's replay window), no background activity,
    /// `tune` applied on top; the daemon configured as `convsync demo` configures it, with
    /// polls an hour apart, its mirror on `backend`; the mirror backfilled by one cycle.
    async fn start(backend: Backend, seed: u64, tune: impl FnOnce(&mut SimOptions)) -> Site {
        let mut options = SimOptions {
            seed,
            conversations: 8,
            activity_rate: 0.0,
            d365_accounts: 1,
            spruce_accounts: 1,
            sinch_accounts: 1,
            highlevel_locations: 1,
            ..SimOptions::default()
        };
        tune(&mut options);
        let sim = Simulator::start(options).await.expect("simulator starts");
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("highlevel-webhook-public-key.pem");
        write_highlevel_public_key(&key).unwrap();
        let generated = convsync_sources(
            &sim,
            &SecretPlacement::Files(dir.path().join("secrets")),
            &SourceTuning {
                poll_interval: Some("1h".into()),
                sweep_interval: Some("1h".into()),
                highlevel_oauth: false,
                webhooks: Some(WebhookKeys {
                    highlevel_public_key: key,
                }),
            },
        );
        generated.write_secret_files().unwrap();
        let db = TestDb::on(backend).await;
        let path = dir.path().join("convsync.toml");
        std::fs::write(
            &path,
            format!(
                "[database]\nurl = \"{}\"\n\n[health]\nlisten = \"127.0.0.1:0\"\n\n[webhooks]\nlisten = \"127.0.0.1:0\"\n\n{}",
                db.settings.url, generated.toml
            ),
        )
        .unwrap();
        let config = db.load_config(&path);
        let app = spawn_app(&config)
            .await
            .following(Truth::simulator(&sim, truth_sources(sim.accounts())));
        let mut site = Site {
            sim,
            app,
            config,
            service: None,
            _db: db,
            _dir: dir,
        };
        site.start_receiver().await;
        site.app.sync_caught_up(Sweep::IfDue).await;
        site
    }

    /// Starts the receiver (on the port of the previous one, after a restart) and points
    /// every simulated account's webhooks at its entry.
    async fn start_receiver(&mut self) {
        let stop = CancellationToken::new();
        let service = Service::start_with_webhooks(
            &self.config.health,
            &self.config.webhooks,
            self.app.engine(),
            Notifier::disabled(),
            stop.clone(),
        )
        .await
        .unwrap();
        let addr = service.webhook_addr().expect("the receiver listens");
        // A restart binds the same port: the simulator keeps its targets.
        self.config.webhooks.listen = Some(addr);
        for (provider, entry) in ENTRIES {
            for key in self.sim.accounts().keys(provider) {
                let url = format!("http://{addr}/webhooks/{entry}").parse().unwrap();
                self.sim
                    .set_webhook_target(provider, &key, Some(url))
                    .unwrap();
            }
        }
        self.service = Some((service, stop));
    }

    async fn stop_receiver(&mut self) {
        let (service, stop) = self.service.take().expect("a running receiver");
        stop.cancel();
        service.stop().await;
    }

    async fn scrape(&self) -> Scrape {
        let (service, _) = self.service.as_ref().expect("a running receiver");
        Scrape::fetch(&format!("http://{}/", service.local_addr().unwrap())).await
    }

    /// Waits until every event the simulator generated has been sent, with its copies,
    /// and no retry is pending; returns the counters then.
    async fn settled(&self) -> WebhookCounts {
        for _ in 0..6_000 {
            let counts = self.sim.webhook_counts();
            if all_settled(&counts) {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "webhook deliveries never settled: {:?}",
            self.sim.webhook_counts()
        );
    }

    /// A fingerprint of the facts the mirror holds for an entry's conversations: id, last
    /// activity (as the store's text) and unread count of each.
    async fn fingerprint(&self, entry: &str) -> Vec<(String, Option<String>, Option<i64>)> {
        self.app
            .store()
            .sql_rows(&format!(
                "SELECT conversation_id, CAST(last_activity_at AS TEXT), unread_count \
                 FROM conversations WHERE {} ORDER BY conversation_id",
                of_entry(entry)
            ))
            .await
    }

    /// `webhook_deliveries` rows of an entry with `outcome`.
    async fn deliveries(&self, entry: &str, outcome: &str) -> i64 {
        deliveries(self.app.store(), entry, outcome).await
    }

    /// The reconciliation poll (with the follow-ups events queued: an event that moved a
    /// conversation's activity queued what the poll would have, so what the event did not
    /// carry is still read), then every source compared with the simulator's truth.
    async fn reconcile_and_compare(&self) {
        self.app.sync_caught_up(Sweep::Now).await;
        self.app.assert_mirror_matches_truth().await;
    }

    /// `changes` changes of the simulated world, a few milliseconds apart: two messages
    /// of one conversation within the same millisecond are a tie no provider timestamp
    /// can order (docs/webhooks.md, "Ordering"), which this test does not measure.
    async fn activity(&self, changes: u64) {
        for _ in 0..changes {
            self.sim.apply_activity(1).await;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }

    async fn shutdown(mut self) {
        if self.service.is_some() {
            self.stop_receiver().await;
        }
        self.sim.shutdown().await;
    }
}

/// Whether every event the simulator generated has been sent, with its copies, and no
/// retry is pending.
pub(super) fn all_settled(counts: &WebhookCounts) -> bool {
    Platform::ALL.iter().all(|&p| {
        let total = |o| counts.total(p, o);
        let generated = total(WebhookOutcome::Generated);
        total(WebhookOutcome::Handled) == generated
            && total(WebhookOutcome::Delivered)
                + total(WebhookOutcome::Failed)
                + total(WebhookOutcome::Dropped)
                + total(WebhookOutcome::Overflowed)
                >= generated
    })
}

/// `webhook_deliveries` rows of an entry's sources with `outcome`, in the mirror `db`.
pub(super) async fn deliveries(db: &impl MirrorSql, entry: &str, outcome: &str) -> i64 {
    db.sql_value(&format!(
        "SELECT COUNT(*) FROM webhook_deliveries WHERE {} AND outcome = '{outcome}'",
        of_entry(entry)
    ))
    .await
}

/// The SQL condition on `source` that selects an entry's sources (`entry`, or
/// `entry/account` where it expands to several).
pub(super) fn of_entry(entry: &str) -> String {
    format!("(source = '{entry}' OR source LIKE '{entry}/%')")
}

/// Asserts that no forged copy of an entry's events was recorded in the mirror `db` (a
/// forged copy carries an id of its own).
pub(super) async fn assert_no_forgery_recorded(
    db: &impl MirrorSql,
    provider: Platform,
    entry: &str,
) {
    let forged: i64 = db
        .sql_value(&format!(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE {} AND event_id LIKE '%-forged-%'",
            of_entry(entry)
        ))
        .await;
    assert_eq!(forged, 0, "{provider}: forged events recorded");
}

/// The sources the generated configuration holds (with webhooks: D365 reads its messages),
/// in a world only the test changes.
pub(super) fn truth_sources(accounts: &SimAccounts) -> Vec<TruthSource> {
    generated_sources(accounts)
        .into_iter()
        .map(|source| {
            source.reaching(Reach {
                d365_messages: true,
                ..Reach::BUSY
            })
        })
        .collect()
}

/// Each provider's attempts per event at most (docs/webhooks.md).
struct RetryPolicy;

impl RetryPolicy {
    fn attempts(provider: Platform) -> u64 {
        match provider {
            Platform::Spruce => 10,
            Platform::HighLevel => 7,
            Platform::D365 => 4,
            Platform::Sinch => 6,
        }
    }
}

/// The sum of a counter over every series of an entry's sources with `labels`.
pub(super) fn entry_sum(
    scrape: &Scrape,
    metric: &str,
    entry: &str,
    labels: &[(&str, &str)],
) -> f64 {
    use prometheus_parse::Value;
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| {
            s.labels
                .get("source")
                .is_some_and(|src| src == entry || src.starts_with(&format!("{entry}/")))
        })
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            _ => 0.0,
        })
        .fold(0.0, |sum, v| sum + v)
}

/// Asserts that the receiver took each of an entry's `generated` events once, as accepted
/// or as a duplicate; returns the duplicates. The receiver recognises an id it has applied
/// (Sinch names an event by its kind and message id) as a duplicate: answered 200,
/// written once.
pub(super) fn assert_taken(
    scrape: &Scrape,
    provider: Platform,
    entry: &str,
    generated: u64,
) -> f64 {
    let events = |outcome| {
        entry_sum(
            scrape,
            "convsync_webhook_events_total",
            entry,
            &[("outcome", outcome)],
        )
    };
    let duplicate = events("duplicate");
    assert_eq!(
        events("accepted") + duplicate,
        generated as f64,
        "{provider}: events taken"
    );
    duplicate
}

/// The median of the event→commit histogram over every source (linear within the
/// bucket), in seconds; `None` without observations.
pub(super) fn median_event_to_commit(scrape: &Scrape) -> Option<f64> {
    use prometheus_parse::Value;
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for sample in &scrape.samples {
        if sample.metric != "convsync_webhook_event_to_commit_seconds" {
            continue;
        }
        if let Value::Histogram(counts) = &sample.value {
            for c in counts {
                match buckets.iter_mut().find(|(le, _)| *le == c.less_than) {
                    Some((_, n)) => *n += c.count,
                    None => buckets.push((c.less_than, c.count)),
                }
            }
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let half = total / 2.0;
    let (mut low, mut below) = (0.0, 0.0);
    for (le, n) in buckets {
        if n >= half {
            if !le.is_finite() {
                return Some(low);
            }
            let share = if n > below {
                (half - below) / (n - below)
            } else {
                1.0
            };
            return Some(low + (le - low) * share);
        }
        (low, below) = (le, n);
    }
    None
}

/// Asserts how the receiver refused an entry's copies (its metrics in `scrape`, the
/// simulator's `counts`): a forged copy is sent once and refused for its signature, with
/// 401, unless it is a copy of an oversized event (refused for its size before its
/// signature is read); a replayed copy is refused as stale, at most once each (an
/// occasional one is not counted as stale: see the report on issue 24); an oversized event
/// is refused for its size at each attempt its provider's policy makes; nothing else is
/// refused.
pub(super) fn assert_refusals(
    scrape: &Scrape,
    counts: &WebhookCounts,
    provider: Platform,
    entry: &str,
) {
    let total = |o| counts.total(provider, o);
    let rejected = |reason: Option<&str>| {
        let mut labels = vec![("outcome", "rejected")];
        labels.extend(reason.map(|r| ("reason", r)));
        entry_sum(scrape, "convsync_webhook_events_total", entry, &labels)
    };
    let signatures = rejected(Some("bad_signature")) + rejected(Some("missing_signature"));
    let too_large = rejected(Some("too_large"));
    let stale = rejected(Some("stale"));
    assert_eq!(
        rejected(None),
        signatures + too_large + stale,
        "{provider}: refused for another reason ({counts:?})"
    );
    let forged = total(WebhookOutcome::Forged);
    let refused_forgeries = total(WebhookOutcome::ForgedRefused);
    let oversized = total(WebhookOutcome::Oversized);
    assert_eq!(
        signatures, refused_forgeries as f64,
        "{provider}: refused signatures counted, forged copies answered 401 ({counts:?})"
    );
    assert!(
        refused_forgeries <= forged && refused_forgeries + oversized >= forged,
        "{provider}: {refused_forgeries} of {forged} forged copies answered 401 ({counts:?})"
    );
    let replayed = total(WebhookOutcome::Replayed);
    assert!(
        stale <= replayed as f64 && (replayed == 0 || stale > 0.0),
        "{provider}: {stale} stale for {replayed} replayed"
    );
    let attempts = RetryPolicy::attempts(provider);
    assert!(
        too_large >= oversized as f64 && too_large <= (oversized * attempts) as f64,
        "{provider}: {too_large} refused as too large for {oversized} oversized events"
    );
}

/// Asserts that the events generated while the receiver was down reached it once the
/// provider retried them (every provider but HighLevel, which retries a 429 only: what
/// met the closed port is the poll's to find, and is reported). `counts` are the
/// simulator's since the receiver went down, `scrape` the restarted receiver's metrics.
pub(super) fn assert_retried_events_taken(scrape: &Scrape, counts: &WebhookCounts) {
    for (provider, entry) in ENTRIES {
        let generated = counts.total(provider, WebhookOutcome::Generated);
        if provider == Platform::HighLevel {
            println!(
                "{provider}: {} of {generated} events lost while the receiver was down",
                counts.total(provider, WebhookOutcome::Failed)
            );
            continue;
        }
        assert!(
            counts.total(provider, WebhookOutcome::Retried) > 0,
            "{provider}: no attempt met the closed port"
        );
        assert_eq!(
            counts.total(provider, WebhookOutcome::Delivered),
            generated,
            "{provider}: every event delivered after the restart: {counts:?}"
        );
        assert_taken(scrape, provider, entry, generated);
    }
}

/// The providers that retry an attempt that found no receiver.
pub(super) const RETRYING: [Platform; 3] = [Platform::D365, Platform::Spruce, Platform::Sinch];

/// Events reach the mirror by the receiver alone, before any poll; the reconciliation
/// poll then finds the mirror equal to the truth. Reports the median event→commit delay.
async fn every_providers_events_reach_the_mirror_before_any_poll(backend: Backend) {
    let site = Site::start(backend, 2401, |_| {}).await;
    let before: Vec<_> =
        futures::future::join_all(ENTRIES.iter().map(|(_, entry)| site.fingerprint(entry))).await;
    site.sim.reset_counts();

    site.activity(60).await;
    let counts = site.settled().await;

    // No cycle ran: the daemon asked the simulator nothing while the events flowed.
    let requests = site.sim.request_counts();
    let asked: u64 = Platform::ALL.iter().map(|&p| requests.total(p, "")).sum();
    assert_eq!(asked, 0, "requests to the simulator while events flowed");
    let scrape = site.scrape().await;
    for (i, (provider, entry)) in ENTRIES.iter().enumerate() {
        let generated = counts.total(*provider, WebhookOutcome::Generated);
        assert!(generated > 0, "{provider}: no event for 60 changes");
        assert_eq!(
            counts.total(*provider, WebhookOutcome::Delivered),
            generated,
            "{provider}: every event taken: {counts:?}"
        );
        let duplicate = assert_taken(&scrape, *provider, entry, generated);
        let rejected = entry_sum(
            &scrape,
            "convsync_webhook_events_total",
            entry,
            &[("outcome", "rejected")],
        );
        assert_eq!(rejected, 0.0, "{provider}: rejected events");
        let applied = site.deliveries(entry, "applied").await;
        let queued = site.deliveries(entry, "queued").await;
        println!(
            "{provider}: {generated} events, {applied} applied, {queued} queued follow-ups, \
             {duplicate} duplicates"
        );
        assert!(
            applied + queued > 0,
            "{provider}: no event changed anything"
        );
        if applied > 0 {
            // The facts an event carries are in the mirror before any poll.
            assert_ne!(site.fingerprint(entry).await, before[i], "{provider}");
            assert!(
                entry_sum(
                    &scrape,
                    "convsync_changes_first_seen_total",
                    entry,
                    &[("path", "event")]
                ) > 0.0,
                "{provider}: changes first seen by an event"
            );
        }
    }
    let median = median_event_to_commit(&scrape).expect("events were committed");
    println!(
        "median event→mirror delay ({backend:?}): {:.1} ms",
        median * 1_000.0
    );

    // The reconciliation poll (and the follow-ups the events queued) completes the mirror.
    site.reconcile_and_compare().await;
    site.shutdown().await;
}

/// With every webhook fault at once, forged, replayed and oversized copies are refused
/// and write nothing, and the reconciliation poll makes every source equal the truth.
async fn with_every_fault_the_reconciliation_poll_makes_the_mirror_equal_the_truth(
    backend: Backend,
) {
    // Retries a thousand times sooner than the providers' (an oversized event is sent
    // again as each provider's policy says).
    let site = Site::start(backend, 2402, |o| o.webhook_retry_scale = 0.001).await;
    site.sim.set_webhook_faults(
        PlatformSelector::All,
        WebhookFaults {
            drop_ratio: 0.1,
            duplicate_ratio: 0.2,
            delay_ratio: 0.2,
            delay_ms: 150,
            reorder_ratio: 0.2,
            forge_ratio: 0.2,
            replay_ratio: 0.2,
            oversize_ratio: 0.1,
            ..WebhookFaults::default()
        },
    );
    site.activity(80).await;
    let counts = site.settled().await;
    let scrape = site.scrape().await;
    for (provider, entry) in ENTRIES {
        let total = |o| counts.total(provider, o);
        let refused = total(WebhookOutcome::Forged)
            + total(WebhookOutcome::Replayed)
            + total(WebhookOutcome::Oversized);
        assert!(refused > 0, "{provider}: no fault drawn: {counts:?}");
        assert_refusals(&scrape, &counts, provider, entry);
        assert_no_forgery_recorded(site.app.store(), provider, entry).await;
    }
    site.reconcile_and_compare().await;
    site.shutdown().await;
}

/// Events generated while the receiver is down reach the mirror once it is back, for
/// every provider that retries; the reconciliation poll finds the rest.
async fn a_receiver_restart_with_events_in_flight_loses_none_the_provider_retries(
    backend: Backend,
) {
    // Retries a tenth as far apart as the providers' (Spruce: 12 s, D365: 1 s, Sinch from
    // 100 ms doubling).
    let mut site = Site::start(backend, 2403, |o| o.webhook_retry_scale = 0.1).await;
    site.stop_receiver().await;
    site.activity(40).await;
    // Every provider that retries has met the closed port at least once.
    for _ in 0..3_000 {
        let counts = site.sim.webhook_counts();
        if RETRYING
            .iter()
            .all(|&p| counts.total(p, WebhookOutcome::Retried) > 0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    site.start_receiver().await;
    let counts = site.settled().await;
    assert_retried_events_taken(&site.scrape().await, &counts);
    site.reconcile_and_compare().await;
    site.shutdown().await;
}

/// A 2025-09 D365 tenant authenticates its webhooks with Entra access tokens: the daemon,
/// configured with `webhook_entra` as `sim_config` writes it, checks each against the
/// tenant's signing keys, which it fetches from the simulator once; forged tokens (signed
/// with an unpublished key under a published key's id) are refused as invalid and write
/// nothing; the reconciliation poll then finds the D365 mirror equal to the truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d365_entra_tokens_are_checked_against_the_tenants_published_keys() {
    let site = Site::start(Backend::Sqlite, 2404, |o| {
        o.d365_header_names = convsync_sim::options::D365HeaderNames::Plain;
    })
    .await;
    assert!(site.sim.d365_sends_entra_tokens());
    site.sim.set_webhook_faults(
        Platform::D365,
        WebhookFaults {
            forge_ratio: 0.3,
            ..WebhookFaults::default()
        },
    );
    site.activity(120).await;
    let counts = site.settled().await;
    let scrape = site.scrape().await;
    let (provider, entry) = ENTRIES[0];
    let generated = counts.total(provider, WebhookOutcome::Generated);
    let forged = counts.total(provider, WebhookOutcome::Forged);
    assert!(generated > 0 && forged > 0, "{counts:?}");
    assert_taken(&scrape, provider, entry, generated);
    let invalid = entry_sum(
        &scrape,
        "convsync_webhook_events_total",
        entry,
        &[("outcome", "rejected"), ("reason", "invalid_token")],
    );
    assert_eq!(invalid, forged as f64, "{counts:?}");
    let rejected = entry_sum(
        &scrape,
        "convsync_webhook_events_total",
        entry,
        &[("outcome", "rejected")],
    );
    assert_eq!(rejected, invalid, "no other refusal");
    println!("D365: {generated} events, {forged} forged copies refused as invalid_token");
    let key_fetches = site
        .sim
        .request_counts()
        .total(provider, "/discovery/v2.0/keys");
    assert_eq!(
        key_fetches, 1,
        "the tenant's keys fetched once for every token"
    );
    let forged_recorded: i64 = site
        .app
        .store()
        .sql_value(&format!(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE source = '{entry}' \
             AND event_id LIKE '%-forged-%'"
        ))
        .await;
    assert_eq!(forged_recorded, 0, "forged events recorded");
    // What this test is about is D365's: its source is compared with the truth.
    site.app.sync_caught_up(Sweep::Now).await;
    site.app.assert_source_matches_truth(entry).await;
    site.shutdown().await;
}

/// While the tenant's signing keys cannot be fetched, a D365 event is neither accepted nor
/// refused for good: it is answered 503 (D365 sends it again), counted as
/// `keys_unavailable`, and writes nothing; the failed fetch is not repeated for every
/// request; the reconciliation poll then brings the D365 mirror up to the truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d365_events_are_deferred_while_the_tenants_keys_cannot_be_fetched() {
    let site = Site::start(Backend::Sqlite, 2405, |o| {
        o.d365_header_names = convsync_sim::options::D365HeaderNames::Plain;
        o.webhook_retry_scale = 0.001;
    })
    .await;
    let (provider, entry) = ENTRIES[0];
    // Every D365 request fails, the key set's included (the token endpoint is spared).
    site.sim.set_faults(
        provider,
        convsync_sim::Faults {
            error_5xx_ratio: 1.0,
            ..convsync_sim::Faults::default()
        },
    );
    site.activity(80).await;
    let counts = site.settled().await;
    let scrape = site.scrape().await;
    let generated = counts.total(provider, WebhookOutcome::Generated);
    assert!(generated > 0, "{counts:?}");
    assert_eq!(
        counts.total(provider, WebhookOutcome::Delivered),
        0,
        "{counts:?}"
    );
    let events = |labels: &[(&str, &str)]| {
        entry_sum(&scrape, "convsync_webhook_events_total", entry, labels)
    };
    let unavailable = events(&[("outcome", "rejected"), ("reason", "keys_unavailable")]);
    assert!(
        unavailable >= generated as f64,
        "{unavailable} deferred for {generated} events"
    );
    assert_eq!(events(&[("outcome", "rejected")]), unavailable);
    assert_eq!(events(&[("outcome", "accepted")]), 0.0);
    let recorded: i64 = site
        .app
        .store()
        .sql_value(&format!(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE source = '{entry}'"
        ))
        .await;
    assert_eq!(recorded, 0, "nothing written");
    let key_fetches = site
        .sim
        .request_counts()
        .total(provider, "/discovery/v2.0/keys");
    println!(
        "D365: {generated} events, {unavailable} requests deferred (503), {key_fetches} key fetches"
    );
    // One failed fetch, then none for 30 s (two if this test ran past that gap).
    assert!(
        (1..=2).contains(&key_fetches) && unavailable >= 4.0 * key_fetches as f64,
        "{key_fetches} key fetches for {unavailable} deferred requests"
    );
    site.sim
        .set_faults(provider, convsync_sim::Faults::default());
    site.app.sync_caught_up(Sweep::Now).await;
    site.app.assert_source_matches_truth(entry).await;
    site.shutdown().await;
}

on_both_stores!(
    multi_thread: every_providers_events_reach_the_mirror_before_any_poll,
    with_every_fault_the_reconciliation_poll_makes_the_mirror_equal_the_truth,
    a_receiver_restart_with_events_in_flight_loses_none_the_provider_retries,
);
