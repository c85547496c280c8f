//! Replies, mentions and reactions on the sandbox: between two sandbox instances of one
//! server, both directions, on both storage backends.

use serde_json::{Value, json};

use crate::common::{Backend, eventually};
use crate::pair::Pair;

backend_tests!(
    replies_and_mentions_reach_the_other_instance,
    reactions_are_stored_on_the_message_both_sides,
    bad_replies_and_reactions_are_clear_errors,
);

const ALICE: &str = "79001120001";
const BOB: &str = "79001120002";
const ALICE_JID: &str = "79001120001@s.whatsapp.net";
const BOB_JID: &str = "79001120002@s.whatsapp.net";

/// Alice writes; Bob replies to it mentioning her; Alice replies to Bob's reply with a
/// file. Each side's history and events show what was quoted and who was mentioned.
async fn replies_and_mentions_reach_the_other_instance(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    let (srv, auth, a, b) = (&p.srv, p.auth.clone(), p.alice.clone(), p.bob.clone());
    let first = p
        .sent(&a, "send", json!({"phone": BOB, "message": "Lunch?"}))
        .await;
    p.stored(&b, ALICE_JID, &first).await;

    let reply = p
        .sent(
            &b,
            "send",
            json!({"phone": ALICE, "message": "Yes, @79001120001", "replyTo": first,
               "mentions": ["+7 900 112-00-01"]}),
        )
        .await;
    let mine = p.stored(&b, ALICE_JID, &reply).await;
    assert_eq!(mine["quotedMessageId"], first.as_str(), "{mine}");
    assert_eq!(mine["mentions"], json!([ALICE_JID]), "{mine}");
    let sent = p
        .event_where(&b, "message_sent", |d| d["messageId"] == reply)
        .await;
    assert_eq!(sent["data"]["quotedMessageId"], first.as_str(), "{sent}");
    assert_eq!(sent["data"]["mentions"], json!([ALICE_JID]), "{sent}");

    let theirs = p.stored(&a, BOB_JID, &reply).await;
    assert_eq!(theirs["quotedMessageId"], first.as_str(), "{theirs}");
    assert_eq!(theirs["mentions"], json!([ALICE_JID]), "{theirs}");
    assert_eq!(theirs["content"], "Yes, @79001120001", "{theirs}");
    let received = p
        .event_where(&a, "message_received", |d| d["messageId"] == reply)
        .await;
    assert_eq!(received["data"]["quotedMessageId"], first.as_str());
    assert_eq!(received["data"]["mentions"], json!([ALICE_JID]));

    // A plain message has no quote and no mentions, and its event keeps its old shape.
    let plain = p.stored(&a, BOB_JID, &first).await;
    assert_eq!(plain["quotedMessageId"], Value::Null, "{plain}");
    assert_eq!(plain["mentions"], json!([]), "{plain}");
    let plain_event = p
        .event_where(&a, "message_sent", |d| d["messageId"] == first)
        .await;
    assert!(
        plain_event["data"].get("quotedMessageId").is_none(),
        "{plain_event}"
    );

    // An uploaded file can reply too (multipart fields), quoting a received message.
    let form = reqwest::multipart::Form::new()
        .text("phone", BOB)
        .text("replyTo", reply.clone())
        .text("mentions", format!("{BOB}, {ALICE}"))
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"%PDF-1.4 menu".to_vec())
                .file_name("menu.pdf")
                .mime_str("application/pdf")
                .expect("mime"),
        );
    let resp = srv
        .request(
            reqwest::Method::POST,
            &format!("/api/whatsapp/{a}/send-file"),
            &auth,
        )
        .multipart(form)
        .send()
        .await
        .expect("send-file");
    let (status, body) = crate::common::read(resp).await;
    assert_eq!(status, 200, "{body}");
    let file_id = body["id"].as_str().expect("id").to_owned();
    let file = p.stored(&b, ALICE_JID, &file_id).await;
    assert_eq!(file["quotedMessageId"], reply.as_str(), "{file}");
    assert_eq!(file["mentions"], json!([BOB_JID, ALICE_JID]), "{file}");
    assert_eq!(file["messageType"], "document", "{file}");

    // The sandbox's simulated contact can reply too.
    let (status, body) = srv
        .post(
            &format!("/api/sandbox/instances/{a}/inbound"),
            &auth,
            json!({"from": "79001120009", "body": "re", "replyTo": first}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let inbound = body["messageId"].as_str().expect("messageId").to_owned();
    let stored_reply = p.stored(&a, "79001120009@s.whatsapp.net", &inbound).await;
    assert_eq!(
        stored_reply["quotedMessageId"],
        first.as_str(),
        "{stored_reply}"
    );
}

/// Bob reacts to Alice's message and changes his mind; Alice reacts to her own message
/// and takes it back. Both sides store the reactions on the message and publish
/// `message_reaction`.
async fn reactions_are_stored_on_the_message_both_sides(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    let (srv, auth, a, b) = (&p.srv, p.auth.clone(), p.alice.clone(), p.bob.clone());
    let hello = p
        .sent(&a, "send", json!({"phone": BOB, "message": "Hello"}))
        .await;
    p.stored(&b, ALICE_JID, &hello).await;

    let react = |id: String, message: String, emoji: &'static str| {
        let srv = &srv;
        let auth = &auth;
        async move {
            srv.post(
                &format!("/api/whatsapp/{id}/messages/{message}/reaction"),
                auth,
                json!({ "emoji": emoji }),
            )
            .await
        }
    };
    let (status, body) = react(b.clone(), hello.clone(), "👍").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    let (status, body) = react(b.clone(), hello.clone(), "❤️").await;
    assert_eq!(status, 200, "{body}");

    // Bob's copy carries his own (latest) reaction.
    let on_b = p.stored(&b, ALICE_JID, &hello).await;
    assert_eq!(
        on_b["reactions"],
        json!([{"sender": BOB_JID, "fromMe": true, "emoji": "❤️",
                "timestamp": on_b["reactions"][0]["timestamp"]}]),
        "{on_b}"
    );
    // Alice gets both reactions as events, and her copy ends with the latest.
    let events = eventually(20, "two reactions on alice", || async {
        let events = p.events(&a, "message_reaction").await;
        (events.len() >= 2).then_some(events)
    })
    .await;
    let emojis: Vec<&str> = events
        .iter()
        .map(|e| e["data"]["emoji"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(emojis, ["👍", "❤️"]);
    let data = &events[1]["data"];
    assert_eq!(data["messageId"], hello.as_str(), "{data}");
    assert_eq!(data["sender"], BOB_JID, "{data}");
    assert_eq!(data["remoteJid"], BOB_JID, "{data}");
    assert_eq!(data["fromMe"], false, "{data}");
    assert_eq!(data["instanceId"], a.as_str(), "{data}");
    let on_a = p.stored(&a, BOB_JID, &hello).await;
    assert_eq!(
        on_a["reactions"].as_array().map(Vec::len),
        Some(1),
        "{on_a}"
    );
    assert_eq!(on_a["reactions"][0]["emoji"], "❤️", "{on_a}");
    assert_eq!(on_a["reactions"][0]["sender"], BOB_JID, "{on_a}");

    // Alice reacts to her own message, then takes it back: Bob's stays.
    let (status, body) = react(a.clone(), hello.clone(), "🎉").await;
    assert_eq!(status, 200, "{body}");
    let on_a = p.stored(&a, BOB_JID, &hello).await;
    assert_eq!(
        on_a["reactions"].as_array().map(Vec::len),
        Some(2),
        "{on_a}"
    );
    let (status, body) = react(a.clone(), hello.clone(), "").await;
    assert_eq!(status, 200, "{body}");
    let on_a = p.stored(&a, BOB_JID, &hello).await;
    assert_eq!(
        on_a["reactions"].as_array().map(Vec::len),
        Some(1),
        "{on_a}"
    );
    assert_eq!(on_a["reactions"][0]["sender"], BOB_JID, "{on_a}");
    // On Bob's side Alice's reaction came and went.
    let on_b = eventually(20, "alice's reaction gone on bob", || async {
        let events = p.events(&b, "message_reaction").await;
        let last_from_alice = events
            .iter()
            .rev()
            .find(|e| e["data"]["sender"] == ALICE_JID)?;
        (last_from_alice["data"]["emoji"] == "").then_some(())?;
        Some(p.stored(&b, ALICE_JID, &hello).await)
    })
    .await;
    assert_eq!(
        on_b["reactions"].as_array().map(Vec::len),
        Some(1),
        "{on_b}"
    );
    assert_eq!(on_b["reactions"][0]["fromMe"], true, "{on_b}");
}

async fn bad_replies_and_reactions_are_clear_errors(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    let (srv, auth, a, b) = (&p.srv, p.auth.clone(), p.alice.clone(), p.bob.clone());
    let hello = p
        .sent(&a, "send", json!({"phone": BOB, "message": "Hello"}))
        .await;

    // A reply to a message that does not exist, or belongs to another chat: 404.
    for (reply_to, phone) in [("NO-SUCH-ID", BOB), (hello.as_str(), "79001120003")] {
        let (status, body) = srv
            .post(
                &format!("/api/whatsapp/{a}/send"),
                &auth,
                json!({"phone": phone, "message": "re", "replyTo": reply_to}),
            )
            .await;
        assert_eq!(status, 404, "{reply_to}: {body}");
        assert_eq!(body["code"], "not_found", "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(reply_to)),
            "{body}"
        );
    }
    // A mention that is no phone number: 400.
    let (status, body) = srv
        .post(
            &format!("/api/whatsapp/{a}/send"),
            &auth,
            json!({"phone": BOB, "message": "hi", "mentions": ["bob"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "validation_error", "{body}");
    // Nothing of these was sent or stored.
    let (_, history) = srv
        .get(&format!("/api/instances/{a}/chats/{BOB}/messages"), &auth)
        .await;
    assert_eq!(
        history["messages"].as_array().map(Vec::len),
        Some(1),
        "{history}"
    );

    // A reaction to an unknown message: 404; not one emoji: 400.
    let (status, body) = srv
        .post(
            &format!("/api/whatsapp/{b}/messages/NO-SUCH-ID/reaction"),
            &auth,
            json!({"emoji": "👍"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "not_found", "{body}");
    for emoji in ["a b", "this is not an emoji at all"] {
        let (status, body) = srv
            .post(
                &format!("/api/whatsapp/{a}/messages/{hello}/reaction"),
                &auth,
                json!({ "emoji": emoji }),
            )
            .await;
        assert_eq!(status, 400, "{emoji}: {body}");
        assert_eq!(body["code"], "validation_error", "{body}");
    }
    let (status, body) = srv
        .post(
            &format!("/api/whatsapp/{a}/messages/{hello}/reaction"),
            &auth,
            json!({}),
        )
        .await;
    assert_eq!(status, 400, "a missing emoji: {body}");
    assert!(p.events(&a, "message_reaction").await.is_empty());
}
