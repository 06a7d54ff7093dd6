//! Platform-specific spelling of ids (conversations, contacts, messages, teammates).
//!
//! Each provider's ids look like the real ones: D365 GUIDs, Spruce `t_…`/`entity_…`,
//! Sinch 26-character ULID-like strings, HighLevel 20-character alphanumerics.

use super::ids::{base62, crockford, guid, hash_all, parse_base62, parse_crockford, parse_guid};
use super::platform::Platform;
use super::world::AccountWorld;

const MASK64: u128 = u64::MAX as u128;

fn spell(provider: Platform, prefix: u64, payload: u64, spruce_tag: &str) -> String {
    let value = (u128::from(prefix) << 64) | u128::from(payload);
    match provider {
        Platform::D365 => guid(value),
        Platform::Spruce => format!("{spruce_tag}{}", crockford(u128::from(payload), 13)),
        Platform::Sinch => crockford(value, 26),
        Platform::HighLevel => format!(
            "{}{}",
            base62(prefix % 62u64.pow(9), 9),
            base62(payload, 11)
        ),
    }
}

fn payload_of(provider: Platform, prefix: u64, text: &str, spruce_tag: &str) -> Option<u64> {
    if !text.is_ascii() {
        return None;
    }
    match provider {
        Platform::D365 => {
            let v = parse_guid(text)?;
            ((v >> 64) as u64 == prefix).then_some((v & MASK64) as u64)
        }
        Platform::Spruce => {
            let rest = text.strip_prefix(spruce_tag)?;
            (rest.len() == 13).then_some(())?;
            u64::try_from(parse_crockford(rest)?).ok()
        }
        Platform::Sinch => {
            (text.len() == 26).then_some(())?;
            let v = parse_crockford(&text[..25])? << 5 | parse_crockford(&text[25..])?;
            ((v >> 64) as u64 == prefix).then_some((v & MASK64) as u64)
        }
        Platform::HighLevel => {
            (text.len() == 20).then_some(())?;
            (parse_base62(&text[..9])? == prefix % 62u64.pow(9)).then_some(())?;
            parse_base62(&text[9..])
        }
    }
}

/// Public id of conversation `seq`.
pub(crate) fn conversation_id(world: &AccountWorld, seq: u32) -> String {
    let codec = world.conv_codec;
    spell(world.provider, codec.prefix(), codec.encode(seq), "t_")
}

/// Conversation index behind a public id, if it names one of this account's conversations.
pub(crate) fn parse_conversation_id(world: &AccountWorld, text: &str) -> Option<u32> {
    let codec = world.conv_codec;
    let payload = payload_of(world.provider, codec.prefix(), text, "t_")?;
    codec
        .decode(payload)
        .filter(|seq| (*seq as usize) < world.len())
}

/// Public id of contact `contact`.
pub(crate) fn contact_id(world: &AccountWorld, contact: u32) -> String {
    let codec = world.contact_codec;
    spell(
        world.provider,
        codec.prefix(),
        codec.encode(contact),
        "entity_",
    )
}

/// Contact index behind a public contact id.
pub(crate) fn parse_contact_id(world: &AccountWorld, text: &str) -> Option<u32> {
    let codec = world.contact_codec;
    codec.decode(payload_of(world.provider, codec.prefix(), text, "entity_")?)
}

/// Public id of message `index` of the arena.
pub(crate) fn message_id(world: &AccountWorld, index: u32) -> String {
    let codec = world.msg_codec;
    spell(world.provider, codec.prefix(), codec.encode(index), "ti_")
}

/// Id of teammate `assignee` (1-based as stored; 0 = none).
pub(crate) fn teammate_id(world: &AccountWorld, assignee: u16) -> Option<String> {
    if assignee == 0 {
        return None;
    }
    let h = hash_all(&[world.key, 0x7EA, u64::from(assignee)]);
    Some(match world.provider {
        Platform::Spruce => format!("entity_{}", crockford(u128::from(h), 13)),
        Platform::HighLevel => base62(h, 20),
        Platform::D365 | Platform::Sinch => format!("agent-{assignee}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_for_every_provider() {
        for provider in Platform::ALL {
            let mut world = AccountWorld::empty(provider, 3, 0);
            for _ in 0..5 {
                world.create(0, 0, None, 0, 0);
            }
            let other = AccountWorld::empty(provider, 3, 1);
            for seq in 0..5 {
                let id = conversation_id(&world, seq);
                assert_eq!(
                    parse_conversation_id(&world, &id),
                    Some(seq),
                    "{provider} {id}"
                );
                assert_eq!(parse_conversation_id(&other, &id), None, "{provider} {id}");
                let contact = contact_id(&world, seq);
                assert_eq!(parse_contact_id(&world, &contact), Some(seq));
            }
        }
    }
}
