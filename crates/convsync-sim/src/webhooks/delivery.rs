//! The delivery task: takes events from the outbox in order, draws their faults, signs
//! and sends them to the account's loopback target, and retries as the provider does.
//!
//! Events are sent one after the other (the providers send in order; Spruce says so), or
//! on `--webhook-concurrency` lanes at once for load tests; the fault draws happen in
//! outbox order either way, so the same seed gives the same faults. A
//! delayed event is sent by a task of its own; a failed one is retried by a task of its
//! own (at most `max_pending_retries` at once), so neither holds up the others.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::super::ids::hash_all;
use super::super::platform::Platform;
use super::super::wire;
use super::log::Status;
use super::signing::Signer;
use super::{WebhookHub, WebhookOutcome, is_loopback};

/// One event ready to send: the provider's envelope and where its times and id live.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) provider: Platform,
    pub(crate) account: usize,
    /// The provider's event id (what a receiver dedupes on).
    pub(crate) event_id: String,
    /// The event name (`conversation.updated`, `MESSAGE_INBOUND`, …), for logs.
    pub(crate) name: String,
    /// The envelope.
    pub(crate) body: Value,
    /// JSON pointers of the fields that carry the send time (moved back in a replay).
    pub(crate) time_fields: &'static [&'static str],
    /// JSON pointer of the event id (replaced in a forged copy).
    pub(crate) id_field: &'static str,
    /// When the provider sends it (the simulated now of the change).
    pub(crate) sent_at_us: i64,
    /// Path below the target (D365 posts to `…/v3/conversations/{id}/activities`).
    pub(crate) subpath: Option<String>,
}

impl Outgoing {
    /// The body as sent: with the send time moved to `sent_at_us`, the id replaced, or
    /// padded to `pad_to` bytes.
    fn render(&self, sent_at_us: i64, id: Option<&str>, pad_to: Option<usize>) -> Vec<u8> {
        let mut body = self.body.clone();
        if sent_at_us != self.sent_at_us {
            for pointer in self.time_fields {
                if let Some(field) = body.pointer_mut(pointer) {
                    *field = Value::String(wire::rfc3339_ms(sent_at_us));
                }
            }
        }
        if let Some(id) = id
            && let Some(field) = body.pointer_mut(self.id_field)
        {
            *field = Value::String(id.to_owned());
        }
        let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
        if let Some(len) = pad_to
            && let Value::Object(map) = &mut body
        {
            let filler = len.saturating_sub(bytes.len()).saturating_add(16);
            map.insert("padding".to_owned(), Value::String("x".repeat(filler)));
            bytes = serde_json::to_vec(&body).unwrap_or_default();
        }
        bytes
    }
}

/// How a provider retries a delivery.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    /// Attempts in all, the first included.
    pub(crate) attempts: u32,
    /// Wait before the first retry.
    pub(crate) interval: Duration,
    /// Whether the wait doubles after every retry.
    pub(crate) doubling: bool,
    /// How long the provider waits for an answer.
    pub(crate) timeout: Duration,
    /// Whether only a 429 is retried (HighLevel); otherwise any failure is.
    pub(crate) only_429: bool,
}

impl RetryPolicy {
    /// The documented policies (see `docs/webhooks.md`, "What each provider sends").
    pub(crate) fn of(provider: Platform) -> RetryPolicy {
        match provider {
            // Every 2 minutes, at most 10 attempts; an answer must come within 5 s.
            Platform::Spruce => RetryPolicy {
                attempts: 10,
                interval: Duration::from_secs(120),
                doubling: false,
                timeout: Duration::from_secs(5),
                only_429: false,
            },
            // Only a 429 is retried, up to 6 times about 10 minutes apart.
            Platform::HighLevel => RetryPolicy {
                attempts: 7,
                interval: Duration::from_secs(600),
                doubling: false,
                timeout: Duration::from_secs(10),
                only_429: true,
            },
            // 3 retries with a 10 s timeout, then dropped (the interval is unpublished:
            // ASSUMPTION 10 s).
            Platform::D365 => RetryPolicy {
                attempts: 4,
                interval: Duration::from_secs(10),
                doubling: false,
                timeout: Duration::from_secs(10),
                only_429: false,
            },
            // "Exponential backoff", schedule unpublished: ASSUMPTION 5 retries from 1 s.
            Platform::Sinch => RetryPolicy {
                attempts: 6,
                interval: Duration::from_secs(1),
                doubling: true,
                timeout: Duration::from_secs(10),
                only_429: false,
            },
        }
    }

    /// Wait before retry number `retry` (1-based), scaled.
    fn wait(&self, retry: u32, scale: f64) -> Duration {
        let base = if self.doubling {
            self.interval
                .saturating_mul(1u32 << (retry.saturating_sub(1)).min(16))
        } else {
            self.interval
        };
        base.mul_f64(scale.clamp(0.0, 1.0e3))
    }

    fn retries(&self, answer: &Answer) -> bool {
        match answer {
            Answer::Status(status) if status.is_success() => false,
            Answer::Status(status) => !self.only_429 || *status == StatusCode::TOO_MANY_REQUESTS,
            Answer::None => !self.only_429,
        }
    }
}

/// What the receiver did with one attempt.
#[derive(Debug)]
enum Answer {
    Status(StatusCode),
    /// No answer in time, or no connection.
    None,
}

/// One request as sent (kept whole so a duplicate is byte-identical).
#[derive(Clone)]
struct Request {
    url: url::Url,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// An event with its fault draws.
struct Plan {
    event: Outgoing,
    duplicate: bool,
    forge: bool,
    replay: bool,
    oversize: bool,
    nonce: u64,
}

/// What the sending side needs, cheap to clone into spawned tasks.
#[derive(Clone)]
struct Sender {
    hub: Arc<WebhookHub>,
    http: reqwest::Client,
    signer: Arc<Signer>,
    retries: Arc<Semaphore>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// The delivery loop (runs until cancelled).
pub(crate) async fn run(
    hub: Arc<WebhookHub>,
    mut inbox: mpsc::Receiver<Outgoing>,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let http = match reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "webhook client cannot be built; no webhooks will be sent");
            return;
        }
    };
    let sender = Sender {
        signer: Arc::new(Signer::new(hub.accounts(), hub.settings.d365_bearer)),
        retries: Arc::new(Semaphore::new(hub.settings.max_pending_retries.max(1))),
        hub: Arc::clone(&hub),
        http,
        tracker,
        cancel: cancel.clone(),
    };
    let mut rngs: Vec<StdRng> = Platform::ALL
        .iter()
        .map(|p| StdRng::seed_from_u64(hash_all(&[hub.seed(), p.index() as u64])))
        .collect();
    let mut held: Option<Plan> = None;
    let lanes = Arc::new(Semaphore::new(hub.settings.concurrency.max(1)));
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => break,
            next = inbox.recv() => next,
            // A held (reordered) event waits for the next one only so long.
            () = tokio::time::sleep(Duration::from_secs(1)), if held.is_some() => {
                if let Some(plan) = held.take() {
                    sender.send_in_turn(vec![plan], &lanes).await;
                }
                continue;
            }
        };
        let Some(event) = next else { break };
        let faults = hub.faults(event.provider);
        let rng = &mut rngs[event.provider.index()];
        // Every draw happens for every event, so one fault's ratio never shifts the
        // draws of another.
        let mut roll = |ratio: f64| {
            let draw: f64 = rng.random();
            ratio > 0.0 && draw < ratio
        };
        let drop = roll(faults.drop_ratio);
        let duplicate = roll(faults.duplicate_ratio);
        let delay = roll(faults.delay_ratio);
        let reorder = roll(faults.reorder_ratio);
        let forge = roll(faults.forge_ratio);
        let replay = roll(faults.replay_ratio);
        let oversize = roll(faults.oversize_ratio);
        let nonce: u64 = rng.random();
        let (provider, account) = (event.provider, event.account);
        if drop {
            hub.count(provider, account, WebhookOutcome::Dropped);
            hub.count(provider, account, WebhookOutcome::Handled);
            hub.log.finish(&event.event_id, Status::Failed, None);
            continue;
        }
        let plan = Plan {
            event,
            duplicate,
            forge,
            replay,
            oversize,
            nonce,
        };
        if delay {
            hub.count(provider, account, WebhookOutcome::Delayed);
            let wait = Duration::from_millis(faults.delay_ms);
            let delayed = sender.clone();
            sender.tracker.spawn(async move {
                tokio::select! {
                    _ = delayed.cancel.cancelled() => {}
                    () = tokio::time::sleep(wait) => delayed.send(plan).await,
                }
            });
            continue;
        }
        if reorder && held.is_none() {
            hub.count(provider, account, WebhookOutcome::Reordered);
            held = Some(plan);
            continue;
        }
        let mut plans = vec![plan];
        plans.extend(held.take());
        sender.send_in_turn(plans, &lanes).await;
    }
}

impl Sender {
    /// Send `plans` one after the other on a free lane (waits for one): with one lane,
    /// every event is sent after the previous one settled its first attempt.
    async fn send_in_turn(&self, plans: Vec<Plan>, lanes: &Arc<Semaphore>) {
        let Ok(lane) = Arc::clone(lanes).acquire_owned().await else {
            return;
        };
        let sender = self.clone();
        self.tracker.spawn(async move {
            for plan in plans {
                sender.send(plan).await;
            }
            drop(lane);
        });
    }

    /// Send one event with its extra copies, then count it handled.
    async fn send(&self, plan: Plan) {
        let (provider, account) = (plan.event.provider, plan.event.account);
        self.send_copies(plan).await;
        self.hub.count(provider, account, WebhookOutcome::Handled);
    }

    /// Send one event with its extra copies (forged before, duplicate and replay after).
    async fn send_copies(&self, plan: Plan) {
        let Plan {
            event,
            duplicate,
            forge,
            replay,
            oversize,
            nonce,
        } = plan;
        let (provider, account) = (event.provider, event.account);
        let Some(target) = self.hub.target(provider, account) else {
            self.hub.log.finish(&event.event_id, Status::Failed, None);
            self.hub.count(provider, account, WebhookOutcome::Failed);
            return;
        };
        let mut url = target;
        if let Some(subpath) = &event.subpath {
            let path = format!("{}/{}", url.path().trim_end_matches('/'), subpath);
            url.set_path(&path);
        }
        if forge {
            let forged_id = format!("{}-forged-{nonce:x}", event.event_id);
            let body = event.render(event.sent_at_us, Some(&forged_id), None);
            let headers =
                self.signer
                    .sign(provider, account, &body, event.sent_at_us, nonce ^ 1, true);
            self.hub.count(provider, account, WebhookOutcome::Forged);
            let answer = self
                .attempt(
                    &Request {
                        url: url.clone(),
                        headers,
                        body,
                    },
                    &event,
                    RetryPolicy::of(provider).timeout,
                )
                .await;
            if matches!(answer, Answer::Status(StatusCode::UNAUTHORIZED)) {
                self.hub
                    .count(provider, account, WebhookOutcome::ForgedRefused);
            }
        }
        let pad = oversize.then(|| self.hub.faults(provider).oversize_len());
        if oversize {
            self.hub.count(provider, account, WebhookOutcome::Oversized);
        }
        let body = event.render(event.sent_at_us, None, pad);
        let headers = self
            .signer
            .sign(provider, account, &body, event.sent_at_us, nonce, false);
        let request = Request {
            url: url.clone(),
            headers,
            body,
        };
        self.deliver(&request, &event).await;
        if duplicate {
            self.hub
                .count(provider, account, WebhookOutcome::Duplicated);
            self.attempt(&request, &event, RetryPolicy::of(provider).timeout)
                .await;
        }
        if replay {
            let age = self.hub.faults(provider).replay_age();
            let old = event
                .sent_at_us
                .saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX / 4));
            let body = event.render(old, None, None);
            let headers = self
                .signer
                .sign(provider, account, &body, old, nonce ^ 2, false);
            self.hub.count(provider, account, WebhookOutcome::Replayed);
            self.attempt(
                &Request { url, headers, body },
                &event,
                RetryPolicy::of(provider).timeout,
            )
            .await;
        }
    }

    /// The first attempt of an event; a retryable failure hands it to a retry task.
    async fn deliver(&self, request: &Request, event: &Outgoing) {
        let policy = RetryPolicy::of(event.provider);
        let answer = self.attempt(request, event, policy.timeout).await;
        self.settle(request.clone(), event.clone(), policy, 1, answer);
    }

    /// Record the outcome of attempt number `done`; schedule the next if the policy
    /// allows and a retry slot is free.
    fn settle(
        &self,
        request: Request,
        event: Outgoing,
        policy: RetryPolicy,
        done: u32,
        answer: Answer,
    ) {
        let (provider, account) = (event.provider, event.account);
        let now = self.hub.clock.now_us();
        if matches!(&answer, Answer::Status(s) if s.is_success()) {
            self.hub.count(provider, account, WebhookOutcome::Delivered);
            self.hub
                .log
                .finish(&event.event_id, Status::Delivered, Some(now));
            return;
        }
        let permit = (done < policy.attempts && policy.retries(&answer))
            .then(|| Arc::clone(&self.retries).try_acquire_owned().ok())
            .flatten();
        let Some(permit) = permit else {
            self.hub.count(provider, account, WebhookOutcome::Failed);
            self.hub.log.finish(&event.event_id, Status::Failed, None);
            return;
        };
        self.hub.count(provider, account, WebhookOutcome::Retried);
        let wait = policy.wait(done, self.hub.settings.retry_scale);
        let next_at = now.saturating_add(i64::try_from(wait.as_micros()).unwrap_or(i64::MAX / 4));
        self.hub.log.retrying(&event.event_id, next_at);
        let sender = self.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = sender.cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let answer = sender.attempt(&request, &event, policy.timeout).await;
            // This retry's slot is free again before the next one asks for a slot.
            drop(permit);
            sender.settle(request, event, policy, done + 1, answer);
        });
    }

    /// One HTTP attempt, counted.
    async fn attempt(&self, request: &Request, event: &Outgoing, timeout: Duration) -> Answer {
        let (provider, account) = (event.provider, event.account);
        if !is_loopback(&request.url) {
            return Answer::None;
        }
        self.hub.count(provider, account, WebhookOutcome::Attempt);
        self.hub.log.attempted(&event.event_id);
        let mut builder = self
            .http
            .post(request.url.clone())
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        let sent = tokio::select! {
            _ = self.cancel.cancelled() => return Answer::None,
            sent = builder.send() => sent,
        };
        match sent {
            Ok(response) => Answer::Status(response.status()),
            Err(error) => {
                tracing::debug!(source = %provider, event = %event.name, %error, "webhook attempt failed");
                Answer::None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn retry_waits_follow_the_policy_and_its_scale() {
        let spruce = RetryPolicy::of(Platform::Spruce);
        assert_eq!(spruce.wait(1, 1.0), Duration::from_secs(120));
        assert_eq!(spruce.wait(9, 1.0), Duration::from_secs(120));
        assert_eq!(spruce.wait(1, 0.001), Duration::from_millis(120));
        let sinch = RetryPolicy::of(Platform::Sinch);
        assert_eq!(sinch.wait(1, 1.0), Duration::from_secs(1));
        assert_eq!(sinch.wait(4, 1.0), Duration::from_secs(8));
        assert_eq!(sinch.wait(u32::MAX, 1.0), Duration::from_secs(65_536));
        let highlevel = RetryPolicy::of(Platform::HighLevel);
        assert!(highlevel.retries(&Answer::Status(StatusCode::TOO_MANY_REQUESTS)));
        assert!(!highlevel.retries(&Answer::Status(StatusCode::INTERNAL_SERVER_ERROR)));
        assert!(!highlevel.retries(&Answer::None));
        assert!(spruce.retries(&Answer::None));
        assert!(spruce.retries(&Answer::Status(StatusCode::BAD_REQUEST)));
        assert!(!spruce.retries(&Answer::Status(StatusCode::NO_CONTENT)));
    }

    #[test]
    fn a_copy_moves_the_send_time_swaps_the_id_or_pads_the_body() {
        let event = Outgoing {
            provider: Platform::Spruce,
            account: 0,
            event_id: "wev_1".to_owned(),
            name: "conversation.updated".to_owned(),
            body: json!({ "id": "wev_1", "eventTime": wire::rfc3339_ms(1_000_000_000) }),
            time_fields: &["/eventTime"],
            id_field: "/id",
            sent_at_us: 1_000_000_000,
            subpath: None,
        };
        let plain: Value =
            serde_json::from_slice(&event.render(1_000_000_000, None, None)).expect("json");
        assert_eq!(plain, event.body);
        let old: Value =
            serde_json::from_slice(&event.render(400_000_000, Some("wev_2"), None)).expect("json");
        assert_eq!(old["eventTime"], "1970-01-01T00:06:40.000Z");
        assert_eq!(old["id"], "wev_2");
        let padded = event.render(1_000_000_000, None, Some(4096));
        assert!(padded.len() >= 4096);
        assert!(serde_json::from_slice::<Value>(&padded).is_ok());
    }
}
