//! A real HTTP receiver on loopback that records what it is sent and
//! answers from a script.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::sync::Semaphore;

#[derive(Debug, Clone)]
pub(super) struct Recorded {
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    /// Statuses to answer, in order; 200 once they run out.
    script: Mutex<VecDeque<u16>>,
    /// While set, requests are recorded and then held until released.
    gate: Mutex<Option<Arc<Semaphore>>>,
    /// The `location` of 3xx answers.
    location: Mutex<Option<String>>,
}

pub(super) struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hook(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    shared
        .requests
        .lock()
        .unwrap()
        .push(Recorded { headers, body });
    let gate = shared.gate.lock().unwrap().clone();
    if let Some(gate) = gate {
        // Held until `release` adds permits; each request then takes one.
        gate.acquire().await.unwrap().forget();
    }
    let status = shared.script.lock().unwrap().pop_front().unwrap_or(200);
    let mut answer = HeaderMap::new();
    if let Some(location) = shared.location.lock().unwrap().as_ref() {
        answer.insert("location", location.parse().unwrap());
    }
    (StatusCode::from_u16(status).unwrap(), answer)
}

impl Receiver {
    pub(super) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .route("/hook", post(hook))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, shared, task }
    }

    pub(super) fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub(super) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answers the next requests with these statuses (replacing any left).
    pub(super) fn answer_with(&self, statuses: impl IntoIterator<Item = u16>) {
        *self.shared.script.lock().unwrap() = statuses.into_iter().collect();
    }

    /// Sends `location` with every answer (for redirects).
    pub(super) fn redirect_to(&self, location: &str) {
        *self.shared.location.lock().unwrap() = Some(location.to_owned());
    }

    /// Holds every request until [`Self::release`].
    pub(super) fn hold(&self) {
        *self.shared.gate.lock().unwrap() = Some(Arc::new(Semaphore::new(0)));
    }

    /// Lets held and later requests through.
    pub(super) fn release(&self) {
        if let Some(gate) = self.shared.gate.lock().unwrap().as_ref() {
            gate.add_permits(Semaphore::MAX_PERMITS / 2);
        }
    }

    pub(super) fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }
}
