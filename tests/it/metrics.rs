//! `GET /metrics`: after a scripted workload (a sandbox instance paired, a message sent
//! and one received, a webhook delivered, a crash), the exposition shows each of them,
//! labelled by route templates and never by raw ids (but the webhook metrics per
//! instance); the webhook backlog of an instance (pending, the head's age, failed) and
//! its deliveries by outcome and latency.

use serde_json::json;

use crate::common::{Auth, Backend, TestServer, eventually};
use crate::receiver::Receiver;

backend_tests!(webhook_metrics_per_instance,);

/// One sample line of the exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the text format's samples (comments skipped); panics on a malformed line.
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = line[..name_end].to_owned();
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            let mut key = String::new();
            let end = loop {
                let (i, c) = chars.next().unwrap_or_else(|| panic!("unclosed: {line}"));
                match c {
                    '}' => break i,
                    ',' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                        let mut value = String::new();
                        loop {
                            let (_, c) = chars.next().unwrap_or_else(|| panic!("{line}"));
                            match c {
                                '"' => break,
                                '\\' => match chars.next().map(|(_, c)| c) {
                                    Some('n') => value.push('\n'),
                                    Some(c) => value.push(c),
                                    None => panic!("{line}"),
                                },
                                c => value.push(c),
                            }
                        }
                        labels.push((std::mem::take(&mut key), value));
                    }
                    c => key.push(c),
                }
            };
            rest = &inner[end + 1..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|e| panic!("{line}: {e}")),
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

async fn scrape(srv: &TestServer) -> Vec<Sample> {
    let resp = srv
        .request(reqwest::Method::GET, "/metrics", &Auth::None)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = resp.text().await.expect("body");
    assert!(text.contains("# HELP wagate_http_requests "), "{text}");
    parse(&text)
}

/// The value of the one sample named `name` with all of `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .collect();
    match matching.as_slice() {
        [] => None,
        [one] => Some(one.value),
        many => panic!("{} samples of {name} {labels:?}: {many:?}", many.len()),
    }
}

/// Sum over every sample named `name` with all of `labels`.
fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

#[tokio::test]
async fn metrics_after_a_scripted_workload() {
    let srv = TestServer::start().await;
    let auth = srv.admin();
    let rx = Receiver::start().await;

    // Before any traffic: the exposition is served without authentication.
    let first = scrape(&srv).await;
    assert_eq!(
        value(
            &first,
            "wagate_supervisor_restarts_total",
            &[] as &[(&str, &str)]
        ),
        Some(0.0)
    );

    let id = srv
        .connected_instance(&auth, "metrics", "79110000042")
        .await;
    let (status, body) = srv
        .put(
            &format!("/api/instances/{id}"),
            &auth,
            json!({"webhookUrl": rx.url(), "webhookEnabled": true,
                   "webhookSettings": {"notifySent": true, "notifyReceived": true}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = srv
        .post(
            &format!("/api/whatsapp/{id}/send"),
            &auth,
            json!({"phone": "79990001122", "message": "hi"}),
        )
        .await;
    assert!((200..300).contains(&status), "send: {status} {body}");
    let (status, body) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/inbound"),
            &auth,
            json!({"from": "79990001122", "body": "hello", "pushName": "Ivan"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    rx.wait_for("message_received", 20, |r| {
        r.iter().any(|r| r.json()["event"] == "message_received")
    })
    .await;
    let (status, _) = srv.get("/no/such/endpoint", &Auth::None).await;
    assert_eq!(status, 404);

    let samples = eventually(20, "a delivered webhook in the metrics", || async {
        let samples = scrape(&srv).await;
        let delivered = value(
            &samples,
            "wagate_webhook_deliveries_total",
            &[("result", "delivered")],
        )?;
        (delivered >= 1.0).then_some(samples)
    })
    .await;

    // HTTP requests by route template and status, with their latency.
    let requests = "wagate_http_requests_total";
    for (method, route, status) in [
        ("POST", "/api/instances", "201"),
        ("POST", "/api/sandbox/instances/{instanceId}/scan", "200"),
        ("PUT", "/api/instances/{instanceId}", "200"),
        ("POST", "/api/sandbox/instances/{instanceId}/inbound", "200"),
        ("GET", "/api/instances/{instanceId}/status", "200"),
        ("GET", "/metrics", "200"),
        ("GET", "unmatched", "404"),
    ] {
        let n = value(
            &samples,
            requests,
            &[("method", method), ("route", route), ("status", status)],
        )
        .unwrap_or_else(|| panic!("no {requests} for {method} {route} {status}"));
        assert!(n >= 1.0, "{method} {route} {status}: {n}");
    }
    assert_eq!(
        sum(
            &samples,
            requests,
            &[
                ("route", "/api/whatsapp/{instanceId}/send"),
                ("method", "POST")
            ]
        ),
        1.0
    );
    let qr = sum(
        &samples,
        requests,
        &[("route", "/api/instances/{instanceId}/qr")],
    );
    assert!(qr >= 1.0, "qr requests: {qr}");
    let scans = value(
        &samples,
        "wagate_http_request_duration_seconds_count",
        &[
            ("method", "POST"),
            ("route", "/api/sandbox/instances/{instanceId}/scan"),
        ],
    );
    assert_eq!(scans, Some(1.0));
    let inf = value(
        &samples,
        "wagate_http_request_duration_seconds_bucket",
        &[
            ("method", "POST"),
            ("route", "/api/sandbox/instances/{instanceId}/scan"),
            ("le", "+Inf"),
        ],
    );
    assert_eq!(inf, Some(1.0));

    // Instances by status, messages, webhooks.
    assert_eq!(
        value(&samples, "wagate_instances", &[("status", "connected")]),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "wagate_messages_total", &[("direction", "in")]),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "wagate_messages_total", &[("direction", "out")]),
        Some(1.0)
    );
    assert!(
        value(
            &samples,
            "wagate_webhook_queue_depth",
            &[] as &[(&str, &str)]
        )
        .is_some(),
        "no queue depth"
    );
    assert!(
        value(
            &samples,
            "wagate_webhook_deliveries_total",
            &[("result", "failed")]
        )
        .is_some()
    );

    // Storage latency has samples, by operation.
    let storage_calls = sum(
        &samples,
        "wagate_storage_operation_duration_seconds_count",
        &[],
    );
    assert!(storage_calls >= 1.0, "storage calls: {storage_calls}");
    assert!(
        sum(
            &samples,
            "wagate_storage_operation_duration_seconds_count",
            &[("operation", "create_instance")]
        ) >= 1.0
    );

    // A crash is restarted by the supervisor, and counted.
    let (status, body) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/fault"),
            &auth,
            json!({"kind": "crash"}),
        )
        .await;
    assert!((200..300).contains(&status), "fault: {status} {body}");
    let after = eventually(20, "a supervisor restart in the metrics", || async {
        let samples = scrape(&srv).await;
        let restarts = value(
            &samples,
            "wagate_supervisor_restarts_total",
            &[] as &[(&str, &str)],
        )?;
        (restarts >= 1.0).then_some(samples)
    })
    .await;
    srv.wait_status(&auth, &id, "connected").await;

    // No raw id (instance, message, user) ever becomes a label value, but the `instance`
    // label of the per-instance webhook metrics, which names the instance on purpose.
    for sample in samples.iter().chain(&after) {
        for (key, value) in &sample.labels {
            if key == "instance" && sample.name.starts_with("wagate_webhook_") {
                assert_eq!(value, &id, "{}", sample.name);
                continue;
            }
            assert!(
                !value.contains(&id) && !value.contains("79110000042"),
                "raw value in {} {key}={value}",
                sample.name
            );
        }
        if let Some(route) = sample.label("route") {
            assert!(
                route == "unmatched" || route.starts_with('/'),
                "route label {route}"
            );
        }
    }
    let dynamic_routes: Vec<&str> = after
        .iter()
        .filter_map(|s| s.label("route"))
        .filter(|r| r.contains("/api/instances/") || r.contains("/api/sandbox/"))
        .collect();
    assert!(
        dynamic_routes.iter().all(|r| r.contains("{instanceId}")),
        "{dynamic_routes:?}"
    );
}

async fn webhook_metrics_per_instance(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let rx = Receiver::start().await;
    let id = srv.connected_instance(&auth, "hooks", "79110000071").await;
    let (status, body) = srv
        .put(
            &format!("/api/instances/{id}"),
            &auth,
            json!({"webhookUrl": rx.url(), "maxRetries": 0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let inbound = |text: &'static str| {
        let (srv, auth, id) = (&srv, &auth, &id);
        async move {
            let (status, body) = srv
                .post(
                    &format!("/api/sandbox/instances/{id}/inbound"),
                    auth,
                    json!({"from": "79990001155", "body": text}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    let instance = [("instance", id.as_str())];

    // Delivered: counted by outcome, with its latency.
    inbound("ok").await;
    rx.wait_for("the message", 20, |r| {
        r.iter().any(|r| r.json()["event"] == "message_received")
    })
    .await;
    eventually(20, "the delivery counted", || async {
        let samples = scrape(&srv).await;
        let delivered = value(
            &samples,
            "wagate_webhook_instance_deliveries_total",
            &[("instance", id.as_str()), ("result", "delivered")],
        )?;
        let timed = value(
            &samples,
            "wagate_webhook_delivery_duration_seconds_count",
            &instance,
        )?;
        (delivered >= 2.0 && timed >= 2.0).then_some(())
    })
    .await;

    // A failure with no retry left: a dead letter.
    rx.fail_first(1);
    inbound("lost").await;
    eventually(20, "the failed delivery", || async {
        let samples = scrape(&srv).await;
        let failed = value(
            &samples,
            "wagate_webhook_instance_deliveries_total",
            &[("instance", id.as_str()), ("result", "failed")],
        )?;
        let dead = value(&samples, "wagate_webhook_instance_failed", &instance)?;
        (failed == 1.0 && dead == 1.0).then_some(())
    })
    .await;

    // Paused: the backlog grows, with the age of its head.
    let (status, body) = srv
        .post(
            &format!("/api/instances/{id}/webhook/pause"),
            &auth,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    inbound("one").await;
    inbound("two").await;
    let samples = eventually(20, "two pending deliveries", || async {
        let samples = scrape(&srv).await;
        let pending = value(&samples, "wagate_webhook_instance_queue_depth", &instance)?;
        let total = value(&samples, "wagate_webhook_queue_depth", &[])?;
        // The pause event itself waits too; the total agrees.
        (pending == 3.0 && total == 3.0).then_some(samples)
    })
    .await;
    let age = value(
        &samples,
        "wagate_webhook_instance_oldest_pending_seconds",
        &instance,
    )
    .expect("the head's age");
    assert!(age >= 0.0, "{age}");
}
