//! Pausing webhook delivery: while paused, events are queued durably (across a restart)
//! and nothing is sent; a resume delivers the backlog in order. An endpoint whose every
//! attempt fails for `WEBHOOK_AUTO_PAUSE_MS` is paused by the server itself, with an
//! activity entry and a `webhook_paused` event, and is no longer attempted.

use serde_json::{Value, json};

use crate::common::{Auth, Backend, TestServer, eventually, read_sse};
use crate::receiver::{Received, Receiver};

backend_tests!(
    a_paused_webhook_queues_and_a_resume_delivers_in_order,
    an_endpoint_failing_too_long_is_paused_automatically,
);

async fn inbound(srv: &TestServer, auth: &Auth, id: &str, body: &str) {
    let (status, resp) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/inbound"),
            auth,
            json!({"from": "79990001133", "body": body}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
}

async fn instance(srv: &TestServer, auth: &Auth, id: &str) -> Value {
    let (status, body) = srv.get(&format!("/api/instances/{id}"), auth).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn set_paused(srv: &TestServer, auth: &Auth, id: &str, paused: bool) {
    let action = if paused { "pause" } else { "resume" };
    let (status, body) = srv
        .post(
            &format!("/api/instances/{id}/webhook/{action}"),
            auth,
            json!({}),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({"paused": paused})));
}

/// The bodies of the `message_received` requests, in the order they arrived.
fn bodies(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .filter(|r| r.json()["event"] == "message_received")
        .map(|r| {
            r.json()["data"]["body"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// How many stored events of `kind` the instance has.
async fn stored(srv: &TestServer, auth: &Auth, id: &str, kind: &str) -> usize {
    let (status, body) = srv
        .get(&format!("/api/instances/{id}/events?limit=1000"), auth)
        .await;
    assert_eq!(status, 200, "{body}");
    body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == kind)
        .count()
}

async fn a_paused_webhook_queues_and_a_resume_delivers_in_order(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let rx = Receiver::start().await;
    let id = srv.connected_instance(&auth, "pause", "79110000051").await;
    let (status, body) = srv
        .put(
            &format!("/api/instances/{id}"),
            &auth,
            json!({"webhookUrl": rx.url()}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(instance(&srv, &auth, &id).await["webhookPaused"], false);
    inbound(&srv, &auth, &id, "before").await;
    rx.wait_for("the first message", 20, |r| bodies(r) == ["before"])
        .await;

    set_paused(&srv, &auth, &id, true).await;
    set_paused(&srv, &auth, &id, true).await;
    assert_eq!(instance(&srv, &auth, &id).await["webhookPaused"], true);
    for text in ["p1", "p2", "p3"] {
        inbound(&srv, &auth, &id, text).await;
    }
    eventually(20, "the paused messages stored", || async {
        (stored(&srv, &auth, &id, "message_received").await == 4).then_some(())
    })
    .await;

    // The pause and the queued events survive a restart.
    let srv = srv.restart().await;
    srv.wait_status(&auth, &id, "connected").await;
    assert_eq!(instance(&srv, &auth, &id).await["webhookPaused"], true);
    assert_eq!(
        bodies(&rx.received()),
        ["before"],
        "nothing sent while paused"
    );
    // The pause event and the three messages wait (and what the restart published).
    let (status, backlog) = srv
        .get(&format!("/api/instances/{id}/webhook/status"), &auth)
        .await;
    assert_eq!(status, 200, "{backlog}");
    assert_eq!(backlog["paused"], true, "{backlog}");
    assert_eq!(backlog["ordering"], "strict", "{backlog}");
    assert!(
        backlog["pending"].as_u64().is_some_and(|n| n >= 4),
        "{backlog}"
    );
    assert_eq!(backlog["failed"], 0, "{backlog}");
    assert!(backlog["oldestPendingAt"].is_string(), "{backlog}");
    let (status, list) = srv.get("/api/instances", &auth).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["instances"][0]["webhookPaused"], true, "{list}");

    set_paused(&srv, &auth, &id, false).await;
    let got = rx
        .wait_for("the backlog", 20, |r| bodies(r).len() == 4)
        .await;
    assert_eq!(bodies(&got), ["before", "p1", "p2", "p3"], "in order");
    assert_eq!(instance(&srv, &auth, &id).await["webhookPaused"], false);
    let actions = srv.actions(&auth, &id).await;
    let paused_at = actions.iter().position(|a| a == "webhook_paused");
    let resumed_at = actions.iter().position(|a| a == "webhook_resumed");
    assert!(
        matches!((paused_at, resumed_at), (Some(p), Some(r)) if p < r),
        "{actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "webhook_paused").count(),
        1,
        "pausing a paused instance changes nothing: {actions:?}"
    );

    // Another user's instance is not found; an unknown one neither.
    let (_, key, _) = srv.new_user("pause-other@example.com", "user").await;
    let other = Auth::Key(key);
    let (status, body) = srv
        .post(
            &format!("/api/instances/{id}/webhook/pause"),
            &other,
            json!({}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
}

async fn an_endpoint_failing_too_long_is_paused_automatically(backend: Backend) {
    let srv = TestServer::start_on(backend, &[("webhook_auto_pause_ms", "300")]).await;
    let auth = srv.admin();
    let rx = Receiver::start().await;
    rx.fail_first(usize::MAX);
    let id = srv
        .connected_instance(&auth, "auto pause", "79110000052")
        .await;
    let (status, body) = srv
        .put(
            &format!("/api/instances/{id}"),
            &auth,
            json!({"webhookUrl": rx.url(), "maxRetries": 20, "retryInterval": 100}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let stream = srv
        .request(
            reqwest::Method::GET,
            &format!("/api/instances/{id}/events/stream"),
            &auth,
        )
        .send()
        .await
        .expect("sse");
    inbound(&srv, &auth, &id, "doomed").await;

    let got = read_sse(stream, 2).await;
    let types: Vec<&str> = got.iter().filter_map(|(_, e)| e["type"].as_str()).collect();
    assert_eq!(types, ["message_received", "webhook_paused"], "{got:?}");
    let paused = &got[1].1["data"];
    assert_eq!(paused["reason"], "failing", "{paused}");
    assert!(paused["failingSince"].is_string(), "{paused}");
    assert_eq!(instance(&srv, &auth, &id).await["webhookPaused"], true);
    assert!(
        srv.actions(&auth, &id)
            .await
            .contains(&"webhook_paused".to_owned())
    );
    // Attempts stopped before the retries ran out: the message is still pending, not a
    // dead letter.
    let (status, page) = srv
        .get(
            &format!("/api/instances/{id}/webhook/deliveries?status=failed"),
            &auth,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["pagination"]["total"], 0, "{page}");

    // The endpoint is fixed and delivery resumed: what was pending (the settings change
    // first, then the message), then the pause event itself, go out in order.
    let before = rx.received().len();
    rx.fail_first(0);
    set_paused(&srv, &auth, &id, false).await;
    let got = rx
        .wait_for("the backlog", 20, |r| {
            r[before..]
                .iter()
                .any(|r| r.json()["event"] == "webhook_paused")
        })
        .await;
    let delivered: Vec<String> = got[before..]
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        delivered,
        ["webhook_updated", "message_received", "webhook_paused"]
    );
    assert_eq!(instance(&srv, &auth, &id).await["webhookPaused"], false);
}
