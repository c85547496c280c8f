//! Head-of-line policy: under `unordered` a poison event waits for its retries while the
//! later events of its instance go out (`strict`, the default, is tested with the
//! webhooks' order).

use serde_json::json;

use crate::common::{Auth, Backend, TestServer};
use crate::receiver::{Received, Receiver};

backend_tests!(a_poison_event_does_not_delay_the_others_when_unordered,);

async fn instance_with(
    srv: &TestServer,
    auth: &Auth,
    rx: &Receiver,
    phone: &str,
    ordering: Option<&str>,
) -> String {
    let id = srv.connected_instance(auth, "ordering", phone).await;
    let mut body = json!({"webhookUrl": rx.url(), "maxRetries": 5, "retryInterval": 3_600_000});
    if let Some(ordering) = ordering {
        body["webhookOrdering"] = json!(ordering);
    }
    let (status, answer) = srv.put(&format!("/api/instances/{id}"), auth, body).await;
    assert_eq!(status, 200, "{answer}");
    let (status, read) = srv.get(&format!("/api/instances/{id}"), auth).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(
        read["webhookOrdering"],
        ordering.unwrap_or("strict"),
        "{read}"
    );
    rx.wait_for("webhook_updated", 20, |r| {
        r.iter().any(|r| r.json()["event"] == "webhook_updated")
    })
    .await;
    id
}

async fn inbound(srv: &TestServer, auth: &Auth, id: &str, body: &str) {
    let (status, resp) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/inbound"),
            auth,
            json!({"from": "79990001144", "body": body}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
}

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

async fn a_poison_event_does_not_delay_the_others_when_unordered(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let rx = Receiver::start().await;
    rx.fail_containing("poison");
    let id = instance_with(&srv, &auth, &rx, "79110000061", Some("unordered")).await;
    inbound(&srv, &auth, &id, "poison").await;
    rx.wait_for("the poison's first attempt", 20, |r| {
        bodies(r) == ["poison"]
    })
    .await;
    // Its next attempt is an hour away; the later events do not wait for it.
    for text in ["m1", "m2", "m3"] {
        inbound(&srv, &auth, &id, text).await;
    }
    let got = rx
        .wait_for("the later messages", 20, |r| bodies(r).len() == 4)
        .await;
    assert_eq!(bodies(&got), ["poison", "m1", "m2", "m3"]);
    // The poison event is still pending, not given up.
    let (status, page) = srv
        .get(&format!("/api/instances/{id}/webhook/deliveries"), &auth)
        .await;
    assert_eq!(status, 200, "{page}");
    let outcomes: Vec<(&str, &str)> = page["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .filter(|d| d["event"] == "message_received")
        .map(|d| {
            (
                d["status"].as_str().unwrap_or(""),
                d["eventId"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        outcomes.iter().filter(|(s, _)| *s == "delivered").count(),
        3,
        "{page}"
    );
    assert_eq!(
        outcomes.iter().filter(|(s, _)| *s == "retrying").count(),
        1,
        "{page}"
    );

    // An unknown ordering is refused.
    let (status, body) = srv
        .put(
            &format!("/api/instances/{id}"),
            &auth,
            json!({"webhookOrdering": "random"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}
