//! Where a Sinch walk stands, as stored in the engine's cursor after every page.
//!
//! Page tokens are opaque (base64 protobuf) and are only ever echoed back. The inventory
//! sweep also records which of its two listings it is in, so that a walk resumed after a
//! restart or a rate-limit pause continues in the right listing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::provider::ProviderError;

/// The two listings of `GET /conversations` that together hold every conversation:
/// `only_active=false` lists *inactive* conversations only, not all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Phase {
    /// `only_active=true`.
    Active,
    /// `only_active=false`.
    Inactive,
}

impl Phase {
    /// The `only_active` query value.
    pub(super) fn only_active(self) -> &'static str {
        match self {
            Phase::Active => "true",
            Phase::Inactive => "false",
        }
    }

    /// What the listing says about a conversation that omits `active`.
    pub(super) fn implied_active(self) -> bool {
        self == Phase::Active
    }
}

/// Position of the inventory sweep: active listing first, then the inactive one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct InventoryPosition {
    /// The listing being walked.
    pub(super) phase: Phase,
    /// Token of the next page of that listing; `None` for its first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) page_token: Option<String>,
    /// Conversations this sweep has listed so far (both listings), so that an app that
    /// lists none at all can be reported.
    #[serde(default)]
    pub(super) listed: u64,
}

impl InventoryPosition {
    /// The first page of a sweep.
    pub(super) fn start() -> Self {
        InventoryPosition {
            phase: Phase::Active,
            page_token: None,
            listed: 0,
        }
    }

    /// Reads the engine's stored position (`None` = the sweep's first page).
    pub(super) fn from_cursor(position: Option<&Value>) -> Result<Self, ProviderError> {
        match position {
            None => Ok(Self::start()),
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|e| ProviderError::BadCursor(format!("inventory position {value}: {e}"))),
        }
    }

    /// Where the sweep goes after a page that listed `count` conversations and returned
    /// `next_page_token`: the next page of this listing, the first page of the inactive
    /// listing, or `None` when both are done.
    pub(super) fn advance(&self, count: usize, next_page_token: Option<String>) -> Option<Self> {
        let listed = self.listed.saturating_add(count as u64);
        match (next_page_token, self.phase) {
            (Some(token), phase) => Some(InventoryPosition {
                phase,
                page_token: Some(token),
                listed,
            }),
            (None, Phase::Active) => Some(InventoryPosition {
                phase: Phase::Inactive,
                page_token: None,
                listed,
            }),
            (None, Phase::Inactive) => None,
        }
    }

    /// The position as the engine stores it.
    pub(super) fn to_cursor(&self) -> Value {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Position of the recent-conversations delta: the next page's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RecentPosition {
    /// Token of the next page.
    pub(super) page_token: String,
}

impl RecentPosition {
    /// Reads the engine's stored position (`None` = the walk's first page).
    pub(super) fn from_cursor(position: Option<&Value>) -> Result<Option<Self>, ProviderError> {
        position
            .map(|value| {
                serde_json::from_value(value.clone())
                    .map_err(|e| ProviderError::BadCursor(format!("recent position {value}: {e}")))
            })
            .transpose()
    }

    /// The position as the engine stores it.
    pub(super) fn to_cursor(&self) -> Value {
        serde_json::json!({ "page_token": self.page_token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sweep walks the active listing to its end, then the inactive one, then stops.
    #[test]
    fn inventory_walks_active_then_inactive() {
        let start = InventoryPosition::from_cursor(None).unwrap();
        assert_eq!(start, InventoryPosition::start());
        let second = start.advance(20, Some("t1".into())).unwrap();
        assert_eq!(
            (second.phase, second.page_token.as_deref(), second.listed),
            (Phase::Active, Some("t1"), 20)
        );
        let inactive = second.advance(3, None).unwrap();
        assert_eq!(
            (
                inactive.phase,
                inactive.page_token.as_deref(),
                inactive.listed
            ),
            (Phase::Inactive, None, 23)
        );
        let more = inactive.advance(20, Some("t2".into())).unwrap();
        assert_eq!(more.phase, Phase::Inactive);
        assert_eq!(more.advance(0, None), None);
    }

    /// Positions survive the round trip through the cursor table; garbage is a bad cursor.
    #[test]
    fn positions_round_trip_and_reject_garbage() {
        let p = InventoryPosition::start()
            .advance(5, Some("abc=".into()))
            .unwrap();
        assert_eq!(
            InventoryPosition::from_cursor(Some(&p.to_cursor())).unwrap(),
            p
        );
        let r = RecentPosition {
            page_token: "xyz".into(),
        };
        assert_eq!(
            RecentPosition::from_cursor(Some(&r.to_cursor())).unwrap(),
            Some(r)
        );
        assert_eq!(RecentPosition::from_cursor(None).unwrap(), None);
        let garbage = serde_json::json!({"phase": "sideways"});
        assert!(matches!(
            InventoryPosition::from_cursor(Some(&garbage)),
            Err(ProviderError::BadCursor(_))
        ));
        assert!(RecentPosition::from_cursor(Some(&serde_json::json!(42))).is_err());
    }
}
