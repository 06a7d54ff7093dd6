//! Request budgets shared by every source that uses the same credential.
//!
//! Three mechanisms combine: a governor quota (the documented limit, configured) paces
//! requests up front; pauses learned from the provider's own rate-limit headers or from
//! `Retry-After` stop all users of the budget until the provider's window resets; and the
//! count of requests the headers say are left is a credit that requests sent concurrently
//! spend, so that several requests in flight never overrun a window that the next
//! response would only report as exhausted after the fact.
//!
//! Requests have a [`Priority`]: a background one (a verification's) is let through only
//! while no foreground request (the daemon's deltas, follow-ups, sweeps) waits for the
//! budget, so that background work never delays the mirror's own reads.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::time::Timestamp;

/// The longest pause a budget can hold (about 30 years, as tokio's own "far future").
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// A documented request quota: `requests` per `per`, with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateQuota {
    /// Requests allowed per window.
    pub requests: NonZeroU32,
    /// The window.
    pub per: Duration,
    /// Requests that may go out back to back. A burst of 1 spreads requests evenly, which
    /// never exceeds a fixed-window limit; larger bursts trade that for latency.
    pub burst: NonZeroU32,
}

/// What a budget knows of the provider's limits that outlives the process holding it: a
/// pause in force (as a wall-clock instant, since a monotonic one means nothing to another
/// process) and the requests the provider's latest headers said were left. A replica
/// stores it with a scope's lease and the next owner seeds its budget from it
/// ([`RequestBudget::seed`]), so that a scope changing hands does not burst.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitSnapshot {
    /// Until when the provider asked for no requests, if that is still ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<Timestamp>,
    /// Requests left in the provider's tightest window by its latest answer, less those
    /// sent since; `None` when no header said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_left: Option<u64>,
}

impl RateLimitSnapshot {
    /// Whether it says anything a new owner must respect.
    pub fn is_empty(&self) -> bool {
        self.paused_until.is_none() && self.requests_left.is_none()
    }
}

/// The reason a budget seeded from a previous owner's pause gives for it.
const INHERITED_PAUSE: &str = "rate-limit pause inherited with the lease";

/// One shared budget.
pub struct RequestBudget {
    limiter: Option<DefaultDirectRateLimiter>,
    paused_until: Mutex<Option<(Instant, &'static str)>>,
    credit: Mutex<Credit>,
    /// Signalled whenever a request in flight ends: a sender waiting for credit looks again.
    request_ended: Notify,
    /// Foreground senders waiting in [`RequestBudget::acquire`].
    foreground_waiting: AtomicU64,
    /// Signalled whenever a foreground sender stops waiting: a background one looks again.
    foreground_left: Notify,
}

/// Whose request waits for the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// The mirror's own reads.
    #[default]
    Foreground,
    /// Work that may wait (verifications): sent only while no foreground request waits.
    Background,
}

/// Counts a foreground sender as waiting until dropped.
struct ForegroundWait<'a>(&'a RequestBudget);

impl Drop for ForegroundWait<'_> {
    fn drop(&mut self) {
        self.0.foreground_waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.foreground_left.notify_waiters();
    }
}

/// What the provider's headers say is left, less what was sent since.
#[derive(Debug, Default)]
struct Credit {
    /// Requests left in the provider's tightest window by its latest answer, less the
    /// requests in flight or sent since; `None` while no header has said.
    left: Option<u64>,
    /// Requests sent and not yet answered.
    in_flight: u64,
    /// Requests answered so far. A permit notes it when sent: the requests answered while
    /// it was in flight may have been served after it, so its answer's count never saw them.
    ended: u64,
}

/// One request's claim on a budget, from sending until it is dropped. Dropping it ends
/// the request and hands the budget the count the answer reported, if any: drop it only
/// after any pause the answer calls for is in force, so that waiting senders see both.
#[derive(Debug)]
pub struct Permit<'a> {
    budget: &'a RequestBudget,
    remaining: Option<u64>,
    /// [`Credit::ended`] when this request was sent.
    ended_before: u64,
}

impl Permit<'_> {
    /// Records the count of requests the provider's answer says are left (`None` when it
    /// did not say).
    pub fn report(&mut self, remaining: Option<u64>) {
        self.remaining = remaining;
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.budget.end_request(self.remaining, self.ended_before);
    }
}

impl std::fmt::Debug for RequestBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBudget")
            .field("limited", &self.limiter.is_some())
            .finish()
    }
}

impl RequestBudget {
    /// A budget enforcing `quota`, or only header pauses when `None`.
    pub fn new(quota: Option<RateQuota>) -> Self {
        let limiter = quota.map(|q| {
            let period = q.per / q.requests.get();
            let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
                .expect("period is positive")
                .allow_burst(q.burst);
            RateLimiter::direct(quota)
        });
        RequestBudget {
            limiter,
            paused_until: Mutex::new(None),
            credit: Mutex::new(Credit::default()),
            request_ended: Notify::new(),
            foreground_waiting: AtomicU64::new(0),
            foreground_left: Notify::new(),
        }
    }

    /// How long the budget is paused from now, and why.
    pub fn pause_remaining(&self) -> Option<(Duration, &'static str)> {
        let guard = self.paused_until.lock().expect("budget lock poisoned");
        let (until, reason) = (*guard)?;
        let now = Instant::now();
        (until > now).then(|| (until - now, reason))
    }

    /// Stops every user of the budget for `wait` (extends, never shortens, a pause). A wait
    /// beyond what the clock can represent pauses until the far future instead of
    /// panicking; the HTTP layer clamps provider-given waits long before that.
    pub fn pause_for(&self, wait: Duration, reason: &'static str) {
        let now = Instant::now();
        let until = now.checked_add(wait).unwrap_or_else(|| now + FAR_FUTURE);
        let mut guard = self.paused_until.lock().expect("budget lock poisoned");
        match *guard {
            Some((existing, _)) if existing >= until => {}
            _ => *guard = Some((until, reason)),
        }
    }

    /// Waits until a pause has passed, the provider's reported count has a request left
    /// (or requests in flight have answered with a fresh count) and the quota allows one.
    /// Returns the permit to hold until the answer, and how long it waited; or, without
    /// waiting, a pause in force that is longer than `max_pause`, and its reason.
    pub async fn acquire(
        &self,
        max_pause: Duration,
    ) -> Result<(Permit<'_>, Duration), (Duration, &'static str)> {
        self.acquire_at(Priority::Foreground, max_pause).await
    }

    /// [`RequestBudget::acquire`] at `priority`: a background request first waits until
    /// no foreground request waits.
    pub async fn acquire_at(
        &self,
        priority: Priority,
        max_pause: Duration,
    ) -> Result<(Permit<'_>, Duration), (Duration, &'static str)> {
        let start = Instant::now();
        let _waiting = match priority {
            Priority::Foreground => {
                self.foreground_waiting.fetch_add(1, Ordering::SeqCst);
                Some(ForegroundWait(self))
            }
            Priority::Background => {
                loop {
                    // Registered before the count is read, so a sender leaving in between
                    // is not missed.
                    let left = self.foreground_left.notified();
                    if self.foreground_waiting.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    left.await;
                }
                None
            }
        };
        let ended_before;
        loop {
            if let Some((wait, reason)) = self.pause_remaining() {
                if wait > max_pause {
                    return Err((wait, reason));
                }
                tokio::time::sleep(wait).await;
            }
            // Registered before the credit is read, so an answer in between is not missed.
            let ended = self.request_ended.notified();
            {
                let mut credit = self.credit.lock().expect("budget lock poisoned");
                match credit.left {
                    // Nothing left by the provider's count, but answers are on their way:
                    // wait for them rather than risk a refusal.
                    Some(0) if credit.in_flight > 0 => {}
                    left => {
                        credit.left = left.map(|n| n.saturating_sub(1));
                        credit.in_flight += 1;
                        ended_before = credit.ended;
                        break;
                    }
                }
            }
            ended.await;
        }
        let permit = Permit {
            budget: self,
            remaining: None,
            ended_before,
        };
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        Ok((permit, start.elapsed()))
    }

    /// The state another process needs to go on where this budget stops (see
    /// [`RateLimitSnapshot`]), `now` being the wall clock's present.
    pub fn snapshot(&self, now: Timestamp) -> RateLimitSnapshot {
        let paused_until = self
            .pause_remaining()
            .map(|(wait, _)| now.saturating_add(wait));
        let requests_left = self.credit.lock().expect("budget lock poisoned").left;
        RateLimitSnapshot {
            paused_until,
            requests_left,
        }
    }

    /// Takes over a previous owner's state: its pause, as far as it is still ahead of
    /// `now` (extending, never shortening, one in force), and its count of requests left
    /// when this budget has none of its own yet.
    pub fn seed(&self, snapshot: &RateLimitSnapshot, now: Timestamp) {
        if let Some(until) = snapshot.paused_until
            && until > now
        {
            self.pause_for(now.elapsed_until(until), INHERITED_PAUSE);
        }
        let mut credit = self.credit.lock().expect("budget lock poisoned");
        if credit.left.is_none() {
            credit.left = snapshot.requests_left;
        }
    }

    fn end_request(&self, remaining: Option<u64>, ended_before: u64) {
        {
            let mut credit = self.credit.lock().expect("budget lock poisoned");
            credit.in_flight = credit.in_flight.saturating_sub(1);
            // Answers arrive in any order: the requests answered while this one was in
            // flight, like those still in flight, may have been served after it, so the
            // count it reports may not include them. Taking the count as it stands would
            // hand back what they spent, and a window's last requests would be refused.
            let answered_meanwhile = credit.ended.saturating_sub(ended_before);
            credit.ended = credit.ended.saturating_add(1);
            if let Some(remaining) = remaining {
                credit.left = Some(
                    remaining
                        .saturating_sub(credit.in_flight)
                        .saturating_sub(answered_meanwhile),
                );
            }
        }
        self.request_ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lets every other task run until each waits for something.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    /// A background request waits while a foreground one waits for the budget, and goes
    /// once the foreground one has its permit; with none waiting it goes at once.
    #[tokio::test]
    async fn background_requests_go_after_waiting_foreground_ones() {
        let budget = std::sync::Arc::new(RequestBudget::new(None));
        let (alone, _) = budget
            .acquire_at(Priority::Background, Duration::MAX)
            .await
            .unwrap();
        drop(alone);
        // Nothing left by the provider's count, one request in flight: senders wait.
        let (mut a, _) = budget.acquire(Duration::MAX).await.unwrap();
        let (mut b, _) = budget.acquire(Duration::MAX).await.unwrap();
        a.report(Some(0));
        drop(a);
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sender = |priority: Priority, name: &'static str| {
            let (budget, order) = (budget.clone(), order.clone());
            tokio::spawn(async move {
                let permit = budget.acquire_at(priority, Duration::MAX).await.unwrap();
                order.lock().unwrap().push(name);
                drop(permit);
            })
        };
        let foreground = sender(Priority::Foreground, "foreground");
        settle().await;
        let background = sender(Priority::Background, "background");
        settle().await;
        assert!(order.lock().unwrap().is_empty());
        b.report(Some(5));
        drop(b);
        foreground.await.unwrap();
        background.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["foreground", "background"]);
    }

    /// An answer that arrives after a later-served request's answer reports a count that
    /// does not include that request: it must not hand back what that request spent.
    #[tokio::test]
    async fn answers_out_of_order_never_raise_the_count_above_the_providers() {
        let budget = RequestBudget::new(None);
        let (mut first, _) = budget.acquire(Duration::MAX).await.unwrap();
        first.report(Some(10));
        drop(first);
        let now = Timestamp::from_epoch_millis(0).unwrap();
        // The provider serves `a` (9 left), then `b` (8 left); `b`'s answer arrives first.
        let (mut a, _) = budget.acquire(Duration::MAX).await.unwrap();
        let (mut b, _) = budget.acquire(Duration::MAX).await.unwrap();
        b.report(Some(8));
        drop(b);
        assert_eq!(
            budget.snapshot(now).requests_left,
            Some(7),
            "`a` is still in flight and may spend one"
        );
        a.report(Some(9));
        drop(a);
        assert_eq!(
            budget.snapshot(now).requests_left,
            Some(8),
            "the provider has 8 left, not the 9 `a` saw before `b` was served"
        );
        // A later answer (a fresh window) is taken as it stands.
        let (mut c, _) = budget.acquire(Duration::MAX).await.unwrap();
        c.report(Some(100));
        drop(c);
        assert_eq!(budget.snapshot(now).requests_left, Some(100));
    }

    /// Requests in flight spend the count the provider reported: the one that would
    /// exceed it waits until an answer brings a fresh count.
    #[tokio::test]
    async fn reported_count_holds_back_requests_beyond_it() {
        let budget = std::sync::Arc::new(RequestBudget::new(None));
        let (mut first, _) = budget.acquire(Duration::MAX).await.unwrap();
        first.report(Some(2));
        drop(first);
        let (mut a, _) = budget.acquire(Duration::MAX).await.unwrap();
        let (mut b, _) = budget.acquire(Duration::MAX).await.unwrap();
        let third = tokio::spawn({
            let budget = std::sync::Arc::clone(&budget);
            async move {
                let (mut permit, _) = budget.acquire(Duration::MAX).await.unwrap();
                permit.report(Some(7));
            }
        });
        settle().await;
        assert!(
            !third.is_finished(),
            "a third request would exceed the 2 left"
        );
        a.report(Some(1));
        drop(a);
        settle().await;
        assert!(
            !third.is_finished(),
            "one left by the provider's count, and the request still in flight may spend it"
        );
        b.report(Some(4));
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("a fresh count lets the waiting request go")
            .unwrap();
    }

    /// A provider that says nothing leaves the budget to the quota alone, and a request
    /// that fails before any answer gives its place back.
    #[tokio::test]
    async fn no_count_means_no_hold_back() {
        let budget = RequestBudget::new(None);
        let permits: Vec<_> =
            futures::future::join_all((0..20).map(|_| budget.acquire(Duration::MAX)))
                .await
                .into_iter()
                .map(|acquired| acquired.unwrap().0)
                .collect();
        drop(permits);
        let (mut last, _) = budget.acquire(Duration::MAX).await.unwrap();
        last.report(Some(0));
        drop(last);
        // Nothing left and nothing in flight: one request goes, to learn the new count.
        let (next, _) = tokio::time::timeout(Duration::from_secs(1), budget.acquire(Duration::MAX))
            .await
            .expect("nothing in flight: the request goes")
            .unwrap();
        drop(next);
    }

    /// A pause longer than the caller will wait is reported at once, with its reason.
    #[tokio::test]
    async fn long_pause_is_reported_not_waited() {
        let budget = RequestBudget::new(None);
        budget.pause_for(Duration::from_secs(600), "daily");
        let (wait, reason) = budget.acquire(Duration::from_secs(30)).await.unwrap_err();
        assert!(wait > Duration::from_secs(30));
        assert_eq!(reason, "daily");
    }

    /// A wait no clock can represent pauses the budget instead of panicking.
    #[tokio::test]
    async fn endless_pause_does_not_panic() {
        let budget = RequestBudget::new(None);
        budget.pause_for(Duration::MAX, "retry-after");
        let (wait, reason) = budget.acquire(Duration::from_secs(90)).await.unwrap_err();
        assert!(wait > Duration::from_secs(86_400 * 365), "{wait:?}");
        assert_eq!(reason, "retry-after");
    }

    /// A budget's pause and count survive a snapshot as JSON and seed another budget, which
    /// then waits out the same pause and spends the same count.
    #[tokio::test]
    async fn a_snapshot_seeds_the_next_owners_budget() {
        let now = Timestamp::now();
        let first = RequestBudget::new(None);
        assert!(first.snapshot(now).is_empty());
        let (mut permit, _) = first.acquire(Duration::MAX).await.unwrap();
        permit.report(Some(7));
        drop(permit);
        first.pause_for(Duration::from_secs(120), "minute");
        let snapshot = first.snapshot(now);
        assert_eq!(snapshot.requests_left, Some(7));
        let until = snapshot.paused_until.expect("the pause is carried");
        assert!(
            now.elapsed_until(until) > Duration::from_secs(110),
            "{until}"
        );

        let json = serde_json::to_value(&snapshot).unwrap();
        let back: RateLimitSnapshot = serde_json::from_value(json).unwrap();
        let next = RequestBudget::new(None);
        next.seed(&back, now);
        let (wait, reason) = next.pause_remaining().expect("the pause goes on");
        assert!(wait > Duration::from_secs(110), "{wait:?}");
        assert_eq!(reason, INHERITED_PAUSE);
        assert_eq!(next.snapshot(now).requests_left, Some(7));

        // A pause already over by the time the lease changes hands is not inherited.
        let stale = RateLimitSnapshot {
            paused_until: Some(now.saturating_sub(Duration::from_secs(1))),
            requests_left: None,
        };
        let fresh = RequestBudget::new(None);
        fresh.seed(&stale, now);
        assert!(fresh.pause_remaining().is_none());
    }

    #[tokio::test]
    async fn pauses_only_ever_grow() {
        let b = RequestBudget::new(None);
        b.pause_for(Duration::from_secs(60), "daily");
        b.pause_for(Duration::from_secs(1), "minute");
        let (left, reason) = b.pause_remaining().unwrap();
        assert!(left > Duration::from_secs(50));
        assert_eq!(reason, "daily");
    }
}
