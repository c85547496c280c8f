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

/// An error answer as a client sees it: the status, and a JSON `{error, code}` body
/// declared as JSON.
async fn json_error(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let kind = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = resp.bytes().await.expect("body");
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        panic!(
            "{status} answered a non-JSON body ({kind}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert!(kind.starts_with("application/json"), "{status}: {kind}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{status}: {body}"
    );
    (status, body["code"].as_str().expect("code").to_owned())
}

/// Rejections of the extractors (JSON, multipart, path, query) and the limits of the
/// HTTP layer itself — a URI over hyper's 64 KiB, headers over its buffer, a request
/// that is not HTTP — answer `{error, code}` as JSON, like every handler's error.
#[tokio::test]
async fn extractor_rejections_and_http_limits_answer_json() {
    let srv = TestServer::start_with(&[("max_body_bytes", "4096")]).await;
    let admin = srv.admin();
    let id = srv
        .connected_instance(&admin, "rejections", "79005550003")
        .await;
    let send_file = format!("/api/whatsapp/{id}/send-file");

    // send-file with a JSON body, a URL-encoded form, and no body at all.
    let answers = [
        srv.request(Method::POST, &send_file, &admin)
            .json(&json!({"phone": "79001234567"})),
        srv.request(Method::POST, &send_file, &admin)
            .form(&[("phone", "79001234567")]),
        srv.request(Method::POST, &send_file, &admin),
    ];
    for request in answers {
        let (status, code) = json_error(request.send().await.expect("send-file")).await;
        assert_eq!((status, code.as_str()), (400, "invalid_content_type"));
    }

    // A JSON body over the limit without a declared length (chunked).
    let chunks = futures::stream::iter(vec![Ok::<_, std::io::Error>(
        format!(
            "{{\"phone\":\"79001234567\",\"message\":\"{}\"}}",
            "x".repeat(8192)
        )
        .into_bytes(),
    )]);
    let resp = srv
        .request(Method::POST, &format!("/api/whatsapp/{id}/send"), &admin)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("chunked");
    assert_eq!(
        json_error(resp).await,
        (413, "payload_too_large".to_owned())
    );

    // A raw body over the limit (Meta's webhook reads bytes to check their signature):
    // the framework's own text answer becomes JSON.
    let resp = srv
        .request(Method::POST, "/api/waba/webhook", &Auth::None)
        .header("content-type", "application/json")
        .body("x".repeat(10_000))
        .send()
        .await
        .expect("raw body");
    assert_eq!(
        json_error(resp).await,
        (413, "payload_too_large".to_owned())
    );

    // A path segment that is not UTF-8, a query of the wrong type.
    let resp = srv
        .request(Method::GET, "/api/users/%FF%FE", &admin)
        .send()
        .await
        .expect("path");
    assert_eq!(json_error(resp).await.0, 400);
    let resp = srv
        .request(Method::GET, "/api/users?limit=many", &admin)
        .send()
        .await
        .expect("query");
    assert_eq!(json_error(resp).await, (400, "invalid_query".to_owned()));

    // A URI over hyper's limit (64 KiB), headers over its buffer, and a request that is
    // not HTTP at all, written on raw connections (HTTP clients refuse to send them).
    let addr = srv.base.trim_start_matches("http://").to_owned();
    let long_uri = format!(
        "GET /api/instances?name={} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "a".repeat(70_000)
    );
    let big_headers = format!(
        "GET /api/instances HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-padding: {}\r\n\r\n",
        // Far over hyper's read buffer (about 400 KiB), whatever it reads at once.
        "p".repeat(2_000_000)
    );
    for (request, status, code) in [
        (long_uri, 414, "uri_too_long"),
        (big_headers, 431, "headers_too_large"),
        ("HELLO THERE\r\n\r\n".to_owned(), 400, "bad_request"),
    ] {
        let (head, body) = raw_exchange(&addr, code, request.as_bytes()).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{code}: {head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
        assert_eq!(body["code"], code, "{body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }

    // The server still serves normal requests on new connections.
    let (status, _) = srv.get("/api/instances", &admin).await;
    assert_eq!(status, 200);
}

/// Writes `request` on a new connection and reads the answer until the server closes
/// it: (status line and headers, body).
async fn raw_exchange(addr: &str, what: &str, request: &[u8]) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before it has read everything.
    let _ = raw.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        raw.read_to_end(&mut answer),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{what}: no answer and close in time; got {:?}",
            String::from_utf8_lossy(&answer)
        )
    });
    if let Err(e) = read {
        assert!(!answer.is_empty(), "no answer: {e}");
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.to_owned(), body.to_owned())
}
