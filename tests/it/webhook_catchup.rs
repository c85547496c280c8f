//! No stored event is ever skipped by the webhook queue: an outbox that refuses writes
//! (a full disk, a broken sled file) delays webhooks but loses none, and a server that
//! stopped between storing events and queueing them delivers them after the restart —
//! also for an instance whose events never reached the outbox at all. Nor is one given
//! up because a delivery worker read the instance before the change that made it wanted.

use serde_json::{Value, json};

use crate::common::{Auth, Backend, TestServer, eventually};
use crate::outbox_fault::OutboxFault;
use crate::receiver::{Received, Receiver};

backend_tests!(
    an_outbox_that_refuses_writes_delays_webhooks_but_skips_none,
    events_that_never_reached_the_outbox_are_delivered_after_a_restart,
    a_worker_that_read_the_instance_before_delivery_was_switched_on_delivers_the_next_job,
);

const SECRET: &str = "catch-up-secret";

/// A sandbox instance whose webhooks go to `url` (signed), connected as `phone`.
async fn hooked(srv: &TestServer, auth: &Auth, url: &str, phone: &str) -> String {
    connected(
        srv,
        auth,
        json!({"name": phone, "engine": "sandbox", "webhookUrl": url,
               "retryInterval": 100, "maxRetries": 5,
               "webhookSecret": SECRET}),
        phone,
    )
    .await
}

/// A sandbox instance created with `settings`, connected as `phone`.
async fn connected(srv: &TestServer, auth: &Auth, settings: Value, phone: &str) -> String {
    let (status, created) = srv.post("/api/instances", auth, settings).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    srv.wait_qr(auth, &id).await;
    let (status, body) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/scan"),
            auth,
            json!({"phone": phone}),
        )
        .await;
    assert_eq!(status, 200, "scan: {body}");
    srv.wait_status(auth, &id, "connected").await;
    id
}

async fn inbound(srv: &TestServer, auth: &Auth, id: &str, body: &str) -> String {
    let (status, resp) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/inbound"),
            auth,
            json!({"from": "79990001122", "body": body}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    resp["messageId"].as_str().expect("messageId").to_owned()
}

/// The instance's stored `connected` and `message_received` events, oldest first, once
/// there are `count` of them.
async fn stored_ids(srv: &TestServer, auth: &Auth, id: &str, count: usize) -> Vec<String> {
    let path = format!("/api/instances/{id}/events?limit=1000&types=connected,message_received");
    let events = eventually(20, "the stored events", || async {
        let (_, body) = srv.get(&path, auth).await;
        let events = body["events"].as_array()?.clone();
        (events.len() == count).then_some(events)
    })
    .await;
    // Oldest first, as the endpoint lists them.
    events
        .iter()
        .map(|e| key(e["type"].as_str().expect("type"), e))
        .collect()
}

/// What identifies an event both in storage and in a webhook: its type, time and
/// message id.
fn key(kind: &str, event: &Value) -> String {
    format!(
        "{kind} {} {}",
        event["timestamp"].as_str().expect("timestamp"),
        event["data"]["messageId"].as_str().unwrap_or("-")
    )
}

/// The `connected` and `message_received` webhooks, in the order they first arrived (a
/// retried delivery repeats one), each checked for a valid signature.
fn arrived_ids(received: &[Received]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for r in received {
        let body: Value = r.json();
        if body["event"] != "connected" && body["event"] != "message_received" {
            continue;
        }
        assert_eq!(
            r.header("x-webhook-signature"),
            Some(wagate_actors::webhook_queue::sign(SECRET, &r.body).as_str()),
            "every delivery is signed over its exact body"
        );
        assert_eq!(r.header("x-webhook-id"), body["id"].as_str());
        let id = key(body["event"].as_str().expect("event"), &body);
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

async fn an_outbox_that_refuses_writes_delays_webhooks_but_skips_none(backend: Backend) {
    let fault = OutboxFault::default();
    let srv = TestServer::start_with_outbox_fault(backend, &[], &fault).await;
    let auth = srv.admin();
    let rx = Receiver::start().await;
    let id = hooked(&srv, &auth, &rx.url(), "79110000031").await;
    rx.wait_for("the connected webhook", 20, |r| {
        r.iter().any(|r| r.json()["event"] == "connected")
    })
    .await;

    // The outbox breaks: these events are stored, but cannot be queued.
    fault.refuse();
    let mut sent = Vec::new();
    for i in 1..=3 {
        sent.push(inbound(&srv, &auth, &id, &format!("while broken {i}")).await);
    }
    let before = stored_ids(&srv, &auth, &id, 4).await;
    // The queue tried, failed, and tried again (its catch-up) — and still nothing is lost.
    eventually(
        20,
        "the queue to retry against the broken outbox",
        || async { (fault.refused() >= 2).then_some(()) },
    )
    .await;

    // It heals; the next event must not jump the queue past the three stuck ones.
    fault.heal();
    sent.push(inbound(&srv, &auth, &id, "after healing").await);
    let stored = stored_ids(&srv, &auth, &id, 5).await;
    assert_eq!(stored[..4], before[..], "events are stored in order");
    let got = rx
        .wait_for("every message's webhook", 30, |r| {
            sent.iter().all(|m| {
                r.iter()
                    .any(|r| r.json()["data"]["messageId"] == m.as_str())
            })
        })
        .await;
    assert_eq!(
        arrived_ids(&got),
        stored,
        "every stored event became a webhook, in the order of the events"
    );
}

async fn events_that_never_reached_the_outbox_are_delivered_after_a_restart(backend: Backend) {
    // From the very first event, nothing reaches the outbox: the instance never gets a
    // cursor there, as when a server dies between storing its first events and queueing
    // them.
    let fault = OutboxFault::refusing();
    let srv = TestServer::start_with_outbox_fault(backend, &[], &fault).await;
    let auth = srv.admin();
    let rx = Receiver::start().await;
    let id = hooked(&srv, &auth, &rx.url(), "79110000032").await;
    let mut sent = Vec::new();
    for i in 1..=3 {
        sent.push(inbound(&srv, &auth, &id, &format!("before the crash {i}")).await);
    }
    let stored = stored_ids(&srv, &auth, &id, 4).await;
    eventually(20, "the queue to fail on the outbox", || async {
        (fault.refused() >= 2).then_some(())
    })
    .await;
    assert!(
        rx.received().is_empty(),
        "nothing could be delivered: {:?}",
        rx.received()
    );

    // Stopped; the outbox works after the restart (the stopped server cannot deliver).
    let srv = srv.restart_after(|| fault.heal()).await;
    let got = rx
        .wait_for("every message's webhook after the restart", 30, |r| {
            sent.iter().all(|m| {
                r.iter()
                    .any(|r| r.json()["data"]["messageId"] == m.as_str())
            })
        })
        .await;
    // The restarted instance's own `connected` may follow: it happened later.
    let arrived = arrived_ids(&got);
    assert_eq!(
        arrived.get(..stored.len()),
        Some(&stored[..]),
        "caught up from the instance's first event, in order: {arrived:?}"
    );
    drop(srv);
}

async fn a_worker_that_read_the_instance_before_delivery_was_switched_on_delivers_the_next_job(
    backend: Backend,
) {
    let fault = OutboxFault::default();
    let srv = TestServer::start_with_outbox_fault(backend, &[], &fault).await;
    let auth = srv.admin();
    let rx = Receiver::start().await;
    // Delivery is off: the instance's events queue nothing, but a test webhook goes out
    // all the same. It starts the delivery worker, which reads the instance (delivery
    // off) and is held before it reads its jobs.
    let id = connected(
        &srv,
        &auth,
        json!({"name": "late webhook", "engine": "sandbox", "webhookUrl": rx.url(),
               "webhookEnabled": false, "retryInterval": 100}),
        "79110000033",
    )
    .await;
    fault.hold_pending();
    let (status, body) = srv
        .post(
            &format!("/api/instances/{id}/webhook/test"),
            &auth,
            json!({}),
        )
        .await;
    assert!(status < 300, "{status} {body}");
    fault.held().await;

    // Meanwhile delivery is switched on: its `webhook_updated` is the next job.
    let (status, body) = srv
        .put(
            &format!("/api/instances/{id}"),
            &auth,
            json!({"webhookEnabled": true, "retryInterval": 100}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let what = "the webhook_updated job";
    eventually(20, what, || async {
        let backlog = srv.backlog_nothing_given_up(&auth, &id, what).await;
        (backlog["pending"] == 2).then_some(())
    })
    .await;

    // The worker goes on and finds that job: it goes out with the settings it was
    // queued for, not as "webhooks are disabled".
    fault.release();
    let what = "the webhook_updated webhook";
    eventually(20, what, || async {
        srv.backlog_nothing_given_up(&auth, &id, what).await;
        let received = rx.received();
        received
            .iter()
            .any(|r| r.json()["event"] == "webhook_updated")
            .then_some(())
    })
    .await;
}
