//! `convsync status`: one block per source, read from the database.

use std::fmt::Write;

use crate::config::Config;
use crate::store::{Store, StoreError};
use crate::time::Timestamp;

/// Renders the status of every configured source as text.
pub async fn render(store: &Store, config: &Config, now: Timestamp) -> Result<String, StoreError> {
    let mut out = String::new();
    let names = config
        .sources
        .iter()
        .map(|s| (s.name.as_str(), Some(s)))
        .chain(config.disabled_sources.iter().map(|n| (n.as_str(), None)));
    for (name, settings) in names {
        let status = store.source_status(name).await?;
        let kind = settings
            .map(|s| s.setup.provider.kind().as_str())
            .unwrap_or("disabled");
        let _ = writeln!(out, "{name} ({kind})");
        let _ = writeln!(
            out,
            "  rows: {} ({} open), follow-ups queued: {}",
            status.rows, status.active_rows, status.pending_follow_ups
        );
        for (walk, cursor) in &status.cursors {
            let watermark = match cursor.watermark {
                Some(w) => format!(
                    "{w} (lag {})",
                    humantime::format_duration(round_secs(w.elapsed_until(now)))
                ),
                None => "-".into(),
            };
            let state = if cursor.in_progress() {
                ", walk in progress"
            } else {
                ""
            };
            let completed = cursor
                .last_completed_at
                .map(|t| format!(", last completed {t}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  walk {walk:<10} watermark {watermark}{completed}{state}"
            );
        }
        match &status.last_run {
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
        if let Some(crate::http::AuthScheme::RotatingRefresh(rr)) = settings.map(|s| &s.setup.auth)
        {
            let _ = writeln!(out, "{}", refresh_token_line(store, rr, name, now).await?);
        }
        if let (Some(settings), Some(last)) = (settings, status.last_success_at) {
            let next = last.saturating_add(settings.schedule.poll_interval);
            let _ = writeln!(
                out,
                "  next poll due: {}",
                if next <= now {
                    "now".to_owned()
                } else {
                    next.to_string()
                }
            );
        }
    }
    Ok(out)
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

fn round_secs(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs(d.as_secs())
}
