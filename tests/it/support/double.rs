//! A provider-shaped test double: a tiny HTTP/1.1 server on loopback holding a list of
//! conversations, with an "updated since" filter, page tokens, a token endpoint and
//! scripted faults (statuses, connection resets), plus the `Provider` adapter that reads it.
//! It is deliberately generic so that engine tests do not depend on any real provider.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use convsync::http::{HttpResponse, RequestSpec, ResponsePolicy};
use convsync::provider::{
    Absence, ConversationRecord, InitialSweep, Page, Provider, ProviderError, ProviderKind, Walk,
    WalkContext, WalkKind, WalkSpec, WatermarkAdvance,
};
use convsync::time::Timestamp;
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

/// One conversation held by the double.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    pub id: String,
    pub updated_at: Timestamp,
    pub name: String,
    /// Hidden rows are not listed yet (eventual consistency).
    pub hidden: bool,
}

/// A scripted reaction to the next list request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status, body and headers.
    Status(u16, String, Vec<(String, String)>),
    /// Close the connection without answering.
    Reset,
    /// Answer normally (to script faults for later requests).
    Pass,
    /// Never answer (until the client gives up or goes away).
    Hang,
}

#[derive(Default)]
struct State {
    conversations: Vec<Conv>,
    faults: VecDeque<Fault>,
    list_requests: Vec<String>,
    token_requests: u32,
    client_secret: String,
}

/// The running double.
#[derive(Clone)]
pub struct Double {
    pub base_url: Url,
    state: Arc<Mutex<State>>,
}

impl Double {
    /// Starts the server on an ephemeral loopback port.
    pub async fn start() -> Double {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            client_secret: "double-client-secret-XYZZY".into(),
            ..State::default()
        }));
        let served = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = served.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, state).await;
                });
            }
        });
        Double {
            base_url: Url::parse(&format!("http://{addr}/")).unwrap(),
            state,
        }
    }

    /// The client secret its token endpoint accepts.
    pub fn client_secret(&self) -> String {
        self.state.lock().unwrap().client_secret.clone()
    }

    /// Adds or replaces conversations.
    pub fn upsert(&self, convs: impl IntoIterator<Item = Conv>) {
        let mut s = self.state.lock().unwrap();
        for c in convs {
            match s.conversations.iter_mut().find(|x| x.id == c.id) {
                Some(existing) => *existing = c,
                None => s.conversations.push(c),
            }
        }
    }

    /// Removes a conversation.
    pub fn remove(&self, id: &str) {
        self.state
            .lock()
            .unwrap()
            .conversations
            .retain(|c| c.id != id);
    }

    /// Makes hidden conversations visible.
    pub fn reveal_all(&self) {
        for c in &mut self.state.lock().unwrap().conversations {
            c.hidden = false;
        }
    }

    /// Queues faults for the next list requests.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().unwrap().faults.extend(faults);
    }

    /// The truth: every conversation (hidden ones included).
    pub fn truth(&self) -> Vec<Conv> {
        let mut all = self.state.lock().unwrap().conversations.clone();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// List requests received so far (path and query), faults included.
    pub fn list_requests(&self) -> Vec<String> {
        self.state.lock().unwrap().list_requests.clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.state.lock().unwrap().list_requests.clear();
    }

    /// Token requests received.
    pub fn token_requests(&self) -> u32 {
        self.state.lock().unwrap().token_requests
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read headers, then a body of Content-Length bytes.
    let header_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let content_length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < header_end + content_length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[header_end..]).to_string();
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    let target = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let url = Url::parse(&format!("http://double{target}")).unwrap();
    let (status, payload, headers) = match url.path() {
        "/token" => token(&state, &body),
        "/conversations" => {
            let fault = {
                let mut s = state.lock().unwrap();
                s.list_requests.push(target.clone());
                s.faults.pop_front()
            };
            match fault {
                Some(Fault::Reset) => {
                    // Drop the connection without a response.
                    return Ok(());
                }
                Some(Fault::Hang) => {
                    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                    return Ok(());
                }
                Some(Fault::Status(status, body, headers)) => (status, body, headers),
                Some(Fault::Pass) | None => list(&state, &url, &head),
            }
        }
        _ => (404, r#"{"error":"no such endpoint"}"#.into(), vec![]),
    };
    let mut response = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        StatusCode::from_u16(status)
            .map(|s| s.canonical_reason().unwrap_or(""))
            .unwrap_or(""),
        payload.len()
    );
    for (k, v) in headers {
        response.push_str(&format!("{k}: {v}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&payload);
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn token(state: &Arc<Mutex<State>>, body: &str) -> (u16, String, Vec<(String, String)>) {
    let mut s = state.lock().unwrap();
    s.token_requests += 1;
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let secret_ok = form
        .iter()
        .any(|(k, v)| k == "client_secret" && *v == s.client_secret);
    if secret_ok {
        (
            200,
            format!(
                r#"{{"access_token":"double-access-token-{}","token_type":"Bearer","expires_in":3600}}"#,
                s.token_requests
            ),
            vec![],
        )
    } else {
        (401, r#"{"error":"invalid_client"}"#.into(), vec![])
    }
}

fn list(state: &Arc<Mutex<State>>, url: &Url, head: &str) -> (u16, String, Vec<(String, String)>) {
    let s = state.lock().unwrap();
    let needs_token = !s.client_secret.is_empty()
        && head
            .to_ascii_lowercase()
            .contains("authorization: bearer double-access-token");
    let has_any_auth = head.to_ascii_lowercase().contains("authorization:");
    if has_any_auth && !needs_token {
        return (401, r#"{"error":"bad token"}"#.into(), vec![]);
    }
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    let page_size: usize = match q.get("page_size").map(|v| v.parse()) {
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        _ => {
            return (
                400,
                r#"{"error":"page_size must be between 1 and 100"}"#.into(),
                vec![],
            );
        }
    };
    let since = match q.get("updated_since") {
        Some(v) => match Timestamp::parse_rfc3339(v) {
            Ok(t) => Some(t),
            Err(_) => {
                return (
                    400,
                    r#"{"error":"updated_since is not RFC 3339"}"#.into(),
                    vec![],
                );
            }
        },
        None => None,
    };
    let offset: usize = match q.get("page_token") {
        Some(t) => match t.strip_prefix("off-").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => return (400, r#"{"error":"invalid page_token"}"#.into(), vec![]),
        },
        None => 0,
    };
    let mut rows: Vec<&Conv> = s
        .conversations
        .iter()
        .filter(|c| !c.hidden && since.is_none_or(|t| c.updated_at >= t))
        .collect();
    rows.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)));
    let page: Vec<serde_json::Value> = rows
        .iter()
        .skip(offset)
        .take(page_size)
        .map(|c| serde_json::json!({"id": c.id, "updated_at": c.updated_at.to_rfc3339_nanos(), "name": c.name}))
        .collect();
    let next = (offset + page_size < rows.len()).then(|| format!("off-{}", offset + page_size));
    (
        200,
        serde_json::json!({"items": page, "next_page_token": next}).to_string(),
        vec![],
    )
}

/// The adapter for the double: an ascending "updated since" delta and, optionally, a
/// sweep that marks vanished conversations deleted.
pub struct DoubleProvider {
    walks: Vec<Arc<dyn Walk>>,
}

impl DoubleProvider {
    pub fn new(base_url: Url, page_size: usize, with_sweep: bool) -> Self {
        let walk = |spec| -> Arc<dyn Walk> {
            Arc::new(DoubleWalk {
                spec,
                base_url: base_url.clone(),
                page_size,
            })
        };
        let mut walks = vec![walk(WalkSpec {
            name: "delta",
            kind: WalkKind::Delta(WatermarkAdvance::PerPage),
        })];
        if with_sweep {
            walks.push(walk(WalkSpec {
                name: "sweep",
                kind: WalkKind::Sweep {
                    absence: Absence::Deleted,
                    initial: InitialSweep::AfterInterval,
                },
            }));
        }
        DoubleProvider { walks }
    }

    /// The same adapter with each walk wrapped by `wrap`, for tests that change how a walk
    /// behaves (panics, blocks).
    pub fn map_walks(mut self, wrap: impl Fn(Arc<dyn Walk>) -> Arc<dyn Walk>) -> Self {
        self.walks = self.walks.into_iter().map(wrap).collect();
        self
    }
}

/// Either walk of the double: both read the same listing, the sweep without a bound.
struct DoubleWalk {
    spec: WalkSpec,
    base_url: Url,
    page_size: usize,
}

#[derive(Deserialize)]
struct ListBody<'a> {
    #[serde(borrow)]
    items: Vec<&'a serde_json::value::RawValue>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct Item {
    id: Option<String>,
    updated_at: String,
    name: Option<String>,
}

impl Provider for DoubleProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Spruce
    }

    fn account(&self) -> &str {
        "double-account"
    }

    fn walks(&self) -> &[Arc<dyn Walk>] {
        &self.walks
    }

    fn is_position_rejected(&self, status: StatusCode, body: &[u8]) -> bool {
        status == StatusCode::BAD_REQUEST
            && String::from_utf8_lossy(body).contains("invalid page_token")
    }
}

impl Walk for DoubleWalk {
    fn spec(&self) -> WalkSpec {
        self.spec
    }

    fn build_request(&self, ctx: &WalkContext<'_>) -> Result<RequestSpec, ProviderError> {
        let mut url = self.base_url.join("conversations").unwrap();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("page_size", &self.page_size.to_string());
            if let Some(since) = ctx.since {
                q.append_pair("updated_since", &since.to_rfc3339_nanos());
            }
            if let Some(pos) = ctx.position {
                let token = pos
                    .as_str()
                    .ok_or_else(|| ProviderError::BadCursor("token is not a string".into()))?;
                q.append_pair("page_token", token);
            }
        }
        Ok(RequestSpec::get(url, "list"))
    }

    fn parse_page(
        &self,
        _ctx: &WalkContext<'_>,
        response: &HttpResponse,
    ) -> Result<Page, ProviderError> {
        let body: ListBody = serde_json::from_slice(&response.body)
            .map_err(|e| ProviderError::Malformed(e.to_string()))?;
        let mut page = Page::default();
        for raw in body.items {
            let item: Item = serde_json::from_str(raw.get())
                .map_err(|e| ProviderError::Malformed(e.to_string()))?;
            let Some(id) = item.id else {
                page.rejected.push(convsync::provider::RejectedRecord {
                    reason: "no id".into(),
                    raw: raw.get().to_owned(),
                });
                continue;
            };
            let updated = Timestamp::parse_rfc3339(&item.updated_at)
                .map_err(|e| ProviderError::Malformed(e.to_string()))?;
            let mut record = ConversationRecord::new(id, raw.to_owned());
            record.last_activity_at = Some(updated);
            record.title = item.name;
            page.high_water = page.high_water.max(Some(updated));
            page.records.push(record);
        }
        page.next = body.next_page_token.map(serde_json::Value::String);
        Ok(page)
    }
}

impl ResponsePolicy for DoubleProvider {
    fn describe_error(&self, _status: StatusCode, body: &[u8]) -> String {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
    }
}

/// The daemon over `double` as its one source `double` (no authentication, the test
/// schedule, quick retries), following the double's truth.
pub async fn spawn_double_app(
    double: &Double,
    db: &super::TestDb,
    page_size: usize,
    with_sweep: bool,
) -> super::app::TestApp {
    let provider = Arc::new(DoubleProvider::new(
        double.base_url.clone(),
        page_size,
        with_sweep,
    ));
    let source = super::source(
        "double",
        provider,
        convsync::http::AuthScheme::None,
        super::schedule(),
    );
    super::app::spawn_app(&db.config(super::quick_http(), vec![source]))
        .await
        .following(super::truth::Truth::double(double, "double"))
}
