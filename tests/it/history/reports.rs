//! The history reports of docs/schema.md ("Reports from the change history"), each block
//! run verbatim (as the subquery of a count) on its backend, over a mirror a real sync
//! filled with replies, a new waiting contact and an assigned conversation that closed.

use convsync::store::Store;
use convsync_sim::{EditField, MessageKind};

use crate::provider::spruce::{CLINIC, SPRUCE, SpruceBed, with_messages};
use crate::support::app::Sweep;
use crate::support::stores::{Backend, MirrorSql, on_both_stores};

/// The SQL of the block marked `<!-- history-report NAME BACKEND -->` in docs/schema.md,
/// without its final `;`.
fn documented_report(name: &str, backend: Backend) -> String {
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/schema.md")).unwrap();
    let backend = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let marker = format!("<!-- history-report {name} {backend} -->");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/schema.md has no {marker}"));
    let block = &page[at + marker.len()..];
    let start = block
        .find("```sql\n")
        .expect("a sql block after the marker")
        + 7;
    let end = block[start..].find("```").expect("the block ends") + start;
    block[start..end].trim().trim_end_matches(';').to_owned()
}

/// Rows of report `name` (that also satisfy `condition`, when given).
async fn report_rows(store: &Store, backend: Backend, name: &str, condition: &str) -> i64 {
    let report = documented_report(name, backend);
    store
        .sql_value(&format!(
            "SELECT count(*) FROM ({report}) AS report {condition}"
        ))
        .await
}

/// The three history reports run as documented and give sensible rows: the one answered
/// wait with a first-response time that is not negative, its distribution on today's
/// row, 48 hours of waiting counts with a contact waiting now, and the close counted for
/// its assignee.
async fn the_documented_history_reports_run_and_make_sense(backend: Backend) {
    let bed = SpruceBed::start_on(backend, 30, |_| {}).await;
    let app = bed.app(200).await;
    app.sync_caught_up(Sweep::IfDue).await;
    let ids = with_messages(&bed).await;
    // Two contacts answered, then writing again (their waits start after the backfill);
    // one of them answered again, the other still waiting.
    for kind in [MessageKind::Outbound, MessageKind::Inbound] {
        bed.message(&ids[0], kind);
        bed.message(&ids[1], kind);
        app.sync_caught_up(Sweep::IfDue).await;
    }
    bed.message(&ids[0], MessageKind::Outbound);
    bed.sim
        .edit(SPRUCE, &bed.account, &ids[2], EditField::Assignee)
        .unwrap();
    app.sync_caught_up(Sweep::Now).await;
    bed.tick();
    bed.sim.close(SPRUCE, &bed.account, &ids[2]).unwrap();
    app.sync_caught_up(Sweep::Now).await;
    let store = app.store();

    let replies = report_rows(store, backend, "first-response", "").await;
    assert_eq!(replies, 1, "the one answered wait");
    let negative = report_rows(store, backend, "first-response", "WHERE minutes < 0").await;
    assert_eq!(negative, 0);

    let days = report_rows(store, backend, "first-response-per-day", "").await;
    assert!(
        (1..=2).contains(&days),
        "today (and yesterday at midnight): {days}"
    );

    let hours = report_rows(store, backend, "waiting-per-hour", "").await;
    assert_eq!(hours, 48);
    let waiting_now = report_rows(store, backend, "waiting-per-hour", "WHERE waiting > 0").await;
    assert!(waiting_now >= 1, "the contacts still waiting");

    let assignee: String = store
        .sql_value(&format!(
            "SELECT assignee FROM conversations WHERE source = '{CLINIC}' \
             AND conversation_id = '{}'",
            ids[2]
        ))
        .await;
    let closes = report_rows(
        store,
        backend,
        "closes-per-assignee",
        &format!("WHERE assignee = '{assignee}' AND closes = 1"),
    )
    .await;
    assert_eq!(closes, 1, "the close counted for {assignee}");
}

on_both_stores!(the_documented_history_reports_run_and_make_sense);
