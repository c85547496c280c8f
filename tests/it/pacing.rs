//! Pacing against bans on the sandbox, on both storage backends: a send's `delay`
//! ("typing…" first) and an instance's `sendRate` (a durable queue drained at that pace).
//! The pace is driven by the server's clock, which the tests move: no test waits for
//! time to pass.

use chrono::{Duration, TimeZone, Utc};
use serde_json::{Value, json};
use wagate_actors::domain::{Clock, ManualClock};

use crate::common::{Auth, Backend, TestServer, eventually};
use crate::pair::Pair;

backend_tests!(
    a_delayed_send_shows_typing_before_the_message,
    paced_sends_queue_in_order_and_go_at_the_pace,
    queued_sends_survive_a_restart,
    bad_pacing_input_is_a_clear_error,
    queued_sends_count_against_the_limit_when_accepted,
);

const ALICE: &str = "79001170001";
const BOB: &str = "79001170002";
const ALICE_JID: &str = "79001170001@s.whatsapp.net";
/// A simulated contact of the sandbox (no instance is linked as it).
const CAROL: &str = "79001170009";
/// The longest pause between two sends at 6 a minute: 10 s plus the jitter's 30 %,
/// and a second to spare.
const PAST_GAP_AT_6: i64 = 14;

impl Pair {
    async fn set_send_rate(&self, id: &str, rate: u32) {
        let (status, body) = self
            .srv
            .put(
                &format!("/api/instances/{id}"),
                &self.auth,
                json!({ "sendRate": rate }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Sends a text that the instance's pace queues: 202, `pending`, its id.
    async fn queued(&self, from: &str, to: &str, text: &str) -> String {
        let (status, body) = self
            .post(from, "send", json!({"phone": to, "message": text}))
            .await;
        assert_eq!(status, 202, "{text}: {body}");
        assert_eq!(body["status"], "pending", "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Queues three texts from Alice to `to` while the clock stands still: each answers
    /// 202 `pending`; the first goes at once and the other two wait. Their ids.
    async fn three_queued(&self, to: &str, texts: [&str; 3]) -> [String; 3] {
        let ids = [
            self.queued(&self.alice, to, texts[0]).await,
            self.queued(&self.alice, to, texts[1]).await,
            self.queued(&self.alice, to, texts[2]).await,
        ];
        self.went(&self.alice, to, &ids[0]).await;
        self.queue_depth_is(&self.alice, 2).await;
        ids
    }

    /// `queuedSends` of the instance's status, once it is `n`.
    async fn queue_depth_is(&self, id: &str, n: u64) {
        eventually(20, &format!("{n} queued sends"), || async {
            let (status, body) = self
                .srv
                .get(&format!("/api/instances/{id}/status"), &self.auth)
                .await;
            assert_eq!(status, 200, "{body}");
            (body["queuedSends"] == n).then_some(())
        })
        .await
    }

    /// The stored status of message `message_id` of `chat` on `id`.
    async fn status_of(&self, id: &str, chat: &str, message_id: &str) -> Value {
        self.history(id, chat)
            .await
            .into_iter()
            .find(|m| m["messageId"] == message_id)
            .map(|m| m["status"].clone())
            .unwrap_or(Value::Null)
    }

    /// The message ids of the `kind` events of `id`, in the order they happened.
    async fn message_ids(&self, id: &str, kind: &str) -> Vec<Value> {
        self.events(id, kind)
            .await
            .into_iter()
            .map(|e| e["data"]["messageId"].clone())
            .collect()
    }

    /// Waits until message `message_id` of `chat` on `id` is stored `sent` (or beyond).
    async fn went(&self, id: &str, chat: &str, message_id: &str) {
        self.stored_when(id, chat, message_id, |m| m["status"] != "pending")
            .await;
    }
}

fn advance(clock: &ManualClock, secs: i64) {
    clock.set(clock.now() + Duration::seconds(secs));
}

/// With `delay`, Bob sees Alice typing before her message arrives; the answer comes
/// once it went (200, as without a delay).
async fn a_delayed_send_shows_typing_before_the_message(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    let (status, body) = p
        .srv
        .put(
            &format!("/api/instances/{}", p.bob),
            &p.auth,
            json!({ "notifyPresence": true }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = p
        .post(
            &p.alice,
            "send",
            json!({"phone": BOB, "message": "thinking of you", "delay": 300}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("status").is_none(), "sent at once: {body}");
    let id = body["id"].as_str().expect("id").to_owned();
    // Stored when answered: sent, or delivered already (Bob is a sandbox instance).
    let stored = p.status_of(&p.alice, BOB, &id).await;
    assert!(stored == "sent" || stored == "delivered", "{stored}");

    p.event(&p.bob, "message_received", &id).await;
    // Bob's events in the order they happened: the typing first, then the message.
    let (status, body) = p
        .srv
        .get(
            &format!(
                "/api/instances/{}/events?types=presence_update,message_received&limit=100",
                p.bob
            ),
            &p.auth,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let kinds: Vec<(String, Value)> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_owned(),
                e["data"].clone(),
            )
        })
        .collect();
    let typing = kinds
        .iter()
        .position(|(t, d)| t == "presence_update" && d["presence"] == "composing")
        .unwrap_or_else(|| panic!("Bob saw no typing: {kinds:?}"));
    let message = kinds
        .iter()
        .position(|(t, d)| t == "message_received" && d["messageId"] == id.as_str())
        .unwrap_or_else(|| panic!("Bob got no message: {kinds:?}"));
    assert!(typing < message, "typing before the message: {kinds:?}");
    assert_eq!(kinds[typing].1["sender"], ALICE_JID);

    // Every send takes it: a location too.
    let (status, body) = p
        .post(
            &p.alice,
            "send-location",
            json!({"phone": BOB, "latitude": 55.75, "longitude": 37.62, "delay": 50}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// With `sendRate`, sends answer 202 `pending` and go one by one at the pace of the
/// server's clock, in order; Bob receives them in that order. The queue's depth shows
/// in the status and in `/metrics`.
async fn paced_sends_queue_in_order_and_go_at_the_pace(backend: Backend) {
    let (p, clock) = Pair::start_with_clock(backend, ALICE, BOB).await;
    p.set_send_rate(&p.alice, 6).await;
    let (status, body) = p
        .srv
        .get(&format!("/api/instances/{}", p.alice), &p.auth)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sendRate"], 6, "{body}");

    let ids = p.three_queued(BOB, ["one", "two", "three"]).await;
    assert_eq!(p.status_of(&p.alice, BOB, &ids[1]).await, "pending");
    assert_eq!(p.status_of(&p.alice, BOB, &ids[2]).await, "pending");
    let metrics = p
        .srv
        .request(reqwest::Method::GET, "/metrics", &Auth::None)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics");
    let series = format!("wagate_send_queue_depth{{instance=\"{}\"}} 2", p.alice);
    assert!(metrics.contains(&series), "{series} in:\n{metrics}");

    // Past the longest gap the pace allows, the next one goes, and only it.
    advance(&clock, PAST_GAP_AT_6);
    p.went(&p.alice, BOB, &ids[1]).await;
    p.queue_depth_is(&p.alice, 1).await;
    assert_eq!(p.status_of(&p.alice, BOB, &ids[2]).await, "pending");
    advance(&clock, PAST_GAP_AT_6);
    p.went(&p.alice, BOB, &ids[2]).await;
    p.queue_depth_is(&p.alice, 0).await;

    // Each went through the usual events, in order, and reached Bob in order.
    let sent = p.message_ids(&p.alice, "message_sent").await;
    assert_eq!(sent, ids.to_vec(), "message_sent in order");
    let received = eventually(20, "Bob's three messages", || async {
        let got = p.message_ids(&p.bob, "message_received").await;
        (got.len() == 3).then_some(got)
    })
    .await;
    assert_eq!(received, ids.to_vec(), "Bob received them in order");
    let texts: Vec<Value> = p
        .history(&p.bob, ALICE)
        .await
        .into_iter()
        .rev()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(texts, ["one", "two", "three"]);

    // Without the setting, sends are as before: 200, sent at once.
    p.set_send_rate(&p.alice, 0).await;
    let (status, body) = p
        .srv
        .get(&format!("/api/instances/{}", p.alice), &p.auth)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sendRate"], Value::Null, "{body}");
    let id = p
        .sent(&p.alice, "send", json!({"phone": BOB, "message": "free"}))
        .await;
    let stored = p.status_of(&p.alice, BOB, &id).await;
    assert!(stored == "sent" || stored == "delivered", "{stored}");
}

/// Queued sends are stored: after a restart the queue goes on, in order, at its pace.
async fn queued_sends_survive_a_restart(backend: Backend) {
    let (p, clock) = Pair::start_with_clock(backend, ALICE, BOB).await;
    p.set_send_rate(&p.alice, 6).await;
    let ids = p.three_queued(CAROL, ["first", "second", "third"]).await;

    let Pair {
        srv, alice, bob, ..
    } = p;
    let srv: TestServer = srv.restart().await;
    let auth = srv.admin();
    srv.wait_status(&auth, &alice, "connected").await;
    let p = Pair {
        srv,
        auth,
        alice,
        bob,
    };
    // Nothing was lost: both wait, stored `pending`, until the new session drains them.
    // The queue starts with its head.
    p.went(&p.alice, CAROL, &ids[1]).await;
    p.queue_depth_is(&p.alice, 1).await;
    assert_eq!(p.status_of(&p.alice, CAROL, &ids[2]).await, "pending");
    advance(&clock, PAST_GAP_AT_6);
    p.went(&p.alice, CAROL, &ids[2]).await;
    p.queue_depth_is(&p.alice, 0).await;
    let sent = p.message_ids(&p.alice, "message_sent").await;
    assert_eq!(
        sent,
        ids.to_vec(),
        "message_sent in order across the restart"
    );
}

/// A delay or a rate out of bounds, or not a number, is a 400 with a JSON error.
async fn bad_pacing_input_is_a_clear_error(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    let instance = format!("/api/instances/{}", p.alice);
    for body in [
        json!({"sendRate": 601}),
        json!({"sendRate": -1}),
        json!({"sendRate": "fast"}),
        json!({"webhookSettings": {"sendRate": 1000}}),
    ] {
        let (status, answer) = p.srv.put(&instance, &p.auth, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
        assert_eq!(answer["code"], "validation_error", "{answer}");
    }
    for (what, body) in [
        (
            "send",
            json!({"phone": BOB, "message": "x", "delay": 20_001}),
        ),
        ("send", json!({"phone": BOB, "message": "x", "delay": -5})),
        (
            "send",
            json!({"phone": BOB, "message": "x", "delay": "soon"}),
        ),
        (
            "send-poll",
            json!({"phone": BOB, "question": "q?", "options": ["a", "b"], "delay": 99_999}),
        ),
        (
            "send-contact",
            json!({"phone": BOB, "contacts": [{"name": "C", "phones": [CAROL]}], "delay": 20_001}),
        ),
    ] {
        let (status, answer) = p.post(&p.alice, what, body.clone()).await;
        assert_eq!(status, 400, "{what} {body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    // Nothing of it was sent.
    assert!(p.history(&p.alice, BOB).await.is_empty());
}

/// A queued send counts against the message limit when it is accepted, not when it goes:
/// a burst beyond `maxMessagesSent` is refused past the limit while the queue still
/// holds the accepted ones, and those count once each when they go.
async fn queued_sends_count_against_the_limit_when_accepted(backend: Backend) {
    let (p, clock) = Pair::start_with_clock(backend, ALICE, BOB).await;
    // Noon of a day of its own: the pace's steps stay inside one limit period.
    let noon = Utc
        .with_ymd_and_hms(2100, 3, 10, 12, 0, 0)
        .single()
        .expect("date");
    clock.set(noon);
    let (status, body) = p
        .srv
        .put(
            &format!("/api/instances/{}", p.alice),
            &p.auth,
            json!({"sendRate": 6, "limits": {"maxMessagesSent": 3, "period": "day"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The clock stands still: the first went, the other two wait, both counted already.
    let ids = p.three_queued(BOB, ["one", "two", "three"]).await;
    for text in ["four", "five"] {
        let (status, body) = p
            .post(&p.alice, "send", json!({"phone": BOB, "message": text}))
            .await;
        assert_eq!(status, 429, "{text}: {body}");
        assert_eq!(body["code"], "limit_exceeded", "{body}");
    }
    assert_eq!(p.messages_sent(&p.alice).await, 3);

    // The queue sends what it accepted, and counts none of it a second time.
    advance(&clock, PAST_GAP_AT_6);
    p.went(&p.alice, BOB, &ids[1]).await;
    advance(&clock, PAST_GAP_AT_6);
    p.went(&p.alice, BOB, &ids[2]).await;
    p.queue_depth_is(&p.alice, 0).await;
    assert_eq!(p.message_ids(&p.alice, "message_sent").await, ids.to_vec());
    assert_eq!(p.messages_sent(&p.alice).await, 3);
    let (status, body) = p
        .post(&p.alice, "send", json!({"phone": BOB, "message": "six"}))
        .await;
    assert_eq!(status, 429, "{body}");
}
