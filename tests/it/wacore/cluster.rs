//! A real session in cluster mode: linked on one node, then run by another, which loads
//! its keys from MongoDB and resumes it without a QR code; the Signal sessions with the
//! peers go on (a peer decrypts what the new node sends, and the other way round).
//!
//! Both nodes run in this process (their sessions reach the fake WhatsApp through the
//! transport seam), on the MongoDB test server; the first hands the instance over with a
//! graceful stop, which stops its session and releases the lease.

use std::time::Duration;

use serde_json::{Value, json};

use super::{ACCOUNT, BOB, VERSION};
use crate::common::{Auth, TestServer, eventually, free_port, fresh_mongodb_url};
use fake_whatsapp::{Ending, FakeWhatsApp, Pattern, Peer};

const CLUSTER_SECRET: &str = "cluster-test-secret-0123456789abcdef";
const SECRET_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

async fn node(url: &str, id: &str, whatsapp: &FakeWhatsApp) -> TestServer {
    let port = free_port().to_string();
    let advertise = format!("http://127.0.0.1:{port}");
    TestServer::start_with_wacore(
        &[
            VERSION,
            ("database_provider", "mongodb"),
            ("database_url", url),
            ("cluster_mode", "mongodb"),
            ("node_id", id),
            ("node_advertise_url", &advertise),
            ("port", &port),
            ("cluster_secret", CLUSTER_SECRET),
            ("secret_key", SECRET_KEY),
            ("cluster_lease_ttl_ms", "4000"),
            ("cluster_lease_renew_ms", "1000"),
            ("cluster_scan_ms", "500"),
        ],
        whatsapp,
    )
    .await
}

/// The instance's status; None while it changes hands (503 `instance_moving`).
async fn status(server: &TestServer, auth: &Auth, id: &str) -> Option<Value> {
    let (code, body) = server
        .get(&format!("/api/instances/{id}/status"), auth)
        .await;
    if code == 503 && body["code"] == "instance_moving" {
        return None;
    }
    assert_eq!(code, 200, "status: {body}");
    Some(body)
}

/// Waits until `server` reports `id` connected on node `owner`.
async fn connected_on(server: &TestServer, auth: &Auth, id: &str, owner: &str) {
    eventually(30, &format!("{id} connected on {owner}"), || async {
        let s = status(server, auth, id).await?;
        (s["node"] == owner && s["status"] == "connected").then_some(())
    })
    .await;
}

async fn send(server: &TestServer, auth: &Auth, id: &str, text: &str) -> String {
    let (code, body) = server
        .post(
            &format!("/api/whatsapp/{id}/send"),
            auth,
            json!({"phone": BOB, "message": text}),
        )
        .await;
    assert_eq!(code, 200, "send: {body}");
    body["id"].as_str().expect("id").to_owned()
}

/// Waits until `server` has stored the inbound message `message` from Bob.
async fn stored(server: &TestServer, auth: &Auth, id: &str, message: &str) {
    eventually(20, &format!("message {message} stored"), || async {
        let (code, body) = server
            .get(
                &format!("/api/instances/{id}/chats/{BOB}/messages?limit=100"),
                auth,
            )
            .await;
        assert_eq!(code, 200, "history: {body}");
        body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["messageId"] == message)
            .then_some(())
    })
    .await;
}

/// A wacore instance created and linked on node `n1` of a new cluster database.
async fn linked_on_n1(whatsapp: &FakeWhatsApp, url: &str) -> (TestServer, Auth, String) {
    let n1 = node(url, "n1", whatsapp).await;
    let auth = n1.admin();
    let (code, body) = n1
        .post(
            "/api/instances",
            &auth,
            json!({"name": "Real phone", "engine": "wacore"}),
        )
        .await;
    assert_eq!(code, 201, "create: {body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let prefix = format!("{},", FakeWhatsApp::first_ref(1));
    let qr = eventually(30, "a QR code on n1", || async {
        let (code, body) = n1.get(&format!("/api/instances/{id}/qr"), &auth).await;
        // 503 until a node has taken the new instance's lease.
        assert!(
            code == 200 || code == 202 || code == 503,
            "qr: {code} {body}"
        );
        body["qrCode"]
            .as_str()
            .filter(|qr| qr.starts_with(&prefix))
            .map(str::to_owned)
    })
    .await;
    whatsapp.scan(&qr, ACCOUNT).await.expect("the phone scans");
    connected_on(&n1, &auth, &id, "n1").await;
    (n1, auth, id)
}

/// A message to Bob through `server` that Bob decrypts, and one from Bob that `server`
/// stores.
async fn both_ways(server: &TestServer, auth: &Auth, id: &str, bob: &Peer, node: &str) {
    let text = format!("from {node}");
    let sent = send(server, auth, id, &text).await;
    let got = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets it");
    assert_eq!(
        (got.id.as_str(), got.text.as_deref()),
        (sent.as_str(), Some(text.as_str()))
    );
    let inbound = bob
        .send_text(ACCOUNT, &format!("to {node}"))
        .await
        .expect("Bob sends");
    stored(server, auth, id, &inbound).await;
}

#[tokio::test]
async fn a_real_session_moves_to_another_node_with_its_keys_and_needs_no_qr() {
    let whatsapp = FakeWhatsApp::new();
    let url = fresh_mongodb_url();
    // Linked on n1, which holds the lease; a message each way sets up the Signal
    // sessions with Bob.
    let (n1, auth, id) = linked_on_n1(&whatsapp, &url).await;
    let bob = whatsapp.user(BOB, "Bob").await.expect("Bob");
    both_ways(&n1, &auth, &id, &bob, "n1").await;
    let handshakes = whatsapp.handshakes().len();

    // n2 joins, n1 leaves: n2 takes the lease and starts the session from the keys
    // n1 wrote to MongoDB.
    let n2 = node(&url, "n2", &whatsapp).await;
    let auth = n2.admin();
    let n1_dir = n1.stop().await;
    connected_on(&n2, &auth, &id, "n2").await;
    let after = whatsapp.handshakes();
    assert!(after.len() > handshakes, "n2 connected: {after:?}");
    assert!(
        after[handshakes..].iter().all(|h| *h == Some(Pattern::Ik)),
        "the registered device resumed (IK), it did not pair again: {after:?}"
    );
    let now = status(&n2, &auth, &id).await.expect("n2 holds it");
    assert_eq!(now["phone"], ACCOUNT, "{now}");
    // n2 never had the session file: the keys came from the database.
    assert!(
        !n2.dir
            .path()
            .join("instances")
            .join(&id)
            .join(wagate_actors::engine::wacore::SESSION_FILE)
            .exists()
    );
    drop(n1_dir);

    // The Signal sessions go on: Bob decrypts what n2 sends, n2 what Bob sends.
    both_ways(&n2, &auth, &id, &bob, "n2").await;
    assert!(whatsapp.problems().is_empty(), "{:?}", whatsapp.problems());
}

/// In a cluster a replaced stream may be the session resumed by another node: the keys
/// stay, and the instance (still holding its lease here) restarts and resumes.
#[tokio::test]
async fn a_replaced_stream_in_a_cluster_keeps_the_keys_and_resumes() {
    let whatsapp = FakeWhatsApp::new();
    let url = fresh_mongodb_url();
    let (n1, auth, id) = linked_on_n1(&whatsapp, &url).await;
    let handshakes = whatsapp.handshakes().len();
    whatsapp.end(handshakes, Ending::Replaced);
    eventually(30, "a new connection after the replaced stream", || async {
        (whatsapp.handshakes().len() > handshakes).then_some(())
    })
    .await;
    connected_on(&n1, &auth, &id, "n1").await;
    let after = whatsapp.handshakes();
    assert!(
        after[handshakes..].iter().all(|h| *h == Some(Pattern::Ik)),
        "the device resumed with its keys: {after:?}"
    );
    let (code, body) = n1
        .get(&format!("/api/instances/{id}/activity?limit=1000"), &auth)
        .await;
    assert_eq!(code, 200, "{body}");
    let logs = body["logs"].as_array().cloned().unwrap_or_default();
    assert!(
        !logs.iter().any(|a| a["action"] == "logged_out"),
        "not logged out: {logs:?}"
    );
    let bob = whatsapp.user(BOB, "Bob").await.expect("Bob");
    let sent = send(&n1, &auth, &id, "still here").await;
    let got = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("Bob gets it");
    assert_eq!(got.id, sent);
}
