//! Login, tokens and API keys.

use serde_json::json;

use crate::common::{ADMIN_EMAIL, ADMIN_PASSWORD, Auth, Backend, JWT_SECRET, TestServer};

backend_tests!(
    login_returns_token_and_api_key_as_the_spec_shows,
    bad_credentials_are_refused_alike,
    me_works_with_both_schemes,
    expired_tampered_and_foreign_tokens_are_refused,
    bad_api_keys_are_refused,
    tokens_of_deactivated_or_deleted_users_stop_working,
    tokens_and_keys_survive_a_restart,
);

async fn login_returns_token_and_api_key_as_the_spec_shows(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let (status, body) = srv
        .post(
            "/api/auth/login",
            &Auth::None,
            json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        body["token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
    let user = &body["user"];
    assert_eq!(user["email"], ADMIN_EMAIL);
    assert_eq!(user["firstName"], "Admin");
    assert_eq!(user["lastName"], "User");
    assert!(user["id"].is_string());
    assert!(
        user["apiKey"]
            .as_str()
            .is_some_and(|k| k.starts_with("wag_"))
    );
    assert!(user.get("passwordHash").is_none() && user.get("password").is_none());
    // Email lookup is case-insensitive.
    let (status, _) = srv
        .post(
            "/api/auth/login",
            &Auth::None,
            json!({"email": "ADMIN@example.com", "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(status, 200);
}

async fn bad_credentials_are_refused_alike(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let (s1, b1) = srv
        .post(
            "/api/auth/login",
            &Auth::None,
            json!({"email": ADMIN_EMAIL, "password": "wrong-password"}),
        )
        .await;
    let (s2, b2) = srv
        .post(
            "/api/auth/login",
            &Auth::None,
            json!({"email": "nobody@example.com", "password": "whatever"}),
        )
        .await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(
        b1, b2,
        "unknown email and wrong password must look the same"
    );
    let (s, b) = srv
        .post(
            "/api/auth/login",
            &Auth::None,
            json!({"email": "", "password": ""}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
}

async fn me_works_with_both_schemes(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    for auth in [srv.admin(), Auth::Key(srv.admin_key.clone())] {
        let (status, body) = srv.get("/api/auth/me", &auth).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["email"], ADMIN_EMAIL);
        assert_eq!(body["firstName"], "Admin");
        assert_eq!(body["role"], "admin");
    }
    let (status, body) = srv.get("/api/auth/me", &Auth::None).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthorized");
}

fn forge(claims: serde_json::Value, secret: &str, alg: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

async fn expired_tampered_and_foreign_tokens_are_refused(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let (_, me) = srv.get("/api/auth/me", &srv.admin()).await;
    let id = me["id"].as_str().expect("id");
    let now = chrono::Utc::now().timestamp();

    // A valid forged token proves the forging is right…
    let good = forge(
        json!({"sub": id, "iat": now, "exp": now + 600}),
        JWT_SECRET,
        jsonwebtoken::Algorithm::HS256,
    );
    assert_eq!(
        srv.get("/api/auth/me", &Auth::Bearer(good.clone())).await.0,
        200
    );

    // …so these fail for the reason they name.
    let expired = forge(
        json!({"sub": id, "iat": now - 7200, "exp": now - 3600}),
        JWT_SECRET,
        jsonwebtoken::Algorithm::HS256,
    );
    let (status, body) = srv.get("/api/auth/me", &Auth::Bearer(expired)).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("expired")),
        "{body}"
    );

    let other_secret = forge(
        json!({"sub": id, "iat": now, "exp": now + 600}),
        "some-other-secret-some-other-secret",
        jsonwebtoken::Algorithm::HS256,
    );
    assert_eq!(
        srv.get("/api/auth/me", &Auth::Bearer(other_secret)).await.0,
        401
    );

    let other_alg = forge(
        json!({"sub": id, "iat": now, "exp": now + 600}),
        JWT_SECRET,
        jsonwebtoken::Algorithm::HS512,
    );
    assert_eq!(
        srv.get("/api/auth/me", &Auth::Bearer(other_alg)).await.0,
        401
    );

    // Tamper with the payload: make it claim another subject, keep the signature.
    let parts: Vec<&str> = good.split('.').collect();
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"sub": "someone-else", "iat": now, "exp": now + 600}).to_string());
    let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
    assert_eq!(
        srv.get("/api/auth/me", &Auth::Bearer(tampered)).await.0,
        401
    );

    // alg=none
    let header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let none = format!("{header}.{}.", parts[1]);
    assert_eq!(srv.get("/api/auth/me", &Auth::Bearer(none)).await.0, 401);

    for garbage in ["", "abc", "a.b.c"] {
        assert_eq!(
            srv.get("/api/auth/me", &Auth::Bearer(garbage.into()))
                .await
                .0,
            401
        );
    }
    let (status, _) = srv
        .call(reqwest::Method::GET, "/api/auth/me", &Auth::None, None)
        .await;
    assert_eq!(status, 401);
    let resp = srv
        .request(reqwest::Method::GET, "/api/auth/me", &Auth::None)
        .header("authorization", "Basic YWRtaW46YWRtaW4=")
        .send()
        .await
        .expect("send");
    assert_eq!(crate::common::read(resp).await.0, 401);
}

async fn bad_api_keys_are_refused(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let mut wrong = srv.admin_key.clone();
    wrong.pop();
    wrong.push('x');
    for key in [wrong, "wag_".into(), "not-a-key".into(), "x".repeat(500)] {
        let (status, body) = srv.get("/api/auth/me", &Auth::Key(key)).await;
        assert_eq!(status, 401, "{body}");
    }
}

async fn tokens_of_deactivated_or_deleted_users_stop_working(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let (id, key, token) = srv.new_user("temp@example.com", "user").await;
    assert_eq!(
        srv.get("/api/auth/me", &Auth::Bearer(token.clone()))
            .await
            .0,
        200
    );
    let (s, b) = srv
        .put(
            &format!("/api/users/{id}"),
            &srv.admin(),
            json!({"active": false}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        srv.get("/api/auth/me", &Auth::Bearer(token.clone()))
            .await
            .0,
        401
    );
    assert_eq!(
        srv.get("/api/auth/me", &Auth::Key(key.clone())).await.0,
        401
    );
    let (s, _) = srv
        .post(
            "/api/auth/login",
            &Auth::None,
            json!({"email": "temp@example.com", "password": "password1"}),
        )
        .await;
    assert_eq!(s, 401);
    assert_eq!(
        srv.delete(&format!("/api/users/{id}"), &srv.admin())
            .await
            .0,
        200
    );
    assert_eq!(srv.get("/api/auth/me", &Auth::Bearer(token)).await.0, 401);
}

async fn tokens_and_keys_survive_a_restart(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let token = srv.admin_token.clone();
    let key = srv.admin_key.clone();
    let srv = srv.restart().await;
    assert_eq!(srv.get("/api/auth/me", &Auth::Bearer(token)).await.0, 200);
    assert_eq!(
        srv.get("/api/auth/me", &Auth::Key(key.clone())).await.0,
        200
    );
    // The key handed out at login is the same one (unsealed from storage).
    assert_eq!(srv.admin_key, key);
}
