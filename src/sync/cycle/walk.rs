//! One walk of a cycle, as a two-stage pipeline: a fetcher task requests pages one after
//! the other (each page names the next) while the writer commits the pages already received.
//!
//! The writer takes every page that is waiting when it is free and writes them into one
//! transaction; it commits, with the cursor that follows the last page written, once no
//! page has come for [`COMMIT_GRACE`] or the transaction holds [`COMMIT_ROWS`] rows. So a
//! walk whose fetches are slower than that commits page by page; a backfill whose pages arrive
//! faster than SQLite writes them pays one commit per few thousand rows, holds no more than
//! [`PIPELINE_PAGES`] pages in memory, and fetches the next pages while it writes. A crash
//! loses at most the uncommitted pages, whose cursor was not committed either: they are
//! fetched again, never skipped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::reply_horizon::keep_follow_ups_within;
use super::{Cycle, MALFORMED_REFETCH, SyncError, WalkEnd, while_busy};
use crate::http::{ApiClient, HttpError};
use crate::provider::{
    Absence, Page, Provider, ProviderError, Walk, WalkContext, WalkKind, WalkSpec,
};
use crate::retry::Transient;
use crate::secret::redact::{ERROR_TEXT_CAP, redact};
use crate::store::{PageOutcome, PageTransaction, PageWrite, SweepCompletion};
use crate::sync::cursor::{LateBounds, WalkCursor};
use crate::time::Timestamp;

/// Pages the fetcher may run ahead of the writer. It bounds memory (pages are streamed,
/// never accumulated) and the size of one commit: at most this many pages plus one.
const PIPELINE_PAGES: usize = 16;

/// What the fetcher hands the writer, in walk order.
enum Fetched {
    /// The next page.
    Page(Page),
    /// The provider refused the saved position; the pages that follow start the walk
    /// again from its watermark.
    Restarted {
        /// The provider's message.
        message: String,
    },
    /// Nothing follows: the page cap was reached, shutdown was requested or a fetch failed.
    /// (A walk that completes ends with a page whose `next` is `None` instead.)
    Stop(Result<WalkEnd, SyncError>),
}

/// Rows a transaction takes before it commits even though more pages are waiting: few
/// commits during a backfill (each rewrites the index pages it touched), yet a bounded
/// amount of work to redo after a crash and a bounded time holding the write lock.
const COMMIT_ROWS: usize = 10_000;

/// How long an open transaction waits for the next page before it commits what it holds.
/// Short next to any real fetch, long next to the gap between a backfill's pages.
const COMMIT_GRACE: Duration = Duration::from_millis(10);

/// Pages received and not yet committed: those still to apply and those applied to the
/// open transaction, with the cursor that follows the last of them.
struct Batch {
    /// Received, not applied yet.
    pages: Vec<Page>,
    /// The cursor after the last page received.
    cursor: Option<WalkCursor>,
    /// The transaction holding the pages applied so far.
    open: Option<Box<dyn PageTransaction>>,
    /// What the applied pages did, counted once they commit (late rows already counted).
    applied: Vec<PageOutcome>,
    /// Rows of the applied pages.
    applied_rows: usize,
}

impl Cycle<'_> {
    pub(super) async fn run_walk(
        &mut self,
        walk: &Arc<dyn Walk>,
        mut cursor: WalkCursor,
        late: LateBounds,
    ) -> Result<WalkEnd, SyncError> {
        let spec = walk.spec();
        let schedule = &self.source.schedule;
        // A sweep's window opens with the cycle: rows this cycle's deltas just listed were
        // seen inside it and need no second write (only their absence would be noticed one
        // sweep later, like any conversation removed while a sweep runs).
        let resumed = cursor.begin(
            spec.kind,
            self.started_at,
            Timestamp::now(),
            schedule.lookback,
        );
        if resumed {
            tracing::info!(
                walk = spec.name,
                "resuming an unfinished walk from its saved position"
            );
        }
        self.source.progress.enter_walk(Some(spec.name));
        self.source.progress.update(|s| {
            if matches!(spec.kind, WalkKind::Delta(_)) {
                s.watermark = cursor.watermark.max(s.watermark);
            }
        });
        let fetcher = Fetcher {
            provider: self.source.provider.clone(),
            client: self.source.client.clone(),
            stall_timeout: schedule.stall_timeout,
            max_raw_bytes: schedule.max_raw_bytes,
            max_empty_pages: schedule.max_empty_pages,
            reply_state_horizon: schedule.reply_state_horizon,
            walk: walk.clone(),
            since: cursor.walk_since,
            // The writer ending early (a database error) stops the fetcher too.
            stop: self.cancel.child_token(),
        };
        let page_budget = schedule
            .max_pages_per_cycle
            .saturating_sub(self.pages_this_cycle);
        let (sender, receiver) = mpsc::channel(PIPELINE_PAGES);
        let start = cursor.position.clone();
        let stop_fetching = fetcher.stop.clone().drop_guard();
        // Its own task, so that reading and parsing the next pages runs on another core
        // while this one prepares statements for the SQLite thread.
        let progress = self.source.progress.clone();
        let fetching = tokio::spawn(
            async move {
                let fetch = fetcher.run(start, page_budget, sender);
                progress.fetch_pulse.drive(fetch).await;
            }
            .instrument(tracing::Span::current()),
        );
        let ended = self.write_pages(&spec, cursor, late, receiver).await;
        drop(stop_fetching);
        // The fetcher ends as soon as it sees the stop or its channel closed; waiting for
        // it means no request of this walk outlives the walk.
        if let Err(e) = fetching.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
        ended
    }

    /// The writer: receives pages in walk order and commits each batch of waiting pages
    /// with the cursor they advance to.
    async fn write_pages(
        &mut self,
        walk: &WalkSpec,
        mut cursor: WalkCursor,
        late: LateBounds,
        mut receiver: mpsc::Receiver<Fetched>,
    ) -> Result<WalkEnd, SyncError> {
        let mut batch = Batch {
            pages: Vec::with_capacity(PIPELINE_PAGES + 1),
            cursor: None,
            open: None,
            applied: Vec::new(),
            applied_rows: 0,
        };
        loop {
            let fetched = match receiver.try_recv() {
                Ok(fetched) => fetched,
                Err(_) => {
                    // Nothing else is waiting. Write what came; while the transaction is
                    // small, give the fetcher a moment before committing (during a
                    // backfill the next page is a millisecond or two away), then commit
                    // and wait as long as the next page takes.
                    self.apply(walk, &mut batch, late).await?;
                    let next = if batch.open.is_some() && batch.applied_rows < COMMIT_ROWS {
                        tokio::time::timeout(COMMIT_GRACE, receiver.recv())
                            .await
                            .ok()
                    } else {
                        None
                    };
                    match next {
                        Some(next) => next,
                        None => {
                            self.commit(walk, &mut batch, late).await?;
                            receiver.recv().await
                        }
                    }
                    .unwrap_or(Fetched::Stop(Ok(WalkEnd::Cancelled)))
                }
            };
            match fetched {
                Fetched::Page(page) => {
                    let listed = page.records.len().saturating_add(page.rejected.len());
                    self.source
                        .progress
                        .page_arrived(listed as u64, page.total_hint);
                    for note in &page.notes {
                        tracing::warn!(walk = walk.name, note = %note, "provider note");
                        if !self.report.notes.contains(note) {
                            self.report.notes.push(note.clone());
                        }
                    }
                    let next = self.advance(walk, &cursor, &page);
                    let complete = page.next.is_none();
                    let absence = match walk.kind {
                        WalkKind::Sweep { absence, .. } if complete => Some(absence),
                        _ => None,
                    };
                    match absence {
                        // A completed sweep commits its last page with the cursor still on
                        // that page, then applies absences with the final cursor: a crash in
                        // between re-reads the page instead of losing the absences.
                        Some(absence) => {
                            batch.pages.push(page);
                            batch.cursor = Some(cursor.clone());
                            self.commit(walk, &mut batch, late).await?;
                            self.complete_sweep(walk, absence, &cursor, &next).await?;
                        }
                        None => {
                            batch.pages.push(page);
                            batch.cursor = Some(next.clone());
                            if complete {
                                self.commit(walk, &mut batch, late).await?;
                            } else if batch.pages.len() > PIPELINE_PAGES {
                                // More pages are coming: write these, and commit only
                                // once the transaction holds enough rows.
                                self.apply(walk, &mut batch, late).await?;
                                if batch.applied_rows >= COMMIT_ROWS {
                                    self.commit(walk, &mut batch, late).await?;
                                }
                            }
                        }
                    }
                    cursor = next;
                    if complete {
                        return Ok(WalkEnd::Complete);
                    }
                }
                Fetched::Restarted { message } => {
                    self.commit(walk, &mut batch, late).await?;
                    tracing::warn!(walk = walk.name, %message, "saved page position rejected; restarting the walk from its watermark");
                    self.report.notes.push(format!(
                        "{}: page position rejected, walk restarted",
                        walk.name
                    ));
                    cursor.restart_after_rejected_position(Timestamp::now());
                    self.source.progress.enter_walk(Some(walk.name));
                }
                Fetched::Stop(end) => {
                    self.commit(walk, &mut batch, late).await?;
                    if let Ok(WalkEnd::Broken(_)) = &end {
                        self.restart_next_cycle(walk, &cursor).await?;
                    }
                    return end;
                }
            }
        }
    }

    /// Applies the pages waiting in the batch to its open transaction, beginning one
    /// (waiting out another process's lock) if none is open.
    async fn apply(
        &mut self,
        walk: &WalkSpec,
        batch: &mut Batch,
        late: LateBounds,
    ) -> Result<(), SyncError> {
        let Some(cursor) = &batch.cursor else {
            return Ok(());
        };
        if batch.pages.is_empty() {
            return Ok(());
        }
        let open = match &mut batch.open {
            Some(open) => open,
            None => {
                let store = self.store;
                let limit = self.source.schedule.stall_timeout;
                let open = while_busy(limit, self.cancel, "starting a write", || {
                    store.begin_pages()
                })
                .await?;
                batch.open.insert(open)
            }
        };
        let provider = &*self.source.provider;
        let writes: Vec<PageWrite<'_>> = batch
            .pages
            .iter()
            .map(|page| PageWrite {
                source: &self.source.name,
                provider: provider.kind().as_str(),
                account: provider.account(),
                walk: walk.name,
                run_id: self.run_id,
                records: &page.records,
                rejected: &page.rejected,
                follow_ups: &page.follow_ups,
                touch_seen_before: match walk.kind {
                    WalkKind::Sweep { .. } => cursor.walk_started_at,
                    WalkKind::Delta(_) => None,
                },
                insert_first: matches!(walk.kind, WalkKind::Delta(_)),
            })
            .collect();
        let mut outcomes = open.apply(&writes).await?;
        drop(writes);
        for (outcome, page) in outcomes.iter_mut().zip(&batch.pages) {
            outcome.counts.late = late.count(&page.records, &outcome.rows);
        }
        batch.applied_rows += batch.pages.iter().map(|p| p.records.len()).sum::<usize>();
        batch.applied.extend(outcomes);
        batch.pages.clear();
        Ok(())
    }

    /// Applies what waits, commits the open transaction with the cursor after the last
    /// page received, then counts the pages it held.
    async fn commit(
        &mut self,
        walk: &WalkSpec,
        batch: &mut Batch,
        late: LateBounds,
    ) -> Result<(), SyncError> {
        self.apply(walk, batch, late).await?;
        let Some(open) = batch.open.take() else {
            return Ok(());
        };
        let cursor = batch
            .cursor
            .take()
            .expect("a transaction is open only once a page (and the cursor after it) came");
        open.commit(&self.source.name, walk.name, &cursor.to_state()?)
            .await?;
        let outcomes = std::mem::take(&mut batch.applied);
        batch.applied_rows = 0;
        let mut late = 0;
        let mut rejected = 0;
        for PageOutcome { counts: page, .. } in &outcomes {
            self.pages_this_cycle += 1;
            self.report.pages += 1;
            self.report.inserted += page.inserted;
            self.report.updated += page.updated;
            self.report.unchanged += page.unchanged;
            self.report.rejected += page.rejected;
            self.source.progress.record_page(page);
            late += page.late;
            rejected += page.rejected;
        }
        if rejected > 0 {
            tracing::warn!(
                walk = walk.name,
                rejected,
                "records rejected (kept in rejected_records)"
            );
        }
        if late > 0 {
            tracing::warn!(
                walk = walk.name,
                late,
                "records arrived later than the lookback window"
            );
            self.report.notes.push(format!(
                "{}: {late} conversation(s) appeared later than the lookback allows for; the sweep repaired them (consider a longer lookback)",
                walk.name
            ));
        }
        if matches!(walk.kind, WalkKind::Delta(_)) {
            self.source
                .progress
                .update(|s| s.watermark = cursor.watermark.max(s.watermark));
        }
        Ok(())
    }

    /// Saves a broken walk as abandoned ([`WalkCursor::abandoned`]): the next cycle starts
    /// it again from its watermark.
    async fn restart_next_cycle(
        &mut self,
        walk: &WalkSpec,
        cursor: &WalkCursor,
    ) -> Result<(), SyncError> {
        let restart = cursor.abandoned().to_state()?;
        let store = self.store;
        let source = &self.source.name;
        let limit = self.source.schedule.stall_timeout;
        while_busy(limit, self.cancel, "saving a broken walk's restart", || {
            store.save_cursor(source, walk.name, &restart)
        })
        .await?;
        Ok(())
    }

    /// Applies a completed sweep's absences with the walk's final cursor.
    async fn complete_sweep(
        &mut self,
        walk: &WalkSpec,
        absence: Absence,
        last_page_cursor: &WalkCursor,
        final_cursor: &WalkCursor,
    ) -> Result<(), SyncError> {
        let final_cursor = final_cursor.to_state()?;
        let completion = SweepCompletion {
            source: &self.source.name,
            walk: walk.name,
            run_id: self.run_id,
            absence,
            sweep_started_at: last_page_cursor
                .walk_started_at
                .unwrap_or_else(Timestamp::now),
            guard: self.source.guard,
            cursor: &final_cursor,
        };
        let store = self.store;
        let limit = self.source.schedule.stall_timeout;
        let outcome = while_busy(limit, self.cancel, "applying a sweep's absences", || {
            store.apply_absence(&completion)
        })
        .await?;
        self.record_absence(walk, absence, outcome);
        Ok(())
    }

    /// The cursor after `page` ([`WalkCursor::advanced`]), noting a watermark the future
    /// guard held back.
    fn advance(&mut self, walk: &WalkSpec, cursor: &WalkCursor, page: &Page) -> WalkCursor {
        let advanced = cursor.advanced(
            walk.kind,
            page.high_water,
            page.next.as_ref(),
            Timestamp::now(),
            self.source.schedule.max_clock_skew,
        );
        if let Some((hw, ceiling)) = advanced.held_back {
            let note = format!(
                "{}: provider timestamp {hw} lies in the future; watermark held at {ceiling}",
                walk.name
            );
            if !self.report.notes.contains(&note) {
                tracing::warn!(walk = walk.name, timestamp = %hw, "provider timestamp in the future; not moving the watermark past now");
                self.report.notes.push(note);
            }
        }
        advanced.cursor
    }
}

/// The fetching stage of a walk: requests pages in order and hands them to the writer.
struct Fetcher {
    provider: Arc<dyn Provider>,
    client: ApiClient,
    /// A request (with its retries) that takes longer fails the walk.
    stall_timeout: Duration,
    /// Larger `raw` JSON is replaced by a stand-in before the page reaches the writer.
    max_raw_bytes: usize,
    /// Pages in a row that may carry nothing yet name a next page before the walk is
    /// stopped as broken.
    max_empty_pages: u32,
    /// Reply-state follow-ups are queued only for open conversations active within this.
    reply_state_horizon: Duration,
    /// The walk: it builds the requests and reads the pages.
    walk: Arc<dyn Walk>,
    since: Option<Timestamp>,
    /// Shutdown, or the writer has ended.
    stop: CancellationToken,
}

impl Fetcher {
    /// Fetches from `position` until the walk completes, `page_budget` pages were fetched,
    /// a fetch fails or the writer stops listening.
    async fn run(
        self,
        mut position: Option<serde_json::Value>,
        page_budget: u32,
        pages: mpsc::Sender<Fetched>,
    ) {
        let walk = self.walk.spec().name;
        let mut restarted = false;
        let mut seen_positions = HashSet::new();
        let mut fetched = 0u32;
        let mut empty_in_a_row = 0u32;
        loop {
            if self.stop.is_cancelled() {
                let _ = pages.send(Fetched::Stop(Ok(WalkEnd::Cancelled))).await;
                return;
            }
            if fetched >= page_budget {
                let _ = pages.send(Fetched::Stop(Ok(WalkEnd::PageCap))).await;
                return;
            }
            let ctx = WalkContext {
                since: self.since,
                position: position.as_ref(),
            };
            let page = match self.fetch_page(&ctx).await {
                Ok(page) => page,
                Err(SyncError::PositionRejected { message, .. }) if !restarted => {
                    restarted = true;
                    seen_positions.clear();
                    position = None;
                    if pages.send(Fetched::Restarted { message }).await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    let _ = pages.send(Fetched::Stop(Err(e))).await;
                    return;
                }
            };
            if let Some(next) = &page.next
                && (!seen_positions.insert(next.to_string()) || Some(next) == position.as_ref())
            {
                let repeated = SyncError::RepeatedPosition {
                    walk,
                    position: next.to_string(),
                };
                let _ = pages.send(Fetched::Stop(Err(repeated))).await;
                return;
            }
            // Fresh tokens on pages that carry nothing pass the check above forever: a
            // listing that only ever says "more" is broken, however new its tokens look.
            let carries_nothing =
                page.records.is_empty() && page.rejected.is_empty() && page.follow_ups.is_empty();
            if carries_nothing && page.next.is_some() {
                empty_in_a_row = empty_in_a_row.saturating_add(1);
            } else {
                empty_in_a_row = 0;
            }
            if empty_in_a_row >= self.max_empty_pages {
                let reason = format!(
                    "{walk}: the provider answered {empty_in_a_row} pages in a row with no conversations yet said more follow; the walk was stopped as broken and starts again from its watermark next cycle (raise max_empty_pages if this provider really pages through empty results)"
                );
                tracing::error!(
                    walk,
                    empty_pages = empty_in_a_row,
                    "endless empty pages; stopping the walk"
                );
                let _ = pages.send(Fetched::Stop(Ok(WalkEnd::Broken(reason)))).await;
                return;
            }
            fetched += 1;
            let next = page.next.clone();
            if pages.send(Fetched::Page(page)).await.is_err() {
                return;
            }
            match next {
                Some(next) => position = Some(next),
                None => return,
            }
        }
    }

    /// One page: the request, retried by the HTTP layer; a malformed answer fetched again.
    async fn fetch_page(&self, ctx: &WalkContext<'_>) -> Result<Page, SyncError> {
        let provider: &dyn Provider = &*self.provider;
        let walk = self.walk.spec().name;
        let spec = self
            .walk
            .build_request(ctx)
            .map_err(|source| SyncError::Provider { walk, source })?;
        let spec = &spec;
        let fetch = || async move {
            let timeout = self.stall_timeout;
            let request = tokio::time::timeout(timeout, self.client.send(spec, provider));
            // Shutdown abandons a request in flight (and its retries): nothing of it has
            // been written, so the walk resumes from the same position next time.
            let sent = tokio::select! {
                sent = request => sent.map_err(|_| SyncError::Stalled { walk, timeout })?,
                _ = self.stop.cancelled() => return Err(SyncError::Interrupted),
            };
            let response = match sent {
                Ok(r) => r,
                Err(HttpError::Rejected {
                    status,
                    body,
                    message,
                    ..
                }) if ctx.position.is_some() && provider.is_position_rejected(status, &body) => {
                    return Err(SyncError::PositionRejected { walk, message });
                }
                Err(e) => return Err(e.into()),
            };
            // Provider text enters the engine's logs and notes here: scrubbed and cut once.
            match self
                .walk
                .parse_page(ctx, &response)
                .map_err(ProviderError::redacted)
            {
                Ok(mut page) => {
                    page.omit_oversized_raw(walk, self.max_raw_bytes);
                    for note in &mut page.notes {
                        *note = redact(note, ERROR_TEXT_CAP);
                    }
                    let horizon_start = Timestamp::now().saturating_sub(self.reply_state_horizon);
                    let skipped = keep_follow_ups_within(&mut page, horizon_start);
                    if skipped > 0 {
                        tracing::debug!(
                            walk,
                            skipped,
                            "reply state left unknown for closed or dormant conversations (reply_state_horizon)"
                        );
                    }
                    Ok(page)
                }
                Err(source) => Err(SyncError::Provider { walk, source }),
            }
        };
        // Only a malformed answer is fetched again: the HTTP layer has retried the rest.
        let malformed = |e: &SyncError| match e {
            SyncError::Provider { source, .. } => source.is_transient(),
            _ => false,
        };
        let mut attempt = 0;
        let fetched = MALFORMED_REFETCH
            .retry(&self.stop, malformed, fetch, |error, _| {
                if let SyncError::Provider {
                    source: ProviderError::Malformed(message),
                    ..
                } = error
                {
                    attempt += 1;
                    tracing::warn!(walk, %message, attempt, "malformed page; fetching it again");
                }
            })
            .await;
        match fetched {
            // Shutdown before the refetch abandons the page like a request in flight.
            Err(e) if malformed(&e) && self.stop.is_cancelled() => Err(SyncError::Interrupted),
            other => other,
        }
    }
}
