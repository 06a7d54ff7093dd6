//! The running simulator: listeners, world, activity, and the operations that the Rust
//! handle and the control API both expose.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use super::accounts::SimAccounts;
use super::activity::{self, ActivityEngine, Affected, Mutation, SimError};
use super::clock::SimClock;
use super::control::{self, ActivityCommand, ActivityOutcome, ClockReading, SimUrls};
use super::counters::RequestCounters;
use super::faults::Faults;
use super::options::{D365HeaderNames, SimOptions};
use super::platform::{Platform, PlatformSelector};
use super::server;
use super::state::{Shared, SimContext};
use super::truth::{self, TruthConversation};
use super::webhooks::{DeliverySettings, WebhookHub};
use super::world::{AccountWorld, GenParams};
use super::{d365, highlevel, sinch, spruce};

/// Shared core of a running simulator.
pub(crate) struct SimCore {
    /// One per provider, in `Platform::ALL` order.
    pub(crate) providers: Vec<Arc<Shared>>,
    pub(crate) urls: SimUrls,
    pub(crate) accounts: Arc<SimAccounts>,
    pub(crate) counters: Arc<RequestCounters>,
    pub(crate) clock: SimClock,
    pub(crate) webhooks: Arc<WebhookHub>,
    activity: Arc<ActivityEngine>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

fn base_url(listener: &tokio::net::TcpListener) -> anyhow::Result<Url> {
    let address = listener.local_addr()?;
    Url::parse(&format!("http://{address}/")).context("listener address is not a URL")
}

impl SimCore {
    /// Generate the world, bind every listener and start serving and the activity
    /// generator. Returns once the listeners accept connections.
    pub(crate) async fn start(options: SimOptions) -> anyhow::Result<Arc<SimCore>> {
        let options = Arc::new(options);
        let start = options.clock_start.unwrap_or_else(Utc::now);
        let clock = SimClock::new(start, options.frozen_clock);
        let accounts = Arc::new(SimAccounts::generate(&options));
        let counters = Arc::new(RequestCounters::default());
        let webhooks = Arc::new(WebhookHub::new(
            Arc::clone(&accounts),
            clock.clone(),
            options.seed,
            DeliverySettings {
                queue_cap: options.webhook_queue_cap,
                retry_scale: options.webhook_retry_scale,
                max_pending_retries: options.webhook_max_pending_retries,
                d365_bearer: options.d365_header_names == D365HeaderNames::Plain,
                concurrency: options.webhook_concurrency,
            },
            Platform::ALL.map(|p| options.initial_webhook_faults(p)),
        ));
        if let Some(base) = &options.webhook_base {
            webhooks
                .set_base(base)
                .context("--webhook-base must be a loopback http URL")?;
        }
        let context = SimContext {
            options: Arc::clone(&options),
            accounts: Arc::clone(&accounts),
            clock: clock.clone(),
            counters: Arc::clone(&counters),
            webhooks: Arc::clone(&webhooks),
        };

        let now_us = clock.now_us();
        let generation_options = Arc::clone(&options);
        let worlds =
            tokio::task::spawn_blocking(move || generate_worlds(&generation_options, now_us))
                .await
                .context("world generation panicked")?;

        let bind = |port| server::bind(options.bind, port);
        let listeners = [
            bind(options.d365_port)
                .await
                .context("binding the D365 listener")?,
            bind(options.spruce_port)
                .await
                .context("binding the Spruce listener")?,
            bind(options.sinch_port)
                .await
                .context("binding the Sinch listener")?,
            bind(options.highlevel_port)
                .await
                .context("binding the HighLevel listener")?,
        ];
        let control_listener = bind(options.control_port)
            .await
            .context("binding the control listener")?;

        let mut providers = Vec::new();
        for ((provider, worlds), listener) in Platform::ALL.iter().zip(worlds).zip(&listeners) {
            let render_error = match provider {
                Platform::D365 => d365::fault_response,
                Platform::Spruce => spruce::fault_response,
                Platform::Sinch => sinch::fault_response,
                Platform::HighLevel => highlevel::fault_response,
            };
            providers.push(Arc::new(Shared::new(
                *provider,
                &context,
                worlds,
                base_url(listener)?,
                render_error,
            )));
        }
        highlevel::register_credentials(&providers[Platform::HighLevel.index()]);

        let urls = SimUrls {
            d365: base_url(&listeners[0])?,
            spruce: base_url(&listeners[1])?,
            sinch: base_url(&listeners[2])?,
            highlevel: base_url(&listeners[3])?,
            control: base_url(&control_listener)?,
        };
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let core = Arc::new(SimCore {
            activity: Arc::new(ActivityEngine::new(options.seed)),
            providers,
            urls,
            accounts,
            counters,
            clock,
            webhooks,
            cancel: cancel.clone(),
            tracker: tracker.clone(),
        });

        for (provider, listener) in Platform::ALL.iter().zip(listeners) {
            let shared = Arc::clone(&core.providers[provider.index()]);
            let router = match provider {
                Platform::D365 => d365::router(shared),
                Platform::Spruce => spruce::router(shared),
                Platform::Sinch => sinch::router(shared),
                Platform::HighLevel => highlevel::router(shared),
            };
            tracker.spawn(server::serve(
                listener,
                router,
                cancel.clone(),
                tracker.clone(),
            ));
        }
        tracker.spawn(server::serve(
            control_listener,
            control::router(Arc::clone(&core)),
            cancel.clone(),
            tracker.clone(),
        ));
        core.webhooks.start(&tracker, cancel.clone());
        tracker.spawn(Arc::clone(&core.activity).run(
            core.providers.clone(),
            options.activity_rate * options.speed,
            cancel.clone(),
        ));
        tracing::info!(control = %core.urls.control, "provider simulator started");
        Ok(core)
    }

    fn shared(&self, provider: Platform) -> &Arc<Shared> {
        &self.providers[provider.index()]
    }

    fn account_index(&self, provider: Platform, account: &str) -> Result<usize, SimError> {
        self.accounts
            .position(provider, account)
            .ok_or_else(|| SimError::UnknownAccount {
                provider,
                account: account.to_owned(),
            })
    }

    /// Truth of one account (all conversations ever created, deleted ones included).
    pub(crate) fn truth(
        &self,
        provider: Platform,
        account: &str,
    ) -> Result<Vec<TruthConversation>, SimError> {
        let index = self.account_index(provider, account)?;
        let state = self.shared(provider).lock();
        let world = &state.accounts[index];
        Ok((0..world.len() as u32)
            .map(|seq| truth::truth_of(world, account, seq))
            .collect())
    }

    pub(crate) fn all_faults(&self) -> BTreeMap<Platform, Faults> {
        self.providers
            .iter()
            .map(|s| (s.provider, s.faults()))
            .collect()
    }

    pub(crate) fn faults(&self, provider: Platform) -> Faults {
        self.shared(provider).faults()
    }

    pub(crate) fn set_faults(&self, selector: PlatformSelector, faults: Faults) {
        for provider in selector.providers() {
            self.shared(provider).fault_state().set(faults.clone());
        }
    }

    pub(crate) fn revoke_tokens(&self, selector: PlatformSelector) {
        for provider in selector.providers() {
            self.shared(provider).lock().tokens.revoke_issued();
        }
    }

    pub(crate) fn mutate(
        &self,
        provider: Platform,
        account: &str,
        mutation: &Mutation,
    ) -> Result<Affected, SimError> {
        let index = self.account_index(provider, account)?;
        activity::apply(self.shared(provider), index, mutation, 0)
    }

    pub(crate) fn apply_random(&self, count: u64) -> Affected {
        self.activity.apply_random(&self.providers, count)
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        self.activity.set_paused(paused);
    }

    pub(crate) fn activity(&self, command: ActivityCommand) -> Result<ActivityOutcome, SimError> {
        let affected = match command {
            ActivityCommand::Pause => {
                self.set_paused(true);
                Vec::new()
            }
            ActivityCommand::Resume => {
                self.set_paused(false);
                Vec::new()
            }
            ActivityCommand::Apply { count } => self.apply_random(count),
            ActivityCommand::Mutate {
                provider,
                account,
                mutation,
            } => self.mutate(provider, &account, &mutation)?,
        };
        Ok(ActivityOutcome {
            affected,
            paused: self.activity.is_paused(),
        })
    }

    pub(crate) fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub(crate) fn clock_reading(&self) -> ClockReading {
        ClockReading {
            now: self.clock.now(),
            frozen: self.clock.is_frozen(),
        }
    }

    /// Stop listeners and the generator; wait (bounded) for connections to finish.
    pub(crate) async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
    }
}

/// Generate every account of every provider (CPU-bound; run off the async threads).
fn generate_worlds(options: &SimOptions, now_us: i64) -> Vec<Vec<AccountWorld>> {
    Platform::ALL
        .iter()
        .map(|provider| {
            (0..options.accounts_of(*provider) as usize)
                .map(|account| {
                    AccountWorld::generate(
                        *provider,
                        &GenParams {
                            seed: options.seed,
                            account,
                            conversations: options.conversations,
                            now_us,
                            history_us: i64::try_from(options.history.as_micros())
                                .unwrap_or(i64::MAX / 4),
                            tie_cluster_size: options.tie_cluster_size,
                            unknown_enum_ratio: options.unknown_enum_ratio,
                        },
                    )
                })
                .collect()
        })
        .collect()
}
