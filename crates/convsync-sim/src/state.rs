//! State shared by one provider's listener: its accounts, tokens, cursors, faults.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::StatusCode;
use axum::response::Response;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use url::Url;

use super::accounts::SimAccounts;
use super::clock::SimClock;
use super::counters::RequestCounters;
use super::cursors::CursorStore;
use super::faults::{FaultState, Faults};
use super::ids::hash_all;
use super::options::SimOptions;
use super::platform::Platform;
use super::quota::Quota;
use super::tokens::TokenStore;
use super::webhooks::WebhookHub;
use super::world::AccountWorld;

/// Renders an error in the provider's own shape (used by the fault layer).
pub(crate) type ErrorRenderer = fn(StatusCode, &str) -> Response;

/// Mutable state of one provider, behind a single lock (requests are short).
pub(crate) struct PlatformState {
    pub(crate) accounts: Vec<AccountWorld>,
    pub(crate) tokens: TokenStore,
    pub(crate) cursors: CursorStore,
    /// Native rate-limit quotas per account (Spruce, HighLevel).
    pub(crate) quotas: HashMap<usize, Quota>,
    /// Randomness for page tokens and request ids.
    pub(crate) rng: StdRng,
    /// HighLevel: the locations the app has been uninstalled from (every location starts
    /// installed).
    pub(crate) uninstalled: HashSet<usize>,
}

impl PlatformState {
    /// A random 64-bit value (page tokens, request ids).
    pub(crate) fn random_u64(&mut self) -> u64 {
        self.rng.random()
    }
}

/// What every provider listener shares with the rest of the simulator.
#[derive(Clone)]
pub(crate) struct SimContext {
    pub(crate) options: Arc<SimOptions>,
    pub(crate) accounts: Arc<SimAccounts>,
    pub(crate) clock: SimClock,
    pub(crate) counters: Arc<RequestCounters>,
    pub(crate) webhooks: Arc<WebhookHub>,
}

/// Everything a provider's handlers need.
pub(crate) struct Shared {
    pub(crate) provider: Platform,
    pub(crate) options: Arc<SimOptions>,
    pub(crate) accounts: Arc<SimAccounts>,
    pub(crate) clock: SimClock,
    pub(crate) counters: Arc<RequestCounters>,
    /// Where this provider's changes become webhook events.
    pub(crate) webhooks: Arc<WebhookHub>,
    pub(crate) faults: Mutex<FaultState>,
    pub(crate) state: Mutex<PlatformState>,
    /// Public base URL of this provider's listener (for `apiURL`-style links).
    pub(crate) base_url: Url,
    pub(crate) render_error: ErrorRenderer,
}

impl Shared {
    pub(crate) fn new(
        provider: Platform,
        context: &SimContext,
        worlds: Vec<AccountWorld>,
        base_url: Url,
        render_error: ErrorRenderer,
    ) -> Shared {
        let SimContext {
            options,
            accounts,
            clock,
            counters,
            webhooks,
        } = context.clone();
        let seed = hash_all(&[options.seed, provider.index() as u64, 0x5EED]);
        Shared {
            provider,
            faults: Mutex::new(FaultState::new(options.initial_faults(provider), seed ^ 1)),
            state: Mutex::new(PlatformState {
                accounts: worlds,
                tokens: TokenStore::new(seed ^ 2),
                cursors: CursorStore::default(),
                quotas: HashMap::new(),
                rng: StdRng::seed_from_u64(seed ^ 3),
                uninstalled: HashSet::new(),
            }),
            options,
            accounts,
            clock,
            counters,
            webhooks,
            base_url,
            render_error,
        }
    }

    /// Lock the state with every due change published (poisoning is ignored: state
    /// updates are single assignments that cannot be left half-done by a panic).
    pub(crate) fn lock(&self) -> MutexGuard<'_, PlatformState> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now_us();
        for world in &mut state.accounts {
            world.settle(now);
        }
        state
    }

    /// Lock the fault state.
    pub(crate) fn fault_state(&self) -> MutexGuard<'_, FaultState> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Current fault configuration.
    pub(crate) fn faults(&self) -> Faults {
        self.fault_state().faults.clone()
    }

    /// Lifetime of a newly issued access token, in µs.
    pub(crate) fn token_ttl_us(&self) -> i64 {
        match self.faults().access_token_ttl_ms {
            Some(ms) => super::clock::ms_to_us(ms),
            None => i64::try_from(self.options.token_ttl.as_micros()).unwrap_or(i64::MAX / 2),
        }
    }

    /// Page-token lifetime, in µs (None = forever).
    pub(crate) fn page_token_ttl_us(&self) -> Option<i64> {
        self.faults().page_token_ttl_ms.map(super::clock::ms_to_us)
    }
}
