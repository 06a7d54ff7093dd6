//! What `convsync verify` reads and writes: each mirrored conversation's state as the
//! comparison needs it, and the `verifications` table (one row per finished
//! verification, docs/schema.md "Verifications"), whose latest row per source feeds the
//! drift metrics and the daemon's verification schedule. Nothing here writes
//! `conversations`: a verification proves the mirror, it never repairs it.

use async_trait::async_trait;
use serde::Serialize;

use super::StoreError;
use crate::time::Timestamp;

/// One mirrored conversation as a verification compares it with the provider's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirroredState {
    /// The provider's conversation id.
    pub conversation_id: String,
    /// The mirror's `last_activity_at`.
    pub last_activity_at: Option<Timestamp>,
    /// The mirror's `active` flag.
    pub active: Option<bool>,
    /// `closed_at` is set.
    pub closed: bool,
    /// `deleted_at` is set.
    pub deleted: bool,
}

/// How much of the provider a verification read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// The whole listing: every kind of drift can be found.
    Full,
    /// A random sample of mirrored ids, looked for in the listing.
    Sample,
}

impl VerifyMode {
    /// The value as `verifications.mode` stores it.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyMode::Full => "full",
            VerifyMode::Sample => "sample",
        }
    }
}

/// Drift found by one verification, per kind (docs: "Verifying the mirror").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DriftCounts {
    /// Listed by the provider, not mirrored.
    pub missing: u64,
    /// Mirrored, but the listing carries newer activity or another open state.
    pub stale: u64,
    /// Mirrored as present, absent from a listing complete for that state.
    pub extra: u64,
    /// Mirrored as deleted (or closed, where the listing lists open ones only), yet listed.
    pub deleted_listed: u64,
}

impl DriftCounts {
    /// All kinds together.
    pub fn total(&self) -> u64 {
        self.missing
            .saturating_add(self.stale)
            .saturating_add(self.extra)
            .saturating_add(self.deleted_listed)
    }

    /// Each kind with its name as metrics and `--json` spell it.
    pub fn by_kind(&self) -> [(&'static str, u64); 4] {
        [
            ("missing", self.missing),
            ("stale", self.stale),
            ("extra", self.extra),
            ("deleted_listed", self.deleted_listed),
        ]
    }
}

/// One finished verification, as `verifications` keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationRecord {
    /// The source verified.
    pub source: String,
    /// When it began (the listing's first request).
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// Full or sample.
    pub mode: VerifyMode,
    /// The listing walked.
    pub walk: String,
    /// Conversations compared.
    pub checked: u64,
    /// Drift found.
    pub drift: DriftCounts,
    /// The instant up to which the mirror is proven: `started_at` when no drift was found.
    pub verified_through: Option<Timestamp>,
    /// Requests sent to the provider.
    pub requests: u64,
}

/// Reads for a verification and its record.
#[async_trait]
pub trait Verifications: Send + Sync {
    /// Every mirrored conversation of `source`, deleted and closed ones included.
    async fn mirrored_states(&self, source: &str) -> Result<Vec<MirroredState>, StoreError>;

    /// Records a finished verification; the only write a verification makes.
    async fn record_verification(&self, record: &VerificationRecord) -> Result<(), StoreError>;

    /// The latest verification of each source that has one.
    async fn latest_verifications(&self) -> Result<Vec<VerificationRecord>, StoreError>;
}

/// A `verifications` row as both backends read it: instants in the mirror's text form
/// (PostgreSQL formats its `timestamptz` with `convsync_event_time`).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct StoredVerification {
    pub source: String,
    pub started_at: String,
    pub finished_at: String,
    pub mode: String,
    pub walk: String,
    pub checked: i64,
    pub missing: i64,
    pub stale: i64,
    pub extra: i64,
    pub deleted_listed: i64,
    pub verified_through: Option<String>,
    pub requests: i64,
}

/// A stored instant read back; text the mirror did not write reads as unknown.
pub(super) fn instant(text: Option<&str>) -> Option<Timestamp> {
    text.and_then(|t| Timestamp::parse_rfc3339(t).ok())
}

/// A stored count (never negative: written from a `u64`) read back.
fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A count as the databases' signed 64-bit integers hold it (capped, never wrapped).
pub(super) fn stored(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl From<StoredVerification> for VerificationRecord {
    fn from(row: StoredVerification) -> Self {
        VerificationRecord {
            started_at: instant(Some(&row.started_at)).unwrap_or(Timestamp::UNIX_EPOCH),
            finished_at: instant(Some(&row.finished_at)).unwrap_or(Timestamp::UNIX_EPOCH),
            // An unknown word reads as a sample: the narrower claim.
            mode: match row.mode.as_str() {
                "full" => VerifyMode::Full,
                _ => VerifyMode::Sample,
            },
            checked: count(row.checked),
            drift: DriftCounts {
                missing: count(row.missing),
                stale: count(row.stale),
                extra: count(row.extra),
                deleted_listed: count(row.deleted_listed),
            },
            verified_through: instant(row.verified_through.as_deref()),
            requests: count(row.requests),
            source: row.source,
            walk: row.walk,
        }
    }
}
