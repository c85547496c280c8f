//! Editing and deleting messages on the sandbox: between two sandbox instances of one
//! server, on both storage backends, with the server's clock under the test's control.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use wagate_actors::domain::ManualClock;

use crate::common::Backend;
use crate::pair::Pair;

backend_tests!(
    an_edit_reaches_the_other_instance_and_both_histories,
    a_deletion_for_everyone_empties_the_message_on_both_sides,
    a_deletion_for_me_only_leaves_this_history,
    edits_and_deletions_that_whatsapp_refuses_are_clear_errors,
);

const ALICE: &str = "79001130001";
const BOB: &str = "79001130002";
const ALICE_JID: &str = "79001130001@s.whatsapp.net";
const BOB_JID: &str = "79001130002@s.whatsapp.net";

struct Two {
    pair: Pair,
    clock: Arc<ManualClock>,
}

impl std::ops::Deref for Two {
    type Target = Pair;

    fn deref(&self) -> &Pair {
        &self.pair
    }
}

async fn two(backend: Backend) -> Two {
    let (pair, clock) = Pair::start_with_clock(backend, ALICE, BOB).await;
    Two { pair, clock }
}

impl Two {
    async fn send(&self, from: &str, to: &str, text: &str) -> String {
        self.sent(from, "send", json!({"phone": to, "message": text}))
            .await
    }

    async fn edit(&self, id: &str, message_id: &str, text: &str) -> (u16, Value) {
        self.srv
            .put(
                &format!("/api/whatsapp/{id}/messages/{message_id}"),
                &self.auth,
                json!({ "message": text }),
            )
            .await
    }

    async fn delete(&self, id: &str, message_id: &str, query: &str) -> (u16, Value) {
        self.srv
            .delete(
                &format!("/api/whatsapp/{id}/messages/{message_id}{query}"),
                &self.auth,
            )
            .await
    }
}

async fn an_edit_reaches_the_other_instance_and_both_histories(backend: Backend) {
    let t = two(backend).await;
    let id = t.send(&t.alice, BOB, "See you at 5").await;
    t.stored_when(&t.bob, ALICE_JID, &id, |_| true).await;

    let (status, edited) = t.edit(&t.alice, &id, "See you at 6").await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["content"], "See you at 6", "{edited}");
    assert!(edited["editedAt"].is_string(), "{edited}");

    let mine = t
        .stored_when(&t.alice, BOB_JID, &id, |m| m["content"] == "See you at 6")
        .await;
    assert_eq!(mine["revoked"], false, "{mine}");
    let event = t.event(&t.alice, "message_edited", &id).await;
    assert_eq!(event["data"]["message"], "See you at 6", "{event}");
    assert_eq!(event["data"]["fromMe"], true, "{event}");
    assert_eq!(event["data"]["remoteJid"], BOB_JID, "{event}");

    let theirs = t
        .stored_when(&t.bob, ALICE_JID, &id, |m| m["content"] == "See you at 6")
        .await;
    assert!(theirs["editedAt"].is_string(), "{theirs}");
    let event = t.event(&t.bob, "message_edited", &id).await;
    assert_eq!(event["data"]["sender"], ALICE_JID, "{event}");
    assert_eq!(event["data"]["fromMe"], false, "{event}");
    assert_eq!(event["data"]["instanceId"], t.bob.as_str(), "{event}");
    // Still one message each side: an edit is no message of its own.
    assert_eq!(t.history(&t.bob, ALICE_JID).await.len(), 1);
    assert_eq!(t.history(&t.alice, BOB_JID).await.len(), 1);
}

async fn a_deletion_for_everyone_empties_the_message_on_both_sides(backend: Backend) {
    let t = two(backend).await;
    let id = t.send(&t.alice, BOB, "a secret").await;
    t.stored_when(&t.bob, ALICE_JID, &id, |_| true).await;

    let (status, body) = t.delete(&t.alice, &id, "?forEveryone=true").await;
    assert_eq!(status, 200, "{body}");
    for (instance, chat) in [(&t.alice, BOB_JID), (&t.bob, ALICE_JID)] {
        let m = t
            .stored_when(instance, chat, &id, |m| m["revoked"] == true)
            .await;
        assert_eq!(m["content"], Value::Null, "nothing of it is kept: {m}");
        let event = t.event(instance, "message_revoked", &id).await;
        assert_eq!(event["data"]["forEveryone"], true, "{event}");
        assert_eq!(event["data"]["sender"], ALICE_JID, "{event}");
    }
    // Deleting it again changes nothing and is no error.
    let (status, body) = t.delete(&t.alice, &id, "").await;
    assert_eq!(status, 200, "{body}");
    // A deleted message cannot be edited.
    let (status, body) = t.edit(&t.alice, &id, "back").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "message_deleted", "{body}");
}

async fn a_deletion_for_me_only_leaves_this_history(backend: Backend) {
    let t = two(backend).await;
    let id = t.send(&t.alice, BOB, "hello").await;
    t.stored_when(&t.bob, ALICE_JID, &id, |_| true).await;

    // Bob removes Alice's message from his own history: allowed for anyone's message.
    let (status, body) = t.delete(&t.bob, &id, "?forEveryone=false").await;
    assert_eq!(status, 200, "{body}");
    assert!(t.history(&t.bob, ALICE_JID).await.is_empty());
    let event = t.event(&t.bob, "message_revoked", &id).await;
    assert_eq!(event["data"]["forEveryone"], false, "{event}");
    // Alice still has it, untouched.
    let hers = t.history(&t.alice, BOB_JID).await;
    assert_eq!(hers.len(), 1);
    assert_eq!(hers[0]["content"], "hello");
    assert_eq!(hers[0]["revoked"], false);
    // It is gone: a second deletion is a 404.
    let (status, body) = t.delete(&t.bob, &id, "?forEveryone=false").await;
    assert_eq!(status, 404, "{body}");
}

async fn edits_and_deletions_that_whatsapp_refuses_are_clear_errors(backend: Backend) {
    let t = two(backend).await;
    let id = t.send(&t.alice, BOB, "first").await;
    t.stored_when(&t.bob, ALICE_JID, &id, |_| true).await;

    // Unknown message: 404, both verbs.
    let (status, body) = t.edit(&t.alice, "NO-SUCH-ID", "x").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = t.delete(&t.alice, "NO-SUCH-ID", "").await;
    assert_eq!(status, 404, "{body}");
    // Someone else's message: 422, both verbs (for everyone).
    let (status, body) = t.edit(&t.bob, &id, "mine now").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "not_own_message", "{body}");
    let (status, body) = t.delete(&t.bob, &id, "?forEveryone=true").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "not_own_message", "{body}");
    // A blank text, a missing one, an unknown field, a bad flag: 400.
    for body in [
        json!({"message": "  "}),
        json!({}),
        json!({"message": "x", "y": 1}),
    ] {
        let (status, answer) = t
            .srv
            .put(
                &format!("/api/whatsapp/{}/messages/{id}", t.alice),
                &t.auth,
                body.clone(),
            )
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["code"].is_string(), "{answer}");
    }
    let (status, body) = t.delete(&t.alice, &id, "?forEveryone=maybe").await;
    assert_eq!(status, 400, "{body}");
    // A media message cannot be edited.
    let form = reqwest::multipart::Form::new().text("phone", BOB).part(
        "file",
        reqwest::multipart::Part::bytes(b"%PDF-1.4 menu".to_vec())
            .file_name("menu.pdf")
            .mime_str("application/pdf")
            .expect("mime"),
    );
    let resp = t
        .srv
        .request(
            reqwest::Method::POST,
            &format!("/api/whatsapp/{}/send-file", t.alice),
            &t.auth,
        )
        .multipart(form)
        .send()
        .await
        .expect("send-file");
    let (status, body) = crate::common::read(resp).await;
    assert_eq!(status, 200, "{body}");
    let file = body["id"].as_str().expect("id").to_owned();
    let (status, body) = t.edit(&t.alice, &file, "caption?").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "not_text", "{body}");

    // Within 15 minutes the edit goes through; after them it is refused.
    t.clock.set(Utc::now() + TimeDelta::minutes(14));
    let (status, body) = t.edit(&t.alice, &id, "second").await;
    assert_eq!(status, 200, "{body}");
    t.clock.set(Utc::now() + TimeDelta::minutes(16));
    let (status, body) = t.edit(&t.alice, &id, "third").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "edit_window_passed", "{body}");
    let hers = t.history(&t.alice, BOB_JID).await;
    let first = hers.iter().find(|m| m["messageId"] == id).expect("stored");
    assert_eq!(
        first["content"], "second",
        "the refused edit changed nothing"
    );
    // Deleting for everyone has no window here.
    let (status, body) = t.delete(&t.alice, &id, "").await;
    assert_eq!(status, 200, "{body}");
}
