//! The report queries docs/schema.md prints ("Example report queries", between its
//! `report-queries` markers) run verbatim on a mirror of all four simulated providers,
//! filled by the real binary with default settings, and answer sensibly for each: every
//! row has a day and a known channel kind, every provider appears, and the contacts who
//! wait for a reply are listed longest first.

use std::collections::BTreeSet;

use serde_json::Value;

use super::json_rows;
use crate::support::reliability::{Site, SiteOptions, sim_options};
use crate::support::stores::{Backend, MirrorSql, on_both_stores};

on_both_stores!(multi_thread: documented_report_queries_answer_for_every_provider);

const PROVIDERS: [&str; 4] = ["d365", "highlevel", "sinch", "spruce"];

/// The SQL blocks of docs/schema.md's report queries that run on `backend`: plain `sql`
/// blocks on both, `sql sqlite` / `sql postgres` blocks on theirs.
fn documented_queries(backend: Backend) -> Vec<String> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/schema.md")).unwrap();
    let start = text
        .find("<!-- report-queries:")
        .expect("docs/schema.md marks its report queries");
    let end = start
        + text[start..]
            .find("<!-- end report-queries -->")
            .expect("an end marker");
    let own = match backend {
        Backend::Sqlite => "```sql sqlite",
        Backend::Postgres => "```sql postgres",
    };
    let mut queries = Vec::new();
    let mut block: Option<String> = None;
    for line in text[start..end].lines() {
        match (line.trim_end(), &mut block) {
            ("```", Some(_)) => queries.extend(block.take()),
            (fence, None) if fence == "```sql" || fence == own => block = Some(String::new()),
            (_, Some(sql)) => {
                sql.push_str(line);
                sql.push('\n');
            }
            _ => {}
        }
    }
    queries
}

fn text(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str)
}

/// Every documented report query runs on both backends and answers for every provider.
async fn documented_report_queries_answer_for_every_provider(backend: Backend) {
    let site = Site::start_on(backend, sim_options(23, 30), SiteOptions::default()).await;
    site.sync_full().await;
    let mirror = site.mirror().await;

    let queries = documented_queries(backend);
    assert_eq!(queries.len(), 4, "{queries:#?}");
    let waiting_providers: BTreeSet<String> = mirror
        .sql_column::<String>(
            "SELECT DISTINCT provider FROM conversations WHERE awaiting_reply AND active \
             AND closed_at IS NULL AND deleted_at IS NULL AND last_inbound_at IS NOT NULL",
        )
        .await
        .into_iter()
        .collect();
    assert!(
        !waiting_providers.is_empty(),
        "the simulated world has contacts waiting for a reply"
    );
    let waiting: i64 = mirror
        .sql_value("SELECT count(*) FROM v1_awaiting_reply")
        .await;
    let mut vocabulary: BTreeSet<String> = mirror
        .sql_column::<String>("SELECT DISTINCT kind FROM channel_kinds")
        .await
        .into_iter()
        .collect();
    vocabulary.insert("other".into());

    for query in &queries {
        let rows = json_rows(&mirror, query).await;
        assert!(!rows.is_empty(), "no rows: {query}");
        let providers: BTreeSet<&str> = rows
            .iter()
            .filter_map(|r| text(r.get("provider")))
            .collect();
        for row in &rows {
            if let Some(day) = row.get("day").or(row.get("month")) {
                let day = day.as_str().unwrap_or_else(|| panic!("{row:?}: {query}"));
                assert!(
                    day.len() >= 7 && day.as_bytes()[4] == b'-',
                    "{day}: {query}"
                );
            }
            if let Some(kind) = row.get("channel_kind") {
                let kind = kind.as_str().unwrap_or_else(|| panic!("{row:?}: {query}"));
                assert!(vocabulary.contains(kind), "{kind}: {query}");
            }
        }
        if rows[0].contains_key("waiting_since") {
            // Who waits: exactly the providers whose contacts wait, longest first.
            assert_eq!(rows.len() as i64, waiting.min(20), "{query}");
            let since: Vec<&str> = rows
                .iter()
                .map(|r| text(r.get("waiting_since")).expect("a waiting time"))
                .collect();
            assert!(since.is_sorted(), "longest first: {since:?}");
            assert!(rows.iter().all(|r| r["hours_waiting"].is_i64()), "{rows:?}");
            assert!(
                providers.iter().all(|p| waiting_providers.contains(*p)),
                "{providers:?} vs {waiting_providers:?}"
            );
        } else {
            assert_eq!(providers, PROVIDERS.into(), "every provider: {query}");
        }
    }

    // What the views promise on this mirror: Sinch, which reports no creation time, opens
    // on the day convsync first saw it; the others on their creation; unread counts are
    // unknown (NULL), never 0, where the provider reports none.
    let opened: Vec<(String, String, i64)> = mirror
        .sql_rows(
            "SELECT provider, opened_at_source, count(*) FROM v1_conversations \
             GROUP BY provider, opened_at_source ORDER BY provider, opened_at_source",
        )
        .await;
    let sources: Vec<(&str, &str)> = opened
        .iter()
        .map(|(p, s, _)| (p.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        sources,
        [
            ("d365", "created"),
            ("highlevel", "created"),
            ("sinch", "first_seen"),
            ("spruce", "created")
        ]
    );
    let unread: Vec<(String, i64)> = mirror
        .sql_rows(
            "SELECT provider, count(unread_count) FROM v1_conversations \
             GROUP BY provider ORDER BY provider",
        )
        .await;
    let reporting: Vec<&str> = unread
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(reporting, ["highlevel"], "{unread:?}");
    let undated: i64 = mirror
        .sql_value("SELECT count(*) FROM v1_daily_volume WHERE day IS NULL")
        .await;
    assert_eq!(undated, 0);
    mirror.close().await;
}
