//! The follow-up phase of a cycle: queued per-conversation detail requests (messages,
//! items), sent within the source's budget, each result applied with its dequeue.

use super::{BusyWait, Cycle, CycleOutcome, SyncError};
use crate::http::HttpError;
use crate::store::DetailWrite;

impl Cycle<'_> {
    /// Sends up to the cycle's share of queued follow-ups; `MoreToDo` when a full batch
    /// succeeded and more may wait.
    pub(super) async fn run_follow_ups(&mut self) -> Result<CycleOutcome, SyncError> {
        let source = self.source;
        let provider = &*source.provider;
        let share = provider.follow_up_share().clamp(0.0, 1.0);
        let budget = (f64::from(source.schedule.max_follow_ups_per_cycle) * share).ceil() as u32;
        if budget == 0 {
            return Ok(CycleOutcome::CaughtUp);
        }
        let pending = self.store.pending_follow_ups(&source.name, budget).await?;
        if pending.is_empty() {
            return Ok(CycleOutcome::CaughtUp);
        }
        source
            .progress
            .update(|s| s.current_walk = Some("follow-ups".into()));
        let full_batch = pending.len() as u32 >= budget;
        let mut failed = 0u64;
        for detail in &pending {
            if self.cancel.is_cancelled() {
                return Ok(CycleOutcome::Stopped);
            }
            let spec = match provider.build_detail_request(detail) {
                Ok(spec) => spec,
                Err(e) => {
                    tracing::warn!(conversation = %detail.conversation_id, kind = %detail.kind, error = %e, "follow-up cannot be built; deferred");
                    self.store.defer_follow_up(&source.name, detail).await?;
                    failed += 1;
                    continue;
                }
            };
            let sent = tokio::select! {
                sent = source.client.send(&spec, provider) => sent,
                _ = self.cancel.cancelled() => return Ok(CycleOutcome::Stopped),
            };
            let response = match sent {
                Ok(r) => r,
                Err(HttpError::Rejected { status, body, .. })
                    if detail.position.is_some()
                        && provider.is_position_rejected(status, &body) =>
                {
                    tracing::info!(conversation = %detail.conversation_id, kind = %detail.kind, "follow-up page position rejected; it restarts from its first page");
                    self.store.restart_follow_up(&source.name, detail).await?;
                    continue;
                }
                Err(e)
                    if e.is_credential_rejected()
                        || matches!(
                            e,
                            HttpError::RateLimited { .. } | HttpError::Paused { .. }
                        ) =>
                {
                    return Err(e.into());
                }
                Err(e) => {
                    tracing::warn!(conversation = %detail.conversation_id, kind = %detail.kind, error = %e, "follow-up failed; deferred");
                    self.store.defer_follow_up(&source.name, detail).await?;
                    failed += 1;
                    continue;
                }
            };
            let parsed = match provider.parse_detail(detail, &response) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(conversation = %detail.conversation_id, kind = %detail.kind, error = %e, "follow-up response unreadable; deferred");
                    self.store.defer_follow_up(&source.name, detail).await?;
                    failed += 1;
                    continue;
                }
            };
            let write = DetailWrite {
                source: &source.name,
                provider: provider.kind().as_str(),
                account: provider.account(),
                run_id: self.run_id,
                detail,
                record: parsed.record.as_ref(),
                patch: parsed.patch.as_ref(),
                gone: parsed.gone,
                next: parsed.next.as_ref(),
            };
            let mut busy = BusyWait::new(source.schedule.stall_timeout);
            let counts = loop {
                match self.store.apply_detail(&write).await {
                    Err(e) if busy.wait(&e, self.cancel, "applying a follow-up").await => {}
                    other => break other,
                }
            }?;
            self.report.inserted += counts.inserted;
            self.report.updated += counts.updated;
            self.report.unchanged += counts.unchanged;
            source.progress.add_counts(&counts);
        }
        if failed > 0 {
            self.report.notes.push(format!(
                "{failed} follow-up request(s) failed and were deferred"
            ));
        }
        // More work waits, but a batch that mostly failed waits for the next poll instead of
        // hammering the provider.
        let mostly_failed = failed * 2 >= pending.len() as u64;
        Ok(if full_batch && !mostly_failed {
            CycleOutcome::MoreToDo
        } else {
            CycleOutcome::CaughtUp
        })
    }
}
