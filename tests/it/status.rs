//! Status posts on the sandbox: a text or an image reaches the sandbox instances of its
//! audience (the chosen people, or every contact), is stored and counted like a send;
//! on both storage backends.

use serde_json::{Value, json};

use crate::common::{Backend, eventually};
use crate::pair::Pair;

backend_tests!(
    a_text_status_reaches_the_chosen_and_counts_as_a_send,
    an_image_status_reaches_every_contact,
    bad_status_posts_are_clear_errors,
);

const ALICE: &str = "79001180001";
const BOB: &str = "79001180002";
const CAROL: &str = "79001180003";
const ALICE_JID: &str = "79001180001@s.whatsapp.net";
const STATUS: &str = "status@broadcast";

impl Pair {
    /// The status posts `id` received, once `n` are there.
    async fn statuses_received(&self, id: &str, n: usize) -> Vec<Value> {
        eventually(20, &format!("{n} status posts on {id}"), || async {
            let received: Vec<Value> = self
                .events(id, "message_received")
                .await
                .into_iter()
                .filter(|e| e["data"]["remoteJid"] == STATUS)
                .collect();
            (received.len() >= n).then_some(received)
        })
        .await
    }
}

/// Alice shows a text to Bob only: Bob receives it from her in the status chat, Carol
/// (another sandbox instance) does not; Alice keeps it in her history and it counts as
/// a sent message.
async fn a_text_status_reaches_the_chosen_and_counts_as_a_send(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    let carol = p.srv.connected_instance(&p.auth, "carol", CAROL).await;
    let sent_before = p.messages_sent(&p.alice).await;

    let (status, posted) = p
        .post(
            &p.alice,
            "status",
            json!({"text": "Open until 8 pm", "backgroundColor": "#112233", "recipients": [format!("+{BOB}")]}),
        )
        .await;
    assert_eq!(status, 200, "{posted}");
    let id = posted["id"].as_str().expect("id").to_owned();

    let got = p.statuses_received(&p.bob, 1).await;
    let data = &got[0]["data"];
    assert_eq!(data["messageId"], id, "{data}");
    assert_eq!(data["body"], "Open until 8 pm", "{data}");
    assert_eq!(data["sender"], ALICE_JID, "{data}");
    let sent = p.event(&p.alice, "message_sent", &id).await;
    assert_eq!(sent["data"]["to"], STATUS, "{sent}");

    // Carol was not in the audience. A message Alice sends her afterwards arrives
    // first, so the status had its chance to.
    p.sent(
        &p.alice,
        "send",
        json!({"phone": CAROL, "message": "hello"}),
    )
    .await;
    p.event_where(&carol, "message_received", |d| d["body"] == "hello")
        .await;
    let (_, events) = p
        .srv
        .get(
            &format!("/api/instances/{carol}/events?types=message_received&limit=100"),
            &p.auth,
        )
        .await;
    assert!(
        events["events"]
            .as_array()
            .expect("events")
            .iter()
            .all(|e| e["data"]["remoteJid"] != STATUS),
        "{events}"
    );

    // Kept in Alice's chats as the status chat; counted like a send.
    let (_, chats) = p
        .srv
        .get(&format!("/api/instances/{}/chats", p.alice), &p.auth)
        .await;
    let chat = chats["chats"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["remoteJid"] == STATUS).cloned())
        .unwrap_or_else(|| panic!("no status chat: {chats}"));
    assert_eq!(chat["lastMessage"]["messageId"], id, "{chat}");
    assert_eq!(chat["lastMessage"]["fromMe"], true, "{chat}");
    // The status chat opens like any other, on both sides.
    for (instance, from_me) in [(&p.alice, true), (&p.bob, false)] {
        let (code, history) = p
            .srv
            .get(
                &format!("/api/instances/{instance}/chats/{STATUS}/messages"),
                &p.auth,
            )
            .await;
        assert_eq!(code, 200, "{history}");
        let post = &history["messages"][0];
        assert_eq!(post["messageId"], id, "{history}");
        assert_eq!(post["fromMe"], from_me, "{history}");
    }
    eventually(
        20,
        "the status post and the message to be counted",
        || async { (p.messages_sent(&p.alice).await == sent_before + 2).then_some(()) },
    )
    .await;
}

/// Without recipients a status goes to every contact the session knows: with none it
/// is refused, once Bob is a contact he gets the image with its caption.
async fn an_image_status_reaches_every_contact(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    let media = crate::messaging::media_server().await;
    let image = json!({"imageUrl": format!("http://{media}/cat.png"), "caption": "New in"});

    let (status, err) = p.post(&p.alice, "status", image.clone()).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["code"], "no_audience", "{err}");

    let (status, body) = p
        .post(&p.alice, "contacts/add", json!({"phone": BOB}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, posted) = p.post(&p.alice, "status", image).await;
    assert_eq!(status, 200, "{posted}");
    let got = p.statuses_received(&p.bob, 1).await;
    let data = &got[0]["data"];
    assert_eq!(data["messageId"], posted["id"], "{data}");
    assert_eq!(data["hasMedia"], true, "{data}");
    assert_eq!(data["type"], "image", "{data}");
    assert_eq!(data["body"], "New in", "{data}");
    assert_eq!(data["sender"], ALICE_JID, "{data}");
}

async fn bad_status_posts_are_clear_errors(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    let media = crate::messaging::media_server().await;
    let url = format!("http://{media}/cat.png");
    for (body, why) in [
        (json!({}), "neither text nor image"),
        (json!({"text": "hi", "imageUrl": url}), "both"),
        (json!({"text": "   "}), "a blank text"),
        (
            json!({"text": "x".repeat(701)}),
            "a text over 700 characters",
        ),
        (
            json!({"text": "hi", "backgroundColor": "red"}),
            "not #RRGGBB",
        ),
        (
            json!({"text": "hi", "caption": "c"}),
            "a caption without an image",
        ),
        (
            json!({"imageUrl": url, "backgroundColor": "#000000"}),
            "a background for an image",
        ),
        (
            json!({"text": "hi", "recipients": ["not a phone"]}),
            "a bad recipient",
        ),
        (json!({"text": "hi", "to": [BOB]}), "an unknown field"),
        (
            json!({"imageUrl": format!("http://{media}/big"), "recipients": [BOB]}),
            "not an image",
        ),
    ] {
        let (status, err) = p.post(&p.alice, "status", body).await;
        assert_eq!(status, 400, "{why}: {err}");
        assert!(
            err["error"].is_string() && err["code"].is_string(),
            "{why}: {err}"
        );
    }
    let idle = p.srv.new_instance(&p.auth, "idle").await;
    let (status, err) = p
        .post(&idle, "status", json!({"text": "hi", "recipients": [BOB]}))
        .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["code"], "not_connected");
}
