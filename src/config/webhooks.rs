//! `[webhooks]`: the receiver's listener and its bounds (docs/webhooks.md). Off by
//! default: the receiver runs only when `listen` is set. Which sources take events is the
//! sources' own business (their webhook key, in the provider's section).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config_error::ConfigError;

/// The most connections `max_connections` may allow: each takes a file descriptor.
const MAX_CONNECTIONS: usize = 4096;
/// The smallest `max_body_bytes`: below this a Spruce envelope (a whole conversation)
/// would not fit.
const MIN_BODY_BYTES: usize = 16 * 1024;
/// The largest `max_body_bytes`: bodies are held in memory while they are checked.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// The shortest `dedupe_retention`: HighLevel retries a 429 up to 6 times about 10 minutes
/// apart (about 70 minutes), Spruce every 2 minutes 10 times (20 minutes); the dedupe key
/// must outlive every retry.
const MIN_DEDUPE_RETENTION: Duration = Duration::from_secs(2 * 3600);

/// `[webhooks]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Listen address (`127.0.0.1:9478`, behind the TLS-terminating reverse proxy); unset:
    /// no receiver. Never the health port.
    pub listen: Option<String>,
    /// The largest request body accepted; larger ones are answered 413 unread. Spruce's
    /// envelopes carry a whole conversation, so the default leaves room (1 MiB).
    pub max_body_bytes: usize,
    /// A connection that has not sent a whole request within this time is closed.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Connections served at once; further clients wait in the listen queue.
    pub max_connections: usize,
    /// Events whose sending time is further than this from now (either way) are refused
    /// as replays (answered 400 and counted, nothing written).
    #[serde(with = "humantime_serde")]
    pub replay_window: Duration,
    /// How long an accepted event's id is kept for dedupe. Longer than every provider's
    /// retry horizon (HighLevel retries up to about 70 minutes, Spruce 20 minutes, D365 a
    /// few 10 s attempts), so a late retry of an applied event is still recognised; the
    /// `[retention]` purge removes older ids. Default 7 days, at least 2 hours.
    #[serde(with = "humantime_serde")]
    pub dedupe_retention: Duration,
    /// Events being written at once; beyond it the receiver answers 429 to HighLevel (it
    /// retries only on 429) and 503 to the others, rather than miss the providers'
    /// acknowledgement windows.
    pub max_in_flight: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            listen: None,
            max_body_bytes: 1024 * 1024,
            read_timeout: Duration::from_secs(10),
            max_connections: 256,
            replay_window: Duration::from_secs(5 * 60),
            dedupe_retention: Duration::from_secs(7 * 24 * 3600),
            max_in_flight: 64,
        }
    }
}

/// The validated `[webhooks]` section.
#[derive(Debug, Clone, Copy)]
pub struct WebhookSettings {
    /// Where the receiver listens; `None`: no receiver.
    pub listen: Option<SocketAddr>,
    /// The largest body accepted.
    pub max_body_bytes: usize,
    /// Request read timeout.
    pub read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// The replay window.
    pub replay_window: Duration,
    /// How long event ids are kept.
    pub dedupe_retention: Duration,
    /// Events written at once.
    pub max_in_flight: usize,
}

impl Default for WebhookSettings {
    /// The defaults: no receiver.
    fn default() -> Self {
        WebhooksConfig::default()
            .validate("")
            .expect("the defaults are valid")
    }
}

impl WebhooksConfig {
    /// Checks each key, naming it in the error. `health_listen` is the health endpoint's
    /// address, which the receiver must not share.
    pub fn validate(&self, health_listen: &str) -> Result<WebhookSettings, ConfigError> {
        let key = |k: &str| format!("webhooks.{k}");
        let listen = match self.listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => {
                let addr: SocketAddr = text.parse().map_err(|_| {
                    ConfigError::new(
                        key("listen"),
                        format!(
                            "{text:?} is not an address: expected IP:PORT such as 127.0.0.1:9478"
                        ),
                    )
                })?;
                // Port 0 (a free port, chosen at bind time) never collides.
                if addr.port() != 0 && health_listen.trim().parse::<SocketAddr>().ok() == Some(addr)
                {
                    return Err(ConfigError::new(
                        key("listen"),
                        "must differ from health.listen: the health port is never exposed to providers",
                    ));
                }
                Some(addr)
            }
        };
        if !(MIN_BODY_BYTES..=MAX_BODY_BYTES).contains(&self.max_body_bytes) {
            return Err(ConfigError::new(
                key("max_body_bytes"),
                format!(
                    "must be between {MIN_BODY_BYTES} and {MAX_BODY_BYTES} bytes, such as 1048576 (1 MiB)"
                ),
            ));
        }
        if self.read_timeout.is_zero() {
            return Err(ConfigError::new(
                key("read_timeout"),
                "must be greater than zero, such as \"10s\"",
            ));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(ConfigError::new(
                key("max_connections"),
                format!("must be between 1 and {MAX_CONNECTIONS}, such as 256"),
            ));
        }
        if self.replay_window.is_zero() {
            return Err(ConfigError::new(
                key("replay_window"),
                "must be greater than zero, such as \"5m\"",
            ));
        }
        if self.dedupe_retention < MIN_DEDUPE_RETENTION {
            return Err(ConfigError::new(
                key("dedupe_retention"),
                "must be at least \"2h\" (longer than every provider's retry horizon), such as \"7d\"",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::new(
                key("max_in_flight"),
                "must be at least 1, such as 64",
            ));
        }
        Ok(WebhookSettings {
            listen,
            max_body_bytes: self.max_body_bytes,
            read_timeout: self.read_timeout,
            max_connections: self.max_connections,
            replay_window: self.replay_window,
            dedupe_retention: self.dedupe_retention,
            max_in_flight: self.max_in_flight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cfg: WebhooksConfig) -> Result<WebhookSettings, ConfigError> {
        cfg.validate("127.0.0.1:9477")
    }

    /// Off by default; each bad key is refused by name.
    #[test]
    fn defaults_are_off_and_bad_keys_are_named() {
        let settings = check(WebhooksConfig::default()).unwrap();
        assert_eq!(settings.listen, None);
        assert_eq!(settings.replay_window, Duration::from_secs(300));
        let on = check(WebhooksConfig {
            listen: Some("127.0.0.1:9478".into()),
            ..WebhooksConfig::default()
        })
        .unwrap();
        assert_eq!(on.listen, Some("127.0.0.1:9478".parse().unwrap()));
        // Port 0 (tests, a free port) is never the health endpoint's.
        let free = WebhooksConfig {
            listen: Some("127.0.0.1:0".into()),
            ..WebhooksConfig::default()
        };
        assert!(free.validate("127.0.0.1:0").is_ok());
        let refused = |cfg: WebhooksConfig| check(cfg).unwrap_err().key;
        let base = WebhooksConfig::default;
        assert_eq!(
            refused(WebhooksConfig {
                listen: Some("localhost".into()),
                ..base()
            }),
            "webhooks.listen"
        );
        assert_eq!(
            refused(WebhooksConfig {
                listen: Some("127.0.0.1:9477".into()),
                ..base()
            }),
            "webhooks.listen"
        );
        assert_eq!(
            refused(WebhooksConfig {
                max_body_bytes: 10,
                ..base()
            }),
            "webhooks.max_body_bytes"
        );
        assert_eq!(
            refused(WebhooksConfig {
                read_timeout: Duration::ZERO,
                ..base()
            }),
            "webhooks.read_timeout"
        );
        assert_eq!(
            refused(WebhooksConfig {
                max_connections: 0,
                ..base()
            }),
            "webhooks.max_connections"
        );
        assert_eq!(
            refused(WebhooksConfig {
                replay_window: Duration::ZERO,
                ..base()
            }),
            "webhooks.replay_window"
        );
        assert_eq!(
            refused(WebhooksConfig {
                dedupe_retention: Duration::from_secs(600),
                ..base()
            }),
            "webhooks.dedupe_retention"
        );
        assert_eq!(
            refused(WebhooksConfig {
                max_in_flight: 0,
                ..base()
            }),
            "webhooks.max_in_flight"
        );
    }
}
