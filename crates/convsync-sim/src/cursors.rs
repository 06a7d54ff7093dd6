//! Server-side page cursors behind the opaque page tokens every provider hands out.
//!
//! All listings in the simulator are keyset walks over a sorted index, so one cursor
//! shape serves every provider: the query it belongs to (a fingerprint of the
//! parameters that must not change between pages), the last key returned, and a few
//! provider-specific extras. Tokens expire after the configured TTL and the store is
//! bounded (the oldest cursors are forgotten, which clients see as an expired token).

use std::collections::{HashMap, VecDeque};

/// Position in a listing plus what is needed to validate its reuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// Account the walk belongs to.
    pub(crate) account: usize,
    /// Fingerprint of the parameters that must stay identical between pages.
    pub(crate) query: u64,
    /// Last `(key, index)` returned; the next page starts after it.
    pub(crate) after: (i64, u32),
    /// Cached total and when it was computed (Spruce `totalCount` semantics).
    pub(crate) total: Option<(u64, i64)>,
    /// Platform-specific walk phase (e.g. D365 trailing empty page).
    pub(crate) phase: u8,
}

/// Why a page token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CursorRejection {
    #[error("unknown page token")]
    Unknown,
    #[error("page token expired")]
    Expired,
    #[error("page token used with different query parameters")]
    Mismatch,
}

const MAX_CURSORS: usize = 200_000;

/// Token → cursor map of one provider.
#[derive(Debug, Default)]
pub(crate) struct CursorStore {
    cursors: HashMap<String, (Cursor, i64)>,
    order: VecDeque<String>,
}

impl CursorStore {
    /// Remember `cursor` under `token`, issued at `now_us`.
    pub(crate) fn insert(&mut self, token: String, cursor: Cursor, now_us: i64) {
        if self.order.len() >= MAX_CURSORS {
            let oldest = self.order.pop_front();
            if let Some(old) = oldest {
                self.cursors.remove(&old);
            }
        }
        self.order.push_back(token.clone());
        self.cursors.insert(token, (cursor, now_us));
    }

    /// Look a token up, checking age and that it is reused with the same query.
    pub(crate) fn get(
        &self,
        token: &str,
        query: u64,
        now_us: i64,
        ttl_us: Option<i64>,
    ) -> Result<Cursor, CursorRejection> {
        let (cursor, issued) = self.cursors.get(token).ok_or(CursorRejection::Unknown)?;
        if ttl_us.is_some_and(|ttl| now_us - issued >= ttl) {
            return Err(CursorRejection::Expired);
        }
        if cursor.query != query {
            return Err(CursorRejection::Mismatch);
        }
        Ok(cursor.clone())
    }
}
