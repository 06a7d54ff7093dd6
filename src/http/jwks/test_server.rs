//! A key-set endpoint on loopback for tests: it serves whatever document and status the
//! test sets, and counts the requests it answered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use url::Url;

use super::{JwksPolicy, SigningKeys};

#[derive(Default)]
struct Served {
    answer: Mutex<(u16, String)>,
    requests: AtomicU64,
}

/// The running endpoint; stops when dropped.
pub(crate) struct KeySetServer {
    url: Url,
    served: Arc<Served>,
    task: tokio::task::JoinHandle<()>,
}

impl KeySetServer {
    /// Serves `document` with 200 at `/tenant/discovery/v2.0/keys`.
    pub(crate) async fn start(document: &str) -> KeySetServer {
        let served = Arc::new(Served::default());
        *served.answer.lock().unwrap() = (200, document.to_owned());
        let app = Router::new()
            .route("/tenant/discovery/v2.0/keys", get(answer))
            .with_state(served.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        KeySetServer {
            url: Url::parse(&format!("http://{addr}/tenant/discovery/v2.0/keys")).unwrap(),
            served,
            task,
        }
    }

    /// From now on, answers `status` with `document`.
    pub(crate) fn answer(&self, status: u16, document: &str) {
        *self.served.answer.lock().unwrap() = (status, document.to_owned());
    }

    /// Requests answered so far.
    pub(crate) fn requests(&self) -> u64 {
        self.served.requests.load(Ordering::SeqCst)
    }

    /// The keys of this endpoint under `policy`, fetched with the daemon's client.
    pub(crate) fn keys(&self, policy: JwksPolicy) -> SigningKeys {
        let client = crate::http::build_client(&crate::http::HttpSettings::default()).unwrap();
        SigningKeys::new(self.url.clone(), client, policy, "test".to_owned())
    }
}

impl Drop for KeySetServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(State(served): State<Arc<Served>>) -> (StatusCode, String) {
    served.requests.fetch_add(1, Ordering::SeqCst);
    let (status, body) = served.answer.lock().unwrap().clone();
    (StatusCode::from_u16(status).unwrap(), body)
}
