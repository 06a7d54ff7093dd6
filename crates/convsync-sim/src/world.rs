//! The deterministic world: conversations and messages of one simulated account.
//!
//! Design constraints, and how they are met:
//!
//! * **Scale** — a million conversations per account. Records are small `Copy` structs in
//!   a `Vec` addressed by index; ids, names and texts are derived, not stored; messages
//!   live in one append-only arena (sorted by time) linked per conversation.
//! * **Cheap pages** — every listing order the APIs offer is a `BTreeSet<(key, index)>`
//!   maintained incrementally, so a page costs O(page size · log N).
//! * **Eventual consistency** — the records are the *truth* (changed immediately); the
//!   sorted indexes and a small `shadow` map describe what listings *show*. A change
//!   made with a consistency delay keeps the previous version in `shadow` until it
//!   becomes visible. Several changes to one conversation within the delay window are
//!   published together when the last of them becomes visible.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::ops::Bound;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::fake;
use super::ids::{IdCodec, hash_all};
use super::platform::Platform;

/// Sentinel for "no timestamp" in compact records (sorts before every real instant).
pub(crate) const NO_TS: i64 = i64::MIN;
/// Sentinel for "no message" in message links.
pub(crate) const NO_MSG: u32 = u32::MAX;

/// Kind of a message (conversation item) as the simulator models it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// From the customer/patient/contact to the organisation.
    Inbound,
    /// Written by a human agent to the contact.
    Outbound,
    /// Sent to the contact by automation (bot, campaign, workflow).
    OutboundAutomated,
    /// Internal note visible to the organisation only (Spruce); not a message to anyone.
    InternalNote,
}

impl MessageKind {
    /// The direction a client can derive for this kind.
    pub fn direction(self) -> MessageDirection {
        match self {
            MessageKind::Inbound => MessageDirection::Inbound,
            MessageKind::Outbound | MessageKind::OutboundAutomated => MessageDirection::Outbound,
            MessageKind::InternalNote => MessageDirection::Internal,
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Option<MessageKind> {
        [
            MessageKind::Inbound,
            MessageKind::Outbound,
            MessageKind::OutboundAutomated,
            MessageKind::InternalNote,
        ]
        .get(usize::from(code))
        .copied()
    }
}

/// Direction of a message relative to the organisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageDirection {
    /// Received from the contact.
    Inbound,
    /// Sent to the contact.
    Outbound,
    /// Neither (internal note).
    Internal,
}

/// Whether a conversation is still open. What "closed" means depends on the provider:
/// D365 closed or wrapped up (vanishes from the list), Sinch inactive, Spruce archived.
/// HighLevel conversations are never closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    Open,
    Closed,
}

/// One conversation, compact (≈ 80 bytes).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conv {
    pub(crate) created_us: i64,
    /// Time of the last message as the API shows it (may be in the future under the
    /// future-timestamp fault); `NO_TS` when the conversation has no message.
    pub(crate) last_activity_us: i64,
    pub(crate) last_inbound_us: i64,
    pub(crate) last_outbound_us: i64,
    /// Last message not sent by automation (HighLevel `last_manual_message_date`).
    pub(crate) last_manual_us: i64,
    /// When any field last changed (HighLevel `dateUpdated`).
    pub(crate) changed_us: i64,
    /// When the latest change becomes visible in listings.
    pub(crate) visible_at_us: i64,
    /// Arena index of the newest message, or `NO_MSG`.
    pub(crate) last_msg: u32,
    pub(crate) msg_count: u32,
    pub(crate) contact: u32,
    pub(crate) unread: u16,
    /// Bumped by a title / contact-name edit.
    pub(crate) title_rev: u16,
    /// 0 = unassigned, otherwise teammate number + 1.
    pub(crate) assignee: u16,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) deleted: bool,
    pub(crate) starred: bool,
    pub(crate) channel: u8,
    /// `MessageKind` code of the newest message, or `u8::MAX`.
    pub(crate) last_kind: u8,
}

impl Conv {
    pub(crate) fn last_activity(&self) -> Option<i64> {
        (self.last_activity_us != NO_TS).then_some(self.last_activity_us)
    }

    pub(crate) fn last_kind(&self) -> Option<MessageKind> {
        MessageKind::from_code(self.last_kind)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.lifecycle == Lifecycle::Open
    }
}

/// One message in the account's arena.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Msg {
    pub(crate) at_us: i64,
    pub(crate) conv: u32,
    /// Previous (older) message of the same conversation, or `NO_MSG`.
    pub(crate) prev: u32,
    kind: u8,
}

impl Msg {
    pub(crate) fn kind(&self) -> MessageKind {
        MessageKind::from_code(self.kind).unwrap_or(MessageKind::Inbound)
    }
}

/// A listing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IndexKind {
    /// By creation time.
    Created = 0,
    /// By last-message time.
    Activity = 1,
    /// By last manual message time (HighLevel).
    Manual = 2,
    /// By a keyed permutation of the index: stable, unrelated to time (Sinch list,
    /// D365 "unspecified order").
    Scrambled = 3,
}

/// Number of assignable teammates per account.
pub(crate) const TEAMMATES: u16 = 8;

/// Parameters for generating an account's initial world.
#[derive(Clone, Debug)]
pub(crate) struct GenParams {
    pub(crate) seed: u64,
    pub(crate) account: usize,
    pub(crate) conversations: u32,
    pub(crate) now_us: i64,
    pub(crate) history_us: i64,
    pub(crate) tie_cluster_size: u32,
    pub(crate) unknown_enum_ratio: f64,
}

/// Previous visible version of a conversation with changes not yet visible.
#[derive(Clone, Copy, Debug)]
struct Shadow {
    /// `None` while the conversation itself is not visible yet (just created).
    visible: Option<Conv>,
    pending: u32,
}

/// Everything one simulated account holds.
pub(crate) struct AccountWorld {
    pub(crate) provider: Platform,
    /// Key for every derived value of this account.
    pub(crate) key: u64,
    pub(crate) conv_codec: IdCodec,
    pub(crate) contact_codec: IdCodec,
    pub(crate) msg_codec: IdCodec,
    pub(crate) convs: Vec<Conv>,
    pub(crate) msgs: Vec<Msg>,
    shadow: HashMap<u32, Shadow>,
    pending: BinaryHeap<Reverse<(i64, u32)>>,
    indexes: [Option<BTreeSet<(i64, u32)>>; 4],
}

/// Page-boundary positions that tie clusters are centred on (both ends of the order).
const TIE_BOUNDARIES: [usize; 8] = [10, 20, 50, 100, 200, 250, 500, 1000];

impl AccountWorld {
    /// An empty account (no conversations yet).
    pub(crate) fn empty(provider: Platform, seed: u64, account: usize) -> Self {
        let key = hash_all(&[seed, provider.index() as u64 + 1, account as u64]);
        let enabled: &[IndexKind] = match provider {
            Platform::D365 => &[IndexKind::Created, IndexKind::Scrambled],
            Platform::Spruce => &[IndexKind::Created, IndexKind::Activity],
            Platform::Sinch => &[IndexKind::Scrambled, IndexKind::Activity],
            Platform::HighLevel => &[IndexKind::Activity, IndexKind::Manual],
        };
        let mut indexes: [Option<BTreeSet<(i64, u32)>>; 4] = Default::default();
        for kind in enabled {
            indexes[*kind as usize] = Some(BTreeSet::new());
        }
        AccountWorld {
            provider,
            key,
            conv_codec: IdCodec::new(key ^ 0xC0),
            contact_codec: IdCodec::new(key ^ 0xC1),
            msg_codec: IdCodec::new(key ^ 0xC2),
            convs: Vec::new(),
            msgs: Vec::new(),
            shadow: HashMap::new(),
            pending: BinaryHeap::new(),
            indexes,
        }
    }

    /// Generate the initial world of an account: conversations created over the history
    /// window, each with 0–4 messages, tie clusters at common page boundaries.
    pub(crate) fn generate(provider: Platform, params: &GenParams) -> Self {
        let mut world = AccountWorld::empty(provider, params.seed, params.account);
        let mut rng = StdRng::seed_from_u64(world.key);
        let n = params.conversations as usize;
        let now = params.now_us;
        let span = params.history_us.max(1);
        let slot = (span / n.max(1) as i64).max(1);
        let mut message_counts = Vec::with_capacity(n);
        world.convs.reserve_exact(n);
        for i in 0..n {
            let created =
                provider.truncate_us(now - span + slot * i as i64 + rng.random_range(0..slot));
            let count: u32 = if provider == Platform::HighLevel || rng.random_bool(0.95) {
                rng.random_range(1..=4)
            } else {
                0
            };
            let last = if count == 0 {
                NO_TS
            } else {
                provider.truncate_us(created + rng.random_range(0..=(now - created).max(0)))
            };
            let closed = match provider {
                Platform::D365 => rng.random_bool(0.2),
                Platform::Sinch => rng.random_bool(0.4),
                Platform::Spruce => rng.random_bool(0.25),
                Platform::HighLevel => false,
            };
            let assignee = if rng.random_bool(0.7) {
                1 + rng.random_range(0..TEAMMATES)
            } else {
                0
            };
            let h: u64 = rng.random();
            world.convs.push(Conv {
                created_us: created,
                last_activity_us: last,
                last_inbound_us: NO_TS,
                last_outbound_us: NO_TS,
                last_manual_us: NO_TS,
                changed_us: created.max(last),
                visible_at_us: created.max(last),
                last_msg: NO_MSG,
                msg_count: 0,
                contact: i as u32,
                unread: 0,
                title_rev: 0,
                assignee,
                lifecycle: if closed {
                    Lifecycle::Closed
                } else {
                    Lifecycle::Open
                },
                deleted: false,
                starred: rng.random_bool(0.1),
                channel: fake::pick_channel(provider, h, params.unknown_enum_ratio),
                last_kind: u8::MAX,
            });
            message_counts.push(count);
        }
        if params.tie_cluster_size >= 2 {
            world.apply_tie_clusters(params.tie_cluster_size as usize);
        }
        world.generate_messages(&mut rng, &message_counts);
        for seq in 0..world.convs.len() as u32 {
            let conv = world.convs[seq as usize];
            world.reindex(seq, None, Some(&conv));
        }
        world
    }

    /// Give `k` consecutive conversations (in creation order and in last-activity order)
    /// one identical timestamp around each common page boundary, from both ends.
    fn apply_tie_clusters(&mut self, k: usize) {
        let n = self.convs.len();
        let ranges = |len: usize| -> Vec<(usize, usize)> {
            let mut out = Vec::new();
            for b in TIE_BOUNDARIES {
                for p in 1..=2 {
                    let c = b * p;
                    if c >= len {
                        continue;
                    }
                    for centre in [c, len - c] {
                        let start = centre.saturating_sub(k / 2);
                        out.push((start, (start + k).min(len)));
                    }
                }
            }
            out
        };
        // Creation order is index order: lower the range to its first (smallest) value.
        for (start, end) in ranges(n) {
            let min = self.convs[start].created_us;
            for conv in &mut self.convs[start..end] {
                conv.created_us = min;
            }
        }
        // Activity order: raise the range to its largest value (order is preserved and
        // every last activity stays at or after its creation).
        let mut by_activity: Vec<u32> = (0..n as u32)
            .filter(|s| self.convs[*s as usize].last_activity_us != NO_TS)
            .collect();
        by_activity.sort_by_key(|s| (self.convs[*s as usize].last_activity_us, *s));
        for (start, end) in ranges(by_activity.len()) {
            let max = self.convs[by_activity[end - 1] as usize].last_activity_us;
            for s in &by_activity[start..end] {
                self.convs[*s as usize].last_activity_us = max;
            }
        }
        for conv in &mut self.convs {
            if conv.last_activity_us != NO_TS {
                conv.last_activity_us = conv.last_activity_us.max(conv.created_us);
            }
            conv.changed_us = conv.created_us.max(conv.last_activity_us);
            conv.visible_at_us = conv.changed_us;
        }
    }

    /// Create the initial messages (the last one exactly at the conversation's last
    /// activity) and thread them into the time-sorted arena.
    fn generate_messages(&mut self, rng: &mut StdRng, counts: &[u32]) {
        let mut planned: Vec<(i64, u32, u8)> = Vec::with_capacity(counts.len() * 3);
        for (seq, count) in counts.iter().enumerate() {
            let conv = self.convs[seq];
            if *count == 0 {
                continue;
            }
            let mut times: Vec<i64> = (1..*count)
                .map(|_| {
                    self.provider
                        .truncate_us(rng.random_range(conv.created_us..=conv.last_activity_us))
                })
                .collect();
            times.sort_unstable();
            times.push(conv.last_activity_us);
            for (i, at) in times.into_iter().enumerate() {
                let kind = if i == 0 {
                    if rng.random_bool(0.8) {
                        MessageKind::Inbound
                    } else {
                        MessageKind::Outbound
                    }
                } else {
                    self.random_kind(rng)
                };
                planned.push((at, seq as u32, kind.code()));
            }
        }
        planned.sort_by_key(|(at, seq, _)| (*at, *seq));
        self.msgs.reserve_exact(planned.len());
        for (at, seq, kind) in planned {
            self.thread_message(
                seq,
                at,
                MessageKind::from_code(kind).unwrap_or(MessageKind::Inbound),
            );
        }
    }

    /// A plausible kind for a follow-up message on this provider.
    pub(crate) fn random_kind(&self, rng: &mut StdRng) -> MessageKind {
        let roll: f64 = rng.random();
        match self.provider {
            Platform::Spruce if roll < 0.1 => MessageKind::InternalNote,
            Platform::D365 | Platform::HighLevel if roll < 0.15 => MessageKind::OutboundAutomated,
            _ if roll < 0.55 => MessageKind::Inbound,
            _ => MessageKind::Outbound,
        }
    }

    /// Append a message to the arena and update the conversation's message-derived
    /// fields in place (no index maintenance; callers handle visibility).
    fn thread_message(&mut self, seq: u32, at_us: i64, kind: MessageKind) -> u32 {
        let idx = self.msgs.len() as u32;
        let conv = &mut self.convs[seq as usize];
        self.msgs.push(Msg {
            at_us,
            conv: seq,
            prev: conv.last_msg,
            kind: kind.code(),
        });
        conv.last_msg = idx;
        conv.msg_count += 1;
        conv.last_activity_us = at_us;
        conv.last_kind = kind.code();
        match kind {
            MessageKind::Inbound => {
                conv.last_inbound_us = at_us;
                conv.last_manual_us = at_us;
                conv.unread = conv.unread.saturating_add(1);
            }
            MessageKind::Outbound => {
                conv.last_outbound_us = at_us;
                conv.last_manual_us = at_us;
                conv.unread = 0;
            }
            MessageKind::OutboundAutomated => {
                conv.last_outbound_us = at_us;
            }
            MessageKind::InternalNote => {}
        }
        idx
    }

    // ----- visibility -------------------------------------------------------------

    /// The version of a conversation that listings currently show (`None`: not visible
    /// yet, or no such index). Deleted conversations are returned with `deleted` set.
    pub(crate) fn visible(&self, seq: u32) -> Option<&Conv> {
        match self.shadow.get(&seq) {
            Some(shadow) => shadow.visible.as_ref(),
            None => self.convs.get(seq as usize),
        }
    }

    /// The visible version, unless it is deleted.
    pub(crate) fn visible_live(&self, seq: u32) -> Option<&Conv> {
        self.visible(seq).filter(|c| !c.deleted)
    }

    /// Publish every change whose visibility time has come.
    pub(crate) fn settle(&mut self, now_us: i64) {
        while let Some(Reverse((at, seq))) = self.pending.peek().copied() {
            if at > now_us {
                break;
            }
            self.pending.pop();
            let Some(shadow) = self.shadow.get_mut(&seq) else {
                continue;
            };
            shadow.pending = shadow.pending.saturating_sub(1);
            if shadow.pending == 0 {
                let old = shadow.visible;
                self.shadow.remove(&seq);
                let new = self.convs[seq as usize];
                self.reindex(seq, old.as_ref(), Some(&new));
            }
        }
    }

    fn index_key(&self, kind: IndexKind, seq: u32, conv: &Conv) -> Option<i64> {
        if conv.deleted {
            return None;
        }
        match (self.provider, kind) {
            (Platform::D365, IndexKind::Created) => conv.is_open().then_some(conv.created_us),
            (Platform::D365, IndexKind::Scrambled) => conv
                .is_open()
                .then(|| i64::from(self.conv_codec.permute(seq))),
            (Platform::Spruce, IndexKind::Created) => Some(conv.created_us),
            (Platform::Spruce | Platform::HighLevel, IndexKind::Activity) => {
                Some(conv.last_activity_us)
            }
            (Platform::HighLevel, IndexKind::Manual) => Some(conv.last_manual_us),
            (Platform::Sinch, IndexKind::Scrambled) => {
                Some(i64::from(self.conv_codec.permute(seq)))
            }
            (Platform::Sinch, IndexKind::Activity) => Some(conv.last_activity_us.max(0)),
            _ => None,
        }
    }

    fn reindex(&mut self, seq: u32, old: Option<&Conv>, new: Option<&Conv>) {
        for kind in [
            IndexKind::Created,
            IndexKind::Activity,
            IndexKind::Manual,
            IndexKind::Scrambled,
        ] {
            if self.indexes[kind as usize].is_none() {
                continue;
            }
            let old_key = old.and_then(|c| self.index_key(kind, seq, c));
            let new_key = new.and_then(|c| self.index_key(kind, seq, c));
            if old_key == new_key {
                continue;
            }
            if let Some(index) = self.indexes[kind as usize].as_mut() {
                if let Some(k) = old_key {
                    index.remove(&(k, seq));
                }
                if let Some(k) = new_key {
                    index.insert((k, seq));
                }
            }
        }
    }

    /// Entries of a listing order between two bounds, ascending or descending.
    pub(crate) fn walk(
        &self,
        kind: IndexKind,
        from: Bound<(i64, u32)>,
        to: Bound<(i64, u32)>,
        descending: bool,
    ) -> Box<dyn Iterator<Item = (i64, u32)> + '_> {
        let Some(index) = self.indexes[kind as usize].as_ref() else {
            return Box::new(std::iter::empty());
        };
        let range = index.range((from, to)).copied();
        if descending {
            Box::new(range.rev())
        } else {
            Box::new(range)
        }
    }

    /// Number of entries in a listing order.
    pub(crate) fn index_len(&self, kind: IndexKind) -> usize {
        self.indexes[kind as usize]
            .as_ref()
            .map_or(0, BTreeSet::len)
    }

    // ----- mutations ----------------------------------------------------------------

    /// Record a change to a conversation made at `now_us`, visible after `delay_us`.
    fn commit(&mut self, seq: u32, before: Option<Conv>, now_us: i64, delay_us: i64) {
        let conv = &mut self.convs[seq as usize];
        conv.changed_us = now_us;
        conv.visible_at_us = now_us + delay_us;
        if delay_us <= 0 && !self.shadow.contains_key(&seq) {
            let new = *conv;
            self.reindex(seq, before.as_ref(), Some(&new));
            return;
        }
        let shadow = self.shadow.entry(seq).or_insert(Shadow {
            visible: before,
            pending: 0,
        });
        shadow.pending += 1;
        self.pending.push(Reverse((now_us + delay_us.max(0), seq)));
    }

    /// Apply `change` to conversation `seq` (truth now, listings after the delay).
    pub(crate) fn update(
        &mut self,
        seq: u32,
        now_us: i64,
        delay_us: i64,
        change: impl FnOnce(&mut Conv),
    ) {
        let before = self.convs[seq as usize];
        change(&mut self.convs[seq as usize]);
        self.commit(seq, Some(before), now_us, delay_us);
    }

    /// Create a conversation (optionally with a first message) and return its index.
    pub(crate) fn create(
        &mut self,
        now_us: i64,
        delay_us: i64,
        first_message: Option<MessageKind>,
        channel: u8,
        assignee: u16,
    ) -> u32 {
        let seq = self.convs.len() as u32;
        let created = self.provider.truncate_us(now_us);
        self.convs.push(Conv {
            created_us: created,
            last_activity_us: NO_TS,
            last_inbound_us: NO_TS,
            last_outbound_us: NO_TS,
            last_manual_us: NO_TS,
            changed_us: created,
            visible_at_us: created,
            last_msg: NO_MSG,
            msg_count: 0,
            contact: seq,
            unread: 0,
            title_rev: 0,
            assignee,
            lifecycle: Lifecycle::Open,
            deleted: false,
            starred: false,
            channel,
            last_kind: u8::MAX,
        });
        if let Some(kind) = first_message {
            let at = self.next_message_time(created);
            self.thread_message(seq, at, kind);
        }
        self.commit(seq, None, now_us, delay_us);
        seq
    }

    /// The arena must stay sorted by time: a new message is never older than the newest.
    fn next_message_time(&self, at_us: i64) -> i64 {
        let at = self.provider.truncate_us(at_us);
        self.msgs.last().map_or(at, |m| at.max(m.at_us))
    }

    /// Add a message to a conversation. `skew_us` > 0 models a provider clock ahead of
    /// real time: the conversation's last-activity field shows `at + skew`.
    pub(crate) fn add_message(
        &mut self,
        seq: u32,
        kind: MessageKind,
        now_us: i64,
        delay_us: i64,
        skew_us: i64,
    ) {
        let before = self.convs[seq as usize];
        let at = self.next_message_time(now_us);
        self.thread_message(seq, at, kind);
        let provider = self.provider;
        let conv = &mut self.convs[seq as usize];
        if skew_us > 0 {
            conv.last_activity_us = provider.truncate_us(at + skew_us);
        }
        if provider == Platform::Spruce && kind == MessageKind::Inbound {
            // A patient message brings an archived Spruce conversation back to the inbox.
            conv.lifecycle = Lifecycle::Open;
        }
        self.commit(seq, Some(before), now_us, delay_us);
    }

    /// Create `k` conversations with one identical creation time and first-message time.
    pub(crate) fn create_tie_cluster(
        &mut self,
        k: u32,
        now_us: i64,
        delay_us: i64,
        channel: u8,
    ) -> Vec<u32> {
        (0..k)
            .map(|_| self.create(now_us, delay_us, Some(MessageKind::Inbound), channel, 0))
            .collect()
    }

    /// Give existing conversations a message at one identical instant.
    pub(crate) fn message_tie_cluster(&mut self, seqs: &[u32], now_us: i64, delay_us: i64) {
        for seq in seqs {
            self.add_message(*seq, MessageKind::Inbound, now_us, delay_us, 0);
        }
    }

    // ----- messages -----------------------------------------------------------------

    /// Arena indexes of a conversation's messages, newest first.
    pub(crate) fn messages_of(&self, conv: &Conv) -> Vec<u32> {
        let mut out = Vec::with_capacity(conv.msg_count as usize);
        let mut cursor = conv.last_msg;
        while cursor != NO_MSG {
            out.push(cursor);
            cursor = self.msgs[cursor as usize].prev;
        }
        out
    }

    /// Arena position just past the last message stamped at or before `at_us`.
    pub(crate) fn messages_until(&self, at_us: i64) -> usize {
        self.msgs.partition_point(|m| m.at_us <= at_us)
    }

    /// Number of conversations ever created (including deleted).
    pub(crate) fn len(&self) -> usize {
        self.convs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(n: u32, ties: u32) -> GenParams {
        GenParams {
            seed: 7,
            account: 0,
            conversations: n,
            now_us: 1_800_000_000_000_000,
            history_us: 30 * 86_400 * 1_000_000,
            tie_cluster_size: ties,
            unknown_enum_ratio: 0.02,
        }
    }

    #[test]
    fn arena_is_sorted_and_linked() {
        let w = AccountWorld::generate(Platform::Spruce, &params(500, 4));
        assert!(w.msgs.windows(2).all(|p| p[0].at_us <= p[1].at_us));
        for conv in &w.convs {
            let msgs = w.messages_of(conv);
            assert_eq!(msgs.len() as u32, conv.msg_count);
            if let Some(first) = msgs.first() {
                assert_eq!(w.msgs[*first as usize].at_us, conv.last_activity_us);
            }
        }
    }

    #[test]
    fn delayed_changes_publish_later() {
        let mut w = AccountWorld::generate(Platform::D365, &params(50, 0));
        let now = 1_800_000_000_000_000;
        let open = w.index_len(IndexKind::Created);
        let seq = w.create(now, 1_000_000, Some(MessageKind::Inbound), 0, 0);
        assert!(w.visible(seq).is_none());
        assert_eq!(w.index_len(IndexKind::Created), open);
        w.settle(now + 999_999);
        assert_eq!(w.index_len(IndexKind::Created), open);
        w.settle(now + 1_000_000);
        assert_eq!(w.index_len(IndexKind::Created), open + 1);
        assert!(w.visible(seq).is_some());
    }
}
