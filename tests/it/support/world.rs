//! Simulated worlds the tests start: one provider's accounts and nothing else, on a frozen
//! clock with no background activity, so that only the test changes the world.

use convsync_sim::{Platform, SimOptions};

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
