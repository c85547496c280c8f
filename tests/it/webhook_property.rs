//! A property of webhook delivery, over generated runs: whatever the interleaving of
//! events, receiver failures and server restarts, every stored event the instance's
//! settings want reaches the receiver at least once, first in the order of the events
//! under `strict`, and every request carries a valid signature.
//!
//! The runs come from a fixed seed (the same cases every time) and are few and short:
//! retries are 100 ms apart and a receiver fails at most a few requests in a row, so a
//! run ends within seconds. They run on both storage backends.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

use crate::common::{Auth, Backend, TestServer, eventually};
use crate::receiver::{Received, Receiver};

backend_tests!(
    every_stored_event_is_delivered_in_order_under_strict,
    every_stored_event_is_delivered_under_unordered,
);

const SECRET: &str = "property-secret";
/// Generated runs per ordering.
const CASES: usize = 3;

#[derive(Debug, Clone)]
enum Step {
    /// This many inbound messages, one after the other.
    Inbound(usize),
    /// The receiver answers 500 to this many requests from now on.
    Fail(usize),
    /// The server stops and starts again (instances reconnect by themselves).
    Restart,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        4 => (1usize..=3).prop_map(Step::Inbound),
        2 => (1usize..=4).prop_map(Step::Fail),
        1 => Just(Step::Restart),
    ];
    proptest::collection::vec(step, 3..=7)
}

/// The runs, the same every time.
fn cases() -> Vec<Vec<Step>> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let cases: Vec<Vec<Step>> = (0..CASES)
        .map(|_| {
            steps()
                .new_tree(&mut runner)
                .expect("a generated run")
                .current()
        })
        .collect();
    // The seed covers every kind of step.
    let all: Vec<&Step> = cases.iter().flatten().collect();
    assert!(all.iter().any(|s| matches!(s, Step::Restart)), "{cases:?}");
    assert!(all.iter().any(|s| matches!(s, Step::Fail(_))), "{cases:?}");
    cases
}

/// An event as stored and as delivered: its type, timestamp and data (without the
/// instance id, which only the delivery carries).
fn key(kind: &Value, timestamp: &Value, data: &Value) -> Value {
    let mut data = data.clone();
    if let Some(fields) = data.as_object_mut() {
        fields.remove("instanceId");
    }
    json!([kind, timestamp, data])
}

fn delivered_key(r: &Received) -> Value {
    let body = r.json();
    key(&body["event"], &body["timestamp"], &body["data"])
}

/// The stored events the instance wants, oldest first: everything from the
/// `webhook_updated` that set its URL on, but the message statuses (their notify flags
/// are off by default).
async fn wanted(srv: &TestServer, auth: &Auth, id: &str) -> Vec<Value> {
    let (status, body) = srv
        .get(&format!("/api/instances/{id}/events?limit=1000"), auth)
        .await;
    assert_eq!(status, 200, "{body}");
    body["events"]
        .as_array()
        .expect("events")
        .iter()
        .skip_while(|e| e["type"] != "webhook_updated")
        .filter(|e| e["type"] != "message_status")
        .map(|e| key(&e["type"], &e["timestamp"], &e["data"]))
        .collect()
}

async fn run(backend: Backend, case: usize, steps: &[Step], ordering: &str) {
    let mut srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let rx = Receiver::start().await;
    let id = srv
        .connected_instance(&auth, "property", &format!("7911000008{case}"))
        .await;
    let (status, body) = srv
        .put(
            &format!("/api/instances/{id}"),
            &auth,
            json!({"webhookUrl": rx.url(), "webhookSecret": SECRET, "maxRetries": 20,
                   "retryInterval": 100, "webhookOrdering": ordering}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut sent = 0;
    for step in steps {
        match step {
            Step::Inbound(n) => {
                for _ in 0..*n {
                    sent += 1;
                    let (status, body) = srv
                        .post(
                            &format!("/api/sandbox/instances/{id}/inbound"),
                            &auth,
                            json!({"from": "79990001166", "body": format!("m{sent}")}),
                        )
                        .await;
                    assert_eq!(status, 200, "{body}");
                }
            }
            Step::Fail(n) => rx.fail_first(*n),
            Step::Restart => {
                srv = srv.restart().await;
                srv.wait_status(&auth, &id, "connected").await;
            }
        }
    }

    // Everything wanted arrives and the outbox drains without giving any up.
    let what = format!("case {case} ({backend:?}, {ordering}, {steps:?}) to be delivered");
    let expected = eventually(60, &what, || async {
        let expected = wanted(&srv, &auth, &id).await;
        let got: Vec<Value> = rx.received().iter().map(delivered_key).collect();
        let backlog = srv.backlog_nothing_given_up(&auth, &id, &what).await;
        let drained = backlog["pending"] == 0;
        (drained && expected.iter().all(|e| got.contains(e))).then_some(expected)
    })
    .await;
    let messages = expected
        .iter()
        .filter(|e| e[0] == "message_received")
        .count();
    assert_eq!(messages, sent, "{what}: every message was stored");

    let received = rx.received();
    for r in &received {
        assert_eq!(
            r.header("x-webhook-signature"),
            Some(wagate_actors::webhook_queue::sign(SECRET, &r.body).as_str()),
            "{what}: a valid signature"
        );
    }
    if ordering == "strict" {
        let mut first_seen: Vec<Value> = Vec::new();
        for k in received.iter().map(delivered_key) {
            if expected.contains(&k) && !first_seen.contains(&k) {
                first_seen.push(k);
            }
        }
        assert_eq!(first_seen, expected, "{what}: in the order of the events");
    }
}

async fn every_stored_event_is_delivered_in_order_under_strict(backend: Backend) {
    for (case, steps) in cases().iter().enumerate() {
        run(backend, case, steps, "strict").await;
    }
}

async fn every_stored_event_is_delivered_under_unordered(backend: Backend) {
    for (case, steps) in cases().iter().enumerate() {
        run(backend, case, steps, "unordered").await;
    }
}
