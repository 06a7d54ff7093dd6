//! Verifying the mirror: a source's listing read from the provider and compared with the
//! mirrored rows, without writing a conversation (docs/verify.md).
//!
//! The listing is the provider's sweep walk (every provider has one), read with its own
//! [`Walk`] object through the source's HTTP client at background priority
//! ([`crate::http::Priority`]): the daemon's requests in the same budget always go first.
//! Each listed conversation is compared with the mirror's row as it stood when the
//! verification began; what changed at the provider after that instant is the daemon's
//! next delta's business, not drift, and is only counted as `tolerated`. The one write is
//! the verification's row in `verifications`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rand::seq::IteratorRandom;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Source;
use crate::http::HttpError;
use crate::provider::{
    Absence, ConversationRecord, Provider, ProviderError, Walk, WalkContext, WalkKind,
};
use crate::store::{DriftCounts, MirroredState, Store, StoreError, VerificationRecord, VerifyMode};
use crate::time::Timestamp;

/// Ids listed per kind of drift at most; the counts are always complete.
pub const MAX_LISTED_IDS: usize = 50;

/// What a verification reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// Look for this many random mirrored conversations instead of comparing everything.
    pub sample: Option<u32>,
}

/// The ids of drifted conversations, per kind, [`MAX_LISTED_IDS`] each at most.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DriftIds {
    /// Listed, not mirrored.
    pub missing: Vec<String>,
    /// Mirrored with older activity or another open state than listed.
    pub stale: Vec<String>,
    /// Mirrored as present, absent from the complete listing.
    pub extra: Vec<String>,
    /// Mirrored as deleted (or closed, for a listing of open ones), listed.
    pub deleted_listed: Vec<String>,
}

/// The result of one source's verification.
#[derive(Debug, Clone)]
pub struct Verification {
    /// What was recorded in `verifications`.
    pub record: VerificationRecord,
    /// Drifted ids, bounded.
    pub ids: DriftIds,
    /// Listed conversations whose provider activity is newer than the verification's
    /// start: changed meanwhile, left to the daemon, not drift.
    pub tolerated: u64,
    /// Sample mode: sampled ids the listing was not read far enough to find (none when
    /// it was read to its end).
    pub unresolved: u64,
}

impl Verification {
    /// Whether any drift was found.
    pub fn drifted(&self) -> bool {
        self.record.drift.total() > 0
    }
}

/// Why a verification could not finish.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The mirror could not be read or the verification recorded.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The provider refused or failed a request.
    #[error("{walk}: {source}")]
    Http {
        /// The listing.
        walk: &'static str,
        /// Why.
        #[source]
        source: HttpError,
    },
    /// A page could not be read or requested.
    #[error("{walk}: {source}")]
    Provider {
        /// The listing.
        walk: &'static str,
        /// Why.
        #[source]
        source: ProviderError,
    },
    /// The listing named a page position it had named before, or ran past the source's
    /// page cap: it would never end.
    #[error("{walk}: the listing does not end ({why})")]
    Endless {
        /// The listing.
        walk: &'static str,
        /// Why it was stopped.
        why: String,
    },
    /// Shutdown was requested.
    #[error("interrupted")]
    Interrupted,
}

/// The listing a verification reads: the provider's sweep, else its first walk.
fn listing(provider: &dyn Provider) -> Option<&Arc<dyn Walk>> {
    let walks = provider.walks();
    walks
        .iter()
        .find(|w| matches!(w.spec().kind, WalkKind::Sweep { .. }))
        .or_else(|| walks.first())
}

/// What a complete listing says about the conversations it leaves out.
fn absence_of(walk: &dyn Walk) -> Option<Absence> {
    match walk.spec().kind {
        WalkKind::Sweep { absence, .. } => Some(absence),
        WalkKind::Delta(_) => None,
    }
}

/// Bounded ids and complete counts, built up as the listing is read.
#[derive(Default)]
struct Findings {
    drift: DriftCounts,
    ids: DriftIds,
    tolerated: u64,
}

impl Findings {
    fn note(&mut self, kind: DriftKind, id: &str) {
        let (count, ids) = match kind {
            DriftKind::Missing => (&mut self.drift.missing, &mut self.ids.missing),
            DriftKind::Stale => (&mut self.drift.stale, &mut self.ids.stale),
            DriftKind::Extra => (&mut self.drift.extra, &mut self.ids.extra),
            DriftKind::DeletedListed => {
                (&mut self.drift.deleted_listed, &mut self.ids.deleted_listed)
            }
        };
        *count = count.saturating_add(1);
        if ids.len() < MAX_LISTED_IDS {
            ids.push(id.to_owned());
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum DriftKind {
    Missing,
    Stale,
    Extra,
    DeletedListed,
}

/// Compares one listed conversation with its mirrored row (`None`: not mirrored).
/// `Err(())` means it changed at the provider after `started_at`: tolerated.
fn compare(
    listed: &ConversationRecord,
    mirrored: Option<&MirroredState>,
    absence: Option<Absence>,
    started_at: Timestamp,
) -> Result<Option<DriftKind>, ()> {
    let changed_since_start = listed
        .last_activity_at
        .max(listed.created_at)
        .is_some_and(|at| at >= started_at);
    let Some(row) = mirrored else {
        return if changed_since_start {
            Err(())
        } else {
            Ok(Some(DriftKind::Missing))
        };
    };
    // A listing of open conversations only (D365's) lists no closed one either.
    let gone = row.deleted || (absence == Some(Absence::Closed) && row.closed);
    if gone {
        return Ok(Some(DriftKind::DeletedListed));
    }
    let behind = match (listed.last_activity_at, row.last_activity_at) {
        (Some(provider), Some(mirror)) => provider > mirror,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let other_state = matches!((listed.active, row.active), (Some(a), Some(b)) if a != b);
    match (behind || other_state, changed_since_start) {
        (false, _) => Ok(None),
        (true, true) => Err(()),
        (true, false) => Ok(Some(DriftKind::Stale)),
    }
}

/// Whether a mirrored row that a complete listing left out is drift: it is mirrored as
/// present in the state the listing covers (every conversation, or open ones only).
fn is_extra(row: &MirroredState, absence: Option<Absence>) -> bool {
    match absence {
        Some(Absence::Deleted) => !row.deleted,
        Some(Absence::Closed) => !row.deleted && !row.closed && row.active != Some(false),
        None => false,
    }
}

/// Verifies `source` against its provider, records the result in `verifications` and
/// returns it. Reads the provider's listing at background priority; writes no
/// conversation.
pub async fn verify_source(
    source: &Source,
    store: &Store,
    options: VerifyOptions,
    cancel: &CancellationToken,
) -> Result<Verification, VerifyError> {
    let provider: &dyn Provider = &*source.provider;
    let walk = listing(provider).ok_or_else(|| VerifyError::Endless {
        walk: "none",
        why: "the provider has no listing".to_owned(),
    })?;
    let spec = walk.spec();
    let absence = absence_of(walk.as_ref());
    let client = source.client.background();
    let started_at = Timestamp::now();
    let mirrored: HashMap<String, MirroredState> = store
        .mirrored_states(&source.name)
        .await?
        .into_iter()
        .map(|row| (row.conversation_id.clone(), row))
        .collect();
    let (mode, mut wanted) = match options.sample {
        None => (VerifyMode::Full, None),
        Some(n) => {
            let sample: HashSet<String> = mirrored
                .keys()
                .cloned()
                .choose_multiple(&mut rand::rng(), usize::try_from(n).unwrap_or(usize::MAX))
                .into_iter()
                .collect();
            (VerifyMode::Sample, Some(sample))
        }
    };
    let checked_sample = wanted.as_ref().map(|w| w.len() as u64);
    tracing::info!(source = %source.name, walk = spec.name, mode = mode.as_str(), "verification started");

    let mut findings = Findings::default();
    let mut listed: HashSet<String> = HashSet::new();
    let mut checked = 0u64;
    let mut position: Option<serde_json::Value> = None;
    let mut seen_positions = HashSet::new();
    let mut pages = 0u32;
    let complete = loop {
        if cancel.is_cancelled() {
            return Err(VerifyError::Interrupted);
        }
        if wanted.as_ref().is_some_and(HashSet::is_empty) {
            break false;
        }
        pages = pages.saturating_add(1);
        if pages > source.schedule.max_pages_per_cycle {
            return Err(VerifyError::Endless {
                walk: spec.name,
                why: format!(
                    "more than max_pages_per_cycle ({}) pages",
                    source.schedule.max_pages_per_cycle
                ),
            });
        }
        let ctx = WalkContext {
            since: None,
            position: position.as_ref(),
        };
        let request = walk
            .build_request(&ctx)
            .map_err(|e| VerifyError::Provider {
                walk: spec.name,
                source: e.redacted(),
            })?;
        let response = tokio::select! {
            sent = client.send(&request, provider) => sent.map_err(|source| VerifyError::Http { walk: spec.name, source })?,
            _ = cancel.cancelled() => return Err(VerifyError::Interrupted),
        };
        let page = walk
            .parse_page(&ctx, &response)
            .map_err(|e| VerifyError::Provider {
                walk: spec.name,
                source: e.redacted(),
            })?;
        for record in &page.records {
            if !listed.insert(record.id.clone()) {
                continue;
            }
            if let Some(wanted) = &mut wanted
                && !wanted.remove(&record.id)
            {
                continue;
            }
            checked = checked.saturating_add(1);
            match compare(record, mirrored.get(&record.id), absence, started_at) {
                Ok(Some(kind)) => findings.note(kind, &record.id),
                Ok(None) => {}
                Err(()) => findings.tolerated = findings.tolerated.saturating_add(1),
            }
        }
        match page.next {
            None => break true,
            Some(next) => {
                if !seen_positions.insert(next.to_string()) {
                    return Err(VerifyError::Endless {
                        walk: spec.name,
                        why: "a page position came twice".to_owned(),
                    });
                }
                position = Some(next);
            }
        }
    };

    let mut unresolved = 0;
    if complete {
        let mut left_out: Vec<&MirroredState> = match &wanted {
            // The sampled ids the whole listing did not list.
            Some(wanted) => wanted.iter().filter_map(|id| mirrored.get(id)).collect(),
            None => mirrored
                .values()
                .filter(|row| !listed.contains(&row.conversation_id))
                .collect(),
        };
        left_out.sort_by(|a, b| a.conversation_id.cmp(&b.conversation_id));
        for row in left_out {
            if is_extra(row, absence) {
                findings.note(DriftKind::Extra, &row.conversation_id);
            }
        }
    } else {
        unresolved = wanted.as_ref().map_or(0, |w| w.len() as u64);
    }
    let requests = client.tally().requests.load(Ordering::Relaxed);
    let finished_at = Timestamp::now();
    let record = VerificationRecord {
        source: source.name.clone(),
        started_at,
        finished_at,
        mode,
        walk: spec.name.to_owned(),
        checked: checked_sample.unwrap_or(checked),
        drift: findings.drift,
        verified_through: (findings.drift.total() == 0).then_some(started_at),
        requests,
    };
    store.record_verification(&record).await?;
    tracing::info!(
        source = %source.name,
        walk = spec.name,
        checked = record.checked,
        missing = record.drift.missing,
        stale = record.drift.stale,
        extra = record.drift.extra,
        deleted_listed = record.drift.deleted_listed,
        requests,
        "verification finished"
    );
    Ok(Verification {
        record,
        ids: findings.ids,
        tolerated: findings.tolerated,
        unresolved,
    })
}

/// The daemon's verifications of `source` (its `verify_interval`), until `shutdown`: each
/// one `interval` after the latest recorded one finished, the first one an interval after
/// the daemon started when none is recorded (a first backfill is not drift). A failed
/// verification is logged and tried again an interval later.
pub async fn run_scheduled(
    source: Arc<Source>,
    store: Store,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    let started = Timestamp::now();
    let mut last_failure: Option<Timestamp> = None;
    loop {
        let last = match store.latest_verifications().await {
            Ok(all) => all
                .into_iter()
                .find(|v| v.source == source.name)
                .map(|v| v.finished_at),
            Err(e) => {
                tracing::warn!(source = %source.name, error = %e, "cannot read the latest verification");
                None
            }
        };
        let after = last.max(last_failure).unwrap_or(started);
        let wait = Timestamp::now().elapsed_until(after.saturating_add(interval));
        if !crate::retry::sleep_unless_cancelled(wait, &shutdown).await {
            return;
        }
        match verify_source(&source, &store, VerifyOptions::default(), &shutdown).await {
            Ok(_) => last_failure = None,
            Err(VerifyError::Interrupted) => return,
            Err(e) => {
                tracing::warn!(source = %source.name, error = %e, "scheduled verification failed; trying again after verify_interval");
                last_failure = Some(Timestamp::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    fn listed(activity: &str, active: Option<bool>) -> ConversationRecord {
        let raw = serde_json::value::RawValue::from_string("{}".to_owned()).unwrap();
        let mut record = ConversationRecord::new("c1", raw);
        record.last_activity_at = Some(at(activity));
        record.active = active;
        record
    }

    fn row(activity: &str, active: Option<bool>, closed: bool, deleted: bool) -> MirroredState {
        MirroredState {
            conversation_id: "c1".to_owned(),
            last_activity_at: Some(at(activity)),
            active,
            closed,
            deleted,
        }
    }

    const START: &str = "2026-06-01T12:00:00Z";

    /// Each kind as docs/schema.md ("Verifying the mirror") defines it, and what changed
    /// at the provider after the start is tolerated, not drift.
    #[test]
    fn each_kind_and_the_tolerance_of_changes_after_the_start() {
        let start = at(START);
        let d = Some(Absence::Deleted);
        let old = "2026-06-01T10:00:00Z";
        let newer = "2026-06-01T11:00:00Z";
        let after_start = "2026-06-01T12:00:01Z";
        let same = row(old, Some(true), false, false);
        let check = |l: &ConversationRecord, r: Option<&MirroredState>, a| compare(l, r, a, start);

        assert!(matches!(
            check(&listed(old, Some(true)), Some(&same), d),
            Ok(None)
        ));
        assert!(matches!(
            check(&listed(old, None), None, d),
            Ok(Some(DriftKind::Missing))
        ));
        assert!(matches!(
            check(&listed(after_start, None), None, d),
            Err(())
        ));
        assert!(matches!(
            check(&listed(newer, Some(true)), Some(&same), d),
            Ok(Some(DriftKind::Stale))
        ));
        assert!(matches!(
            check(&listed(after_start, Some(true)), Some(&same), d),
            Err(())
        ));
        assert!(matches!(
            check(&listed(old, Some(false)), Some(&same), d),
            Ok(Some(DriftKind::Stale))
        ));
        // A mirror newer than the listing (a follow-up saw the activity first) is not stale.
        assert!(matches!(
            check(
                &listed(old, Some(true)),
                Some(&row(newer, Some(true), false, false)),
                d
            ),
            Ok(None)
        ));
        assert!(matches!(
            check(
                &listed(old, Some(true)),
                Some(&row(old, Some(true), false, true)),
                d
            ),
            Ok(Some(DriftKind::DeletedListed))
        ));
        // Closed yet listed is drift only where the listing lists open conversations only.
        let closed = row(old, Some(false), true, false);
        assert!(matches!(
            check(
                &listed(old, Some(true)),
                Some(&closed),
                Some(Absence::Closed)
            ),
            Ok(Some(DriftKind::DeletedListed))
        ));
        assert!(matches!(
            check(&listed(old, Some(false)), Some(&closed), d),
            Ok(None)
        ));

        assert!(is_extra(&same, d));
        assert!(!is_extra(&row(old, None, false, true), d));
        assert!(is_extra(&same, Some(Absence::Closed)));
        assert!(!is_extra(&closed, Some(Absence::Closed)));
        assert!(!is_extra(&same, None));
    }
}
