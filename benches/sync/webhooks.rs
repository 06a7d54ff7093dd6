//! Webhook throughput (`-- --webhooks`, alone; a small version in `--smoke`): the real
//! `convsync run` daemon with its receiver on loopback and a SQLite mirror (and a PostgreSQL
//! one of a throw-away cluster, `--backends`), fed correctly
//! signed Spruce events (`X-Spruce-Signature`, signed with the receiver's own HMAC helper)
//! about N distinct mirrored conversations by a bounded load generator, at increasing
//! concurrency; then the same with faults (10 % duplicates, 5 % forged) to show what a
//! refusal costs.
//!
//! Per level: accepted events per second, the client's acknowledgement time (send → 200:
//! the receiver answers after the commit, so this is receive→commit plus loopback), the
//! receiver's own mean arrival→commit time from its histogram on `/metrics`, the daemon's
//! CPU time (`/proc/<pid>/stat`) and peak RSS (`VmHWM`). Every answer must be the expected
//! one (200 for new events and duplicates, 401 for forgeries) and the daemon's counters must
//! agree with the generator's, or the bench fails.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use convsync::provider::webhook::signature::hmac_sha256_tag;
use convsync::store::{Store, StoreSettings};
use convsync::time::Timestamp;
use convsync_sim::Platform;
use convsync_testpg::TestPgDb;

use crate::process;
use crate::simproc::{self, Budget, SimProcess};
use crate::{Args, BackendArg, Checks, Env, load_average, sqlite_url};

/// The signing secret configured for the measured source (a bench value, not a secret).
const SECRET: &str = "whsec-bench-spruce";
/// The key forged events are signed with.
const FORGED_KEY: &str = "whsec-not-the-endpoint-secret";
/// The simulator's Spruce source name (`spruce-0`): the receiver's path.
const SOURCE: &str = "spruce-0";

/// What to run.
pub struct Plan {
    /// Distinct conversations the events are about (all mirrored before the load starts).
    pub conversations: u32,
    /// Concurrent senders, one level each.
    pub concurrency: Vec<usize>,
    /// Events per level (fewer if `level_time` runs out first).
    pub events: usize,
    /// The longest a level sends for.
    pub level_time: Duration,
}

impl Plan {
    /// The full measurement, or the CI version.
    pub fn new(smoke: bool, concurrency: &[usize], events: usize) -> Plan {
        if smoke {
            Plan {
                conversations: 200,
                concurrency: vec![1, 8],
                events: 300,
                level_time: Duration::from_secs(30),
            }
        } else {
            Plan {
                conversations: 1000,
                concurrency: concurrency.to_vec(),
                events,
                level_time: Duration::from_secs(60),
            }
        }
    }
}

/// One level's figures.
pub struct Level {
    backend: BackendArg,
    faults: bool,
    concurrency: usize,
    /// New events answered 200.
    accepted: usize,
    /// Of those, the ones the daemon counted as changing the mirror (the rest: stale under
    /// the ordering rule, a newer event about the same conversation having committed first).
    applied: usize,
    /// Duplicates sent (each must be answered 200 and write nothing).
    duplicates: usize,
    /// Forged events sent (each must be answered 401).
    forged: usize,
    /// Answers other than the expected ones.
    unexpected: usize,
    wall: Duration,
    /// Acknowledgement times of the new events, sorted.
    ack: Vec<Duration>,
    /// Mean acknowledgement time of the forged events.
    forged_ack: Option<Duration>,
    /// The receiver's mean arrival→commit time over the level (its histogram).
    server_commit: Option<Duration>,
    cpu: Duration,
    peak_rss_mib: f64,
    load: String,
}

/// Measures and prints the scenario `args` asks for (the CI version under `--smoke`).
pub async fn run(env: &Env, args: &Args, checks: &mut Checks) -> anyhow::Result<()> {
    let plan = Plan::new(args.smoke, &args.webhook_concurrency, args.webhook_events);
    let levels = measure(env, &plan, &args.backends, checks)
        .await
        .context("webhooks")?;
    print(&levels);
    Ok(())
}

/// Backfills the mirror, starts `convsync run` with the receiver, sends every level, and
/// checks the daemon's counters against what was sent.
pub async fn measure(
    env: &Env,
    plan: &Plan,
    backends: &[BackendArg],
    checks: &mut Checks,
) -> anyhow::Result<Vec<Level>> {
    let dir = env.work.join("webhooks");
    std::fs::create_dir_all(&dir)?;
    let sim = SimProcess::start(
        &env.bin,
        Platform::Spruce,
        plan.conversations,
        &simproc::unlimited_flags(),
        &dir.join("simulator.log"),
    )
    .await?;
    let mut levels = Vec::new();
    let mut result = Ok(());
    for &backend in backends {
        let run_dir = dir.join(format!("{backend:?}"));
        std::fs::create_dir_all(&run_dir)?;
        match with_simulator(env, plan, &sim, &run_dir, backend, checks).await {
            Ok(mut more) => levels.append(&mut more),
            Err(e) => {
                result = Err(e.context(format!("{backend:?}")));
                break;
            }
        }
    }
    sim.stop().await;
    result.map(|()| levels)
}

async fn with_simulator(
    env: &Env,
    plan: &Plan,
    sim: &SimProcess,
    dir: &Path,
    backend: BackendArg,
    checks: &mut Checks,
) -> anyhow::Result<Vec<Level>> {
    let postgres = match backend {
        BackendArg::Sqlite => None,
        BackendArg::Postgres => Some(TestPgDb::new().await),
    };
    let url = match &postgres {
        Some(db) => db.url.clone(),
        None => sqlite_url(&dir.join("mirror.db")),
    };
    let config = sim.write_config(dir, &url, Budget::Unlimited)?;
    let backfill = process::sync_once(&env.bin, &config, &dir.join("sync.log")).await?;
    anyhow::ensure!(backfill.success, "the backfill failed (see sync.log)");
    let ids = conversation_ids(&url, plan.conversations).await?;
    anyhow::ensure!(!ids.is_empty(), "the backfill mirrored nothing");
    println!(
        "webhooks: {} events per level about {} distinct mirrored conversations",
        plan.events,
        ids.len()
    );

    let health = free_port()?;
    let receiver = free_port()?;
    let secret_file = dir.join("secrets").join("spruce-webhook-secret");
    std::fs::write(&secret_file, SECRET)?;
    // The generated file ends in `[sources.spruce]`: the key joins it. Polls wait an hour,
    // so that the load meets the receiver alone.
    let mut text = std::fs::read_to_string(&config)?.replace(
        "sweep_interval = ",
        "poll_interval = \"1h\"\nsweep_interval = ",
    );
    text.push_str(&format!(
        "webhook_secret = {{ file = \"{}\" }}\n\n[health]\nlisten = \"127.0.0.1:{health}\"\n\n\
         [webhooks]\nlisten = \"127.0.0.1:{receiver}\"\n",
        secret_file.display()
    ));
    std::fs::write(&config, text)?;

    let daemon = process::spawn(&env.bin, &config, &["run"], &dir.join("run.log"))?;
    let pid = daemon.pid();
    let loaded = load(
        backend,
        plan,
        pid,
        &ids,
        &format!("http://127.0.0.1:{health}"),
        &format!("http://127.0.0.1:{receiver}/webhooks/{SOURCE}"),
        checks,
    )
    .await;
    daemon.terminate();
    let stats = tokio::task::spawn_blocking(move || daemon.wait()).await??;
    checks.expect(
        stats.success,
        format!(
            "webhooks: convsync run did not exit cleanly (see {})",
            dir.join("run.log").display()
        ),
    );
    loaded
}

/// Waits for the daemon, runs every level, and compares its counters with the generator's.
async fn load(
    backend: BackendArg,
    plan: &Plan,
    pid: libc::pid_t,
    ids: &[String],
    health: &str,
    receiver: &str,
    checks: &mut Checks,
) -> anyhow::Result<Vec<Level>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()?;
    let ready = Instant::now();
    loop {
        let answer = client.get(format!("{health}/readyz")).send().await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        if ready.elapsed() > Duration::from_secs(120) {
            bail!("convsync run did not become ready within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut levels = Vec::new();
    let mut first = 0;
    for faults in [false, true] {
        for &concurrency in &plan.concurrency {
            let before = scrape(&client, health).await?;
            let cpu_before = cpu_time(pid)?;
            let level = send_level(&client, receiver, ids, plan, faults, concurrency, first)
                .await
                .with_context(|| format!("concurrency {concurrency}"))?;
            let level = Level { backend, ..level };
            first += plan.events;
            let after = scrape(&client, health).await?;
            let histogram = |text: &str, part: &str| {
                metric_sum(
                    text,
                    &format!("convsync_webhook_receive_to_commit_seconds_{part}"),
                    &[],
                )
            };
            let count = histogram(&after, "count") - histogram(&before, "count");
            let sum = histogram(&after, "sum") - histogram(&before, "sum");
            let level = Level {
                server_commit: (count > 0.0).then(|| Duration::from_secs_f64(sum / count)),
                cpu: cpu_time(pid)?.saturating_sub(cpu_before),
                peak_rss_mib: process::vm_hwm_kib(pid).unwrap_or(0) as f64 / 1024.0,
                load: load_average(),
                ..level
            };
            eprintln!(
                "[webhooks {backend:?}{} c={concurrency}] {} accepted in {:.2} s, {} duplicates, {} forged, {} unexpected",
                if faults { " faults" } else { "" },
                level.accepted,
                level.wall.as_secs_f64(),
                level.duplicates,
                level.forged,
                level.unexpected
            );
            checks.expect(
                level.unexpected == 0,
                format!(
                    "webhooks c={concurrency}: {} unexpected answers",
                    level.unexpected
                ),
            );
            let counted = |reason: &str, outcome: &str| {
                metric_sum(
                    &after,
                    "convsync_webhook_events_total",
                    &[("outcome", outcome), ("reason", reason)],
                ) - metric_sum(
                    &before,
                    "convsync_webhook_events_total",
                    &[("outcome", outcome), ("reason", reason)],
                )
            };
            let applied = counted("applied", "accepted") + counted("unchanged", "accepted");
            let stale = counted("stale", "accepted");
            checks.expect(
                (applied + stale) as usize == level.accepted
                    && counted("bad_signature", "rejected") as usize == level.forged,
                format!(
                    "webhooks c={concurrency}: the daemon counted {applied} applied, {stale} stale, {} forged; sent {} new, {} forged",
                    counted("bad_signature", "rejected"),
                    level.accepted,
                    level.forged
                ),
            );
            let duplicates = metric_sum(
                &after,
                "convsync_webhook_events_total",
                &[("outcome", "duplicate")],
            ) - metric_sum(
                &before,
                "convsync_webhook_events_total",
                &[("outcome", "duplicate")],
            );
            checks.expect(
                duplicates as usize == level.duplicates,
                format!(
                    "webhooks c={concurrency}: {duplicates} duplicates counted, {} sent",
                    level.duplicates
                ),
            );
            levels.push(Level {
                applied: applied as usize,
                ..level
            });
        }
    }
    Ok(levels)
}

/// What one request was.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    New,
    Duplicate,
    Forged,
}

/// The kind of the `k`-th event of a level: with faults, every 20th is forged (5 %) and
/// two in 20 resend an event already acknowledged (10 %).
fn kind_of(k: usize, faults: bool) -> Kind {
    match (faults, k % 20) {
        (true, 0) => Kind::Forged,
        (true, 5 | 15) => Kind::Duplicate,
        _ => Kind::New,
    }
}

/// Sends one level's events from `concurrency` tasks; a duplicate resends an event already
/// acknowledged (so it never races its original).
async fn send_level(
    client: &reqwest::Client,
    receiver: &str,
    ids: &[String],
    plan: &Plan,
    faults: bool,
    concurrency: usize,
    first: usize,
) -> anyhow::Result<Level> {
    let next = Arc::new(AtomicUsize::new(0));
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let ids: Arc<[String]> = ids.into();
    let deadline = Instant::now() + plan.level_time;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, receiver, next, acknowledged, ids) = (
            client.clone(),
            receiver.to_owned(),
            next.clone(),
            acknowledged.clone(),
            ids.clone(),
        );
        let events = plan.events;
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= events || Instant::now() >= deadline {
                    break;
                }
                let mut kind = kind_of(k, faults);
                let resent = (kind == Kind::Duplicate)
                    .then(|| {
                        let done = acknowledged.lock().expect("not poisoned");
                        done.get(k % done.len().max(1)).cloned()
                    })
                    .flatten();
                if kind == Kind::Duplicate && resent.is_none() {
                    kind = Kind::New;
                }
                let (body, signature) = match resent {
                    Some(pair) => pair,
                    None => {
                        let seq = first + k;
                        let body = event(&format!("wev_bench_{seq}"), &ids[seq % ids.len()]);
                        let key = if kind == Kind::Forged {
                            FORGED_KEY
                        } else {
                            SECRET
                        };
                        let signature = sign(&body, key);
                        (body, signature)
                    }
                };
                let sent = Instant::now();
                let status = client
                    .post(&receiver)
                    .header("X-Spruce-Signature", &signature)
                    .header("Content-Type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                let took = sent.elapsed();
                if kind == Kind::New && status == 200 {
                    acknowledged
                        .lock()
                        .expect("not poisoned")
                        .push((body, signature));
                }
                results.push((kind, status, took));
            }
            results
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.extend(task.await?);
    }
    let wall = started.elapsed();
    let expected = |kind: Kind| if kind == Kind::Forged { 401 } else { 200 };
    let count = |kind: Kind| results.iter().filter(|(k, _, _)| *k == kind).count();
    let mut ack: Vec<Duration> = results
        .iter()
        .filter(|(k, s, _)| *k == Kind::New && *s == 200)
        .map(|(_, _, t)| *t)
        .collect();
    ack.sort();
    let forged: Vec<Duration> = results
        .iter()
        .filter(|(k, _, _)| *k == Kind::Forged)
        .map(|(_, _, t)| *t)
        .collect();
    Ok(Level {
        backend: BackendArg::Sqlite,
        faults,
        concurrency,
        accepted: ack.len(),
        applied: 0,
        duplicates: count(Kind::Duplicate),
        forged: forged.len(),
        unexpected: results
            .iter()
            .filter(|(k, s, _)| *s != expected(*k))
            .count(),
        wall,
        ack,
        forged_ack: u32::try_from(forged.len())
            .ok()
            .filter(|n| *n > 0)
            .map(|n| forged.iter().sum::<Duration>() / n),
        server_commit: None,
        cpu: Duration::ZERO,
        peak_rss_mib: 0.0,
        load: String::new(),
    })
}

/// A Spruce `conversationItem.created` event: an inbound message in `conversation` now.
fn event(id: &str, conversation: &str) -> String {
    let now = Timestamp::now().to_mirror_text();
    serde_json::json!({
        "object": "event",
        "id": id,
        "type": "conversationItem.created",
        "eventTime": now,
        "data": { "object": {
            "object": "conversationItem",
            "id": format!("item_{id}"),
            "conversationId": conversation,
            "direction": "inbound",
            "isInternalNote": false,
            "createdAt": now,
        }},
    })
    .to_string()
}

/// `X-Spruce-Signature`: base64 of the body's HMAC-SHA256 under `key`.
fn sign(body: &str, key: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(hmac_sha256_tag(key.as_bytes(), &[body.as_bytes()]))
}

/// The first `limit` mirrored conversations of the mirror at `url`.
async fn conversation_ids(url: &str, limit: u32) -> anyhow::Result<Vec<String>> {
    let store = Store::connect(&StoreSettings {
        url: url.to_owned(),
        max_connections: 1,
        ..StoreSettings::default()
    })
    .await?;
    let limit = i64::from(limit);
    let ids = if let Some(sqlite) = store.as_sqlite() {
        sqlx::query_scalar(
            "SELECT conversation_id FROM conversations WHERE deleted_at IS NULL
             ORDER BY conversation_id LIMIT ?",
        )
        .bind(limit)
        .fetch_all(sqlite.pool())
        .await?
    } else if let Some(postgres) = store.as_postgres() {
        sqlx::query_scalar(
            "SELECT conversation_id FROM conversations WHERE deleted_at IS NULL
             ORDER BY conversation_id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(postgres.pool())
        .await?
    } else {
        bail!("a mirror that is neither SQLite nor PostgreSQL")
    };
    store.close().await;
    Ok(ids)
}

/// A loopback port free now (the daemon binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn scrape(client: &reqwest::Client, health: &str) -> anyhow::Result<String> {
    Ok(client
        .get(format!("{health}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// The sum of the samples of `name` whose labels include every `(key, value)` in `labels`.
fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

/// The process's user + system CPU time so far (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_time(pid: libc::pid_t) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("/proc/<pid>/stat without a command")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("short /proc/<pid>/stat")?.parse()?)
    };
    // SAFETY: sysconf reads a constant.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let total = ticks(11)?.saturating_add(ticks(12)?);
    Ok(Duration::from_secs_f64(total as f64 / per_second as f64))
}

/// The `q`-quantile of sorted `values`, in milliseconds.
fn quantile_ms(values: &[Duration], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    values[rank - 1].as_secs_f64() * 1000.0
}

/// The table.
pub fn print(levels: &[Level]) {
    if levels.is_empty() {
        return;
    }
    println!("### Webhooks: signed Spruce events into `convsync run`\n");
    println!(
        "| backend | faults | concurrency | accepted | applied | events/s | ack p50 ms | ack p95 ms | ack p99 ms | receiver arrival→commit mean ms | duplicates | forged (401) | forged ack mean ms | unexpected | daemon CPU s | CPU % | peak RSS MiB | load average |"
    );
    println!(
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for l in levels {
        let ms = |d: Option<Duration>| {
            d.map_or("–".to_owned(), |d| {
                format!("{:.2}", d.as_secs_f64() * 1000.0)
            })
        };
        let wall = l.wall.as_secs_f64();
        println!(
            "| {:?} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {:.2} | {:.0} % | {:.1} | {} |",
            l.backend,
            if l.faults {
                "10 % dup, 5 % forged"
            } else {
                "none"
            },
            l.concurrency,
            l.accepted,
            l.applied,
            l.accepted as f64 / wall,
            quantile_ms(&l.ack, 0.50),
            quantile_ms(&l.ack, 0.95),
            quantile_ms(&l.ack, 0.99),
            ms(l.server_commit),
            l.duplicates,
            l.forged,
            ms(l.forged_ack),
            l.unexpected,
            l.cpu.as_secs_f64(),
            l.cpu.as_secs_f64() / wall * 100.0,
            l.peak_rss_mib,
            l.load,
        );
    }
    println!();
}
