//! Presence and typing on the sandbox: between two sandbox instances of one server and
//! with the sandbox's simulated contacts, on both storage backends.

use serde_json::{Value, json};

use crate::common::Backend;
use crate::pair::Pair;

backend_tests!(
    typing_and_presence_reach_the_other_instance,
    presence_is_published_only_with_notify_presence,
    a_simulated_contact_types_and_comes_online,
    bad_presence_requests_are_clear_errors,
);

const ALICE: &str = "79001150001";
const BOB: &str = "79001150002";
const ALICE_JID: &str = "79001150001@s.whatsapp.net";
const BOB_JID: &str = "79001150002@s.whatsapp.net";

impl Pair {
    async fn notify_presence(&self, id: &str, on: bool) {
        let (status, body) = self
            .srv
            .put(
                &format!("/api/instances/{id}"),
                &self.auth,
                json!({ "notifyPresence": on }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// The `presence_update` events of `id` once there are `n` of them.
    async fn presences(&self, id: &str, n: usize) -> Vec<Value> {
        crate::common::eventually(20, &format!("{n} presence updates"), || async {
            let events = self.events(id, "presence_update").await;
            (events.len() >= n).then_some(events)
        })
        .await
        .into_iter()
        .map(|e| e["data"].clone())
        .collect()
    }
}

/// Alice types to Bob, Bob follows Alice's presence and sees her go offline.
async fn typing_and_presence_reach_the_other_instance(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    p.notify_presence(&p.bob, true).await;

    for state in ["composing", "recording", "paused"] {
        let (status, body) = p
            .post(
                &p.alice,
                &format!("chats/{BOB}/typing"),
                json!({ "state": state }),
            )
            .await;
        assert_eq!(status, 200, "{state}: {body}");
        assert_eq!(body["success"], true);
    }
    let seen = p.presences(&p.bob, 3).await;
    let states: Vec<&Value> = seen.iter().map(|d| &d["presence"]).collect();
    assert_eq!(states, ["composing", "recording", "paused"], "{seen:?}");
    for d in &seen {
        assert_eq!(d["remoteJid"], ALICE_JID, "{d}");
        assert_eq!(d["sender"], ALICE_JID, "{d}");
        assert_eq!(d["instanceId"], p.bob.as_str(), "{d}");
        assert!(d["timestamp"].as_i64().is_some_and(|t| t > 0), "{d}");
        assert!(d.get("lastSeen").is_none(), "{d}");
    }

    // Following Alice answers where she is now (connected: available), then her news.
    let (status, body) = p
        .post(&p.bob, &format!("presence/subscribe/+{ALICE}"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let seen = p.presences(&p.bob, 4).await;
    assert_eq!(seen[3]["presence"], "available", "{seen:?}");
    assert_eq!(seen[3]["sender"], ALICE_JID);

    let (status, body) = p
        .post(&p.alice, "presence", json!({"presence": "unavailable"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let seen = p.presences(&p.bob, 5).await;
    assert_eq!(seen[4]["presence"], "unavailable", "{seen:?}");
    assert_eq!(seen[4]["sender"], ALICE_JID);
    assert!(
        seen[4]["lastSeen"].as_i64().is_some_and(|t| t > 0),
        "{seen:?}"
    );

    // Presence is not history: nothing was stored as a message on either side.
    assert!(p.history(&p.bob, ALICE).await.is_empty());
    assert!(p.history(&p.alice, BOB).await.is_empty());
}

/// Without `notifyPresence` (the default) presence and typing are not published; the
/// setting shows in the webhook settings.
async fn presence_is_published_only_with_notify_presence(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    let (status, body) = p
        .srv
        .get(&format!("/api/instances/{}", p.alice), &p.auth)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["webhookSettings"]["notifyPresence"], false, "{body}");

    // Bob types to Alice, then writes: Alice gets the message, not the typing (both
    // travel one path, in order, so the message arriving means the typing was handled).
    let (status, body) = p
        .post(
            &p.bob,
            &format!("chats/{ALICE}/typing"),
            json!({"state": "composing"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let hello = p
        .sent(&p.bob, "send", json!({"phone": ALICE, "message": "hi"}))
        .await;
    p.event(&p.alice, "message_received", &hello).await;
    assert!(p.events(&p.alice, "presence_update").await.is_empty());

    // Turned on, the same typing is published.
    p.notify_presence(&p.alice, true).await;
    let (status, body) = p
        .srv
        .get(&format!("/api/instances/{}", p.alice), &p.auth)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["webhookSettings"]["notifyPresence"], true, "{body}");
    let (status, body) = p
        .post(
            &p.bob,
            &format!("chats/{ALICE}/typing"),
            json!({"state": "composing"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let seen = p.presences(&p.alice, 1).await;
    assert_eq!(seen[0]["presence"], "composing");
    assert_eq!(seen[0]["sender"], BOB_JID);
}

/// The sandbox control makes a simulated contact type, record and come and go.
async fn a_simulated_contact_types_and_comes_online(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    p.notify_presence(&p.alice, true).await;
    let contact = "79001150009";
    for presence in ["composing", "recording", "available", "unavailable"] {
        let (status, body) = p
            .srv
            .post(
                &format!("/api/sandbox/instances/{}/presence", p.alice),
                &p.auth,
                json!({"from": contact, "presence": presence}),
            )
            .await;
        assert_eq!(status, 200, "{presence}: {body}");
    }
    let seen = p.presences(&p.alice, 4).await;
    let states: Vec<&Value> = seen.iter().map(|d| &d["presence"]).collect();
    assert_eq!(
        states,
        ["composing", "recording", "available", "unavailable"]
    );
    assert!(
        seen.iter()
            .all(|d| d["sender"] == "79001150009@s.whatsapp.net")
    );
    assert!(seen[3]["lastSeen"].as_i64().is_some(), "{seen:?}");
}

async fn bad_presence_requests_are_clear_errors(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    let cases = [
        ("presence", json!({"presence": "busy"})),
        ("presence", json!({"presence": "composing"})),
        ("presence", json!({})),
        (
            &format!("chats/{BOB}/typing")[..],
            json!({"state": "dancing"}),
        ),
        (
            &format!("chats/{BOB}/typing")[..],
            json!({"state": "available"}),
        ),
        ("chats/not-a-chat/typing", json!({"state": "composing"})),
        ("presence/subscribe/not-a-phone", json!({})),
        ("presence/subscribe/120363000000000001@g.us", json!({})),
    ];
    for (what, body) in cases {
        let (status, answer) = p.post(&p.alice, what, body.clone()).await;
        assert_eq!(status, 400, "{what} {body}: {answer}");
        assert_eq!(answer["code"], "validation_error", "{what}: {answer}");
    }
    let (status, answer) = p
        .srv
        .post(
            &format!("/api/sandbox/instances/{}/presence", p.alice),
            &p.auth,
            json!({"from": "79001150009", "presence": "asleep"}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");

    // A session that is not connected cannot show anything.
    let (status, body) = p
        .srv
        .post(
            &format!("/api/instances/{}/logout", p.alice),
            &p.auth,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, answer) = p
        .post(&p.alice, "presence", json!({"presence": "available"}))
        .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["code"], "not_connected", "{answer}");
    let (status, answer) = p
        .post(
            "no-such-instance",
            "presence",
            json!({"presence": "available"}),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
}
