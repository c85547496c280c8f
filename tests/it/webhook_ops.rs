//! Operating webhook delivery: a delivery that runs out of attempts is kept as a dead
//! letter with its last outcome, listed, retried one by one (same `X-Webhook-Id`, the
//! next attempt number) and replayed by range, in order and signed afresh; a secret is
//! rotated with an overlap during which both secrets sign.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Auth, Backend, TestServer, eventually};
use crate::receiver::{Received, Receiver};

backend_tests!(
    failed_deliveries_are_kept_listed_retried_and_replayed,
    a_rotated_secret_signs_beside_the_new_one_during_its_grace_period,
);

const OLD_SECRET: &str = "old-secret";
const NEW_SECRET: &str = "new-secret";

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

/// The dead letters of the instance, newest first.
async fn failed(srv: &TestServer, auth: &Auth, id: &str) -> Vec<Value> {
    let (status, page) = srv
        .get(
            &format!("/api/instances/{id}/webhook/deliveries?status=failed&limit=1000"),
            auth,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["deliveries"].as_array().expect("deliveries").clone()
}

/// The `message_received` requests for `message`, in the order they arrived.
fn of_message<'r>(received: &'r [Received], message: &str) -> Vec<&'r Received> {
    received
        .iter()
        .filter(|r| r.json()["data"]["messageId"] == message)
        .collect()
}

/// The message ids of the `message_received` requests from `from` on, in order.
fn messages_from(received: &[Received], from: usize) -> Vec<String> {
    received[from..]
        .iter()
        .filter(|r| r.json()["event"] == "message_received")
        .map(|r| {
            r.json()["data"]["messageId"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

fn signed_with(r: &Received, secret: &str) -> bool {
    r.header("x-webhook-signature")
        == Some(wagate_actors::webhook_queue::sign(secret, &r.body).as_str())
}

async fn failed_deliveries_are_kept_listed_retried_and_replayed(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let rx = Receiver::start().await;
    rx.fail_first(usize::MAX);
    let (status, created) = srv
        .post(
            "/api/instances",
            &auth,
            json!({"name": "dead letters", "engine": "sandbox", "webhookUrl": rx.url(),
                   "maxRetries": 1, "retryInterval": 100, "webhookSecret": OLD_SECRET}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    srv.wait_qr(&auth, &id).await;
    let (status, body) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/scan"),
            &auth,
            json!({"phone": "79110000041"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    srv.wait_status(&auth, &id, "connected").await;
    let mut sent = Vec::new();
    for i in 1..=3 {
        sent.push(inbound(&srv, &auth, &id, &format!("m{i}")).await);
    }

    // Each message is attempted twice (maxRetries 1), then kept as failed with the
    // receiver's last answer.
    let dead = eventually(30, "three failed messages", || async {
        let dead = failed(&srv, &auth, &id).await;
        let messages = dead
            .iter()
            .filter(|d| d["event"] == "message_received")
            .count();
        (messages == 3).then_some(dead)
    })
    .await;
    for d in dead.iter().filter(|d| d["event"] == "message_received") {
        assert_eq!(d["status"], "failed", "{d}");
        assert_eq!(d["attempt"], 2, "{d}");
        assert_eq!(d["httpStatus"], 500, "{d}");
        assert!(
            d["error"].as_str().is_some_and(|e| e.contains("500")),
            "{d}"
        );
    }
    let event_of = |message: &str| {
        of_message(&rx.received(), message)
            .first()
            .map(|r| r.json()["id"].as_str().expect("id").to_owned())
            .expect("the message was attempted")
    };
    let first_event = event_of(&sent[0]);
    assert_eq!(of_message(&rx.received(), &sent[0]).len(), 2);

    // The receiver is fixed; one delivery is retried: same id, attempt 3.
    rx.fail_first(0);
    let retry = format!("/api/instances/{id}/webhook/deliveries/{first_event}/retry");
    let (status, body) = srv.post(&retry, &auth, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["queued"], 1);
    let got = rx
        .wait_for("the retried delivery", 20, |r| {
            of_message(r, &sent[0]).len() == 3
        })
        .await;
    let retried = of_message(&got, &sent[0])[2];
    assert_eq!(retried.header("x-webhook-id"), Some(first_event.as_str()));
    assert_eq!(retried.header("x-webhook-attempt"), Some("3"));
    assert!(signed_with(retried, OLD_SECRET));
    eventually(
        20,
        "the retried delivery to leave the failed list",
        || async {
            let dead = failed(&srv, &auth, &id).await;
            (!dead.iter().any(|d| d["eventId"] == first_event.as_str())).then_some(())
        },
    )
    .await;
    let (status, body) = srv.post(&retry, &auth, json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );

    // A new secret; the other failed deliveries are replayed, in order, signed with it.
    let (status, body) = srv
        .put(
            &format!("/api/instances/{id}"),
            &auth,
            json!({"webhookSecret": NEW_SECRET}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let before = rx.received().len();
    let replay = format!("/api/instances/{id}/webhook/replay");
    let (status, body) = srv.post(&replay, &auth, json!({"status": "failed"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["queued"].as_u64() >= Some(2), "{body}");
    let got = rx
        .wait_for("the replayed failed deliveries", 20, |r| {
            messages_from(r, before).len() >= 2
        })
        .await;
    assert_eq!(
        messages_from(&got, before),
        sent[1..],
        "in the order of the events"
    );
    assert!(got[before..].iter().all(|r| signed_with(r, NEW_SECRET)));
    eventually(20, "no failed delivery left", || async {
        failed(&srv, &auth, &id).await.is_empty().then_some(())
    })
    .await;

    // Everything of a range, delivered before or not, again in order.
    let since = "2000-01-01T00:00:00Z";
    let before = rx.received().len();
    let (status, body) = srv
        .post(&replay, &auth, json!({"status": "all", "since": since}))
        .await;
    assert_eq!(status, 200, "{body}");
    let got = rx
        .wait_for("the replayed range", 20, |r| {
            messages_from(r, before).len() >= 3
        })
        .await;
    assert_eq!(messages_from(&got, before), sent, "every message, in order");
    assert!(got[before..].iter().all(|r| signed_with(r, NEW_SECRET)));
    // A range in the past holds nothing; bad input is a 400.
    let (status, body) = srv
        .post(
            &replay,
            &auth,
            json!({"status": "all", "until": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!((status, body["queued"].as_u64()), (200, Some(0)), "{body}");
    for bad in [
        json!({"status": "some"}),
        json!({"status": "all", "since": "yesterday"}),
        json!({"status": "all", "since": "2020-01-02T00:00:00Z", "until": "2020-01-01T00:00:00Z"}),
    ] {
        let (status, body) = srv
            .call(Method::POST, &replay, &auth, Some(bad.clone()))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("validation_error")),
            "{bad}: {body}"
        );
    }
}

/// The signatures of `X-Webhook-Signature`: the current secret's, then, while a
/// rotation's overlap lasts, the replaced one's.
fn signatures(r: &Received) -> Vec<String> {
    r.header("x-webhook-signature")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}

async fn a_rotated_secret_signs_beside_the_new_one_during_its_grace_period(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let rx = Receiver::start().await;
    let id = srv
        .connected_instance(&auth, "rotation", "79110000042")
        .await;
    let settings = |body: Value| {
        let srv = &srv;
        let auth = &auth;
        let id = &id;
        async move {
            let (status, answer) = srv.put(&format!("/api/instances/{id}"), auth, body).await;
            assert_eq!(status, 200, "{answer}");
        }
    };
    settings(json!({"webhookUrl": rx.url(), "webhookSecret": OLD_SECRET})).await;
    let sign = wagate_actors::webhook_queue::sign;
    let delivered = |text: &'static str| {
        let rx = rx.clone();
        async move {
            let got = rx
                .wait_for(text, 20, |r| {
                    r.iter().any(|r| r.json()["data"]["body"] == text)
                })
                .await;
            got.into_iter()
                .find(|r| r.json()["data"]["body"] == text)
                .expect("delivered")
        }
    };

    inbound(&srv, &auth, &id, "before").await;
    let hook = delivered("before").await;
    assert_eq!(signatures(&hook), [sign(OLD_SECRET, &hook.body)]);

    // Rotated with an hour of overlap: both sign, the new one first. It survives a
    // restart.
    settings(json!({"webhookSecret": NEW_SECRET, "webhookSecretGracePeriod": 3600})).await;
    let srv = srv.restart().await;
    srv.wait_status(&auth, &id, "connected").await;
    inbound(&srv, &auth, &id, "during").await;
    let hook = delivered("during").await;
    assert_eq!(
        signatures(&hook),
        [sign(NEW_SECRET, &hook.body), sign(OLD_SECRET, &hook.body)]
    );

    // Rotated again without overlap: only the newest signs.
    let (status, body) = srv
        .put(
            &format!("/api/instances/{id}"),
            &auth,
            json!({"webhookSettings": {"secret": "third-secret"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    inbound(&srv, &auth, &id, "after").await;
    let hook = delivered("after").await;
    assert_eq!(signatures(&hook), [sign("third-secret", &hook.body)]);

    // A grace period alone, or a too long one, is refused.
    for bad in [
        json!({"webhookSecretGracePeriod": 60}),
        json!({"webhookSecret": "fourth", "webhookSecretGracePeriod": 99_999_999}),
    ] {
        let (status, body) = srv
            .put(&format!("/api/instances/{id}"), &auth, bad.clone())
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("validation_error")),
            "{bad}: {body}"
        );
    }
}
