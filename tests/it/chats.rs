//! Keeping chats on the sandbox: archiving, pinning, muting and labelling them through
//! the API and from the (simulated) phone, as the chats list and the events show it; on
//! both storage backends.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::common::Backend;
use crate::pair::Pair;

backend_tests!(
    archive_pin_and_mute_are_kept_and_listed,
    labels_are_created_attached_and_synced_from_the_phone,
    bad_chat_requests_are_clear_errors,
);

const ALICE: &str = "79001170001";
const BOB: &str = "79001170002";
const BOB_JID: &str = "79001170002@s.whatsapp.net";

impl Pair {
    /// `POST /api/whatsapp/{id}/chats/{chat}/{action}` with `body`, which must succeed.
    async fn chat_action(&self, id: &str, chat: &str, action: &str, body: Value) -> Value {
        let (status, state) = self.post(id, &format!("chats/{chat}/{action}"), body).await;
        assert_eq!(status, 200, "{action}: {state}");
        state
    }

    /// The entry of `chat` in `id`'s chats list.
    async fn listed_chat(&self, id: &str, chat: &str) -> Value {
        let (status, body) = self
            .srv
            .get(&format!("/api/instances/{id}/chats"), &self.auth)
            .await;
        assert_eq!(status, 200, "{body}");
        body["chats"]
            .as_array()
            .and_then(|chats| chats.iter().find(|c| c["remoteJid"] == chat).cloned())
            .unwrap_or_else(|| panic!("{chat} is not listed: {body}"))
    }

    async fn labels(&self, id: &str) -> Vec<Value> {
        let (status, body) = self
            .srv
            .get(&format!("/api/whatsapp/{id}/labels"), &self.auth)
            .await;
        assert_eq!(status, 200, "{body}");
        body["labels"].as_array().cloned().expect("labels")
    }

    async fn phone_change(&self, id: &str, change: Value) -> (u16, Value) {
        self.srv
            .post(
                &format!("/api/sandbox/instances/{id}/phone-change"),
                &self.auth,
                change,
            )
            .await
    }
}

/// The fields a chat's state shows.
fn kept(state: &Value) -> Value {
    json!({
        "archived": state["archived"],
        "pinned": state["pinned"],
        "muted": state["muted"],
        "labels": state["labels"],
    })
}

fn when(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not a time: {value}"))
}

/// Alice pins, archives (which unpins), mutes for an hour and for ever, and unmutes her
/// chat with Bob; each answer, the chats list and the `chat_update` events agree.
async fn archive_pin_and_mute_are_kept_and_listed(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    p.sent(&p.alice, "send", json!({"phone": BOB, "message": "hi"}))
        .await;
    let fresh = p.listed_chat(&p.alice, BOB_JID).await;
    assert_eq!(
        kept(&fresh),
        json!({"archived": false, "pinned": false, "muted": false, "labels": []}),
        "{fresh}"
    );
    assert_eq!(fresh["mutedUntil"], Value::Null);
    assert_eq!(fresh["chatId"], BOB_JID);

    let pinned = p.chat_action(&p.alice, BOB, "pin", json!({})).await;
    assert_eq!(pinned["chatId"], BOB_JID, "{pinned}");
    assert_eq!(pinned["pinned"], true, "{pinned}");
    let archived = p.chat_action(&p.alice, BOB, "archive", json!({})).await;
    assert_eq!(
        kept(&archived),
        json!({"archived": true, "pinned": false, "muted": false, "labels": []}),
        "archiving unpins: {archived}"
    );
    p.chat_action(&p.alice, BOB, "unarchive", json!({})).await;
    p.chat_action(&p.alice, BOB_JID, "pin", json!({})).await;

    // Whole milliseconds, as the answer gives times.
    let before = Utc::now() - Duration::milliseconds(1);
    let muted = p
        .chat_action(&p.alice, BOB, "mute", json!({"duration": 3600}))
        .await;
    assert_eq!(muted["muted"], true, "{muted}");
    let until = when(&muted["mutedUntil"]);
    assert!(
        until >= before + Duration::seconds(3600) && until <= Utc::now() + Duration::seconds(3600),
        "{until}"
    );
    let listed = p.listed_chat(&p.alice, BOB_JID).await;
    assert_eq!(
        kept(&listed),
        json!({"archived": false, "pinned": true, "muted": true, "labels": []}),
        "{listed}"
    );
    assert_eq!(listed["mutedUntil"], muted["mutedUntil"]);

    let forever = p.chat_action(&p.alice, BOB, "mute", json!({})).await;
    assert_eq!(
        (&forever["muted"], &forever["mutedUntil"]),
        (&json!(true), &Value::Null)
    );
    let unmuted = p.chat_action(&p.alice, BOB, "unmute", json!({})).await;
    assert_eq!(
        (&unmuted["muted"], &unmuted["mutedUntil"]),
        (&json!(false), &Value::Null)
    );
    let listed = p.listed_chat(&p.alice, BOB_JID).await;
    assert_eq!(listed["muted"], false, "{listed}");
    assert_eq!(listed["pinned"], true, "{listed}");

    // Bob's side of the chat is his own: nothing of Alice's changes shows there.
    let bobs = p.listed_chat(&p.bob, "79001170001@s.whatsapp.net").await;
    assert_eq!(bobs["pinned"], false, "{bobs}");

    let update = p
        .event_where(&p.alice, "chat_update", |d| d["archived"] == true)
        .await;
    assert_eq!(update["data"]["remoteJid"], BOB_JID, "{update}");
    assert_eq!(update["data"]["fromPhone"], false, "{update}");
    assert_eq!(update["data"]["pinned"], false, "{update}");
    assert_eq!(p.events(&p.alice, "chat_update").await.len(), 7);
}

/// Labels made here get the next id and go on and off a chat; labels and label changes
/// made on the phone (the sandbox control) reach the list and the stored chat.
async fn labels_are_created_attached_and_synced_from_the_phone(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    p.sent(&p.alice, "send", json!({"phone": BOB, "message": "hi"}))
        .await;
    assert!(p.labels(&p.alice).await.is_empty());

    let (status, vip) = p
        .post(&p.alice, "labels", json!({"name": "VIP", "color": 3}))
        .await;
    assert_eq!(status, 201, "{vip}");
    assert_eq!(vip, json!({"id": "1", "name": "VIP", "color": 3}));
    let (status, lead) = p.post(&p.alice, "labels", json!({"name": "Lead"})).await;
    assert_eq!(status, 201, "{lead}");
    assert_eq!(lead, json!({"id": "2", "name": "Lead", "color": 0}));
    assert_eq!(p.labels(&p.alice).await, [vip.clone(), lead.clone()]);
    assert!(
        p.labels(&p.bob).await.is_empty(),
        "labels are the account's own"
    );
    let created = p
        .event_where(&p.alice, "label_update", |d| d["labelId"] == "1")
        .await;
    assert_eq!(created["data"]["name"], "VIP", "{created}");

    let on = p.chat_action(&p.alice, BOB, "labels/2", json!({})).await;
    assert_eq!(on["labels"], json!(["2"]), "{on}");
    let on = p.chat_action(&p.alice, BOB, "labels/1", json!({})).await;
    assert_eq!(on["labels"], json!(["1", "2"]), "{on}");
    let (status, body) = p
        .post(&p.alice, &format!("chats/{BOB}/labels/99"), json!({}))
        .await;
    assert_eq!(status, 404, "an unknown label: {body}");
    assert_eq!(body["code"], "not_found");
    let (status, off) = p
        .srv
        .delete(
            &format!("/api/whatsapp/{}/chats/{BOB}/labels/2", p.alice),
            &p.auth,
        )
        .await;
    assert_eq!(status, 200, "{off}");
    assert_eq!(off["labels"], json!(["1"]), "{off}");
    assert_eq!(
        p.listed_chat(&p.alice, BOB_JID).await["labels"],
        json!(["1"])
    );

    // The phone makes a label, puts it on the chat, archives the chat.
    let (status, body) = p
        .phone_change(
            &p.alice,
            json!({"action": "edit_label", "label": "7", "name": "Paid", "color": 5}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let synced = p
        .event_where(&p.alice, "label_update", |d| d["labelId"] == "7")
        .await;
    assert_eq!(synced["data"]["fromPhone"], true, "{synced}");
    assert!(
        p.labels(&p.alice)
            .await
            .contains(&json!({"id": "7", "name": "Paid", "color": 5}))
    );
    for change in [
        json!({"action": "label", "chat": BOB, "label": "7"}),
        json!({"action": "unlabel", "chat": BOB_JID, "label": "1"}),
        json!({"action": "archive", "chat": BOB}),
        json!({"action": "mute", "chat": BOB, "duration": 600}),
    ] {
        let (status, body) = p.phone_change(&p.alice, change.clone()).await;
        assert_eq!(status, 200, "{change}: {body}");
    }
    // The phone's changes are synced, not answered: the last one shows once its
    // `chat_update` is there.
    let update = p
        .event_where(&p.alice, "chat_update", |d| d["muted"] == true)
        .await;
    assert_eq!(update["data"]["fromPhone"], true, "{update}");
    let listed = p.listed_chat(&p.alice, BOB_JID).await;
    assert_eq!(
        kept(&listed),
        json!({"archived": true, "pinned": false, "muted": true, "labels": ["7"]}),
        "{listed}"
    );

    // Deleted on the phone: gone from the list; the next new label follows the others.
    let (status, body) = p
        .phone_change(&p.alice, json!({"action": "delete_label", "label": "7"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let deleted = p
        .event_where(&p.alice, "label_update", |d| d["deleted"] == true)
        .await;
    assert_eq!(deleted["data"]["labelId"], "7", "{deleted}");
    assert_eq!(p.labels(&p.alice).await, [vip, lead]);
    let (status, next) = p.post(&p.alice, "labels", json!({"name": "Next"})).await;
    assert_eq!(status, 201, "{next}");
    assert_eq!(next["id"], "3", "{next}");

    // Kept across a restart.
    let Pair {
        srv,
        auth,
        alice,
        bob,
    } = p;
    let p = Pair {
        srv: srv.restart().await,
        auth,
        alice,
        bob,
    };
    assert_eq!(p.labels(&p.alice).await.len(), 3);
    let listed = p.listed_chat(&p.alice, BOB_JID).await;
    assert_eq!(listed["labels"], json!(["7"]), "{listed}");
    assert_eq!(listed["archived"], true, "{listed}");
}

async fn bad_chat_requests_are_clear_errors(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    let chat = |action: &str| format!("chats/{BOB}/{action}");
    for (what, body, why) in [
        (chat("mute"), json!({"duration": 0}), "a zero duration"),
        (chat("mute"), json!({"duration": 31_536_001}), "over a year"),
        (chat("mute"), json!({"duration": "1h"}), "not a number"),
        (chat("mute"), json!({"until": 5}), "an unknown field"),
        (chat("freeze"), json!({}), "no such action"),
        ("chats/abc/archive".to_owned(), json!({}), "not an address"),
        (
            format!("chats/{BOB}/labels/{}", "9".repeat(65)),
            json!({}),
            "a label id too long",
        ),
        ("labels".to_owned(), json!({"name": "  "}), "a blank name"),
        (
            "labels".to_owned(),
            json!({"name": "x".repeat(101)}),
            "a long name",
        ),
        (
            "labels".to_owned(),
            json!({"name": "VIP", "color": 20}),
            "a colour out of range",
        ),
        ("labels".to_owned(), json!({}), "no name"),
    ] {
        let (status, err) = p.post(&p.alice, &what, body).await;
        assert_eq!(status, 400, "{why}: {err}");
        assert!(
            err["error"].is_string() && err["code"].is_string(),
            "{why}: {err}"
        );
    }
    for (change, why) in [
        (
            json!({"action": "archive", "chat": "abc"}),
            "not an address",
        ),
        (
            json!({"action": "edit_label", "label": "1", "name": " "}),
            "a blank name",
        ),
        (json!({"action": "label", "chat": BOB}), "no label"),
        (json!({"action": "melt", "chat": BOB}), "no such change"),
    ] {
        let (status, err) = p.phone_change(&p.alice, change).await;
        assert_eq!(status, 400, "{why}: {err}");
    }

    // Not connected: 409, and nothing kept.
    let idle = p.srv.new_instance(&p.auth, "idle").await;
    let (status, err) = p.post(&idle, &chat("archive"), json!({})).await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["code"], "not_connected");
    let (status, err) = p.post(&idle, "labels", json!({"name": "VIP"})).await;
    assert_eq!(status, 409, "{err}");
    let (status, body) = p
        .srv
        .get(&format!("/api/whatsapp/{idle}/labels"), &p.auth)
        .await;
    assert_eq!((status, body), (200, json!({"labels": []})));
}
