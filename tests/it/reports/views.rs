//! The `v1_` views are a promise (docs/schema.md, "Report views"): their columns, in order,
//! with their types on each backend, are pinned here. A migration that renames, drops,
//! reorders or retypes one fails this test; a changed view is added as `v2_…` instead, and
//! a new `v1_` view is pinned here when it is added.

use convsync::record::{ConversationRecord, Direction};
use convsync::time::Timestamp;
use serde_json::value::RawValue;

use super::mirror_records;
use crate::support::TestDb;
use crate::support::stores::{Backend, MirrorSql, on_both_stores};

on_both_stores!(v1_views_keep_their_columns);

/// A column's type on each backend: the storage class its SQLite values have, and the
/// PostgreSQL type the catalog names.
#[derive(Clone, Copy)]
enum Type {
    Text,
    Integer,
    /// SQLite INTEGER 0/1, PostgreSQL boolean.
    Flag,
    /// SQLite TEXT in the mirror's instant format, PostgreSQL timestamptz.
    Instant,
    /// SQLite TEXT `YYYY-MM-DD`, PostgreSQL date.
    Day,
}

impl Type {
    fn sqlite(self) -> &'static str {
        match self {
            Type::Text | Type::Instant | Type::Day => "text",
            Type::Integer | Type::Flag => "integer",
        }
    }

    fn postgres(self) -> &'static str {
        match self {
            Type::Text => "text",
            Type::Integer => "bigint",
            Type::Flag => "boolean",
            Type::Instant => "timestamp with time zone",
            Type::Day => "date",
        }
    }
}

use Type::{Day, Flag, Instant, Integer, Text};

/// Every `v1_` view with its columns in order. Never edit a line of it: a `v1_` view keeps
/// its columns (docs/schema.md, "Report views").
const V1_VIEWS: &[(&str, &[(&str, Type)])] = &[
    (
        "v1_awaiting_reply",
        &[
            ("source", Text),
            ("conversation_id", Text),
            ("provider", Text),
            ("account", Text),
            ("channel", Text),
            ("channel_kind", Text),
            ("contact_id", Text),
            ("contact_name", Text),
            ("contact_phone", Text),
            ("contact_email", Text),
            ("title", Text),
            ("assignee", Text),
            ("unread_count", Integer),
            ("waiting_since", Instant),
            ("waiting_seconds", Integer),
        ],
    ),
    (
        "v1_conversation_events",
        &[
            ("seq", Integer),
            ("source", Text),
            ("conversation_id", Text),
            ("kind", Text),
            ("old_value", Text),
            ("new_value", Text),
            ("direction", Text),
            ("provider_at", Instant),
            ("observed_at", Instant),
            ("run_id", Integer),
        ],
    ),
    (
        "v1_conversations",
        &[
            ("source", Text),
            ("conversation_id", Text),
            ("provider", Text),
            ("account", Text),
            ("channel", Text),
            ("channel_kind", Text),
            ("status", Text),
            ("active", Flag),
            ("is_open", Flag),
            ("opened_at", Instant),
            ("opened_at_source", Text),
            ("created_at", Instant),
            ("first_seen_at", Instant),
            ("last_activity_at", Instant),
            ("closed_at", Instant),
            ("deleted_at", Instant),
            ("contact_id", Text),
            ("contact_name", Text),
            ("contact_phone", Text),
            ("contact_email", Text),
            ("title", Text),
            ("assignee", Text),
            ("unread_count", Integer),
            ("last_message_direction", Text),
            ("last_inbound_at", Instant),
            ("last_outbound_at", Instant),
            ("awaiting_reply", Flag),
            ("waiting_since", Instant),
            ("waiting_seconds", Integer),
            ("last_changed_at", Instant),
        ],
    ),
    (
        "v1_daily_volume",
        &[
            ("day", Day),
            ("provider", Text),
            ("channel_kind", Text),
            ("opened", Integer),
            ("opened_first_seen", Integer),
            ("closed", Integer),
            ("deleted", Integer),
        ],
    ),
];

/// A conversation with every column the views read filled in, waiting for a reply.
fn filled_conversation() -> ConversationRecord {
    let at = Timestamp::parse_rfc3339("2026-03-02T10:11:12.123456Z").unwrap();
    let raw = RawValue::from_string(r#"{"id":"full"}"#.into()).unwrap();
    let mut record = ConversationRecord::new("full", raw);
    record.created_at = Some(at);
    record.last_activity_at = Some(at);
    record.active = Some(true);
    record.status = Some("open".into());
    record.channel = Some("TYPE_PHONE".into());
    record.contact_id = Some("c".into());
    record.contact_name = Some("n".into());
    record.contact_phone = Some("+15555550100".into());
    record.contact_email = Some("n@example.com".into());
    record.title = Some("t".into());
    record.assignee = Some("a".into());
    record.unread_count = Some(2);
    record.set_last_message(Direction::Outbound, Some(at));
    record.set_last_message(Direction::Inbound, Some(at));
    record
}

/// Each `v1_` view has exactly its pinned columns, in order, with the pinned PostgreSQL
/// type, or SQLite values of the pinned storage class; no `v1_` view is unpinned.
async fn v1_views_keep_their_columns(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    let mut closed = ConversationRecord::new(
        "closed",
        RawValue::from_string(r#"{"id":"closed"}"#.into()).unwrap(),
    );
    closed.active = Some(false);
    let records = [filled_conversation(), closed];
    mirror_records(&store, "highlevel", &records).await;
    // A closed day and a deleted day, so that every column of every view has a value.
    store
        .sql_execute(
            "UPDATE conversations SET closed_at = last_changed_at, deleted_at = last_changed_at \
             WHERE conversation_id = 'closed'",
        )
        .await;
    // Once the source's backfill is over, a change of the filled conversation writes the
    // history's events with every column set (an earlier value, a direction, a run).
    store
        .sql_execute(
            "INSERT INTO backfilled_sources (source, caught_up_at) \
             SELECT source, min(last_changed_at) FROM conversations GROUP BY source",
        )
        .await;
    store
        .sql_execute(
            "UPDATE conversations SET last_activity_at = last_changed_at, \
             last_inbound_at = last_changed_at, unread_count = 3, assignee = 'b', run_id = 7 \
             WHERE conversation_id <> 'closed'",
        )
        .await;

    let catalog_views: Vec<String> = match backend {
        Backend::Sqlite => {
            store
                .sql_column(
                    "SELECT name FROM sqlite_master WHERE type = 'view' AND name LIKE 'v1\\_%' \
                     ESCAPE '\\' ORDER BY name",
                )
                .await
        }
        Backend::Postgres => {
            store
                .sql_column(
                    "SELECT table_name::text FROM information_schema.views \
                     WHERE table_schema = current_schema() AND table_name LIKE 'v1\\_%' \
                     ORDER BY table_name",
                )
                .await
        }
    };
    let pinned: Vec<&str> = V1_VIEWS.iter().map(|(name, _)| *name).collect();
    assert_eq!(catalog_views, pinned, "every v1_ view is pinned here");

    for (view, columns) in V1_VIEWS {
        let expected: Vec<(String, String)> = columns
            .iter()
            .map(|(name, ty)| {
                let ty = match backend {
                    Backend::Sqlite => ty.sqlite(),
                    Backend::Postgres => ty.postgres(),
                };
                (name.to_string(), ty.to_owned())
            })
            .collect();
        let found: Vec<(String, String)> =
            match backend {
                Backend::Sqlite => {
                    let names: Vec<String> = store
                        .sql_column(&format!(
                            "SELECT name FROM pragma_table_info('{view}') ORDER BY cid"
                        ))
                        .await;
                    let mut found = Vec::new();
                    for name in names {
                        let classes: Vec<String> = store
                            .sql_column(&format!(
                                "SELECT DISTINCT typeof({name}) FROM {view} \
                             WHERE {name} IS NOT NULL"
                            ))
                            .await;
                        assert_eq!(
                            classes.len(),
                            1,
                            "{view}.{name} has one storage class: {classes:?}"
                        );
                        found.push((name, classes[0].clone()));
                    }
                    found
                }
                Backend::Postgres => store
                    .sql_rows(&format!(
                        "SELECT column_name::text, data_type::text FROM information_schema.columns \
                         WHERE table_schema = current_schema() AND table_name = '{view}' \
                         ORDER BY ordinal_position"
                    ))
                    .await,
            };
        assert_eq!(found, expected, "{view}");
    }
    store.close().await;
}
