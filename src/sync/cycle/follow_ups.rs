//! The follow-up phase of a cycle: queued per-conversation detail requests (messages,
//! items), sent within the source's budget, their results applied with their dequeues.
//!
//! Like a walk, it is a two-stage pipeline. The fetcher keeps up to
//! [`FOLLOW_UPS_IN_FLIGHT`] requests open at once (the source's rate budget still paces
//! them: concurrency only hides each request's latency); the writer applies every answer
//! that is waiting when it is free in one transaction. A crash loses at most the answers
//! not yet committed, whose follow-ups are still queued: they are asked again, never lost.

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Cycle, CycleOutcome, Source, SyncError, while_busy};
use crate::http::HttpError;
use crate::provider::{DetailPage, DetailRequest};
use crate::store::DetailWrite;

/// Follow-up requests open at once. Each is one small request per conversation, so their
/// latency, not the provider's budget, bounds a sequential backfill.
const FOLLOW_UPS_IN_FLIGHT: usize = 8;

/// Answers applied in one transaction at most.
const MAX_ANSWERS_PER_COMMIT: usize = 256;

/// What became of one follow-up request.
enum Answer {
    /// The provider answered and the answer was read.
    Read(Box<DetailPage>),
    /// The provider refused the follow-up's saved page position: start it again.
    PositionRejected,
    /// This follow-up failed (built, sent or read); it is deferred, the others go on.
    Failed(String),
    /// The credential was refused or the budget is exhausted: the phase stops.
    Fatal(HttpError),
}

impl Cycle<'_> {
    /// Sends up to the cycle's share of queued follow-ups; `MoreToDo` when a full batch
    /// succeeded and more may wait.
    pub(super) async fn run_follow_ups(&mut self) -> Result<CycleOutcome, SyncError> {
        let source = self.source;
        let share = source.provider.follow_ups().budget_share().clamp(0.0, 1.0);
        let budget = (f64::from(source.schedule.max_follow_ups_per_cycle) * share).ceil() as u32;
        if budget == 0 {
            return Ok(CycleOutcome::CaughtUp);
        }
        let pending = self.store.pending_follow_ups(&source.name, budget).await?;
        if pending.is_empty() {
            return Ok(CycleOutcome::CaughtUp);
        }
        source.progress.enter_walk(Some("follow-ups"));
        let full_batch = pending.len() as u32 >= budget;
        let yield_at = self.follow_ups_yield_at().await?;
        // The writer ending early (a database error, a fatal answer) stops the fetcher.
        let stop = self.cancel.child_token();
        let stop_fetching = stop.clone().drop_guard();
        let (sender, receiver) = mpsc::channel(FOLLOW_UPS_IN_FLIGHT);
        let fetch = fetch_follow_ups(source, &pending, yield_at, stop, sender);
        let (fetched, written) = tokio::join!(fetch, async {
            let written = self.write_answers(receiver).await;
            drop(stop_fetching);
            written
        });
        let failed = written?;
        if self.cancel.is_cancelled() {
            return Ok(CycleOutcome::Stopped);
        }
        if failed > 0 {
            self.report.notes.push(format!(
                "{failed} follow-up request(s) failed and were deferred"
            ));
        }
        if fetched == Fetched::YieldedToDeltas {
            tracing::info!("a delta walk is due; the remaining follow-ups wait until it has run");
            return Ok(CycleOutcome::MoreToDo);
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

    /// The writer: applies the answers in the order they arrive, every answer waiting when
    /// it is free in one transaction. Returns how many follow-ups failed and were deferred.
    async fn write_answers(
        &mut self,
        mut answers: mpsc::Receiver<(&DetailRequest, Answer)>,
    ) -> Result<u64, SyncError> {
        let mut batch: Vec<(&DetailRequest, Box<DetailPage>)> = Vec::new();
        let mut failed = 0u64;
        loop {
            let next = match answers.try_recv() {
                Ok(answer) => Some(answer),
                Err(_) => {
                    // Nothing else is waiting: commit what is, then wait for more.
                    self.commit_answers(&mut batch).await?;
                    answers.recv().await
                }
            };
            let Some((detail, answer)) = next else {
                return Ok(failed);
            };
            match answer {
                Answer::Read(page) => {
                    batch.push((detail, page));
                    if batch.len() >= MAX_ANSWERS_PER_COMMIT {
                        self.commit_answers(&mut batch).await?;
                    }
                }
                Answer::PositionRejected => {
                    tracing::info!(conversation = %detail.conversation_id, kind = %detail.kind, "follow-up page position rejected; it restarts from its first page");
                    let (store, limit) = (self.store, self.source.schedule.stall_timeout);
                    while_busy(limit, self.cancel, "restarting a follow-up", || {
                        store.restart_follow_up(&self.source.name, detail)
                    })
                    .await?;
                }
                Answer::Failed(error) => {
                    tracing::warn!(conversation = %detail.conversation_id, kind = %detail.kind, %error, "follow-up failed; deferred");
                    let (store, limit) = (self.store, self.source.schedule.stall_timeout);
                    while_busy(limit, self.cancel, "deferring a follow-up", || {
                        store.defer_follow_up(&self.source.name, detail)
                    })
                    .await?;
                    failed += 1;
                }
                Answer::Fatal(error) => {
                    self.commit_answers(&mut batch).await?;
                    return Err(error.into());
                }
            }
        }
    }

    /// Applies the batch's answers in one transaction (waiting out another process's
    /// lock), then counts them.
    async fn commit_answers(
        &mut self,
        batch: &mut Vec<(&DetailRequest, Box<DetailPage>)>,
    ) -> Result<(), SyncError> {
        if batch.is_empty() {
            return Ok(());
        }
        let source = self.source;
        let provider = &*source.provider;
        let writes: Vec<DetailWrite<'_>> = batch
            .iter()
            .map(|(detail, page)| DetailWrite {
                source: &source.name,
                provider: provider.kind().as_str(),
                account: provider.account(),
                run_id: self.run_id,
                detail,
                record: page.record.as_ref(),
                patch: page.patch.as_ref(),
                gone: page.gone,
                next: page.next.as_ref(),
            })
            .collect();
        let store = self.store;
        let counts = while_busy(
            source.schedule.stall_timeout,
            self.cancel,
            "applying follow-ups",
            || store.apply_details(&writes),
        )
        .await?;
        drop(writes);
        batch.clear();
        self.report.inserted += counts.inserted;
        self.report.updated += counts.updated;
        self.report.unchanged += counts.unchanged;
        source.progress.add_counts(&counts);
        Ok(())
    }
}

/// How the fetcher ended.
#[derive(Debug, PartialEq, Eq)]
enum Fetched {
    /// Every follow-up was asked, or the phase was stopped (fatal answer, shutdown, the
    /// writer gone).
    Done,
    /// A delta walk came due first; the follow-ups not asked stay queued
    /// ([`super::priority`]).
    YieldedToDeltas,
}

/// The fetcher: asks every pending follow-up, [`FOLLOW_UPS_IN_FLIGHT`] at a time, and hands
/// each answer to the writer. Stops at the first fatal answer, on `stop`, when the
/// writer stops listening, or at `yield_at`; requests still open then are dropped
/// unanswered (their follow-ups stay queued).
async fn fetch_follow_ups<'d>(
    source: &Source,
    pending: &'d [DetailRequest],
    yield_at: Instant,
    stop: CancellationToken,
    answers: mpsc::Sender<(&'d DetailRequest, Answer)>,
) -> Fetched {
    let mut queue = pending.iter().peekable();
    let mut in_flight = FuturesUnordered::new();
    loop {
        if Instant::now() >= yield_at {
            return if queue.peek().is_some() || !in_flight.is_empty() {
                Fetched::YieldedToDeltas
            } else {
                Fetched::Done
            };
        }
        while in_flight.len() < FOLLOW_UPS_IN_FLIGHT {
            match queue.next() {
                Some(detail) => in_flight.push(ask(source, detail)),
                None => break,
            }
        }
        let next = tokio::select! {
            next = in_flight.next() => next,
            // Requests still waiting for the budget give way to the due delta.
            _ = tokio::time::sleep_until(yield_at) => continue,
            _ = stop.cancelled() => return Fetched::Done,
        };
        let Some((detail, answer)) = next else {
            return Fetched::Done;
        };
        let fatal = matches!(answer, Answer::Fatal(_));
        if answers.send((detail, answer)).await.is_err() || fatal {
            return Fetched::Done;
        }
    }
}

/// Sends one follow-up request (retried by the HTTP layer) and reads its answer.
async fn ask<'d>(source: &Source, detail: &'d DetailRequest) -> (&'d DetailRequest, Answer) {
    (detail, answer(source, detail).await)
}

/// What became of `detail`'s request.
async fn answer(source: &Source, detail: &DetailRequest) -> Answer {
    let provider = &*source.provider;
    // The stored kind is read once, here: the typed follow-up builds and reads the rest.
    let built = provider
        .follow_ups()
        .read_queued(detail)
        .and_then(|follow_up| Ok((follow_up.build_request()?, follow_up)));
    let (spec, follow_up) = match built {
        Ok(built) => built,
        Err(e) => return Answer::Failed(format!("cannot be built: {e}")),
    };
    let response = match source.client.send(&spec, provider).await {
        Ok(response) => response,
        Err(HttpError::Rejected { status, body, .. })
            if detail.position.is_some() && provider.is_position_rejected(status, &body) =>
        {
            return Answer::PositionRejected;
        }
        Err(e)
            if e.is_credential_rejected()
                || matches!(e, HttpError::RateLimited { .. } | HttpError::Paused { .. }) =>
        {
            return Answer::Fatal(e);
        }
        Err(e) => return Answer::Failed(e.to_string()),
    };
    match follow_up.parse_response(&response) {
        Ok(mut page) => {
            let max_raw_bytes = source.schedule.max_raw_bytes;
            if let Some(record) = &mut page.record
                && record.omit_oversized_raw(max_raw_bytes)
            {
                tracing::warn!(conversation = %detail.conversation_id, kind = %detail.kind, max_raw_bytes, "conversation stored without its raw JSON, which was larger than max_raw_bytes");
            }
            Answer::Read(Box::new(page))
        }
        Err(e) => Answer::Failed(format!("response unreadable: {}", e.redacted())),
    }
}
