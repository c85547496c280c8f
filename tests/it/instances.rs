//! Instances as supervised actors on the sandbox engine, over HTTP.

use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::{Auth, Backend, TestServer, eventually, read_sse};

backend_tests!(
    whole_lifecycle,
    qr_as_png_and_202_while_generating,
    crash_fault_is_supervised_back_to_connected,
    disconnect_and_logout_faults,
    crash_storm_of_200_instances_all_come_back,
    budget_exhaustion_marks_failed_and_reconnect_revives,
    server_restart_restores_connected_instances_without_a_scan,
    users_cannot_see_or_touch_each_others_instances,
    invalid_instance_input,
    pair_code_pairs_the_sandbox_device,
    activity_and_events_filters_and_pagination,
    sse_streams_events_in_order_and_resumes,
);

async fn whole_lifecycle(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let (_, key, _) = srv.new_user("owner@example.com", "user").await;
    let auth = Auth::Key(key);

    let (status, created) = srv
        .post(
            "/api/instances",
            &auth,
            json!({
                "name": "Основной WhatsApp", "description": "Корпоративный аккаунт", "engine": "sandbox",
                "webhookUrl": "https://example.com/webhook", "webhookEnabled": true,
                "notifyReceived": true, "notifySent": true, "notifyDelivery": false, "notifyRead": false,
                "maxRetries": 3, "retryInterval": 60000, "webhookSecret": "optional-secret-key",
                "headers": {"Custom-Header": "custom-value"}
            }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["name"], "Основной WhatsApp");
    assert_eq!(created["description"], "Корпоративный аккаунт");
    assert_eq!(created["webhookUrl"], "https://example.com/webhook");
    assert_eq!(created["webhookEnabled"], true);
    assert!(
        created["userId"].is_string()
            && created["createdAt"].is_string()
            && created["updatedAt"].is_string()
    );
    assert!(created["status"].is_string());

    // GET one: webhookSettings and connectionStatus as the spec shows.
    let (status, got) = srv.get(&format!("/api/instances/{id}"), &auth).await;
    assert_eq!(status, 200);
    let ws = &got["webhookSettings"];
    assert_eq!(ws["instanceId"], id.as_str());
    assert_eq!(ws["secret"], "optional-secret-key");
    assert_eq!(ws["headers"]["Custom-Header"], "custom-value");
    assert_eq!(ws["retryInterval"], 60000);
    assert_eq!(ws["maxRetries"], 3);
    assert!(got["connectionStatus"]["ready"].is_boolean());

    // QR, then scan → connected.
    let code = srv.wait_qr(&auth, &id).await;
    assert!(code.starts_with("2@"), "WhatsApp-shaped ref: {code}");
    assert_eq!(code.split(',').count(), 4, "{code}");
    let (status, _) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/scan"),
            &auth,
            json!({"phone": "+7 (900) 123-45-67"}),
        )
        .await;
    assert_eq!(status, 200);
    srv.wait_status(&auth, &id, "connected").await;
    let (_, st) = srv.get(&format!("/api/instances/{id}/status"), &auth).await;
    assert_eq!(st["instanceId"], id.as_str());
    assert_eq!(
        (st["ready"].as_bool(), st["hasQr"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(st["connectionDetails"]["status"], "connected");
    assert_eq!(st["phone"], "79001234567");
    let (_, wst) = srv.get(&format!("/api/whatsapp/{id}/status"), &auth).await;
    assert_eq!(
        wst,
        json!({"ready": true, "status": "connected", "hasQr": false})
    );
    let (status, body) = srv.get(&format!("/api/instances/{id}/qr"), &auth).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "already_connected");

    // List carries connectionStatus.
    let (_, list) = srv.get("/api/instances", &auth).await;
    let instances = list["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0]["connectionStatus"]["status"], "connected");

    // Update, including webhookSettings.
    let (status, upd) = srv
        .put(
            &format!("/api/instances/{id}"),
            &auth,
            json!({"name": "Новое имя", "webhookSettings": {"notifyRead": true, "maxRetries": 5, "secret": "new-secret-key", "headers": {"New-Custom-Header": "new-value"}}}),
        )
        .await;
    assert_eq!(status, 200, "{upd}");
    assert_eq!(upd["name"], "Новое имя");
    assert!(upd["updatedAt"].is_string());
    let (_, got) = srv.get(&format!("/api/instances/{id}"), &auth).await;
    assert_eq!(got["webhookSettings"]["notifyRead"], true);
    assert_eq!(got["webhookSettings"]["maxRetries"], 5);
    assert_eq!(got["webhookSettings"]["secret"], "new-secret-key");
    assert_eq!(
        got["webhookSettings"]["headers"],
        json!({"New-Custom-Header": "new-value"})
    );
    assert_eq!(
        got["webhookSettings"]["notifySent"], true,
        "untouched fields stay"
    );

    // Reconnect keeps the session.
    let (status, body) = srv
        .post(&format!("/api/instances/{id}/reconnect"), &auth, json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], format!("Instance {id} reconnected"));
    srv.wait_status(&auth, &id, "connected").await;

    // Logout → logged_out; the QR flow starts again on request (202, then a code).
    let (status, body) = srv
        .post(&format!("/api/instances/{id}/logout"), &auth, json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "message": format!("Instance {id} logged out")})
    );
    srv.wait_status(&auth, &id, "logged_out").await;
    let (status, body) = srv.get(&format!("/api/instances/{id}/qr"), &auth).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "generating");
    assert!(body["message"].is_string());
    srv.wait_qr(&auth, &id).await;

    // Activity tells the story.
    let actions = srv.actions(&auth, &id).await;
    for expected in [
        "created",
        "qr_received",
        "connected",
        "updated",
        "logged_out",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing in {actions:?}"
        );
    }

    // Delete stops the actor and removes the session data.
    let session_dir = srv.dir.path().join("instances").join(&id);
    assert!(
        session_dir.exists(),
        "session store under DATA_DIR/instances/<id>"
    );
    let (status, body) = srv.delete(&format!("/api/instances/{id}"), &auth).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["message"],
        format!("Instance {id} deleted successfully")
    );
    assert!(!session_dir.exists(), "session data removed");
    assert_eq!(srv.get(&format!("/api/instances/{id}"), &auth).await.0, 404);
    assert_eq!(
        srv.get(&format!("/api/instances/{id}/qr"), &auth).await.0,
        404
    );
}

async fn qr_as_png_and_202_while_generating(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let id = srv.connected_instance(&auth, "png", "15550001111").await;
    srv.post(&format!("/api/instances/{id}/logout"), &auth, json!({}))
        .await;
    srv.wait_status(&auth, &id, "logged_out").await;
    // A logged-out device has no code yet: asking starts a new pairing.
    let (status, body) = srv.get(&format!("/api/whatsapp/{id}/qr"), &auth).await;
    assert_eq!(status, 202, "{body}");
    let code = srv.wait_qr(&auth, &id).await;
    let resp = srv
        .request(
            reqwest::Method::GET,
            &format!("/api/instances/{id}/qr?format=png"),
            &auth,
        )
        .send()
        .await
        .expect("png");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    let bytes = resp.bytes().await.expect("bytes");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // The PNG decodes to a square grayscale image of a plausible size.
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()));
    let reader = decoder.read_info().expect("valid png");
    let info = reader.info();
    assert_eq!(info.width, info.height);
    assert!(info.width >= 200, "{}", info.width);
    assert!(!code.is_empty());
    let (status, body) = srv
        .get(&format!("/api/instances/{id}/qr?format=gif"), &auth)
        .await;
    assert_eq!(status, 400, "{body}");
}

async fn crash_fault_is_supervised_back_to_connected(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let id = srv.connected_instance(&auth, "crashy", "15550002222").await;
    let (status, body) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/fault"),
            &auth,
            json!({"kind": "crash"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Restarted from the stored session: connected again without a new scan.
    eventually(
        20,
        "reconnecting then connected in the activity log",
        || async {
            let actions = srv.actions(&auth, &id).await;
            let after_first = actions
                .iter()
                .skip_while(|a| *a != "connected")
                .skip(1)
                .collect::<Vec<_>>();
            let pos = after_first.iter().position(|a| *a == "reconnecting")?;
            after_first[pos..]
                .iter()
                .any(|a| *a == "connected")
                .then_some(())
        },
    )
    .await;
    srv.wait_status(&auth, &id, "connected").await;
    let (_, logs) = srv
        .get(
            &format!("/api/instances/{id}/activity?actions=reconnecting"),
            &auth,
        )
        .await;
    let details = &logs["logs"][0]["details"];
    assert_eq!(details["attempt"], 1, "{details}");
    assert!(
        details["reason"]
            .as_str()
            .is_some_and(|r| r.contains("crash")),
        "{details}"
    );
}

async fn disconnect_and_logout_faults(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let id = srv.connected_instance(&auth, "flaky", "15550003333").await;
    srv.post(
        &format!("/api/sandbox/instances/{id}/fault"),
        &auth,
        json!({"kind": "disconnect"}),
    )
    .await;
    eventually(20, "disconnected then connected", || async {
        let actions = srv.actions(&auth, &id).await;
        let pos = actions.iter().position(|a| a == "disconnected")?;
        actions[pos..]
            .iter()
            .any(|a| a == "connected")
            .then_some(())
    })
    .await;
    srv.wait_status(&auth, &id, "connected").await;
    srv.post(
        &format!("/api/sandbox/instances/{id}/fault"),
        &auth,
        json!({"kind": "logout"}),
    )
    .await;
    srv.wait_status(&auth, &id, "logged_out").await;
    // Bad fault kinds and non-sandbox controls are refused clearly.
    let (status, body) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/fault"),
            &auth,
            json!({"kind": "explode"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/scan"),
            &auth,
            json!({"phone": "12"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

async fn crash_storm_of_200_instances_all_come_back(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let ids: Vec<String> = futures::stream::iter(0..200)
        .map(|i| {
            let (srv, auth) = (&srv, &auth);
            async move {
                srv.connected_instance(auth, &format!("storm-{i}"), &format!("1555{i:07}"))
                    .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let crashed: Vec<u16> = futures::stream::iter(ids.iter())
        .map(|id| {
            let (srv, auth) = (&srv, &auth);
            async move {
                srv.post(
                    &format!("/api/sandbox/instances/{id}/fault"),
                    auth,
                    json!({"kind": "crash"}),
                )
                .await
                .0
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    assert!(crashed.iter().all(|s| *s == 200), "{crashed:?}");
    eventually(60, "all 200 instances connected again", || async {
        let (_, list) = srv.get("/api/instances", &auth).await;
        let all = list["instances"].as_array()?;
        (all.len() == 200
            && all
                .iter()
                .all(|i| i["connectionStatus"]["status"] == "connected"))
        .then_some(())
    })
    .await;
    for id in ids.iter().take(5) {
        assert!(
            srv.actions(&auth, id)
                .await
                .iter()
                .any(|a| a == "reconnecting")
        );
    }
    // The supervisor is alive: a new instance still starts and pairs.
    srv.connected_instance(&auth, "after-storm", "15559999999")
        .await;
}

async fn budget_exhaustion_marks_failed_and_reconnect_revives(backend: Backend) {
    let srv = TestServer::start_on(
        backend,
        &[("restart_budget", "1"), ("restart_window_ms", "60000")],
    )
    .await;
    let auth = srv.admin();
    let id = srv
        .connected_instance(&auth, "fragile", "15550004444")
        .await;
    srv.post(
        &format!("/api/sandbox/instances/{id}/fault"),
        &auth,
        json!({"kind": "crash"}),
    )
    .await;
    eventually(20, "the first restart", || async {
        srv.actions(&auth, &id)
            .await
            .iter()
            .any(|a| a == "reconnecting")
            .then_some(())
    })
    .await;
    srv.wait_status(&auth, &id, "connected").await;
    // A second crash inside the window exceeds the budget.
    eventually(20, "the crash fault to be accepted", || async {
        let (s, _) = srv
            .post(
                &format!("/api/sandbox/instances/{id}/fault"),
                &auth,
                json!({"kind": "crash"}),
            )
            .await;
        (s == 200).then_some(())
    })
    .await;
    srv.wait_status(&auth, &id, "failed").await;
    assert!(srv.actions(&auth, &id).await.iter().any(|a| a == "failed"));
    let (status, body) = srv
        .post(&format!("/api/instances/{id}/reconnect"), &auth, json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    srv.wait_status(&auth, &id, "connected").await;
}

async fn server_restart_restores_connected_instances_without_a_scan(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let connected = srv.connected_instance(&auth, "keep", "15550005555").await;
    let waiting = srv.new_instance(&auth, "waiting").await;
    srv.wait_qr(&auth, &waiting).await;
    let srv = srv.restart().await;
    let auth = srv.admin();
    // The session reconnects by itself: a second `connected` entry, no scan in between.
    eventually(20, "the restored session to connect", || async {
        let actions = srv.actions(&auth, &connected).await;
        let connects = actions.iter().filter(|a| *a == "connected").count();
        assert!(connects <= 2, "{actions:?}");
        (connects == 2).then_some(())
    })
    .await;
    srv.wait_status(&auth, &connected, "connected").await;
    let (_, st) = srv
        .get(&format!("/api/instances/{connected}/status"), &auth)
        .await;
    assert_eq!(st["phone"], "15550005555");
    // The unpaired one shows a QR again.
    srv.wait_qr(&auth, &waiting).await;
}

async fn users_cannot_see_or_touch_each_others_instances(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let (_, alice_key, _) = srv.new_user("alice@example.com", "user").await;
    let (_, bob_key, _) = srv.new_user("bob@example.com", "user").await;
    let alice = Auth::Key(alice_key);
    let bob = Auth::Key(bob_key);
    let id = srv.new_instance(&alice, "alice's").await;
    let (_, list) = srv.get("/api/instances", &bob).await;
    assert_eq!(list["instances"].as_array().map(Vec::len), Some(0));
    let paths = [
        format!("/api/instances/{id}"),
        format!("/api/instances/{id}/status"),
        format!("/api/instances/{id}/qr"),
        format!("/api/instances/{id}/activity"),
        format!("/api/instances/{id}/events"),
        format!("/api/whatsapp/{id}/status"),
        format!("/api/whatsapp/{id}/qr"),
    ];
    for p in &paths {
        assert_eq!(srv.get(p, &bob).await.0, 404, "GET {p}");
        assert_eq!(srv.get(p, &alice).await.0 / 100, 2, "GET {p} as owner");
    }
    for p in [
        format!("/api/instances/{id}/reconnect"),
        format!("/api/instances/{id}/logout"),
        format!("/api/whatsapp/{id}/logout"),
        format!("/api/sandbox/instances/{id}/fault"),
    ] {
        assert_eq!(
            srv.post(&p, &bob, json!({"kind": "crash"})).await.0,
            404,
            "POST {p}"
        );
    }
    assert_eq!(
        srv.put(
            &format!("/api/instances/{id}"),
            &bob,
            json!({"name": "mine"})
        )
        .await
        .0,
        404
    );
    assert_eq!(
        srv.delete(&format!("/api/instances/{id}"), &bob).await.0,
        404
    );
    // The admin sees everything.
    let (_, all) = srv.get("/api/instances", &srv.admin()).await;
    assert_eq!(all["instances"].as_array().map(Vec::len), Some(1));
    // Anonymous: 401.
    assert_eq!(srv.get("/api/instances", &Auth::None).await.0, 401);
}

async fn invalid_instance_input(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    for (body, field) in [
        (json!({}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "x", "engine": "selenium"}), "engine"),
        (
            json!({"name": "x", "webhookUrl": "ftp://example.com"}),
            "webhookUrl",
        ),
        (
            json!({"name": "x", "webhookUrl": "not a url"}),
            "webhookUrl",
        ),
        (json!({"name": "x", "maxRetries": 1000}), "maxRetries"),
        (json!({"name": "x", "retryInterval": 1}), "retryInterval"),
        (
            json!({"name": "x", "headers": {"Bad Header": "v"}}),
            "headers",
        ),
        (json!({"name": "x", "maxRetries": "three"}), "maxRetries"),
    ] {
        let (status, resp) = srv.post("/api/instances", &auth, body.clone()).await;
        assert_eq!(status, 400, "{body} → {resp}");
        assert!(
            resp["error"].as_str().is_some_and(|e| e.contains(field)),
            "{field}: {resp}"
        );
    }
    let id = srv.new_instance(&auth, "ok").await;
    for q in [
        "limit=0",
        "limit=x",
        "startDate=yesterday",
        "startDate=2024-02-01&endDate=2024-01-01",
    ] {
        let (status, body) = srv
            .get(&format!("/api/instances/{id}/activity?{q}"), &auth)
            .await;
        assert_eq!(status, 400, "{q}: {body}");
    }
    for q in ["since=notadate", "limit=-5"] {
        let (status, body) = srv
            .get(&format!("/api/instances/{id}/events?{q}"), &auth)
            .await;
        assert_eq!(status, 400, "{q}: {body}");
    }
    let (status, body) = srv
        .post(
            &format!("/api/instances/{id}/pair-code"),
            &auth,
            json!({"phone": "abc"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(srv.get("/api/instances/does-not-exist", &auth).await.0, 404);
}

async fn pair_code_pairs_the_sandbox_device(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let id = srv.new_instance(&auth, "by-code").await;
    srv.wait_qr(&auth, &id).await;
    let (status, body) = srv
        .post(
            &format!("/api/instances/{id}/pair-code"),
            &auth,
            json!({"phone": "+1 555 000 6666"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let code = body["code"].as_str().expect("code");
    assert_eq!(code.len(), 9, "{code}");
    assert_eq!(&code[4..5], "-");
    srv.wait_status(&auth, &id, "connected").await;
    let (_, st) = srv.get(&format!("/api/instances/{id}/status"), &auth).await;
    assert_eq!(st["phone"], "15550006666");
}

async fn activity_and_events_filters_and_pagination(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let id = srv.connected_instance(&auth, "events", "15550007777").await;
    let (_, body) = srv
        .get(
            &format!("/api/instances/{id}/activity?limit=1&skip=0"),
            &auth,
        )
        .await;
    assert_eq!(body["logs"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["pagination"]["limit"], 1);
    assert_eq!(body["pagination"]["skip"], 0);
    assert_eq!(body["pagination"]["hasMore"], true);
    let total = body["pagination"]["total"].as_u64().expect("total");
    assert!(total >= 3);
    let log = &body["logs"][0];
    for f in ["id", "instanceId", "action", "details", "createdAt"] {
        assert!(!log[f].is_null(), "{f} in {log}");
    }
    let (_, only) = srv
        .get(
            &format!("/api/instances/{id}/activity?actions=connected,created"),
            &auth,
        )
        .await;
    let actions: Vec<&str> = only["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter_map(|l| l["action"].as_str())
        .collect();
    assert_eq!(actions, ["connected", "created"], "newest first, filtered");
    let (_, none) = srv
        .get(
            &format!("/api/instances/{id}/activity?startDate=2000-01-01&endDate=2000-01-02"),
            &auth,
        )
        .await;
    assert_eq!(none["pagination"]["total"], 0);

    let (_, ev) = srv
        .get(
            &format!("/api/instances/{id}/events?types=connected"),
            &auth,
        )
        .await;
    assert_eq!(ev["count"], 1, "{ev}");
    let event = &ev["events"][0];
    assert_eq!(event["type"], "connected");
    assert_eq!(event["data"]["instanceId"], id.as_str());
    assert_eq!(event["data"]["phone"], "15550007777");
    assert_eq!(ev["latestTimestamp"], event["timestamp"]);
    assert_eq!(ev["hasMore"], false);
    // since = latestTimestamp → nothing new.
    let since = event["timestamp"].as_str().expect("ts");
    let (_, later) = srv
        .get(
            &format!("/api/instances/{id}/events?types=connected&since={since}"),
            &auth,
        )
        .await;
    assert_eq!(later["count"], 0);
    assert_eq!(later["latestTimestamp"], since);
    let (_, qr) = srv
        .get(
            &format!("/api/instances/{id}/events?types=qr_received"),
            &auth,
        )
        .await;
    assert!(
        qr["events"][0]["data"]["qrCode"]
            .as_str()
            .is_some_and(|c| c.starts_with("2@")),
        "{qr}"
    );
}

async fn sse_streams_events_in_order_and_resumes(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let id = srv.new_instance(&auth, "stream").await;
    srv.wait_qr(&auth, &id).await;
    let resp = srv
        .request(
            reqwest::Method::GET,
            &format!("/api/instances/{id}/events/stream"),
            &auth,
        )
        .send()
        .await
        .expect("sse");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/event-stream"))
    );
    srv.post(
        &format!("/api/sandbox/instances/{id}/scan"),
        &auth,
        json!({"phone": "15550008888"}),
    )
    .await;
    srv.wait_status(&auth, &id, "connected").await;
    srv.post(
        &format!("/api/sandbox/instances/{id}/fault"),
        &auth,
        json!({"kind": "disconnect"}),
    )
    .await;
    let got = read_sse(resp, 3).await;
    let types: Vec<&str> = got.iter().filter_map(|(_, e)| e["type"].as_str()).collect();
    assert_eq!(types, ["connected", "disconnected", "connected"], "{got:?}");
    for (_, e) in &got {
        assert_eq!(e["data"]["instanceId"], id.as_str());
        assert!(e["timestamp"].is_string());
    }
    let ids: Vec<&String> = got.iter().map(|(i, _)| i).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

    // Resume after the first event: the two later ones are replayed from storage.
    let resp = srv
        .request(
            reqwest::Method::GET,
            &format!("/api/instances/{id}/events/stream"),
            &auth,
        )
        .header("Last-Event-ID", got[0].0.clone())
        .send()
        .await
        .expect("sse");
    let replay = read_sse(resp, 2).await;
    assert_eq!(replay[0].0, got[1].0);
    assert_eq!(replay[1].0, got[2].0);
}

/// The document's `disconnected` event after a logout: «"reason": "logout",
/// "willReconnect": false» — the same in the webhook, in `/events` and on the SSE stream.
#[tokio::test]
async fn logout_is_reported_with_the_documents_reason() {
    let srv = TestServer::start().await;
    let auth = srv.admin();
    let rx = crate::receiver::Receiver::start().await;
    let id = srv.connected_instance(&auth, "logout", "79006660001").await;
    let (status, body) = srv
        .put(
            &format!("/api/instances/{id}"),
            &auth,
            json!({"webhookUrl": rx.url(), "webhookEnabled": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let stream = srv
        .request(
            reqwest::Method::GET,
            &format!("/api/instances/{id}/events/stream"),
            &auth,
        )
        .send()
        .await
        .expect("sse");
    assert_eq!(stream.status(), 200);
    let (status, body) = srv
        .post(&format!("/api/instances/{id}/logout"), &auth, json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    srv.wait_status(&auth, &id, "logged_out").await;

    let documented = |data: &Value, what: &str| {
        assert_eq!(
            (data["reason"].as_str(), data["willReconnect"].as_bool()),
            (Some("logout"), Some(false)),
            "{what}: the document says «\"reason\": \"logout\", \"willReconnect\": false»: {data}"
        );
        assert_eq!(data["instanceId"], id.as_str(), "{what}: {data}");
    };
    let hooks = rx
        .wait_for("the disconnected webhook", 20, |r| {
            r.iter().any(|r| r.json()["event"] == "disconnected")
        })
        .await;
    let hook = hooks
        .iter()
        .map(|r| r.json())
        .find(|h| h["event"] == "disconnected")
        .expect("disconnected webhook");
    documented(&hook["data"], "webhook");

    let (status, events) = srv
        .get(
            &format!("/api/instances/{id}/events?types=disconnected"),
            &auth,
        )
        .await;
    assert_eq!(status, 200, "{events}");
    assert_eq!(events["count"], 1, "{events}");
    documented(&events["events"][0]["data"], "/events");

    let streamed = read_sse(stream, 1).await;
    let (_, event) = streamed
        .iter()
        .find(|(_, e)| e["type"] == "disconnected")
        .expect("disconnected on the stream");
    documented(&event["data"], "SSE");
}

/// `PUT /api/instances/{instanceId}` takes the webhook settings in both forms: inside
/// `webhookSettings`, as the document's update example («"webhookSettings": {
/// "notifyReceived": true, "notifySent": false, …}»), and flat, as creation takes them
/// («"notifyReceived": true, "notifySent": true»). An unknown field answers 400 naming it.
#[tokio::test]
async fn update_takes_flat_and_nested_webhook_settings() {
    let srv = TestServer::start().await;
    let auth = srv.admin();
    let id = srv.new_instance(&auth, "settings").await;
    let settings = || async {
        let (status, body) = srv.get(&format!("/api/instances/{id}"), &auth).await;
        assert_eq!(status, 200, "{body}");
        body["webhookSettings"].clone()
    };

    // Flat, as at creation.
    let (status, body) = srv
        .put(
            &format!("/api/instances/{id}"),
            &auth,
            json!({"notifySent": false, "notifyReceived": false, "notifyRead": true,
                   "maxRetries": 7, "retryInterval": 5000, "webhookSecret": "flat-secret",
                   "headers": {"X-Flat": "1"}}),
        )
        .await;
    assert_eq!(status, 200, "flat settings: {body}");
    let got = settings().await;
    assert_eq!(
        (
            &got["notifySent"],
            &got["notifyReceived"],
            &got["notifyRead"],
            &got["maxRetries"],
            &got["retryInterval"],
            &got["secret"],
            &got["headers"]
        ),
        (
            &json!(false),
            &json!(false),
            &json!(true),
            &json!(7),
            &json!(5000),
            &json!("flat-secret"),
            &json!({"X-Flat": "1"})
        ),
        "{got}"
    );

    // Nested, as the document's update example.
    let (status, body) = srv
        .put(
            &format!("/api/instances/{id}"),
            &auth,
            json!({
                "name": "Новое имя WhatsApp",
                "description": "Обновленное описание",
                "webhookUrl": "https://new-example.com/webhook",
                "webhookEnabled": true,
                "webhookSettings": {
                    "notifyReceived": true, "notifySent": false, "notifyDelivery": true,
                    "notifyRead": true, "maxRetries": 5, "retryInterval": 30000,
                    "secret": "new-secret-key", "headers": {"New-Custom-Header": "new-value"}
                }
            }),
        )
        .await;
    assert_eq!(status, 200, "the document's example: {body}");
    let got = settings().await;
    assert_eq!(got["notifyReceived"], true, "{got}");
    assert_eq!(got["notifyDelivery"], true, "{got}");
    assert_eq!(got["maxRetries"], 5, "{got}");
    assert_eq!(got["secret"], "new-secret-key", "{got}");

    // Both at once: flat fields apply, the nested object wins where both speak.
    let (status, body) = srv
        .put(
            &format!("/api/instances/{id}"),
            &auth,
            json!({"notifySent": true, "notifyDelivery": false,
                   "webhookSettings": {"notifySent": false}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let got = settings().await;
    assert_eq!(
        (&got["notifySent"], &got["notifyDelivery"]),
        (&json!(false), &json!(false)),
        "{got}"
    );

    // Unknown fields, flat or nested, are refused naming them; nothing changes.
    for (body, field) in [
        (json!({"notifySnt": true}), "notifySnt"),
        (
            json!({"webhookSettings": {"notifyEverything": true}}),
            "notifyEverything",
        ),
        (json!({"maxRetries": "five"}), "maxRetries"),
    ] {
        let (status, resp) = srv
            .put(&format!("/api/instances/{id}"), &auth, body.clone())
            .await;
        assert_eq!(
            (status, resp["code"].as_str()),
            (400, Some("validation_error")),
            "{body}: {resp}"
        );
        assert!(
            resp["error"].as_str().is_some_and(|e| e.contains(field)),
            "{body}: the message names {field}: {resp}"
        );
    }
    assert_eq!(settings().await, got, "refused updates change nothing");
}
