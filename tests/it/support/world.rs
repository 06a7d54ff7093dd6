//! Simulated worlds the tests start: one provider's accounts and nothing else, on a frozen
//! clock with no background activity, so that only the test changes the world.

use convsync_sim::{Platform, SimHandle, SimOptions, Simulator};

/// Simulator options serving `accounts` accounts of `provider` only (frozen clock, no
/// activity); a test sets the seed, the size and anything else on top.
pub fn one_provider(provider: Platform, accounts: u32) -> SimOptions {
    let count = |p: Platform| if p == provider { accounts } else { 0 };
    SimOptions {
        frozen_clock: true,
        activity_rate: 0.0,
        d365_accounts: count(Platform::D365),
        spruce_accounts: count(Platform::Spruce),
        sinch_accounts: count(Platform::Sinch),
        highlevel_locations: count(Platform::HighLevel),
        ..SimOptions::default()
    }
}

/// A started simulator over [`one_provider`] with `seed` and `conversations`: the whole set-up
/// of a test bed that needs nothing else from the simulator.
pub async fn start_one_provider(
    provider: Platform,
    accounts: u32,
    seed: u64,
    conversations: u32,
) -> SimHandle {
    start_one_provider_tuned(provider, accounts, seed, conversations, |_| {}).await
}

/// As [`start_one_provider`], with the options changed by `tune` before the start.
pub async fn start_one_provider_tuned(
    provider: Platform,
    accounts: u32,
    seed: u64,
    conversations: u32,
    tune: impl FnOnce(&mut SimOptions),
) -> SimHandle {
    let mut options = SimOptions {
        seed,
        conversations,
        ..one_provider(provider, accounts)
    };
    tune(&mut options);
    Simulator::start(options).await.expect("simulator starts")
}
