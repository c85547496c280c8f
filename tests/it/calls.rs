//! Incoming calls on the sandbox: reported as `call_received`, rejected with
//! `rejectCalls` (and answered with `rejectCallsMessage`), on both storage backends.

use serde_json::{Value, json};

use crate::common::{Backend, TestServer, eventually};

backend_tests!(
    calls_are_reported_and_rejected_with_an_answer,
    call_settings_are_checked,
);

const ACCOUNT: &str = "79001170001";
const CALLER: &str = "79001170002";
const CALLER_JID: &str = "79001170002@s.whatsapp.net";

async fn ring(srv: &TestServer, auth: &crate::common::Auth, id: &str, video: bool) -> String {
    let (status, body) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/call"),
            auth,
            json!({"from": CALLER, "video": video}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["callId"].as_str().expect("callId").to_owned()
}

async fn call_event(srv: &TestServer, auth: &crate::common::Auth, id: &str, call: &str) -> Value {
    eventually(20, "the call_received event", || async {
        let (_, body) = srv
            .get(
                &format!("/api/instances/{id}/events?types=call_received&limit=100"),
                auth,
            )
            .await;
        body["events"]
            .as_array()?
            .iter()
            .find(|e| e["data"]["callId"] == call)
            .map(|e| e["data"].clone())
    })
    .await
}

/// Without `rejectCalls` a call is only reported; with it, it is rejected and the
/// caller gets the instance's answer in their chat.
async fn calls_are_reported_and_rejected_with_an_answer(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let id = srv.connected_instance(&auth, "desk", ACCOUNT).await;

    let call = ring(&srv, &auth, &id, false).await;
    let seen = call_event(&srv, &auth, &id, &call).await;
    assert_eq!(
        (
            &seen["remoteJid"],
            &seen["rejected"],
            &seen["video"],
            &seen["isGroup"]
        ),
        (
            &json!(CALLER_JID),
            &json!(false),
            &json!(false),
            &json!(false)
        ),
        "{seen}"
    );

    let (status, body) = srv
        .put(
            &format!("/api/instances/{id}"),
            &auth,
            json!({"rejectCalls": true, "rejectCallsMessage": "Please write instead."}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, shown) = srv.get(&format!("/api/instances/{id}"), &auth).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["rejectCalls"], true, "{shown}");
    assert_eq!(
        shown["rejectCallsMessage"], "Please write instead.",
        "{shown}"
    );

    let call = ring(&srv, &auth, &id, true).await;
    let seen = call_event(&srv, &auth, &id, &call).await;
    assert_eq!(
        (&seen["rejected"], &seen["video"]),
        (&json!(true), &json!(true)),
        "{seen}"
    );
    let answer = eventually(20, "the answer to the caller", || async {
        let (_, body) = srv
            .get(
                &format!("/api/instances/{id}/chats/{CALLER}/messages?limit=10"),
                &auth,
            )
            .await;
        body["messages"]
            .as_array()?
            .iter()
            .find(|m| m["fromMe"] == true)
            .cloned()
    })
    .await;
    assert_eq!(answer["content"], "Please write instead.", "{answer}");

    // An empty message removes the answer; the rejection stays.
    let (status, body) = srv
        .put(
            &format!("/api/instances/{id}"),
            &auth,
            json!({"rejectCallsMessage": ""}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, shown) = srv.get(&format!("/api/instances/{id}"), &auth).await;
    assert_eq!(
        (&shown["rejectCalls"], &shown["rejectCallsMessage"]),
        (&json!(true), &Value::Null)
    );
}

/// Bad settings and bad simulated calls are JSON 400s; a call from a blocked number
/// does not come through.
async fn call_settings_are_checked(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let id = srv.connected_instance(&auth, "desk", ACCOUNT).await;
    for body in [
        json!({"rejectCalls": "yes"}),
        json!({"rejectCallsMessage": "x".repeat(4097)}),
    ] {
        let (status, answer) = srv.put(&format!("/api/instances/{id}"), &auth, body).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some("validation_error")),
            "{answer}"
        );
    }
    let (status, answer) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/call"),
            &auth,
            json!({"from": "120363000000000001@g.us"}),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("validation_error")),
        "{answer}"
    );

    let (status, answer) = srv
        .post(
            &format!("/api/whatsapp/{id}/contacts/{CALLER}/block"),
            &auth,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/call"),
            &auth,
            json!({"from": CALLER}),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (403, Some("forbidden")),
        "{answer}"
    );
}
