//! Groups on the sandbox: three sandbox instances of one server create, run, join and
//! leave groups and write in them, on both storage backends.

use serde_json::{Value, json};

use crate::common::Backend;
use crate::pair::Pair;

backend_tests!(
    a_group_is_created_and_its_messages_reach_every_member,
    admins_manage_members_and_settings,
    invites_join_and_leave,
    bad_group_requests_are_clear_errors,
);

const ALICE: &str = "79001170001";
const BOB: &str = "79001170002";
const CAROL: &str = "79001170003";
const ALICE_JID: &str = "79001170001@s.whatsapp.net";
const BOB_JID: &str = "79001170002@s.whatsapp.net";
const CAROL_JID: &str = "79001170003@s.whatsapp.net";

/// Alice and Bob, plus Carol.
struct Three {
    pair: Pair,
    carol: String,
}

impl std::ops::Deref for Three {
    type Target = Pair;

    fn deref(&self) -> &Pair {
        &self.pair
    }
}

async fn three(backend: Backend) -> Three {
    let pair = Pair::start(backend, ALICE, BOB).await;
    let carol = pair
        .srv
        .connected_instance(&pair.auth, "carol", CAROL)
        .await;
    Three { pair, carol }
}

impl Three {
    async fn call(
        &self,
        method: reqwest::Method,
        id: &str,
        what: &str,
        body: Value,
    ) -> (u16, Value) {
        let resp = self
            .srv
            .request(method, &format!("/api/whatsapp/{id}/{what}"), &self.auth)
            .json(&body)
            .send()
            .await
            .expect("request");
        crate::common::read(resp).await
    }

    /// A group Alice created with `members`; its address.
    async fn group_of_alice(&self, members: &[&str]) -> String {
        let (status, group) = self
            .post(
                &self.alice,
                "groups",
                json!({"subject": "Team", "participants": members}),
            )
            .await;
        assert_eq!(status, 201, "{group}");
        group["jid"].as_str().expect("jid").to_owned()
    }

    /// The `group_update` events of `id` for `group` whose action is `action`, once
    /// there is one.
    async fn update(&self, id: &str, group: &str, action: &str) -> Value {
        self.event_where(id, "group_update", |d| {
            d["remoteJid"] == group && d["action"] == action
        })
        .await["data"]
            .clone()
    }

    async fn group(&self, id: &str, group: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::GET,
            id,
            &format!("groups/{group}"),
            Value::Null,
        )
        .await
    }
}

fn roles(group: &Value) -> Vec<(String, String)> {
    let mut roles: Vec<(String, String)> = group["participants"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .map(|m| {
                    (
                        m["jid"].as_str().unwrap_or_default().to_owned(),
                        m["role"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles
}

async fn a_group_is_created_and_its_messages_reach_every_member(backend: Backend) {
    let t = three(backend).await;
    let (status, group) = t
        .post(
            &t.alice,
            "groups",
            json!({"subject": "Team", "participants": [BOB, format!("+{CAROL}")]}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let jid = group["jid"].as_str().expect("jid").to_owned();
    assert!(jid.ends_with("@g.us"), "{group}");
    assert_eq!(group["subject"], "Team");
    assert_eq!(group["owner"], ALICE_JID);
    assert_eq!(
        roles(&group),
        [
            (ALICE_JID.to_owned(), "superadmin".to_owned()),
            (BOB_JID.to_owned(), "member".to_owned()),
            (CAROL_JID.to_owned(), "member".to_owned()),
        ]
    );
    // Every member hears of it, and sees it.
    for id in [&t.alice, &t.bob, &t.carol] {
        let created = t.update(id, &jid, "create").await;
        assert_eq!(created["subject"], "Team", "{created}");
        assert_eq!(created["author"], ALICE_JID, "{created}");
        assert_eq!(created["participants"].as_array().map(Vec::len), Some(3));
        let (status, list) = t
            .call(reqwest::Method::GET, id, "groups", Value::Null)
            .await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["groups"][0]["jid"], jid.as_str(), "{list}");
    }
    let (status, seen) = t.group(&t.carol, &jid).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(roles(&seen), roles(&group));

    // Alice writes to the group: Bob and Carol get it from her, in the group's chat.
    let hello = t
        .sent(
            &t.alice,
            "send",
            json!({"phone": jid, "message": "Hello team"}),
        )
        .await;
    for id in [&t.bob, &t.carol] {
        let got = t.event(id, "message_received", &hello).await;
        assert_eq!(got["data"]["remoteJid"], jid.as_str(), "{got}");
        assert_eq!(got["data"]["sender"], ALICE_JID, "{got}");
        assert_eq!(got["data"]["isGroup"], true, "{got}");
        let stored = t.stored(id, &jid, &hello).await;
        assert_eq!(stored["content"], "Hello team", "{stored}");
    }
    // Bob answers in the group; Alice's copy names him.
    let answer = t
        .sent(
            &t.bob,
            "send",
            json!({"phone": jid, "message": "Hi!", "replyTo": hello}),
        )
        .await;
    let got = t.event(&t.alice, "message_received", &answer).await;
    assert_eq!(got["data"]["sender"], BOB_JID, "{got}");
    assert_eq!(got["data"]["quotedMessageId"], hello.as_str(), "{got}");
    t.event(&t.carol, "message_received", &answer).await;
}

async fn admins_manage_members_and_settings(backend: Backend) {
    let t = three(backend).await;
    let jid = t.group_of_alice(&[BOB]).await;
    let add = |who: &str| json!({"action": "add", "participants": [who]});

    // Bob is a member: WhatsApp refuses him admin work.
    let (status, body) = t
        .post(&t.bob, &format!("groups/{jid}/participants"), add(CAROL))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden", "{body}");
    let (status, body) = t
        .call(
            reqwest::Method::PUT,
            &t.bob,
            &format!("groups/{jid}"),
            json!({"announce": true}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // Carol is not in it: she does not see it.
    let (status, body) = t.group(&t.carol, &jid).await;
    assert_eq!(status, 404, "{body}");

    // Alice adds Carol (again: 409; a number off WhatsApp: 404).
    let (status, body) = t
        .post(
            &t.alice,
            &format!("groups/{jid}/participants"),
            json!({"action": "add", "participants": [CAROL, "79001170000"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["participants"],
        json!([{"jid": CAROL_JID, "status": 200},
               {"jid": "79001170000@s.whatsapp.net", "status": 404}])
    );
    let (status, body) = t
        .post(&t.alice, &format!("groups/{jid}/participants"), add(CAROL))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["participants"][0]["status"], 409, "{body}");
    let added = t.update(&t.carol, &jid, "add").await;
    assert_eq!(added["participants"], json!([CAROL_JID]), "{added}");
    assert_eq!(added["author"], ALICE_JID, "{added}");

    // Promoted, Bob may change settings.
    let (status, body) = t
        .post(
            &t.alice,
            &format!("groups/{jid}/participants"),
            json!({"action": "promote", "participants": [BOB]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    t.update(&t.bob, &jid, "promote").await;
    let (status, group) = t
        .call(
            reqwest::Method::PUT,
            &t.bob,
            &format!("groups/{jid}"),
            json!({"subject": "Team B", "description": "About us", "announce": true}),
        )
        .await;
    assert_eq!(status, 200, "{group}");
    assert_eq!(group["subject"], "Team B");
    assert_eq!(group["description"], "About us");
    assert_eq!(group["announce"], true);
    assert_eq!(group["locked"], false);
    assert_eq!(
        t.update(&t.carol, &jid, "subject").await["subject"],
        "Team B"
    );
    assert_eq!(
        t.update(&t.carol, &jid, "description").await["description"],
        "About us"
    );
    let settings = t.update(&t.alice, &jid, "settings").await;
    assert_eq!(settings["announce"], true, "{settings}");
    assert_eq!(settings["author"], BOB_JID, "{settings}");

    // An announce group is for admins to write in.
    let (status, body) = t
        .post(&t.carol, "send", json!({"phone": jid, "message": "me too"}))
        .await;
    assert_eq!(status, 403, "{body}");
    t.sent(
        &t.bob,
        "send",
        json!({"phone": jid, "message": "admins only"}),
    )
    .await;

    // Alice removes Carol, who hears of it and no longer sees the group.
    let (status, body) = t
        .post(
            &t.alice,
            &format!("groups/{jid}/participants"),
            json!({"action": "remove", "participants": [CAROL]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let removed = t.update(&t.carol, &jid, "remove").await;
    assert_eq!(removed["participants"], json!([CAROL_JID]), "{removed}");
    let (status, body) = t.group(&t.carol, &jid).await;
    assert_eq!(status, 404, "{body}");
    let (_, group) = t.group(&t.alice, &jid).await;
    assert_eq!(
        roles(&group),
        [
            (ALICE_JID.to_owned(), "superadmin".to_owned()),
            (BOB_JID.to_owned(), "admin".to_owned()),
        ]
    );
}

async fn invites_join_and_leave(backend: Backend) {
    let t = three(backend).await;
    let jid = t.group_of_alice(&[BOB]).await;
    let (status, body) = t
        .call(
            reqwest::Method::GET,
            &t.bob,
            &format!("groups/{jid}/invite"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 403, "a member is not an admin: {body}");
    let (status, invite) = t
        .call(
            reqwest::Method::GET,
            &t.alice,
            &format!("groups/{jid}/invite"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{invite}");
    let code = invite["code"].as_str().expect("code").to_owned();
    assert_eq!(
        invite["link"],
        format!("https://chat.whatsapp.com/{code}"),
        "{invite}"
    );

    // Carol joins by the link.
    let (status, joined) = t
        .post(&t.carol, "groups/join", json!({"invite": invite["link"]}))
        .await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["jid"], jid.as_str());
    let added = t.update(&t.alice, &jid, "add").await;
    assert_eq!(added["participants"], json!([CAROL_JID]), "{added}");
    let (status, seen) = t.group(&t.carol, &jid).await;
    assert_eq!(status, 200, "{seen}");

    // A revoked code opens nothing; the new one does.
    let (status, fresh) = t
        .call(
            reqwest::Method::DELETE,
            &t.alice,
            &format!("groups/{jid}/invite"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{fresh}");
    assert_ne!(fresh["code"], code.as_str());
    let (status, body) = t.post(&t.bob, "groups/join", json!({"invite": code})).await;
    assert_eq!(status, 404, "{body}");

    // Carol leaves; Alice hears of it; Carol's list is empty.
    let (status, body) = t
        .post(&t.carol, &format!("groups/{jid}/leave"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let left = t.update(&t.alice, &jid, "remove").await;
    assert_eq!(left["participants"], json!([CAROL_JID]), "{left}");
    assert_eq!(left["author"], CAROL_JID, "{left}");
    let (status, list) = t
        .call(reqwest::Method::GET, &t.carol, "groups", Value::Null)
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["groups"], json!([]), "{list}");
}

async fn bad_group_requests_are_clear_errors(backend: Backend) {
    let t = three(backend).await;
    let jid = t.group_of_alice(&[BOB]).await;
    let long = "x".repeat(101);
    let cases: Vec<(reqwest::Method, String, Value)> = vec![
        (
            reqwest::Method::POST,
            "groups".into(),
            json!({"subject": "", "participants": [BOB]}),
        ),
        (
            reqwest::Method::POST,
            "groups".into(),
            json!({"subject": long, "participants": [BOB]}),
        ),
        (
            reqwest::Method::POST,
            "groups".into(),
            json!({"subject": "A", "participants": []}),
        ),
        (
            reqwest::Method::POST,
            "groups".into(),
            json!({"subject": "A", "participants": ["bob"]}),
        ),
        (
            reqwest::Method::POST,
            "groups".into(),
            json!({"subject": "A", "participants": [jid]}),
        ),
        (
            reqwest::Method::GET,
            "groups/79001170002".into(),
            Value::Null,
        ),
        (reqwest::Method::PUT, format!("groups/{jid}"), json!({})),
        (
            reqwest::Method::POST,
            format!("groups/{jid}/participants"),
            json!({"action": "kick", "participants": [BOB]}),
        ),
        (
            reqwest::Method::POST,
            "groups/join".into(),
            json!({"invite": ""}),
        ),
        (
            reqwest::Method::POST,
            "groups/join".into(),
            json!({"invite": "not a code!"}),
        ),
    ];
    for (method, what, body) in cases {
        let (status, answer) = t.call(method.clone(), &t.alice, &what, body.clone()).await;
        assert_eq!(status, 400, "{method} {what} {body}: {answer}");
        assert_eq!(answer["code"], "validation_error", "{what}: {answer}");
    }
    let (status, answer) = t.group(&t.alice, "120363099999999999@g.us").await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["code"], "not_found", "{answer}");
}
