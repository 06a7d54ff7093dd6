//! Hostile answers at the HTTP layer, from a loopback fake provider written for the
//! purpose: `Retry-After` values no clock can hold, bodies larger than
//! `http.max_response_bytes` (announced, close-delimited, chunked), a token endpoint that
//! answers a huge body, and a conversation whose JSON is larger than `max_raw_bytes`.
//!
//! Each test checks that nothing panics, the source reports a clear error naming the key to
//! raise, the request is not retried as if the failure were transient, and the mirror keeps
//! what it had. Memory stays bounded by construction: the caps are small here, and the
//! server counts how much of an oversized body it could hand over before convsync hung up.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convsync::config::Schedule;
use convsync::http::Pause;
use convsync::http::ResponsePolicy;
use convsync::http::auth::{ClientCredentials, CredentialPlacement};
use convsync::http::{AuthError, AuthScheme, HttpError, HttpSettings};
use convsync::provider::{Provider, ProviderKind, Walk};
use convsync::record::RAW_OMITTED_KEY;
use convsync::secret::Secret;
use convsync::sync::{CycleOutcome, SyncError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

use crate::support::app::{Sweep, TestApp, spawn_app};
use crate::support::double::DoubleProvider;
use crate::support::{TestDb, quick_http, schedule, source};

/// The source every test syncs.
const SOURCE: &str = "hostile";

/// The response cap the tests configure: small, so that "larger than the cap" is cheap.
const CAP: u64 = 64 * 1024;

/// How an oversized body is delimited.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// With a true `Content-Length`.
    Announced,
    /// No `Content-Length`: the body ends when the connection closes.
    UntilClose,
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// One scripted answer.
#[derive(Debug, Clone)]
enum Answer {
    /// A status with headers and a small body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// 200 with `len` bytes of body, framed as said.
    Huge(Framing, u64),
}

#[derive(Default)]
struct State {
    /// Answers to the next list requests; afterwards the normal page.
    script: VecDeque<Answer>,
    /// The answer of the token endpoint (a valid token when `None`).
    token: Option<Answer>,
    /// The conversations' JSON items of the normal page.
    items: Vec<String>,
    list_requests: u64,
    token_requests: u64,
}

/// The fake provider: `/conversations` in the shape [`DoubleProvider`] reads, and `/token`.
#[derive(Clone)]
struct Hostile {
    base_url: Url,
    state: Arc<Mutex<State>>,
    /// Body bytes of oversized answers the server managed to write.
    written: Arc<AtomicU64>,
}

impl Hostile {
    async fn start() -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hostile = Hostile {
            base_url: Url::parse(&format!("http://{addr}/")).unwrap(),
            state: Arc::new(Mutex::new(State {
                items: vec![item("c1", "first", ""), item("c2", "second", "")],
                ..State::default()
            })),
            written: Arc::new(AtomicU64::new(0)),
        };
        let served = hostile.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let served = served.clone();
                tokio::spawn(async move {
                    let _ = served.serve(stream).await;
                });
            }
        });
        hostile
    }

    fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    fn list_requests(&self) -> u64 {
        self.state.lock().unwrap().list_requests
    }

    async fn serve(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let head = read_request(&mut stream).await?;
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let answer = {
            let mut s = self.state.lock().unwrap();
            if path.starts_with("/token") {
                s.token_requests += 1;
                s.token.clone().unwrap_or_else(|| {
                    let token = r#"{"access_token":"hostile-token","expires_in":3600}"#;
                    Answer::Status(200, vec![], token.into())
                })
            } else {
                s.list_requests += 1;
                s.script.pop_front().unwrap_or_else(|| {
                    let page = format!(
                        r#"{{"items":[{}],"next_page_token":null}}"#,
                        s.items.join(",")
                    );
                    Answer::Status(200, vec![], page)
                })
            }
        };
        match answer {
            Answer::Status(status, headers, body) => {
                let mut text = format!(
                    "HTTP/1.1 {status} Whatever\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    text.push_str(&format!("{name}: {value}\r\n"));
                }
                text.push_str("\r\n");
                text.push_str(&body);
                stream.write_all(text.as_bytes()).await?;
            }
            Answer::Huge(framing, len) => self.write_huge(&mut stream, framing, len).await?,
        }
        stream.shutdown().await
    }

    /// Writes `len` bytes of JSON-ish filler in 8 KiB pieces, counting what got through.
    async fn write_huge(
        &self,
        stream: &mut TcpStream,
        framing: Framing,
        len: u64,
    ) -> std::io::Result<()> {
        let framing_header = match framing {
            Framing::Announced => format!("content-length: {len}\r\n"),
            Framing::UntilClose => String::new(),
            Framing::Chunked => "transfer-encoding: chunked\r\n".into(),
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{framing_header}connection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        let piece = vec![b' '; 8192];
        let mut left = len;
        while left > 0 {
            let n = left.min(piece.len() as u64) as usize;
            match framing {
                Framing::Chunked => {
                    stream.write_all(format!("{n:x}\r\n").as_bytes()).await?;
                    stream.write_all(&piece[..n]).await?;
                    stream.write_all(b"\r\n").await?;
                }
                Framing::Announced | Framing::UntilClose => stream.write_all(&piece[..n]).await?,
            }
            self.written.fetch_add(n as u64, Ordering::Relaxed);
            left -= n as u64;
        }
        if matches!(framing, Framing::Chunked) {
            stream.write_all(b"0\r\n\r\n").await?;
        }
        Ok(())
    }
}

/// Reads a request's head and its `Content-Length` body; returns the head.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(String::new());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > 64 * 1024 {
            return Ok(String::new());
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let body_len = head
        .lines()
        .find_map(|l| {
            let l = l.to_ascii_lowercase();
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0)
        .min(64 * 1024);
    while buf.len() < end + body_len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(head)
}

/// One conversation as the double's listing shows it, with `padding` in a field the
/// adapter does not map (so only `raw` grows).
fn item(id: &str, name: &str, padding: &str) -> String {
    serde_json::json!({
        "id": id,
        "updated_at": "2026-03-02T09:00:00Z",
        "name": name,
        "attachment": padding,
    })
    .to_string()
}

/// Fast retries, the small response cap and a one-hour provider-wait cap.
fn hostile_http() -> HttpSettings {
    HttpSettings {
        max_response_bytes: CAP,
        max_provider_wait: Duration::from_secs(3600),
        ..quick_http()
    }
}

/// The daemon over `provider` (the fake provider read by the double's adapter, unless a
/// test adds to it) with `auth`, the test's HTTP settings and `schedule`.
async fn app(
    db: &TestDb,
    provider: Arc<dyn Provider>,
    auth: AuthScheme,
    http: HttpSettings,
    schedule: Schedule,
) -> TestApp {
    let settings = source(SOURCE, provider, auth, schedule);
    spawn_app(&db.config(http, vec![settings])).await
}

/// The double's adapter over the fake provider.
fn reader(hostile: &Hostile) -> Arc<dyn Provider> {
    Arc::new(DoubleProvider::new(hostile.base_url.clone(), 50, false))
}

/// A first clean cycle, so that each test can check the mirror keeps what it had.
async fn mirrored(hostile: &Hostile, db: &TestDb, http: HttpSettings) -> TestApp {
    let app = app(db, reader(hostile), AuthScheme::None, http, schedule()).await;
    app.sync_caught_up(Sweep::IfDue).await;
    assert_eq!(app.mirror(SOURCE).await.len(), 2);
    app
}

/// `Retry-After` values no clock can hold, far-future dates and merely absurd waits are
/// clamped to `http.max_provider_wait`: no panic, the cycle ends rate-limited for exactly
/// the cap, and the mirror keeps its rows.
#[tokio::test]
async fn huge_retry_after_is_clamped_to_the_provider_wait_cap() {
    for value in [
        "1e300",
        "99999999999999999999",
        "18446744073709551615",
        "999999",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ] {
        let hostile = Hostile::start().await;
        let db = TestDb::new();
        let http = hostile_http();
        let app = mirrored(&hostile, &db, http.clone()).await;
        let before = app.mirror(SOURCE).await;
        hostile.script([Answer::Status(
            429,
            vec![("retry-after", value.to_owned())],
            r#"{"error":"slow down"}"#.into(),
        )]);

        let outcome = app.sync_once(Sweep::IfDue).await;

        match outcome {
            CycleOutcome::RateLimited { wait } => {
                assert_eq!(wait, http.max_provider_wait, "Retry-After: {value}")
            }
            other => panic!("Retry-After: {value}: expected rate limited, got {other:?}"),
        }
        assert_eq!(
            hostile.list_requests(),
            2,
            "Retry-After: {value}: one 429, no retry"
        );
        assert_eq!(app.mirror(SOURCE).await, before);
    }
}

/// The double's adapter, plus rate-limit headers: `x-pause-seconds` asks for a pause of
/// that many seconds, as a provider's window length or reset time would.
struct PacedDouble(DoubleProvider);

impl Provider for PacedDouble {
    fn kind(&self) -> ProviderKind {
        self.0.kind()
    }

    fn account(&self) -> &str {
        self.0.account()
    }

    fn walks(&self) -> &[Arc<dyn Walk>] {
        self.0.walks()
    }
}

impl ResponsePolicy for PacedDouble {
    fn pacing(&self, headers: &reqwest::header::HeaderMap) -> Option<Pause> {
        let seconds = headers
            .get("x-pause-seconds")?
            .to_str()
            .ok()?
            .parse()
            .ok()?;
        Some(Pause {
            wait: Duration::from_secs(seconds),
            reason: "test window exhausted",
        })
    }
}

/// A rate-limit header asking for a pause no clock can hold is clamped to
/// `http.max_provider_wait` like a `Retry-After`: the page is applied, and the next cycle
/// ends rate-limited for at most the cap instead of panicking.
#[tokio::test]
async fn huge_rate_limit_pause_is_clamped_to_the_provider_wait_cap() {
    let hostile = Hostile::start().await;
    let page = format!(
        r#"{{"items":[{}],"next_page_token":null}}"#,
        item("c1", "first", "")
    );
    hostile.script([Answer::Status(
        200,
        vec![("x-pause-seconds", u64::MAX.to_string())],
        page,
    )]);
    let db = TestDb::new();
    let http = hostile_http();
    let provider = Arc::new(PacedDouble(DoubleProvider::new(
        hostile.base_url.clone(),
        50,
        false,
    )));
    let app = app(&db, provider, AuthScheme::None, http.clone(), schedule()).await;

    let first = app.sync_once(Sweep::IfDue).await;
    let second = app.sync_once(Sweep::IfDue).await;

    assert!(matches!(first, CycleOutcome::CaughtUp), "{first:?}");
    assert_eq!(app.mirror(SOURCE).await.len(), 1);
    match second {
        CycleOutcome::RateLimited { wait } => assert!(
            wait <= http.max_provider_wait && wait > http.max_inline_pause,
            "{wait:?}"
        ),
        other => panic!("expected rate limited, got {other:?}"),
    }
    assert_eq!(hostile.list_requests(), 1, "nothing sent while paused");
}

/// Negative, not-a-number and infinite `Retry-After` values are treated as absent: the
/// request is retried on the normal backoff and the cycle succeeds.
#[tokio::test]
async fn garbage_retry_after_is_ignored() {
    let hostile = Hostile::start().await;
    let db = TestDb::new();
    let app = mirrored(&hostile, &db, hostile_http()).await;
    hostile.script(
        ["-5", "nan", "inf"]
            .map(|value| Answer::Status(429, vec![("retry-after", value.into())], "{}".into())),
    );

    let outcome = app.sync_once(Sweep::IfDue).await;

    assert!(matches!(outcome, CycleOutcome::CaughtUp), "{outcome:?}");
    assert_eq!(
        hostile.list_requests(),
        1 + 3 + 1,
        "three 429s, then the page"
    );
}

/// A body larger than `http.max_response_bytes` fails its request, however it is framed,
/// with an error naming the endpoint, the cap and the key; it is not retried, the mirror
/// keeps its rows, and convsync stops reading at the cap.
#[tokio::test]
async fn oversized_bodies_fail_at_the_cap_without_retries() {
    const TOTAL: u64 = 32 * 1024 * 1024;
    for framing in [Framing::Announced, Framing::UntilClose, Framing::Chunked] {
        let hostile = Hostile::start().await;
        let db = TestDb::new();
        let app = mirrored(&hostile, &db, hostile_http()).await;
        let before = app.mirror(SOURCE).await;
        hostile.script([Answer::Huge(framing, TOTAL)]);

        let error = &app.sync_once_failed(Sweep::IfDue).await;
        assert!(
            matches!(
                error,
                SyncError::Http(HttpError::TooLarge {
                    endpoint: "list",
                    status: reqwest::StatusCode::OK,
                    limit: CAP
                })
            ),
            "{framing:?}: {error}"
        );
        assert!(!error.is_fatal(), "the source keeps running");
        let message = error.to_string();
        assert!(message.contains("http.max_response_bytes"), "{message}");
        assert!(message.contains(&CAP.to_string()), "{message}");
        assert_eq!(hostile.list_requests(), 2, "{framing:?}: not retried");
        let by_status = app.engine().sources()[0].client.tally().by_status();
        assert_eq!(
            by_status.into_iter().collect::<Vec<_>>(),
            [(200, 2)],
            "{framing:?}: the oversized answer is counted with its status"
        );
        let run = app.last_run(SOURCE).await;
        assert_eq!(run.outcome, "failed");
        assert!(
            run.error
                .as_deref()
                .unwrap_or("")
                .contains("http.max_response_bytes"),
            "{run:?}"
        );
        assert_eq!(app.mirror(SOURCE).await, before);
        // convsync hung up at the cap: the server could not hand over the whole body (the
        // rest of what got through sits in the loopback socket buffers).
        let written = hostile.written.load(Ordering::Relaxed);
        assert!(written < TOTAL, "{framing:?}: {written} bytes were read");
    }
}

/// A token endpoint answering a huge body fails authentication with an error naming the
/// cap and the key, without a retry and without any list request.
#[tokio::test]
async fn oversized_token_answer_fails_authentication() {
    let hostile = Hostile::start().await;
    hostile.state.lock().unwrap().token = Some(Answer::Huge(Framing::Chunked, 4 * 1024 * 1024));
    let db = TestDb::new();
    let auth = AuthScheme::ClientCredentials(ClientCredentials {
        token_url: hostile.base_url.join("token").unwrap(),
        client_id: "hostile-client".into(),
        client_secret: Secret::new("hostile-secret".into()),
        scope: None,
        placement: CredentialPlacement::FormFields,
    });
    let app = app(&db, reader(&hostile), auth, hostile_http(), schedule()).await;

    let error = &app.sync_once_failed(Sweep::IfDue).await;
    assert!(
        matches!(
            error,
            SyncError::Http(HttpError::Auth(AuthError::TooLarge { limit: CAP, .. }))
        ),
        "{error}"
    );
    let message = convsync::error_text::error_chain(error);
    assert!(message.contains("http.max_response_bytes"), "{message}");
    assert!(!message.contains("hostile-secret"), "{message}");
    assert_eq!(
        hostile.state.lock().unwrap().token_requests,
        1,
        "not retried"
    );
    assert_eq!(hostile.list_requests(), 0);
}

/// A conversation whose JSON is larger than `max_raw_bytes` is stored with its columns and
/// a small stand-in for `raw`; its neighbours keep their raw JSON, and the run says so.
#[tokio::test]
async fn oversized_raw_is_stored_as_a_stand_in() {
    let hostile = Hostile::start().await;
    let padding = "x".repeat(200 * 1024);
    hostile.state.lock().unwrap().items = vec![
        item("big", "huge attachment", &padding),
        item("small", "ordinary", ""),
    ];
    let db = TestDb::new();
    let http = HttpSettings {
        max_response_bytes: 1024 * 1024,
        ..hostile_http()
    };
    let capped = Schedule {
        max_raw_bytes: 16 * 1024,
        ..schedule()
    };
    let app = app(&db, reader(&hostile), AuthScheme::None, http, capped).await;

    let outcome = app.sync_once(Sweep::IfDue).await;

    assert!(matches!(outcome, CycleOutcome::CaughtUp), "{outcome:?}");
    let rows = app.mirror(SOURCE).await;
    assert_eq!(rows.len(), 2);
    let (title, raw) = (&rows["big"].title, &rows["big"].raw);
    assert_eq!(title.as_deref(), Some("huge attachment"));
    assert!(raw.len() < 1024, "stand-in is small: {} bytes", raw.len());
    let stand_in: serde_json::Value = serde_json::from_str(raw).unwrap();
    let original = item("big", "huge attachment", &padding).len();
    assert_eq!(stand_in[RAW_OMITTED_KEY]["bytes"], original);
    assert_eq!(
        rows["small"].raw,
        item("small", "ordinary", ""),
        "small raw kept as received"
    );
    let run = app.last_run(SOURCE).await;
    assert!(run.notes().contains("max_raw_bytes"), "{run:?}");
}
