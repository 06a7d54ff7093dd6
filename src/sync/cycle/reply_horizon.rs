//! Reply state only where it can matter.
//!
//! Who spoke last costs one request per conversation (Spruce's items). It matters for open
//! conversations with recent activity: those are the ones someone may be waiting on. A
//! first sync, or the catch-up after long downtime, lists years of archived and dormant
//! conversations; reading their items would spend most of the provider's budget, hours of
//! it, before the mirror is complete. So a listed conversation queues its reply-state
//! follow-up only when it is open and its last activity (its creation, if it has none)
//! lies within the source's `reply_state_horizon`; the others keep their reply state
//! unknown until new activity brings them back within it: NULL for a new row, and a row
//! whose activity moved while outside the horizon (after long downtime) has its direction
//! and `awaiting_reply` cleared, since they described an older message.

use crate::provider::Page;
use crate::time::Timestamp;

/// Drops the on-activity follow-ups of `page`'s conversations that are closed or whose
/// activity lies before `horizon_start`. Returns how many it dropped.
pub(super) fn keep_follow_ups_within(page: &mut Page, horizon_start: Timestamp) -> usize {
    let mut dropped = 0;
    for record in &mut page.records {
        if record.detail_on_activity.is_none() {
            continue;
        }
        let open = record.active != Some(false);
        let recent = record
            .last_activity_at
            .or(record.created_at)
            .is_some_and(|at| at >= horizon_start);
        if !(open && recent) {
            record.detail_on_activity = None;
            record.reply_state_unknown = true;
            dropped += 1;
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ConversationRecord;

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    fn record(
        id: &str,
        active: Option<bool>,
        created: &str,
        activity: Option<&str>,
    ) -> ConversationRecord {
        let raw = serde_json::value::RawValue::from_string("{}".into()).unwrap();
        let mut r = ConversationRecord::new(id, raw);
        r.active = active;
        r.created_at = Some(ts(created));
        r.last_activity_at = activity.map(ts);
        r.detail_on_activity = Some("items");
        r
    }

    /// Open and recent keeps its follow-up; closed, old, or old and message-less lose it.
    #[test]
    fn only_open_recent_conversations_keep_their_follow_up() {
        let mut page = Page {
            records: vec![
                record(
                    "open-recent",
                    Some(true),
                    "2020-01-01T00:00:00Z",
                    Some("2026-03-01T00:00:00Z"),
                ),
                record(
                    "unknown-state-recent",
                    None,
                    "2020-01-01T00:00:00Z",
                    Some("2026-03-01T00:00:00Z"),
                ),
                record(
                    "archived-recent",
                    Some(false),
                    "2020-01-01T00:00:00Z",
                    Some("2026-03-01T00:00:00Z"),
                ),
                record(
                    "open-old",
                    Some(true),
                    "2020-01-01T00:00:00Z",
                    Some("2025-01-01T00:00:00Z"),
                ),
                record(
                    "new-without-messages",
                    Some(true),
                    "2026-02-20T00:00:00Z",
                    None,
                ),
                record(
                    "old-without-messages",
                    Some(true),
                    "2020-01-01T00:00:00Z",
                    None,
                ),
            ],
            ..Page::default()
        };
        let dropped = keep_follow_ups_within(&mut page, ts("2026-02-01T00:00:00Z"));
        let kept: Vec<&str> = page
            .records
            .iter()
            .filter(|r| r.detail_on_activity.is_some())
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(
            kept,
            [
                "open-recent",
                "unknown-state-recent",
                "new-without-messages"
            ]
        );
        assert_eq!(dropped, 3);
        // Those dropped are marked, so that a moved row's stale reply state is cleared.
        assert!(
            page.records
                .iter()
                .all(|r| r.reply_state_unknown == r.detail_on_activity.is_none())
        );
    }
}
