//! The demo's webhook table: per source, what events did next to polling, in one short
//! table a newcomer can read, with a legend naming the `/metrics` series it comes from.

use crate::cli::progress::latency_text;
use crate::health::webhooks::freshness::SourceFreshness;

/// The table's title, which the demo's test looks for.
pub const TITLE: &str = "Webhooks beside polling";

/// The table (sources in name order, as the summary above it lists them) and its legend.
pub fn render(rows: &[SourceFreshness]) -> String {
    let mut rows: Vec<&SourceFreshness> = rows.iter().collect();
    rows.sort_by(|a, b| a.source.cmp(&b.source));
    let mut table = super::super::table::plain([
        "source",
        "provider",
        "accepted",
        "refused",
        "event→mirror p50",
        "p95",
        "first seen by event",
        "by poll",
        "event share",
    ]);
    for row in rows {
        table.add_row([
            row.source.clone(),
            row.provider.clone(),
            row.accepted.to_string(),
            refused_text(row),
            latency_text(row.event_to_commit_p50),
            latency_text(row.event_to_commit_p95),
            row.first_by_event.to_string(),
            row.first_by_poll.to_string(),
            row.event_share()
                .map_or_else(|| "–".to_owned(), |share| format!("{:.0}%", share * 100.0)),
        ]);
    }
    format!(
        "{TITLE} (signed events the simulator sent to the receiver):\n\n{table}\n\n\
         accepted: events verified and committed (duplicates not counted); refused: by reason, nothing \
         written.\n\
         event→mirror: from the provider's sending to the commit in the mirror (Sinch \
         stamps whole seconds: its figure reads up to 1 s high).\n\
         first seen: mirror changes an event brought before any poll, and changes a poll \
         found that no event had brought (the first backfill is all poll).\n\
         The same figures are on /metrics: convsync_webhook_events_total, \
         convsync_webhook_event_to_commit_seconds, convsync_changes_first_seen_total \
         (docs/webhooks.md).\n"
    )
}

/// `0`, or the total with its reasons: `3 (2 bad_signature, 1 stale)`.
fn refused_text(row: &SourceFreshness) -> String {
    let total = row.rejected_total();
    if total == 0 {
        return "0".to_owned();
    }
    let reasons: Vec<String> = row
        .rejected
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{n} {reason}"))
        .collect();
    format!("{total} ({})", reasons.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_show_their_reasons() {
        let mut row = SourceFreshness::default();
        assert_eq!(refused_text(&row), "0");
        row.rejected.insert("stale".into(), 1);
        row.rejected.insert("bad_signature".into(), 2);
        assert_eq!(refused_text(&row), "3 (2 bad_signature, 1 stale)");
    }
}
