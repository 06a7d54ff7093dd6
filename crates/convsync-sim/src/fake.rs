//! Deterministic, realistic-looking field values (names, phones, emails, texts, channels).
//!
//! Nothing here is stored: every value is derived from a hash of the account key and the
//! entity index, so a million conversations cost no memory for their names and the same
//! seed always yields the same people.

use super::ids::{hash_all, mix64};
use super::platform::Platform;

const FIRST_NAMES: &[&str] = &[
    "Jane", "John", "Maria", "Ahmed", "Wei", "Olivia", "Liam", "Sofia", "Noah", "Emma", "Lucas",
    "Amara", "Mateo", "Yuki", "Priya", "Chen", "Fatima", "Diego", "Hannah", "Elijah", "Zoe",
    "Omar", "Isabel", "Kofi", "Ingrid", "Raj", "Leila", "Tomas", "Aisha", "Felix", "Nina", "Hugo",
];

const LAST_NAMES: &[&str] = &[
    "Roe", "Doe", "Garcia", "Smith", "Nguyen", "Okafor", "Muller", "Rossi", "Kowalski", "Tanaka",
    "Patel", "Johnson", "Silva", "Haddad", "Novak", "Jensen", "Brown", "Lopez", "Ivanova", "Kim",
    "Dubois", "Mensah", "Larsen", "Costa", "Fischer", "Sato", "Ali", "Moreau", "Walker", "Schmidt",
    "Khan", "Berg",
];

const MESSAGE_TEXTS: &[&str] = &[
    "Hi, I have a question about my order",
    "Can I reschedule my appointment?",
    "Thanks, that works for me",
    "See you at 3pm",
    "Is the clinic open on Saturday?",
    "I sent the documents yesterday",
    "Could you call me back please?",
    "Your prescription is ready for pickup",
    "We have received your request",
    "Please confirm your date of birth",
    "Refill question",
    "The package has not arrived yet",
    "Great, thank you!",
    "What is the status of my claim?",
    "Reminder: your visit is tomorrow at 10:00",
    "Following up on our conversation",
];

const NOTE_TEXTS: &[&str] = &[
    "Patient prefers morning calls",
    "Escalated to billing",
    "Checked chart, no allergies on file",
    "@Dr. Smith can you look at this?",
];

/// A person derived from `(account key, contact index, revision)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Person {
    pub(crate) first: &'static str,
    pub(crate) last: &'static str,
}

impl Person {
    /// The person behind contact `contact`; `revision` > 0 models a later name edit.
    pub(crate) fn of(key: u64, contact: u32, revision: u16) -> Person {
        let h = hash_all(&[key, 0x9E50, u64::from(contact), u64::from(revision)]);
        Person {
            first: FIRST_NAMES[(h % FIRST_NAMES.len() as u64) as usize],
            last: LAST_NAMES[((h >> 20) % LAST_NAMES.len() as u64) as usize],
        }
    }

    pub(crate) fn full_name(&self) -> String {
        format!("{} {}", self.first, self.last)
    }
}

/// A fictional North-American number in E.164 (`+1 AAA 555 01XX`).
pub(crate) fn phone_e164(key: u64, contact: u32) -> String {
    let h = hash_all(&[key, 0xF0E, u64::from(contact)]);
    let area = 201 + (h % 780);
    let line = 100 + ((h >> 16) % 100);
    format!("+1{area}555{line:04}")
}

/// `(555) 555-0123`-style display form of an E.164 number produced by [`phone_e164`].
pub(crate) fn phone_display(e164: &str) -> String {
    let digits = e164.trim_start_matches("+1");
    if digits.len() == 10 {
        format!("({}) {}-{}", &digits[0..3], &digits[3..6], &digits[6..10])
    } else {
        e164.to_owned()
    }
}

/// Lower-case e-mail address of a person.
pub(crate) fn email(person: &Person, contact: u32) -> String {
    format!(
        "{}.{}{}@example.com",
        person.first.to_ascii_lowercase(),
        person.last.to_ascii_lowercase(),
        contact % 1000
    )
}

/// Body text of message number `message`.
pub(crate) fn message_text(key: u64, message: u32, internal_note: bool) -> &'static str {
    let h = mix64(key ^ u64::from(message).wrapping_mul(0x2545_F491_4F6C_DD1D));
    if internal_note {
        NOTE_TEXTS[(h % NOTE_TEXTS.len() as u64) as usize]
    } else {
        MESSAGE_TEXTS[(h % MESSAGE_TEXTS.len() as u64) as usize]
    }
}

/// The documented values of each provider's conversation-channel enum (public so that
/// clients can check their mapping of every value the simulator may send).
///
/// Channel numbers index this table; the number equal to its length stands for a value
/// the documentation does not list, used to exercise "open enum" handling in clients.
pub fn channel_table(provider: Platform) -> &'static [&'static str] {
    match provider {
        Platform::D365 => &["custom"],
        Platform::Spruce => &["phone", "email", "secure", "fax", "team", "note", "other"],
        Platform::Sinch => &[
            "WHATSAPP",
            "SMS",
            "RCS",
            "MESSENGER",
            "VIBER",
            "VIBERBM",
            "MMS",
            "INSTAGRAM",
            "TELEGRAM",
            "KAKAOTALK",
            "KAKAOTALKCHAT",
            "LINE",
            "WECHAT",
            "APPLEBC",
        ],
        Platform::HighLevel => &[
            "TYPE_PHONE",
            "TYPE_EMAIL",
            "TYPE_FB_MESSENGER",
            "TYPE_REVIEW",
            "TYPE_GROUP_SMS",
        ],
    }
}

/// The undocumented ("future") enum value each provider occasionally returns (with
/// `unknown_enum_ratio`; never for D365, whose one value is also its documented one).
pub fn unknown_channel(provider: Platform) -> &'static str {
    match provider {
        Platform::D365 => "custom",
        Platform::Spruce => "video_visit",
        Platform::Sinch => "TIKTOK",
        Platform::HighLevel => "TYPE_TIKTOK_DM",
    }
}

/// Wire value of channel number `channel`.
pub(crate) fn channel_name(provider: Platform, channel: u8) -> &'static str {
    channel_table(provider)
        .get(usize::from(channel))
        .copied()
        .unwrap_or_else(|| unknown_channel(provider))
}

/// Pick a channel number from a hash, using the unknown value with `unknown_ratio`.
pub(crate) fn pick_channel(provider: Platform, h: u64, unknown_ratio: f64) -> u8 {
    let table = channel_table(provider);
    if super::ids::unit_f64(mix64(h)) < unknown_ratio && provider != Platform::D365 {
        return table.len() as u8;
    }
    // Skew towards the first (most common) entries.
    let a = (h % table.len() as u64) as usize;
    let b = ((h >> 24) % table.len() as u64) as usize;
    a.min(b) as u8
}
