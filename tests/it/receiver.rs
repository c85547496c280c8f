//! A real local webhook receiver: records every request (headers and raw body), answers
//! with a scripted status, or hangs.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::sync::Notify;

/// One request as received.
#[derive(Clone)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.body))
    }
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

struct Shared {
    received: Mutex<Vec<Received>>,
    /// Answer 500 to this many requests first.
    fail_first: AtomicUsize,
    /// Never answer (until the test ends).
    hang: std::sync::atomic::AtomicBool,
    /// Requests currently being held by `hang` or `hold`.
    in_flight: AtomicUsize,
    arrived: Notify,
    /// While true, requests wait (recorded, unanswered) until `release`.
    held: tokio::sync::watch::Sender<bool>,
    /// Answer 500 to every request whose body contains this.
    poison: Mutex<Option<String>>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            received: Mutex::default(),
            fail_first: AtomicUsize::default(),
            hang: std::sync::atomic::AtomicBool::default(),
            in_flight: AtomicUsize::default(),
            arrived: Notify::default(),
            held: tokio::sync::watch::Sender::new(false),
            poison: Mutex::default(),
        }
    }
}

#[derive(Clone)]
pub struct Receiver {
    shared: Arc<Shared>,
    pub addr: SocketAddr,
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    shared.received.lock().expect("lock").push(Received {
        headers,
        body: body.to_vec(),
    });
    shared.arrived.notify_waiters();
    if shared.hang.load(Ordering::SeqCst) {
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    let mut held = shared.held.subscribe();
    if *held.borrow_and_update() {
        // Counted while waiting; a client that gives up drops this future mid-wait.
        let _counted = InFlight::enter(&shared.in_flight);
        let _ = held.wait_for(|h| !*h).await;
    }
    let poisoned = shared
        .poison
        .lock()
        .expect("lock")
        .as_deref()
        .is_some_and(|p| String::from_utf8_lossy(&body).contains(p));
    let failing = poisoned
        || shared
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// Counts one held request while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        InFlight(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Receiver {
    /// A receiver on an ephemeral loopback port.
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::serve(listener).await
    }

    /// A receiver on a given address (to bring a "down" receiver up on its old port).
    pub async fn start_on(addr: SocketAddr) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the old port");
        Self::serve(listener).await
    }

    async fn serve(listener: tokio::net::TcpListener) -> Receiver {
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(handle))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { shared, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// From now on, answer 500 to every request whose body contains `text`.
    pub fn fail_containing(&self, text: &str) {
        *self.shared.poison.lock().expect("lock") = Some(text.to_owned());
    }

    pub fn fail_first(&self, n: usize) {
        self.shared.fail_first.store(n, Ordering::SeqCst);
    }

    pub fn hang(&self) {
        self.shared.hang.store(true, Ordering::SeqCst);
    }

    /// Slow: from now on requests are recorded but not answered until [`Self::release`]
    /// (a client that times out meanwhile sees no answer at all).
    pub fn hold(&self) {
        self.shared.held.send_replace(true);
    }

    /// Answers the held requests (late, for clients that gave up) and every later one.
    pub fn release(&self) {
        self.shared.held.send_replace(false);
    }

    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// Waits until `done` holds for the requests received so far.
    pub async fn wait_for(
        &self,
        what: &str,
        secs: u64,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let notified = self.shared.arrived.notified();
            let now = self.received();
            if done(&now) {
                return now;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                !left.is_zero(),
                "timed out after {secs}s waiting for {what}; received {now:?}"
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
        }
    }

    /// Received requests of one event type.
    pub fn of(&self, event: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.json()["event"] == event)
            .collect()
    }
}

/// A free loopback address with nothing listening on it (a receiver that is down).
pub async fn unused_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    l.local_addr().expect("addr")
}
