//! Security hardening: login throttling, per-user rate limits, CORS, security headers,
//! and secrets kept out of error bodies and logs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::common::{ADMIN_EMAIL, ADMIN_PASSWORD, Auth, JWT_SECRET, TestServer, eventually, read};

async fn login(srv: &TestServer, email: &str, password: &str) -> (u16, Value, HeaderMap) {
    let resp = srv
        .request(Method::POST, "/api/auth/login", &Auth::None)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login request");
    let headers = resp.headers().clone();
    let (status, body) = read(resp).await;
    (status, body, headers)
}

fn retry_after(headers: &HeaderMap) -> u64 {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a numeric Retry-After header")
}

#[tokio::test]
async fn login_is_locked_after_max_failures_even_for_the_right_password() {
    let srv =
        TestServer::start_with(&[("login_max_failures", "3"), ("login_lockout_ms", "600000")])
            .await;
    // A success resets the email's count: 2 failures, a success, 3 more failures pass.
    for _ in 0..2 {
        assert_eq!(login(&srv, ADMIN_EMAIL, "wrong-password").await.0, 401);
    }
    assert_eq!(login(&srv, ADMIN_EMAIL, ADMIN_PASSWORD).await.0, 200);
    for _ in 0..3 {
        let (status, body, _) = login(&srv, ADMIN_EMAIL, "wrong-password").await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, body, headers) = login(&srv, ADMIN_EMAIL, "wrong-password").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "too_many_attempts");
    let wait = retry_after(&headers);
    assert!((1..=600).contains(&wait), "Retry-After {wait}");
    // Locked: even the right password is refused, and the case of the email is no way out.
    let (status, body, _) = login(&srv, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(
        (status, body["code"].clone()),
        (429, json!("too_many_attempts"))
    );
    let (status, _, _) = login(&srv, &ADMIN_EMAIL.to_uppercase(), ADMIN_PASSWORD).await;
    assert_eq!(status, 429);
    // Tokens issued before keep working: throttling guards the password only.
    let (status, _) = srv.get("/api/auth/me", &srv.admin()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_lockout_ends_when_its_time_has_passed() {
    let srv =
        TestServer::start_with(&[("login_max_failures", "2"), ("login_lockout_ms", "300")]).await;
    // Failures closer together than the lockout accumulate; keep trying until locked.
    eventually(10, "the email to be locked", || async {
        let (status, _, _) = login(&srv, ADMIN_EMAIL, "wrong-password").await;
        (status == 429).then_some(())
    })
    .await;
    eventually(10, "the lockout to end", || async {
        let (status, _, _) = login(&srv, ADMIN_EMAIL, ADMIN_PASSWORD).await;
        (status == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn one_address_is_throttled_across_emails() {
    let srv =
        TestServer::start_with(&[("login_max_failures", "1"), ("login_lockout_ms", "600000")])
            .await;
    // An address may fail 4 times as often as one email.
    for i in 0..4 {
        let (status, body, _) = login(&srv, &format!("nobody{i}@example.com"), "guess-1").await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, body, _) = login(&srv, "someone-else@example.com", "guess-1").await;
    assert_eq!(
        (status, body["code"].clone()),
        (429, json!("too_many_attempts"))
    );
}

#[tokio::test]
async fn calls_beyond_the_rate_limit_get_429_with_retry_after() {
    let srv = TestServer::start_with(&[("rate_limit_per_minute", "3")]).await;
    let key = Auth::Key(srv.admin_key.clone());
    for i in 0..3 {
        let (status, body) = srv.get("/api/auth/me", &key).await;
        assert_eq!(status, 200, "call {i}: {body}");
    }
    // The limit is per user: the token of the same user is limited too.
    for auth in [key, srv.admin()] {
        let resp = srv
            .request(Method::GET, "/api/auth/me", &auth)
            .send()
            .await
            .expect("request");
        let wait = retry_after(resp.headers());
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
        let (status, body) = read(resp).await;
        assert_eq!((status, body["code"].clone()), (429, json!("rate_limited")));
    }
    // Logging in is not an authenticated call: it still works.
    assert_eq!(login(&srv, ADMIN_EMAIL, ADMIN_PASSWORD).await.0, 200);
}

async fn with_origin(srv: &TestServer, method: Method, path: &str, origin: &str) -> HeaderMap {
    srv.request(method.clone(), path, &Auth::None)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-api-key,content-type")
        .send()
        .await
        .expect("request")
        .headers()
        .clone()
}

#[tokio::test]
async fn cors_is_off_by_default() {
    let srv = TestServer::start().await;
    for method in [Method::GET, Method::OPTIONS] {
        let headers = with_origin(&srv, method, "/api/instances", "https://evil.example").await;
        assert!(
            !headers.contains_key("access-control-allow-origin"),
            "{headers:?}"
        );
    }
}

#[tokio::test]
async fn cors_answers_allowed_origins_only() {
    let srv = TestServer::start_with(&[(
        "cors_allowed_origins",
        "https://app.example,https://b.example",
    )])
    .await;
    let headers = with_origin(&srv, Method::GET, "/healthz", "https://app.example").await;
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    // Preflight.
    let resp = srv
        .request(Method::OPTIONS, "/api/instances", &Auth::None)
        .header("origin", "https://b.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-api-key,content-type")
        .send()
        .await
        .expect("preflight");
    assert!(resp.status().is_success(), "preflight {}", resp.status());
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://b.example");
    let methods = h["access-control-allow-methods"].to_str().expect("ascii");
    assert!(methods.contains("POST"), "{methods}");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_lowercase();
    assert!(allowed.contains("x-api-key"), "{allowed}");
    // Security headers cover preflights too.
    assert_eq!(h["x-content-type-options"], "nosniff");
    // Another origin gets nothing.
    for method in [Method::GET, Method::OPTIONS] {
        let headers = with_origin(&srv, method, "/healthz", "https://evil.example").await;
        assert!(
            !headers.contains_key("access-control-allow-origin"),
            "{headers:?}"
        );
    }
}

#[tokio::test]
async fn every_response_carries_security_headers() {
    let srv = TestServer::start().await;
    let admin = srv.admin();
    for (path, auth, expected) in [
        ("/healthz", &Auth::None, 200),
        ("/api/auth/me", &admin, 200),
        ("/api/auth/me", &Auth::None, 401),
        ("/no/such/endpoint", &Auth::None, 404),
    ] {
        let resp = srv
            .request(Method::GET, path, auth)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), expected, "{path}");
        let h = resp.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        // JSON is not a document: no CSP needed (HTML responses get one).
        assert!(!h.contains_key("content-security-policy"), "{path}");
    }
}

/// The server binary with its JSON log kept, for checking what it writes.
struct LoggedServer {
    child: tokio::process::Child,
    base: String,
    client: reqwest::Client,
    logs: Arc<Mutex<Vec<String>>>,
}

impl LoggedServer {
    async fn spawn(data_dir: &std::path::Path) -> LoggedServer {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"));
        cmd.env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("DATA_DIR", data_dir)
            .env("JWT_SECRET", JWT_SECRET)
            .env("WA_ENGINE", "sandbox")
            .env("ALLOW_PRIVATE_NETWORK_URLS", "true")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "debug")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start the server binary");
        let logs = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    logs.lock().expect("logs").push(line);
                }
            });
        }
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                let mut tx = Some(tx);
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(v) = serde_json::from_str::<Value>(&line)
                        && v["message"] == "listening"
                        && let (Some(tx), Some(addr)) = (tx.take(), v["address"].as_str())
                    {
                        let _ = tx.send(addr.to_owned());
                    }
                    logs.lock().expect("logs").push(line);
                }
            });
        }
        let addr = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("the server listens in time")
            .expect("the server exited before listening");
        LoggedServer {
            child,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            logs,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<Value>,
    ) -> (u16, Value) {
        crate::common::call_at(&self.client, &self.base, method, path, auth, body).await
    }

    fn log_text(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }
}

#[tokio::test]
async fn secrets_never_reach_error_bodies_or_logs() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut srv = LoggedServer::spawn(data.path()).await;
    let (status, body) = srv
        .call(
            Method::POST,
            "/api/auth/login",
            &Auth::None,
            Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let api_key = body["user"]["apiKey"].as_str().expect("apiKey").to_owned();
    let token = body["token"].as_str().expect("token").to_owned();
    let key = Auth::Key(api_key.clone());

    let mut error_bodies = Vec::new();
    // Wrong credentials of every shape: the answer never echoes what was sent.
    let bad_key = format!("{api_key}tampered");
    let bad_token = format!("{token}tampered");
    for auth in [
        Auth::Key(bad_key.clone()),
        Auth::Key("wag_canary-guess-0123456789".into()),
        Auth::Bearer(bad_token.clone()),
    ] {
        let (status, body) = srv.call(Method::GET, "/api/auth/me", &auth, None).await;
        assert_eq!(status, 401, "{body}");
        error_bodies.push(body);
    }
    let (status, body) = srv
        .call(
            Method::POST,
            "/api/auth/login",
            &Auth::None,
            Some(json!({"email": ADMIN_EMAIL, "password": "canary-password-wrong"})),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    error_bodies.push(body);

    // A webhook secret, used by a delivery that fails (nothing listens on port 9).
    let webhook_secret = "whsec-canary-5f1e9a";
    let (status, body) = srv
        .call(
            Method::POST,
            "/api/instances",
            &key,
            Some(json!({"name": "canary", "engine": "sandbox"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let (status, body) = srv
        .call(
            Method::PUT,
            &format!("/api/instances/{id}"),
            &key,
            Some(
                json!({"webhookUrl": "http://127.0.0.1:9/hook", "webhookEnabled": true,
                        "webhookSettings": {"secret": webhook_secret}}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = srv
        .call(
            Method::POST,
            &format!("/api/instances/{id}/webhook/test"),
            &key,
            Some(json!({})),
        )
        .await;
    if status >= 400 {
        error_bodies.push(body);
    }
    // Invalid values next to a secret: the refusal names the field, not the secret.
    let (status, body) = srv
        .call(
            Method::PUT,
            &format!("/api/instances/{id}"),
            &key,
            Some(json!({"webhookUrl": "not a url", "webhookSettings": {"secret": webhook_secret}})),
        )
        .await;
    assert!(status >= 400, "{status} {body}");
    error_bodies.push(body);

    // WABA secrets, then a notification with a wrong signature.
    let waba_token = "EAAG-canary-access-token";
    let app_secret = "canary-app-secret";
    let (status, body) = srv
        .call(
            Method::PUT,
            "/api/waba/settings",
            &key,
            Some(
                json!({"accessToken": waba_token, "phoneNumberId": "1234567890",
                        "businessAccountId": "987654321", "appSecret": app_secret,
                        "verifyToken": "canary-verify-token"}),
            ),
        )
        .await;
    assert!(status < 300, "{status} {body}");
    let (status, body) = srv
        .call(
            Method::GET,
            "/api/waba/webhook?hub.mode=subscribe&hub.verify_token=canary-wrong-verify&hub.challenge=1",
            &Auth::None,
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    error_bodies.push(body);

    let secrets = [
        api_key.as_str(),
        bad_key.as_str(),
        "wag_canary-guess-0123456789",
        token.as_str(),
        bad_token.as_str(),
        "canary-password-wrong",
        webhook_secret,
        waba_token,
        app_secret,
        "canary-verify-token",
        "canary-wrong-verify",
    ];
    for body in &error_bodies {
        let text = body.to_string();
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "error body {text} contains a secret"
            );
        }
    }
    // The failed delivery has been attempted (and logged) before the log is checked.
    eventually(20, "the failed webhook delivery in the log", || async {
        let logs = srv.log_text();
        (logs.contains("127.0.0.1:9") || logs.contains("webhook")).then_some(())
    })
    .await;
    let logs = srv.log_text();
    assert!(!logs.is_empty(), "the server logged nothing");
    for secret in secrets {
        assert!(
            !logs.contains(secret),
            "the log contains the secret {secret}"
        );
    }
    srv.child.start_kill().expect("kill");
    let _ = srv.child.wait().await;
}
