//! `convsync status`: one block per source (or JSON for scripts), read from the database
//! alone: every configured source, and every source the database holds rows for that is
//! no longer configured.

use std::collections::HashMap;
use std::fmt::Write;

use serde::Serialize;

use crate::app::unconfigured;
use crate::config::ConfiguredSource;
use crate::http::auth::RotatingRefresh;
use crate::store::{BackendKind, LastRun, Store, StoreError};
use crate::sync::WalkCursor;
use crate::time::Timestamp;

/// The whole status, as `status --json` prints it.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// When it was taken.
    pub now: Timestamp,
    /// One entry per source.
    pub sources: Vec<SourceReport>,
}

/// One source's status.
#[derive(Debug, Serialize)]
pub struct SourceReport {
    /// Source name.
    pub name: String,
    /// Provider, from the configuration (`None` when not configured).
    pub provider: Option<String>,
    /// `enabled`, `disabled` or `not configured`.
    pub state: &'static str,
    /// Rows not deleted.
    pub rows: u64,
    /// Open rows.
    pub open_rows: u64,
    /// Follow-ups waiting.
    pub follow_ups_queued: u64,
    /// Each walk's standing.
    pub walks: Vec<WalkReport>,
    /// The newest cycle.
    pub last_run: Option<LastRun>,
    /// When the next cycle is due (enabled sources with a successful cycle).
    pub next_poll_due: Option<Timestamp>,
    /// Where a rotating OAuth refresh token (HighLevel) stands, with a warning when an
    /// operator must act; `None` for other credentials, or when the secrets that name the
    /// token could not be read here.
    pub refresh_token: Option<String>,
    /// On PostgreSQL, which replica runs the source (it holds the lease on its rate-limit
    /// scope) and since when; `None` on SQLite, whose file has one daemon.
    pub lease: Option<SourceLease>,
}

/// Which replica holds the lease on a source's rate-limit scope.
#[derive(Debug, Clone, Serialize)]
pub struct SourceLease {
    /// The rate-limit scope (`None` when no replica has registered the source yet).
    pub scope: Option<String>,
    /// The replica holding it; `None` when unowned.
    pub owner: Option<String>,
    /// When the owner claimed it.
    pub since: Option<Timestamp>,
    /// The lease's epoch (raised by every claim).
    pub epoch: i64,
    /// Whether the lease expired (its owner stopped renewing it) and awaits a claim.
    pub expired: bool,
}

/// One walk's standing.
#[derive(Debug, Serialize)]
pub struct WalkReport {
    /// Walk name.
    pub walk: String,
    /// Everything at or before this is mirrored.
    pub watermark: Option<Timestamp>,
    /// Seconds from the watermark to now.
    pub lag_seconds: Option<u64>,
    /// When it last completed.
    pub last_completed_at: Option<Timestamp>,
    /// Whether a walk is under way (resumed by the next cycle).
    pub in_progress: bool,
}

/// Collects the status of every configured source and every unconfigured one the database
/// holds. `refresh` holds the rotating refresh-token schemes by source name, when the
/// configuration's secrets could be read (the vault key includes a token's fingerprint).
pub async fn collect(
    store: &Store,
    configured: &[ConfiguredSource],
    refresh: &HashMap<String, RotatingRefresh>,
    now: Timestamp,
) -> Result<StatusReport, StoreError> {
    let orphans = unconfigured(configured, store.stored_sources().await?);
    let names = configured
        .iter()
        .map(|c| (c.name.clone(), Some(c)))
        .chain(orphans.map(|s| (s.name, None)))
        .collect::<Vec<_>>();
    let leases = leases_by_source(store).await?;
    let mut sources = Vec::with_capacity(names.len());
    for (name, settings) in names {
        let status = store.source_status(&name).await?;
        let mut cursors: Vec<_> = WalkCursor::load_all(store, &name)
            .await?
            .into_iter()
            .collect();
        cursors.sort_by(|a, b| a.0.cmp(&b.0));
        let walks = cursors
            .iter()
            .map(|(walk, cursor)| WalkReport {
                walk: walk.clone(),
                watermark: cursor.watermark,
                lag_seconds: cursor.watermark.map(|w| w.elapsed_until(now).as_secs()),
                last_completed_at: cursor.last_completed_at,
                in_progress: cursor.in_progress(),
            })
            .collect();
        let next_poll_due = match (settings, status.last_success_at) {
            (Some(c), Some(last)) if c.enabled => c
                .poll_interval
                .map(|interval| last.saturating_add(interval)),
            _ => None,
        };
        let refresh_token = match refresh.get(&name) {
            Some(rr) => Some(refresh_token_line(store, rr, &name, now).await?),
            None => None,
        };
        let lease = leases.as_ref().map(|by_source| {
            by_source.get(&name).cloned().unwrap_or(SourceLease {
                scope: None,
                owner: None,
                since: None,
                epoch: 0,
                expired: false,
            })
        });
        sources.push(SourceReport {
            lease,
            refresh_token,
            name,
            provider: settings.map(|c| c.provider.clone()),
            state: match settings {
                Some(c) if c.enabled => "enabled",
                Some(_) => "disabled",
                None => "not configured",
            },
            rows: status.rows,
            open_rows: status.active_rows,
            follow_ups_queued: status.pending_follow_ups,
            walks,
            last_run: status.last_run,
            next_poll_due,
        });
    }
    Ok(StatusReport { now, sources })
}

/// Each source's lease, on a backend with leases (PostgreSQL); `None` on SQLite.
async fn leases_by_source(
    store: &Store,
) -> Result<Option<HashMap<String, SourceLease>>, StoreError> {
    if store.kind() != BackendKind::Postgres {
        return Ok(None);
    }
    let mut by_source = HashMap::new();
    for lease in store.lease_owners().await? {
        for source in &lease.sources {
            by_source.insert(
                source.clone(),
                SourceLease {
                    scope: Some(lease.scope.clone()),
                    owner: lease.owner.clone(),
                    since: lease.owner.as_ref().and(lease.acquired_at),
                    epoch: lease.epoch,
                    expired: lease.expired,
                },
            );
        }
    }
    Ok(Some(by_source))
}

/// The text line of a source's lease.
fn lease_line(lease: &SourceLease) -> String {
    match (&lease.owner, lease.since) {
        (Some(owner), _) if lease.expired => format!(
            "  replica: {owner} (lease EXPIRED: it stopped renewing; another replica takes the source over)"
        ),
        (Some(owner), Some(since)) => {
            format!("  replica: {owner} since {since} (epoch {})", lease.epoch)
        }
        (Some(owner), None) => format!("  replica: {owner} (epoch {})", lease.epoch),
        (None, _) => "  replica: unowned (no replica runs it now)".to_owned(),
    }
}

/// Renders the status as text.
pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    for source in &report.sources {
        let kind = match (source.state, &source.provider) {
            ("enabled", Some(provider)) => provider.clone(),
            ("disabled", _) => "disabled".to_owned(),
            _ => "NOT CONFIGURED: `convsync sources rename` or `convsync sources forget` it"
                .to_owned(),
        };
        let _ = writeln!(out, "{} ({kind})", source.name);
        if let Some(lease) = &source.lease {
            let _ = writeln!(out, "{}", lease_line(lease));
        }
        let _ = writeln!(
            out,
            "  rows: {} ({} open), follow-ups queued: {}",
            source.rows, source.open_rows, source.follow_ups_queued
        );
        for walk in &source.walks {
            let watermark = match (walk.watermark, walk.lag_seconds) {
                (Some(w), Some(lag)) => format!(
                    "{w} (lag {})",
                    humantime::format_duration(std::time::Duration::from_secs(lag))
                ),
                _ => "-".into(),
            };
            let state = if walk.in_progress {
                ", walk in progress"
            } else {
                ""
            };
            let completed = walk
                .last_completed_at
                .map(|t| format!(", last completed {t}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  walk {:<10} watermark {watermark}{completed}{state}",
                walk.walk
            );
        }
        match &source.last_run {
            Some(run) => {
                let _ = writeln!(
                    out,
                    "  last run #{}: {} started {} finished {} rows changed {}{}",
                    run.id,
                    run.outcome,
                    run.started_at,
                    run.finished_at.as_deref().unwrap_or("-"),
                    run.rows_changed,
                    run.error
                        .as_deref()
                        .map(|e| format!("\n    error: {e}"))
                        .unwrap_or_default()
                );
            }
            None => {
                let _ = writeln!(out, "  never synced");
            }
        }
        if let Some(line) = &source.refresh_token {
            let _ = writeln!(out, "{line}");
        }
        if let Some(next) = source.next_poll_due {
            let _ = writeln!(
                out,
                "  next poll due: {}",
                if next <= report.now {
                    "now".to_owned()
                } else {
                    next.to_string()
                }
            );
        }
    }
    out
}

/// Where the source's rotating refresh token stands: when it expires unused, and whether
/// an operator must act.
async fn refresh_token_line(
    store: &Store,
    rr: &crate::http::auth::RotatingRefresh,
    name: &str,
    now: Timestamp,
) -> Result<String, StoreError> {
    let Some(stored) = store.load_refresh_token(&rr.vault_key).await? else {
        return Ok("  refresh token: the configured one, not used yet".into());
    };
    let recover = format!(
        "re-authorise the app, then `convsync credentials set-refresh-token --source {name}`"
    );
    if let Some(refusal) = stored.refused {
        return Ok(format!(
            "  refresh token: REFUSED at {}{}; {recover}",
            refusal.at,
            if refusal.after_lost_answer {
                " after the answer to a refresh was lost"
            } else {
                ""
            }
        ));
    }
    let expires_at = rr.expires_at(stored.issued_at);
    let mut line = format!(
        "  refresh token: issued {}, expires unused at {expires_at}",
        stored.issued_at
    );
    if let Some(sent_at) = stored.sent_at {
        let _ = write!(
            line,
            "; the answer to the refresh sent at {sent_at} was lost"
        );
    }
    if rr.expiry_is_near(stored.issued_at, now) {
        let _ = write!(
            line,
            "\n    WARNING: it expires in {} days unless convsync refreshes it: start convsync, or \
             {recover}",
            if expires_at > now {
                now.elapsed_until(expires_at).as_secs() / (24 * 3600)
            } else {
                0
            }
        );
    }
    Ok(line)
}
