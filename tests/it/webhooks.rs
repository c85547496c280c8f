//! Webhooks against a real local receiver: signatures, filters, headers, retries,
//! crash safety, order, and isolation between instances.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Auth, ProcessServer, TestServer, eventually};
use crate::receiver::{Receiver, unused_addr};

/// Creates a connected sandbox instance whose webhooks go to `url`.
async fn hooked_instance(srv: &TestServer, auth: &Auth, phone: &str, settings: Value) -> String {
    let id = srv.connected_instance(auth, phone, phone).await;
    let (status, body) = srv
        .put(&format!("/api/instances/{id}"), auth, settings)
        .await;
    assert_eq!(status, 200, "{body}");
    id
}

/// A simulated contact writes to the instance; returns the WhatsApp message id.
async fn inbound(srv: &TestServer, auth: &Auth, id: &str, body: &str) -> String {
    let (status, resp) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/inbound"),
            auth,
            json!({"from": "79990001122", "body": body, "pushName": "Иван"}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    resp["messageId"].as_str().expect("messageId").to_owned()
}

#[tokio::test]
async fn signed_filtered_and_with_custom_headers() {
    let srv = TestServer::start().await;
    let auth = srv.admin();
    let rx = Receiver::start().await;
    let secret = "s3cret-ключ";
    let id = hooked_instance(
        &srv,
        &auth,
        "79110000001",
        json!({
            "webhookUrl": rx.url(), "webhookEnabled": true,
            "webhookSettings": {"secret": secret, "notifySent": false, "notifyReceived": true,
                                "notifyDelivery": false, "notifyRead": true, "headers": {"X-Tenant": "acme"}}
        }),
    )
    .await;
    // notifySent=false: this send produces no webhook…
    let (_, sent) = srv
        .post(
            &format!("/api/whatsapp/{id}/send"),
            &auth,
            json!({"phone": "79990001122", "message": "hi"}),
        )
        .await;
    let mid = sent["id"].as_str().expect("id").to_owned();
    // …delivered is filtered out, read goes through…
    for status in ["delivered", "read"] {
        srv.post(
            &format!("/api/sandbox/instances/{id}/receipt"),
            &auth,
            json!({"messageId": mid, "status": status}),
        )
        .await;
    }
    // …and the inbound message arrives, after everything above (one ordered queue).
    let inbound_id = inbound(&srv, &auth, &id, "Привет \"мир\" \n ✓").await;
    let all = rx
        .wait_for("message_received", 20, |r| {
            r.iter().any(|r| r.json()["event"] == "message_received")
        })
        .await;
    let events: Vec<String> = all
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(!events.contains(&"message_sent".to_owned()), "{events:?}");
    let statuses: Vec<Value> = all
        .iter()
        .filter(|r| r.json()["event"] == "message_status")
        .map(|r| r.json()["data"]["status"].clone())
        .collect();
    assert_eq!(statuses, [json!("read")], "delivery filtered, read kept");

    let hook = all
        .iter()
        .find(|r| r.json()["event"] == "message_received")
        .expect("received");
    let body = hook.json();
    assert_eq!(body["data"]["messageId"], inbound_id.as_str());
    assert_eq!(body["data"]["instanceId"], id.as_str());
    assert_eq!(body["data"]["pushName"], "Иван");
    assert_eq!(hook.header("x-webhook-id"), body["id"].as_str());
    assert_eq!(hook.header("content-type"), Some("application/json"));
    assert_eq!(hook.header("x-webhook-attempt"), Some("1"));
    assert!(
        hook.header("x-webhook-timestamp")
            .is_some_and(|t| t.parse::<i64>().is_ok())
    );
    assert_eq!(hook.header("x-tenant"), Some("acme"));
    let signature = hook
        .header("x-webhook-signature")
        .expect("signature")
        .to_owned();
    assert_eq!(
        signature,
        wagate_actors::webhook_queue::sign(secret, &hook.body)
    );
    assert!(
        signature
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );

    // Exactly the way the spec's JavaScript sample verifies it.
    let file = srv.dir.path().join("body.json");
    std::fs::write(&file, &hook.body).expect("write body");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/verify_signature.js");
    let verify = |sig: &str, secret: &str| {
        std::process::Command::new("node")
            .args([script, file.to_str().expect("path"), sig, secret])
            .status()
            .expect("node runs (Node.js is needed by the test suite)")
            .success()
    };
    assert!(
        verify(&signature, secret),
        "the spec's sample accepts the signature"
    );
    assert!(
        !verify(&signature, "wrong-secret"),
        "and refuses a wrong secret"
    );

    // Without a secret there is no signature header.
    srv.put(
        &format!("/api/instances/{id}"),
        &auth,
        json!({"webhookSettings": {"secret": ""}}),
    )
    .await;
    inbound(&srv, &auth, &id, "unsigned").await;
    let unsigned = rx
        .wait_for("the unsigned webhook", 20, |r| {
            r.iter().any(|r| r.json()["data"]["body"] == "unsigned")
        })
        .await;
    let last = unsigned
        .iter()
        .find(|r| r.json()["data"]["body"] == "unsigned")
        .expect("unsigned");
    assert_eq!(last.header("x-webhook-signature"), None);
}

#[tokio::test]
async fn failing_twice_then_delivered_on_attempt_3_with_the_same_id() {
    let srv = TestServer::start().await;
    let auth = srv.admin();
    let rx = Receiver::start().await;
    let id = hooked_instance(
        &srv,
        &auth,
        "79110000002",
        json!({"webhookUrl": rx.url(), "webhookSettings": {"maxRetries": 3, "retryInterval": 100}}),
    )
    .await;
    // Configuring the URL sent webhook_updated; fail only what comes after it.
    rx.wait_for("webhook_updated", 20, |r| !r.is_empty()).await;
    rx.fail_first(2);
    inbound(&srv, &auth, &id, "retry me").await;
    let got = rx
        .wait_for("three attempts", 20, |r| {
            r.iter()
                .filter(|r| r.json()["event"] == "message_received")
                .count()
                == 3
        })
        .await;
    let attempts: Vec<&Received> = got
        .iter()
        .filter(|r| r.json()["event"] == "message_received")
        .collect();
    let ids: HashSet<&str> = attempts
        .iter()
        .filter_map(|r| r.header("x-webhook-id"))
        .collect();
    assert_eq!(ids.len(), 1, "the same X-Webhook-Id on every attempt");
    let numbers: Vec<&str> = attempts
        .iter()
        .filter_map(|r| r.header("x-webhook-attempt"))
        .collect();
    assert_eq!(numbers, ["1", "2", "3"]);
    assert!(
        attempts.windows(2).all(|w| w[0].body == w[1].body),
        "identical bodies"
    );
    let event_id = ids.into_iter().next().expect("id").to_owned();
    let (_, page) = eventually(20, "three delivery records", || async {
        let r = srv
            .get(
                &format!("/api/instances/{id}/webhook/deliveries?limit=100"),
                &auth,
            )
            .await;
        let n = r.1["deliveries"]
            .as_array()?
            .iter()
            .filter(|d| d["eventId"] == event_id.as_str())
            .count();
        (n == 3).then_some(r)
    })
    .await;
    let records: Vec<&Value> = page["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .filter(|d| d["eventId"] == event_id.as_str())
        .collect();
    let statuses: Vec<&str> = records
        .iter()
        .filter_map(|d| d["status"].as_str())
        .collect();
    assert_eq!(
        statuses,
        ["delivered", "retrying", "retrying"],
        "newest first"
    );
    assert_eq!(records[0]["attempt"], 3);
    assert_eq!(records[0]["httpStatus"], 200);
    assert_eq!(records[2]["httpStatus"], 500);
    assert!(records[2]["error"].is_string());
    assert!(records[0]["durationMs"].is_u64());
    assert_eq!(records[0]["event"], "message_received");
}

use crate::receiver::Received;

#[tokio::test]
async fn gives_up_after_max_retries_and_moves_on() {
    let srv = TestServer::start().await;
    let auth = srv.admin();
    let rx = Receiver::start().await;
    let id = hooked_instance(
        &srv,
        &auth,
        "79110000003",
        json!({"webhookUrl": rx.url(), "webhookSettings": {"maxRetries": 1, "retryInterval": 100}}),
    )
    .await;
    rx.wait_for("webhook_updated", 20, |r| !r.is_empty()).await;
    rx.fail_first(2);
    inbound(&srv, &auth, &id, "doomed").await;
    inbound(&srv, &auth, &id, "fine").await;
    rx.wait_for("the next event after giving up", 20, |r| {
        r.iter().any(|r| r.json()["data"]["body"] == "fine")
    })
    .await;
    let doomed: Vec<Received> = rx
        .received()
        .into_iter()
        .filter(|r| r.json()["data"]["body"] == "doomed")
        .collect();
    assert_eq!(doomed.len(), 2, "first attempt + maxRetries");
    let (_, page) = srv
        .get(&format!("/api/instances/{id}/webhook/deliveries"), &auth)
        .await;
    assert!(
        page["deliveries"]
            .as_array()
            .expect("list")
            .iter()
            .any(|d| d["status"] == "failed" && d["attempt"] == 2),
        "{page}"
    );
}

#[tokio::test]
async fn a_hung_receiver_does_not_delay_other_instances() {
    let srv = TestServer::start_with(&[("webhook_timeout_ms", "30000")]).await;
    let auth = srv.admin();
    let hung = Receiver::start().await;
    hung.hang();
    let good = Receiver::start().await;
    let a = hooked_instance(
        &srv,
        &auth,
        "79110000004",
        json!({"webhookUrl": hung.url()}),
    )
    .await;
    let b = hooked_instance(
        &srv,
        &auth,
        "79110000005",
        json!({"webhookUrl": good.url()}),
    )
    .await;
    inbound(&srv, &auth, &a, "to the void").await;
    eventually(20, "the hung receiver to hold a request", || async {
        (hung.in_flight() > 0).then_some(())
    })
    .await;
    inbound(&srv, &auth, &b, "still flowing").await;
    good.wait_for("b's webhook", 20, |r| {
        r.iter()
            .any(|r| r.json()["data"]["body"] == "still flowing")
    })
    .await;
    assert!(
        hung.in_flight() > 0,
        "a's request is still hanging while b's arrived"
    );
}

#[tokio::test]
async fn webhook_test_and_url_validation() {
    let srv = TestServer::start().await;
    let auth = srv.admin();
    let rx = Receiver::start().await;
    let id = srv.new_instance(&auth, "tester").await;
    let (status, body) = srv
        .post(
            &format!("/api/instances/{id}/webhook/test"),
            &auth,
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "webhook_not_configured");
    // Configured but disabled: a test still goes out, other events do not.
    srv.put(
        &format!("/api/instances/{id}"),
        &auth,
        json!({"webhookUrl": rx.url(), "webhookEnabled": false}),
    )
    .await;
    let (status, body) = srv
        .post(
            &format!("/api/instances/{id}/webhook/test"),
            &auth,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let got = rx
        .wait_for("webhook_test", 20, |r| {
            r.iter().any(|r| r.json()["event"] == "webhook_test")
        })
        .await;
    assert_eq!(
        got.iter()
            .filter(|r| r.json()["event"] == "webhook_test")
            .count(),
        1
    );
    assert_eq!(got[0].json()["id"], body["eventId"]);
    assert!(
        got.iter().all(|r| r.json()["event"] != "webhook_updated"),
        "disabled: nothing else"
    );

    let guarded = TestServer::start_with(&[("allow_private_network_urls", "false")]).await;
    let gauth = guarded.admin();
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/",
        "ftp://example.com/",
    ] {
        let (status, body) = guarded
            .post(
                "/api/instances",
                &gauth,
                json!({"name": "x", "webhookUrl": url}),
            )
            .await;
        assert_eq!(status, 400, "{url}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("webhookUrl")),
            "{body}"
        );
    }
    // Secrets are shown to the owner only: an admin reading a user's instance sees a mask.
    let (_, key, _) = srv.new_user("owner@example.com", "user").await;
    let owner = Auth::Key(key);
    let (_, created) = srv
        .post(
            "/api/instances",
            &owner,
            json!({"name": "mine", "webhookUrl": rx.url(), "webhookSecret": "top-secret"}),
        )
        .await;
    let iid = created["id"].as_str().expect("id");
    let (_, mine) = srv.get(&format!("/api/instances/{iid}"), &owner).await;
    assert_eq!(mine["webhookSettings"]["secret"], "top-secret");
    let (_, seen) = srv.get(&format!("/api/instances/{iid}"), &auth).await;
    assert_eq!(seen["webhookSettings"]["secret"], "********");
}

#[tokio::test]
async fn order_holds_and_nothing_is_lost_across_sigkill() {
    let data = tempfile::tempdir().expect("tempdir");
    let down = unused_addr().await;
    let url = format!("http://{down}/hook");
    let srv = ProcessServer::spawn(data.path(), &[]).await;
    let auth = srv.admin().await;
    let (status, created) = srv
        .call(
            Method::POST,
            "/api/instances",
            &auth,
            Some(json!({"name": "durable", "engine": "sandbox", "webhookUrl": url, "maxRetries": 20, "retryInterval": 100})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let connected = eventually(20, "a QR to scan", || async {
        let (s, b) = srv
            .call(Method::GET, &format!("/api/instances/{id}/qr"), &auth, None)
            .await;
        (s == 200).then_some(b)
    })
    .await;
    assert!(connected["qrCode"].is_string());
    srv.call(
        Method::POST,
        &format!("/api/sandbox/instances/{id}/scan"),
        &auth,
        Some(json!({"phone": "79110000009"})),
    )
    .await;
    for i in 0..10 {
        let (s, b) = srv
            .call(
                Method::POST,
                &format!("/api/sandbox/instances/{id}/inbound"),
                &auth,
                Some(json!({"from": "79990001122", "body": format!("m{i}")})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    // Every event is stored (and handed to the queue), and delivery has been failing.
    let path = format!("/api/instances/{id}/events?limit=1000&types=connected,message_received");
    let events = eventually(20, "11 stored events", || async {
        let (_, events) = srv.call(Method::GET, &path, &auth, None).await;
        (events["count"] == 11).then_some(events)
    })
    .await;
    eventually(20, "a failed attempt against the down receiver", || async {
        let (_, page) = srv
            .call(
                Method::GET,
                &format!("/api/instances/{id}/webhook/deliveries"),
                &auth,
                None,
            )
            .await;
        (page["pagination"]["total"].as_u64()? > 0).then_some(())
    })
    .await;
    let expected: Vec<String> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            e["data"]["messageId"]
                .as_str()
                .map_or_else(|| "connected".to_owned(), str::to_owned)
        })
        .collect();
    srv.kill_hard().await;

    // The receiver comes up; the restarted server delivers everything, in order.
    let rx = Receiver::start_on(down).await;
    let srv = ProcessServer::spawn(data.path(), &[]).await;
    let got = rx
        .wait_for("all 10 messages", 60, |r| {
            r.iter()
                .filter(|r| r.json()["event"] == "message_received")
                .map(|r| r.json()["id"].clone())
                .collect::<HashSet<_>>()
                .len()
                == 10
        })
        .await;
    let mut seen: Vec<String> = Vec::new();
    for r in &got {
        let body = r.json();
        let key = body["data"]["messageId"].as_str().map_or_else(
            || body["event"].as_str().unwrap_or_default().to_owned(),
            str::to_owned,
        );
        let relevant = body["event"] == "message_received" || body["event"] == "connected";
        if relevant && seen.last() != Some(&key) {
            seen.push(key);
        }
    }
    let first_connected = seen.iter().position(|k| k == "connected");
    let messages: Vec<&String> = seen.iter().filter(|k| *k != "connected").collect();
    let expected_messages: Vec<&String> = expected.iter().filter(|k| *k != "connected").collect();
    assert_eq!(
        messages, expected_messages,
        "every message, once each in order"
    );
    assert_eq!(
        first_connected,
        Some(0),
        "the connected event first, as it happened"
    );
    drop(srv);
}
