//! The alerting rules and the Grafana dashboard shipped in deploy/: promtool checks and
//! unit-tests the rules (deploy/prometheus/alerts.test.yml), every PromQL expression of the
//! dashboard parses, and every metric either uses is exported by a running daemon.
//! promtool comes from Debian's `prometheus` package; without it the promtool tests are
//! skipped with a message, unless `CI` is set.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::observability::health_endpoints::Served;
use crate::support::StorePool;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs `promtool ARGS`, or returns `None` after saying why the test is skipped.
fn promtool(test: &str, args: &[&Path]) -> Option<std::process::Output> {
    match Command::new("promtool").args(args).output() {
        Ok(output) => Some(output),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: CI is set but promtool cannot run ({e}): apt-get install prometheus"
            );
            eprintln!("SKIPPED {test}: promtool is not installed ({e})");
            None
        }
    }
}

fn assert_success(what: &str, output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `promtool check rules` accepts alerts.yml and `promtool test rules` passes the unit
/// tests that show each alert firing on its failure and silent on the healthy case.
#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    let test = "promtool_checks_and_unit_tests_the_alert_rules";
    let rules = repo("deploy/prometheus/alerts.yml");
    let Some(check) = promtool(test, &[Path::new("check"), Path::new("rules"), &rules]) else {
        return;
    };
    assert_success("promtool check rules", &check);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(stdout.contains("SUCCESS: 9 rules found"), "{stdout}");

    let tests = repo("deploy/prometheus/alerts.test.yml");
    let run = promtool(test, &[Path::new("test"), Path::new("rules"), &tests]).unwrap();
    assert_success("promtool test rules", &run);
    // Every alert has at least one test case in which it fires.
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let tests_text = std::fs::read_to_string(&tests).unwrap();
    for alert in rules_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests_text.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - exp_labels"
            )),
            "alerts.test.yml has no case in which {alert} fires"
        );
    }
}

/// The dashboard's panels and their PromQL expressions, with Grafana's variables replaced
/// by values Prometheus accepts.
fn dashboard_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo("deploy/grafana/convsync.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut expressions = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("every panel has a title");
        let targets = panel["targets"]
            .as_array()
            .expect("every panel has targets");
        assert!(!targets.is_empty(), "panel {title:?} shows nothing");
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*")
                .replace("$source", ".*");
            expressions.push((title.to_owned(), expr));
        }
    }
    expressions
}

/// Every expression of the dashboard is valid PromQL: promtool parses it as a recording
/// rule (Grafana would only show "no data").
#[test]
fn every_dashboard_query_is_valid_promql() {
    let test = "every_dashboard_query_is_valid_promql";
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in dashboard_expressions().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    let Some(check) = promtool(test, &[Path::new("check"), Path::new("rules"), &file]) else {
        return;
    };
    assert_success("promtool check rules (the dashboard's queries)", &check);
}

/// The metric names in `text`: words that start with `convsync_` or `process_`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("convsync_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// Every metric name that an alert or a dashboard panel reads is one that a running
/// daemon exports after a sync, so no alert silently watches a series that never exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_dashboard_use_is_exported() {
    let served = Served::start().await;
    served.sync().await;
    let body = reqwest::get(format!("{}metrics", served.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported: BTreeSet<String> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();

    let mut used =
        metric_names(&std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap());
    for (_, expr) in dashboard_expressions() {
        used.extend(metric_names(&expr));
    }
    assert!(
        used.len() >= 15,
        "the extraction found too little: {used:?}"
    );
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "used by alerts.yml or convsync.json but not exported: {missing:?}\nexported: {exported:?}"
    );
    served.service.stop().await;
}

/// The figures added for operators read what they say: the follow-up backlog is the
/// queue's length, the database size its pages, cycles are counted by outcome, and the
/// process family reports this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_metrics_report_the_queue_database_outcomes_and_process() {
    let served = Served::start().await;
    served.sync().await;
    let scrape = crate::support::deploy::Scrape::fetch(&served.base).await;
    let clinic = &[("source", "clinic"), ("provider", "spruce")];
    let queued = served.store().count_follow_ups("clinic").await.unwrap();
    assert_eq!(
        scrape.value("convsync_follow_ups_queued", clinic),
        Some(queued as f64)
    );
    assert_eq!(
        scrape.value(
            "convsync_cycle_outcomes_total",
            &[("source", "clinic"), ("outcome", "caught_up")]
        ),
        Some(1.0)
    );
    let poll = scrape
        .value("convsync_poll_interval_seconds", clinic)
        .expect("poll interval");
    assert!(poll > 0.0, "{poll}");
    let age = scrape
        .value("convsync_last_success_age_seconds", clinic)
        .expect("age of the last success");
    assert!(age >= 0.0, "{age}");
    let pages: i64 = sqlx::query_scalar("SELECT page_count FROM pragma_page_count()")
        .fetch_one(served.store().pool())
        .await
        .unwrap();
    let size = scrape.value("convsync_database_size_bytes", &[]).unwrap();
    assert!(
        size >= pages as f64 * 512.0 && size > 0.0,
        "{size} for {pages} pages"
    );
    let fds = scrape.value("process_open_fds", &[]).expect("open fds");
    let max = scrape.value("process_max_fds", &[]).expect("fd limit");
    assert!(fds >= 3.0 && fds < max, "{fds} of {max}");
    assert!(scrape.value("process_resident_memory_bytes", &[]).unwrap() > 1e6);
    served.service.stop().await;
}
