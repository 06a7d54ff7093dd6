//! Every provider's page and follow-up parsers, fed arbitrary JSON, arbitrary bytes and
//! mutated real pages from the simulator (proptest): they return a page or an error, and
//! never panic; every record they accept has an id, and an item they cannot read is
//! rejected rather than dropped.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use convsync::config::Config;
use convsync::http::HttpResponse;
use convsync::provider::{DetailRequest, Provider, WalkContext};
use convsync::time::Timestamp;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::support::app::spawn_app;
use crate::support::reliability::{Site, SiteOptions, sim_options};

/// The four providers as configured for a simulator, and one real first page of each of
/// their walks (fetched once).
struct Corpus {
    providers: Vec<Arc<dyn Provider>>,
    pages: Vec<Value>,
}

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        std::thread::spawn(|| {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async { fetch_corpus().await })
        })
        .join()
        .unwrap()
    })
}

async fn fetch_corpus() -> Corpus {
    let site = Site::start(sim_options(51, 30), SiteOptions::default()).await;
    let app = spawn_app(&Config::load(&site.config).unwrap()).await;
    let mut pages = Vec::new();
    for source in app.engine().sources() {
        let provider = &*source.provider;
        for walk in provider.walks() {
            let ctx = WalkContext {
                since: None,
                position: None,
            };
            let spec = walk.build_request(&ctx).unwrap();
            let response = source.client.send(&spec, provider).await.unwrap();
            pages.push(serde_json::from_slice(&response.body).unwrap());
        }
    }
    let providers = app
        .engine()
        .sources()
        .iter()
        .map(|s| s.provider.clone())
        .collect();
    Corpus { providers, pages }
}

fn response(body: Vec<u8>, status: StatusCode, headers: HeaderMap) -> HttpResponse {
    HttpResponse {
        status,
        headers,
        body: Bytes::from(body),
    }
}

/// Runs every parser of every provider on `body`; panics propagate to proptest.
fn parse_everywhere(body: &[u8], headers: &HeaderMap) {
    let since = Timestamp::now();
    let position = serde_json::json!({"after": 5, "phase": "list", "page_token": "x"});
    for provider in &corpus().providers {
        for walk in provider.walks() {
            for (since, position) in [(None, None), (Some(since), Some(&position))] {
                let ctx = WalkContext { since, position };
                let parsed = walk.parse_page(
                    &ctx,
                    &response(body.to_vec(), StatusCode::OK, headers.clone()),
                );
                if let Ok(page) = parsed {
                    for record in &page.records {
                        assert!(
                            !record.id.is_empty(),
                            "{:?}: a record without id",
                            provider.kind()
                        );
                    }
                }
            }
        }
        for kind in ["items", "messages", "fetch"] {
            let detail = DetailRequest {
                conversation_id: "c1".into(),
                kind: kind.into(),
                since: Some(since),
                position: None,
            };
            // A kind the provider does not queue is refused before any parsing.
            let Ok(follow_up) = provider.follow_ups().read_queued(&detail) else {
                continue;
            };
            for status in [StatusCode::OK, StatusCode::NOT_FOUND] {
                let _ = follow_up.parse_response(&response(body.to_vec(), status, headers.clone()));
            }
        }
        for status in [
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::NOT_FOUND,
            StatusCode::UNPROCESSABLE_ENTITY,
        ] {
            let _ = provider.describe_error(status, body);
            let _ = provider.is_position_rejected(status, body);
        }
        let _ = provider.pacing(headers);
    }
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("2026-03-01T12:00:00Z"),
            Just("2026-03-01T12:00:00.1234567Z"),
            Just("1772366400000"),
            Just("-1"),
            Just("TO_APP"),
            Just("")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("id".to_owned()),
            Just("conversations".to_owned()),
            Just("items".to_owned()),
            Just("value".to_owned()),
            Just("messages".to_owned()),
            Just("conversation".to_owned()),
            Just("next_page_token".to_owned()),
            Just("total".to_owned()),
            "[a-zA-Z_@.]{1,10}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces, removes or retypes values at random places of `value`.
fn mutate(value: &mut Value, rng: &mut StdRng, depth: u32) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                match rng.random_range(0..10) {
                    0 => {
                        map.remove(&key);
                    }
                    1 => {
                        map.insert(key, replacement(rng));
                    }
                    _ if depth < 6 => mutate(map.get_mut(&key).unwrap(), rng, depth + 1),
                    _ => {}
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            if rng.random_range(0..8) == 0 {
                let at = rng.random_range(0..items.len());
                items.insert(at, replacement(rng));
            }
            for item in items.iter_mut() {
                if depth < 6 && rng.random_range(0..2) == 0 {
                    mutate(item, rng, depth + 1);
                }
            }
        }
        other => {
            if rng.random_range(0..4) == 0 {
                *other = replacement(rng);
            }
        }
    }
}

fn replacement(rng: &mut StdRng) -> Value {
    match rng.random_range(0..9) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => Value::from(rng.random::<i64>()),
        3 => Value::from(rng.random::<f64>() * 1e15),
        4 => Value::String(String::new()),
        5 => Value::String("9999-99-99T99:99:99Z".into()),
        6 => Value::Array(Vec::new()),
        7 => serde_json::json!({}),
        _ => Value::String("\u{0}\u{ffff}💥".into()),
    }
}

fn pacing_headers(values: &[(u8, String)]) -> HeaderMap {
    const NAMES: [&str; 8] = [
        "retry-after",
        "s-ratelimit-remaining",
        "s-ratelimit-daily-remaining",
        "s-ratelimit-reset",
        "x-ratelimit-remaining",
        "x-ratelimit-interval-milliseconds",
        "x-ratelimit-daily-remaining",
        "x-ratelimit-max",
    ];
    let mut headers = HeaderMap::new();
    for (name, value) in values {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(
                HeaderName::from_static(NAMES[usize::from(*name) % NAMES.len()]),
                v,
            );
        }
    }
    headers
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// No provider parser panics on arbitrary JSON shaped like a listing.
    #[test]
    fn parsers_survive_arbitrary_json(value in arbitrary_json()) {
        let body = serde_json::to_vec(&value).unwrap();
        parse_everywhere(&body, &HeaderMap::new());
    }

    /// No provider parser panics on real pages with values removed, retyped or replaced,
    /// nor on their truncations, nor on arbitrary rate-limit headers.
    #[test]
    fn parsers_survive_mutated_real_pages(
        seed in any::<u64>(),
        cut in any::<prop::sample::Index>(),
        headers in prop::collection::vec((any::<u8>(), "[0-9a-z .-]{0,12}"), 0..4),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let pages = &corpus().pages;
        let mut page = pages[rng.random_range(0..pages.len())].clone();
        mutate(&mut page, &mut rng, 0);
        let body = serde_json::to_vec(&page).unwrap();
        let headers = pacing_headers(&headers);
        parse_everywhere(&body, &headers);
        parse_everywhere(&body[..cut.index(body.len() + 1)], &headers);
    }

    /// No provider parser panics on arbitrary bytes.
    #[test]
    fn parsers_survive_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        parse_everywhere(&body, &HeaderMap::new());
    }
}

/// A listed item without an id is rejected with its raw JSON, not dropped and not a
/// failure of the page: for every provider, removing the id of the first item of a real
/// page yields one rejected record.
#[test]
fn an_item_without_id_is_rejected_not_dropped() {
    let corpus = corpus();
    let mut rejected_somewhere = 0;
    for provider in &corpus.providers {
        for walk in provider.walks() {
            for page in &corpus.pages {
                let mut page = page.clone();
                let Some(item) = first_item(&mut page) else {
                    continue;
                };
                let removed = strip_ids(item);
                if !removed {
                    continue;
                }
                let ctx = WalkContext {
                    since: None,
                    position: None,
                };
                let body = serde_json::to_vec(&page).unwrap();
                if let Ok(parsed) =
                    walk.parse_page(&ctx, &response(body, StatusCode::OK, HeaderMap::new()))
                    && !parsed.rejected.is_empty()
                {
                    rejected_somewhere += 1;
                    assert!(
                        parsed
                            .rejected
                            .iter()
                            .all(|r| !r.reason.is_empty() && !r.raw.is_empty())
                    );
                }
            }
        }
    }
    assert!(
        rejected_somewhere >= corpus.providers.len(),
        "every provider rejects id-less items ({rejected_somewhere})"
    );
}

/// The first element of the first non-empty array of objects in `page`.
fn first_item(page: &mut Value) -> Option<&mut Value> {
    match page {
        Value::Array(items) => {
            if items.first().is_some_and(Value::is_object) {
                items.first_mut()
            } else {
                items.iter_mut().find_map(first_item)
            }
        }
        Value::Object(map) => map.values_mut().find_map(first_item),
        _ => None,
    }
}

/// Removes every id-like key of `item` (and of an embedded `conversation`).
fn strip_ids(item: &mut Value) -> bool {
    let Value::Object(map) = item else {
        return false;
    };
    let mut removed = false;
    for key in [
        "id",
        "Id",
        "conversationId",
        "ConversationId",
        "LiveWorkItemId",
        "liveworkitemid",
    ] {
        removed |= map.remove(key).is_some();
    }
    if let Some(inner) = map.get_mut("conversation") {
        removed |= strip_ids(inner);
    }
    removed
}
