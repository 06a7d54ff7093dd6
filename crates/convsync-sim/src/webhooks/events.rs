//! What each provider sends for a change, in its own envelope: the contract is
//! `docs/webhooks.md`, "What each provider sends".
//!
//! | change | Spruce | Sinch | HighLevel | D365 |
//! |---|---|---|---|---|
//! | new conversation | `conversation.created` (+ item) | `CONVERSATION_START` (+ message) | `InboundMessage` | — (the channel created it) |
//! | inbound message | `conversationItem.created` | `MESSAGE_INBOUND` | `InboundMessage` + `ConversationUnreadUpdate` | — (the channel posted it) |
//! | outbound message | `conversationItem.created` | `MESSAGE_SUBMIT` | `OutboundMessage` (+ unread update when it changes) | agent `message` activity |
//! | internal note | `conversationItem.created` (`isInternalNote`) | — | — | — |
//! | close | `conversation.updated` (archived) | `CONVERSATION_STOP` | — (no such state) | `ConversationClosed` |
//! | delete | `conversation.deleted` | `CONVERSATION_DELETE` | `ConversationUnreadUpdate` (`deleted`) | — |
//! | unread / starred | `conversation.updated` | — | `ConversationUnreadUpdate` | — |
//! | title / assignee | `conversation.updated` | — | — | — |
//! | app install / uninstall | — | — | `INSTALL` / `UNINSTALL` | — |
//!
//! Every event carries a fresh id derived from the seed (Spruce `wev_…`, HighLevel
//! `webhookId`, D365 activity `id`; Sinch has ids only on messages).

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::super::activity::EditField;
use super::super::fake;
use super::super::ids::{crockford, guid, hash_all};
use super::super::naming;
use super::super::platform::Platform;
use super::super::state::Shared;
use super::super::wire;
use super::super::world::{AccountWorld, Conv, MessageKind, NO_MSG};
use super::super::{highlevel, sinch, spruce};
use super::delivery::Outgoing;

/// One change to one conversation (or account), as the activity code saw it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Touch {
    /// Created, with its first message if any.
    Created,
    /// A message was added (arena index of the message); `unread_before` is the count
    /// before it.
    Message { unread_before: u16 },
    /// Closed / deactivated / archived.
    Closed,
    /// Deleted.
    Deleted,
    /// A field that does not move the last activity.
    Edited(EditField),
    /// HighLevel: the app was installed on / uninstalled from the location.
    Installed(bool),
}

/// Source of event ids: a counter mixed with the seed.
#[derive(Debug, Default)]
pub(crate) struct EventIds(AtomicU64);

impl EventIds {
    fn next(&self, seed: u64) -> u128 {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        (u128::from(hash_all(&[seed, n, 1])) << 64) | u128::from(hash_all(&[seed, n, 2]))
    }
}

/// The events `shared`'s provider sends for `touch` of conversation `seq` (ignored for
/// `Installed`) of `account`.
pub(crate) fn render(
    shared: &Shared,
    ids: &EventIds,
    account: usize,
    world: &AccountWorld,
    seq: u32,
    touch: Touch,
) -> Vec<Outgoing> {
    let now = shared.clock.now_us();
    let seed = shared.options.seed;
    let next_id = || ids.next(seed);
    let out = Builder {
        shared,
        account,
        now,
    };
    if let Touch::Installed(installed) = touch {
        return if shared.provider == Platform::HighLevel {
            vec![out.highlevel_install(installed, next_id())]
        } else {
            Vec::new()
        };
    }
    let Some(conv) = world.convs.get(seq as usize).copied() else {
        return Vec::new();
    };
    let last = (conv.last_msg != NO_MSG).then_some(conv.last_msg);
    match shared.provider {
        Platform::Spruce => {
            let mut events = Vec::new();
            let conversation = || {
                serde_json::to_value(spruce::render(shared, account, world, seq, &conv))
                    .unwrap_or(Value::Null)
            };
            let item = |index: u32| {
                serde_json::to_value(spruce::render_item(shared, world, seq, &conv, index))
                    .unwrap_or(Value::Null)
            };
            match touch {
                Touch::Created => {
                    events.push(out.spruce("conversation.created", conversation(), next_id()));
                    if let Some(index) = last {
                        events.push(out.spruce("conversationItem.created", item(index), next_id()));
                    }
                }
                Touch::Message { .. } => {
                    if let Some(index) = last {
                        events.push(out.spruce("conversationItem.created", item(index), next_id()));
                    }
                }
                Touch::Closed | Touch::Edited(_) => {
                    events.push(out.spruce("conversation.updated", conversation(), next_id()));
                }
                Touch::Deleted => {
                    events.push(out.spruce("conversation.deleted", conversation(), next_id()));
                }
                Touch::Installed(_) => {}
            }
            events
        }
        Platform::Sinch => {
            let conversation = || {
                serde_json::to_value(sinch::render(shared, account, world, seq, &conv))
                    .unwrap_or(Value::Null)
            };
            let message = |index: u32| {
                let msg = &world.msgs[index as usize];
                let inbound = msg.kind() == MessageKind::Inbound;
                let rendered = serde_json::to_value(sinch::render_message(world, index, msg))
                    .unwrap_or(Value::Null);
                if inbound {
                    out.sinch(
                        "message",
                        rendered,
                        msg.at_us,
                        "/message/id",
                        naming::message_id(world, index),
                    )
                } else {
                    let submitted = json!({
                        "submitted_message": {
                            "message_id": rendered["id"],
                            "conversation_id": rendered["conversation_id"],
                            "contact_id": rendered["contact_id"],
                            "channel_identity": rendered["channel_identity"],
                            "app_message": rendered["app_message"],
                        }
                    });
                    out.sinch(
                        "message_submit_notification",
                        submitted,
                        msg.at_us,
                        "/message_submit_notification/submitted_message/message_id",
                        naming::message_id(world, index),
                    )
                }
            };
            let lifecycle = |field: &'static str, payload: Value| {
                let id = format!("sinch-{}", crockford(next_id(), 26));
                out.sinch(field, payload, now, "/correlation_id", id)
            };
            let mut events = Vec::new();
            match touch {
                Touch::Created => {
                    events.push(lifecycle(
                        "conversation_start_notification",
                        json!({ "conversation": conversation() }),
                    ));
                    events.extend(last.map(message));
                }
                Touch::Message { .. } => events.extend(last.map(message)),
                Touch::Closed => events.push(lifecycle(
                    "conversation_stop_notification",
                    json!({ "conversation": conversation() }),
                )),
                Touch::Deleted => events.push(lifecycle(
                    "conversation_delete_notification",
                    json!({ "conversation_id": naming::conversation_id(world, seq) }),
                )),
                Touch::Edited(_) | Touch::Installed(_) => {}
            }
            events
        }
        Platform::HighLevel => {
            let mut events = Vec::new();
            let unread = |events: &mut Vec<Outgoing>, id: u128| {
                events.push(out.highlevel_unread(world, seq, &conv, id));
            };
            match touch {
                Touch::Created => {
                    if let Some(index) = last {
                        events.push(out.highlevel_message(world, seq, &conv, index, next_id()));
                    }
                }
                Touch::Message { unread_before } => {
                    if let Some(index) = last {
                        events.push(out.highlevel_message(world, seq, &conv, index, next_id()));
                    }
                    if unread_before != conv.unread {
                        unread(&mut events, next_id());
                    }
                }
                Touch::Deleted | Touch::Edited(EditField::Unread | EditField::Starred) => {
                    unread(&mut events, next_id());
                }
                Touch::Closed | Touch::Edited(_) | Touch::Installed(_) => {}
            }
            events
        }
        Platform::D365 => match touch {
            Touch::Message { .. } => last
                .filter(|index| world.msgs[*index as usize].kind() != MessageKind::Inbound)
                .map(|index| out.d365_message(world, seq, index, next_id()))
                .into_iter()
                .collect(),
            Touch::Closed => vec![out.d365_closed(world, seq, next_id())],
            _ => Vec::new(),
        },
    }
}

/// Builds the envelopes of one account at one instant.
struct Builder<'a> {
    shared: &'a Shared,
    account: usize,
    now: i64,
}

impl Builder<'_> {
    fn event(
        &self,
        name: &str,
        body: Value,
        event_id: String,
        time_fields: &'static [&'static str],
        id_field: &'static str,
        subpath: Option<String>,
    ) -> Outgoing {
        Outgoing {
            provider: self.shared.provider,
            account: self.account,
            event_id,
            name: name.to_owned(),
            body,
            time_fields,
            id_field,
            sent_at_us: self.now,
            subpath,
        }
    }

    /// `{"object": "event", "id", "type", "eventTime", "data": {"object": …}}`.
    fn spruce(&self, kind: &str, resource: Value, id: u128) -> Outgoing {
        let id = format!("wev_{}", crockford(id, 26));
        let body = json!({
            "object": "event",
            "id": id,
            "type": kind,
            "eventTime": wire::rfc3339_ms(self.now),
            "data": { "object": resource },
        });
        self.event(kind, body, id, &["/eventTime"], "/id", None)
    }

    /// `{project_id, app_id, accepted_time, event_time, <field>: payload}`; the signing
    /// adds the timestamp header.
    fn sinch(
        &self,
        field: &'static str,
        payload: Value,
        changed_us: i64,
        id_field: &'static str,
        event_id: String,
    ) -> Outgoing {
        let account = &self.shared.accounts.sinch[self.account];
        let body = json!({
            "app_id": account.app_id,
            "accepted_time": wire::rfc3339_ms(self.now),
            "event_time": wire::rfc3339_ms(changed_us),
            "project_id": account.project_id,
            field: payload,
        });
        let name = match field {
            "message" => "MESSAGE_INBOUND",
            "message_submit_notification" => "MESSAGE_SUBMIT",
            "conversation_start_notification" => "CONVERSATION_START",
            "conversation_stop_notification" => "CONVERSATION_STOP",
            _ => "CONVERSATION_DELETE",
        };
        self.event(name, body, event_id, &["/accepted_time"], id_field, None)
    }

    fn highlevel_envelope(&self, kind: &str, mut body: Value, id: u128) -> Outgoing {
        let webhook_id = guid(id);
        let location = &self.shared.accounts.highlevel[self.account];
        if let Value::Object(map) = &mut body {
            map.insert("type".to_owned(), json!(kind));
            map.insert("locationId".to_owned(), json!(location.location_id));
            map.insert("timestamp".to_owned(), json!(wire::rfc3339_ms(self.now)));
            map.insert("webhookId".to_owned(), json!(webhook_id));
        }
        self.event(kind, body, webhook_id, &["/timestamp"], "/webhookId", None)
    }

    fn highlevel_message(
        &self,
        world: &AccountWorld,
        seq: u32,
        conv: &Conv,
        index: u32,
        id: u128,
    ) -> Outgoing {
        let msg = &world.msgs[index as usize];
        let inbound = msg.kind() == MessageKind::Inbound;
        let channel = fake::channel_name(world.provider, conv.channel);
        let body = json!({
            "attachments": [],
            "body": fake::message_text(world.key, index, false),
            "contactId": naming::contact_id(world, conv.contact),
            "contentType": "text/plain",
            "conversationId": naming::conversation_id(world, seq),
            "dateAdded": wire::rfc3339_ms(msg.at_us),
            "direction": if inbound { "inbound" } else { "outbound" },
            "messageId": naming::message_id(world, index),
            "messageType": highlevel::message_type_name(channel),
            "status": "delivered",
        });
        let kind = if inbound {
            "InboundMessage"
        } else {
            "OutboundMessage"
        };
        self.highlevel_envelope(kind, body, id)
    }

    fn highlevel_unread(&self, world: &AccountWorld, seq: u32, conv: &Conv, id: u128) -> Outgoing {
        let body = json!({
            "id": naming::conversation_id(world, seq),
            "contactId": naming::contact_id(world, conv.contact),
            "unreadCount": conv.unread,
            "inbox": true,
            "starred": conv.starred,
            "deleted": conv.deleted,
        });
        self.highlevel_envelope("ConversationUnreadUpdate", body, id)
    }

    fn highlevel_install(&self, installed: bool, id: u128) -> Outgoing {
        let location = &self.shared.accounts.highlevel[self.account];
        let app_id = location.client_id.split('-').next().unwrap_or_default();
        let body = json!({
            "appId": app_id,
            "companyId": location.company_id,
            "userId": location.user_id,
            "installType": "Location",
        });
        let kind = if installed { "INSTALL" } else { "UNINSTALL" };
        self.highlevel_envelope(kind, body, id)
    }

    /// A Bot Framework activity, posted to `…/v3/conversations/{id}/activities`.
    fn d365_activity(
        &self,
        world: &AccountWorld,
        seq: u32,
        mut body: Value,
        at_us: i64,
        id: u128,
    ) -> Outgoing {
        let conversation_id = naming::conversation_id(world, seq);
        let id = guid(id);
        if let Value::Object(map) = &mut body {
            map.insert("id".to_owned(), json!(id));
            map.insert("timestamp".to_owned(), json!(wire::rfc3339_ms(at_us)));
            map.insert("channelId".to_owned(), json!("MessagingApi"));
            map.insert("conversation".to_owned(), json!({ "id": conversation_id }));
        }
        let name = body["name"].as_str().unwrap_or("message").to_owned();
        self.event(
            &name,
            body,
            id,
            &["/timestamp"],
            "/id",
            Some(format!("v3/conversations/{conversation_id}/activities")),
        )
    }

    fn d365_message(&self, world: &AccountWorld, seq: u32, index: u32, id: u128) -> Outgoing {
        let conv = &world.convs[seq as usize];
        let msg = &world.msgs[index as usize];
        let agent = conv.assignee.max(1);
        let body = json!({
            "type": "message",
            "from": {
                "id": naming::teammate_id(world, agent).unwrap_or_default(),
                "name": "Care Team",
            },
            "textFormat": "markdown",
            "text": fake::message_text(world.key, index, false),
        });
        self.d365_activity(world, seq, body, msg.at_us, id)
    }

    fn d365_closed(&self, world: &AccountWorld, seq: u32, id: u128) -> Outgoing {
        let body = json!({
            "type": "message",
            "name": "ConversationClosed",
            "from": { "id": "system", "name": "System" },
            "textFormat": "markdown",
            "text": "EventName: **_ConversationClosed_**",
        });
        self.d365_activity(world, seq, body, self.now, id)
    }
}
