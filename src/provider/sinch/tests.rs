//! Unit tests of the Sinch adapter: configuration, requests and the walk logic, on payloads
//! shaped like the official spec and SDK fixtures.

use bytes::Bytes;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::*;
use crate::provider::Direction;

const PROJECT: &str = "b3f0c0de-0000-4000-8000-000000000001";
const APP: &str = "01EB37HMH1M6SV18ASNS3G135H";

fn provider() -> SinchProvider {
    let base = Url::parse("https://eu.conversation.api.sinch.com").unwrap();
    SinchProvider::new(&base, PROJECT, APP)
}

fn ts(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

fn ok(body: &Value) -> HttpResponse {
    HttpResponse {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: Bytes::from(body.to_string()),
    }
}

fn walk(p: &dyn Provider, spec: WalkSpec) -> &dyn Walk {
    p.walks()
        .iter()
        .find(|w| w.spec() == spec)
        .unwrap()
        .as_ref()
}

fn ctx<'a>(since: Option<Timestamp>, position: Option<&'a Value>) -> WalkContext<'a> {
    WalkContext { since, position }
}

fn query(spec: &RequestSpec) -> Vec<(String, String)> {
    spec.url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A `conversations:recent` item as the reference documents it.
fn recent(id: &str, last_received: &str, direction: &str) -> Value {
    json!({
        "conversation": {
            "id": id, "app_id": APP, "contact_id": format!("C-{id}"), "active": true,
            "active_channel": "SMS", "last_received": last_received, "metadata": ""
        },
        "last_message": {
            "id": format!("M-{id}"), "conversation_id": id, "direction": direction,
            "accept_time": last_received
        }
    })
}

fn listed(id: &str, active: Option<bool>) -> Value {
    let mut c = json!({
        "id": id, "app_id": APP, "contact_id": format!("C-{id}"),
        "active_channel": "WHATSAPP", "last_received": "2026-03-02T10:11:12Z"
    });
    if let Some(a) = active {
        c["active"] = json!(a);
    }
    c
}

fn secret_file(dir: &tempfile::TempDir) -> SecretRef {
    let path = dir.path().join("sinch-secret");
    std::fs::write(&path, "s3cr3t-value\n").unwrap();
    SecretRef::File { file: path }
}

fn config(secret: SecretRef) -> SinchConfig {
    SinchConfig {
        region: Some("eu".into()),
        base_url: None,
        project_id: PROJECT.into(),
        app_id: AppIds::One(APP.into()),
        key_id: "key-id-1".into(),
        key_secret: secret,
        token_url: None,
        webhook_secret: None,
    }
}

const CTX: SetupContext<'static> = SetupContext {
    key: "sources[sms]",
};

/// A region picks the regional host; OAuth2 uses Basic credentials at the global token URL.
#[test]
fn setup_builds_oauth_client_credentials_for_the_region() {
    let dir = tempfile::tempdir().unwrap();
    let setups = setup(&config(secret_file(&dir)), &CTX).unwrap();
    assert_eq!(setups.len(), 1);
    let s = &setups[0];
    assert_eq!(s.provider.account(), APP);
    assert_eq!(s.budget_key, format!("sinch:project:{PROJECT}"));
    assert!(!s.credential_key.contains("s3cr3t"));
    let AuthScheme::ClientCredentials(cc) = &s.auth else {
        panic!("expected client credentials, got {:?}", s.auth);
    };
    assert_eq!(cc.token_url.as_str(), DEFAULT_TOKEN_URL);
    assert_eq!(cc.client_id, "key-id-1");
    assert_eq!(cc.client_secret.expose(), "s3cr3t-value");
    assert_eq!(cc.placement, CredentialPlacement::BasicHeader);
    assert!(
        !format!("{s:?}").contains("s3cr3t"),
        "secret leaked into Debug"
    );
    let quota = s.defaults.quota.unwrap();
    assert_eq!(
        (quota.requests.get(), quota.per),
        (200, Duration::from_secs(1))
    );
    let spec = walk(&*s.provider, INVENTORY)
        .build_request(&ctx(None, None))
        .unwrap();
    assert_eq!(spec.url.host_str(), Some("eu.conversation.api.sinch.com"));
}

/// Several apps of one project become several sources sharing credential and budget.
#[test]
fn setup_yields_one_source_per_app() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(secret_file(&dir));
    cfg.app_id = AppIds::Many(vec!["APP1".into(), "APP2".into()]);
    let setups = setup(&cfg, &CTX).unwrap();
    let names: Vec<_> = setups
        .iter()
        .map(|s| s.name_suffix.clone().unwrap())
        .collect();
    assert_eq!(names, ["APP1", "APP2"]);
    assert_eq!(setups[0].budget_key, setups[1].budget_key);
    assert_eq!(setups[0].credential_key, setups[1].credential_key);
}

/// Every configuration mistake names its full key.
#[test]
fn setup_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let check = |mutate: &dyn Fn(&mut SinchConfig), key: &str, words: &str| {
        let mut cfg = config(secret_file(&dir));
        mutate(&mut cfg);
        let err = setup(&cfg, &CTX).unwrap_err();
        assert_eq!(err.key, format!("sources[sms].sinch.{key}"), "{err}");
        assert!(err.message.contains(words), "{err}");
    };
    check(
        &|c| c.region = Some("asia".into()),
        "region",
        "\"us\", \"eu\" or \"br\"",
    );
    check(&|c| c.region = None, "region", "missing");
    check(
        &|c| c.base_url = Some("https://proxy.example".into()),
        "base_url",
        "not both",
    );
    check(
        &|c| {
            c.region = None;
            c.base_url = Some("http://sinch.example.com".into());
        },
        "base_url",
        "https",
    );
    check(&|c| c.project_id = " ".into(), "project_id", "not an id");
    check(
        &|c| c.app_id = AppIds::Many(vec![]),
        "app_id",
        "at least one",
    );
    check(
        &|c| c.app_id = AppIds::Many(vec!["A".into(), "A".into()]),
        "app_id",
        "twice",
    );
    check(
        &|c| c.app_id = AppIds::One("a/b".into()),
        "app_id",
        "not an id",
    );
    check(&|c| c.key_id = String::new(), "key_id", "access key id");
    check(
        &|c| {
            c.key_secret = SecretRef::File {
                file: "/nonexistent/sinch".into(),
            }
        },
        "key_secret",
        "/nonexistent/sinch",
    );
    check(
        &|c| c.token_url = Some("ftp://auth".into()),
        "token_url",
        "scheme",
    );
}

/// The walks: a recent delta that advances at its end, and an inventory sweep that deletes.
/// Their names key the cursors in existing databases and never change.
#[test]
fn walks_are_a_recent_delta_and_an_inventory_sweep() {
    assert_eq!(
        crate::provider::walk::walk_table(&provider()),
        [
            "recent: Delta(AtWalkEnd)",
            "inventory: Sweep { absence: Deleted, initial: Immediately }",
        ]
    );
}

/// The recent delta asks for 50 newest-first conversations and echoes the page token.
#[test]
fn recent_requests_are_newest_first_with_the_saved_token() {
    let p = provider();
    let first = walk(&p, RECENT)
        .build_request(&ctx(Some(ts("2026-03-01T00:00:00Z")), None))
        .unwrap();
    assert_eq!(
        first.url.path(),
        format!("/v1/projects/{PROJECT}/conversations:recent")
    );
    assert_eq!(
        query(&first),
        [("app_id", APP), ("order", "DESC"), ("page_size", "50")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    assert_eq!(first.method, reqwest::Method::GET);
    let position = json!({"page_token": "Ch+/tok=="});
    let next = walk(&p, RECENT)
        .build_request(&ctx(None, Some(&position)))
        .unwrap();
    assert!(query(&next).contains(&("page_token".into(), "Ch+/tok==".into())));
    assert!(
        next.url.as_str().contains("page_token=Ch%2B%2Ftok%3D%3D"),
        "{}",
        next.url
    );
}

/// The sweep lists active conversations, then inactive ones, 20 per page, never omitting
/// `only_active`.
#[test]
fn inventory_requests_walk_both_listings() {
    let p = provider();
    let first = walk(&p, INVENTORY).build_request(&ctx(None, None)).unwrap();
    assert_eq!(
        first.url.path(),
        format!("/v1/projects/{PROJECT}/conversations")
    );
    assert_eq!(
        query(&first),
        [
            ("app_id", APP),
            ("only_active", "true"),
            ("page_size", "20")
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    let inactive = json!({"phase": "inactive", "page_token": "T2", "listed": 40});
    let q = query(
        &walk(&p, INVENTORY)
            .build_request(&ctx(None, Some(&inactive)))
            .unwrap(),
    );
    assert!(q.contains(&("only_active".into(), "false".into())));
    assert!(q.contains(&("page_token".into(), "T2".into())));
}

/// A base URL with a path prefix keeps it; the project id is one path segment.
#[test]
fn base_url_prefixes_are_kept() {
    let base = Url::parse("http://127.0.0.1:4010/sinch/").unwrap();
    let p = SinchProvider::new(&base, "proj", "app");
    let spec = walk(&p, RECENT).build_request(&ctx(None, None)).unwrap();
    assert_eq!(
        spec.url.path(),
        "/sinch/v1/projects/proj/conversations:recent"
    );
}

/// The delta stops at the first conversation at or before `since` and does not follow the
/// token further; before that it follows the token.
#[test]
fn recent_walk_stops_at_the_watermark() {
    let p = provider();
    let since = ts("2026-03-02T10:00:00Z");
    let body = json!({
        "conversations": [
            recent("A", "2026-03-02T10:30:00Z", "TO_APP"),
            recent("B", "2026-03-02T10:05:00Z", "TO_CONTACT"),
        ],
        "next_page_token": "NEXT"
    });
    let page = walk(&p, RECENT)
        .parse_page(&ctx(Some(since), None), &ok(&body))
        .unwrap();
    assert_eq!(page.records.len(), 2);
    assert_eq!(page.high_water, Some(ts("2026-03-02T10:30:00Z")));
    assert_eq!(page.next, Some(json!({"page_token": "NEXT"})));
    assert_eq!(
        page.records[0].last_message_direction,
        Some(Direction::Inbound)
    );
    assert_eq!(
        page.records[1].last_message_direction,
        Some(Direction::Outbound)
    );

    let body = json!({
        "conversations": [
            recent("C", "2026-03-02T10:01:00Z", "TO_APP"),
            recent("D", "2026-03-02T10:00:00Z", "TO_APP"),
            recent("E", "2026-03-01T08:00:00Z", "TO_APP"),
        ],
        "next_page_token": "MORE"
    });
    let page = walk(&p, RECENT)
        .parse_page(&ctx(Some(since), None), &ok(&body))
        .unwrap();
    assert_eq!(page.next, None, "a conversation at `since` ends the walk");
    assert_eq!(
        page.records.len(),
        3,
        "the page is still applied (unchanged rows cost no write)"
    );
}

/// Message-less conversations (epoch `last_received`, no last message) never end the walk.
#[test]
fn recent_walk_ignores_messageless_conversations_for_stopping() {
    let p = provider();
    let body = json!({
        "conversations": [
            {"conversation": {"id": "EMPTY", "active": true, "last_received": "1970-01-01T00:00:00Z"}},
            recent("NEW", "2026-03-02T11:00:00Z", "TO_APP"),
        ],
        "next_page_token": "NEXT"
    });
    let page = walk(&p, RECENT)
        .parse_page(&ctx(Some(ts("2026-03-02T10:00:00Z")), None), &ok(&body))
        .unwrap();
    assert_eq!(page.next, Some(json!({"page_token": "NEXT"})));
    assert_eq!(page.records[0].last_activity_at, None);
    assert_eq!(page.high_water, Some(ts("2026-03-02T11:00:00Z")));
}

/// Without a watermark the whole listing is walked; an app without any is reported.
#[test]
fn first_recent_walk_lists_everything() {
    let p = provider();
    let body = json!({
        "conversations": [recent("A", "2026-03-02T10:30:00Z", "TO_APP"), recent("B", "2020-01-01T00:00:00Z", "TO_APP")],
        "next_page_token": "NEXT"
    });
    let page = walk(&p, RECENT)
        .parse_page(&ctx(None, None), &ok(&body))
        .unwrap();
    assert_eq!(page.next, Some(json!({"page_token": "NEXT"})));
    assert_eq!(page.high_water, Some(ts("2026-03-02T10:30:00Z")));
    assert!(page.notes.is_empty());
    let last = walk(&p, RECENT)
        .parse_page(
            &ctx(None, page.next.as_ref()),
            &ok(&json!({"conversations": []})),
        )
        .unwrap();
    assert_eq!(last.next, None);
    assert!(
        last.notes.is_empty(),
        "an empty last page of a non-empty app is no news"
    );

    let empty = walk(&p, RECENT)
        .parse_page(&ctx(None, None), &ok(&json!({})))
        .unwrap();
    assert!(empty.records.is_empty() && empty.next.is_none());
    assert!(empty.notes[0].contains("DISPATCH"), "{:?}", empty.notes);
}

/// Inventory pages: the listing implies `active` when omitted, and phases chain.
#[test]
fn inventory_pages_chain_the_listings() {
    let p = provider();
    let body =
        json!({"conversations": [listed("A1", Some(true)), listed("A2", None)], "total_size": 0});
    let page = walk(&p, INVENTORY)
        .parse_page(&ctx(None, None), &ok(&body))
        .unwrap();
    assert_eq!(
        page.records.iter().map(|r| r.active).collect::<Vec<_>>(),
        [Some(true), Some(true)]
    );
    assert_eq!(page.next, Some(json!({"phase": "inactive", "listed": 2})));
    assert_eq!(page.high_water, None);

    let position = page.next.unwrap();
    let body =
        json!({"conversations": [listed("I1", None), {"active": false}], "next_page_token": "T"});
    let page = walk(&p, INVENTORY)
        .parse_page(&ctx(None, Some(&position)), &ok(&body))
        .unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].active, Some(false));
    assert_eq!(page.rejected.len(), 1);
    assert_eq!(
        page.next,
        Some(json!({"phase": "inactive", "page_token": "T", "listed": 4}))
    );

    let last = page.next.unwrap();
    let page = walk(&p, INVENTORY)
        .parse_page(&ctx(None, Some(&last)), &ok(&json!({"conversations": []})))
        .unwrap();
    assert_eq!(page.next, None);
    assert!(page.notes.is_empty());
}

/// A sweep that finds nothing in either listing reports the DISPATCH-mode explanation.
#[test]
fn empty_inventory_is_reported() {
    let p = provider();
    let page = walk(&p, INVENTORY)
        .parse_page(&ctx(None, None), &ok(&json!({})))
        .unwrap();
    let position = page.next.unwrap();
    let page = walk(&p, INVENTORY)
        .parse_page(&ctx(None, Some(&position)), &ok(&json!({})))
        .unwrap();
    assert_eq!(page.next, None);
    assert!(page.notes[0].contains("DISPATCH"), "{:?}", page.notes);
    assert!(page.notes[0].contains(APP));
}

/// A broken page is malformed (the engine retries); a broken position is a bad cursor.
#[test]
fn malformed_pages_and_positions_are_errors() {
    let p = provider();
    let broken = HttpResponse {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: Bytes::from_static(b"{\"conversations\": [{\"id\": \"A"),
    };
    assert!(matches!(
        walk(&p, RECENT).parse_page(&ctx(None, None), &broken),
        Err(ProviderError::Malformed(_))
    ));
    assert!(matches!(
        walk(&p, INVENTORY).parse_page(&ctx(None, None), &broken),
        Err(ProviderError::Malformed(_))
    ));
    let bad = json!("not a position");
    assert!(matches!(
        walk(&p, INVENTORY).build_request(&ctx(None, Some(&bad))),
        Err(ProviderError::BadCursor(_))
    ));
}

/// A 400 about the page token restarts the walk; other 400s and 404s do not.
#[test]
fn rejected_page_tokens_are_recognised() {
    let p = provider();
    let token =
        br#"{"code":400,"message":"Invalid page_token","status":"INVALID_ARGUMENT","details":[]}"#;
    assert!(p.is_position_rejected(StatusCode::BAD_REQUEST, token));
    assert!(!p.is_position_rejected(StatusCode::NOT_FOUND, token));
    let other = br#"{"code":400,"message":"app_id is required","status":"INVALID_ARGUMENT"}"#;
    assert!(!p.is_position_rejected(StatusCode::BAD_REQUEST, other));
}

/// A 404 is explained as a likely region mismatch, with Sinch's own message.
#[test]
fn not_found_is_explained_as_a_region_mismatch() {
    let p = provider();
    let body = br#"{"code":404,"message":"App not found","status":"NOT_FOUND","details":[]}"#;
    let text = p.describe_error(StatusCode::NOT_FOUND, body);
    assert!(text.starts_with("NOT_FOUND (404): App not found"), "{text}");
    assert!(
        text.contains("region") && text.contains("eu.conversation.api.sinch.com"),
        "{text}"
    );
    let text = p.describe_error(
        StatusCode::TOO_MANY_REQUESTS,
        br#"{"code":429,"status":"RESOURCE_EXHAUSTED","message":"slow down"}"#,
    );
    assert_eq!(text, "RESOURCE_EXHAUSTED (429): slow down");
}

/// `total_size` becomes the walk's total only where it counts what the walk reads: the
/// recent listing without a watermark, and the inventory once its second listing starts
/// (those listed so far plus the inactive count). Zero, a string and garbage are handled.
#[test]
fn total_size_is_a_walk_total_only_where_it_covers_the_walk() {
    let p = provider();
    let page = |spec, since, position: Option<&Value>, body: Value| {
        walk(&p, spec)
            .parse_page(&ctx(since, position), &ok(&body))
            .unwrap()
            .total_hint
    };
    let items = json!([recent("A", "2026-03-02T10:30:00Z", "TO_APP")]);
    let first = json!({"conversations": items, "next_page_token": "N", "total_size": 37});
    assert_eq!(page(RECENT, None, None, first.clone()), Some(37));
    let since = Some(ts("2026-03-01T00:00:00Z"));
    assert_eq!(page(RECENT, since, None, first), None, "a delta reads less");
    let later = json!({"conversations": items, "total_size": 0});
    assert_eq!(page(RECENT, None, None, later), None, "0 on later pages");
    let text = json!({"conversations": items, "totalSize": "12"});
    assert_eq!(page(RECENT, None, None, text), Some(12));
    let garbage = json!({"conversations": items, "total_size": -4});
    assert_eq!(page(RECENT, None, None, garbage), None);

    let active = json!({"conversations": [listed("A1", Some(true))], "total_size": 5});
    assert_eq!(
        page(INVENTORY, None, None, active),
        None,
        "inactive unknown"
    );
    let inactive = json!({"phase": "inactive", "listed": 5});
    let body = json!({"conversations": [listed("I1", None)], "total_size": 3});
    assert_eq!(
        page(INVENTORY, None, Some(&inactive), body.clone()),
        Some(8)
    );
    let further = json!({"phase": "inactive", "page_token": "T", "listed": 6});
    assert_eq!(page(INVENTORY, None, Some(&further), body), None);
}

/// `webhook_secret` gives the source its webhooks (shared by every app of the entry);
/// without it the source has none.
#[test]
fn setup_builds_webhooks_only_with_a_webhook_secret() {
    let dir = tempfile::tempdir().unwrap();
    let setups = setup(&config(secret_file(&dir)), &CTX).unwrap();
    assert!(setups[0].provider.webhooks().is_none());

    let mut cfg = config(secret_file(&dir));
    cfg.app_id = AppIds::Many(vec!["APP1".into(), "APP2".into()]);
    let path = dir.path().join("sinch-webhook-secret");
    std::fs::write(&path, "hook-secret\n").unwrap();
    cfg.webhook_secret = Some(SecretRef::File { file: path.clone() });
    let setups = setup(&cfg, &CTX).unwrap();
    assert!(setups.iter().all(|s| s.provider.webhooks().is_some()));
    assert!(!format!("{setups:?}").contains("hook-secret"));

    std::fs::write(&path, "\n").unwrap();
    let err = setup(&cfg, &CTX).unwrap_err();
    assert_eq!(err.key, "sources[sms].sinch.webhook_secret");
    cfg.webhook_secret = Some(SecretRef::File {
        file: dir.path().join("absent"),
    });
    let err = setup(&cfg, &CTX).unwrap_err();
    assert_eq!(err.key, "sources[sms].sinch.webhook_secret");
}
