//! Two connected sandbox instances of one server, Alice and Bob, and what the tests of
//! WhatsApp features between them ask of the API: sends, histories and events.

use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;
use wagate_actors::domain::ManualClock;

use crate::common::{Auth, Backend, TestServer, eventually};

pub struct Pair {
    pub srv: TestServer,
    pub auth: Auth,
    pub alice: String,
    pub bob: String,
}

impl Pair {
    /// Alice (`alice_phone`) and Bob (`bob_phone`), connected, on a server on `backend`.
    pub async fn start(backend: Backend, alice_phone: &str, bob_phone: &str) -> Pair {
        let srv = TestServer::start_on(backend, &[]).await;
        Pair::connect(srv, alice_phone, bob_phone).await
    }

    /// As [`Pair::start`], on a server whose clock the test moves.
    pub async fn start_with_clock(
        backend: Backend,
        alice_phone: &str,
        bob_phone: &str,
    ) -> (Pair, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let srv = TestServer::start_on_with_clock(backend, &[], clock.clone()).await;
        (Pair::connect(srv, alice_phone, bob_phone).await, clock)
    }

    async fn connect(srv: TestServer, alice_phone: &str, bob_phone: &str) -> Pair {
        let auth = srv.admin();
        let alice = srv.connected_instance(&auth, "alice", alice_phone).await;
        let bob = srv.connected_instance(&auth, "bob", bob_phone).await;
        Pair {
            srv,
            auth,
            alice,
            bob,
        }
    }

    /// `POST /api/whatsapp/{from}/{what}` with `body`.
    pub async fn post(&self, from: &str, what: &str, body: Value) -> (u16, Value) {
        self.srv
            .post(&format!("/api/whatsapp/{from}/{what}"), &self.auth, body)
            .await
    }

    /// The id of a message `from` sent with `POST …/{what}`, which must be accepted.
    pub async fn sent(&self, from: &str, what: &str, body: Value) -> String {
        let (status, sent) = self.post(from, what, body).await;
        assert_eq!(status, 200, "{sent}");
        sent["id"].as_str().expect("id").to_owned()
    }

    /// `messagesSent` of instance `id` today (by the server's clock).
    pub async fn messages_sent(&self, id: &str) -> u64 {
        let (status, body) = self
            .srv
            .get(
                &format!("/api/stats/instances/{id}?period=today"),
                &self.auth,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["usage"]["messagesSent"]
            .as_u64()
            .expect("messagesSent")
    }

    /// The stored messages of `chat` on instance `id`.
    pub async fn history(&self, id: &str, chat: &str) -> Vec<Value> {
        let (status, body) = self
            .srv
            .get(
                &format!("/api/instances/{id}/chats/{chat}/messages?limit=1000"),
                &self.auth,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["messages"].as_array().cloned().unwrap_or_default()
    }

    /// The stored message `message_id` of `chat` on `id`, once there.
    pub async fn stored(&self, id: &str, chat: &str, message_id: &str) -> Value {
        self.stored_when(id, chat, message_id, |_| true).await
    }

    /// The stored message `message_id` of `chat` on `id`, once `ready` holds for it.
    pub async fn stored_when(
        &self,
        id: &str,
        chat: &str,
        message_id: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(20, &format!("{message_id} as expected"), || async {
            self.history(id, chat)
                .await
                .into_iter()
                .find(|m| m["messageId"] == message_id && ready(m))
        })
        .await
    }

    /// The stored events of `kind` on `id`.
    pub async fn events(&self, id: &str, kind: &str) -> Vec<Value> {
        let (status, body) = self
            .srv
            .get(
                &format!("/api/instances/{id}/events?types={kind}&limit=1000"),
                &self.auth,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["events"].as_array().cloned().unwrap_or_default()
    }

    /// The event of `kind` on `id` whose data `matches`, once there.
    pub async fn event_where(
        &self,
        id: &str,
        kind: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(20, &format!("a {kind} event"), || async {
            self.events(id, kind)
                .await
                .into_iter()
                .find(|e| matches(&e["data"]))
        })
        .await
    }

    /// The event of `kind` on `id` about message `message_id`, once there.
    pub async fn event(&self, id: &str, kind: &str, message_id: &str) -> Value {
        self.event_where(id, kind, |d| d["messageId"] == message_id)
            .await
    }
}
