//! What a provider hands the engine and the engine hands the store: conversations in the
//! mirror's vocabulary, follow-up requests and what a sweep's absence means. A base module,
//! so that the store does not import the providers.

use serde_json::Value;
use serde_json::value::RawValue;

use crate::time::Timestamp;

/// The key of the stand-in stored in `raw` when the provider's JSON for a conversation is
/// larger than the source's `max_raw_bytes` (see [`ConversationRecord::omit_oversized_raw`]).
pub const RAW_OMITTED_KEY: &str = "convsync_raw_omitted";

/// Who sent the most recent message in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the customer/patient/contact to the organisation.
    Inbound,
    /// From the organisation (agent, bot, automation) to the contact.
    Outbound,
}

impl Direction {
    /// The mirror's text value (`inbound` / `outbound`).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// One conversation as listed by a provider, mapped onto the mirror's common columns.
///
/// Fields a provider does not supply stay `None` and are stored as NULL; the provider's own
/// JSON is kept whole in `raw` so that nothing is lost for reports that need more.
#[derive(Debug, Clone)]
pub struct ConversationRecord {
    /// The provider's conversation id (unique within the source).
    pub id: String,
    /// When the conversation was created.
    pub created_at: Option<Timestamp>,
    /// When the last message (or activity the provider reports) happened.
    pub last_activity_at: Option<Timestamp>,
    /// Open/active (`true`) or closed/archived/inactive (`false`); `None` when unknown.
    pub active: Option<bool>,
    /// The provider's own status word (e.g. `archived`, `unread`), for reports.
    pub status: Option<String>,
    /// Channel or conversation type (`sms`, `WHATSAPP`, `TYPE_PHONE`, ...).
    pub channel: Option<String>,
    /// The provider's contact id.
    pub contact_id: Option<String>,
    /// The contact's display name.
    pub contact_name: Option<String>,
    /// The contact's phone number (E.164 where the provider gives it).
    pub contact_phone: Option<String>,
    /// The contact's e-mail address.
    pub contact_email: Option<String>,
    /// The conversation's title or subject.
    pub title: Option<String>,
    /// Who the conversation is assigned to (provider user/member id).
    pub assignee: Option<String>,
    /// Unread message count, where the provider reports one.
    pub unread_count: Option<i64>,
    /// Direction of the last message, where the listing tells it.
    pub last_message_direction: Option<Direction>,
    /// Newest inbound message, where the listing tells it (e.g. the last message is
    /// inbound). Only ever moves forward in the mirror.
    pub last_inbound_at: Option<Timestamp>,
    /// Newest outbound message, where the listing tells it. Only ever moves forward.
    pub last_outbound_at: Option<Timestamp>,
    /// The contact waits for a reply (the newest message that counts is inbound), where
    /// the listing tells it.
    pub awaiting_reply: Option<bool>,
    /// The provider's JSON for this conversation, exactly as received.
    pub raw: Box<RawValue>,
    /// A follow-up request kind to queue when this conversation is new or its
    /// `last_activity_at` moved (e.g. Spruce's items, to learn who spoke last).
    pub detail_on_activity: Option<&'static str>,
    /// Set by the engine when this conversation's activity lies outside the source's
    /// `reply_state_horizon` (or it is closed), so that its on-activity follow-up is not
    /// read: if its activity moved, the stored direction and `awaiting_reply` describe an
    /// older message and become unknown (NULL).
    pub reply_state_unknown: bool,
}

impl ConversationRecord {
    /// A record with only an id and its raw JSON; the provider fills in what it knows.
    pub fn new(id: impl Into<String>, raw: Box<RawValue>) -> Self {
        ConversationRecord {
            id: id.into(),
            created_at: None,
            last_activity_at: None,
            active: None,
            status: None,
            channel: None,
            contact_id: None,
            contact_name: None,
            contact_phone: None,
            contact_email: None,
            title: None,
            assignee: None,
            unread_count: None,
            last_message_direction: None,
            last_inbound_at: None,
            last_outbound_at: None,
            awaiting_reply: None,
            raw,
            detail_on_activity: None,
            reply_state_unknown: false,
        }
    }

    /// Fills the reply facts from the newest message's direction and time, for listings
    /// that report them (the newest message is by definition the one that counts).
    pub fn set_last_message(&mut self, direction: Direction, at: Option<Timestamp>) {
        self.last_message_direction = Some(direction);
        match direction {
            Direction::Inbound => self.last_inbound_at = at.or(self.last_inbound_at),
            Direction::Outbound => self.last_outbound_at = at.or(self.last_outbound_at),
        }
        self.awaiting_reply = Some(direction == Direction::Inbound);
    }

    /// Replaces a `raw` longer than `max_bytes` with a small stand-in, so that one huge
    /// conversation cannot bloat the mirror: the record keeps every mapped column (the
    /// conversation stays visible and current in reports), and the stand-in says how large
    /// the original was and carries its hash, so that a change to it is still a change.
    /// Returns whether the raw was replaced.
    pub fn omit_oversized_raw(&mut self, max_bytes: usize) -> bool {
        let size = self.raw.get().len();
        if size <= max_bytes {
            return false;
        }
        let stand_in = serde_json::json!({
            RAW_OMITTED_KEY: {
                "bytes": size,
                "max_raw_bytes": max_bytes,
                "blake3": blake3::hash(self.raw.get().as_bytes()).to_hex().as_str(),
            }
        });
        match serde_json::value::to_raw_value(&stand_in) {
            Ok(raw) => {
                self.raw = raw;
                true
            }
            // Serialising a map of numbers and a string cannot fail; keep the original if
            // it ever did rather than lose the record.
            Err(_) => false,
        }
    }

    /// A hash of everything this record would write, so that an unchanged conversation
    /// costs no write when a page is read again.
    pub fn content_hash(&self) -> [u8; 16] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(self.raw.get().as_bytes());
        // `active` can be implied by the listing (D365 lists only active conversations)
        // rather than carried in the JSON, so it is part of the content.
        hasher.update(&[match self.active {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        }]);
        let mut out = [0u8; 16];
        out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        out
    }
}

/// Facts learned from a conversation's messages rather than from the listing: who spoke
/// last and whether the contact is waiting for a reply. `None` fields are left as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivityPatch {
    /// Newest activity seen in the messages.
    pub last_activity_at: Option<Timestamp>,
    /// Newest inbound message.
    pub last_inbound_at: Option<Timestamp>,
    /// Newest outbound message.
    pub last_outbound_at: Option<Timestamp>,
    /// Direction of the newest message that counts (internal notes do not).
    pub last_message_direction: Option<Direction>,
    /// The newest message that counts is inbound: someone is waiting for a reply.
    pub awaiting_reply: Option<bool>,
}

impl ActivityPatch {
    /// True when the patch would change nothing.
    pub fn is_empty(&self) -> bool {
        *self == ActivityPatch::default()
    }
}

/// A record the mirror cannot hold (no id, unreadable), kept with its JSON and the reason
/// so nothing is silently dropped.
#[derive(Debug, Clone)]
pub struct RejectedRecord {
    /// Why it was rejected.
    pub reason: String,
    /// The JSON as received (possibly truncated by the store).
    pub raw: String,
}

impl RejectedRecord {
    /// The most of `raw` the mirror keeps, in characters: a page of huge bad items must not
    /// bloat `rejected_records`, and the start of an item is enough to see what is wrong.
    pub const MAX_KEPT_CHARS: usize = 64 * 1024;

    /// The part of `raw` the mirror keeps: its first [`Self::MAX_KEPT_CHARS`] characters.
    pub fn kept_raw(&self) -> &str {
        match self.raw.char_indices().nth(Self::MAX_KEPT_CHARS) {
            Some((end, _)) => &self.raw[..end],
            None => &self.raw,
        }
    }

    /// BLAKE3 of the whole item as received: what tells one bad item from another, so
    /// that an item read again is counted rather than recorded twice.
    pub fn item_hash(&self) -> blake3::Hash {
        blake3::hash(self.raw.as_bytes())
    }
}

/// What happens to mirrored conversations that a complete sweep did not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absence {
    /// They are closed (`active = false`, `closed_at` set): D365 lists active ones only.
    Closed,
    /// They no longer exist at the provider (`deleted_at` set).
    Deleted,
}

/// A per-conversation follow-up request (messages, items, a fresh copy), queued in the
/// database in the same transaction as the page that asked for it, so that none is lost.
#[derive(Debug, Clone, PartialEq)]
pub struct DetailRequest {
    /// The conversation.
    pub conversation_id: String,
    /// Which kind of follow-up (provider-defined, e.g. `items`, `fetch`).
    pub kind: String,
    /// Only messages after this instant matter (the previous activity time), when known.
    pub since: Option<Timestamp>,
    /// Position within a multi-page follow-up.
    pub position: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(raw: &str) -> ConversationRecord {
        ConversationRecord::new("c1", RawValue::from_string(raw.to_owned()).unwrap())
    }

    /// A raw at or under the cap is kept exactly as received.
    #[test]
    fn raw_within_the_cap_is_kept() {
        let raw = r#"{"id":"c1","title":"hello"}"#;
        let mut r = record(raw);
        assert!(!r.omit_oversized_raw(raw.len()));
        assert_eq!(r.raw.get(), raw);
    }

    /// A raw over the cap becomes a small stand-in naming its size; the mapped columns stay,
    /// and a different oversized raw still hashes differently.
    #[test]
    fn raw_over_the_cap_is_replaced_by_a_stand_in() {
        let big = format!(r#"{{"id":"c1","blob":"{}"}}"#, "x".repeat(10_000));
        let mut r = record(&big);
        r.title = Some("kept".into());
        assert!(r.omit_oversized_raw(1024));
        assert!(r.raw.get().len() < 300, "{}", r.raw.get());
        let stand_in: serde_json::Value = serde_json::from_str(r.raw.get()).unwrap();
        assert_eq!(stand_in[RAW_OMITTED_KEY]["bytes"], big.len());
        assert_eq!(stand_in[RAW_OMITTED_KEY]["max_raw_bytes"], 1024);
        assert_eq!(r.title.as_deref(), Some("kept"));

        let other = big.replace("xxxx", "xxxy");
        let mut r2 = record(&other);
        assert!(r2.omit_oversized_raw(1024));
        assert_ne!(r.content_hash(), r2.content_hash());
    }
}
