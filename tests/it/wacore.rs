//! The real WhatsApp engine, driven end to end: the unmodified whatsapp-rust client runs
//! inside the gateway and talks through the `TransportFactory` seam to an in-process fake
//! WhatsApp (the `fake-whatsapp` crate) that performs the server half of the real Noise
//! handshake. Everything is asserted through the gateway's HTTP API and webhooks.
//!
//! The fake also links devices and carries messages between them and scripted phones
//! (its own tests cover the protocol with a bare client); here one test takes an instance
//! through pairing, a send and a receive. The translation of receipts and content is
//! unit-tested in `actors/src/engine/wacore/mapping.rs`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Auth, TestServer, eventually};
use crate::receiver::{Receiver, unused_addr};
use fake_whatsapp::{Ending, FakeWhatsApp, Pattern};

mod cluster;
mod groups;
mod pacing;

/// Pinned so the client does not look its version up on the internet.
const VERSION: (&str, &str) = ("wacore_client_version", "2.3000.1027934701");

/// The instance's webhook signing secret.
const SECRET: &str = "wacore-webhook-secret";

struct Rig {
    server: TestServer,
    whatsapp: FakeWhatsApp,
    hooks: Receiver,
    auth: Auth,
    id: String,
}

/// A gateway whose real sessions reach the fake WhatsApp, with one `wacore` instance
/// sending its webhooks to a local receiver.
async fn rig() -> Rig {
    let whatsapp = FakeWhatsApp::new();
    let server = TestServer::start_with_wacore(&[VERSION], &whatsapp).await;
    let hooks = Receiver::start().await;
    let auth = server.admin();
    let (status, body) = server
        .post(
            "/api/instances",
            &auth,
            json!({"name": "Real phone", "engine": "wacore", "webhookUrl": hooks.url(),
                   "webhookSecret": SECRET, "notifyDelivery": true, "notifyRead": true}),
        )
        .await;
    assert_eq!(status, 201, "create: {body}");
    assert_eq!(body["engine"], "wacore", "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    Rig {
        server,
        whatsapp,
        hooks,
        auth,
        id,
    }
}

impl Rig {
    /// Waits until `/qr` shows a code of the fake's connection `n` and returns it.
    async fn qr_of_connection(&self, n: usize) -> String {
        let prefix = format!("{},", FakeWhatsApp::first_ref(n));
        eventually(20, &format!("a QR code of connection {n}"), || async {
            let (code, body) = self
                .server
                .get(&format!("/api/instances/{}/qr", self.id), &self.auth)
                .await;
            assert!(code == 200 || code == 202, "qr: {code} {body}");
            body["qrCode"]
                .as_str()
                .filter(|qr| qr.starts_with(&prefix))
                .map(str::to_owned)
        })
        .await
    }

    async fn activity(&self) -> Vec<Value> {
        let (code, body) = self
            .server
            .get(
                &format!("/api/instances/{}/activity?limit=1000", self.id),
                &self.auth,
            )
            .await;
        assert_eq!(code, 200, "activity: {body}");
        body["logs"].as_array().cloned().unwrap_or_default()
    }

    fn session_file(&self) -> std::path::PathBuf {
        self.server
            .dir
            .path()
            .join("instances")
            .join(&self.id)
            .join(wagate_actors::engine::wacore::SESSION_FILE)
    }
}

#[tokio::test]
async fn a_real_qr_reaches_the_api_and_the_webhook() {
    let rig = rig().await;
    let qr = rig.qr_of_connection(1).await;
    // The client's own QR payload: the server's ref, then its noise key, identity key and
    // pairing secret (32 bytes each, base64), then its platform.
    let parts: Vec<&str> = qr.split(',').collect();
    assert!(parts.len() >= 4, "{qr}");
    assert_eq!(parts[0], "REF-1-1");
    assert!(parts[1..4].iter().all(|p| p.len() == 44), "{qr}");
    assert_eq!(rig.server.status_of(&rig.auth, &rig.id).await, "qr");

    let hooks = rig
        .hooks
        .wait_for("qr_received", 20, |r| {
            r.iter().any(|r| r.json()["event"] == "qr_received")
        })
        .await;
    let event = hooks
        .iter()
        .map(|r| r.json())
        .find(|e| e["event"] == "qr_received")
        .expect("qr_received");
    assert_eq!(event["data"]["qrCode"], qr.as_str(), "{event}");
    // The session keys live in the instance's own store.
    assert!(rig.session_file().exists(), "{:?}", rig.session_file());

    // The PNG form renders the same code.
    let png = rig
        .server
        .request(
            reqwest::Method::GET,
            &format!("/api/instances/{}/qr?format=png", rig.id),
            &rig.auth,
        )
        .send()
        .await
        .expect("png");
    assert_eq!(png.status(), 200);
    assert_eq!(
        png.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("image/png")
    );
}

#[tokio::test]
async fn a_pair_code_comes_from_the_client_and_names_the_phone() {
    let rig = rig().await;
    rig.qr_of_connection(1).await;
    let (status, body) = rig
        .server
        .post(
            &format!("/api/instances/{}/pair-code", rig.id),
            &rig.auth,
            json!({"phone": "+7 900 123-45-67"}),
        )
        .await;
    assert_eq!(status, 200, "pair-code: {body}");
    let code = body["code"].as_str().expect("code");
    // WhatsApp's linking codes: 8 characters of Crockford's base32.
    assert_eq!(code.len(), 8, "{code}");
    assert!(
        code.chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()),
        "{code}"
    );
    let requests = rig.whatsapp.pair_requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].jid, "79001234567@s.whatsapp.net");
}

#[tokio::test]
async fn stream_error_401_logs_the_instance_out_and_wipes_its_session() {
    let rig = rig().await;
    rig.qr_of_connection(1).await;
    assert!(rig.session_file().exists());
    rig.whatsapp.end(1, Ending::StreamError(401));
    rig.server
        .wait_status(&rig.auth, &rig.id, "logged_out")
        .await;
    assert!(
        !rig.session_file().exists(),
        "the session keys must be wiped on logout"
    );
    let activity = rig.activity().await;
    assert!(
        activity.iter().any(|a| a["action"] == "logged_out"),
        "{activity:?}"
    );
    rig.hooks
        .wait_for("disconnected (logged out)", 20, |r| {
            r.iter().any(|r| {
                let e = r.json();
                e["event"] == "disconnected" && e["data"]["reason"] == "logout"
            })
        })
        .await;
    // The client stopped for good: no reconnection.
    assert_eq!(rig.whatsapp.connections(), 1);
}

#[tokio::test]
async fn a_replaced_stream_logs_the_instance_out() {
    let rig = rig().await;
    rig.qr_of_connection(1).await;
    rig.whatsapp.end(1, Ending::Replaced);
    rig.server
        .wait_status(&rig.auth, &rig.id, "logged_out")
        .await;
    let activity = rig.activity().await;
    let entry = activity
        .iter()
        .find(|a| a["action"] == "logged_out")
        .expect("a logged_out entry");
    assert!(
        entry["details"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("replaced")),
        "{entry}"
    );
}

#[tokio::test]
async fn a_dropped_connection_reconnects_and_shows_a_new_qr() {
    let rig = rig().await;
    let first = rig.qr_of_connection(1).await;
    rig.whatsapp.end(1, Ending::Drop);
    let second = rig.qr_of_connection(2).await;
    assert_ne!(first, second);
    assert_eq!(rig.server.status_of(&rig.auth, &rig.id).await, "qr");

    let activity = rig.activity().await;
    let actions: Vec<&str> = activity
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    let reconnecting = activity
        .iter()
        .find(|a| a["action"] == "reconnecting")
        .unwrap_or_else(|| panic!("no reconnecting entry in {actions:?}"));
    assert!(
        reconnecting["details"]["attempt"].as_u64() >= Some(1),
        "{reconnecting}"
    );
    assert!(
        reconnecting["details"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("simulated network loss")),
        "{reconnecting}"
    );
    assert!(actions.contains(&"disconnected"), "{actions:?}");
    rig.hooks
        .wait_for("a disconnected event, then a second QR", 20, |r| {
            let events: Vec<Value> = r.iter().map(|r| r.json()).collect();
            events
                .iter()
                .any(|e| e["event"] == "disconnected" && e["data"]["willReconnect"] == true)
                && events
                    .iter()
                    .filter(|e| e["event"] == "qr_received")
                    .any(|e| e["data"]["qrCode"] == second.as_str())
        })
        .await;
}

#[tokio::test]
async fn an_unreachable_whatsapp_is_reported_not_hidden() {
    // The real WebSocket transport, pointed at a port nothing listens on: what a server
    // without internet access sees.
    let nowhere = format!("ws://{}/ws/chat", unused_addr().await);
    let server = TestServer::start_with(&[VERSION, ("wacore_ws_url", nowhere.as_str())]).await;
    let auth = server.admin();
    let (status, body) = server
        .post(
            "/api/instances",
            &auth,
            json!({"name": "Offline", "engine": "wacore"}),
        )
        .await;
    assert_eq!(status, 201, "create: {body}");
    let id = body["id"].as_str().expect("id").to_owned();

    server.wait_status(&auth, &id, "reconnecting").await;
    let entry = eventually(20, "a reconnecting entry with its cause", || async {
        let (_, body) = server
            .get(&format!("/api/instances/{id}/activity?limit=100"), &auth)
            .await;
        body["logs"]
            .as_array()
            .and_then(|logs| logs.iter().find(|l| l["action"] == "reconnecting").cloned())
    })
    .await;
    assert!(entry["details"]["attempt"].as_u64() >= Some(1), "{entry}");
    let reason = entry["details"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("cannot connect to WhatsApp"), "{entry}");

    // Asking for a QR is answered, not hung: none is coming yet.
    let (code, body) = server.get(&format!("/api/instances/{id}/qr"), &auth).await;
    assert_eq!(code, 202, "{body}");
    // Sending says why it cannot.
    let (code, body) = server
        .post(
            &format!("/api/whatsapp/{id}/send"),
            &auth,
            json!({"phone": "79001234567", "message": "hi"}),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    // Sandbox controls are not for real sessions.
    let (code, body) = server
        .post(
            &format!("/api/sandbox/instances/{id}/scan"),
            &auth,
            json!({"phone": "79001234567"}),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["code"], "not_sandbox", "{body}");
    // The instance stops promptly when deleted, with the client still retrying.
    let (code, body) = server.delete(&format!("/api/instances/{id}"), &auth).await;
    assert_eq!(code, 200, "delete: {body}");
    let (code, _) = server.get("/healthz", &Auth::None).await;
    assert_eq!(code, 200);
}

/// The account the linked instances belong to.
const ACCOUNT: &str = "79001234567";

/// A rig whose instance a phone of [`ACCOUNT`] linked by scanning its QR code. It is
/// `connected` only once the device logged in and can send: nothing else is waited for.
async fn linked_rig() -> Rig {
    let rig = rig().await;
    let qr = rig.qr_of_connection(1).await;
    rig.whatsapp
        .scan(&qr, ACCOUNT)
        .await
        .expect("the phone scans");
    rig.server
        .wait_status(&rig.auth, &rig.id, "connected")
        .await;
    rig
}

impl Rig {
    /// The instance's `/status` answer.
    async fn status(&self) -> Value {
        let (code, body) = self
            .server
            .get(&format!("/api/instances/{}/status", self.id), &self.auth)
            .await;
        assert_eq!(code, 200, "status: {body}");
        body
    }

    /// Every webhook of kind `event` so far, each checked for its signature.
    fn signed(&self, event: &str) -> Vec<Value> {
        self.hooks
            .of(event)
            .iter()
            .map(|hook| {
                assert_eq!(
                    hook.header("x-webhook-signature"),
                    Some(wagate_actors::webhook_queue::sign(SECRET, &hook.body).as_str()),
                    "{hook:?}"
                );
                hook.json()
            })
            .collect()
    }

    /// Waits for a signed webhook of kind `event` that `matches`.
    async fn hook(&self, event: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.hooks
            .wait_for(event, 20, |r| {
                r.iter()
                    .map(|r| r.json())
                    .any(|e| e["event"] == event && matches(&e))
            })
            .await;
        self.signed(event)
            .into_iter()
            .find(|e| matches(e))
            .expect("the webhook waited for")
    }
}

/// A scanned QR links the instance; it turns `connected` with the account's number only
/// once the device logged in, so a send in the same breath goes out.
#[tokio::test]
async fn a_scanned_qr_connects_with_the_phones_number() {
    let rig = linked_rig().await;
    let status = rig.status().await;
    assert_eq!(status["phone"], ACCOUNT, "{status}");
    assert!(
        rig.whatsapp.is_linked(ACCOUNT, 1),
        "the fake linked device 1"
    );
    let hook = rig.hook("connected", |_| true).await;
    assert_eq!(hook["data"]["phone"], ACCOUNT, "{hook}");
    assert_eq!(hook["data"]["instanceId"], rig.id.as_str(), "{hook}");
    // Exactly one `connected`, though the device logged in twice (the stream restart
    // after pairing).
    assert_eq!(rig.signed("connected").len(), 1);
    // Paired on the first connection, logged in on the second.
    assert_eq!(rig.whatsapp.connections(), 2);

    let bob = rig.whatsapp.user("79005550001", "Bob").await.expect("Bob");
    let (code, body) = rig
        .server
        .post(
            &format!("/api/whatsapp/{}/send", rig.id),
            &rig.auth,
            json!({"phone": "79005550001", "message": "right away"}),
        )
        .await;
    assert_eq!(code, 200, "a send right after `connected`: {body}");
    let got = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets it");
    assert_eq!(got.text.as_deref(), Some("right away"));
    rig.clean();
}

impl Rig {
    /// The `message_received` webhook for message `id`.
    async fn received(&self, id: &str) -> Value {
        let is_it = |e: &Value| e["event"] == "message_received" && e["data"]["messageId"] == id;
        let hooks = self
            .hooks
            .wait_for("message_received", 20, |r| {
                r.iter().any(|r| is_it(&r.json()))
            })
            .await;
        hooks
            .iter()
            .map(|r| r.json())
            .find(is_it)
            .expect("message_received")
    }

    /// Nothing unknown reached the fake, and nothing went wrong on its side.
    fn clean(&self) {
        assert_eq!(
            self.whatsapp.unknown_iqs(),
            0,
            "{:?}",
            self.whatsapp.unknown_iq_stanzas()
        );
        assert!(
            self.whatsapp.problems().is_empty(),
            "{:?}",
            self.whatsapp.problems()
        );
    }
}

/// A QR scan links the instance; a text goes out to a phone, which decrypts it under the
/// id the API returned, and the phone's answer comes back as a webhook.
#[tokio::test]
async fn a_linked_instance_sends_and_receives() {
    let rig = linked_rig().await;
    let bob = rig.whatsapp.user("79005550001", "Bob").await.expect("Bob");

    let (code, body) = rig
        .server
        .post(
            &format!("/api/whatsapp/{}/send", rig.id),
            &rig.auth,
            json!({"phone": "79005550001", "message": "Hello Bob"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let got = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets it");
    assert_eq!(got.text.as_deref(), Some("Hello Bob"));
    assert_eq!(body["id"], got.id.as_str(), "{body}");

    let id = bob.send_text(ACCOUNT, "Hi gateway").await.expect("sent");
    let event = rig.received(&id).await;
    assert_eq!(event["data"]["body"], "Hi gateway", "{event}");
    assert_eq!(
        event["data"]["from"], "79005550001@s.whatsapp.net",
        "{event}"
    );
    rig.clean();
}

/// Media travel through the gateway's own HTTP client to the fake's media server: an
/// uploaded file reaches a phone intact, and a phone's image arrives as a download.
#[tokio::test]
async fn media_round_trip_through_the_gateway() {
    let rig = linked_rig().await;
    let bob = rig.whatsapp.user("79005550001", "Bob").await.expect("Bob");
    let png = wagate::qr::png("media").expect("png");

    let form = reqwest::multipart::Form::new()
        .text("phone", "79005550001")
        .text("caption", "A QR code")
        .part(
            "file",
            reqwest::multipart::Part::bytes(png.clone())
                .file_name("qr.png")
                .mime_str("image/png")
                .expect("mime"),
        );
    let resp = rig
        .server
        .request(
            reqwest::Method::POST,
            &format!("/api/whatsapp/{}/send-file", rig.id),
            &rig.auth,
        )
        .multipart(form)
        .send()
        .await
        .expect("send-file");
    let (code, sent) = crate::common::read(resp).await;
    assert_eq!(code, 200, "{sent}");
    let got = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets it");
    assert_eq!(sent["id"], got.id.as_str(), "{sent}");
    assert_eq!(got.text.as_deref(), Some("A QR code"));
    assert_eq!(bob.download(&got.message).expect("decrypted"), png);

    let photo: Vec<u8> = (0..30_000u32).map(|i| (i % 241) as u8).collect();
    let id = bob
        .send_image(ACCOUNT, &photo, "image/jpeg", Some("From Bob"))
        .await
        .expect("sent");
    let event = rig.received(&id).await;
    assert_eq!(event["data"]["hasMedia"], true, "{event}");
    let resp = rig
        .server
        .request(
            reqwest::Method::GET,
            &format!("/api/instances/{}/messages/{id}/media", rig.id),
            &rig.auth,
        )
        .send()
        .await
        .expect("download");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.expect("bytes").to_vec(), photo);
    rig.clean();
}

impl Rig {
    /// Stops the gateway and starts it again on the same DATA_DIR, the same fake
    /// WhatsApp and the same webhook receiver.
    async fn restart(self) -> Rig {
        let Rig {
            server,
            whatsapp,
            hooks,
            id,
            ..
        } = self;
        let server = server.restart().await;
        let auth = server.admin();
        Rig {
            server,
            whatsapp,
            hooks,
            auth,
            id,
        }
    }
}

/// A linked session survives a restart of the gateway: the device logs in with the keys
/// in its session file, over the IK handshake, without showing a QR code again.
#[tokio::test]
async fn a_restarted_gateway_logs_back_in_without_a_qr() {
    let rig = linked_rig().await;
    rig.hook("connected", |_| true).await;
    let before = rig.whatsapp.connections();
    let qrs_before = rig.hooks.of("qr_received").len();

    let rig = rig.restart().await;
    rig.server
        .wait_status(&rig.auth, &rig.id, "connected")
        .await;
    let handshakes = rig.whatsapp.handshakes();
    assert_eq!(handshakes.len(), before + 1, "{handshakes:?}");
    assert_eq!(
        handshakes.last(),
        Some(&Some(Pattern::Ik)),
        "a registered device resumes over IK: {handshakes:?}"
    );
    assert_eq!(rig.hooks.of("qr_received").len(), qrs_before, "no new QR");
    assert_eq!(rig.status().await["phone"], ACCOUNT);
    rig.hooks
        .wait_for("a second connected", 20, |r| {
            r.iter()
                .filter(|r| r.json()["event"] == "connected")
                .count()
                == 2
        })
        .await;

    let bob = rig.whatsapp.user("79005550001", "Bob").await.expect("Bob");
    let (code, body) = rig
        .server
        .post(
            &format!("/api/whatsapp/{}/send", rig.id),
            &rig.auth,
            json!({"phone": "79005550001", "message": "after the restart"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let got = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets it");
    assert_eq!(got.text.as_deref(), Some("after the restart"));
    assert_eq!(body["id"], got.id.as_str());
    rig.clean();
}

/// Bob, a WhatsApp user.
const BOB: &str = "79005550001";
const BOB_JID: &str = "79005550001@s.whatsapp.net";

impl Rig {
    /// Sends `text` to `phone` through the API; returns the message id.
    async fn send(&self, phone: &str, text: &str) -> String {
        let (code, body) = self
            .server
            .post(
                &format!("/api/whatsapp/{}/send", self.id),
                &self.auth,
                json!({"phone": phone, "message": text}),
            )
            .await;
        assert_eq!(code, 200, "send: {body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// The stored history of a chat, newest first.
    async fn history(&self, chat: &str) -> Vec<Value> {
        let (code, body) = self
            .server
            .get(
                &format!(
                    "/api/instances/{}/chats/{chat}/messages?limit=1000",
                    self.id
                ),
                &self.auth,
            )
            .await;
        assert_eq!(code, 200, "history: {body}");
        body["messages"].as_array().cloned().unwrap_or_default()
    }

    /// The stored message `id` of `chat`, once it is there.
    async fn stored(&self, chat: &str, id: &str) -> Value {
        eventually(20, &format!("message {id} in the history"), || async {
            self.history(chat)
                .await
                .into_iter()
                .find(|m| m["messageId"] == id)
        })
        .await
    }

    /// Waits until the stored message `id` of `chat` has `status`.
    async fn wait_message_status(&self, chat: &str, id: &str, status: &str) {
        eventually(20, &format!("message {id} {status}"), || async {
            self.history(chat)
                .await
                .iter()
                .any(|m| m["messageId"] == id && m["status"] == status)
                .then_some(())
        })
        .await
    }
}

/// The peer's delivery receipt (sent by its phone on decrypting), then its read
/// receipt, move a sent message to `delivered`, then `read`, each with a signed
/// `message_status` webhook.
#[tokio::test]
async fn a_peers_receipts_move_a_sent_message_to_delivered_then_read() {
    let rig = linked_rig().await;
    let bob = rig.whatsapp.user(BOB, "Bob").await.expect("Bob");
    let id = rig.send(BOB, "Did you get this?").await;
    let got = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets it");
    assert_eq!(got.id, id);
    let sent = rig
        .hook("message_sent", |e| e["data"]["messageId"] == id.as_str())
        .await;
    assert_eq!(sent["data"]["to"], BOB_JID, "{sent}");
    assert_eq!(sent["data"]["status"], "sent", "{sent}");

    // Bob's phone confirms delivery as soon as it decrypted the message.
    rig.wait_message_status(BOB_JID, &id, "delivered").await;
    let delivered = rig
        .hook("message_status", |e| {
            e["data"]["messageId"] == id.as_str() && e["data"]["status"] == "delivered"
        })
        .await;
    assert_eq!(delivered["data"]["fromMe"], true, "{delivered}");

    bob.send_receipt(ACCOUNT, &[&id], true)
        .await
        .expect("read receipt");
    rig.wait_message_status(BOB_JID, &id, "read").await;
    rig.hook("message_status", |e| {
        e["data"]["messageId"] == id.as_str() && e["data"]["status"] == "read"
    })
    .await;
    let statuses: Vec<Value> = rig
        .signed("message_status")
        .iter()
        .map(|e| e["data"]["status"].clone())
        .collect();
    assert_eq!(statuses, [json!("delivered"), json!("read")]);
    rig.clean();
}

/// A peer's text arrives everywhere a user looks: history, `/chats`, the SSE stream and
/// the webhook, from the phone form of the sender; reading the chat sends the peer a
/// read receipt.
#[tokio::test]
async fn an_inbound_text_arrives_everywhere_and_reading_it_tells_the_peer() {
    let rig = linked_rig().await;
    let stream = rig
        .server
        .request(
            reqwest::Method::GET,
            &format!("/api/instances/{}/events/stream", rig.id),
            &rig.auth,
        )
        .send()
        .await
        .expect("SSE");
    assert_eq!(stream.status(), 200);
    let bob = rig.whatsapp.user(BOB, "Bob").await.expect("Bob");
    let id = bob
        .send_text(ACCOUNT, "Привет, gateway")
        .await
        .expect("sent");

    let hook = rig.received(&id).await;
    let data = &hook["data"];
    assert_eq!(data["from"], BOB_JID, "{hook}");
    assert_eq!(data["sender"], BOB_JID, "{hook}");
    assert_eq!(data["body"], "Привет, gateway", "{hook}");
    assert_eq!(data["pushName"], "Bob", "{hook}");
    assert_eq!(data["fromMe"], false, "{hook}");
    assert_eq!(rig.signed("message_received").len(), 1);

    let stored = rig.stored(BOB_JID, &id).await;
    assert_eq!(stored["content"], "Привет, gateway", "{stored}");
    assert_eq!(stored["fromMe"], false, "{stored}");
    assert_eq!(stored["remoteJid"], BOB_JID, "{stored}");

    let (code, chats) = rig
        .server
        .get(&format!("/api/instances/{}/chats", rig.id), &rig.auth)
        .await;
    assert_eq!(code, 200, "{chats}");
    let chat = chats["chats"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["remoteJid"] == BOB_JID))
        .unwrap_or_else(|| panic!("Bob's chat in {chats}"));
    assert_eq!(chat["unreadCount"], 1, "{chat}");
    assert_eq!(chat["lastMessage"]["content"], "Привет, gateway", "{chat}");

    // The stream started before the message: `connected` came earlier, so the first
    // event after the subscription is this one.
    let streamed = crate::common::read_sse(stream, 1).await;
    assert_eq!(streamed[0].1["type"], "message_received", "{streamed:?}");
    assert_eq!(streamed[0].1["data"]["messageId"], id.as_str());
    assert_eq!(streamed[0].1["data"]["from"], BOB_JID);

    let (code, body) = rig
        .server
        .post(
            &format!("/api/instances/{}/chats/{BOB}/read", rig.id),
            &rig.auth,
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["marked"], 1, "{body}");
    let receipt = bob
        .next_receipt(Duration::from_secs(10))
        .await
        .expect("Bob gets a receipt");
    // whatsapp-rust confirms delivery first, then the read.
    let receipt = if receipt.is_delivery() {
        bob.next_receipt(Duration::from_secs(10))
            .await
            .expect("Bob gets the read receipt")
    } else {
        receipt
    };
    assert_eq!(receipt.kind.as_deref(), Some("read"), "{receipt:?}");
    assert_eq!(receipt.ids, std::slice::from_ref(&id));
    rig.clean();
}

/// `contacts/add` asks WhatsApp whether the number is registered: a known user is
/// added, an unknown number is refused with `not_on_whatsapp`.
#[tokio::test]
async fn adding_a_contact_asks_whatsapp_whether_the_number_is_on_it() {
    let rig = linked_rig().await;
    rig.whatsapp.user(BOB, "Bob").await.expect("Bob");
    let (code, body) = rig
        .server
        .post(
            &format!("/api/whatsapp/{}/contacts/add", rig.id),
            &rig.auth,
            json!({"phone": BOB, "name": "Bob from work"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["contact"]["id"], BOB_JID, "{body}");
    assert_eq!(body["contact"]["name"], "Bob from work", "{body}");
    let (code, live) = rig
        .server
        .get(&format!("/api/whatsapp/{}/contacts", rig.id), &rig.auth)
        .await;
    assert_eq!(code, 200, "{live}");
    assert!(live.to_string().contains(BOB_JID), "{live}");

    let (code, body) = rig
        .server
        .post(
            &format!("/api/whatsapp/{}/contacts/add", rig.id),
            &rig.auth,
            json!({"phone": "79009999999", "name": "Nobody"}),
        )
        .await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["code"], "not_on_whatsapp", "{body}");
    // The question went to WhatsApp both times, as an interactive usync contact query.
    let asked = rig
        .whatsapp
        .stanzas()
        .iter()
        .filter(|s| {
            s.is_iq("usync", "usync")
                && s.node
                    .get_optional_child("usync")
                    .and_then(|u| {
                        u.attrs()
                            .optional_string("context")
                            .map(|c| c == "interactive")
                    })
                    .unwrap_or(false)
        })
        .count();
    assert_eq!(asked, 2);
    rig.clean();
}

/// A message the account writes on its phone reaches the linked device as the phone's
/// own-device copy: it is stored as outbound in that chat and published as
/// `message_sent`, never as something received.
#[tokio::test]
async fn a_message_sent_from_the_phone_is_outbound() {
    let rig = linked_rig().await;
    rig.whatsapp.user(BOB, "Bob").await.expect("Bob");
    let phone = rig.whatsapp.phone(ACCOUNT).await.expect("the phone");
    let id = phone
        .send_text_from_phone(BOB, "Typed on the phone")
        .await
        .expect("sent");

    let hook = rig
        .hook("message_sent", |e| e["data"]["messageId"] == id.as_str())
        .await;
    assert_eq!(hook["data"]["to"], BOB_JID, "{hook}");
    assert_eq!(hook["data"]["body"], "Typed on the phone", "{hook}");
    assert_eq!(hook["data"]["fromMe"], true, "{hook}");
    let stored = rig.stored(BOB_JID, &id).await;
    assert_eq!(stored["fromMe"], true, "{stored}");
    assert_eq!(stored["status"], "sent", "{stored}");
    assert_eq!(stored["content"], "Typed on the phone", "{stored}");
    assert!(
        rig.hooks.of("message_received").is_empty(),
        "{:?}",
        rig.hooks.of("message_received")
    );
    rig.clean();
}

impl Rig {
    /// The instance is `logged_out`, its session file is gone, the fake knows the device
    /// as removed, and the `disconnected` webhook says `logout`.
    async fn assert_logged_out(&self) {
        self.server
            .wait_status(&self.auth, &self.id, "logged_out")
            .await;
        assert!(
            !self.session_file().exists(),
            "the session keys must be wiped: {:?}",
            self.session_file()
        );
        let removed: Vec<String> = self
            .whatsapp
            .removed_devices()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(removed, [format!("{ACCOUNT}:1@s.whatsapp.net")]);
        assert!(!self.whatsapp.online(ACCOUNT));
        let hook = self
            .hook("disconnected", |e| e["data"]["reason"] == "logout")
            .await;
        assert_eq!(hook["data"]["willReconnect"], false, "{hook}");
        // A send now says why it cannot.
        let (code, body) = self
            .server
            .post(
                &format!("/api/whatsapp/{}/send", self.id),
                &self.auth,
                json!({"phone": BOB, "message": "still there?"}),
            )
            .await;
        assert_eq!(code, 409, "{body}");
    }
}

/// Logging out from the API unlinks the device at WhatsApp (`remove-companion-device`)
/// and wipes the session.
#[tokio::test]
async fn logout_from_the_api_unlinks_the_device() {
    let rig = linked_rig().await;
    let (code, body) = rig
        .server
        .post(
            &format!("/api/instances/{}/logout", rig.id),
            &rig.auth,
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    rig.assert_logged_out().await;
    assert!(
        rig.whatsapp
            .stanzas()
            .iter()
            .any(|s| s.is_iq("md", "remove-companion-device")),
        "the client asked WhatsApp to unlink it"
    );
    rig.clean();
}

/// Unlinking the device on the phone ends its stream with `device_removed`: the
/// instance is logged out and its session wiped, and it does not try to come back.
#[tokio::test]
async fn logout_from_the_phone_wipes_the_session() {
    let rig = linked_rig().await;
    let connections = rig.whatsapp.connections();
    rig.whatsapp.unlink(ACCOUNT, 1).expect("unlink");
    rig.assert_logged_out().await;
    assert_eq!(rig.whatsapp.connections(), connections, "no reconnection");
    rig.clean();
}

/// A send to a number that is not on WhatsApp answers 4xx JSON, not a silent success.
#[tokio::test]
async fn a_send_to_a_number_not_on_whatsapp_is_refused() {
    let rig = linked_rig().await;
    let (code, body) = rig
        .server
        .post(
            &format!("/api/whatsapp/{}/send", rig.id),
            &rig.auth,
            json!({"phone": "79009999999", "message": "anyone?"}),
        )
        .await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["code"], "not_on_whatsapp", "{body}");
    assert!(rig.history("79009999999@s.whatsapp.net").await.is_empty());
    rig.clean();
}

/// WhatsApp refusing a request the send depends on (the recipient's device list, the
/// media upload's credentials) is a clear 502 `engine_error` in JSON, never a 500, and
/// nothing is stored as sent.
#[tokio::test]
async fn whatsapp_refusing_a_request_is_a_clear_api_error() {
    let rig = linked_rig().await;
    rig.whatsapp.user(BOB, "Bob").await.expect("Bob");

    rig.whatsapp.refuse_next_iq("usync", 503);
    let (code, body) = rig
        .server
        .post(
            &format!("/api/whatsapp/{}/send", rig.id),
            &rig.auth,
            json!({"phone": BOB, "message": "will this go?"}),
        )
        .await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(body["code"], "engine_error", "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(rig.history(BOB_JID).await.is_empty());

    rig.whatsapp.refuse_next_iq("w:m", 403);
    let form = reqwest::multipart::Form::new().text("phone", BOB).part(
        "file",
        reqwest::multipart::Part::bytes(b"%PDF-1.4 not really".to_vec())
            .file_name("a.pdf")
            .mime_str("application/pdf")
            .expect("mime"),
    );
    let resp = rig
        .server
        .request(
            reqwest::Method::POST,
            &format!("/api/whatsapp/{}/send-file", rig.id),
            &rig.auth,
        )
        .multipart(form)
        .send()
        .await
        .expect("send-file");
    let (code, body) = crate::common::read(resp).await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(body["code"], "engine_error", "{body}");
    assert!(rig.history(BOB_JID).await.is_empty());

    // The refusals were one-off: the same send goes through now.
    rig.send(BOB, "and now?").await;
    rig.clean();
}

/// WhatsApp refusing the peer's key bundle (the pre-key fetch a first send to a new
/// peer starts with) is a clear 502 `engine_error` in JSON, not a 500 and not a silent
/// 200: nothing is stored as sent, the peer gets nothing, and the same send goes
/// through once WhatsApp answers again.
#[tokio::test]
async fn a_refused_key_bundle_fetch_is_a_clear_api_error() {
    let rig = linked_rig().await;
    let bob = rig.whatsapp.user(BOB, "Bob").await.expect("Bob");

    // A newly linked client uploads its pre-keys and checks their digest in the
    // background; the refusal is set after both, so it meets the send's fetch.
    rig.whatsapp
        .wait_until(
            Duration::from_secs(20),
            "the pre-key upload and digest",
            |w| {
                let stanzas = w.stanzas();
                let sent = |child: &str| {
                    stanzas
                        .iter()
                        .filter(|s| s.is_iq("encrypt", child))
                        .map(|s| s.connection)
                        .collect::<Vec<_>>()
                };
                let digests = sent("digest");
                sent("registration")
                    .iter()
                    .any(|c| digests.contains(c))
                    .then_some(())
            },
        )
        .await
        .expect("the client's pre-key upload");
    let before = rig.whatsapp.stanzas().len();
    rig.whatsapp.refuse_next_iq("encrypt", 503);
    let (code, body) = rig
        .server
        .post(
            &format!("/api/whatsapp/{}/send", rig.id),
            &rig.auth,
            json!({"phone": BOB, "message": "no keys for you"}),
        )
        .await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(body["code"], "engine_error", "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(rig.history(BOB_JID).await.is_empty());
    // The refusal went to a key-bundle request: the first `encrypt` IQ since it was set.
    let first = rig.whatsapp.stanzas()[before..]
        .iter()
        .find(|s| s.node.tag == "iq" && s.attr("xmlns").as_deref() == Some("encrypt"))
        .map(|s| s.is_iq("encrypt", "key"));
    assert_eq!(
        first,
        Some(true),
        "the refusal did not meet a key-bundle request"
    );

    // Once WhatsApp answers again, the same send goes through and Bob reads the
    // second text only: the refused one was never sent.
    let id = rig.send(BOB, "and now the keys?").await;
    let got = bob
        .next_message(Duration::from_secs(20))
        .await
        .expect("Bob gets it");
    assert_eq!(got.id, id);
    assert_eq!(got.text.as_deref(), Some("and now the keys?"));
    rig.clean();
}

/// A peer that could not decrypt a message asks for it again with a retry receipt: the
/// client sends it again, under the same id, and the peer reads it this time. (The
/// peers' key bundles carry no one-time pre-key, the state of a phone whose pre-keys
/// ran out: every send here starts its session that way.)
#[tokio::test]
async fn a_retry_receipt_gets_the_message_sent_again() {
    let rig = linked_rig().await;
    let bob = rig.whatsapp.user(BOB, "Bob").await.expect("Bob");
    let id = rig.send(BOB, "Say that again?").await;
    let first = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets it");
    assert_eq!(first.id, id);

    bob.send_retry_receipt(ACCOUNT, &id)
        .await
        .expect("retry receipt");
    let again = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets it again");
    assert_eq!(again.id, id);
    assert_eq!(again.text.as_deref(), Some("Say that again?"));
    // Still one message in the history, not two.
    let history = rig.history(BOB_JID).await;
    assert_eq!(
        history
            .iter()
            .filter(|m| m["messageId"] == id.as_str())
            .count(),
        1
    );
    rig.clean();
}

/// How many decrypted messages the session keeps in its own buffer, waiting for the
/// gateway to store them (whatsapp-rust's pending-inbound table in the session file).
async fn buffered_inbound(session_file: &std::path::Path) -> i64 {
    use sqlx::ConnectOptions;
    let mut db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(session_file)
        .read_only(true)
        .connect()
        .await
        .expect("the session file opens");
    sqlx::query_scalar("SELECT COUNT(*) FROM pending_inbound_messages")
        .fetch_one(&mut db)
        .await
        .expect("the pending-inbound table")
}

/// An inbound message is acknowledged to WhatsApp only once it is stored. Here the
/// instance dies after the client decrypted a message and before it was stored: the
/// message stays unacknowledged, WhatsApp delivers it again when the restarted
/// instance logs in, and it arrives once.
#[tokio::test]
async fn an_inbound_message_survives_the_instance_dying_before_storing_it() {
    let rig = linked_rig().await;
    let bob = rig.whatsapp.user(BOB, "Bob").await.expect("Bob");
    rig.whatsapp
        .user("79005550002", "Carol")
        .await
        .expect("Carol");

    // The instance is busy: its send to Carol waits on WhatsApp's answer about her
    // devices, which does not come.
    rig.whatsapp.hold_next_iq("usync");
    let send = rig
        .server
        .request(
            reqwest::Method::POST,
            &format!("/api/whatsapp/{}/send", rig.id),
            &rig.auth,
        )
        .json(&json!({"phone": "79005550002", "message": "hello Carol"}))
        .send();
    let send = tokio::spawn(send);
    rig.whatsapp
        .wait_until(Duration::from_secs(10), "the held device query", |w| {
            (!w.held_iqs().is_empty()).then_some(())
        })
        .await
        .expect("held");

    // Bob writes meanwhile: the client decrypts it and buffers it, unacknowledged,
    // waiting for the busy instance to store it.
    let id = bob.send_text(ACCOUNT, "Don't lose me").await.expect("sent");
    let file = rig.session_file();
    eventually(20, "the message in the session's buffer", || async {
        (buffered_inbound(&file).await == 1).then_some(())
    })
    .await;
    assert_eq!(rig.whatsapp.unacked(ACCOUNT, 1), std::slice::from_ref(&id));
    assert!(rig.history(BOB_JID).await.is_empty());

    // The instance dies right there.
    let instances = rig
        .server
        .runtime()
        .instances
        .supervisor_cell()
        .expect("the instance supervisor");
    let children = instances.get_children();
    assert_eq!(children.len(), 1);
    children[0].kill();
    let (code, body) = crate::common::read(send.await.expect("task").expect("answer")).await;
    assert!(code != 200 && code < 500 || code == 503, "{code} {body}");

    // Restarted by its supervisor, the instance logs in again; WhatsApp delivers the
    // message again and it is stored this time.
    let event = rig.received(&id).await;
    assert_eq!(event["data"]["body"], "Don't lose me", "{event}");
    assert_eq!(event["data"]["from"], BOB_JID, "{event}");
    rig.server
        .wait_status(&rig.auth, &rig.id, "connected")
        .await;
    let stored = rig.stored(BOB_JID, &id).await;
    assert_eq!(stored["content"], "Don't lose me");
    eventually(
        20,
        "the buffer emptied and the message acknowledged",
        || async {
            (buffered_inbound(&file).await == 0 && rig.whatsapp.unacked(ACCOUNT, 1).is_empty())
                .then_some(())
        },
    )
    .await;
    assert_eq!(rig.signed("message_received").len(), 1);
    rig.clean();
}

/// A reply through the API reaches the peer with WhatsApp's context: the quoted id, its
/// author and text, and the mentioned people, as the peer decrypts them. The peer's own
/// reply (quoting the gateway's message, mentioning the account) shows its quoted id in
/// the webhook and the history.
#[tokio::test]
async fn replies_and_mentions_travel_both_ways() {
    use fake_whatsapp::{MessageField, wa};
    let rig = linked_rig().await;
    let bob = rig.whatsapp.user(BOB, "Bob").await.expect("Bob");
    let question = bob.send_text(ACCOUNT, "Lunch?").await.expect("sent");
    rig.received(&question).await;

    let (code, body) = rig
        .server
        .post(
            &format!("/api/whatsapp/{}/send", rig.id),
            &rig.auth,
            json!({"phone": BOB, "message": "Yes, @79005550001", "replyTo": question,
                   "mentions": [BOB]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let reply = body["id"].as_str().expect("id").to_owned();
    let got = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets the reply");
    assert_eq!(got.id, reply);
    let text = got
        .message
        .extended_text_message
        .as_option()
        .unwrap_or_else(|| panic!("an extended text: {:?}", got.message));
    assert_eq!(text.text.as_deref(), Some("Yes, @79005550001"));
    let context = text.context_info.as_option().expect("context info");
    assert_eq!(context.stanza_id.as_deref(), Some(question.as_str()));
    assert_eq!(context.participant.as_deref(), Some(BOB_JID));
    assert_eq!(context.mentioned_jid, [BOB_JID]);
    assert_eq!(
        context
            .quoted_message
            .as_option()
            .and_then(|q| q.conversation.as_deref()),
        Some("Lunch?")
    );
    let stored = rig.stored(BOB_JID, &reply).await;
    assert_eq!(stored["quotedMessageId"], question.as_str(), "{stored}");
    assert_eq!(stored["mentions"], json!([BOB_JID]), "{stored}");

    // Bob answers the reply, quoting it and mentioning the account.
    let account_jid = format!("{ACCOUNT}@s.whatsapp.net");
    let answer = wa::Message {
        extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
            text: Some("Great".into()),
            context_info: MessageField::some(wa::ContextInfo {
                stanza_id: Some(reply.clone()),
                participant: Some(account_jid.clone()),
                mentioned_jid: vec![account_jid.clone()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let answer_id = bob.send_message(ACCOUNT, &answer).await.expect("sent");
    let hook = rig.received(&answer_id).await;
    assert_eq!(hook["data"]["body"], "Great", "{hook}");
    assert_eq!(hook["data"]["quotedMessageId"], reply.as_str(), "{hook}");
    assert_eq!(hook["data"]["mentions"], json!([account_jid]), "{hook}");
    let stored = rig.stored(BOB_JID, &answer_id).await;
    assert_eq!(stored["quotedMessageId"], reply.as_str(), "{stored}");
    rig.clean();
}

/// A reaction through the API reaches the peer as a ReactionMessage naming the message
/// by its id; taking it back sends an empty one. The peer's reaction to the gateway's
/// message arrives as a signed `message_reaction` and is stored on the message.
#[tokio::test]
async fn reactions_travel_both_ways() {
    use fake_whatsapp::{MessageField, wa};
    let rig = linked_rig().await;
    let bob = rig.whatsapp.user(BOB, "Bob").await.expect("Bob");
    let hello = rig.send(BOB, "Hello Bob").await;
    let got = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets it");
    assert_eq!(got.id, hello);

    for emoji in ["👍", ""] {
        let (code, body) = rig
            .server
            .post(
                &format!("/api/whatsapp/{}/messages/{hello}/reaction", rig.id),
                &rig.auth,
                json!({ "emoji": emoji }),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        let got = bob
            .next_message(Duration::from_secs(10))
            .await
            .expect("Bob gets the reaction");
        let reaction = got
            .message
            .reaction_message
            .as_option()
            .unwrap_or_else(|| panic!("a reaction: {:?}", got.message));
        assert_eq!(reaction.text.as_deref(), Some(emoji));
        let key = reaction.key.as_option().expect("key");
        assert_eq!(key.id.as_deref(), Some(hello.as_str()));
        assert_eq!(key.from_me, Some(true), "the reactor wrote the message");
    }
    let reactions = rig
        .hook("message_reaction", |e| e["data"]["emoji"] == "")
        .await;
    assert_eq!(reactions["data"]["fromMe"], true, "{reactions}");
    assert_eq!(rig.stored(BOB_JID, &hello).await["reactions"], json!([]));

    // Bob reacts to the gateway's message.
    let reaction = wa::Message {
        reaction_message: MessageField::some(wa::message::ReactionMessage {
            key: MessageField::some(wa::MessageKey {
                remote_jid: Some(format!("{ACCOUNT}@s.whatsapp.net")),
                from_me: Some(false),
                id: Some(hello.clone()),
                participant: None,
            }),
            text: Some("🔥".into()),
            sender_timestamp_ms: Some(chrono::Utc::now().timestamp_millis()),
            ..Default::default()
        }),
        ..Default::default()
    };
    bob.send_message(ACCOUNT, &reaction).await.expect("sent");
    let hook = rig
        .hook("message_reaction", |e| e["data"]["emoji"] == "🔥")
        .await;
    let data = &hook["data"];
    assert_eq!(data["messageId"], hello.as_str(), "{hook}");
    assert_eq!(data["sender"], BOB_JID, "{hook}");
    assert_eq!(data["remoteJid"], BOB_JID, "{hook}");
    assert_eq!(data["fromMe"], false, "{hook}");
    let stored = eventually(20, "Bob's reaction stored", || async {
        let m = rig.stored(BOB_JID, &hello).await;
        (m["reactions"].as_array().map(Vec::len) == Some(1)).then_some(m)
    })
    .await;
    assert_eq!(stored["reactions"][0]["emoji"], "🔥", "{stored}");
    assert_eq!(stored["reactions"][0]["sender"], BOB_JID, "{stored}");
    // A reaction is no message of its own in the history.
    assert_eq!(rig.history(BOB_JID).await.len(), 1);
    rig.clean();
}

/// The gateway edits and deletes its message: the peer decrypts a `MESSAGE_EDIT` and a
/// `REVOKE` protocol message naming it. The peer edits and deletes its own: the
/// gateway's history follows and `message_edited` / `message_revoked` arrive.
#[tokio::test]
async fn edits_and_revokes_travel_both_ways() {
    use fake_whatsapp::{MessageField, wa};
    use wa::message::protocol_message::Type;
    let rig = linked_rig().await;
    let bob = rig.whatsapp.user(BOB, "Bob").await.expect("Bob");
    let hello = rig.send(BOB, "Meet at 5").await;
    let got = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets it");
    assert_eq!(got.id, hello);

    let (code, body) = rig
        .server
        .put(
            &format!("/api/whatsapp/{}/messages/{hello}", rig.id),
            &rig.auth,
            json!({"message": "Meet at 6"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let got = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets the edit");
    let protocol = got
        .message
        .protocol_message
        .as_option()
        .unwrap_or_else(|| panic!("a protocol message: {:?}", got.message));
    assert_eq!(protocol.r#type, Some(Type::MessageEdit), "{protocol:?}");
    let key = protocol.key.as_option().expect("key");
    assert_eq!(key.id.as_deref(), Some(hello.as_str()));
    let edited = protocol
        .edited_message
        .as_option()
        .expect("the new content");
    assert_eq!(edited.conversation.as_deref(), Some("Meet at 6"));
    rig.hook("message_edited", |e| {
        e["data"]["messageId"] == hello.as_str()
    })
    .await;

    let (code, body) = rig
        .server
        .delete(
            &format!("/api/whatsapp/{}/messages/{hello}?forEveryone=true", rig.id),
            &rig.auth,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let got = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets the deletion");
    let protocol = got
        .message
        .protocol_message
        .as_option()
        .unwrap_or_else(|| panic!("a protocol message: {:?}", got.message));
    assert_eq!(protocol.r#type, Some(Type::Revoke), "{protocol:?}");
    let key = protocol.key.as_option().expect("key");
    assert_eq!(key.id.as_deref(), Some(hello.as_str()));
    assert_eq!(key.from_me, Some(true));
    let stored = rig.stored(BOB_JID, &hello).await;
    assert_eq!(stored["revoked"], true, "{stored}");
    assert_eq!(stored["content"], Value::Null, "{stored}");

    // Bob writes, edits and deletes his own message.
    let his = bob.send_text(ACCOUNT, "typo hree").await.expect("sent");
    rig.stored(BOB_JID, &his).await;
    let key = |id: &str| {
        MessageField::some(wa::MessageKey {
            remote_jid: Some(format!("{ACCOUNT}@s.whatsapp.net")),
            from_me: Some(true),
            id: Some(id.to_owned()),
            participant: None,
        })
    };
    let edit = wa::Message {
        protocol_message: MessageField::some(wa::message::ProtocolMessage {
            key: key(&his),
            r#type: Some(Type::MessageEdit),
            edited_message: MessageField::some(wa::Message {
                conversation: Some("typo here".into()),
                ..Default::default()
            }),
            timestamp_ms: Some(chrono::Utc::now().timestamp_millis()),
            ..Default::default()
        }),
        ..Default::default()
    };
    bob.send_message(ACCOUNT, &edit).await.expect("sent");
    let hook = rig
        .hook("message_edited", |e| e["data"]["messageId"] == his.as_str())
        .await;
    assert_eq!(hook["data"]["message"], "typo here", "{hook}");
    assert_eq!(hook["data"]["sender"], BOB_JID, "{hook}");
    assert_eq!(hook["data"]["fromMe"], false, "{hook}");
    let stored = eventually(20, "Bob's edit stored", || async {
        let m = rig.stored(BOB_JID, &his).await;
        (m["content"] == "typo here").then_some(m)
    })
    .await;
    assert!(stored["editedAt"].is_string(), "{stored}");

    let revoke = wa::Message {
        protocol_message: MessageField::some(wa::message::ProtocolMessage {
            key: key(&his),
            r#type: Some(Type::Revoke),
            ..Default::default()
        }),
        ..Default::default()
    };
    bob.send_message(ACCOUNT, &revoke).await.expect("sent");
    let hook = rig
        .hook("message_revoked", |e| {
            e["data"]["messageId"] == his.as_str()
        })
        .await;
    assert_eq!(hook["data"]["forEveryone"], true, "{hook}");
    let stored = eventually(20, "Bob's deletion stored", || async {
        let m = rig.stored(BOB_JID, &his).await;
        (m["revoked"] == true).then_some(m)
    })
    .await;
    assert_eq!(stored["content"], Value::Null, "{stored}");
    // Neither is a message of its own in the history.
    assert_eq!(rig.history(BOB_JID).await.len(), 2);
    rig.clean();
}

/// A location, contact cards and a poll reach the peer as WhatsApp's own messages; the
/// peer's vote, sealed with the poll's secret, is opened by the gateway into option
/// names; the peer's own location arrives typed.
#[tokio::test]
async fn locations_contact_cards_and_polls_travel_both_ways() {
    use fake_whatsapp::{MessageField, wa};
    let rig = linked_rig().await;
    let bob = rig.whatsapp.user(BOB, "Bob").await.expect("Bob");
    let post = |what: &'static str, body: Value| {
        let rig = &rig;
        async move {
            let (code, sent) = rig
                .server
                .post(&format!("/api/whatsapp/{}/{what}", rig.id), &rig.auth, body)
                .await;
            assert_eq!(code, 200, "{what}: {sent}");
            sent["id"].as_str().expect("id").to_owned()
        }
    };

    let id = post(
        "send-location",
        json!({"phone": BOB, "latitude": 55.75, "longitude": 37.61, "name": "Кремль"}),
    )
    .await;
    let got = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets the location");
    assert_eq!(got.id, id);
    let location = got
        .message
        .location_message
        .as_option()
        .unwrap_or_else(|| panic!("a location: {:?}", got.message));
    assert_eq!(location.degrees_latitude, Some(55.75));
    assert_eq!(location.degrees_longitude, Some(37.61));
    assert_eq!(location.name.as_deref(), Some("Кремль"));

    let id = post(
        "send-contact",
        json!({"phone": BOB, "contacts": [{"name": "Иван", "phones": ["79000000001"]}]}),
    )
    .await;
    let got = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets the card");
    assert_eq!(got.id, id);
    let card = got
        .message
        .contact_message
        .as_option()
        .unwrap_or_else(|| panic!("a contact card: {:?}", got.message));
    assert_eq!(card.display_name.as_deref(), Some("Иван"));
    let vcard = card.vcard.as_deref().unwrap_or_default();
    assert!(
        vcard.contains("FN:Иван") && vcard.contains("waid=79000000001"),
        "{vcard}"
    );

    let poll_id = post(
        "send-poll",
        json!({"phone": BOB, "question": "Обед?", "options": ["12:00", "13:00"]}),
    )
    .await;
    let poll = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets the poll");
    assert_eq!(poll.id, poll_id);
    let creation = poll
        .message
        .poll_creation_message_v3
        .as_option()
        .unwrap_or_else(|| panic!("a single-answer poll: {:?}", poll.message));
    assert_eq!(creation.name.as_deref(), Some("Обед?"));
    let names: Vec<_> = creation
        .options
        .iter()
        .filter_map(|o| o.option_name.as_deref())
        .collect();
    assert_eq!(names, ["12:00", "13:00"]);

    bob.vote(ACCOUNT, &poll, &["13:00"]).await.expect("voted");
    let hook = rig
        .hook("poll_vote", |e| e["data"]["messageId"] == poll_id.as_str())
        .await;
    assert_eq!(hook["data"]["options"], json!(["13:00"]), "{hook}");
    assert_eq!(hook["data"]["voter"], BOB_JID, "{hook}");
    let stored = eventually(20, "Bob's vote stored on the poll", || async {
        let m = rig.stored(BOB_JID, &poll_id).await;
        (m["poll"]["votes"].as_array().map(Vec::len) == Some(1)).then_some(m)
    })
    .await;
    assert_eq!(stored["poll"]["votes"][0]["options"], json!(["13:00"]));

    // Bob shares where he is.
    let here = wa::Message {
        location_message: MessageField::some(wa::message::LocationMessage {
            degrees_latitude: Some(59.93),
            degrees_longitude: Some(30.31),
            address: Some("Санкт-Петербург".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let his = bob.send_message(ACCOUNT, &here).await.expect("sent");
    let stored = rig.stored(BOB_JID, &his).await;
    assert_eq!(stored["messageType"], "location", "{stored}");
    assert_eq!(
        stored["location"],
        json!({"latitude": 59.93, "longitude": 30.31, "address": "Санкт-Петербург"}),
        "{stored}"
    );
    let hook = rig
        .hook("message_received", |e| {
            e["data"]["messageId"] == his.as_str()
        })
        .await;
    assert_eq!(hook["data"]["location"]["latitude"], 59.93, "{hook}");
    rig.clean();
}

/// Typing and presence both ways: the peer sees the gateway's chat states and its
/// announcement (having followed it); the gateway follows the peer and gets where it is
/// now, its coming online, and its typing, as signed `presence_update` webhooks.
#[tokio::test]
async fn presence_and_typing_travel_both_ways() {
    let rig = linked_rig().await;
    let (code, body) = rig
        .server
        .put(
            &format!("/api/instances/{}", rig.id),
            &rig.auth,
            json!({"notifyPresence": true}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let bob = rig.whatsapp.user(BOB, "Bob").await.expect("Bob");
    let account = format!("{ACCOUNT}@s.whatsapp.net");

    for state in ["composing", "recording", "paused"] {
        let (code, body) = rig
            .server
            .post(
                &format!("/api/whatsapp/{}/chats/{BOB}/typing", rig.id),
                &rig.auth,
                json!({ "state": state }),
            )
            .await;
        assert_eq!(code, 200, "{state}: {body}");
        let seen = bob
            .next_presence(Duration::from_secs(10))
            .await
            .expect("Bob sees the chat state");
        assert_eq!(seen.state, state);
        assert_eq!(seen.from.to_string(), account);
    }

    bob.subscribe_presence(ACCOUNT)
        .expect("Bob follows the account");
    let (code, body) = rig
        .server
        .post(
            &format!("/api/whatsapp/{}/presence", rig.id),
            &rig.auth,
            json!({"presence": "available"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let seen = bob
        .next_presence(Duration::from_secs(10))
        .await
        .expect("Bob sees the account online");
    assert_eq!(
        (seen.state.as_str(), seen.from.to_string()),
        ("available", account)
    );

    // The gateway follows Bob: WhatsApp answers where he is now (never seen: offline).
    let (code, body) = rig
        .server
        .post(
            &format!("/api/whatsapp/{}/presence/subscribe/{BOB}", rig.id),
            &rig.auth,
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let is = |state: &'static str| {
        move |e: &Value| e["data"]["presence"] == state && e["data"]["sender"] == BOB_JID
    };
    rig.hook("presence_update", is("unavailable")).await;
    bob.set_presence(true).expect("Bob comes online");
    let online = rig.hook("presence_update", is("available")).await;
    assert_eq!(online["data"]["remoteJid"], BOB_JID, "{online}");
    bob.set_presence(false).expect("Bob goes offline");
    let offline = rig
        .hook("presence_update", |e| {
            is("unavailable")(e) && e["data"]["lastSeen"].as_i64().is_some()
        })
        .await;
    assert_eq!(offline["data"]["instanceId"], rig.id.as_str(), "{offline}");

    bob.typing(ACCOUNT, "composing").expect("Bob types");
    rig.hook("presence_update", is("composing")).await;
    bob.typing(ACCOUNT, "recording").expect("Bob records");
    rig.hook("presence_update", is("recording")).await;
    rig.clean();
}

/// Another account of the fake WhatsApp.
const CAROL: &str = "79005550003";

/// A JPEG as far as anyone checks: its start-of-image marker, then some bytes.
const JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01,
];

/// The push name, the about text and the picture go to WhatsApp, which then answers them
/// back; a contact's picture comes from WhatsApp's media host; blocking and unblocking
/// change the blocklist WhatsApp keeps (by LID, as it does).
#[tokio::test]
async fn profile_and_blocking_are_answered_by_whatsapp() {
    let rig = linked_rig().await;
    let base = format!("/api/whatsapp/{}", rig.id);

    let (code, body) = rig
        .server
        .put(
            &format!("{base}/profile"),
            &rig.auth,
            json!({"name": "Shop Desk", "about": "Open 9 to 6"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["name"], "Shop Desk", "{body}");
    assert_eq!(body["about"], "Open 9 to 6", "{body}");
    assert_eq!(body["phone"], ACCOUNT, "{body}");
    let told = rig.whatsapp.profile(ACCOUNT);
    assert_eq!(told.push_name.as_deref(), Some("Shop Desk"));
    assert_eq!(told.about.as_deref(), Some("Open 9 to 6"));

    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(JPEG.to_vec()).file_name("me.jpg"),
    );
    let resp = rig
        .server
        .request(
            reqwest::Method::PUT,
            &format!("{base}/profile/picture"),
            &rig.auth,
        )
        .multipart(form)
        .send()
        .await
        .expect("upload the picture");
    assert_eq!(resp.status(), 200);
    assert_eq!(rig.whatsapp.profile(ACCOUNT).picture.as_deref(), Some(JPEG));
    let (code, body) = rig.server.get(&format!("{base}/profile"), &rig.auth).await;
    assert_eq!(code, 200, "{body}");
    let url = body["picture"]["url"].as_str().expect("a picture url");
    assert_eq!(rig.whatsapp.media_at(url).as_deref(), Some(JPEG), "{body}");
    let (code, body) = rig
        .server
        .delete(&format!("{base}/profile/picture"), &rig.auth)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(rig.whatsapp.profile(ACCOUNT).picture, None);

    // A contact's picture, and one of a contact who has none.
    rig.whatsapp.user(BOB, "Bob").await.expect("Bob");
    rig.whatsapp.set_picture(BOB, b"\xFF\xD8\xFFbob".to_vec());
    let (code, body) = rig
        .server
        .get(&format!("{base}/contacts/{BOB}/picture"), &rig.auth)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["phone"], BOB, "{body}");
    let url = body["picture"]["url"].as_str().expect("Bob's picture url");
    assert_eq!(
        rig.whatsapp.media_at(url).as_deref(),
        Some(&b"\xFF\xD8\xFFbob"[..])
    );
    let (code, body) = rig
        .server
        .get(&format!("{base}/contacts/{CAROL}/picture"), &rig.auth)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["picture"], Value::Null, "{body}");

    // Carol is another account: WhatsApp knows her LID, which a block names.
    let carol = rig.whatsapp.phone(CAROL).await.expect("Carol");
    let (code, body) = rig
        .server
        .post(
            &format!("{base}/contacts/{CAROL}/block"),
            &rig.auth,
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["blocked"], true, "{body}");
    let blocked = rig.whatsapp.profile(ACCOUNT).blocked;
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert!(blocked[0].ends_with("@lid"), "{blocked:?}");
    assert_ne!(blocked[0], carol.jid().to_string(), "by LID, not by number");
    let (code, body) = rig
        .server
        .get(&format!("{base}/blocklist"), &rig.auth)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["blocklist"],
        json!([{"jid": format!("{CAROL}@s.whatsapp.net"), "phone": CAROL}]),
        "{body}"
    );
    let (code, body) = rig
        .server
        .post(
            &format!("{base}/contacts/{CAROL}/unblock"),
            &rig.auth,
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(rig.whatsapp.profile(ACCOUNT).blocked.is_empty());
    let (code, body) = rig
        .server
        .get(&format!("{base}/blocklist"), &rig.auth)
        .await;
    assert_eq!((code, &body["blocklist"]), (200, &json!([])), "{body}");

    // A number not on WhatsApp cannot be blocked.
    let (code, body) = rig
        .server
        .post(
            &format!("{base}/contacts/79990000000/block"),
            &rig.auth,
            json!({}),
        )
        .await;
    assert_eq!(
        (code, body["code"].as_str()),
        (404, Some("not_on_whatsapp")),
        "{body}"
    );
    assert_eq!(
        rig.whatsapp.unknown_iqs(),
        0,
        "{:?}",
        rig.whatsapp.unknown_iq_stanzas()
    );
}

/// With `rejectCalls`, a peer's call is rejected on WhatsApp (the server gets the
/// device's reject naming the call), reported as `call_received`, and the peer decrypts
/// the instance's answer; without it, the call is only reported.
#[tokio::test]
async fn an_incoming_call_is_reported_and_rejected_with_a_message() {
    let rig = linked_rig().await;
    let bob = rig.whatsapp.user(BOB, "Bob").await.expect("Bob");

    let ringing = bob.call(ACCOUNT, false).expect("Bob calls");
    let seen = rig
        .hook("call_received", |e| e["data"]["callId"] == ringing.as_str())
        .await;
    assert_eq!(seen["data"]["remoteJid"], BOB_JID, "{seen}");
    assert_eq!(seen["data"]["rejected"], false, "{seen}");
    assert_eq!(seen["data"]["video"], false, "{seen}");
    assert!(rig.whatsapp.rejected_calls().is_empty());

    let (code, body) = rig
        .server
        .put(
            &format!("/api/instances/{}", rig.id),
            &rig.auth,
            json!({"rejectCalls": true, "rejectCallsMessage": "Calls are not answered here; please write."}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let call = bob
        .call(ACCOUNT, true)
        .expect("Bob calls again, with video");
    let rejected = rig
        .whatsapp
        .wait_until(Duration::from_secs(20), "the device's reject", |w| {
            w.rejected_calls().into_iter().find(|r| r.call_id == call)
        })
        .await
        .expect("the device rejects the call");
    assert!(rejected.to.starts_with(BOB), "{rejected:?}");
    assert!(rejected.creator.starts_with(BOB), "{rejected:?}");
    let seen = rig
        .hook("call_received", |e| e["data"]["callId"] == call.as_str())
        .await;
    assert_eq!(seen["data"]["rejected"], true, "{seen}");
    assert_eq!(seen["data"]["video"], true, "{seen}");
    let answer = bob
        .next_message(Duration::from_secs(20))
        .await
        .expect("Bob gets the answer");
    assert_eq!(
        answer.text.as_deref(),
        Some("Calls are not answered here; please write.")
    );
    assert_eq!(rig.whatsapp.problems(), Vec::<String>::new());
}

/// A status post goes out as WhatsApp carries one: the chosen contact's phone gets the
/// sender key for `status@broadcast` in its own encrypted copy and decrypts the post
/// (a sender-key message) with it, text and background; a contact outside the audience
/// gets nothing of it.
#[tokio::test]
async fn a_status_post_is_decrypted_by_its_audience_only() {
    let rig = linked_rig().await;
    // WhatsApp addresses status posts by LID: the audience are accounts, which have one.
    let bob = rig.whatsapp.phone(BOB).await.expect("Bob");
    let carol = rig.whatsapp.user(CAROL, "Carol").await.expect("Carol");
    let (code, body) = rig
        .server
        .post(
            &format!("/api/whatsapp/{}/status", rig.id),
            &rig.auth,
            json!({"text": "Open until 8 pm", "backgroundColor": "#112233", "recipients": [BOB]}),
        )
        .await;
    assert_eq!(code, 200, "status: {body}");
    let id = body["id"].as_str().expect("id").to_owned();

    let post = status_post(&bob).await;
    assert_eq!(post.id, id);
    let text = post
        .message
        .extended_text_message
        .as_option()
        .unwrap_or_else(|| panic!("a text status: {:?}", post.message));
    assert_eq!(text.text.as_deref(), Some("Open until 8 pm"));
    assert_eq!(text.background_argb, Some(0xFF11_2233));

    // Carol was not in the audience.
    rig.got_nothing_yet(&carol, CAROL).await;
    rig.clean();
}

impl Rig {
    /// `peer` (the phone of `phone`) got nothing so far: the next thing it gets is a
    /// text sent to it now.
    async fn got_nothing_yet(&self, peer: &fake_whatsapp::Peer, phone: &str) {
        let hello = self.send(phone, "hello").await;
        let got = peer
            .next_message(Duration::from_secs(10))
            .await
            .expect("the phone gets its text");
        assert_eq!(got.id, hello, "{:?}", got.message);
    }
}

/// The next status post `peer` gets: a sender-key message, decrypted with the key for
/// `status@broadcast` that came before it in the peer's own encrypted copy.
async fn status_post(peer: &fake_whatsapp::Peer) -> fake_whatsapp::ReceivedMessage {
    loop {
        let got = peer
            .next_message(Duration::from_secs(10))
            .await
            .expect("the sender key, then the post");
        if got.enc_type == "skmsg" {
            return got;
        }
        let key = got
            .message
            .sender_key_distribution_message
            .as_option()
            .unwrap_or_else(|| panic!("a sender key before the post: {:?}", got.message));
        assert_eq!(key.group_id.as_deref(), Some("status@broadcast"));
    }
}

/// An image status: the server downloads the image, uploads it encrypted to WhatsApp's
/// media host and posts it; the chosen contact's phone decrypts the post, downloads
/// the image from the media host and decrypts it to the very bytes; a contact outside
/// the audience gets nothing of it.
#[tokio::test]
async fn an_image_status_is_seen_by_its_audience_only() {
    let rig = linked_rig().await;
    let bob = rig.whatsapp.phone(BOB).await.expect("Bob");
    let carol = rig.whatsapp.user(CAROL, "Carol").await.expect("Carol");
    let media = crate::messaging::media_server().await;
    let png = wagate::qr::png("media").expect("png");
    let (code, body) = rig
        .server
        .post(
            &format!("/api/whatsapp/{}/status", rig.id),
            &rig.auth,
            json!({"imageUrl": format!("http://{media}/cat.png"), "caption": "New in today",
                   "recipients": [BOB]}),
        )
        .await;
    assert_eq!(code, 200, "status: {body}");
    let id = body["id"].as_str().expect("id").to_owned();

    let post = status_post(&bob).await;
    assert_eq!(post.id, id);
    let image = post
        .message
        .image_message
        .as_option()
        .unwrap_or_else(|| panic!("an image status: {:?}", post.message));
    assert_eq!(image.caption.as_deref(), Some("New in today"));
    assert_eq!(image.mimetype.as_deref(), Some("image/png"));
    assert_eq!(bob.download(&post.message).expect("decrypted"), png);
    let sent = rig
        .hook("message_sent", |e| e["data"]["messageId"] == id.as_str())
        .await;
    assert_eq!(sent["data"]["to"], "status@broadcast", "{sent}");
    assert_eq!(sent["data"]["hasMedia"], true, "{sent}");

    // Carol was not in the audience.
    rig.got_nothing_yet(&carol, CAROL).await;
    rig.clean();
}
