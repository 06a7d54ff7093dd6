//! Lenient reading of D365 JSON: Microsoft's docs disagree on key casing
//! (`continuationtoken` in one table, `continuationToken` in the sample, `messageid` vs
//! `messageId`), so keys are matched case-insensitively; timestamps come as ISO 8601 with
//! seven fractional digits, with or without an offset, or as epoch milliseconds.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::time::Timestamp;

/// A JSON object whose values stay raw (borrowed from the body), looked up by key without
/// regard to ASCII case.
#[derive(Debug)]
pub(super) struct Object<'a> {
    fields: BTreeMap<String, &'a RawValue>,
}

impl<'a> Object<'a> {
    /// Reads `text` as an object; `None` when it is valid JSON of another type.
    pub(super) fn parse(text: &'a str) -> Result<Option<Self>, serde_json::Error> {
        let value: &'a RawValue = serde_json::from_str(text)?;
        Ok(Self::from_raw(value))
    }

    /// The object in `raw`, or `None` when `raw` holds something else.
    pub(super) fn from_raw(raw: &'a RawValue) -> Option<Self> {
        serde_json::from_str::<BTreeMap<String, &'a RawValue>>(raw.get())
            .ok()
            .map(|fields| Object { fields })
    }

    /// The raw value of `key`: an exact match first, else the first key equal to it
    /// ignoring ASCII case.
    pub(super) fn raw(&self, key: &str) -> Option<&'a RawValue> {
        self.fields.get(key).copied().or_else(|| {
            self.fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| *v)
        })
    }

    /// The value of `key`, parsed; `None` when absent. JSON `null` comes back as
    /// `Some(Value::Null)`.
    pub(super) fn value(&self, key: &str) -> Option<Value> {
        self.raw(key)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
    }

    /// A nested object.
    pub(super) fn object(&self, key: &str) -> Option<Object<'a>> {
        self.raw(key).and_then(Object::from_raw)
    }

    /// A text value: strings as they are (trimmed), numbers as their decimal text; `None`
    /// for absent, null, empty or any other type.
    pub(super) fn text(&self, key: &str) -> Option<String> {
        match self.value(key)? {
            Value::String(s) => {
                let s = s.trim();
                (!s.is_empty()).then(|| s.to_owned())
            }
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The elements of an array value, raw: `Ok(None)` when the key is absent, `Ok(Some([]))`
    /// for `null`, `Err` when the value is neither an array nor null.
    pub(super) fn array(&self, key: &str) -> Result<Option<Vec<&'a RawValue>>, String> {
        let Some(raw) = self.raw(key) else {
            return Ok(None);
        };
        serde_json::from_str::<Option<Vec<&'a RawValue>>>(raw.get())
            .map(|items| Some(items.unwrap_or_default()))
            .map_err(|_| format!("`{key}` is not an array"))
    }
}

/// Reads a provider timestamp leniently: RFC 3339 with any precision and offset; an ISO 8601
/// date-time without offset (taken as UTC, which is what the service writes); or epoch
/// milliseconds as a number or a 13-digit string (the form of `messageId`).
pub(super) fn timestamp(value: &Value) -> Option<Timestamp> {
    match value {
        Value::String(text) => {
            let text = text.trim();
            if let Ok(t) = Timestamp::parse_rfc3339(text) {
                return Some(t);
            }
            if let Ok(naive) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
                return Some(naive.and_utc().into());
            }
            if text.len() >= 12 && text.bytes().all(|b| b.is_ascii_digit()) {
                return text
                    .parse()
                    .ok()
                    .and_then(|ms| Timestamp::from_epoch_millis(ms).ok());
            }
            None
        }
        Value::Number(n) => n
            .as_i64()
            .and_then(|ms| Timestamp::from_epoch_millis(ms).ok()),
        _ => None,
    }
}

/// The instant one .NET tick (100 ns) before `t`, written with seven fractional digits.
///
/// `StartTimeStamp` means "created (or sent) *after*", so asking from one tick earlier also
/// returns what happened exactly at `t`; the seven-digit form never rounds forward.
pub(super) fn tick_before(t: Timestamp) -> String {
    t.saturating_sub(std::time::Duration::from_nanos(100))
        .to_rfc3339_ticks()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys match regardless of case, and an exact match is preferred.
    #[test]
    fn keys_match_case_insensitively() {
        let o = Object::parse(r#"{"continuationToken":"a","ConversationId":"b","x":1,"X":2}"#)
            .unwrap()
            .unwrap();
        assert_eq!(o.text("continuationtoken").as_deref(), Some("a"));
        assert_eq!(o.text("conversationid").as_deref(), Some("b"));
        assert_eq!(o.text("X").as_deref(), Some("2"));
        assert_eq!(o.text("missing"), None);
    }

    /// Null, empty and non-text values are not text.
    #[test]
    fn text_ignores_null_empty_and_structures() {
        let o = Object::parse(r#"{"a":null,"b":"  ","c":{},"d":42}"#)
            .unwrap()
            .unwrap();
        assert_eq!(o.text("a"), None);
        assert_eq!(o.text("b"), None);
        assert_eq!(o.text("c"), None);
        assert_eq!(o.text("d").as_deref(), Some("42"));
    }

    /// Arrays: absent, null and wrong types are told apart.
    #[test]
    fn arrays_distinguish_absent_null_and_wrong_type() {
        let o = Object::parse(r#"{"n":null,"a":[1,{"x":2}],"s":"no"}"#)
            .unwrap()
            .unwrap();
        assert!(o.array("missing").unwrap().is_none());
        assert_eq!(o.array("n").unwrap().unwrap().len(), 0);
        let a = o.array("a").unwrap().unwrap();
        assert_eq!(a[1].get(), r#"{"x":2}"#);
        assert!(o.array("s").is_err());
    }

    /// A top-level value that is not an object is reported as such.
    #[test]
    fn non_objects_are_none() {
        assert!(Object::parse("[1,2]").unwrap().is_none());
        assert!(Object::parse("{").is_err());
    }

    /// Seven fractional digits are kept to the tick; offsets, no offset and epoch ms work.
    #[test]
    fn timestamps_are_read_leniently() {
        let t = timestamp(&Value::from("2026-03-02T09:15:03.1234567Z")).unwrap();
        assert_eq!(t.to_rfc3339_ticks(), "2026-03-02T09:15:03.1234567Z");
        let offset = timestamp(&Value::from("2025-04-15T12:37:00+00:00")).unwrap();
        assert_eq!(offset.to_rfc3339_seconds(), "2025-04-15T12:37:00Z");
        let naive = timestamp(&Value::from("2026-03-02T09:15:03.1234567")).unwrap();
        assert_eq!(naive, t);
        let ms = timestamp(&Value::from("1772443200123")).unwrap();
        assert_eq!(ms.epoch_millis(), 1_772_443_200_123);
        assert_eq!(timestamp(&Value::from(1_772_443_200_123_i64)), Some(ms));
        assert_eq!(timestamp(&Value::from("yesterday")), None);
        assert_eq!(timestamp(&Value::Null), None);
    }

    /// Asking from one tick earlier keeps the boundary instant and all seven digits.
    #[test]
    fn tick_before_is_exact() {
        let t = Timestamp::parse_rfc3339("2026-03-02T09:15:03.1234567Z").unwrap();
        assert_eq!(tick_before(t), "2026-03-02T09:15:03.1234566Z");
        let whole = Timestamp::parse_rfc3339("2026-03-02T09:15:03Z").unwrap();
        assert_eq!(tick_before(whole), "2026-03-02T09:15:02.9999999Z");
    }
}
