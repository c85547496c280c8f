//! Locations, contact cards and polls on the sandbox: between two sandbox instances of
//! one server and with the sandbox's simulated contacts, on both storage backends.

use serde_json::{Value, json};

use crate::common::{Backend, eventually};
use crate::pair::Pair;

backend_tests!(
    a_location_reaches_the_other_instance_typed,
    contact_cards_reach_the_other_instance_typed,
    a_poll_collects_votes_by_name,
    bad_locations_cards_polls_and_votes_are_clear_errors,
);

const ALICE: &str = "79001140001";
const BOB: &str = "79001140002";
const ALICE_JID: &str = "79001140001@s.whatsapp.net";
const BOB_JID: &str = "79001140002@s.whatsapp.net";

async fn two(backend: Backend) -> Pair {
    Pair::start(backend, ALICE, BOB).await
}

async fn a_location_reaches_the_other_instance_typed(backend: Backend) {
    let t = two(backend).await;
    let id = t
        .sent(
            &t.alice,
            "send-location",
            json!({"phone": BOB, "latitude": 55.7558, "longitude": 37.6173,
                   "name": "Красная площадь", "address": "Москва"}),
        )
        .await;
    let location = json!({"latitude": 55.7558, "longitude": 37.6173,
                          "name": "Красная площадь", "address": "Москва"});
    let theirs = t.stored_when(&t.bob, ALICE_JID, &id, |_| true).await;
    assert_eq!(theirs["messageType"], "location", "{theirs}");
    assert_eq!(theirs["location"], location, "{theirs}");
    assert_eq!(theirs["content"], "Красная площадь", "{theirs}");
    let received = t.event(&t.bob, "message_received", &id).await;
    assert_eq!(received["data"]["location"], location, "{received}");
    assert_eq!(received["data"]["type"], "location", "{received}");
    let mine = t.stored_when(&t.alice, BOB_JID, &id, |_| true).await;
    assert_eq!(mine["location"], location, "{mine}");
    let sent = t.event(&t.alice, "message_sent", &id).await;
    assert_eq!(sent["data"]["location"], location, "{sent}");
}

async fn contact_cards_reach_the_other_instance_typed(backend: Backend) {
    let t = two(backend).await;
    let id = t
        .sent(
            &t.alice,
            "send-contact",
            json!({"phone": BOB, "contacts": [
                {"name": "Иван", "phones": ["+7 900 000-00-01"]},
                {"name": "Пётр", "phones": ["79000000002", "79000000003"]},
            ]}),
        )
        .await;
    let cards = json!([
        {"name": "Иван", "phones": ["79000000001"]},
        {"name": "Пётр", "phones": ["79000000002", "79000000003"]},
    ]);
    let theirs = t.stored_when(&t.bob, ALICE_JID, &id, |_| true).await;
    assert_eq!(theirs["messageType"], "contact", "{theirs}");
    assert_eq!(theirs["contacts"], cards, "{theirs}");
    let received = t.event(&t.bob, "message_received", &id).await;
    assert_eq!(received["data"]["contacts"], cards, "{received}");
    // A text message carries none of the typed fields.
    let text = t
        .sent(&t.alice, "send", json!({"phone": BOB, "message": "hi"}))
        .await;
    let plain = t.stored_when(&t.bob, ALICE_JID, &text, |_| true).await;
    for field in ["location", "contacts", "poll"] {
        assert!(plain.get(field).is_none(), "{field}: {plain}");
    }
}

async fn a_poll_collects_votes_by_name(backend: Backend) {
    let t = two(backend).await;
    let id = t
        .sent(
            &t.alice,
            "send-poll",
            json!({"phone": BOB, "question": "Lunch?", "options": ["12:00", "13:00", "14:00"],
                   "multipleAnswers": true}),
        )
        .await;
    let theirs = t.stored_when(&t.bob, ALICE_JID, &id, |_| true).await;
    assert_eq!(theirs["messageType"], "poll", "{theirs}");
    assert_eq!(
        theirs["poll"],
        json!({"question": "Lunch?", "options": ["12:00", "13:00", "14:00"],
               "multipleAnswers": true, "votes": []}),
        "{theirs}"
    );

    // Bob (a simulated contact here) votes twice; the latest choice is kept.
    let vote = |options: Value| {
        let t = &t;
        let id = id.clone();
        async move {
            t.srv
                .post(
                    &format!("/api/sandbox/instances/{}/poll-vote", t.alice),
                    &t.auth,
                    json!({"from": BOB, "pollId": id, "options": options}),
                )
                .await
        }
    };
    let (status, body) = vote(json!(["12:00"])).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = vote(json!(["13:00", "14:00"])).await;
    assert_eq!(status, 200, "{body}");
    let mine = t
        .stored_when(&t.alice, BOB_JID, &id, |m| {
            m["poll"]["votes"][0]["options"] == json!(["13:00", "14:00"])
        })
        .await;
    assert_eq!(
        mine["poll"]["votes"].as_array().map(Vec::len),
        Some(1),
        "{mine}"
    );
    assert_eq!(mine["poll"]["votes"][0]["voter"], BOB_JID, "{mine}");
    let votes = eventually(20, "two poll_vote events", || async {
        let events = t.events(&t.alice, "poll_vote").await;
        (events.len() >= 2).then_some(events)
    })
    .await;
    assert_eq!(votes[0]["data"]["options"], json!(["12:00"]));
    assert_eq!(votes[1]["data"]["options"], json!(["13:00", "14:00"]));
    assert_eq!(votes[1]["data"]["messageId"], id.as_str());
    assert_eq!(votes[1]["data"]["voter"], BOB_JID);
    // Taking the vote back empties it.
    let (status, body) = vote(json!([])).await;
    assert_eq!(status, 200, "{body}");
    t.stored_when(&t.alice, BOB_JID, &id, |m| m["poll"]["votes"] == json!([]))
        .await;
}

async fn bad_locations_cards_polls_and_votes_are_clear_errors(backend: Backend) {
    let t = two(backend).await;
    let bad = [
        (
            "send-location",
            json!({"phone": BOB, "latitude": 91.0, "longitude": 0.0}),
        ),
        (
            "send-location",
            json!({"phone": BOB, "latitude": 0.0, "longitude": -180.5}),
        ),
        (
            "send-location",
            json!({"phone": BOB, "latitude": "north", "longitude": 0.0}),
        ),
        ("send-location", json!({"phone": BOB, "longitude": 0.0})),
        ("send-contact", json!({"phone": BOB, "contacts": []})),
        (
            "send-contact",
            json!({"phone": BOB, "contacts": [{"name": "", "phones": ["79000000001"]}]}),
        ),
        (
            "send-contact",
            json!({"phone": BOB, "contacts": [{"name": "A", "phones": []}]}),
        ),
        (
            "send-contact",
            json!({"phone": BOB, "contacts": [{"name": "A", "phones": ["call me"]}]}),
        ),
        (
            "send-poll",
            json!({"phone": BOB, "question": "Q", "options": ["only"]}),
        ),
        (
            "send-poll",
            json!({"phone": BOB, "question": "Q",
                             "options": (1..=13).map(|i| i.to_string()).collect::<Vec<_>>()}),
        ),
        (
            "send-poll",
            json!({"phone": BOB, "question": "Q", "options": ["a", "a"]}),
        ),
        (
            "send-poll",
            json!({"phone": BOB, "question": " ", "options": ["a", "b"]}),
        ),
        (
            "send-poll",
            json!({"phone": "not a phone", "question": "Q", "options": ["a", "b"]}),
        ),
    ];
    for (what, body) in bad {
        let (status, answer) = t.post(&t.alice, what, body.clone()).await;
        assert_eq!(status, 400, "{what} {body}: {answer}");
        assert!(answer["code"].is_string(), "{answer}");
    }
    // Nothing of these was sent.
    assert!(t.events(&t.alice, "message_sent").await.is_empty());

    let poll = t
        .sent(
            &t.alice,
            "send-poll",
            json!({"phone": BOB, "question": "One?", "options": ["a", "b"]}),
        )
        .await;
    let vote = |body: Value| {
        let t = &t;
        async move {
            t.srv
                .post(
                    &format!("/api/sandbox/instances/{}/poll-vote", t.alice),
                    &t.auth,
                    body,
                )
                .await
        }
    };
    let (status, body) = vote(json!({"from": BOB, "pollId": poll, "options": ["c"]})).await;
    assert_eq!(status, 400, "an unknown option: {body}");
    let (status, body) = vote(json!({"from": BOB, "pollId": poll, "options": ["a", "b"]})).await;
    assert_eq!(status, 400, "two answers to a single-answer poll: {body}");
    let (status, body) = vote(json!({"from": BOB, "pollId": "NO-SUCH", "options": ["a"]})).await;
    assert_eq!(status, 404, "{body}");
    assert!(t.events(&t.alice, "poll_vote").await.is_empty());
    // Bob's copy of the poll is one he did not send: no vote through it.
    let (status, body) = t
        .srv
        .post(
            &format!("/api/sandbox/instances/{}/poll-vote", t.bob),
            &t.auth,
            json!({"from": ALICE, "pollId": poll, "options": ["a"]}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
}
