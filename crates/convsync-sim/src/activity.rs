//! Changes to the world: targeted mutations (for tests) and the random activity
//! generator (for demos and benchmarks).
//!
//! The generator draws every choice from one seeded generator and bases its choices on
//! the truth only (never on what is visible or on the clock), so the same seed yields the
//! same sequence of changes whatever the timing; only the timestamps follow the clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::fake;
use super::ids::hash_all;
use super::naming;
use super::platform::Platform;
use super::state::Shared;
use super::webhooks::events::{self, Touch};
use super::world::{AccountWorld, Lifecycle, MessageKind, TEAMMATES};

/// A non-activity field a test can change (none of them moves the last-activity time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditField {
    /// Title / contact name (Spruce `title`, HighLevel `fullName`/`contactName`).
    Title,
    /// Reassign to the next teammate (or unassign after the last one).
    Assignee,
    /// Toggle read/unread (HighLevel `unreadCount`).
    Unread,
    /// Toggle starred (HighLevel `starred`).
    Starred,
}

/// A targeted change to one account's world.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mutation {
    /// Create conversations, each with a first inbound message (D365: created only).
    CreateConversations {
        /// How many.
        count: u32,
    },
    /// Create conversations without any message (Sinch: `last_received` = 1970; D365 is
    /// the same as `CreateConversations`, whose conversations have none either).
    CreateEmptyConversations {
        /// How many.
        count: u32,
    },
    /// Add a message to a conversation (moves its last activity, except D365 whose list
    /// shows creation time only).
    AddMessage {
        /// Conversation id.
        id: String,
        /// Inbound, outbound, outbound_automated or internal_note.
        message: MessageKind,
    },
    /// Close it: D365 close (vanishes), Sinch deactivate, Spruce archive.
    /// HighLevel has no closed state and refuses this.
    Close {
        /// Conversation id.
        id: String,
    },
    /// Delete it (vanishes from every listing).
    Delete {
        /// Conversation id.
        id: String,
    },
    /// Change a field that does not move the last-activity time.
    Edit {
        /// Conversation id.
        id: String,
        /// Which field.
        field: EditField,
    },
    /// `size` conversations sharing one exact timestamp: D365 creates them (creation
    /// time is its only time); the others give `size` existing conversations an inbound
    /// message at one identical instant (new conversations if too few exist).
    TieCluster {
        /// Cluster size.
        size: u32,
    },
    /// HighLevel: the marketplace app was installed on the location (its webhook
    /// `INSTALL` event; the location's data is unchanged): the agency's installed-locations
    /// listing names it again and its tokens can be minted.
    AppInstall,
    /// HighLevel: the app was uninstalled from the location (`UNINSTALL`): the listing
    /// leaves it out, no token is minted for it and its access tokens are refused.
    AppUninstall,
}

/// Why a mutation or query was refused.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// No such account for the provider.
    #[error("{provider} has no account {account:?}")]
    UnknownAccount {
        /// Platform asked for.
        provider: Platform,
        /// Account key asked for.
        account: String,
    },
    /// No such conversation in the account.
    #[error("{provider} account has no conversation {id:?}")]
    UnknownConversation {
        /// Platform asked for.
        provider: Platform,
        /// Conversation id asked for.
        id: String,
    },
    /// The conversation's state forbids the change (e.g. message to a closed D365 one).
    #[error("{0}")]
    Conflict(String),
    /// The provider has no such concept (e.g. closing a HighLevel conversation).
    #[error("{0}")]
    Unsupported(String),
}

/// Ids of the conversations a mutation touched.
pub type Affected = Vec<String>;

fn conversation(shared: &Shared, world: &AccountWorld, id: &str) -> Result<u32, SimError> {
    let seq =
        naming::parse_conversation_id(world, id).ok_or_else(|| SimError::UnknownConversation {
            provider: shared.provider,
            id: id.to_owned(),
        })?;
    if world.convs[seq as usize].deleted {
        return Err(SimError::Conflict(format!("conversation {id} is deleted")));
    }
    Ok(seq)
}

/// Can this conversation receive a message without first being reopened?
fn accepts_messages(provider: Platform, world: &AccountWorld, seq: u32) -> bool {
    let conv = &world.convs[seq as usize];
    !conv.deleted && (conv.is_open() || matches!(provider, Platform::Spruce | Platform::HighLevel))
}

/// Apply a targeted mutation to account `account` of `shared`'s provider, and queue the
/// webhook events it causes (when the account has a webhook target).
pub(crate) fn apply(
    shared: &Shared,
    account: usize,
    mutation: &Mutation,
    skew_us: i64,
) -> Result<Affected, SimError> {
    let mut state = shared.lock();
    let world = &mut state.accounts[account];
    let touches = change(shared, world, mutation, skew_us)?;
    match mutation {
        Mutation::AppInstall => {
            state.uninstalled.remove(&account);
        }
        Mutation::AppUninstall => {
            state.uninstalled.insert(account);
        }
        _ => {}
    }
    let world = &state.accounts[account];
    let affected = touches
        .iter()
        .filter(|(_, touch)| !matches!(touch, Touch::Installed(_)))
        .map(|(seq, _)| naming::conversation_id(world, *seq))
        .collect();
    if shared.webhooks.wants(shared.provider, account) {
        let events = touches
            .into_iter()
            .flat_map(|(seq, touch)| {
                events::render(shared, &shared.webhooks.ids, account, world, seq, touch)
            })
            .collect();
        drop(state);
        shared.webhooks.enqueue(events);
    }
    Ok(affected)
}

/// Apply `mutation` to `world`; returns what changed, conversation by conversation.
fn change(
    shared: &Shared,
    world: &mut AccountWorld,
    mutation: &Mutation,
    skew_us: i64,
) -> Result<Vec<(u32, Touch)>, SimError> {
    let provider = shared.provider;
    let now = shared.clock.now_us();
    let delay = shared.faults().delay_us();
    let unknown_ratio = shared.options.unknown_enum_ratio;
    match mutation {
        Mutation::CreateConversations { count } | Mutation::CreateEmptyConversations { count } => {
            let with_message = matches!(mutation, Mutation::CreateConversations { .. });
            let mut out = Vec::new();
            for _ in 0..*count {
                let h = hash_all(&[world.key, world.len() as u64, 0xC4EA7E]);
                let channel = fake::pick_channel(provider, h, unknown_ratio);
                let first =
                    (with_message && provider != Platform::D365).then_some(MessageKind::Inbound);
                let seq = world.create(now, delay, first, channel, 0);
                out.push((seq, Touch::Created));
            }
            Ok(out)
        }
        Mutation::AddMessage { id, message } => {
            let seq = conversation(shared, world, id)?;
            if !accepts_messages(provider, world, seq) {
                return Err(SimError::Conflict(format!(
                    "conversation {id} is closed and cannot receive messages"
                )));
            }
            let unread_before = world.convs[seq as usize].unread;
            world.add_message(seq, *message, now, delay, skew_us);
            Ok(vec![(seq, Touch::Message { unread_before })])
        }
        Mutation::Close { id } => {
            if provider == Platform::HighLevel {
                return Err(SimError::Unsupported(
                    "HighLevel conversations have no closed state; edit unread/starred instead"
                        .to_owned(),
                ));
            }
            let seq = conversation(shared, world, id)?;
            world.update(seq, now, delay, |c| c.lifecycle = Lifecycle::Closed);
            Ok(vec![(seq, Touch::Closed)])
        }
        Mutation::Delete { id } => {
            let seq = conversation(shared, world, id)?;
            world.update(seq, now, delay, |c| c.deleted = true);
            Ok(vec![(seq, Touch::Deleted)])
        }
        Mutation::Edit { id, field } => {
            let seq = conversation(shared, world, id)?;
            world.update(seq, now, delay, |c| match field {
                EditField::Title => c.title_rev = c.title_rev.wrapping_add(1),
                EditField::Assignee => c.assignee = (c.assignee + 1) % (TEAMMATES + 1),
                EditField::Unread => c.unread = if c.unread > 0 { 0 } else { 1 },
                EditField::Starred => c.starred = !c.starred,
            });
            Ok(vec![(seq, Touch::Edited(*field))])
        }
        Mutation::TieCluster { size } => {
            let channel = fake::pick_channel(provider, world.key, 0.0);
            if provider == Platform::D365 {
                let created = world.create_tie_cluster(*size, now, delay, channel);
                return Ok(created.into_iter().map(|s| (s, Touch::Created)).collect());
            }
            let existing = world.len() as u32;
            let mut chosen: Vec<u32> = (0..existing)
                .rev()
                .filter(|s| accepts_messages(provider, world, *s))
                .step_by(3)
                .take(*size as usize)
                .collect();
            if chosen.len() < *size as usize {
                let missing = *size - chosen.len() as u32;
                chosen.extend(world.create_tie_cluster(missing, now, delay, channel));
            }
            let unread: Vec<u16> = chosen
                .iter()
                .map(|s| world.convs[*s as usize].unread)
                .collect();
            // Give every member the same message instant (creation above may have
            // used the same instant already; the arena keeps order either way).
            world.message_tie_cluster(&chosen, now, delay);
            Ok(chosen
                .into_iter()
                .zip(unread)
                .map(|(seq, unread_before)| {
                    let touch = if seq >= existing {
                        Touch::Created
                    } else {
                        Touch::Message { unread_before }
                    };
                    (seq, touch)
                })
                .collect())
        }
        Mutation::AppInstall | Mutation::AppUninstall => {
            if provider != Platform::HighLevel {
                return Err(SimError::Unsupported(
                    "only HighLevel locations install and uninstall apps".to_owned(),
                ));
            }
            Ok(vec![(
                0,
                Touch::Installed(matches!(mutation, Mutation::AppInstall)),
            )])
        }
    }
}

/// The random activity generator.
pub(crate) struct ActivityEngine {
    rng: std::sync::Mutex<StdRng>,
    paused: AtomicBool,
}

impl ActivityEngine {
    pub(crate) fn new(seed: u64) -> Self {
        ActivityEngine {
            rng: std::sync::Mutex::new(StdRng::seed_from_u64(hash_all(&[seed, 0xAC7]))),
            paused: AtomicBool::new(false),
        }
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Apply `n` random changes now; returns the ids touched.
    pub(crate) fn apply_random(&self, providers: &[Arc<Shared>], n: u64) -> Affected {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let candidates: Vec<&Arc<Shared>> = providers
            .iter()
            .filter(|s| s.options.accounts_of(s.provider) > 0)
            .collect();
        let mut affected = Vec::new();
        if candidates.is_empty() {
            return affected;
        }
        for _ in 0..n {
            let shared = candidates[rng.random_range(0..candidates.len())];
            let accounts = shared.options.accounts_of(shared.provider) as usize;
            let account = rng.random_range(0..accounts);
            let mutation = random_mutation(shared, account, &mut rng);
            let skew = match &mutation {
                Mutation::AddMessage { .. } => shared.fault_state().future_skew_us(),
                _ => 0,
            };
            match apply(shared, account, &mutation, skew) {
                Ok(ids) => affected.extend(ids),
                Err(error) => tracing::debug!(%error, "random activity skipped"),
            }
        }
        affected
    }

    /// Run the generator at `rate` changes per second until cancelled.
    pub(crate) async fn run(
        self: Arc<Self>,
        providers: Vec<Arc<Shared>>,
        rate: f64,
        cancel: CancellationToken,
    ) {
        if rate <= 0.0 {
            return;
        }
        let tick = Duration::from_millis(100);
        let mut interval = tokio::time::interval(tick);
        let mut budget = 0.0;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = interval.tick() => {}
            }
            if self.is_paused() {
                continue;
            }
            budget += rate * tick.as_secs_f64();
            let n = budget.floor();
            budget -= n;
            if n >= 1.0 {
                let engine = Arc::clone(&self);
                let providers = providers.clone();
                let _ =
                    tokio::task::spawn_blocking(move || engine.apply_random(&providers, n as u64))
                        .await;
            }
        }
    }
}

/// Draw one plausible change for an account, based on its truth.
fn random_mutation(shared: &Shared, account: usize, rng: &mut StdRng) -> Mutation {
    let provider = shared.provider;
    let state = shared.lock();
    let world = &state.accounts[account];
    let roll: f64 = rng.random();
    let create = Mutation::CreateConversations { count: 1 };
    let len = world.len();
    if roll < 0.12 || len == 0 {
        return create;
    }
    let pick = |rng: &mut StdRng, need_messages: bool| -> Option<u32> {
        (0..8).find_map(|_| {
            let seq = rng.random_range(0..len) as u32;
            let conv = &world.convs[seq as usize];
            let ok = !conv.deleted && (!need_messages || accepts_messages(provider, world, seq));
            ok.then_some(seq)
        })
    };
    let id = |seq: u32| naming::conversation_id(world, seq);
    if roll < 0.80 {
        let Some(seq) = pick(rng, true) else {
            return create;
        };
        let message = if roll < 0.50 {
            MessageKind::Inbound
        } else if roll < 0.75 {
            world.random_kind(rng).max_outbound()
        } else if provider == Platform::Spruce {
            MessageKind::InternalNote
        } else {
            MessageKind::Outbound
        };
        return Mutation::AddMessage {
            id: id(seq),
            message,
        };
    }
    let Some(seq) = pick(rng, false) else {
        return create;
    };
    if roll < 0.88 {
        if provider == Platform::HighLevel {
            let field = if rng.random_bool(0.5) {
                EditField::Unread
            } else {
                EditField::Starred
            };
            return Mutation::Edit { id: id(seq), field };
        }
        return Mutation::Close { id: id(seq) };
    }
    if roll < 0.90 {
        return Mutation::Delete { id: id(seq) };
    }
    let field = [
        EditField::Title,
        EditField::Assignee,
        EditField::Unread,
        EditField::Starred,
    ][rng.random_range(0..4)];
    Mutation::Edit { id: id(seq), field }
}

impl MessageKind {
    /// Turn an inbound or note pick into an outbound one (keeps automated as is).
    fn max_outbound(self) -> MessageKind {
        match self {
            MessageKind::OutboundAutomated => MessageKind::OutboundAutomated,
            _ => MessageKind::Outbound,
        }
    }
}
