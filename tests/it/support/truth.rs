//! The mirror compared with the truth it follows: one comparison for every test, with
//! what differs between providers (which columns an API reports, what a conversation it no
//! longer lists looks like) written down as data per provider rather than as a copy of
//! the comparison per test file.
//!
//! The rules, per provider:
//! - D365 lists only active conversations: exactly the active ones are active in the
//!   mirror, a mirrored row that left the list is closed, the columns the API does not
//!   report stay NULL, and message facts are filled only by the messages follow-up;
//! - Spruce, Sinch and HighLevel: every live conversation is mirrored with the columns
//!   the API reports; a deleted one is absent or marked deleted;
//! - every present row keeps the provider's JSON (which names the conversation), and no
//!   source holds a row its provider does not know.

use std::time::Duration;

use convsync::time::Timestamp;
use convsync_sim::{
    ConversationState, MessageDirection, Platform, SimAccounts, SimClient, SimHandle,
    TruthConversation,
};

use super::double::Double;
use super::mirror::{Mirror, MirrorDb, MirrorRow, read_mirror};

/// A source whose mirror follows one simulator account.
#[derive(Debug, Clone)]
pub struct TruthSource {
    /// The mirror's `source` column.
    pub name: String,
    pub provider: Platform,
    /// The simulator's account key (for `truth`).
    pub account: String,
    /// The mirror's `account` column.
    pub mirror_account: String,
    /// How far the source's configuration lets the mirror follow the truth.
    pub reach: Reach,
}

/// Where a source's settings, or a world that keeps moving, leave columns the mirror does
/// not follow exactly.
#[derive(Debug, Clone, Copy)]
pub struct Reach {
    /// D365 `messages = true`: the follow-up fills the message facts of active rows.
    pub d365_messages: bool,
    /// Spruce reads items (reply state) only of conversations active within this horizon.
    pub reply_state_horizon: Duration,
    /// Conversations change while the daemon syncs (background activity): an archived
    /// Spruce conversation keeps the reply state read while it was open, if any.
    pub archived_reply_state_may_lag: bool,
}

impl Reach {
    /// A quiet world that only the test changes, with the test schedule's horizon (longer
    /// than the simulator's history): every column follows the truth.
    pub const EXACT: Reach = Reach {
        d365_messages: false,
        reply_state_horizon: Duration::from_secs(365 * 86_400),
        archived_reply_state_may_lag: false,
    };

    /// A world with background activity, synced with the product's default horizon.
    pub const BUSY: Reach = Reach {
        d365_messages: false,
        reply_state_horizon: Duration::from_secs(30 * 86_400),
        archived_reply_state_may_lag: true,
    };
}

impl TruthSource {
    /// The `index`th D365 channel of `sim`, mirrored as `name`.
    pub fn d365(sim: &SimHandle, index: usize, name: &str) -> TruthSource {
        TruthSource::account(sim.accounts(), Platform::D365, index, name)
    }

    /// The `index`th Spruce organization of `sim`, mirrored as `name`.
    pub fn spruce(sim: &SimHandle, index: usize, name: &str) -> TruthSource {
        TruthSource::account(sim.accounts(), Platform::Spruce, index, name)
    }

    /// The `index`th Sinch app of `sim`, mirrored as `name`.
    pub fn sinch(sim: &SimHandle, index: usize, name: &str) -> TruthSource {
        TruthSource::account(sim.accounts(), Platform::Sinch, index, name)
    }

    /// The `index`th HighLevel location of `sim`, mirrored as `name`.
    pub fn highlevel(sim: &SimHandle, index: usize, name: &str) -> TruthSource {
        TruthSource::account(sim.accounts(), Platform::HighLevel, index, name)
    }

    /// The `index`th account of `provider` among `accounts` (of a simulator in this
    /// process, or of a `convsync simulate` child read over its control API), mirrored as
    /// `name`.
    pub fn account(
        accounts: &SimAccounts,
        provider: Platform,
        index: usize,
        name: &str,
    ) -> TruthSource {
        let (account, mirror_account) = match provider {
            Platform::D365 => {
                let a = &accounts.d365[index];
                (&a.account, &a.channel_id)
            }
            Platform::Spruce => {
                let a = &accounts.spruce[index];
                (&a.account, &a.organization_id)
            }
            Platform::Sinch => {
                let a = &accounts.sinch[index];
                (&a.account, &a.app_id)
            }
            Platform::HighLevel => {
                let a = &accounts.highlevel[index];
                (&a.account, &a.location_id)
            }
        };
        TruthSource::new(name, provider, account, mirror_account)
    }

    fn new(name: &str, provider: Platform, account: &str, mirror_account: &str) -> TruthSource {
        TruthSource {
            name: name.to_owned(),
            provider,
            account: account.to_owned(),
            mirror_account: mirror_account.to_owned(),
            reach: Reach::EXACT,
        }
    }

    /// The same source, followed as far as `reach` allows.
    pub fn reaching(self, reach: Reach) -> TruthSource {
        TruthSource { reach, ..self }
    }
}

/// A simulator whose truth is read: in this process, or a `convsync simulate` child
/// over its control API.
#[derive(Clone)]
pub enum SimTruth {
    InProcess(SimHandle),
    Control(SimClient),
}

impl SimTruth {
    /// Every conversation of one account, as the simulator holds it now.
    async fn conversations(&self, provider: Platform, account: &str) -> Vec<TruthConversation> {
        match self {
            SimTruth::InProcess(sim) => sim.truth(provider, account).await.unwrap(),
            SimTruth::Control(client) => client.truth(provider, account).await.unwrap(),
        }
    }
}

/// What a mirror is compared with.
#[derive(Clone)]
pub enum Truth {
    /// Simulator accounts, each mirrored by one source.
    Simulator {
        sim: SimTruth,
        sources: Vec<TruthSource>,
    },
    /// The engine tests' double, mirrored by one source. The double forgets a removed
    /// conversation, so a row it no longer knows may stay if it is marked deleted.
    Double { double: Double, source: String },
}

impl Truth {
    pub fn simulator(sim: &SimHandle, sources: Vec<TruthSource>) -> Truth {
        Truth::Simulator {
            sim: SimTruth::InProcess(sim.clone()),
            sources,
        }
    }

    /// The truth of a simulator in another process, read through its control API.
    pub fn control(client: &SimClient, sources: Vec<TruthSource>) -> Truth {
        Truth::Simulator {
            sim: SimTruth::Control(client.clone()),
            sources,
        }
    }

    pub fn double(double: &Double, source: &str) -> Truth {
        Truth::Double {
            double: double.clone(),
            source: source.to_owned(),
        }
    }

    /// The same truth for the one source named `source` (the others may lag on purpose).
    pub fn of_source(&self, source: &str) -> Truth {
        match self {
            Truth::Simulator { sim, sources } => Truth::Simulator {
                sim: sim.clone(),
                sources: sources
                    .iter()
                    .filter(|s| s.name == source)
                    .cloned()
                    .collect(),
            },
            Truth::Double { .. } => self.clone(),
        }
    }

    /// Every difference between the mirror in `db` and the truth, one line each.
    pub async fn differences<'a>(&self, db: impl Into<MirrorDb<'a>>) -> Vec<String> {
        let db = db.into();
        let mut problems = Vec::new();
        match self {
            Truth::Simulator { sim, sources } => {
                assert!(!sources.is_empty(), "no source follows this truth");
                for source in sources {
                    let truth = sim.conversations(source.provider, &source.account).await;
                    assert!(
                        !truth.is_empty(),
                        "{}: the simulated world is empty",
                        source.name
                    );
                    let mirror = read_mirror(db, &source.name).await;
                    let expected = truth
                        .iter()
                        .map(|t| simulator_row(source, t, mirror.get(&t.id)))
                        .collect();
                    problems.extend(compare(&source.name, expected, &mirror, Unknown::Forbidden));
                }
            }
            Truth::Double { double, source } => {
                let mirror = read_mirror(db, source).await;
                let expected = double
                    .truth()
                    .into_iter()
                    .map(|c| Expected {
                        id: c.id,
                        presence: Presence::Live,
                        columns: vec![
                            (Column::Title, Some(c.name)),
                            (Column::LastActivityAt, Some(c.updated_at.to_mirror_text())),
                        ],
                    })
                    .collect();
                problems.extend(compare(source, expected, &mirror, Unknown::IfDeleted));
            }
        }
        problems
    }

    /// Panics with the first differences, if there are any.
    pub async fn assert_matches<'a>(&self, db: impl Into<MirrorDb<'a>>) {
        let problems = self.differences(db).await;
        assert!(
            problems.is_empty(),
            "{} difference(s) between mirror and truth:\n{}",
            problems.len(),
            first_lines(&problems, 15)
        );
    }
}

/// The first `n` of `lines`, one a line.
pub fn first_lines(lines: &[String], n: usize) -> String {
    lines.iter().take(n).cloned().collect::<Vec<_>>().join("\n")
}

/// What the mirror must hold for one conversation of the truth.
struct Expected {
    id: String,
    presence: Presence,
    /// Columns and the values they must have (booleans as `1`/`0`, NULL as `None`).
    columns: Vec<(Column, Option<String>)>,
}

enum Presence {
    /// Mirrored and not deleted.
    Live,
    /// Mirrored or never seen (D365: closed before it was ever listed).
    Optional,
    /// Absent, or marked deleted.
    Gone,
}

/// What a mirror row unknown to the truth means.
enum Unknown {
    Forbidden,
    /// Allowed when it is marked deleted (a truth that forgets deletions).
    IfDeleted,
}

/// The mirror columns the rules name.
#[derive(Debug, Clone, Copy)]
enum Column {
    Provider,
    Account,
    CreatedAt,
    LastActivityAt,
    Active,
    Closed,
    Deleted,
    Status,
    Channel,
    ContactId,
    ContactName,
    Title,
    Assignee,
    UnreadCount,
    LastMessageDirection,
    LastInboundAt,
    LastOutboundAt,
    AwaitingReply,
}

impl Column {
    /// The row's value as the rules write it.
    fn of(self, row: &MirrorRow) -> Option<String> {
        match self {
            Column::Provider => Some(row.provider.clone()),
            Column::Account => Some(row.account.clone()),
            Column::CreatedAt => row.created_at.clone(),
            Column::LastActivityAt => row.last_activity_at.clone(),
            Column::Active => row.active.and_then(flag),
            Column::Closed => flag(row.is_closed()),
            Column::Deleted => flag(row.is_deleted()),
            Column::Status => row.status.clone(),
            Column::Channel => row.channel.clone(),
            Column::ContactId => row.contact_id.clone(),
            Column::ContactName => row.contact_name.clone(),
            Column::Title => row.title.clone(),
            Column::Assignee => row.assignee.clone(),
            Column::UnreadCount => row.unread_count.map(|n| n.to_string()),
            Column::LastMessageDirection => row.last_message_direction.clone(),
            Column::LastInboundAt => row.last_inbound_at.clone(),
            Column::LastOutboundAt => row.last_outbound_at.clone(),
            Column::AwaitingReply => row.awaiting_reply.and_then(flag),
        }
    }
}

/// Every way `mirror` differs from `expected`, prefixed with the source's name.
fn compare(
    source: &str,
    expected: Vec<Expected>,
    mirror: &Mirror,
    unknown: Unknown,
) -> Vec<String> {
    let mut problems = Vec::new();
    for want in &expected {
        let id = &want.id;
        let row = match (mirror.get(id), &want.presence) {
            (None, Presence::Live) => {
                problems.push(format!("{source} {id}: missing from the mirror"));
                continue;
            }
            (None, _) => continue,
            (Some(row), Presence::Gone) => {
                if !row.is_deleted() {
                    problems.push(format!("{source} {id}: deleted at the provider but live"));
                }
                continue;
            }
            (Some(row), _) => row,
        };
        if !row.raw.contains(id.as_str()) {
            problems.push(format!("{source} {id}: raw does not name it: {}", row.raw));
        }
        let wrong: Vec<String> = want
            .columns
            .iter()
            .filter(|(column, value)| column.of(row) != *value)
            .map(|(column, value)| format!("{column:?} is {:?}, truth {value:?}", column.of(row)))
            .collect();
        if !wrong.is_empty() {
            problems.push(format!("{source} {id}: {}", wrong.join("; ")));
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|e| e.id.as_str()).collect();
    for (id, row) in mirror.iter().filter(|(id, _)| !known.contains(id.as_str())) {
        if matches!(unknown, Unknown::Forbidden) || !row.is_deleted() {
            problems.push(format!(
                "{source} {id}: in the mirror but unknown to the provider"
            ));
        }
    }
    problems
}

fn text(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<String> {
    t.map(|t| Timestamp::from(t).to_mirror_text())
}

fn flag(b: bool) -> Option<String> {
    Some(if b { "1" } else { "0" }.to_owned())
}

/// The mirror's `last_message_direction` for the truth's newest message; `None` when the
/// newest item is internal: the mirror keeps the newest message that counts, which the
/// truth does not name.
fn direction(t: &TruthConversation) -> Option<Option<String>> {
    match t.last_message_direction {
        Some(MessageDirection::Inbound) => Some(Some("inbound".into())),
        Some(MessageDirection::Outbound) => Some(Some("outbound".into())),
        Some(MessageDirection::Internal) => None,
        None => Some(None),
    }
}

/// What the mirror of `source` must hold for `t`, by its provider's rules; `row` is what
/// it holds (Spruce's reply state may be unknown, which only the row tells).
fn simulator_row(source: &TruthSource, t: &TruthConversation, row: Option<&MirrorRow>) -> Expected {
    let mut columns = vec![
        (Column::Account, Some(source.mirror_account.clone())),
        (Column::Provider, Some(source.provider.as_str().to_owned())),
    ];
    let presence = match source.provider {
        Platform::D365 => {
            let active = t.state == ConversationState::Active && !t.deleted;
            columns.extend(d365_columns(t, active, source.reach));
            // D365 lists only active conversations: one that closed before it was ever
            // listed was never visible.
            if active {
                Presence::Live
            } else {
                Presence::Optional
            }
        }
        _ if t.deleted => Presence::Gone,
        Platform::Spruce => {
            columns.extend(spruce_columns(t, source.reach, row));
            Presence::Live
        }
        Platform::Sinch => {
            let active = t.state == ConversationState::Active;
            columns.extend([
                (Column::Active, flag(active)),
                (Column::Closed, flag(!active)),
                (Column::Deleted, flag(false)),
                (Column::LastActivityAt, text(t.last_activity_at)),
                (Column::Channel, Some(t.channel.clone())),
                (Column::ContactId, Some(t.contact_id.clone())),
                (Column::LastMessageDirection, direction(t).unwrap_or(None)),
            ]);
            Presence::Live
        }
        Platform::HighLevel => {
            columns.extend([
                (Column::CreatedAt, text(Some(t.created_at))),
                (Column::LastActivityAt, text(t.last_activity_at)),
                (Column::Active, flag(true)),
                (Column::Deleted, flag(false)),
                (
                    Column::Status,
                    Some(if t.unread_count > 0 { "unread" } else { "read" }.into()),
                ),
                (Column::Channel, Some(t.channel.clone())),
                (Column::ContactId, Some(t.contact_id.clone())),
                (Column::ContactName, Some(t.contact_name.clone())),
                (Column::Title, None),
                (Column::Assignee, t.assignee.clone()),
                (Column::UnreadCount, Some(t.unread_count.to_string())),
            ]);
            if let Some(d) = direction(t) {
                columns.push((Column::LastMessageDirection, d));
            }
            Presence::Live
        }
    };
    Expected {
        id: t.id.clone(),
        presence,
        columns,
    }
}

/// D365: creation time and lifecycle from the listing, the source's `custom` channel, no
/// status, title or contact; message facts only from the messages follow-up, for active conversations.
fn d365_columns(
    t: &TruthConversation,
    active: bool,
    reach: Reach,
) -> Vec<(Column, Option<String>)> {
    let mut columns = vec![
        (Column::CreatedAt, text(Some(t.created_at))),
        (Column::Active, flag(active)),
        (Column::Closed, flag(!active)),
        (Column::Deleted, flag(false)),
        (Column::Status, None),
        (Column::Channel, Some("custom".to_owned())),
        (Column::Title, None),
        (Column::ContactName, None),
    ];
    if !reach.d365_messages {
        columns.extend([
            (Column::LastActivityAt, None),
            (Column::LastMessageDirection, None),
            (Column::AwaitingReply, None),
        ]);
    } else if active {
        let direction = t.last_message_direction.map(|d| match d {
            MessageDirection::Inbound => "inbound".to_owned(),
            _ => "outbound".to_owned(),
        });
        columns.extend([
            (Column::LastActivityAt, text(t.last_activity_at)),
            (Column::LastMessageDirection, direction),
            (Column::LastInboundAt, text(t.last_inbound_at)),
            (Column::LastOutboundAt, text(t.last_outbound_at)),
            (
                Column::AwaitingReply,
                (t.message_count > 0)
                    .then_some(t.awaiting_reply)
                    .and_then(flag),
            ),
        ]);
    }
    columns
}

/// Spruce: every listed column, and the reply state where the items were read.
fn spruce_columns(
    t: &TruthConversation,
    reach: Reach,
    row: Option<&MirrorRow>,
) -> Vec<(Column, Option<String>)> {
    // Team and note conversations have no external participant to name.
    let internal_only = matches!(t.channel.as_str(), "team" | "note");
    let mut columns = vec![
        (Column::CreatedAt, text(Some(t.created_at))),
        (Column::LastActivityAt, text(t.last_activity_at)),
        (Column::Active, flag(t.state != ConversationState::Archived)),
        (Column::Deleted, flag(false)),
        (Column::Channel, Some(t.channel.clone())),
        (Column::ContactId, Some(t.contact_id.clone())),
        (
            Column::ContactName,
            (!internal_only).then(|| t.contact_name.clone()),
        ),
        (Column::Title, Some(t.title.clone())),
        (Column::Assignee, t.assignee.clone()),
    ];
    if !spruce_reply_state_may_be_unknown(t, reach, row) {
        columns.extend([
            (Column::LastInboundAt, text(t.last_inbound_at)),
            (Column::LastOutboundAt, text(t.last_outbound_at)),
            (Column::AwaitingReply, flag(t.awaiting_reply)),
        ]);
        if let Some(d) = direction(t) {
            columns.push((Column::LastMessageDirection, d));
        }
    }
    columns
}

/// Whether a Spruce row's reply state may differ from the truth: items are read only for
/// open conversations active within the horizon (a day less here, so that a conversation
/// on the edge when the sync ran counts either way), so an archived or dormant one whose
/// reply columns are all NULL was never read; in a busy world an archived one holds what
/// was read while it was open.
fn spruce_reply_state_may_be_unknown(
    t: &TruthConversation,
    reach: Reach,
    row: Option<&MirrorRow>,
) -> bool {
    let archived = t.state == ConversationState::Archived;
    let unread = row.is_some_and(MirrorRow::reply_state_unread);
    let edge = chrono::Utc::now() - chrono::Duration::from_std(reach.reply_state_horizon).unwrap()
        + chrono::Duration::days(1);
    let dormant = t.last_activity_at.unwrap_or(t.created_at) < edge;
    (unread && (archived || dormant)) || (archived && reach.archived_reply_state_may_lag)
}
