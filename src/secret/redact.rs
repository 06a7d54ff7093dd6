//! Redaction of provider text: every secret convsync knows is replaced by a fingerprint,
//! and the text is cut to a bounded length, before it reaches a log line, an error
//! message, the database or an HTTP answer.
//!
//! Providers echo what they were sent: a 401 body that quotes the `Authorization` header, a
//! 400 that quotes the posted form. So every value wrapped in a [`Secret`](super::Secret) —
//! configured secrets, issued access tokens, rotated refresh tokens — is remembered here
//! together with the forms a provider may echo it in (URL-encoded, percent-encoded,
//! JSON-escaped, base64 as in a `Basic` header). A fingerprint is a keyed hash with a key
//! drawn at start-up: it lets two lines of one run be compared, and cannot be turned back
//! into the value, not even by trying candidate values.

use std::collections::{HashMap, VecDeque};
use std::sync::{LazyLock, Mutex};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;

/// Provider text quoted inside an error (an error body, a header) is cut to this many
/// bytes: enough for any real error message, not a megabyte per log line.
pub const PROVIDER_TEXT_CAP: usize = 300;

/// A whole error message (its cause chain, which may hold several provider texts and an
/// explanation of what to do) is cut to this many bytes.
pub const ERROR_TEXT_CAP: usize = 2048;

/// Values shorter than this are not treated as secrets to look for: replacing every "abc"
/// in a message would mangle it and protect nothing.
const MIN_SECRET_LEN: usize = 8;

/// How many issued tokens are remembered. Access tokens are issued hourly or daily, so the
/// oldest (long dead) are forgotten first; configured secrets are never forgotten.
const MAX_ISSUED: usize = 4096;

/// Only this much of a provider text is searched and kept before cutting; the rest is cut
/// unseen (the cap is far below it).
const SCAN_WINDOW: usize = 64 * 1024;

/// Whether a secret stays remembered for the life of the process.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Lifetime {
    /// Read from the configuration: remembered for good.
    Configured,
    /// Issued by a provider (access and refresh tokens): among the newest [`MAX_ISSUED`].
    Issued,
}

struct Known {
    /// Fingerprint of each remembered value.
    fingerprints: HashMap<String, String>,
    /// Issued values in the order they were first seen, to forget the oldest.
    issued: VecDeque<String>,
    /// The searcher over every form of every value, rebuilt after a change.
    searcher: Option<(AhoCorasick, Vec<String>)>,
    key: [u8; 32],
}

static KNOWN: LazyLock<Mutex<Known>> = LazyLock::new(|| {
    Mutex::new(Known {
        fingerprints: HashMap::new(),
        issued: VecDeque::new(),
        searcher: None,
        key: rand::random(),
    })
});

fn known() -> std::sync::MutexGuard<'static, Known> {
    // A panic while holding the lock leaves consistent data (every step is a plain insert).
    KNOWN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Remembers `value` as a secret to redact from provider text.
pub(super) fn remember(value: &str, lifetime: Lifetime) {
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let mut known = known();
    if lifetime == Lifetime::Configured
        && let Some(at) = known.issued.iter().position(|v| v == value)
    {
        // Promoted: never forget it.
        known.issued.remove(at);
    }
    if known.fingerprints.contains_key(value) {
        return;
    }
    let fingerprint = blake3::keyed_hash(&known.key, value.as_bytes()).to_hex()[..6].to_owned();
    known.fingerprints.insert(value.to_owned(), fingerprint);
    if lifetime == Lifetime::Issued {
        known.issued.push_back(value.to_owned());
        if known.issued.len() > MAX_ISSUED
            && let Some(oldest) = known.issued.pop_front()
        {
            known.fingerprints.remove(&oldest);
        }
    }
    known.searcher = None;
}

/// The forms in which a provider may echo `value`.
fn echoed_forms(value: &str) -> Vec<String> {
    let mut forms = vec![
        value.to_owned(),
        url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
        percent_encode(value),
        base64::engine::general_purpose::STANDARD.encode(value),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value),
    ];
    if let Ok(json) = serde_json::to_string(value) {
        forms.push(json.trim_matches('"').to_owned());
    }
    forms.sort();
    forms.dedup();
    forms
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Known {
    fn searcher(&mut self) -> Option<&(AhoCorasick, Vec<String>)> {
        if self.searcher.is_none() && !self.fingerprints.is_empty() {
            let mut patterns = Vec::new();
            let mut replacements = Vec::new();
            for (value, fingerprint) in &self.fingerprints {
                for form in echoed_forms(value) {
                    patterns.push(form);
                    replacements.push(format!("[secret:{fingerprint}]"));
                }
            }
            // Longest first, so a Basic header's base64 wins over a value inside it.
            let searcher = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .ok()?;
            self.searcher = Some((searcher, replacements));
        }
        self.searcher.as_ref()
    }
}

/// `text` with every known secret replaced by its fingerprint, cut to `cap` bytes with a
/// marker saying how much was cut.
pub fn redact(text: &str, cap: usize) -> String {
    let window = floor_char_boundary(text, SCAN_WINDOW);
    let scrubbed = {
        let mut known = known();
        match known.searcher() {
            Some((searcher, replacements)) => searcher.replace_all(&text[..window], replacements),
            None => text[..window].to_owned(),
        }
    };
    let unseen = text.len() - window;
    if scrubbed.len() <= cap && unseen == 0 {
        return scrubbed;
    }
    let kept = floor_char_boundary(&scrubbed, cap);
    let cut = scrubbed.len() - kept + unseen;
    format!("{}…[{cut} more bytes cut]", &scrubbed[..kept])
}

/// Provider text (an error body, a header) ready to be quoted in an error or a log line.
pub fn provider_text(text: &str) -> String {
    redact(text, PROVIDER_TEXT_CAP)
}

fn floor_char_boundary(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    (0..=at)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn every_echoed_form_of_a_secret_becomes_one_fingerprint() {
        let secret = Secret::new("s3cr3t+value/with=signs".into());
        let basic = base64::engine::general_purpose::STANDARD.encode(secret.expose());
        let text = format!(
            "raw {} form {} basic {basic}",
            secret.expose(),
            "s3cr3t%2Bvalue%2Fwith%3Dsigns",
        );
        let shown = provider_text(&text);
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!shown.contains(&basic), "{shown}");
        let fingerprints: std::collections::HashSet<_> = shown
            .split("[secret:")
            .skip(1)
            .map(|rest| &rest[..6])
            .collect();
        assert_eq!(shown.matches("[secret:").count(), 3, "{shown}");
        assert_eq!(fingerprints.len(), 1, "{shown}");
    }

    #[test]
    fn long_text_is_cut_with_a_marker_on_a_char_boundary() {
        let text = "é".repeat(1_000_000);
        let shown = provider_text(&text);
        assert!(shown.len() < PROVIDER_TEXT_CAP + 40, "{}", shown.len());
        assert!(shown.ends_with("more bytes cut]"), "{shown}");
        let cut: usize = shown
            .rsplit('[')
            .next()
            .and_then(|m| m.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert_eq!(cut + shown.find('…').unwrap(), text.len());
    }

    #[test]
    fn short_text_without_secrets_is_unchanged() {
        assert_eq!(provider_text("invalid_grant"), "invalid_grant");
    }
}
