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
    // Missing field: 422 naming it.
    let (status, body) = send_raw(r#"{"email":"a@b.c"}"#, Some("application/json")).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("password")),
        "{body}"
    );
    // Wrong type: 422 naming it.
    let (status, body) = send_raw(
        r#"{"email":"a@b.c","password":12345678}"#,
        Some("application/json"),
    )
    .await;
    assert_eq!(status, 422, "{body}");
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
    assert_eq!(status, 422, "{body}");
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
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("isAdmin")),
        "{body}"
    );
    // Invalid values: 422 naming the field.
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
        assert_eq!(status, 422, "{body}");
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
