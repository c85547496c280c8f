//! Security hardening: login throttling, per-user rate limits, CORS, security headers,
//! and secrets kept out of error bodies and logs.

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::common::{
    ADMIN_EMAIL, ADMIN_PASSWORD, Auth, JWT_SECRET, ProcessServer, TestServer, eventually, read,
};

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

#[tokio::test]
async fn secrets_never_reach_error_bodies_or_logs() {
    let data = tempfile::tempdir().expect("temp dir");
    let srv = ProcessServer::spawn_logged(data.path(), &[]).await;
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
    srv.kill_hard().await;
}

// ─── Tokens: the algorithm is pinned, the claims are checked ────────────────────────

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with any header and claims, its signature made by `sign` over
/// `header.claims` (exactly as JWS signs).
fn token(header: Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64url(&signature))
}

fn hmac_with<D>(secret: &str) -> impl Fn(&[u8]) -> Vec<u8>
where
    D: hmac::digest::Digest + hmac::digest::core_api::BlockSizeUser + Clone,
    hmac::SimpleHmac<D>: hmac::Mac,
{
    let secret = secret.to_owned();
    move |input| {
        use hmac::Mac;
        let mut mac = hmac::SimpleHmac::<D>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(input);
        mac.finalize().into_bytes().to_vec()
    }
}

/// Tokens naming another algorithm (`none` in any case, HS384/HS512 under the right
/// secret, RS256/ES256/PS256 — including RS256 carrying an HMAC under the secret, the
/// key-confusion attack), tampered ones and ones with bad claims (expired, no `exp`, no
/// `sub`, a `sub` that is nobody) are all refused with 401, and the answer never echoes
/// the token.
#[tokio::test]
async fn tokens_of_another_algorithm_tampered_or_with_bad_claims_are_refused() {
    use sha2::{Sha256, Sha384, Sha512};
    let srv = TestServer::start().await;
    let (_, me) = srv.get("/api/auth/me", &srv.admin()).await;
    let sub = me["id"].as_str().expect("id").to_owned();
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": sub, "iat": now, "exp": now + 600});
    let hs256 = hmac_with::<Sha256>(JWT_SECRET);
    let good = token(json!({"alg": "HS256", "typ": "JWT"}), &claims, &hs256);
    // Built this way with HS256 a token is accepted: the refusals below are for the
    // reason each names.
    let (status, body) = srv.get("/api/auth/me", &Auth::Bearer(good.clone())).await;
    assert_eq!(status, 200, "{body}");

    let parts: Vec<&str> = good.split('.').collect();
    let with_claims = |c: Value| token(json!({"alg": "HS256", "typ": "JWT"}), &c, &hs256);
    let fixed = |bytes: Vec<u8>| move |_: &[u8]| bytes.clone();
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none, unsigned",
            token(json!({"alg": "none"}), &claims, fixed(vec![])),
        ),
        (
            "alg None",
            token(json!({"alg": "None", "typ": "JWT"}), &claims, fixed(vec![])),
        ),
        (
            "alg NONE",
            token(json!({"alg": "NONE"}), &claims, fixed(vec![])),
        ),
        (
            "alg none with an HS256 signature",
            token(json!({"alg": "none"}), &claims, &hs256),
        ),
        ("no alg", token(json!({"typ": "JWT"}), &claims, &hs256)),
        (
            "alg hs256 in lower case",
            token(json!({"alg": "hs256"}), &claims, &hs256),
        ),
        (
            "HS384 under the secret",
            token(
                json!({"alg": "HS384"}),
                &claims,
                hmac_with::<Sha384>(JWT_SECRET),
            ),
        ),
        (
            "HS512 under the secret",
            token(
                json!({"alg": "HS512"}),
                &claims,
                hmac_with::<Sha512>(JWT_SECRET),
            ),
        ),
        (
            "RS256 carrying an HMAC under the secret",
            token(json!({"alg": "RS256", "typ": "JWT"}), &claims, &hs256),
        ),
        (
            "RS256 with a made-up signature",
            token(json!({"alg": "RS256"}), &claims, fixed(vec![0x42; 256])),
        ),
        (
            "PS256 with a made-up signature",
            token(json!({"alg": "PS256"}), &claims, fixed(vec![0x42; 256])),
        ),
        (
            "ES256 with a made-up signature",
            token(json!({"alg": "ES256"}), &claims, fixed(vec![0x42; 64])),
        ),
        (
            "EdDSA with a made-up signature",
            token(json!({"alg": "EdDSA"}), &claims, fixed(vec![0x42; 64])),
        ),
        (
            "HS256 under another secret",
            token(
                json!({"alg": "HS256"}),
                &claims,
                hmac_with::<Sha256>("another-secret-another-secret-000"),
            ),
        ),
        (
            "HS256 under an empty secret",
            token(json!({"alg": "HS256"}), &claims, hmac_with::<Sha256>("")),
        ),
        (
            "a key id and key URL of the caller's choosing",
            token(
                json!({"alg": "HS256", "kid": "../../../../dev/null", "jku": "http://127.0.0.1:9/jwks.json"}),
                &claims,
                hmac_with::<Sha256>(""),
            ),
        ),
        (
            "payload swapped, signature kept",
            format!(
                "{}.{}.{}",
                parts[0],
                b64url(
                    json!({"sub": sub, "iat": now, "exp": now + 86_400 * 365})
                        .to_string()
                        .as_bytes()
                ),
                parts[2]
            ),
        ),
        (
            "header swapped to HS512, signature kept",
            format!(
                "{}.{}.{}",
                b64url(br#"{"alg":"HS512","typ":"JWT"}"#),
                parts[1],
                parts[2]
            ),
        ),
        (
            "signature cut short",
            format!("{}.{}.{}", parts[0], parts[1], &parts[2][..20]),
        ),
        ("signature removed", format!("{}.{}.", parts[0], parts[1])),
        ("a fourth segment", format!("{good}.{}", parts[2])),
        (
            "expired an hour ago",
            with_claims(json!({"sub": sub, "iat": now - 7200, "exp": now - 3600})),
        ),
        (
            "expired in 1970",
            with_claims(json!({"sub": sub, "iat": 0, "exp": 1})),
        ),
        ("without exp", with_claims(json!({"sub": sub, "iat": now}))),
        (
            "exp as a string",
            with_claims(json!({"sub": sub, "iat": now, "exp": (now + 600).to_string()})),
        ),
        (
            "without sub",
            with_claims(json!({"iat": now, "exp": now + 600})),
        ),
        (
            "the sub of nobody",
            with_claims(
                json!({"sub": "0190f5a0-0000-7000-8000-000000000000", "iat": now, "exp": now + 600}),
            ),
        ),
    ];
    for (what, bad) in cases {
        let (status, body) = srv.get("/api/auth/me", &Auth::Bearer(bad.clone())).await;
        assert_eq!(
            (status, body["code"].clone()),
            (401, json!("unauthorized")),
            "{what}: {body}"
        );
        assert!(
            !body.to_string().contains(&bad),
            "{what}: the answer echoes the token"
        );
        if what.starts_with("expired") {
            assert_eq!(body["error"], "token expired", "{what}");
        }
    }
}

// ─── Secrets: WABA tokens stay out of answers and logs ─────────────────────────────

/// A Graph API that refuses every send with an error that quotes the request's bearer
/// token back (a misbehaving upstream, or a proxy in between).
async fn echoing_graph() -> std::net::SocketAddr {
    async fn refuse(headers: axum::http::HeaderMap) -> (axum::http::StatusCode, axum::Json<Value>) {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {
                "message": format!("(#100) Invalid parameter: header {auth} not accepted"),
                "type": "OAuthException",
                "code": 100,
                "error_data": {"details": format!("the access token {} is not valid here", auth.trim_start_matches("Bearer "))},
            }})),
        )
    }
    let app = axum::Router::new().route("/{version}/{phone}/messages", axum::routing::post(refuse));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// An operator's send fails at Meta with an error quoting the account's access token:
/// neither the operator's error answer nor the server's log contains the token.
#[tokio::test]
async fn waba_access_tokens_quoted_by_meta_are_kept_out_of_answers_and_logs() {
    use hmac::Mac;
    let graph = echoing_graph().await;
    let data = tempfile::tempdir().expect("temp dir");
    let base = format!("http://{graph}");
    let srv = ProcessServer::spawn_logged(data.path(), &[("WABA_GRAPH_BASE_URL", &base)]).await;
    let (status, body) = srv
        .call(
            Method::POST,
            "/api/auth/login",
            &Auth::None,
            Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let admin = Auth::Bearer(body["token"].as_str().expect("token").to_owned());
    let access_token = "EAAG-canary-token-quoted-by-meta-7f3a";
    let app_secret = "canary-app-secret-for-signing";
    let phone_number_id = "106540352242922";
    let (status, body) = srv
        .call(
            Method::PUT,
            "/api/waba/settings",
            &admin,
            Some(
                json!({"accessToken": access_token, "phoneNumberId": phone_number_id,
                        "businessAccountId": "987654321", "appSecret": app_secret,
                        "verifyToken": "canary-verify-token-2"}),
            ),
        )
        .await;
    assert!(status < 300, "{status} {body}");
    // A customer writes (a notification signed like Meta's), which opens a chat.
    let notification = crate::waba::inbound(
        "wamid.CANARY1",
        "79001234567",
        "hello",
        chrono::Utc::now().timestamp(),
    );
    let notification = {
        let mut n = notification;
        n["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] =
            json!(phone_number_id);
        n
    };
    let raw = serde_json::to_vec(&notification).expect("json");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(app_secret.as_bytes()).expect("key");
    mac.update(&raw);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let resp = srv
        .client
        .post(format!("{}/api/waba/webhook", srv.base))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(raw)
        .send()
        .await
        .expect("notification");
    let (status, body) = read(resp).await;
    assert_eq!(status, 200, "{body}");
    let (status, chats) = srv
        .call(Method::GET, "/api/waba/operator/chats", &admin, None)
        .await;
    assert_eq!(status, 200, "{chats}");
    let chat = chats["chats"][0]["id"].as_i64().expect("a chat");

    let (status, body) = srv
        .call(
            Method::POST,
            "/api/waba/operator/send",
            &admin,
            Some(json!({"chatId": chat, "message": "your order is ready"})),
        )
        .await;
    assert!(status >= 400, "Meta refused the send: {status} {body}");
    let text = body.to_string();
    assert!(
        text.contains("is not valid here"),
        "Meta's reason is kept: {text}"
    );
    assert!(
        !text.contains(access_token),
        "the answer quotes the access token: {text}"
    );
    eventually(20, "the refusal in the log", || async {
        srv.log_text().contains("Graph API").then_some(())
    })
    .await;
    let logs = srv.log_text();
    for secret in [access_token, app_secret, "canary-verify-token-2"] {
        assert!(
            !logs.contains(secret),
            "the log contains the secret {secret}"
        );
    }
    srv.kill_hard().await;
}

// ─── Server-side request forgery ────────────────────────────────────────────────────

/// Loopback, private, link-local and metadata addresses in every spelling a URL parser
/// accepts, names that mean loopback, URL tricks and other schemes.
pub(crate) const PRIVATE_TARGETS: [&str; 33] = [
    "http://localhost/hook",
    "http://LOCALHOST:8080/hook",
    "http://localhost./hook",
    "http://api.localhost/hook",
    "http://127.0.0.1/hook",
    "http://127.1/hook",
    "http://127.0.0.255:3000/hook",
    "http://2130706433/hook",
    "http://0x7f.1/hook",
    "http://0x7f000001/hook",
    "http://0177.0.0.1/hook",
    "http://017700000001/hook",
    "http://0/hook",
    "http://0.0.0.0/hook",
    "http://[::1]/hook",
    "http://[::]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[0:0:0:0:0:ffff:7f00:1]/hook",
    "http://[::127.0.0.1]/hook",
    "http://[64:ff9b::7f00:1]/hook",
    "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",
    "http://[2002:a00:1::]/hook",
    "http://[fe80::1]/hook",
    "http://[fd00:ec2::254]/latest/meta-data",
    "http://169.254.169.254/latest/meta-data",
    "http://[::ffff:169.254.169.254]/latest/meta-data",
    "http://10.0.0.1/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.1/hook",
    "http://100.64.0.1/hook",
    "http://example.com@127.0.0.1/hook",
    "http://127.0.0.1#@example.com/hook",
    "file:///etc/passwd",
];

/// With ALLOW_PRIVATE_NETWORK_URLS off, every such URL is refused (400 naming the
/// field) as a webhook URL — at creation and in an update — and as a media URL to send
/// or to receive through the sandbox. Redirects to such addresses are checked at every
/// hop by the HTTP client's redirect policy and resolver; that needs a public redirect
/// source, so it is tested at unit level (`outbound::tests`).
#[tokio::test]
async fn private_network_targets_in_any_spelling_are_refused() {
    let srv = TestServer::start_with(&[("allow_private_network_urls", "false")]).await;
    let key = Auth::Key(srv.admin_key.clone());
    let id = srv.connected_instance(&key, "ssrf", "79170000001").await;
    for url in PRIVATE_TARGETS
        .into_iter()
        .chain(["gopher://127.0.0.1:25/", "ftp://example.com/"])
    {
        let named =
            |body: &Value, field: &str| body["error"].as_str().is_some_and(|e| e.contains(field));
        let (status, body) = srv
            .post(
                "/api/instances",
                &key,
                json!({"name": "ssrf", "webhookUrl": url}),
            )
            .await;
        assert!(
            status == 400 && named(&body, "webhookUrl"),
            "create with {url}: {status} {body}"
        );
        let (status, body) = srv
            .put(
                &format!("/api/instances/{id}"),
                &key,
                json!({"webhookUrl": url}),
            )
            .await;
        assert!(
            status == 400 && named(&body, "webhookUrl"),
            "update to {url}: {status} {body}"
        );
        let (status, body) = srv
            .post(
                &format!("/api/whatsapp/{id}/send-media"),
                &key,
                json!({"phone": "79170000002", "url": url}),
            )
            .await;
        assert!(
            status == 400 && named(&body, "url"),
            "send-media from {url}: {status} {body}"
        );
        let (status, body) = srv
            .post(
                &format!("/api/sandbox/instances/{id}/inbound"),
                &key,
                json!({"from": "79170000003", "media": {"url": url}}),
            )
            .await;
        assert!(
            status == 400 && named(&body, "url"),
            "inbound media from {url}: {status} {body}"
        );
    }
    // Nothing was stored as a webhook URL.
    let (_, instance) = srv.get(&format!("/api/instances/{id}"), &key).await;
    assert!(
        instance["webhookUrl"].is_null() || instance["webhookUrl"] == "",
        "{instance}"
    );
}

// ─── Upload limits ──────────────────────────────────────────────────────────────────

/// Files over MAX_UPLOAD_BYTES are refused with 413 `payload_too_large` in the JSON
/// shape — with a Content-Length or streamed without one, by upload or as base64 — and
/// so are JSON bodies over MAX_BODY_BYTES; a file of exactly the limit is accepted.
#[tokio::test]
async fn uploads_over_the_limit_are_413_json() {
    const MAX: usize = 4096;
    let srv =
        TestServer::start_with(&[("max_upload_bytes", "4096"), ("max_body_bytes", "16384")]).await;
    let key = Auth::Key(srv.admin_key.clone());
    let id = srv.connected_instance(&key, "uploads", "79180000001").await;
    let upload = |part: reqwest::multipart::Part| {
        let form = reqwest::multipart::Form::new()
            .text("phone", "79180000002")
            .part("file", part);
        srv.request(Method::POST, &format!("/api/whatsapp/{id}/send-file"), &key)
            .multipart(form)
            .send()
    };
    let file = |n: usize| reqwest::multipart::Part::bytes(vec![b'%'; n]).file_name("f.bin");
    let (status, body) = read(upload(file(MAX)).await.expect("upload")).await;
    assert_eq!(status, 200, "exactly the limit: {body}");
    for (what, part) in [
        ("one byte over", file(MAX + 1)),
        ("far over (beyond the request limit)", file(MAX * 64)),
        (
            "streamed without a length",
            reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(futures::stream::iter(
                (0..8).map(|_| Ok::<_, std::io::Error>(vec![b'%'; 1024])),
            )))
            .file_name("f.bin"),
        ),
    ] {
        let (status, body) = read(upload(part).await.expect("upload")).await;
        assert_eq!(
            (status, body["code"].clone()),
            (413, json!("payload_too_large")),
            "{what}: {body}"
        );
    }
    use base64::Engine as _;
    let big = base64::engine::general_purpose::STANDARD.encode(vec![7u8; MAX + 600]);
    let (status, body) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/inbound"),
            &key,
            json!({"from": "79180000003", "media": {"base64": big}}),
        )
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (413, json!("payload_too_large")),
        "{body}"
    );
    let (status, body) = srv
        .post(
            &format!("/api/whatsapp/{id}/send"),
            &key,
            json!({"phone": "79180000002", "message": "x".repeat(20_000)}),
        )
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (413, json!("payload_too_large")),
        "{body}"
    );
}

// ─── Browsers ───────────────────────────────────────────────────────────────────────

/// `CORS_ALLOWED_ORIGINS=*` allows any origin, but never with credentials (a browser
/// then sends no cookies; the API's credentials are headers a page must hold itself).
#[tokio::test]
async fn cors_wildcard_allows_any_origin_without_credentials() {
    let srv = TestServer::start_with(&[("cors_allowed_origins", "*")]).await;
    for method in [Method::GET, Method::OPTIONS] {
        let headers = with_origin(
            &srv,
            method.clone(),
            "/api/instances",
            "https://anywhere.example",
        )
        .await;
        assert_eq!(headers["access-control-allow-origin"], "*", "{method}");
        assert!(
            !headers.contains_key("access-control-allow-credentials"),
            "{method}: {headers:?}"
        );
    }
}

/// Error answers produced outside the handlers — 405, 413, 400 from the JSON extractor,
/// 429 — carry the security headers too.
#[tokio::test]
async fn error_answers_carry_security_headers() {
    let srv =
        TestServer::start_with(&[("rate_limit_per_minute", "1"), ("max_body_bytes", "1024")]).await;
    let key = Auth::Key(srv.admin_key.clone());
    let big = json!({"name": "x".repeat(2000)});
    let requests = [
        (Method::DELETE, "/healthz", None, 405),
        (Method::POST, "/api/auth/login", Some(big), 413),
        (
            Method::POST,
            "/api/auth/login",
            Some(json!({"email": 5})),
            400,
        ),
        (Method::GET, "/api/auth/me", None, 200),
        (Method::GET, "/api/auth/me", None, 429),
    ];
    for (method, path, body, expected) in requests {
        let mut rb = srv.request(method.clone(), path, &key);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request");
        let h = resp.headers().clone();
        let (status, body) = read(resp).await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{method} {path}");
        assert_eq!(h["x-frame-options"], "DENY", "{method} {path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{method} {path}");
    }
}
