//! HighLevel marketplace webhooks: the RSA signature check and what each event means for
//! the mirror (docs/webhooks.md, "HighLevel").
//!
//! HighLevel signs the raw body with its own RSA key (RSASSA-PKCS1-v1_5, SHA-256) and sends
//! the base64 signature in `x-wh-signature`; anyone can verify it with the public key
//! HighLevel publishes, which is embedded here and can be replaced by configuration when
//! HighLevel rotates it. The check runs on aws-lc-rs, the cryptography library rustls already
//! links for TLS: no second RSA implementation, and AWS maintains it with constant-time,
//! FIPS-validated primitives (the pure-Rust `rsa` crate still carries an open timing
//! advisory, RUSTSEC-2023-0071).
//!
//! HighLevel retries a delivery only when answered 429: every other answer is final, so a
//! lost event is found by the next poll, never by a retry.

use std::path::Path;

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Map, Value};

use crate::provider::webhook::fields::{
    self, EpochUnit, MAX_NAME_BYTES, MAX_UNREAD_COUNT, body_hash_id, malformed, message_activity,
};
use crate::provider::webhook::{
    WebhookChange, WebhookEvent, WebhookRejection, WebhookRequest, Webhooks,
};
use crate::record::Direction;
use crate::time::Timestamp;

/// The header carrying the base64 signature of the raw body.
pub const SIGNATURE_HEADER: &str = "x-wh-signature";

/// The public key HighLevel publishes for verifying its webhooks (4096-bit RSA), copied
/// from `GoHighLevel/highlevel-api-docs` `docs/oauth/WebhookAuthentication.md`.
pub const PUBLISHED_PUBLIC_KEY_PEM: &str = include_str!("webhook-published-public-key.pem");

/// A public key that cannot verify HighLevel's signatures.
#[derive(Debug, thiserror::Error)]
pub enum WebhookKeyError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The configured path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// No `PUBLIC KEY` PEM section.
    #[error("no PEM \"PUBLIC KEY\" section (expected the key as HighLevel publishes it)")]
    NotPem,
    /// A section that is not an RSA key of 2048 to 8192 bits.
    #[error("not an RSA public key of 2048 to 8192 bits")]
    NotRsa,
}

/// The webhooks of a HighLevel source: the public key that verifies them.
#[derive(Clone)]
pub struct HighLevelWebhooks {
    key: ParsedPublicKey,
}

impl std::fmt::Debug for HighLevelWebhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HighLevelWebhooks").finish_non_exhaustive()
    }
}

impl HighLevelWebhooks {
    /// Verifies with the key in `pem` (a `PUBLIC KEY` section, SubjectPublicKeyInfo).
    pub fn from_pem(pem: &[u8]) -> Result<Self, WebhookKeyError> {
        let der =
            SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|_| WebhookKeyError::NotPem)?;
        let key = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der.as_ref())
            .map_err(|_| WebhookKeyError::NotRsa)?;
        Ok(HighLevelWebhooks { key })
    }

    /// Verifies with HighLevel's published key.
    pub fn published() -> Result<Self, WebhookKeyError> {
        Self::from_pem(PUBLISHED_PUBLIC_KEY_PEM.as_bytes())
    }

    /// Verifies with the key in the PEM file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, WebhookKeyError> {
        let pem = std::fs::read(path).map_err(|source| WebhookKeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pem(&pem)
    }
}

#[async_trait::async_trait]
impl Webhooks for HighLevelWebhooks {
    async fn authenticate(&self, request: &WebhookRequest<'_>) -> Result<(), WebhookRejection> {
        let signature = fields::required_header(request, SIGNATURE_HEADER)?;
        let bad = WebhookRejection::BadSignature {
            header: SIGNATURE_HEADER,
        };
        let signature = STANDARD.decode(signature).map_err(|_| bad.clone())?;
        self.key
            .verify_sig(request.body, &signature)
            .map_err(|_| bad)
    }

    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<WebhookEvent>, WebhookRejection> {
        Ok(vec![event(request.body)?])
    }
}

/// Reads one event body.
fn event(body: &[u8]) -> Result<WebhookEvent, WebhookRejection> {
    let object = fields::object(body)?;
    let kind = fields::text(&object, "type", MAX_NAME_BYTES)?
        .ok_or_else(|| malformed("type is missing"))?;
    let sent_at = sent_at(&object)?;
    let account = fields::id(&object, "locationId")?;
    let mut event = WebhookEvent {
        event_id: match fields::id(&object, "webhookId")? {
            Some(id) => id,
            None => body_hash_id(body),
        },
        sent_at,
        changed_at: sent_at,
        account: account.clone(),
        kind,
        change: WebhookChange::Unrelated,
    };
    match event.kind.as_str() {
        "InboundMessage" | "OutboundMessage" => {
            // The type decides: the documented examples contradict their `direction`.
            let direction = if event.kind == "InboundMessage" {
                Direction::Inbound
            } else {
                Direction::Outbound
            };
            let conversation_id = fields::required_id(&object, "conversationId")?;
            let at = fields::time(&object, "dateAdded")?
                .ok_or_else(|| malformed("dateAdded is missing"))?;
            event.changed_at = Some(at);
            event.change = message_activity(conversation_id, direction, at);
        }
        "ConversationUnreadUpdate" => {
            let conversation_id = fields::required_id(&object, "id")?;
            event.change = if fields::flag(&object, "deleted")? == Some(true) {
                WebhookChange::Deleted { conversation_id }
            } else {
                let unread_count = fields::count(&object, "unreadCount", MAX_UNREAD_COUNT)?
                    .ok_or_else(|| malformed("unreadCount is missing"))?;
                WebhookChange::UnreadCount {
                    conversation_id,
                    unread_count,
                }
            };
        }
        // The pages are named AppInstall/AppUninstall; their examples send INSTALL/UNINSTALL.
        // An agency-level install names no location: nothing to run until one is added.
        "AppInstall" | "INSTALL" => {
            if let Some(account) = account {
                let company = fields::id(&object, "companyId")?;
                event.change = WebhookChange::AccountInstalled { account, company };
            }
        }
        "AppUninstall" | "UNINSTALL" => {
            if let Some(account) = account {
                let company = fields::id(&object, "companyId")?;
                event.change = WebhookChange::AccountUninstalled { account, company };
            }
        }
        _ => {}
    }
    Ok(event)
}

/// The payload's `timestamp`: RFC 3339 as documented, or epoch milliseconds (HighLevel's
/// usual date form) as a number or digits.
fn sent_at(object: &Map<String, Value>) -> Result<Option<Timestamp>, WebhookRejection> {
    match object.get("timestamp") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|ms| Timestamp::from_epoch_millis(ms).ok())
            .map(Some)
            .ok_or_else(|| malformed("timestamp is not a time")),
        Some(Value::String(_)) => {
            let text = fields::text(object, "timestamp", MAX_NAME_BYTES)?;
            text.map(|t| fields::time_text_or_epoch(&t, "timestamp", EpochUnit::Millis))
                .transpose()
        }
        Some(_) => Err(malformed("timestamp is not a time")),
    }
}

#[cfg(test)]
mod tests;
