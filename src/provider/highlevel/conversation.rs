//! One search result → one mirror record.
//!
//! The spec's `ConversationSchema` lists only the contact and last-message fields; the
//! timestamps the mirror and the keyset need (`lastMessageDate`, `dateAdded`) are returned
//! by the live API but undocumented for this endpoint, and other DTOs of the same spec show
//! them as epoch-ms numbers, digit strings and ISO strings. Every field is therefore read
//! leniently: absent, `null`, a number or a string, camelCase or snake_case.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::provider::{ConversationRecord, Direction, RejectedRecord};
use crate::time::Timestamp;

/// A HighLevel date field, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DateField {
    /// Absent, `null`, empty, or the epoch itself (no date).
    Missing,
    /// A readable date and its epoch-ms sort value (floored for sub-ms ISO strings).
    At {
        /// The instant.
        time: Timestamp,
        /// Epoch milliseconds, the value `startAfterDate` compares.
        millis: i64,
    },
    /// Present but unreadable (negative, out of range, not a date).
    Unreadable,
}

impl DateField {
    /// Reads epoch milliseconds (a number, or a digit string) or RFC 3339 text.
    pub fn read(value: Option<&Value>) -> DateField {
        let millis = match value {
            None | Some(Value::Null) => return DateField::Missing,
            Some(Value::Number(n)) => match n.as_i64() {
                Some(ms) => ms,
                // Floats such as 1.772443200123e12: whole milliseconds only.
                None => match n.as_f64() {
                    Some(f) if f.is_finite() && f.abs() < 9.0e15 => f.floor() as i64,
                    _ => return DateField::Unreadable,
                },
            },
            Some(Value::String(s)) => {
                let s = s.trim();
                if s.is_empty() {
                    return DateField::Missing;
                }
                match s.parse::<i64>() {
                    Ok(ms) => ms,
                    Err(_) => {
                        return match Timestamp::parse_rfc3339(s) {
                            Ok(time) => DateField::At {
                                time,
                                millis: time.epoch_millis(),
                            },
                            Err(_) => DateField::Unreadable,
                        };
                    }
                }
            }
            Some(_) => return DateField::Unreadable,
        };
        match millis {
            0 => DateField::Missing,
            ms if ms < 0 => DateField::Unreadable,
            ms => match Timestamp::from_epoch_millis(ms) {
                Ok(time) => DateField::At { time, millis: ms },
                Err(_) => DateField::Unreadable,
            },
        }
    }

    /// The instant, if readable.
    pub fn time(self) -> Option<Timestamp> {
        match self {
            DateField::At { time, .. } => Some(time),
            DateField::Missing | DateField::Unreadable => None,
        }
    }

    /// The sort value, if readable.
    pub fn millis(self) -> Option<i64> {
        match self {
            DateField::At { millis, .. } => Some(millis),
            DateField::Missing | DateField::Unreadable => None,
        }
    }
}

/// The earliest sort value taken at face value: 2000-01-01 (HighLevel dates from 2018).
const EARLIEST_SORT_MS: i64 = 946_684_800_000;
/// The latest sort value taken at face value: 2100-01-01. A value far in the future would
/// make the next `startAfterDate` step down from it one millisecond per page.
const LATEST_SORT_MS: i64 = 4_102_444_800_000;

/// One search result, read.
#[derive(Debug)]
pub(super) struct SearchResult {
    /// The record to upsert; `None` for a conversation flagged `deleted` (moved to the
    /// trash), which a sweep must not count as present.
    pub record: Option<ConversationRecord>,
    /// `lastMessageDate`, the conversation's last activity.
    pub last_message: DateField,
    /// The row's position in the listing (epoch ms), the value `startAfterDate` continues
    /// after: `sort[0]` as the search returns it, or `lastMessageDate` when there is no
    /// sane `sort` (see [`sort_value`]).
    pub sort_key: Option<i64>,
}

/// The search's own sort value of a row: the first element of its `sort` array, the value
/// the API expects back as `startAfterDate` (the array exists for compound sorts; ours
/// has one key). It is provider input like any other: only an epoch-ms number (or digit
/// string) between 2000 and 2100 is used; anything else (a search index's
/// "missing" marker such as `-9223372036854775808`, text, floats out of range) is `None`,
/// and the caller falls back to `lastMessageDate`.
pub(super) fn sort_value(sort: Option<&Value>) -> Option<i64> {
    let Value::Array(values) = sort? else {
        return None;
    };
    let first = values.first()?;
    let is_number = match first {
        Value::Number(_) => true,
        Value::String(s) => !s.trim().is_empty() && s.trim().bytes().all(|b| b.is_ascii_digit()),
        _ => false,
    };
    if !is_number {
        return None;
    }
    DateField::read(Some(first))
        .millis()
        .filter(|ms| (EARLIEST_SORT_MS..=LATEST_SORT_MS).contains(ms))
}

/// Reads one item of the `conversations` array, keeping its JSON as received.
pub(super) fn read(raw: &RawValue) -> Result<SearchResult, RejectedRecord> {
    let reject = |reason: &str| RejectedRecord {
        reason: reason.to_owned(),
        raw: raw.get().to_owned(),
    };
    let item: Map<String, Value> =
        serde_json::from_str(raw.get()).map_err(|_| reject("not a JSON object"))?;
    let fields = Fields(&item);
    let id = fields
        .text("id")
        .or_else(|| fields.text("_id"))
        .ok_or_else(|| reject("no conversation id"))?;
    let last_message = DateField::read(fields.get("lastMessageDate"));
    let sort_key = sort_value(fields.get("sort")).or(last_message.millis());
    if fields.get("deleted") == Some(&Value::Bool(true)) {
        return Ok(SearchResult {
            record: None,
            last_message,
            sort_key,
        });
    }
    let unread_count = fields.count("unreadCount");
    let mut record = ConversationRecord::new(id, raw.to_owned());
    record.created_at = DateField::read(fields.get("dateAdded")).time();
    record.last_activity_at = last_message.time();
    // HighLevel conversations have no closed state: every listed one is active.
    record.active = Some(true);
    record.status = unread_count.map(|n| if n > 0 { "unread" } else { "read" }.to_owned());
    record.channel = fields.text("type");
    record.contact_id = fields.text("contactId");
    record.contact_name = fields
        .text("fullName")
        .or_else(|| fields.text("contactName"));
    record.contact_phone = fields.text("phone");
    record.contact_email = fields.text("email");
    record.assignee = fields.text("assignedTo");
    record.unread_count = unread_count;
    let direction =
        fields
            .text("lastMessageDirection")
            .and_then(|d| match d.to_ascii_lowercase().as_str() {
                "inbound" => Some(Direction::Inbound),
                "outbound" => Some(Direction::Outbound),
                _ => None,
            });
    if let Some(direction) = direction {
        // The newest message's direction and date tell who is waiting for a reply.
        let at = record.last_activity_at;
        record.set_last_message(direction, at);
    }
    Ok(SearchResult {
        record: Some(record),
        last_message,
        sort_key,
    })
}

/// Field access that tolerates the casing and the type of a value.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// The non-null value of a camelCase field, or of its snake_case spelling.
    fn get(&self, camel: &str) -> Option<&'a Value> {
        self.0
            .get(camel)
            .or_else(|| self.0.get(&snake_case(camel)))
            .filter(|v| !v.is_null())
    }

    /// A non-empty string (numbers are accepted as text, e.g. a phone number).
    fn text(&self, camel: &str) -> Option<String> {
        match self.get(camel)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// A non-negative whole number, given as a number or a digit string.
    fn count(&self, camel: &str) -> Option<i64> {
        let n = match self.get(camel)? {
            Value::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            }),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }?;
        (n >= 0).then_some(n)
    }
}

fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    /// The example item of the provider reference (§5) maps onto every mirror column the
    /// search result can fill, and its JSON is kept byte for byte.
    #[test]
    fn reference_example_maps_onto_the_mirror() {
        let json = r#"{
      "id": "tDtDnQdgm2LXpyiqYvZ6",
      "locationId": "ve9EPM428kjkvShlRW1KT",
      "contactId": "9VEmS0si86GW6gXWU89b",
      "type": "TYPE_PHONE",
      "lastMessageType": "TYPE_SMS",
      "lastMessageBody": "See you at 3pm",
      "lastMessageDirection": "inbound",
      "lastMessageDate": 1772443200123,
      "dateAdded": 1770000000000,
      "dateUpdated": 1772443200456,
      "unreadCount": 1,
      "fullName": "John Doe",
      "contactName": "John Doe",
      "email": "john@example.com",
      "phone": "+15550001234",
      "assignedTo": "ABCHkzuJQ8ZMd4Te84GK",
      "starred": false,
      "inbox": true
    }"#;
        let item = raw(json);
        let read = read(&item).unwrap();
        let r = read.record.unwrap();
        assert_eq!(r.id, "tDtDnQdgm2LXpyiqYvZ6");
        assert_eq!(r.raw.get(), json);
        assert_eq!(
            r.last_activity_at.unwrap().to_mirror_text(),
            "2026-03-02T09:20:00.123000Z"
        );
        assert_eq!(r.created_at.unwrap().epoch_millis(), 1_770_000_000_000);
        assert_eq!(read.last_message.millis(), Some(1_772_443_200_123));
        assert_eq!(r.active, Some(true));
        assert_eq!(r.status.as_deref(), Some("unread"));
        assert_eq!(r.channel.as_deref(), Some("TYPE_PHONE"));
        assert_eq!(r.contact_id.as_deref(), Some("9VEmS0si86GW6gXWU89b"));
        assert_eq!(r.contact_name.as_deref(), Some("John Doe"));
        assert_eq!(r.contact_phone.as_deref(), Some("+15550001234"));
        assert_eq!(r.contact_email.as_deref(), Some("john@example.com"));
        assert_eq!(r.assignee.as_deref(), Some("ABCHkzuJQ8ZMd4Te84GK"));
        assert_eq!(r.unread_count, Some(1));
        assert_eq!(r.last_message_direction, Some(Direction::Inbound));
        assert_eq!(r.title, None);
        assert_eq!(r.detail_on_activity, None);
    }

    /// The official spec's `ConversationSchema` example (no timestamps at all) is a valid
    /// record with NULL dates, and `contactName` stands in for an empty `fullName`.
    #[test]
    fn spec_schema_example_without_dates() {
        let item = raw(
            r#"{"id":"ABCHkzuJQ8ZMd4Te84GK","contactId":"ABCHkzuJQ8ZMd4Te84GK",
            "locationId":"ABCHkzuJQ8ZMd4Te84GK","lastMessageBody":"This is a sample message body",
            "lastMessageType":"TYPE_SMS","type":"TYPE_PHONE","unreadCount":0,"fullName":"",
            "contactName":"John Doe Company","email":"johndoe@mailingdomain.com","phone":"+15550001234"}"#,
        );
        let read = read(&item).unwrap();
        let r = read.record.unwrap();
        assert_eq!(read.last_message, DateField::Missing);
        assert_eq!(r.last_activity_at, None);
        assert_eq!(r.created_at, None);
        assert_eq!(r.status.as_deref(), Some("read"));
        assert_eq!(r.contact_name.as_deref(), Some("John Doe Company"));
        assert_eq!(r.last_message_direction, None);
        assert_eq!(r.assignee, None);
    }

    /// Epoch milliseconds arrive as numbers, digit strings, floats or ISO text; zero,
    /// null and empty mean "no date"; garbage is unreadable, never a panic.
    #[test]
    fn epoch_millisecond_shapes() {
        let ms = |v: Value| DateField::read(Some(&v)).millis();
        assert_eq!(
            ms(serde_json::json!(1_628_008_053_263_i64)),
            Some(1_628_008_053_263)
        );
        assert_eq!(
            ms(serde_json::json!("1628008053263")),
            Some(1_628_008_053_263)
        );
        assert_eq!(
            ms(serde_json::json!(1.628008053263e12)),
            Some(1_628_008_053_263)
        );
        assert_eq!(
            ms(serde_json::json!("2023-10-01T12:00:00Z")),
            Some(1_696_161_600_000)
        );
        assert_eq!(
            ms(serde_json::json!("2024-03-27T18:13:49.000Z")),
            Some(1_711_563_229_000)
        );
        let field = |v: Value| DateField::read(Some(&v));
        assert_eq!(field(serde_json::json!(0)), DateField::Missing);
        assert_eq!(field(serde_json::json!("")), DateField::Missing);
        assert_eq!(field(Value::Null), DateField::Missing);
        assert_eq!(DateField::read(None), DateField::Missing);
        assert_eq!(field(serde_json::json!(-5)), DateField::Unreadable);
        assert_eq!(field(serde_json::json!(i64::MAX)), DateField::Unreadable);
        assert_eq!(field(serde_json::json!("yesterday")), DateField::Unreadable);
        assert_eq!(field(serde_json::json!({"ms": 1})), DateField::Unreadable);
        assert_eq!(field(serde_json::json!(1e300)), DateField::Unreadable);
    }

    /// Counts and names tolerate strings, snake_case keys and odd direction casing.
    #[test]
    fn lenient_types_and_key_casing() {
        let item = raw(
            r#"{"id":"c1","unread_count":"3","last_message_date":"1772443200123",
            "last_message_direction":"OUTBOUND","phone":15550001234,"assignedTo":null}"#,
        );
        let read = read(&item).unwrap();
        let r = read.record.unwrap();
        assert_eq!(r.unread_count, Some(3));
        assert_eq!(read.last_message.millis(), Some(1_772_443_200_123));
        assert_eq!(r.last_message_direction, Some(Direction::Outbound));
        assert_eq!(r.contact_phone.as_deref(), Some("15550001234"));
        assert_eq!(r.assignee, None);
        let odd = raw(r#"{"id":"c2","unreadCount":-1,"lastMessageDirection":"sideways"}"#);
        let r = super::read(&odd).unwrap().record.unwrap();
        assert_eq!(r.unread_count, None);
        assert_eq!(r.status, None);
        assert_eq!(r.last_message_direction, None);
    }

    /// Items without an id, or that are not objects, are rejected with their JSON.
    #[test]
    fn items_without_an_id_are_rejected() {
        for json in [
            r#"{"contactId":"x"}"#,
            r#"{"id":""}"#,
            r#"{"id":null}"#,
            "[1,2]",
            "42",
        ] {
            let rejected = read(&raw(json)).unwrap_err();
            assert_eq!(rejected.raw, json);
        }
        assert_eq!(
            read(&raw(r#"{"_id":"mongo1"}"#))
                .unwrap()
                .record
                .unwrap()
                .id,
            "mongo1"
        );
    }

    /// A conversation flagged `deleted` still counts for paging but is not a record, so
    /// a sweep marks it deleted.
    #[test]
    fn trashed_conversations_are_not_records() {
        let read = read(&raw(r#"{"id":"c1","deleted":true,"lastMessageDate":5}"#)).unwrap();
        assert!(read.record.is_none());
        assert_eq!(read.last_message.millis(), Some(5));
    }

    /// The row's `sort` value is its listing position when it is a sane epoch-ms number;
    /// `lastMessageDate` stands in when `sort` is absent.
    #[test]
    fn sort_array_is_the_listing_position() {
        let with_sort = read(&raw(
            r#"{"id":"c1","lastMessageDate":1772443200123,"sort":[1772443200999]}"#,
        ))
        .unwrap();
        assert_eq!(with_sort.sort_key, Some(1_772_443_200_999));
        assert_eq!(with_sort.last_message.millis(), Some(1_772_443_200_123));
        let digits = read(&raw(r#"{"id":"c1","sort":["1772443200999", "x"]}"#)).unwrap();
        assert_eq!(digits.sort_key, Some(1_772_443_200_999));
        let without = read(&raw(r#"{"id":"c1","lastMessageDate":1772443200123}"#)).unwrap();
        assert_eq!(without.sort_key, Some(1_772_443_200_123));
        let trashed = read(&raw(r#"{"id":"c1","deleted":true,"sort":[1772443200999]}"#)).unwrap();
        assert_eq!(trashed.sort_key, Some(1_772_443_200_999));
    }

    /// A `sort` value that is not a sane epoch-ms number is ignored, never trusted: the
    /// row falls back to `lastMessageDate` (or has no position at all).
    #[test]
    fn insane_sort_values_fall_back_to_last_message_date() {
        for sort in [
            "[-9223372036854775808]",
            "[9223372036854775807]",
            "[-1]",
            "[0]",
            "[1e300]",
            "[99999999999999999999999]",
            "[4102444800001]",
            "[946684799999]",
            "[\"soon\"]",
            "[\"2026-03-02T09:10:03Z\"]",
            "[null]",
            "[[1772443200999]]",
            "[{\"v\":1772443200999}]",
            "[]",
            "1772443200999",
            "\"1772443200999\"",
            "{}",
            "null",
        ] {
            let item = format!(r#"{{"id":"c1","lastMessageDate":1772443200123,"sort":{sort}}}"#);
            assert_eq!(
                read(&raw(&item)).unwrap().sort_key,
                Some(1_772_443_200_123),
                "{sort}"
            );
            let undated = format!(r#"{{"id":"c1","sort":{sort}}}"#);
            assert_eq!(read(&raw(&undated)).unwrap().sort_key, None, "{sort}");
        }
    }
}
