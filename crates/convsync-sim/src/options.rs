//! Start-up options of the simulator (also the flags of `convsync simulate`).

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;

use super::faults::{Faults, LatencyFault, RateLimitFault, RetryAfter};
use super::platform::Platform;
use super::webhooks::WebhookFaults;

/// Order of the D365 conversation list (undocumented by Microsoft).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum D365Order {
    /// Ascending by creation timestamp (the documented ASSUMPTION; the sample is ascending).
    #[default]
    Ascending,
    /// A stable order unrelated to time, to test clients that must not assume one.
    Shuffled,
}

/// Which names of the D365 auth headers a simulated tenant accepts. Microsoft's docs name
/// them `x-ms-channel-id` / `x-ms-organization-id` in the 2025-04 version and
/// `channel-id` / `organization-id` in the 2025-09 one; which builds accept which is not
/// documented.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum D365HeaderNames {
    /// Either pair (a request carrying both is fine too).
    #[default]
    Either,
    /// Only `channel-id` / `organization-id` (the 2025-09 docs); its webhooks carry Entra
    /// access tokens in `Authorization: Bearer`, as that generation documents.
    Plain,
    /// Only `x-ms-channel-id` / `x-ms-organization-id` (the 2025-04 docs).
    #[value(name = "x-ms")]
    XMs,
}

/// Where Spruce puts conversations without `lastMessageAt` when ordering by `last_message`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MessagelessOrder {
    /// Listed first (as if infinitely old) when no `startFrom` is given; a `startFrom`
    /// excludes them, since a missing time is not ≥ any instant.
    #[default]
    First,
    /// Never listed by `orderBy=last_message`.
    Excluded,
}

/// What Sinch does when `only_active` is omitted from the list call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OnlyActiveOmitted {
    /// Both active and inactive conversations (the documented ASSUMPTION).
    #[default]
    Both,
    /// 400 INVALID_ARGUMENT, as the older spec (where it was required) implies.
    Reject,
}

/// Comparator HighLevel applies to `startAfterDate`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StartAfter {
    /// Strictly after the value: rows tied with the last row of a page are skipped,
    /// as the real API reportedly does.
    #[default]
    Strict,
    /// At or after the value: the boundary row comes back again (clients dedupe).
    Inclusive,
}

/// A latency range given on the command line as `300ms` or `100ms..2s`.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyRange(pub Duration, pub Duration);

impl FromStr for LatencyRange {
    type Err = humantime::DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once("..") {
            Some((lo, hi)) => Ok(LatencyRange(
                humantime::parse_duration(lo.trim())?,
                humantime::parse_duration(hi.trim())?,
            )),
            None => {
                let d = humantime::parse_duration(s.trim())?;
                Ok(LatencyRange(d, d))
            }
        }
    }
}

/// Everything the simulator can be told at start.
///
/// Derives `clap::Args` so that `convsync simulate` flattens it; `Default` equals the
/// command-line defaults.
#[derive(clap::Args, Clone, Debug)]
pub struct SimOptions {
    /// Seed of the world and of the activity sequence: same seed, same world, same changes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Address all listeners bind to.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// Port of the D365 listener (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub d365_port: u16,
    /// Port of the Spruce listener (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub spruce_port: u16,
    /// Port of the Sinch listener (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub sinch_port: u16,
    /// Port of the HighLevel listener (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub highlevel_port: u16,
    /// Port of the control/truth listener (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub control_port: u16,
    /// Number of D365 custom channels (accounts).
    #[arg(long, default_value_t = 1)]
    pub d365_accounts: u32,
    /// Number of Spruce organizations (accounts).
    #[arg(long, default_value_t = 1)]
    pub spruce_accounts: u32,
    /// Number of Sinch projects, each with one conversation-mode app (accounts).
    #[arg(long, default_value_t = 1)]
    pub sinch_accounts: u32,
    /// Number of HighLevel locations (accounts).
    #[arg(long, default_value_t = 2)]
    pub highlevel_locations: u32,
    /// Conversations generated per account at start (scales to 1,000,000).
    #[arg(long, default_value_t = 300)]
    pub conversations: u32,
    /// Period before "now" over which the initial conversations were created.
    #[arg(long, default_value = "30days", value_parser = humantime::parse_duration)]
    pub history: Duration,
    /// Simulated time at start (RFC 3339); default: the system clock.
    #[arg(long)]
    pub clock_start: Option<DateTime<Utc>>,
    /// Freeze the simulated clock: it moves only through the control API.
    #[arg(long)]
    pub frozen_clock: bool,
    /// Random changes per second applied by the activity generator (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub activity_rate: f64,
    /// Multiplier on the activity rate.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Size of the tie clusters placed at page boundaries (0 = none): conversations
    /// sharing one exact last-activity (and creation) timestamp.
    #[arg(long, default_value_t = 0)]
    pub tie_cluster_size: u32,
    /// Fraction of conversations with a channel/type value the docs do not list.
    #[arg(long, default_value_t = 0.02)]
    pub unknown_enum_ratio: f64,
    /// Lifetime of issued access tokens (D365, Sinch, HighLevel).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,

    /// D365: order of the conversation list.
    #[arg(long, value_enum, default_value_t = D365Order::Ascending)]
    pub d365_order: D365Order,
    /// D365: end every walk with an empty page that still carries a continuation token.
    #[arg(long)]
    pub d365_trailing_empty_page: bool,
    /// D365: treat `StartTimeStamp` as "created at or after" instead of strictly after.
    #[arg(long)]
    pub d365_start_inclusive: bool,
    /// D365: which names of the channel/organization headers the tenant accepts.
    #[arg(long, value_enum, default_value_t = D365HeaderNames::Either)]
    pub d365_header_names: D365HeaderNames,

    /// Spruce: send `"lastMessageAt": null` instead of omitting it for empty conversations.
    #[arg(long)]
    pub spruce_null_last_message_at: bool,
    /// Spruce: placement of message-less conversations in `orderBy=last_message`.
    #[arg(long, value_enum, default_value_t = MessagelessOrder::First)]
    pub spruce_messageless_order: MessagelessOrder,
    /// Spruce: make the items `startFrom` strictly "after" (default: inclusive).
    #[arg(long)]
    pub spruce_items_start_exclusive: bool,
    /// Spruce: requests per minute per organization (`s-ratelimit-limit`).
    #[arg(long, default_value_t = 1000)]
    pub spruce_rate_limit: u32,
    /// Spruce: daily request quota per organization; enables the daily header pair.
    #[arg(long)]
    pub spruce_daily_limit: Option<u32>,
    /// Spruce: page size used when `pageSize` is omitted (undocumented).
    #[arg(long, default_value_t = 50)]
    pub spruce_default_page_size: u32,

    /// Sinch: behaviour when `only_active` is omitted.
    #[arg(long, value_enum, default_value_t = OnlyActiveOmitted::Both)]
    pub sinch_only_active_omitted: OnlyActiveOmitted,
    /// Sinch: give each project a second app in DISPATCH mode (it lists no conversations).
    #[arg(long)]
    pub sinch_dispatch_app: bool,
    /// Sinch: refuse Basic auth on data calls (default: accepted, as the real API does,
    /// and visible in the request counters).
    #[arg(long)]
    pub sinch_reject_basic_auth: bool,

    /// HighLevel: comparator applied to `startAfterDate`.
    #[arg(long, value_enum, default_value_t = StartAfter::Strict)]
    pub highlevel_start_after: StartAfter,
    /// HighLevel: burst quota per location (`X-RateLimit-Max`).
    #[arg(long, default_value_t = 100)]
    pub highlevel_burst_limit: u32,
    /// HighLevel: burst window (`X-RateLimit-Interval-Milliseconds`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub highlevel_burst_window: Duration,
    /// HighLevel: daily quota per location (`X-RateLimit-Limit-Daily`).
    #[arg(long, default_value_t = 200_000)]
    pub highlevel_daily_limit: u32,
    /// HighLevel: largest `limit` honoured (larger values are clamped silently).
    #[arg(long, default_value_t = 100)]
    pub highlevel_max_limit: u32,
    /// HighLevel: search results without their `sort` array (as in older recordings).
    #[arg(long)]
    pub highlevel_no_sort_array: bool,
    /// HighLevel: search results without `lastMessageDate` (the `sort` array still carries
    /// each row's position), to show which of the two a client pages by.
    #[arg(long)]
    pub highlevel_no_last_message_date: bool,

    /// Providers the `--fault-*` flags below apply to (default: all).
    #[arg(long, value_delimiter = ',')]
    pub fault_providers: Vec<Platform>,
    /// Fault: requests allowed per `--fault-rate-window` before answering 429.
    #[arg(long)]
    pub fault_rate_limit: Option<u32>,
    /// Fault: window of `--fault-rate-limit`.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub fault_rate_window: Duration,
    /// Fault: `Retry-After` style on 429 (default: seconds for D365, none elsewhere).
    #[arg(long, value_enum)]
    pub fault_retry_after: Option<RetryAfter>,
    /// Fault: fraction of requests answered with a 5xx.
    #[arg(long, default_value_t = 0.0)]
    pub fault_5xx_ratio: f64,
    /// Fault: added latency, `300ms` or a range `100ms..2s`.
    #[arg(long)]
    pub fault_latency: Option<LatencyRange>,
    /// Fault: fraction of requests whose connection is dropped without a response.
    #[arg(long, default_value_t = 0.0)]
    pub fault_reset_ratio: f64,
    /// Fault: fraction of 200 responses with a truncated JSON body.
    #[arg(long, default_value_t = 0.0)]
    pub fault_malformed_ratio: f64,
    /// Fault: page tokens expire after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub page_token_ttl: Option<Duration>,
    /// Fault: changes become visible in listings only after this delay.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub consistency_delay: Option<Duration>,
    /// Fault: fraction of generated messages stamped in the future.
    #[arg(long, default_value_t = 0.0)]
    pub future_timestamp_ratio: f64,
    /// Fault: how far in the future such timestamps are.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub future_skew: Duration,

    /// Webhooks: send every account's signed events to `{base}{provider}-{i}` (HighLevel:
    /// `{base}highlevel`), the source names of the printed configuration. Loopback
    /// `http://127.x.x.x` or `http://[::1]` only.
    #[arg(long)]
    pub webhook_base: Option<url::Url>,
    /// Webhooks: events waiting to be sent at most (more are lost, and counted).
    #[arg(long, default_value_t = 10_000)]
    pub webhook_queue_cap: usize,
    /// Webhooks: events in flight at once (1 sends strictly in order, as the providers do;
    /// more loads a receiver harder).
    #[arg(long, default_value_t = 1)]
    pub webhook_concurrency: usize,
    /// Webhooks: multiplier on the providers' retry intervals (Spruce: 2 min).
    #[arg(long, default_value_t = 1.0)]
    pub webhook_retry_scale: f64,
    /// Webhooks: retries waiting at once at most (a failure beyond it is final).
    #[arg(long, default_value_t = 1_000)]
    pub webhook_max_pending_retries: usize,
    /// Webhook fault: fraction of events never sent.
    #[arg(long, default_value_t = 0.0)]
    pub webhook_drop_ratio: f64,
    /// Webhook fault: fraction of events sent twice.
    #[arg(long, default_value_t = 0.0)]
    pub webhook_duplicate_ratio: f64,
    /// Webhook fault: fraction of events sent `--webhook-delay` late.
    #[arg(long, default_value_t = 0.0)]
    pub webhook_delay_ratio: f64,
    /// Webhook fault: how late a delayed event is sent.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub webhook_delay: Duration,
    /// Webhook fault: fraction of events swapped with the next one.
    #[arg(long, default_value_t = 0.0)]
    pub webhook_reorder_ratio: f64,
    /// Webhook fault: fraction of events preceded by a forged copy (bad signature).
    #[arg(long, default_value_t = 0.0)]
    pub webhook_forge_ratio: f64,
    /// Webhook fault: fraction of events followed by a replayed copy with old timestamps.
    #[arg(long, default_value_t = 0.0)]
    pub webhook_replay_ratio: f64,
    /// Webhook fault: age of a replayed copy.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub webhook_replay_age: Duration,
    /// Webhook fault: fraction of events padded to `--webhook-oversize-bytes`.
    #[arg(long, default_value_t = 0.0)]
    pub webhook_oversize_ratio: f64,
    /// Webhook fault: size of an oversized body.
    #[arg(long, default_value_t = 2 << 20)]
    pub webhook_oversize_bytes: u64,
}

/// Wrapper so that `Default` can reuse clap's defaults (one source of truth).
#[derive(Parser)]
struct DefaultsOnly {
    #[command(flatten)]
    options: SimOptions,
}

impl Default for SimOptions {
    fn default() -> Self {
        DefaultsOnly::parse_from(["simulate"]).options
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl SimOptions {
    /// The webhook faults `provider` starts with, from the `--webhook-*` flags (limited to
    /// `--fault-providers` like the other faults).
    pub fn initial_webhook_faults(&self, provider: Platform) -> WebhookFaults {
        if !self.fault_providers.is_empty() && !self.fault_providers.contains(&provider) {
            return WebhookFaults::default();
        }
        WebhookFaults {
            drop_ratio: self.webhook_drop_ratio,
            duplicate_ratio: self.webhook_duplicate_ratio,
            delay_ratio: self.webhook_delay_ratio,
            delay_ms: ms(self.webhook_delay),
            reorder_ratio: self.webhook_reorder_ratio,
            forge_ratio: self.webhook_forge_ratio,
            replay_ratio: self.webhook_replay_ratio,
            replay_age_ms: ms(self.webhook_replay_age),
            oversize_ratio: self.webhook_oversize_ratio,
            oversize_bytes: self.webhook_oversize_bytes,
        }
    }

    /// Number of accounts configured for `provider`.
    pub fn accounts_of(&self, provider: Platform) -> u32 {
        match provider {
            Platform::D365 => self.d365_accounts,
            Platform::Spruce => self.spruce_accounts,
            Platform::Sinch => self.sinch_accounts,
            Platform::HighLevel => self.highlevel_locations,
        }
    }

    /// The faults `provider` starts with, from the `--fault-*` flags.
    pub fn initial_faults(&self, provider: Platform) -> Faults {
        if !self.fault_providers.is_empty() && !self.fault_providers.contains(&provider) {
            return Faults::default();
        }
        let default_retry_after = if provider == Platform::D365 {
            RetryAfter::Seconds
        } else {
            RetryAfter::None
        };
        Faults {
            rate_limit: self.fault_rate_limit.map(|max_requests| RateLimitFault {
                max_requests,
                window_ms: ms(self.fault_rate_window),
                retry_after: self.fault_retry_after.unwrap_or(default_retry_after),
            }),
            error_5xx_ratio: self.fault_5xx_ratio,
            latency: self.fault_latency.as_ref().map(|r| LatencyFault {
                min_ms: ms(r.0),
                max_ms: ms(r.1),
            }),
            reset_ratio: self.fault_reset_ratio,
            malformed_ratio: self.fault_malformed_ratio,
            page_token_ttl_ms: self.page_token_ttl.map(ms),
            access_token_ttl_ms: None,
            consistency_delay_ms: self.consistency_delay.map_or(0, ms),
            future_timestamp_ratio: self.future_timestamp_ratio,
            future_skew_ms: ms(self.future_skew),
            include_token_endpoints: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_assumptions() {
        let o = SimOptions::default();
        assert_eq!(o.highlevel_locations, 2);
        assert_eq!(o.d365_order, D365Order::Ascending);
        assert_eq!(o.highlevel_start_after, StartAfter::Strict);
        assert_eq!(
            o.initial_faults(Platform::Sinch),
            Faults {
                future_skew_ms: 300_000,
                ..Faults::default()
            }
        );
        assert_eq!(
            "100ms..2s".parse::<LatencyRange>().ok(),
            Some(LatencyRange(
                Duration::from_millis(100),
                Duration::from_secs(2)
            ))
        );
    }
}
