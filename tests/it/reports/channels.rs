//! `channel_kind`: the `channel_kinds` table is what docs/providers/*.md show, its kinds are
//! the vocabulary docs/schema.md defines, and every channel the simulator sends gets the
//! kind it is meant to, in any letter case.

use std::collections::{BTreeMap, BTreeSet};

use convsync::record::ConversationRecord;
use convsync_sim::{Platform, channel_table, unknown_channel};
use serde_json::value::RawValue;

use super::mirror_records;
use crate::support::TestDb;
use crate::support::stores::{Backend, MirrorSql, on_both_stores};

on_both_stores!(
    provider_pages_show_the_channel_kinds_rows,
    every_simulated_channel_has_its_kind
);

const PROVIDERS: [(Platform, &str); 4] = [
    (Platform::D365, "d365"),
    (Platform::Spruce, "spruce"),
    (Platform::Sinch, "sinch"),
    (Platform::HighLevel, "highlevel"),
];

/// A documentation page of the repository.
fn page_text(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The (channel, kind) rows of a provider page's marked "Channel kinds" table.
fn documented_rows(provider: &str) -> Vec<(String, String)> {
    let text = page_text(&format!("docs/providers/{provider}.md"));
    let start = text
        .find("<!-- channel-kinds:")
        .unwrap_or_else(|| panic!("docs/providers/{provider}.md has no channel-kinds marker"));
    let end = start
        + text[start..]
            .find("<!-- end channel-kinds -->")
            .expect("an end marker");
    text[start..end]
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
            match cells.as_slice() {
                [channel, kind] if !channel.contains("---") => Some((
                    channel.trim().trim_matches('`').to_owned(),
                    kind.trim().trim_matches('`').to_owned(),
                )),
                _ => None,
            }
        })
        .filter(|(channel, _)| channel != "channel")
        .collect()
}

/// The kinds docs/schema.md's vocabulary table defines.
fn documented_vocabulary() -> BTreeSet<String> {
    let text = page_text("docs/schema.md");
    let start = text.find("**`channel_kind` vocabulary.**").unwrap();
    let end = start + text[start..].find("### `v1_conversations`").unwrap();
    text[start..end]
        .lines()
        .filter(|line| line.starts_with("| `"))
        .flat_map(|line| {
            let first = line.split('|').nth(1).unwrap();
            first
                .split(',')
                .map(|kind| kind.trim().trim_matches('`').to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Each provider page shows exactly the `channel_kinds` rows of its provider, and every
/// kind the table gives is one docs/schema.md defines.
async fn provider_pages_show_the_channel_kinds_rows(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    let table: BTreeSet<(String, String, String)> = store
        .sql_rows("SELECT provider, channel, kind FROM channel_kinds")
        .await
        .into_iter()
        .collect();
    let documented: BTreeSet<(String, String, String)> = PROVIDERS
        .iter()
        .flat_map(|(_, provider)| {
            documented_rows(provider)
                .into_iter()
                .map(|(channel, kind)| (provider.to_string(), channel, kind))
        })
        .collect();
    assert!(
        table.len() > 30,
        "the migration filled the table: {table:?}"
    );
    assert_eq!(documented, table, "docs/providers/*.md vs channel_kinds");

    let vocabulary = documented_vocabulary();
    assert!(vocabulary.contains("other"), "{vocabulary:?}");
    let undefined: Vec<_> = table
        .iter()
        .filter(|(_, _, kind)| !vocabulary.contains(kind))
        .collect();
    assert!(
        undefined.is_empty(),
        "kinds not in docs/schema.md: {undefined:?}"
    );
    store.close().await;
}

/// A conversation of `channel` (NULL when `None`) with id `id`.
fn conversation(id: &str, channel: Option<&str>) -> ConversationRecord {
    let raw = serde_json::json!({ "id": id }).to_string();
    let mut record = ConversationRecord::new(id, RawValue::from_string(raw).unwrap());
    record.channel = channel.map(str::to_owned);
    record.active = Some(true);
    record
}

/// Every channel word the simulator documents for a provider has a kind other than
/// `other` (Spruce's own `other` excepted), in its documented spelling, lower and upper
/// case alike; the simulator's undocumented words are `other`; a NULL channel has a NULL
/// kind.
async fn every_simulated_channel_has_its_kind(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    for (platform, provider) in PROVIDERS {
        let mut records = vec![conversation("no-channel", None)];
        for word in channel_table(platform)
            .iter()
            .copied()
            .chain([unknown_channel(platform)])
        {
            records.push(conversation(&format!("as-is:{word}"), Some(word)));
            records.push(conversation(
                &format!("lower:{word}"),
                Some(&word.to_lowercase()),
            ));
            records.push(conversation(
                &format!("upper:{word}"),
                Some(&word.to_uppercase()),
            ));
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        records.dedup_by(|a, b| a.id == b.id);
        mirror_records(&store, provider, &records).await;
    }

    let kinds: BTreeMap<(String, String), Option<String>> = store
        .sql_rows::<(String, String, Option<String>)>(
            "SELECT provider, conversation_id, channel_kind FROM v1_conversations",
        )
        .await
        .into_iter()
        .map(|(provider, id, kind)| ((provider, id), kind))
        .collect();
    let kind = |provider: &str, id: String| -> Option<String> {
        kinds
            .get(&(provider.to_owned(), id.clone()))
            .unwrap_or_else(|| panic!("no row {provider}/{id}"))
            .clone()
    };
    for (platform, provider) in PROVIDERS {
        assert_eq!(kind(provider, "no-channel".into()), None, "{provider}");
        for word in channel_table(platform) {
            let documented = kind(provider, format!("as-is:{word}"));
            let meant_other = (provider, *word) == ("spruce", "other");
            match documented.as_deref() {
                Some("other") => assert!(meant_other, "{provider} {word} maps to other"),
                Some(_) => assert!(!meant_other, "{provider} {word}: {documented:?}"),
                None => panic!("{provider} {word} has no kind"),
            }
            for case in ["lower", "upper"] {
                assert_eq!(
                    kind(provider, format!("{case}:{word}")),
                    documented,
                    "{provider} {word} in {case} case"
                );
            }
        }
        let unknown = unknown_channel(platform);
        if !channel_table(platform).contains(&unknown) {
            assert_eq!(
                kind(provider, format!("as-is:{unknown}")).as_deref(),
                Some("other"),
                "{provider}'s undocumented {unknown}"
            );
        }
    }
    store.close().await;
}
