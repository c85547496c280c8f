//! Bad input of every kind gets a JSON `{error, code}` with the right status, never a 500.

use reqwest::Method;
use serde_json::json;

use crate::common::{Auth, Backend, TestServer, read};

backend_tests!(health_and_readiness,);

async fn health_and_readiness(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let (status, body) = srv.get("/healthz", &Auth::None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = srv.get("/readyz", &Auth::None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["storage"], backend.name());
}

#[tokio::test]
async fn malformed_bodies() {
    let srv = TestServer::start().await;
    let admin = srv.admin();
    let send_raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut rb = srv.request(Method::POST, "/api/users", &admin).body(body);
        if let Some(ct) = content_type {
            rb = rb.header("content-type", ct);
        }
        async move { read(rb.send().await.expect("send")).await }
    };
    // Not JSON at all.
    let (status, body) = send_raw("{not json", Some("application/json")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_json");
    // No content type.
    let (status, body) = send_raw(r#"{"email":"a@b.c","password":"password1"}"#, None).await;
    assert_eq!(status, 400, "{body}");
    // Missing field: 400 naming it.
    let (status, body) = send_raw(r#"{"email":"a@b.c"}"#, Some("application/json")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("password")),
        "{body}"
    );
    // Wrong type: 400 naming it.
    let (status, body) = send_raw(
        r#"{"email":"a@b.c","password":12345678}"#,
        Some("application/json"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("password")),
        "{body}"
    );
    // Unknown enum value.
    let (status, body) = send_raw(
        r#"{"email":"a@b.c","password":"password1","role":"root"}"#,
        Some("application/json"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("role")),
        "{body}"
    );
    // Unknown field.
    let (status, body) = send_raw(
        r#"{"email":"a@b.c","password":"password1","isAdmin":true}"#,
        Some("application/json"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("isAdmin")),
        "{body}"
    );
    // Invalid values: 400 naming the field.
    for (payload, field) in [
        (
            json!({"email": "not-an-email", "password": "password1"}),
            "email",
        ),
        (json!({"email": "a@b.c", "password": "123"}), "password"),
        (
            json!({"email": "a@b.c", "password": "password1", "firstName": "x".repeat(300)}),
            "firstName",
        ),
    ] {
        let (status, body) = srv.post("/api/users", &admin, payload).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(field)),
            "{field}: {body}"
        );
    }
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let srv = TestServer::start_with(&[("max_body_bytes", "4096")]).await;
    let big = json!({"email": "a@b.c", "password": "x".repeat(10_000)});
    let (status, body) = srv.post("/api/users", &srv.admin(), big).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "payload_too_large");
}

#[tokio::test]
async fn bad_query_parameters_are_400() {
    let srv = TestServer::start().await;
    for q in ["limit=abc", "limit=-1", "skip=x", "limit=0", "limit=100000"] {
        let (status, body) = srv.get(&format!("/api/users?{q}"), &srv.admin()).await;
        assert_eq!(status, 400, "{q}: {body}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let srv = TestServer::start().await;
    let (status, body) = srv.get("/api/nothing-here", &Auth::None).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "not_found");
    let (status, body) = srv
        .call(Method::PATCH, "/api/auth/login", &Auth::None, None)
        .await;
    assert_eq!(status, 405);
    assert_eq!(body["code"], "method_not_allowed");
}

/// The document's error table: «400 | Некорректный запрос | Отсутствуют обязательные
/// поля, неверный формат данных». A missing field, a field of the wrong type, an unknown
/// field or a malformed value (a phone number above all) answers 400 `validation_error`
/// naming the field, on every JSON and multipart body.
#[tokio::test]
async fn missing_fields_and_wrong_formats_are_400_as_the_document_says() {
    let srv = TestServer::start().await;
    let admin = srv.admin();
    let id = srv
        .connected_instance(&admin, "formats", "79005550001")
        .await;
    let cases: Vec<(Method, String, serde_json::Value, &str)> = vec![
        (
            Method::POST,
            "/api/auth/login".into(),
            json!({"email": "admin@example.com"}),
            "password",
        ),
        (
            Method::POST,
            "/api/instances".into(),
            json!({"description": "no name"}),
            "name",
        ),
        (
            Method::POST,
            "/api/instances".into(),
            json!({"name": "x", "webhookEnabled": "yes"}),
            "webhookEnabled",
        ),
        (
            Method::PUT,
            format!("/api/instances/{id}"),
            json!({"maxRetries": "three"}),
            "maxRetries",
        ),
        (
            Method::POST,
            format!("/api/whatsapp/{id}/send"),
            json!({"message": "без номера"}),
            "phone",
        ),
        (
            Method::POST,
            format!("/api/whatsapp/{id}/send"),
            json!({"phone": "79OO1234567", "message": "hi"}),
            "phone",
        ),
        (
            Method::POST,
            format!("/api/whatsapp/{id}/send-media"),
            json!({"phone": "79001234567", "url": 5}),
            "url",
        ),
        (
            Method::POST,
            format!("/api/whatsapp/{id}/contacts/add"),
            json!({"phone": "not a phone"}),
            "phone",
        ),
        (
            Method::POST,
            format!("/api/instances/{id}/contacts/save"),
            json!({"name": "no number"}),
            "number",
        ),
        (
            Method::POST,
            "/api/users".into(),
            json!({"email": "u@example.com", "password": ["x"]}),
            "password",
        ),
        (Method::POST, "/api/db/switch".into(), json!({}), "provider"),
    ];
    for (method, path, body, field) in cases {
        let (status, answer) = srv
            .call(method.clone(), &path, &admin, Some(body.clone()))
            .await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some("validation_error")),
            "{method} {path} {body}: «400 — отсутствуют обязательные поля, неверный формат данных», got {answer}"
        );
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains(field)),
            "{method} {path} {body}: the message names {field}: {answer}"
        );
    }
    // The multipart form of /send-file: no phone, then no file.
    for (form, field) in [
        (
            reqwest::multipart::Form::new().part(
                "file",
                reqwest::multipart::Part::bytes(b"%PDF".to_vec()).file_name("a.pdf"),
            ),
            "phone",
        ),
        (
            reqwest::multipart::Form::new().text("phone", "79001234567"),
            "file",
        ),
    ] {
        let resp = srv
            .request(
                Method::POST,
                &format!("/api/whatsapp/{id}/send-file"),
                &admin,
            )
            .multipart(form)
            .send()
            .await
            .expect("upload");
        let (status, answer) = read(resp).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some("validation_error")),
            "send-file without {field}: {answer}"
        );
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains(field)),
            "{answer}"
        );
    }
}
