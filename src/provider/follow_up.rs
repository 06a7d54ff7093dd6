//! Follow-ups: per-conversation requests (Spruce's items, D365's messages) that a
//! provider's pages queue and the engine sends after the walks.
//!
//! The queue stores a follow-up's kind as text ([`DetailRequest::kind`]), so that it
//! survives restarts. A provider writes that text from its own typed kind
//! ([`FollowUpKind::as_str`]) and reads it back once, at the edge
//! ([`FollowUps::read_queued`]), into a typed [`FollowUp`] that builds its request and
//! reads its answer: nothing dispatches on the text afterwards, and a text the provider
//! does not know (queued by another version, or edited) is a
//! [`ProviderError::UnknownFollowUpKind`].

use serde_json::Value;

use super::{Absence, ActivityPatch, ConversationRecord, DetailRequest, ProviderError};
use crate::http::{HttpResponse, RequestSpec};

/// A provider's follow-ups: how queued ones are read, and how much of a cycle they may use.
pub trait FollowUps: Send + Sync {
    /// Reads `queued` into one of this provider's typed follow-ups, parsing its stored kind;
    /// a kind the provider does not know is [`ProviderError::UnknownFollowUpKind`].
    fn read_queued<'a>(
        &'a self,
        queued: &'a DetailRequest,
    ) -> Result<Box<dyn FollowUp + 'a>, ProviderError>;

    /// Share (0.0–1.0) of the source's `max_follow_ups_per_cycle` that these follow-ups may
    /// use in one cycle: providers whose follow-ups are optional enrichment (D365 messages)
    /// keep them to a small share of the request budget.
    fn budget_share(&self) -> f64 {
        1.0
    }
}

/// One queued follow-up, typed: it builds its request and reads the answer.
pub trait FollowUp: Send + Sync {
    /// The request for this follow-up at its saved position.
    fn build_request(&self) -> Result<RequestSpec, ProviderError>;

    /// Reads the answer (404 answers reach this method when the request allowed them).
    fn parse_response(&self, response: &HttpResponse) -> Result<DetailPage, ProviderError>;
}

/// A provider's follow-up kinds as a type: the text the queue stores for each, and back.
pub trait FollowUpKind: Copy + 'static {
    /// Every kind.
    const ALL: &'static [Self];

    /// The text the queue stores for this kind. Never change it: follow-ups queued under
    /// the old text would become unknown.
    fn as_str(self) -> &'static str;

    /// The kind stored as `text`.
    fn parse(text: &str) -> Result<Self, ProviderError> {
        Self::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                ProviderError::unknown_follow_up_kind(text, Self::ALL.iter().map(|k| k.as_str()))
            })
    }
}

/// The follow-ups of a provider that queues none: every stored kind is unknown.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFollowUps;

impl FollowUps for NoFollowUps {
    fn read_queued<'a>(
        &'a self,
        queued: &'a DetailRequest,
    ) -> Result<Box<dyn FollowUp + 'a>, ProviderError> {
        Err(ProviderError::unknown_follow_up_kind(&queued.kind, []))
    }
}

/// The result of one follow-up request.
#[derive(Debug, Default)]
pub struct DetailPage {
    /// A fresh copy of the conversation, to upsert.
    pub record: Option<ConversationRecord>,
    /// Who-spoke-last facts to merge into the row.
    pub patch: Option<ActivityPatch>,
    /// The conversation no longer exists or is closed (the provider answered 404).
    pub gone: Option<Absence>,
    /// More pages of this follow-up are needed from this position.
    pub next: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Items,
        Notes,
    }

    impl FollowUpKind for Kind {
        const ALL: &'static [Self] = &[Kind::Items, Kind::Notes];

        fn as_str(self) -> &'static str {
            match self {
                Kind::Items => "items",
                Kind::Notes => "notes",
            }
        }
    }

    fn queued(kind: &str) -> DetailRequest {
        DetailRequest {
            conversation_id: "c1".into(),
            kind: kind.into(),
            since: None,
            position: None,
        }
    }

    /// A stored kind reads back as the kind that wrote it.
    #[test]
    fn a_stored_kind_reads_back_as_its_kind() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()).unwrap(), *kind);
        }
    }

    /// A stored kind no variant writes (another version's, or an edited queue) is a typed
    /// error naming it and the kinds the provider knows.
    #[test]
    fn an_unknown_stored_kind_is_a_typed_error() {
        let error = Kind::parse("fetch").unwrap_err();
        assert!(
            matches!(&error, ProviderError::UnknownFollowUpKind { kind, .. } if kind == "fetch"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            r#"unknown follow-up kind "fetch" (this provider queues "items", "notes")"#
        );
        // Case and spacing matter: the stored text is compared exactly.
        assert!(Kind::parse("Items").is_err());
        assert!(Kind::parse(" items").is_err());
    }

    /// A provider without follow-ups refuses every stored kind.
    #[test]
    fn no_follow_ups_refuses_every_kind() {
        let queued = queued("items");
        let error = NoFollowUps.read_queued(&queued).err().unwrap();
        assert_eq!(
            error.to_string(),
            r#"unknown follow-up kind "items" (this provider queues no follow-ups)"#
        );
        assert_eq!(NoFollowUps.budget_share(), 1.0);
    }
}
