//! The users API: CRUD, roles, key regeneration and isolation.

use serde_json::json;

use crate::common::{Auth, Backend, TestServer};

backend_tests!(
    admin_manages_users,
    regenerated_key_replaces_the_old_one_at_once,
    users_see_only_themselves_and_admin_routes_are_closed_to_them,
    operators_need_an_owner,
    the_last_admin_is_protected,
    admin_is_created_once_from_the_configuration,
    deleted_users_and_instances_are_gone_on_the_very_next_request,
);

async fn admin_manages_users(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let (status, created) = srv
        .post(
            "/api/users",
            &srv.admin(),
            json!({"email": "Ann@Example.com", "password": "s3cret!", "firstName": "Ann", "lastName": "Lee", "role": "user"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["email"], "Ann@Example.com");
    assert_eq!(created["role"], "user");
    assert_eq!(created["active"], true);
    assert!(
        created["apiKey"]
            .as_str()
            .is_some_and(|k| k.starts_with("wag_"))
    );
    assert!(
        created["createdAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(created.get("passwordHash").is_none());

    // Duplicate email (case-insensitive) → 409.
    let (status, body) = srv
        .post(
            "/api/users",
            &srv.admin(),
            json!({"email": "ann@example.com", "password": "another1"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");

    let (status, list) = srv.get("/api/users?limit=1&skip=0", &srv.admin()).await;
    assert_eq!(status, 200);
    assert_eq!(list["users"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["pagination"]["total"], 2);
    assert_eq!(list["pagination"]["limit"], 1);
    assert_eq!(list["pagination"]["hasMore"], true);
    assert!(list["users"][0].get("apiKey").is_none());

    let (status, got) = srv.get(&format!("/api/users/{id}"), &srv.admin()).await;
    assert_eq!(status, 200);
    assert_eq!(got["firstName"], "Ann");

    let (status, updated) = srv
        .put(
            &format!("/api/users/{id}"),
            &srv.admin(),
            json!({"lastName": "Smith", "password": "newpass1"}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["lastName"], "Smith");
    let (status, _) = srv
        .post(
            "/api/auth/login",
            &Auth::None,
            json!({"email": "ann@example.com", "password": "newpass1"}),
        )
        .await;
    assert_eq!(status, 200, "new password works");
    let (status, _) = srv
        .post(
            "/api/auth/login",
            &Auth::None,
            json!({"email": "ann@example.com", "password": "s3cret!"}),
        )
        .await;
    assert_eq!(status, 401, "old password no longer works");

    let (status, body) = srv.delete(&format!("/api/users/{id}"), &srv.admin()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(
        srv.get(&format!("/api/users/{id}"), &srv.admin()).await.0,
        404
    );
    assert_eq!(
        srv.delete(&format!("/api/users/{id}"), &srv.admin())
            .await
            .0,
        404
    );
}

async fn regenerated_key_replaces_the_old_one_at_once(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let (id, old_key, token) = srv.new_user("rot@example.com", "user").await;
    assert_eq!(
        srv.get("/api/auth/me", &Auth::Key(old_key.clone())).await.0,
        200
    );
    // The user may rotate its own key.
    let (status, body) = srv
        .post(
            &format!("/api/users/{id}/regenerate-api-key"),
            &Auth::Bearer(token.clone()),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let new_key = body["apiKey"].as_str().expect("apiKey").to_owned();
    assert_ne!(new_key, old_key);
    assert_eq!(srv.get("/api/auth/me", &Auth::Key(old_key)).await.0, 401);
    assert_eq!(
        srv.get("/api/auth/me", &Auth::Key(new_key.clone())).await.0,
        200
    );
    // Login now hands back the new key.
    let (_, login) = srv
        .post(
            "/api/auth/login",
            &Auth::None,
            json!({"email": "rot@example.com", "password": "password1"}),
        )
        .await;
    assert_eq!(login["user"]["apiKey"], new_key.as_str());
    // And the admin may rotate it too.
    let (status, _) = srv
        .post(
            &format!("/api/users/{id}/regenerate-api-key"),
            &srv.admin(),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(srv.get("/api/auth/me", &Auth::Key(new_key)).await.0, 401);
}

async fn users_see_only_themselves_and_admin_routes_are_closed_to_them(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let (alice, _, alice_token) = srv.new_user("alice@example.com", "user").await;
    let (bob, bob_key, _) = srv.new_user("bob@example.com", "user").await;
    let alice_auth = Auth::Bearer(alice_token);

    let (status, me) = srv.get(&format!("/api/users/{alice}"), &alice_auth).await;
    assert_eq!(status, 200);
    assert_eq!(me["email"], "alice@example.com");
    // Another user's data: 404, not 403, so ids are not confirmed.
    let (status, body) = srv.get(&format!("/api/users/{bob}"), &alice_auth).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        srv.put(
            &format!("/api/users/{bob}"),
            &alice_auth,
            json!({"firstName": "X"})
        )
        .await
        .0,
        404
    );
    assert_eq!(
        srv.post(
            &format!("/api/users/{bob}/regenerate-api-key"),
            &alice_auth,
            json!({})
        )
        .await
        .0,
        404
    );
    assert_eq!(
        srv.get("/api/auth/me", &Auth::Key(bob_key)).await.0,
        200,
        "bob's key untouched"
    );

    // Admin-only routes: 403.
    let (status, body) = srv.get("/api/users", &alice_auth).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden");
    assert_eq!(
        srv.post(
            "/api/users",
            &alice_auth,
            json!({"email": "x@example.com", "password": "password1"})
        )
        .await
        .0,
        403
    );
    assert_eq!(
        srv.delete(&format!("/api/users/{bob}"), &alice_auth)
            .await
            .0,
        403
    );
    // A user may update itself but not its role.
    let (status, _) = srv
        .put(
            &format!("/api/users/{alice}"),
            &alice_auth,
            json!({"firstName": "Alicia"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = srv
        .put(
            &format!("/api/users/{alice}"),
            &alice_auth,
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(status, 403);
}

async fn operators_need_an_owner(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let (owner, _, _) = srv.new_user("owner@example.com", "user").await;
    let (status, body) = srv
        .post(
            "/api/users",
            &srv.admin(),
            json!({"email": "op@example.com", "password": "password1", "role": "operator"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("ownerId"))
    );
    let (status, body) = srv
        .post(
            "/api/users",
            &srv.admin(),
            json!({"email": "op@example.com", "password": "password1", "role": "operator", "ownerId": "missing"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, op) = srv
        .post(
            "/api/users",
            &srv.admin(),
            json!({"email": "op@example.com", "password": "password1", "role": "operator", "ownerId": owner}),
        )
        .await;
    assert_eq!(status, 201, "{op}");
    assert_eq!(op["role"], "operator");
    assert_eq!(op["ownerId"], owner.as_str());
    let (status, body) = srv
        .post(
            "/api/users",
            &srv.admin(),
            json!({"email": "u2@example.com", "password": "password1", "role": "user", "ownerId": owner}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

async fn the_last_admin_is_protected(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let (_, me) = srv.get("/api/auth/me", &srv.admin()).await;
    let admin_id = me["id"].as_str().expect("id");
    let (status, body) = srv
        .put(
            &format!("/api/users/{admin_id}"),
            &srv.admin(),
            json!({"role": "user"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "last_admin");
    let (status, _) = srv
        .put(
            &format!("/api/users/{admin_id}"),
            &srv.admin(),
            json!({"active": false}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = srv
        .delete(&format!("/api/users/{admin_id}"), &srv.admin())
        .await;
    assert_eq!(status, 409);
    // With a second admin, the first may step down.
    srv.new_user("admin2@example.com", "admin").await;
    let (status, body) = srv
        .put(
            &format!("/api/users/{admin_id}"),
            &srv.admin(),
            json!({"role": "user"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        srv.get("/api/users", &srv.admin()).await.0,
        403,
        "no longer an admin"
    );
}

async fn admin_is_created_once_from_the_configuration(backend: Backend) {
    let srv = TestServer::start_on(
        backend,
        &[
            ("admin_email", "boss@corp.example"),
            ("admin_password", "b0ss-pass"),
            ("admin_first_name", "Big"),
        ],
    )
    .await;
    let (_, me) = srv.get("/api/auth/me", &srv.admin()).await;
    assert_eq!(me["email"], "boss@corp.example");
    assert_eq!(me["firstName"], "Big");
    let srv = srv.restart().await;
    let (_, list) = srv.get("/api/users", &srv.admin()).await;
    assert_eq!(list["pagination"]["total"], 1, "no second admin on restart");
}

/// Users and instances are cached for the request path; a change or a deletion is in
/// force for the very next request all the same (each record is read, so cached, before
/// it changes).
async fn deleted_users_and_instances_are_gone_on_the_very_next_request(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let (id, key, token) = srv.new_user("gone@example.com", "user").await;
    let (status, created) = srv
        .post(
            "/api/instances",
            &Auth::Key(key.clone()),
            json!({"name": "doomed", "engine": "sandbox"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let instance = created["id"].as_str().expect("id").to_owned();
    let path = format!("/api/instances/{instance}");
    for _ in 0..2 {
        assert_eq!(srv.get(&path, &Auth::Key(key.clone())).await.0, 200);
        assert_eq!(
            srv.get("/api/auth/me", &Auth::Bearer(token.clone()))
                .await
                .0,
            200
        );
    }
    let (status, body) = srv
        .put(
            &path,
            &Auth::Key(key.clone()),
            json!({"name": "renamed", "webhookUrl": "https://crm.example/hook"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, got) = srv.get(&path, &Auth::Key(key.clone())).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["name"], "renamed", "{got}");
    assert_eq!(got["webhookUrl"], "https://crm.example/hook", "{got}");

    let (status, body) = srv.delete(&path, &Auth::Key(key.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(srv.get(&path, &Auth::Key(key.clone())).await.0, 404);
    assert_eq!(srv.get(&path, &srv.admin()).await.0, 404);

    let (status, body) = srv.delete(&format!("/api/users/{id}"), &srv.admin()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(srv.get("/api/auth/me", &Auth::Key(key)).await.0, 401);
    assert_eq!(srv.get("/api/auth/me", &Auth::Bearer(token)).await.0, 401);
}
