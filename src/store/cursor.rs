//! Where each walk of each source stands, kept as an opaque value: the engine's cursor
//! rules ([`crate::sync::cursor`]) decide what the value holds and how it may move; the
//! store only keeps it atomically with the pages it belongs to.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// One walk's cursor as stored: JSON text the store never looks into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorState(String);

impl CursorState {
    /// Encodes a cursor.
    pub fn encode(cursor: &impl Serialize) -> Result<CursorState, StoreError> {
        serde_json::to_string(cursor)
            .map(CursorState)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode cursor: {e}")))
    }

    /// Decodes the cursor of `source`'s walk `walk` (named in the error).
    pub fn decode<T: DeserializeOwned>(&self, source: &str, walk: &str) -> Result<T, StoreError> {
        serde_json::from_str(&self.0)
            .map_err(|e| StoreError::Corrupt(format!("cursor {source}/{walk}: {e}")))
    }

    /// The cursor as a backend read it back.
    pub(super) fn from_stored(text: String) -> CursorState {
        CursorState(text)
    }

    /// The text a backend stores.
    pub(super) fn as_stored(&self) -> &str {
        &self.0
    }
}

/// A rewrite of one walk's cursor ([`Cursors::rewrite_cursors`]): given the walk's name and
/// its cursor, the cursor to store instead.
pub type CursorRewrite<'a> =
    dyn FnMut(&str, &CursorState) -> Result<CursorState, StoreError> + Send + 'a;

/// The walks' cursors outside a page: loading them at the start of a cycle, saving one a
/// walk changes without a page, and the operator's edits.
#[async_trait]
pub trait Cursors: Send + Sync {
    /// All walk cursors of `source`, by walk name.
    async fn load_cursors(&self, source: &str) -> Result<HashMap<String, CursorState>, StoreError>;

    /// Stores one walk's cursor outside a page (e.g. initialising a sweep schedule).
    async fn save_cursor(
        &self,
        source: &str,
        walk: &str,
        cursor: &CursorState,
    ) -> Result<(), StoreError>;

    /// Writes the given walks' cursors of `source` in one transaction (`convsync state
    /// set`); walks not named keep theirs.
    async fn write_cursors(
        &self,
        source: &str,
        walks: &BTreeMap<String, CursorState>,
    ) -> Result<(), StoreError>;

    /// Rewrites every cursor of `source` in one transaction, walk by walk in name order,
    /// with what `rewrite` makes of it. With `apply` false nothing is written (a dry run:
    /// `rewrite` still sees every cursor).
    async fn rewrite_cursors(
        &self,
        source: &str,
        apply: bool,
        rewrite: &mut CursorRewrite<'_>,
    ) -> Result<(), StoreError>;
}
