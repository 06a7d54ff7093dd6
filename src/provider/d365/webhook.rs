//! The custom messaging channel's webhook: the token check and what each Bot Framework
//! activity means for the mirror (docs/webhooks.md, "Dynamics 365").
//!
//! Dynamics 365 posts the representative's side of an active conversation to
//! `{webhook_url}/v3/conversations/{conversationId}/activities`: messages, typing, and
//! events named by `name` (accepted, transferred, closed, …). Nothing is signed; the request
//! carries a token: `x-ms-token` in Microsoft's 2025-04 docs, compared here in constant time
//! with the configured static one, and `Authorization: Bearer` in its 2025-09 docs, either
//! that same static token or an access token issued by Microsoft Entra ID to the channel's
//! registered app, checked as a JWT ([`entra`]). The closing events are the primary closure
//! signal; the sweep (disappearance from the active list) remains the reconciliation.

pub mod entra;

use crate::provider::webhook::fields::{
    self, MAX_NAME_BYTES, body_hash_id, malformed, message_activity,
};
use crate::provider::webhook::signature::{hmac_sha256_matches, hmac_sha256_tag};
use crate::provider::webhook::{
    WebhookChange, WebhookEvent, WebhookRejection, WebhookRequest, Webhooks,
};
use crate::record::{DetailRequest, Direction};
use crate::secret::Secret;

use self::entra::{EntraTokenCheck, TokenRefusal};

use super::D365FollowUp;
use crate::provider::FollowUpKind;

/// The token header of Microsoft's 2025-04 docs.
pub const TOKEN_HEADER: &str = "x-ms-token";
/// The header of Microsoft's 2025-09 docs (`Bearer <token>`).
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// Event names that end the conversation for the customer, in either doc generation
/// (2025-04: `ConversationClosed`, `AgentClosed`, `AgentEndedSession`; 2025-09:
/// `ConversationClose`, `AgentEndSession`, `PrimaryAgentEndConversation`,
/// `SupervisorForceClosedConversation`).
const CLOSING: [&str; 7] = [
    "ConversationClosed",
    "ConversationClose",
    "AgentClosed",
    "AgentEndedSession",
    "AgentEndSession",
    "PrimaryAgentEndConversation",
    "SupervisorForceClosedConversation",
];

/// What the tokens are compared under: both sides become HMAC tags of this text keyed by
/// the token, so the comparison is constant-time and independent of the tokens' lengths.
const COMPARE_CONTEXT: &[u8] = b"convsync d365 webhook token";

/// How a D365 source's webhook requests prove where they come from: exactly one way per
/// source, so that a bearer value is never tried both as a static token and as a JWT.
#[derive(Debug)]
enum Credential {
    /// A static token, in `x-ms-token` or `Authorization: Bearer` (`webhook_token`).
    Token(Secret),
    /// An Entra-issued access token in `Authorization: Bearer` (`webhook_entra`).
    Entra(Box<EntraTokenCheck>),
}

/// The webhooks of a D365 source: how its requests are authenticated.
#[derive(Debug)]
pub struct D365Webhooks {
    credential: Credential,
    /// `messages`: the source reads each active conversation's messages.
    follow_up_on_activity: Option<&'static str>,
}

impl D365Webhooks {
    /// Accepts requests carrying the static `token`.
    pub fn new(token: Secret) -> Self {
        D365Webhooks {
            credential: Credential::Token(token),
            follow_up_on_activity: None,
        }
    }

    /// Accepts requests whose `Authorization: Bearer` token passes `check`.
    pub fn entra(check: EntraTokenCheck) -> Self {
        D365Webhooks {
            credential: Credential::Entra(Box::new(check)),
            follow_up_on_activity: None,
        }
    }

    /// The same, queueing the messages follow-up when an event moves a conversation's
    /// activity (the source's `messages = true`), as the listing does.
    pub fn reading_messages(mut self, messages: bool) -> Self {
        self.follow_up_on_activity = messages.then_some(super::D365FollowUp::Messages.as_str());
        self
    }
}

/// Whether `presented` is `token`, compared in constant time.
fn matches(token: &Secret, presented: &str, header: &'static str) -> Result<(), WebhookRejection> {
    let expected = hmac_sha256_tag(token.expose().as_bytes(), &[COMPARE_CONTEXT]);
    if hmac_sha256_matches(presented.as_bytes(), &[COMPARE_CONTEXT], &expected) {
        Ok(())
    } else {
        Err(WebhookRejection::BadSignature { header })
    }
}

/// The token of an `Authorization: Bearer <token>` header, or `None` when the header is
/// absent; another scheme is refused.
fn bearer<'r>(request: &WebhookRequest<'r>) -> Result<Option<&'r str>, WebhookRejection> {
    let Some(value) = fields::header(request, AUTHORIZATION_HEADER)? else {
        return Ok(None);
    };
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(WebhookRejection::BadSignature {
            header: AUTHORIZATION_HEADER,
        });
    }
    Ok(Some(token.trim()))
}

#[async_trait::async_trait]
impl Webhooks for D365Webhooks {
    fn follow_up_on_activity(&self) -> Option<&'static str> {
        self.follow_up_on_activity
    }

    async fn authenticate(&self, request: &WebhookRequest<'_>) -> Result<(), WebhookRejection> {
        match &self.credential {
            Credential::Token(token) => {
                if let Some(presented) = fields::header(request, TOKEN_HEADER)? {
                    return matches(token, presented, TOKEN_HEADER);
                }
                match bearer(request)? {
                    Some(presented) => matches(token, presented, AUTHORIZATION_HEADER),
                    None => Err(WebhookRejection::MissingSignature {
                        header: TOKEN_HEADER,
                    }),
                }
            }
            // An `x-ms-token` proves nothing here: only the Entra token is accepted.
            Credential::Entra(check) => {
                let Some(presented) = bearer(request)? else {
                    return Err(WebhookRejection::MissingSignature {
                        header: AUTHORIZATION_HEADER,
                    });
                };
                check
                    .check(presented)
                    .await
                    .map_err(|refusal| match refusal {
                        TokenRefusal::KeysUnavailable => WebhookRejection::KeysUnavailable {
                            header: AUTHORIZATION_HEADER,
                        },
                        TokenRefusal::Invalid(problem) => WebhookRejection::InvalidToken {
                            header: AUTHORIZATION_HEADER,
                            problem,
                        },
                    })
            }
        }
    }

    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<WebhookEvent>, WebhookRejection> {
        let conversation_id = conversation_in(request.subpath)?;
        Ok(vec![activity(request.body, conversation_id)?])
    }
}

/// The conversation id of a `/v3/conversations/{id}/activities` subpath.
fn conversation_in(subpath: &str) -> Result<String, WebhookRejection> {
    let rest = subpath.strip_prefix('/').unwrap_or(subpath);
    let id = rest
        .strip_prefix("v3/conversations/")
        .and_then(|r| r.strip_suffix("/activities"))
        .filter(|id| {
            !id.is_empty()
                && id.len() <= fields::MAX_ID_BYTES
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .ok_or_else(|| {
            malformed("the path is not /v3/conversations/{conversationId}/activities")
        })?;
    Ok(id.to_owned())
}

/// Reads one activity posted for `conversation_id`.
fn activity(body: &[u8], conversation_id: String) -> Result<WebhookEvent, WebhookRejection> {
    let object = fields::object(body)?;
    if let Some(conversation) = fields::child(&object, "conversation")?
        && let Some(id) = fields::id(conversation, "id")?
        && id != conversation_id
    {
        return Err(malformed(
            "conversation.id differs from the conversation in the path",
        ));
    }
    let kind = fields::text(&object, "type", MAX_NAME_BYTES)?
        .ok_or_else(|| malformed("type is missing"))?;
    let name = fields::text(&object, "name", MAX_NAME_BYTES)?;
    let at = fields::time(&object, "timestamp")?;
    let conversation_id_for_id = conversation_id.clone();
    let change = match (&name, kind.as_str()) {
        // The documented samples send events as `message` activities with a `name`.
        (Some(name), _) if CLOSING.contains(&name.as_str()) => {
            WebhookChange::Closed { conversation_id }
        }
        (Some(_), _) => WebhookChange::Unrelated,
        (None, "message") => match at {
            Some(at) => message_activity(conversation_id, Direction::Outbound, at),
            // Without a time the activity cannot be ordered: read the messages instead.
            None => WebhookChange::Refetch(DetailRequest {
                conversation_id,
                kind: D365FollowUp::Messages.as_str().to_owned(),
                since: None,
                position: None,
            }),
        },
        (None, _) => WebhookChange::Unrelated,
    };
    let event_id = match fields::id(&object, "id")? {
        // Bot Framework ids need only be unique within their conversation.
        Some(id) => format!("{conversation_id_for_id}/{id}"),
        None => body_hash_id(body),
    };
    Ok(WebhookEvent {
        event_id,
        sent_at: at,
        changed_at: at,
        account: None,
        kind: name.unwrap_or(kind),
        change,
    })
}

#[cfg(test)]
mod tests;
