//! The profile and blocking on the sandbox: what one instance sets, the other sees, a
//! restart keeps, and a block stops; on both storage backends.

use serde_json::{Value, json};

use crate::common::{Backend, TestServer};
use crate::pair::Pair;

backend_tests!(
    name_about_and_picture_are_seen_by_others_and_kept,
    a_block_stops_messages_and_hides_the_picture,
    bad_profile_requests_are_clear_errors,
);

const ALICE: &str = "79001160001";
const BOB: &str = "79001160002";
const ALICE_JID: &str = "79001160001@s.whatsapp.net";

/// The smallest thing a JPEG check takes for one.
const JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00,
];

impl Pair {
    async fn put_picture(&self, id: &str, bytes: &[u8], file_name: &str) -> (u16, Value) {
        put_picture(&self.srv, &self.auth, id, bytes, file_name).await
    }

    async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.srv.get(path, &self.auth).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }
}

async fn put_picture(
    srv: &TestServer,
    auth: &crate::common::Auth,
    id: &str,
    bytes: &[u8],
    file_name: &str,
) -> (u16, Value) {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(file_name.to_owned()),
    );
    let resp = srv
        .request(
            reqwest::Method::PUT,
            &format!("/api/whatsapp/{id}/profile/picture"),
            auth,
        )
        .multipart(form)
        .send()
        .await
        .expect("upload");
    crate::common::read(resp).await
}

/// Alice names herself, says something about herself and shows a picture: Bob sees the
/// picture, and a restart of the server keeps all of it.
async fn name_about_and_picture_are_seen_by_others_and_kept(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    let fresh = p
        .get_json(&format!("/api/whatsapp/{}/profile", p.alice))
        .await;
    assert_eq!(
        fresh,
        json!({"phone": ALICE, "name": null, "about": null, "picture": null})
    );

    let (status, body) = p
        .srv
        .put(
            &format!("/api/whatsapp/{}/profile", p.alice),
            &p.auth,
            json!({"name": "Alice's shop", "about": "Open 9 to 6"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "Alice's shop", "{body}");
    assert_eq!(body["about"], "Open 9 to 6", "{body}");

    let bobs_view = format!("/api/whatsapp/{}/contacts/{ALICE}/picture", p.bob);
    assert_eq!(
        p.get_json(&bobs_view).await,
        json!({"phone": ALICE, "picture": null})
    );
    let (status, body) = p.put_picture(&p.alice, JPEG, "me.jpg").await;
    assert_eq!(status, 200, "{body}");
    let mine = p
        .get_json(&format!("/api/whatsapp/{}/profile", p.alice))
        .await;
    let picture = mine["picture"].clone();
    assert_eq!(
        picture["url"], "data:image/jpeg;base64,/9j/4AAQSkZJRgA=",
        "{mine}"
    );
    assert_eq!(p.get_json(&bobs_view).await["picture"], picture);

    // Her messages carry the new name.
    let id = p
        .sent(&p.alice, "send", json!({"phone": BOB, "message": "hi"}))
        .await;
    let got = p.stored(&p.bob, ALICE, &id).await;
    assert_eq!(got["pushName"], "Alice's shop", "{got}");

    // Clearing the about text; the name stays.
    let (status, body) = p
        .srv
        .put(
            &format!("/api/whatsapp/{}/profile", p.alice),
            &p.auth,
            json!({"about": ""}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["name"], &body["about"]),
        (&json!("Alice's shop"), &Value::Null)
    );

    let Pair {
        srv, auth, alice, ..
    } = p;
    let srv = srv.restart().await;
    srv.wait_status(&auth, &alice, "connected").await;
    let (status, kept) = srv
        .get(&format!("/api/whatsapp/{alice}/profile"), &auth)
        .await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["name"], "Alice's shop", "{kept}");
    assert_eq!(kept["picture"], picture, "{kept}");

    let (status, body) = srv
        .delete(&format!("/api/whatsapp/{alice}/profile/picture"), &auth)
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, gone) = srv
        .get(&format!("/api/whatsapp/{alice}/profile"), &auth)
        .await;
    assert_eq!(gone["picture"], Value::Null, "{gone}");
}

/// Bob blocks Alice: her messages no longer reach him, a simulated inbound from her is
/// refused, and she no longer sees his picture; unblocked, all of it comes back.
async fn a_block_stops_messages_and_hides_the_picture(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    let (status, body) = p.put_picture(&p.bob, JPEG, "bob.jpg").await;
    assert_eq!(status, 200, "{body}");
    let alices_view = format!("/api/whatsapp/{}/contacts/{BOB}/picture", p.alice);
    assert!(p.get_json(&alices_view).await["picture"].is_object());

    let (status, body) = p
        .post(&p.bob, &format!("contacts/+{ALICE}/block"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"phone": ALICE, "blocked": true}));
    let list = p
        .get_json(&format!("/api/whatsapp/{}/blocklist", p.bob))
        .await;
    assert_eq!(
        list,
        json!({"blocklist": [{"jid": ALICE_JID, "phone": ALICE}]})
    );
    assert_eq!(p.get_json(&alices_view).await["picture"], Value::Null);

    let blocked = p
        .sent(
            &p.alice,
            "send",
            json!({"phone": BOB, "message": "blocked"}),
        )
        .await;
    let (status, body) = p
        .srv
        .post(
            &format!("/api/sandbox/instances/{}/inbound", p.bob),
            &p.auth,
            json!({"from": ALICE, "body": "through the sandbox"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );

    let (status, body) = p
        .post(&p.bob, &format!("contacts/{ALICE}/unblock"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["blocked"], false, "{body}");
    let list = p
        .get_json(&format!("/api/whatsapp/{}/blocklist", p.bob))
        .await;
    assert_eq!(list, json!({"blocklist": []}));

    // The network delivers in order: once the later message is there, the blocked one
    // would have been too.
    let later = p
        .sent(
            &p.alice,
            "send",
            json!({"phone": BOB, "message": "unblocked"}),
        )
        .await;
    p.stored(&p.bob, ALICE, &later).await;
    let bobs: Vec<Value> = p.history(&p.bob, ALICE).await;
    assert!(
        bobs.iter().all(|m| m["messageId"] != blocked.as_str()),
        "{bobs:?}"
    );
    // Alice's blocked message never got further than sent.
    p.stored_when(&p.alice, BOB, &later, |m| m["status"] == "delivered")
        .await;
    let hers = p.stored(&p.alice, BOB, &blocked).await;
    assert_eq!(hers["status"], "sent", "{hers}");
    assert!(p.get_json(&alices_view).await["picture"].is_object());
}

/// Every mistake is a JSON 4xx naming what is wrong.
async fn bad_profile_requests_are_clear_errors(backend: Backend) {
    let p = Pair::start(backend, ALICE, BOB).await;
    let profile = format!("/api/whatsapp/{}/profile", p.alice);
    for (body, why) in [
        (json!({}), "nothing to change"),
        (json!({"name": ""}), "empty name"),
        (json!({"name": "   "}), "blank name"),
        (json!({"name": "x".repeat(26)}), "name too long"),
        (json!({"about": "x".repeat(140)}), "about too long"),
        (json!({"nickname": "A"}), "unknown field"),
        (json!({"name": 5}), "name not a string"),
    ] {
        let (status, answer) = p.srv.put(&profile, &p.auth, body).await;
        assert_eq!(status, 400, "{why}: {answer}");
        assert_eq!(answer["code"], "validation_error", "{why}: {answer}");
    }

    let (status, body) = p.put_picture(&p.alice, b"GIF89a....", "me.gif").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_error")),
        "{body}"
    );
    let (status, body) = p
        .srv
        .put(&format!("{profile}/picture"), &p.auth, json!({"file": "x"}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_content_type")),
        "{body}"
    );
    let mut big = JPEG.to_vec();
    big.resize(2 * 1024 * 1024 + 1, 0);
    let (status, body) = p.put_picture(&p.alice, &big, "big.jpg").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );

    for path in [
        "contacts/120363000000000001@g.us/picture",
        "contacts/not-a-number/picture",
    ] {
        let (status, body) = p
            .srv
            .get(&format!("/api/whatsapp/{}/{path}", p.alice), &p.auth)
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("validation_error")),
            "{path}: {body}"
        );
    }
    let (status, body) = p
        .post(
            &p.alice,
            "contacts/120363000000000001@g.us/block",
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_error")),
        "{body}"
    );

    // Not connected: 409, as every call that needs the session.
    let idle = p.srv.new_instance(&p.auth, "idle").await;
    let (status, body) = p
        .srv
        .get(&format!("/api/whatsapp/{idle}/profile"), &p.auth)
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = p
        .srv
        .get(&format!("/api/whatsapp/{idle}/blocklist"), &p.auth)
        .await;
    assert_eq!(status, 409, "{body}");
}
