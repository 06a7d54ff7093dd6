//! `convsync verify` (docs/verify.md), the real binary against the simulator on both
//! stores: a mirror corrupted on purpose — a row deleted, a timestamp aged, a row the
//! provider never had, a listed one marked deleted — is reported kind by kind with the ids
//! (exit 1, `--json`), a clean one is not (exit 0); the mirror's conversations are the
//! same before and after; each verification is recorded and shown on /metrics; `--sample
//! N` checks N; and `convsync run` verifies on `verify_interval` only when it is set.

use std::time::Duration;

use serde_json::Value;

use super::{JsonRow, json_rows};
use crate::support::reliability::{
    PATIENCE, Site, SiteOptions, sim_options, wait_every_source_caught_up,
};
use crate::support::stores::{Backend, MirrorSql, on_both_stores};

on_both_stores!(multi_thread: each_corruption_is_reported_with_its_id, a_sample_checks_n, the_daemon_verifies_only_when_verify_interval_is_set);

/// Every column a write would change, instants as text, `payload_hash` left out (a BLOB
/// on SQLite): the mirror's conversations as a reader sees them.
const SNAPSHOT: &str = "SELECT source, conversation_id, provider, account,
        CAST(created_at AS TEXT) AS created_at, CAST(last_activity_at AS TEXT) AS activity,
        CAST(active AS INTEGER) AS active, status, channel, contact_id, contact_name,
        contact_phone, contact_email, title, assignee, unread_count, last_message_direction,
        CAST(last_inbound_at AS TEXT) AS inbound, CAST(last_outbound_at AS TEXT) AS outbound,
        CAST(awaiting_reply AS INTEGER) AS awaiting, CAST(raw AS TEXT) AS raw,
        CAST(first_seen_at AS TEXT) AS first_seen, CAST(last_seen_at AS TEXT) AS seen,
        CAST(last_changed_at AS TEXT) AS changed, run_id,
        CAST(closed_at AS TEXT) AS closed, CAST(deleted_at AS TEXT) AS deleted
    FROM conversations ORDER BY source, conversation_id";

async fn snapshot(site: &Site) -> (Vec<JsonRow>, i64) {
    let mirror = site.mirror().await;
    let rows = json_rows(&mirror, SNAPSHOT).await;
    let events: i64 = mirror
        .sql_value("SELECT COUNT(*) FROM conversation_events")
        .await;
    mirror.close().await;
    (rows, events)
}

/// `convsync verify ARGS --json`: its exit code and the JSON it printed.
async fn verify_json(site: &Site, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let done = site.run(&all).await;
    let code = done.status.code().expect("verify exits");
    let json = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("verify --json: {e}\n{}", done.tail()));
    (code, json)
}

/// The one source's result in a `verify --json` answer.
fn only_source(json: &Value) -> &Value {
    let sources = json["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1, "{json:#}");
    &sources[0]
}

fn ids(result: &Value, kind: &str) -> Vec<String> {
    result["ids"][kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

async fn each_corruption_is_reported_with_its_id(backend: Backend) {
    let site = Site::start_on(backend, sim_options(91, 30), SiteOptions::default()).await;
    site.sync_full().await;

    // A clean mirror: no drift on any provider's source, exit 0, each one recorded; the
    // docs' first command, then as JSON.
    let text = site.run(&["verify"]).await;
    assert_eq!(text.status.code(), Some(0), "{}", text.tail());
    assert!(text.stdout.ends_with("no drift\n"), "{}", text.stdout);
    let (code, clean) = verify_json(&site, &[]).await;
    assert_eq!(code, 0, "{clean:#}");
    assert_eq!(clean["drift"], Value::Bool(false));
    let sources = clean["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 5, "every configured source: {clean:#}");
    for result in sources {
        for kind in ["missing", "stale", "extra", "deleted_listed"] {
            assert_eq!(result["drift"][kind], 0, "{kind} in {result:#}");
        }
        assert_eq!(result["mode"], "full");
        assert!(result["checked"].as_u64().unwrap() > 0, "{result:#}");
        assert!(result["verified_through"].is_string(), "{result:#}");
    }

    // Four corruptions in the Spruce source's mirror, each of a different row.
    let mirror = site.mirror().await;
    let spruce: String = mirror
        .sql_value("SELECT DISTINCT source FROM conversations WHERE provider = 'spruce'")
        .await;
    let ids_of: Vec<String> = mirror
        .sql_column(&format!(
            "SELECT conversation_id FROM conversations WHERE source = '{spruce}'
               AND deleted_at IS NULL AND last_activity_at IS NOT NULL
             ORDER BY conversation_id LIMIT 4"
        ))
        .await;
    let [deleted_row, aged, template, marked] = <[String; 4]>::try_from(ids_of).unwrap();
    let row = |id: &str| format!("source = '{spruce}' AND conversation_id = '{id}'");
    for statement in [
        format!("DELETE FROM conversations WHERE {}", row(&deleted_row)),
        format!(
            "UPDATE conversations SET last_activity_at = '2001-01-01T00:00:00.000000Z' WHERE {}",
            row(&aged)
        ),
        format!(
            "INSERT INTO conversations (source, conversation_id, provider, account, raw,
                 payload_hash, first_seen_at, last_seen_at, last_changed_at)
             SELECT source, 'ghost-1', provider, account, raw, payload_hash, first_seen_at,
                 last_seen_at, last_changed_at FROM conversations WHERE {}",
            row(&template)
        ),
        format!(
            "UPDATE conversations SET deleted_at = last_seen_at WHERE {}",
            row(&marked)
        ),
    ] {
        assert_eq!(mirror.sql_execute(&statement).await, 1, "{statement}");
    }
    mirror.close().await;

    let before = snapshot(&site).await;
    let (code, json) = verify_json(&site, &["--source", &spruce]).await;
    assert_eq!(code, 1, "drift exits 1: {json:#}");
    assert_eq!(json["drift"], Value::Bool(true));
    let result = only_source(&json);
    assert_eq!(
        ids(result, "missing"),
        std::slice::from_ref(&deleted_row),
        "{result:#}"
    );
    assert_eq!(
        ids(result, "stale"),
        std::slice::from_ref(&aged),
        "{result:#}"
    );
    assert_eq!(ids(result, "extra"), ["ghost-1"], "{result:#}");
    assert_eq!(
        ids(result, "deleted_listed"),
        std::slice::from_ref(&marked),
        "{result:#}"
    );
    for kind in ["missing", "stale", "extra", "deleted_listed"] {
        assert_eq!(result["drift"][kind], 1, "{kind}: {result:#}");
    }
    assert_eq!(result["verified_through"], Value::Null);
    // The listing's pages of 20 (the site's page_size): 30 conversations, two pages.
    let requests = result["requests"].as_u64().unwrap();
    assert_eq!(requests, 2, "{result:#}");
    assert_eq!(
        snapshot(&site).await,
        before,
        "verify wrote no conversation and no event"
    );

    // The text report names each id too.
    let text = site.run(&["verify", "--source", &spruce]).await;
    assert_eq!(text.status.code(), Some(1), "{}", text.tail());
    for id in [&deleted_row, &aged, &marked] {
        assert!(text.stdout.contains(id.as_str()), "{id}: {}", text.stdout);
    }
    assert!(text.stdout.contains("ghost-1"), "{}", text.stdout);

    // Each verification is recorded: twice five sources, then the Spruce source twice; the
    // latest with its drift.
    let mirror = site.mirror().await;
    let recorded: i64 = mirror.sql_value("SELECT COUNT(*) FROM verifications").await;
    assert_eq!(recorded, 12);
    let latest: Vec<(String, i64, i64, i64, i64, i64, i64)> = mirror
        .sql_rows(&format!(
            "SELECT mode, checked, missing, stale, extra, deleted_listed, requests
             FROM verifications WHERE source = '{spruce}' ORDER BY id DESC LIMIT 1"
        ))
        .await;
    let checked = i64::try_from(result["checked"].as_u64().unwrap()).unwrap();
    assert_eq!(
        latest,
        [("full".to_owned(), checked, 1, 1, 1, 1, 2)],
        "the latest verification's row"
    );
    mirror.close().await;

    // /metrics shows the latest verification's drift and its age.
    let daemon = site.spawn_daemon();
    let metrics = site.scrape_metrics().await;
    daemon.sigterm().await;
    for kind in ["missing", "stale", "extra", "deleted_listed"] {
        let line = format!(
            "convsync_mirror_drift{{source=\"{spruce}\",provider=\"spruce\",kind=\"{kind}\"}} 1"
        );
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
    assert!(
        metrics.contains(&format!(
            "convsync_last_verification_age_seconds{{source=\"{spruce}\",provider=\"spruce\"}}"
        )),
        "{metrics}"
    );
    // promtool reads Prometheus' text format, which has no `info` type (convsync_build):
    // it checks the verification's families alone.
    let verification_families: String = metrics
        .lines()
        .filter(|l| l.contains("convsync_mirror_drift") || l.contains("convsync_last_verification"))
        .map(|l| format!("{l}\n"))
        .collect();
    promtool_accepts(&verification_families);
}

/// `promtool check metrics` finds nothing to say about the exposition (skipped, saying so,
/// where promtool is not installed and CI is not set).
fn promtool_accepts(metrics: &str) {
    use std::io::Write;
    let spawned = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "promtool cannot run: {e}");
            eprintln!("SKIPPED promtool check metrics: {e}");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn a_sample_checks_n(backend: Backend) {
    let site = Site::start_on(backend, sim_options(92, 30), SiteOptions::default()).await;
    site.sync_full().await;
    let mirror = site.mirror().await;
    let source: String = mirror
        .sql_value("SELECT DISTINCT source FROM conversations WHERE provider = 'spruce'")
        .await;
    mirror.close().await;
    // The docs' command, then as JSON.
    let text = site
        .run(&["verify", "--source", &source, "--sample", "5"])
        .await;
    assert_eq!(text.status.code(), Some(0), "{}", text.tail());
    assert!(text.stdout.contains(" sample "), "{}", text.stdout);
    let (code, json) = verify_json(&site, &["--source", &source, "--sample", "5"]).await;
    assert_eq!(code, 0, "{json:#}");
    let result = only_source(&json);
    assert_eq!(result["mode"], "sample");
    assert_eq!(result["checked"], 5, "{result:#}");
    assert_eq!(result["unresolved"], 0, "{result:#}");
    // The listing is read only until the five are found: two pages at most.
    let requests = result["requests"].as_u64().unwrap();
    assert!((1..=2).contains(&requests), "{result:#}");

    // A sample of every mirrored conversation reads the whole listing: the full
    // verification's two pages of 20, no more.
    let mirror = site.mirror().await;
    let mirrored: i64 = mirror
        .sql_value(&format!(
            "SELECT COUNT(*) FROM conversations WHERE source = '{source}'"
        ))
        .await;
    mirror.close().await;
    let all = mirrored.to_string();
    let (code, json) = verify_json(&site, &["--source", &source, "--sample", &all]).await;
    assert_eq!(code, 0, "{json:#}");
    let result = only_source(&json);
    assert_eq!(result["checked"], mirrored, "{result:#}");
    assert_eq!(result["requests"], 2, "{result:#}");

    // A verification that cannot be done exits 2 and records nothing: an unknown source,
    // and a provider that does not answer (its URL now a closed loopback port).
    let mirror = site.mirror().await;
    let before: i64 = mirror.sql_value("SELECT COUNT(*) FROM verifications").await;
    let unknown = site.run(&["verify", "--source", "nope"]).await;
    assert_eq!(unknown.status.code(), Some(2), "{}", unknown.tail());
    let config = std::fs::read_to_string(&site.config).unwrap();
    let spruce_url = site.sim.spruce_base_url().to_string();
    let spruce_url = spruce_url.trim_end_matches('/');
    assert!(config.contains(spruce_url), "{config}");
    std::fs::write(
        &site.config,
        config.replace(spruce_url, "http://127.0.0.1:9"),
    )
    .unwrap();
    let failed = site.run(&["verify", "--source", &source]).await;
    assert_eq!(failed.status.code(), Some(2), "{}", failed.tail());
    let after: i64 = mirror.sql_value("SELECT COUNT(*) FROM verifications").await;
    assert_eq!(after, before, "a failed verification records nothing");
    mirror.close().await;
}

async fn the_daemon_verifies_only_when_verify_interval_is_set(backend: Backend) {
    // Without verify_interval: a daemon that caught up everywhere verified nothing.
    let site = Site::start_on(backend, sim_options(93, 10), SiteOptions::default()).await;
    let mut daemon = site.spawn_daemon();
    let pool = site.mirror().await;
    wait_every_source_caught_up(&site, &pool, &mut daemon, 0).await;
    daemon.sigterm().await;
    let recorded: i64 = pool.sql_value("SELECT COUNT(*) FROM verifications").await;
    assert_eq!(recorded, 0, "no verification without verify_interval");
    pool.close().await;

    // With it, each source is verified by the daemon on its own.
    let site = Site::start_on(
        backend,
        sim_options(93, 10),
        SiteOptions {
            source_extra: "verify_interval = \"1s\"",
            ..SiteOptions::default()
        },
    )
    .await;
    let mut daemon = site.spawn_daemon();
    let pool = site.mirror().await;
    wait_every_source_caught_up(&site, &pool, &mut daemon, 0).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let verified: i64 = pool
            .try_sql_column("SELECT COUNT(DISTINCT source) FROM verifications")
            .await
            .ok()
            .and_then(|v: Vec<i64>| v.first().copied())
            .unwrap_or(0);
        if verified == 5 {
            break;
        }
        assert!(daemon.is_running(), "the daemon died:\n{}", daemon.output());
        assert!(
            tokio::time::Instant::now() < deadline,
            "the daemon never verified every source"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.sigterm().await;
    pool.close().await;
}
