//! The history a real sync writes against the simulated Spruce API: a first seen per
//! conversation of the backfill, then one event per observed change (new activity, who
//! waits for a reply, assignment, archive, deletion) in the transaction that observed it,
//! and nothing for a sync that finds nothing new.

use std::collections::BTreeMap;

use convsync::store::{ConversationEvent, Store};
use convsync_sim::{EditField, MessageKind};

use crate::provider::spruce::{CLINIC, SPRUCE, SpruceBed, with_messages};
use crate::support::app::Sweep;
use crate::support::stores::{Backend, MirrorSql, on_both_stores};

async fn events(store: &Store, after: i64) -> Vec<ConversationEvent> {
    store
        .events_after(after, Some(CLINIC), 10_000)
        .await
        .unwrap()
}

/// Each conversation's event kinds, in order.
fn kinds_by_conversation(events: &[ConversationEvent]) -> BTreeMap<String, Vec<String>> {
    let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        by_id
            .entry(e.conversation_id.clone())
            .or_default()
            .push(e.kind.clone());
    }
    by_id
}

/// A backfill writes one first_seen per conversation; an unchanged re-sync writes none;
/// messages, an assignment, an archive and a deletion each write their event with the run
/// that observed them.
async fn a_sync_records_each_observed_change(backend: Backend) {
    let bed = SpruceBed::start_on(backend, 40, |_| {}).await;
    let app = bed.app(200).await;
    app.sync_caught_up(Sweep::IfDue).await;
    let backfill = events(app.store(), 0).await;
    let rows: i64 = app
        .store()
        .sql_value("SELECT COUNT(*) FROM conversations")
        .await;
    assert_eq!(backfill.len() as i64, rows);
    assert!(backfill.iter().all(|e| e.kind == "first_seen"));
    let after = backfill.last().unwrap().seq;

    app.sync_caught_up(Sweep::Now).await;
    assert!(
        events(app.store(), after).await.is_empty(),
        "nothing changed"
    );

    let ids = with_messages(&bed).await;
    bed.message(&ids[0], MessageKind::Inbound);
    bed.message(&ids[1], MessageKind::Outbound);
    bed.tick();
    bed.sim.close(SPRUCE, &bed.account, &ids[2]).unwrap();
    bed.sim
        .edit(SPRUCE, &bed.account, &ids[3], EditField::Assignee)
        .unwrap();
    bed.sim.delete(SPRUCE, &bed.account, &ids[4]).unwrap();
    app.sync_caught_up(Sweep::Now).await;

    let changes = events(app.store(), after).await;
    let by_id = kinds_by_conversation(&changes);
    assert!(by_id[&ids[0]].contains(&"activity".to_owned()), "{by_id:?}");
    assert!(by_id[&ids[1]].contains(&"activity".to_owned()), "{by_id:?}");
    assert_eq!(by_id[&ids[2]], ["closed"], "{by_id:?}");
    assert_eq!(by_id[&ids[3]], ["assigned"], "{by_id:?}");
    assert_eq!(by_id[&ids[4]], ["deleted"], "{by_id:?}");
    assert_eq!(by_id.len(), 5, "only the changed conversations: {by_id:?}");
    // The outbound reply answered the contact: no longer waiting.
    let answered: Vec<_> = changes
        .iter()
        .filter(|e| e.conversation_id == ids[1] && e.kind == "awaiting_reply")
        .map(|e| e.new_value.as_deref())
        .collect();
    assert_eq!(answered.last(), Some(&Some("false")), "{changes:?}");
    let run = app.last_run(CLINIC).await;
    assert!(
        changes
            .iter()
            .all(|e| e.run_id.is_some_and(|r| r <= run.id))
    );

    // The same world synced again: no event.
    let last = changes.last().unwrap().seq;
    app.sync_caught_up(Sweep::Now).await;
    assert!(events(app.store(), last).await.is_empty());
}

on_both_stores!(a_sync_records_each_observed_change);
