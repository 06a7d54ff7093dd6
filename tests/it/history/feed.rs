//! The change feed's guarantee under concurrent writers (every committed event once, in
//! `seq` order, to a reader that resumes after the last `seq` it got), and `convsync
//! changes` as a user runs it: `--after`, `--format csv`, `--follow` ending on SIGTERM.

use std::time::Duration;

use convsync::record::ConversationRecord;
use convsync::store::{CursorState, PageWrite, Store};
use convsync::time::Timestamp;
use convsync_sim::{MessageKind, Platform};
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::TestDb;
use crate::support::deploy::documented_steps;
use crate::support::reliability::{BINARY, PATIENCE, Site, SiteOptions};
use crate::support::stores::{Backend, MirrorSql, on_both_stores};
use crate::support::world::one_provider;

/// Writers per test: one source each, all writing at once.
const WRITERS: usize = 4;
/// Transactions per writer.
const TRANSACTIONS: usize = 25;
/// New conversations per transaction.
const ROWS: usize = 8;

fn record(id: String) -> ConversationRecord {
    let raw = serde_json::json!({ "id": id });
    let mut record = ConversationRecord::new(id, RawValue::from_string(raw.to_string()).unwrap());
    record.last_activity_at = Some(Timestamp::now());
    record
}

/// One writer: `TRANSACTIONS` page transactions of source `source`, each held open a
/// little after its rows (and their events, and their seq values) are written, so that
/// writers commit in another order than they drew their seq values.
async fn write_pages(store: Store, source: String, seed: u64) {
    for t in 0..TRANSACTIONS {
        let records: Vec<ConversationRecord> = (0..ROWS)
            .map(|r| record(format!("{source}-{t}-{r}")))
            .collect();
        let page = PageWrite {
            source: &source,
            provider: "double",
            account: "acct",
            walk: "delta",
            run_id: 1,
            records: &records,
            rejected: &[],
            follow_ups: &[],
            touch_seen_before: None,
            insert_first: true,
        };
        let mut open = store.begin_pages().await.unwrap();
        open.apply(std::slice::from_ref(&page)).await.unwrap();
        let hold = (seed.wrapping_mul(31).wrapping_add(t as u64 * 7)) % 6;
        tokio::time::sleep(Duration::from_millis(hold)).await;
        let cursor = CursorState::encode(&serde_json::json!({ "t": t })).unwrap();
        open.commit(&source, "delta", &cursor).await.unwrap();
    }
}

/// A reader following the feed while several sources write at once gets every committed
/// event exactly once, in strictly increasing `seq` order: it skips none that commits
/// after a higher one was read.
async fn the_feed_under_concurrent_writers_misses_and_repeats_nothing(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(write_pages(store.clone(), format!("s{w}"), w as u64)))
        .collect();

    let mut seen: Vec<i64> = Vec::new();
    let mut after = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let done = writers.iter().all(|w| w.is_finished());
        let batch = store.events_after(after, None, 50).await.unwrap();
        for event in &batch {
            assert!(event.seq > after, "seq {} after {after}", event.seq);
            after = event.seq;
            seen.push(event.seq);
        }
        if done && batch.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the writers hang");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for writer in writers {
        writer.await.unwrap();
    }

    let committed: Vec<i64> = store
        .sql_column("SELECT seq FROM conversation_events ORDER BY seq")
        .await;
    assert_eq!(committed.len(), WRITERS * TRANSACTIONS * ROWS);
    assert_eq!(seen, committed, "the reader missed or repeated events");
    store.close().await;
}

/// A Spruce site with `conversations` conversations, its mirror on `backend`.
async fn spruce_site(backend: Backend, conversations: u32) -> Site {
    let mut options = one_provider(Platform::Spruce, 1);
    options.seed = 11;
    options.conversations = conversations;
    Site::start_on(backend, options, SiteOptions::default()).await
}

/// A contact writes in one of the site's conversations and a full sync observes it;
/// returns the conversation's id.
async fn message_and_sync(site: &Site) -> String {
    let account = site.sim.accounts().spruce[0].organization_id.clone();
    let truth = site.sim.truth(Platform::Spruce, &account).await.unwrap();
    let target = truth.iter().find(|t| !t.deleted).unwrap().id.clone();
    site.sim.advance_clock(Duration::from_secs(5));
    site.sim
        .add_message(Platform::Spruce, &account, &target, MessageKind::Inbound)
        .unwrap();
    site.sync_full().await;
    target
}

/// `convsync changes` prints the history as JSON lines or CSV, resumes after `--after`,
/// stops at `--limit`; `--follow` prints events committed while it runs and ends cleanly
/// on SIGTERM.
async fn changes_prints_resumes_and_follows(backend: Backend) {
    let site = spruce_site(backend, 30).await;
    site.sync_full().await;

    let all = site.run(&["changes"]).await;
    assert!(all.status.success(), "{}", all.tail());
    let lines: Vec<serde_json::Value> = all
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 30, "one first_seen per conversation");
    assert!(lines.iter().all(|l| l["kind"] == "first_seen"));
    let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    // Resuming after the tenth event prints the rest; --limit stops early; CSV has a header.
    let tenth = seqs[9].to_string();
    let rest = site.run(&["changes", "--after", &tenth]).await;
    assert_eq!(rest.stdout.lines().count(), 20);
    let csv = site
        .run(&["changes", "--format", "csv", "--limit", "3"])
        .await;
    let csv_lines: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(csv_lines.len(), 4, "{}", csv.stdout);
    assert!(csv_lines[0].starts_with("seq,source,conversation_id,kind,"));

    // --follow: waits, prints what the next sync commits, and stops on SIGTERM.
    let last = seqs.last().unwrap().to_string();
    let mut follower = site
        .command(&["changes", "--follow", "--after", &last])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(follower.stdout.take().unwrap()).lines();
    let target = message_and_sync(&site).await;
    let line = tokio::time::timeout(PATIENCE, out.next_line())
        .await
        .expect("--follow prints the new event")
        .unwrap()
        .expect("a line");
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["kind"], "activity", "{line}");
    assert_eq!(event["conversation_id"], target.as_str());

    let pid = follower.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(PATIENCE, follower.wait())
        .await
        .expect("--follow ends on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// docs/deploy.md's batch loader ("Feeding a warehouse from the change history"), run
/// verbatim: the first run loads every event, a run with nothing new loads nothing and
/// keeps its position, and a run after a sync loads exactly what came after it.
async fn the_documented_batch_loader_resumes_where_it_stopped(backend: Backend) {
    let site = spruce_site(backend, 12).await;
    site.sync_full().await;
    let script = documented_steps("change-feed").join("\n");
    let work = tempfile::tempdir().unwrap();
    let bin_dir = std::path::Path::new(BINARY).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let run_loader = || async {
        let done = tokio::process::Command::new("sh")
            .args(["-euc", &script])
            .current_dir(work.path())
            .env("PATH", &path)
            .env("CONVSYNC_CONFIG", &site.config)
            .output()
            .await
            .unwrap();
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        let batch = std::fs::read_to_string(work.path().join("batch.jsonl")).unwrap();
        let last: i64 = std::fs::read_to_string(work.path().join("last-seq"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let seqs: Vec<i64> = batch
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        (seqs, last)
    };

    let (first, last) = run_loader().await;
    assert_eq!(first.len(), 12);
    assert_eq!(last, *first.last().unwrap());
    let (none, still) = run_loader().await;
    assert!(none.is_empty());
    assert_eq!(still, last, "an empty batch keeps the position");

    message_and_sync(&site).await;
    let (next, moved) = run_loader().await;
    assert!(
        !next.is_empty() && next.iter().all(|&seq| seq > last),
        "{next:?}"
    );
    assert_eq!(moved, *next.last().unwrap());
}

on_both_stores!(
    multi_thread: the_feed_under_concurrent_writers_misses_and_repeats_nothing,
    changes_prints_resumes_and_follows,
    the_documented_batch_loader_resumes_where_it_stopped,
);
