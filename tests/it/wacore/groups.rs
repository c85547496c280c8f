//! Groups on the real engine, against the fake WhatsApp: what the API asks is checked in
//! the fake's group state, the members' phones decrypt the group's sender-key messages
//! themselves, and a member's group message and WhatsApp's refusals come back through
//! the API and the webhooks.

use std::time::Duration;

use serde_json::{Value, json};

use super::{ACCOUNT, BOB, BOB_JID, CAROL, Rig, linked_rig};
use fake_whatsapp::{Jid, Role};

const ACCOUNT_JID: &str = "79001234567@s.whatsapp.net";
const DAVE: &str = "79005550004";
const DAVE_JID: &str = "79005550004@s.whatsapp.net";

impl Rig {
    /// `method` on `/api/whatsapp/{id}/{what}` with `body`.
    async fn groups_call(&self, method: reqwest::Method, what: &str, body: Value) -> (u16, Value) {
        let resp = self
            .server
            .request(
                method,
                &format!("/api/whatsapp/{}/{what}", self.id),
                &self.auth,
            )
            .json(&body)
            .send()
            .await
            .expect("request");
        crate::common::read(resp).await
    }

    /// The signed `group_update` webhook for `group` whose action is `action`.
    async fn group_update(&self, group: &str, action: &str) -> Value {
        self.hook("group_update", |e| {
            e["data"]["remoteJid"] == group && e["data"]["action"] == action
        })
        .await["data"]
            .clone()
    }

    /// Group `jid` as the fake WhatsApp holds it.
    fn fake_group(&self, jid: &str) -> fake_whatsapp::Group {
        let jid: Jid = jid.parse().expect("a group address");
        self.whatsapp
            .group(&jid)
            .expect("the group exists on WhatsApp")
    }
}

/// Phone numbers and roles of a group, as the fake holds them.
fn roles(group: &fake_whatsapp::Group) -> Vec<(&str, Role)> {
    group
        .participants
        .iter()
        .map(|(phone, role)| (phone.as_str(), *role))
        .collect()
}

/// A group created through the API is created on WhatsApp; its subject, description,
/// members, roles and invite code change there as the API asks, each change coming back
/// as a `group_update`; a text sent to it goes out as one sender-key message that both
/// members' phones decrypt with the key the device distributed to them.
#[tokio::test]
async fn a_group_is_run_through_the_api_and_its_members_decrypt_what_it_gets() {
    use reqwest::Method;
    let rig = linked_rig().await;
    let bob = rig.whatsapp.user(BOB, "Bob").await.expect("Bob");
    let carol = rig.whatsapp.user(CAROL, "Carol").await.expect("Carol");
    rig.whatsapp.user(DAVE, "Dave").await.expect("Dave");

    let (code, group) = rig
        .groups_call(
            Method::POST,
            "groups",
            json!({"subject": "Team", "participants": [BOB, format!("+{CAROL}")]}),
        )
        .await;
    assert_eq!(code, 201, "{group}");
    let jid = group["jid"].as_str().expect("jid").to_owned();
    assert!(jid.ends_with("@g.us"), "{group}");
    assert_eq!(group["subject"], "Team", "{group}");
    assert_eq!(group["owner"], ACCOUNT_JID, "{group}");
    let on_whatsapp = rig.fake_group(&jid);
    assert_eq!(on_whatsapp.subject, "Team");
    assert_eq!(
        roles(&on_whatsapp),
        [
            (ACCOUNT, Role::SuperAdmin),
            (BOB, Role::Member),
            (CAROL, Role::Member)
        ]
    );
    let created = rig.group_update(&jid, "create").await;
    assert_eq!(created["author"], ACCOUNT_JID, "{created}");

    let (code, list) = rig.groups_call(Method::GET, "groups", Value::Null).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["groups"][0]["jid"], jid.as_str(), "{list}");
    let (code, read) = rig
        .groups_call(Method::GET, &format!("groups/{jid}"), Value::Null)
        .await;
    assert_eq!(code, 200, "{read}");
    assert_eq!(
        read["participants"].as_array().map(Vec::len),
        Some(3),
        "{read}"
    );

    // Subject and description, then the settings.
    let (code, changed) = rig
        .groups_call(
            Method::PUT,
            &format!("groups/{jid}"),
            json!({"subject": "Team B", "description": "About us", "locked": true}),
        )
        .await;
    assert_eq!(code, 200, "{changed}");
    assert_eq!(changed["subject"], "Team B", "{changed}");
    assert_eq!(changed["description"], "About us", "{changed}");
    assert_eq!(changed["locked"], true, "{changed}");
    let on_whatsapp = rig.fake_group(&jid);
    assert_eq!(on_whatsapp.subject, "Team B");
    assert_eq!(on_whatsapp.description.as_deref(), Some("About us"));
    assert!(on_whatsapp.locked && !on_whatsapp.announce);
    assert_eq!(rig.group_update(&jid, "subject").await["subject"], "Team B");
    assert_eq!(
        rig.group_update(&jid, "description").await["description"],
        "About us"
    );

    // Participants: an answer for each.
    let (code, body) = rig
        .groups_call(
            Method::POST,
            &format!("groups/{jid}/participants"),
            json!({"action": "add", "participants": [DAVE, BOB, "79009999999"]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["participants"],
        json!([{"jid": DAVE_JID, "status": 200}, {"jid": BOB_JID, "status": 409},
               {"jid": "79009999999@s.whatsapp.net", "status": 404}]),
        "{body}"
    );
    let added = rig.group_update(&jid, "add").await;
    assert_eq!(added["participants"], json!([DAVE_JID]), "{added}");
    let (code, body) = rig
        .groups_call(
            Method::POST,
            &format!("groups/{jid}/participants"),
            json!({"action": "promote", "participants": [BOB]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    rig.group_update(&jid, "promote").await;
    let (code, body) = rig
        .groups_call(
            Method::POST,
            &format!("groups/{jid}/participants"),
            json!({"action": "remove", "participants": [DAVE]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let removed = rig.group_update(&jid, "remove").await;
    assert_eq!(removed["participants"], json!([DAVE_JID]), "{removed}");
    assert_eq!(
        roles(&rig.fake_group(&jid)),
        [
            (ACCOUNT, Role::SuperAdmin),
            (BOB, Role::Admin),
            (CAROL, Role::Member)
        ]
    );

    // The invite code is WhatsApp's; a reset replaces it.
    let (code, invite) = rig
        .groups_call(Method::GET, &format!("groups/{jid}/invite"), Value::Null)
        .await;
    assert_eq!(code, 200, "{invite}");
    let first = rig.fake_group(&jid).invite;
    assert_eq!(invite["code"], first.as_str(), "{invite}");
    let (code, fresh) = rig
        .groups_call(Method::DELETE, &format!("groups/{jid}/invite"), Value::Null)
        .await;
    assert_eq!(code, 200, "{fresh}");
    let second = rig.fake_group(&jid).invite;
    assert_ne!(first, second);
    assert_eq!(fresh["code"], second.as_str(), "{fresh}");

    // A text to the group: each member's phone decrypts the skmsg with the sender key
    // the device gave it.
    let (code, body) = rig
        .server
        .post(
            &format!("/api/whatsapp/{}/send", rig.id),
            &rig.auth,
            json!({"phone": jid, "message": "Hello team"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let group: Jid = jid.parse().expect("group");
    for member in [&bob, &carol] {
        let got = member
            .next_message(Duration::from_secs(20))
            .await
            .expect("the member decrypts the group message");
        assert_eq!(got.text.as_deref(), Some("Hello team"), "{got:?}");
        assert_eq!(got.group.as_ref(), Some(&group), "{got:?}");
        assert_eq!(got.enc_type, "skmsg");
        assert_eq!(got.id, body["id"].as_str().unwrap_or_default());
        assert_eq!(got.from.user, ACCOUNT);
    }
    rig.clean();
}

/// A group a user made with the account in it reaches the instance as a `group_update`;
/// a member's sender-key message to it is stored in the group's chat under its author.
/// WhatsApp refuses a mere member the admin's work, and the API answers 403; leaving and
/// joining again by the invite code happen on WhatsApp.
#[tokio::test]
async fn a_members_message_arrives_and_a_member_may_not_run_the_group() {
    use reqwest::Method;
    let rig = linked_rig().await;
    let bob = rig.whatsapp.user(BOB, "Bob").await.expect("Bob");
    rig.whatsapp.user(CAROL, "Carol").await.expect("Carol");
    let group = rig
        .whatsapp
        .create_group(BOB, "Bob's", &[ACCOUNT, CAROL])
        .expect("Bob makes a group");
    let jid = group.to_string();
    let created = rig.group_update(&jid, "create").await;
    assert_eq!(created["author"], BOB_JID, "{created}");

    for (method, what, body) in [
        (
            Method::PUT,
            format!("groups/{jid}"),
            json!({"announce": true}),
        ),
        (
            Method::POST,
            format!("groups/{jid}/participants"),
            json!({"action": "promote", "participants": [CAROL]}),
        ),
        (Method::GET, format!("groups/{jid}/invite"), Value::Null),
    ] {
        let (code, answer) = rig.groups_call(method.clone(), &what, body).await;
        assert_eq!(code, 403, "{method} {what}: {answer}");
        assert_eq!(answer["code"], "forbidden", "{method} {what}: {answer}");
    }
    let on_whatsapp = rig.fake_group(&jid);
    assert!(!on_whatsapp.announce);
    assert_eq!(on_whatsapp.participants[CAROL], Role::Member);

    // Bob writes in the group.
    let id = bob
        .send_group_text(&group, "Hi all")
        .await
        .expect("Bob writes");
    let event = rig.received(&id).await;
    assert_eq!(event["data"]["body"], "Hi all", "{event}");
    assert_eq!(event["data"]["remoteJid"], jid.as_str(), "{event}");
    assert_eq!(event["data"]["sender"], BOB_JID, "{event}");
    assert_eq!(event["data"]["isGroup"], true, "{event}");
    let stored = rig.stored(&jid, &id).await;
    assert_eq!(stored["content"], "Hi all", "{stored}");
    // A second one, under the same sender key.
    let again = bob
        .send_group_text(&group, "Anyone?")
        .await
        .expect("Bob writes again");
    assert_eq!(rig.received(&again).await["data"]["body"], "Anyone?");

    // The account leaves, then comes back by the invite code.
    let (code, body) = rig
        .groups_call(Method::POST, &format!("groups/{jid}/leave"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(!rig.fake_group(&jid).participants.contains_key(ACCOUNT));
    let (code, list) = rig.groups_call(Method::GET, "groups", Value::Null).await;
    assert_eq!((code, &list["groups"]), (200, &json!([])), "{list}");
    let invite = rig.fake_group(&jid).invite;
    let (code, joined) = rig
        .groups_call(Method::POST, "groups/join", json!({"invite": invite}))
        .await;
    assert_eq!(code, 200, "{joined}");
    assert_eq!(joined["jid"], jid.as_str(), "{joined}");
    assert_eq!(
        rig.fake_group(&jid).participants.get(ACCOUNT),
        Some(&Role::Member)
    );
    rig.clean();
}
