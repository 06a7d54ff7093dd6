//! A configuration mistake ([`ConfigError`]) and the checks that both `config.rs` and the
//! providers' setup use. A base module, so that the providers do not import `config.rs`,
//! which sits above them.

use std::net::IpAddr;

use url::Url;

/// A configuration mistake, naming the key and what is expected.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct ConfigError {
    /// Dotted path of the key (`sources[0].poll_interval`).
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Checks a provider base URL: https, or http only on a loopback address (the simulator,
/// tests). TLS verification cannot be turned off, so a non-loopback URL is always verified.
pub fn validate_base_url(key: &str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value)
        .map_err(|e| ConfigError::new(key, format!("{value:?} is not a URL: {e}")))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(ConfigError::new(
            key,
            format!("{value:?} must use https (plain http is allowed only for loopback addresses)"),
        )),
        other => Err(ConfigError::new(
            key,
            format!("{value:?} has unsupported scheme {other:?}: expected https"),
        )),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}
