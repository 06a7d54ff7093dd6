//! Requests to a complete first mirror and per delta, next to the minimum each API allows,
//! and what they mean in time under the provider's rate limit (issue #17): a provider's
//! limit, not CPU, decides how long a first sync takes, so the counts are the figure.
//!
//! The minimum is ⌈rows / maximum page⌉ per listing the provider needs, plus the follow-ups
//! the mirror requires, plus token requests; rows come from the simulator's truth, not
//! from the mirror being measured.

use std::time::Duration;

use convsync_sim::{ConversationState, Platform, TruthConversation};

/// Requests by kind, as the simulator counted them or as the minimum allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub listing: u64,
    pub follow_ups: u64,
    pub tokens: u64,
}

impl Requests {
    /// The requests the provider's data limit counts (token endpoints are not data
    /// requests and carry no published limit).
    pub fn data(&self) -> u64 {
        self.listing + self.follow_ups
    }
}

impl std::fmt::Display for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} + {}", self.listing, self.follow_ups)?;
        if self.tokens > 0 {
            write!(f, " + {} token", self.tokens)?;
        }
        Ok(())
    }
}

/// The rate limit a first mirror is paced by: the provider's documented one, or the budget
/// convsync ships when the provider publishes none.
pub struct Limit {
    pub requests: u32,
    pub per: Duration,
    pub text: &'static str,
}

impl Limit {
    pub fn of(provider: Platform) -> Limit {
        match provider {
            Platform::D365 => Limit {
                requests: 300,
                per: Duration::from_secs(60),
                text: "300/min (default budget; Microsoft publishes none)",
            },
            Platform::Spruce => Limit {
                requests: 100,
                per: Duration::from_secs(60),
                text: "100/min (issue #17's figure; Spruce publishes none)",
            },
            Platform::Sinch => Limit {
                requests: 200,
                per: Duration::from_secs(1),
                text: "200/s (default budget; Sinch allows 800/s per project)",
            },
            Platform::HighLevel => Limit {
                requests: 100,
                per: Duration::from_secs(10),
                text: "100/10 s per location (documented)",
            },
        }
    }

    /// How long `requests` take at this limit, pacing evenly from the first request.
    pub fn time(&self, requests: u64) -> Duration {
        let per_request = self.per.as_secs_f64() / f64::from(self.requests);
        Duration::from_secs_f64(requests as f64 * per_request)
    }
}

/// The largest page each provider's listing allows (what convsync asks for by default).
pub fn max_page_size(provider: Platform) -> u64 {
    match provider {
        Platform::D365 => 250,
        Platform::Spruce => 200,
        // conversations:recent; the inventory sweep lists 20 per page.
        Platform::Sinch => 50,
        Platform::HighLevel => 100,
    }
}

/// Sinch's `/conversations` page (the inventory sweep).
const SINCH_LIST_PAGE: u64 = 20;

/// Spruce's default `reply_state_horizon`: items are read only for open conversations
/// active within it.
const SPRUCE_HORIZON: chrono::TimeDelta = chrono::TimeDelta::days(30);

/// ⌈rows / page⌉, at least one request (an empty listing is still one answer).
fn pages(rows: u64, page: u64) -> u64 {
    rows.div_ceil(page).max(1)
}

/// The fewest requests a first mirror of `truth` can cost with this API, for a first sync
/// that began `at` (Spruce's horizon is measured from there: that is when the listing
/// decides which conversations need their items read).
///
/// - D365: one listing of the active conversations and a token.
/// - Spruce: one listing, one page of the `activity` delta from the listing's start (the
///   messages sent while it ran), and an items request per open conversation active
///   within the horizon (who spoke last is not in the listing).
/// - Sinch: `:recent` (the only listing naming who spoke last) and both halves of
///   `/conversations` (the only listing documented to hold inactive and message-less
///   conversations), and a token.
/// - HighLevel: one listing at 100 a page (convsync's ⌈N / 99⌉ re-reads each page's
///   boundary row so that a tie is never lost; docs/providers/highlevel.md).
pub fn first_sync_minimum(
    provider: Platform,
    truth: &[TruthConversation],
    at: chrono::DateTime<chrono::Utc>,
) -> Requests {
    let live: Vec<&TruthConversation> = truth.iter().filter(|t| !t.deleted).collect();
    let n = live.len() as u64;
    let active = live
        .iter()
        .filter(|t| t.state == ConversationState::Active)
        .count() as u64;
    let page = max_page_size(provider);
    match provider {
        Platform::D365 => Requests {
            listing: pages(active, page),
            follow_ups: 0,
            tokens: 1,
        },
        Platform::Spruce => {
            let since = at - SPRUCE_HORIZON;
            let inside = live
                .iter()
                .filter(|t| {
                    t.state != ConversationState::Archived
                        && t.last_activity_at.unwrap_or(t.created_at) >= since
                })
                .count() as u64;
            Requests {
                listing: pages(n, page) + 1,
                follow_ups: inside,
                tokens: 0,
            }
        }
        Platform::Sinch => Requests {
            listing: pages(n, page)
                + pages(active, SINCH_LIST_PAGE)
                + pages(n - active, SINCH_LIST_PAGE),
            follow_ups: 0,
            tokens: 1,
        },
        Platform::HighLevel => Requests {
            listing: pages(n, page),
            follow_ups: 0,
            tokens: 0,
        },
    }
}

/// The fewest requests a delta of `changed` conversations can cost in a fresh process
/// (`sync --once`, so a token where the provider needs one), not counting the rows inside
/// the lookback a delta re-reads on purpose (shown beside it as "re-read unchanged"): D365
/// filters by creation time on the server; the others stop at the first row at or below
/// the watermark, one row more; Spruce's `created` walk costs its one page, and every
/// changed conversation is open and active, so it needs its items request.
pub fn delta_minimum(provider: Platform, changed: u64) -> Requests {
    let page = max_page_size(provider);
    match provider {
        Platform::D365 => Requests {
            listing: pages(changed, page),
            follow_ups: 0,
            tokens: 1,
        },
        Platform::Spruce => Requests {
            listing: pages(changed + 1, page) + 1,
            follow_ups: changed,
            tokens: 0,
        },
        Platform::Sinch => Requests {
            listing: pages(changed + 1, page),
            follow_ups: 0,
            tokens: 1,
        },
        Platform::HighLevel => Requests {
            listing: pages(changed + 1, page),
            follow_ups: 0,
            tokens: 0,
        },
    }
}

/// A first mirror's cost, measured and minimal.
pub struct FirstMirror {
    pub provider: Platform,
    pub size: u32,
    pub measured: Requests,
    pub minimum: Requests,
}

/// Seconds, minutes or hours, whichever reads best.
fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

pub fn print_first_mirrors(samples: &[FirstMirror]) {
    if samples.is_empty() {
        return;
    }
    println!("### Requests to a complete first mirror (listing + follow-ups [+ token])\n");
    println!(
        "| provider | N | requests | minimum | limit | time to every row listed | time to complete mirror | at the minimum |"
    );
    println!("|---|---:|---:|---:|---|---:|---:|---:|");
    for s in samples {
        let limit = Limit::of(s.provider);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            s.provider,
            s.size,
            s.measured,
            s.minimum,
            limit.text,
            human(limit.time(s.measured.listing)),
            human(limit.time(s.measured.data())),
            human(limit.time(s.minimum.data())),
        );
    }
    println!();
}
