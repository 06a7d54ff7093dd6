//! A hostile front for a provider: a loopback HTTP/1.1 proxy that forwards every request to
//! an upstream (the simulator) and, when a fault is queued for a path, misbehaves the way
//! real networks and providers do — the token endpoint applies a refresh and the answer
//! never arrives, arrives cut short, or never ends; error bodies echo the `Authorization`
//! header or the posted form. It records which refresh token each token request carried.
//!
//! One request per connection (`Connection: close`), so a fault never leaks into the next
//! request. Every read is bounded in size.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

/// Requests larger than this are refused (none of convsync's are).
const MAX_REQUEST: usize = 256 * 1024;

/// How to misbehave on the next request to a path.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forward (the upstream applies the request), then close without answering.
    DropAfterApply,
    /// Forward, then send the status line, headers and half of the body, then close.
    TruncateAfterApply,
    /// Forward, then never answer until the client gives up.
    StallAfterApply,
    /// Do not forward; answer with this status and a body quoting the request's form body.
    EchoForm(u16),
    /// Do not forward; answer with this status and a JSON body quoting the request's
    /// `Authorization` header.
    EchoAuthorization(u16),
    /// Do not forward; answer with this status and body.
    Status(u16, String),
}

#[derive(Default)]
struct State {
    faults: HashMap<&'static str, VecDeque<Fault>>,
    refresh_tokens_sent: Vec<String>,
    refresh_tokens_issued: Vec<String>,
}

/// The running proxy.
#[derive(Clone)]
pub struct HostileProxy {
    /// The upstream's base URL with the proxy's host and port.
    pub base_url: Url,
    state: Arc<Mutex<State>>,
}

/// A parsed request.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

impl HostileProxy {
    /// Starts a proxy in front of `upstream` (a base URL; its path is kept).
    pub async fn start(upstream: Url) -> HostileProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut base_url = upstream.clone();
        base_url.set_host(Some("127.0.0.1")).unwrap();
        base_url.set_port(Some(port)).unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (state, client, upstream) = (shared.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let _ = serve(conn, &upstream, &state, &client).await;
                });
            }
        });
        HostileProxy { base_url, state }
    }

    /// Queues `fault` for the next request whose path ends with `path_suffix`
    /// (`oauth/token`, `conversations/search`, `token`).
    pub fn push(&self, path_suffix: &'static str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .entry(path_suffix)
            .or_default()
            .push_back(fault);
    }

    /// The `refresh_token` of every successful upstream token answer, delivered or not.
    pub fn refresh_tokens_issued(&self) -> Vec<String> {
        self.state.lock().unwrap().refresh_tokens_issued.clone()
    }

    /// The `refresh_token` form field of every token request, in order.
    pub fn refresh_tokens_sent(&self) -> Vec<String> {
        self.state.lock().unwrap().refresh_tokens_sent.clone()
    }
}

async fn serve(
    mut conn: TcpStream,
    upstream: &Url,
    state: &Mutex<State>,
    client: &reqwest::Client,
) -> std::io::Result<()> {
    let Some(request) = read_request(&mut conn).await? else {
        return Ok(());
    };
    let fault = {
        let mut state = state.lock().unwrap();
        if request.method == "POST"
            && request.path().ends_with("token")
            && let Some(token) = form_field(&request.body, "refresh_token")
        {
            state.refresh_tokens_sent.push(token);
        }
        let path = request.path().to_owned();
        state
            .faults
            .iter_mut()
            .find(|(suffix, queue)| path.ends_with(**suffix) && !queue.is_empty())
            .and_then(|(_, queue)| queue.pop_front())
    };
    match fault {
        Some(Fault::EchoForm(status)) => {
            let body = format!(
                "{{\"error\":\"invalid_request\",\"error_description\":\"cannot process {}\"}}",
                String::from_utf8_lossy(&request.body)
            );
            write_response(&mut conn, status, &[], body.as_bytes()).await
        }
        Some(Fault::Status(status, body)) => {
            write_response(&mut conn, status, &[], body.as_bytes()).await
        }
        Some(Fault::EchoAuthorization(status)) => {
            let body = format!(
                "{{\"statusCode\":{status},\"message\":\"Invalid token: header was {}\"}}",
                request.header("authorization").unwrap_or_default()
            );
            write_response(&mut conn, status, &[], body.as_bytes()).await
        }
        other => {
            let (status, headers, body) = forward(&request, upstream, client).await;
            if let Some(token) = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["refresh_token"].as_str().map(str::to_owned))
            {
                state.lock().unwrap().refresh_tokens_issued.push(token);
            }
            match other {
                None => write_response(&mut conn, status, &headers, &body).await,
                Some(Fault::DropAfterApply) => conn.shutdown().await,
                Some(Fault::TruncateAfterApply) => {
                    let head = head(status, &headers, body.len());
                    conn.write_all(head.as_bytes()).await?;
                    conn.write_all(&body[..body.len() / 2]).await?;
                    conn.shutdown().await
                }
                Some(Fault::StallAfterApply) => {
                    // Until the client closes its end (its timeout), bounded by a minute.
                    let mut sink = [0u8; 64];
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(60),
                        conn.read(&mut sink),
                    )
                    .await;
                    Ok(())
                }
                Some(Fault::EchoForm(_) | Fault::EchoAuthorization(_) | Fault::Status(..)) => {
                    unreachable!("answered without forwarding")
                }
            }
        }
    }
}

async fn forward(
    request: &Request,
    upstream: &Url,
    client: &reqwest::Client,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut url = upstream.clone();
    let (path, query) = match request.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (request.target.as_str(), None),
    };
    url.set_path(path);
    url.set_query(query);
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).unwrap();
    let mut outgoing = client.request(method, url).body(request.body.clone());
    for (name, value) in &request.headers {
        if !["host", "content-length", "connection"].contains(&name.to_ascii_lowercase().as_str()) {
            outgoing = outgoing.header(name.as_str(), value.as_str());
        }
    }
    let response = outgoing.send().await.expect("upstream answers");
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| {
            !["content-length", "connection", "transfer-encoding"].contains(&name.as_str())
        })
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = response.bytes().await.expect("upstream body").to_vec();
    (status, headers, body)
}

fn head(status: u16, headers: &[(String, String)], length: usize) -> String {
    let mut head =
        format!("HTTP/1.1 {status} Proxied\r\ncontent-length: {length}\r\nconnection: close\r\n");
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        head.push_str("content-type: application/json\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

async fn write_response(
    conn: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    conn.write_all(head(status, headers, body.len()).as_bytes())
        .await?;
    conn.write_all(body).await?;
    conn.shutdown().await
}

async fn read_request(conn: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buf.len() > MAX_REQUEST {
            return Ok(None);
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let target = first.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
        .min(MAX_REQUEST);
    let mut body = buf[header_end + 4..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
    }))
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
