//! Sends Meta does not take at once, against the fake Graph API: passing errors retried
//! within the bound, the rest stored as `failed` with Meta's code and title, and the
//! `errors` of Meta's status webhooks kept the same way.

use serde_json::{Value, json};

use crate::common::Backend;
use crate::waba::{
    APP_SECRET, CUSTOMER, Desk, PHONE_NUMBER_ID, customer_writes, desk_on, meta_error,
    notification, now_secs, webhook,
};

async fn send(d: &Desk, chat: i64, text: &str) -> (u16, Value) {
    d.server
        .post(
            "/api/waba/operator/send",
            &d.owner,
            json!({"chatId": chat, "message": text}),
        )
        .await
}

async fn newest(d: &Desk, chat: i64) -> Value {
    let (code, history) = d
        .server
        .get(
            &format!("/api/waba/operator/chat/{chat}/messages"),
            &d.owner,
        )
        .await;
    assert_eq!(code, 200, "{history}");
    history["messages"][0].clone()
}

async fn status_of(d: &Desk, id: &Value) -> Value {
    let (code, body) = d
        .server
        .get(&format!("/api/waba/operator/message-status/{id}"), &d.owner)
        .await;
    assert_eq!(code, 200, "{body}");
    body
}

async fn failed_sends_keep_metas_error(backend: Backend) {
    let d = desk_on(backend).await;
    let chat = customer_writes(&d, "wamid.IN-F", now_secs()).await;

    // Meta answers 500, then 200: retried, sent.
    d.graph.answer(
        500,
        json!({"error": {"message": "An unknown error occurred", "code": 1}}),
    );
    let before = d.graph.message_bodies().len();
    let (code, sent) = send(&d, chat, "first").await;
    assert_eq!(code, 200, "{sent}");
    assert_eq!(d.graph.message_bodies().len() - before, 2);
    let status = status_of(&d, &sent["message"]["id"]).await;
    assert_eq!(status["status"], "sent");
    assert_eq!(status["error"], Value::Null);
    assert_eq!(status["whatsappMessageId"], sent["messageId"]);

    // Throughput (130429) even with a 400: retried too.
    d.graph.answer(400, meta_error(130429, "Rate limit hit"));
    let before = d.graph.message_bodies().len();
    let (code, sent) = send(&d, chat, "second").await;
    assert_eq!(code, 200, "{sent}");
    assert_eq!(d.graph.message_bodies().len() - before, 2);

    // 131047: not retried; the operator's message is kept, failed, with Meta's code.
    d.graph
        .answer(400, meta_error(131047, "Re-engagement message"));
    let before = d.graph.message_bodies().len();
    let (code, body) = send(&d, chat, "third").await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(d.graph.message_bodies().len() - before, 1);
    let failed = newest(&d, chat).await;
    assert_eq!(failed["content"], "third");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], 131047);
    let status = status_of(&d, &failed["id"]).await;
    assert_eq!(status["status"], "failed");
    assert_eq!(status["error"]["code"], 131047);
    assert!(
        status["error"]["title"]
            .as_str()
            .expect("title")
            .contains("131047"),
        "{status}"
    );

    // 5xx through every attempt: failed, without a code (Meta gave none it could act on).
    for _ in 0..3 {
        d.graph.answer(
            503,
            json!({"error": {"message": "Service temporarily unavailable", "code": 2}}),
        );
    }
    let (code, body) = send(&d, chat, "fourth").await;
    assert_eq!(code, 502, "{body}");
    let failed = newest(&d, chat).await;
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"]["title"].is_string(), "{failed}");

    // A status webhook with `errors`: stored and shown.
    let wamid = sent["messageId"].as_str().expect("wamid");
    let body = notification(
        PHONE_NUMBER_ID,
        json!({"statuses": [{"id": wamid, "status": "failed", "timestamp": now_secs().to_string(),
                             "recipient_id": CUSTOMER,
                             "errors": [{"code": 131026, "title": "Message undeliverable",
                                         "message": "Message undeliverable",
                                         "error_data": {"details": "The recipient cannot receive it"}}]}]}),
    );
    let (code, answer) = webhook(&d.server, &body, Some(APP_SECRET)).await;
    assert_eq!(code, 200, "{answer}");
    let status = status_of(&d, &sent["message"]["id"]).await;
    assert_eq!(status["status"], "failed");
    assert_eq!(
        status["error"],
        json!({"code": 131026, "title": "Message undeliverable"})
    );
}

backend_tests!(failed_sends_keep_metas_error);
