//! Paced sends on the real engine, against the fake WhatsApp: a send the instance's
//! `sendRate` queues goes out later under the id its client was given at once, so what
//! refers to it afterwards (a vote on a poll) finds it.

use std::time::Duration;

use serde_json::json;

use super::{ACCOUNT, BOB, BOB_JID, linked_rig};
use crate::common::eventually;

/// With `sendRate`, a text and then a multiple-answer poll are answered 202 `pending`
/// and go in turn; Bob gets the poll under the id of the 202 and votes, and the gateway
/// opens his vote (sealed with the poll's secret) into option names on that poll.
#[tokio::test]
async fn a_paced_poll_goes_under_the_id_given_and_its_votes_open() {
    let rig = linked_rig().await;
    let bob = rig.whatsapp.user(BOB, "Bob").await.expect("Bob");
    let (code, body) = rig
        .server
        .put(
            &format!("/api/instances/{}", rig.id),
            &rig.auth,
            json!({"sendRate": 600}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let queued = |what: &'static str, body: serde_json::Value| {
        let rig = &rig;
        async move {
            let (code, answer) = rig
                .server
                .post(&format!("/api/whatsapp/{}/{what}", rig.id), &rig.auth, body)
                .await;
            assert_eq!(code, 202, "{what}: {answer}");
            assert_eq!(answer["status"], "pending", "{answer}");
            answer["id"].as_str().expect("id").to_owned()
        }
    };
    let text_id = queued("send", json!({"phone": BOB, "message": "A question:"})).await;
    let poll_id = queued(
        "send-poll",
        json!({"phone": BOB, "question": "Which days?", "options": ["Mon", "Tue", "Wed"],
               "multipleAnswers": true}),
    )
    .await;

    let text = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets the text");
    assert_eq!(text.id, text_id);
    let poll = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets the poll");
    assert_eq!(poll.id, poll_id, "the poll went under the id of the 202");
    let creation = poll
        .message
        .poll_creation_message
        .as_option()
        .unwrap_or_else(|| panic!("a multiple-answer poll: {:?}", poll.message));
    assert_eq!(creation.name.as_deref(), Some("Which days?"));
    assert_eq!(creation.selectable_options_count, Some(3));
    rig.hook("message_sent", |e| {
        e["data"]["messageId"] == poll_id.as_str()
    })
    .await;

    bob.vote(ACCOUNT, &poll, &["Mon", "Wed"])
        .await
        .expect("voted");
    let hook = rig
        .hook("poll_vote", |e| e["data"]["messageId"] == poll_id.as_str())
        .await;
    assert_eq!(hook["data"]["options"], json!(["Mon", "Wed"]), "{hook}");
    assert_eq!(hook["data"]["voter"], BOB_JID, "{hook}");
    let stored = eventually(20, "Bob's vote stored on the poll", || async {
        let m = rig.stored(BOB_JID, &poll_id).await;
        (m["poll"]["votes"].as_array().map(Vec::len) == Some(1)).then_some(m)
    })
    .await;
    assert_eq!(stored["poll"]["votes"][0]["options"], json!(["Mon", "Wed"]));
    rig.clean();
}
