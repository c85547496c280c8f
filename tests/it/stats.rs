//! Usage statistics and limits, with the server's clock moved by the test.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use serde_json::{Value, json};
use wagate_actors::domain::ManualClock;

use crate::common::{Auth, TestServer, eventually};
use crate::receiver::Receiver;

/// A day far from the real date, so nothing the real clock stamps falls into its periods.
fn day0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2100, 3, 10, 12, 0, 0)
        .single()
        .expect("date")
}

async fn instance_usage(srv: &TestServer, auth: &Auth, id: &str, period: &str) -> Value {
    let (status, body) = srv
        .get(&format!("/api/stats/instances/{id}?period={period}"), auth)
        .await;
    assert_eq!(status, 200, "{body}");
    body["usage"].clone()
}

async fn send(srv: &TestServer, auth: &Auth, id: &str, to: &str) -> (u16, Value) {
    srv.post(
        &format!("/api/whatsapp/{id}/send"),
        auth,
        json!({"phone": to, "message": "hi"}),
    )
    .await
}

#[tokio::test]
async fn exact_counts_after_a_scripted_workload() {
    let clock = Arc::new(ManualClock::new(day0()));
    let srv = TestServer::start_with_clock(&[], clock.clone()).await;
    let (_, key, _) = srv.new_user("counter@example.com", "user").await;
    let auth = Auth::Key(key);
    let rx = Receiver::start().await;
    let a = srv.connected_instance(&auth, "a", "79220000001").await;
    let b = srv.connected_instance(&auth, "b", "79220000002").await;
    srv.put(
        &format!("/api/instances/{a}"),
        &auth,
        json!({"webhookUrl": rx.url()}),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(send(&srv, &auth, &a, "79220000002").await.0, 200);
    }
    let file = vec![42u8; 1234];
    let form = reqwest::multipart::Form::new()
        .text("phone", "79220000002")
        .part(
            "file",
            reqwest::multipart::Part::bytes(file).file_name("blob.bin"),
        );
    let resp = srv
        .request(
            reqwest::Method::POST,
            &format!("/api/whatsapp/{a}/send-file"),
            &auth,
        )
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(crate::common::read(resp).await.0, 200);
    // B stores what it received; A's webhook receiver got webhook_updated + 4 message_sent.
    eventually(20, "b to have received 4 messages", || async {
        let (_, h) = srv
            .get(
                &format!("/api/instances/{b}/chats/79220000001/messages"),
                &auth,
            )
            .await;
        (h["pagination"]["total"] == 4).then_some(())
    })
    .await;
    rx.wait_for("5 webhooks", 20, |r| r.len() >= 5).await;
    let ua = eventually(20, "webhookSent to be counted", || async {
        let u = instance_usage(&srv, &auth, &a, "today").await;
        (u["webhookSent"] == 5).then_some(u)
    })
    .await;
    assert_eq!(ua["messagesSent"], 4);
    assert_eq!(ua["mediaSent"], 1);
    assert_eq!(ua["totalMediaSize"], 1234);
    assert_eq!(ua["messagesReceived"], 0);
    let ub = instance_usage(&srv, &auth, &b, "today").await;
    assert_eq!(ub["messagesReceived"], 4);
    assert_eq!(ub["mediaReceived"], 1);
    assert_eq!(ub["totalMediaSize"], 1234);
    assert_eq!(ub["messagesSent"], 0);
    assert_eq!(ub["webhookSent"], 0);
    let daily = ub["dailyStats"].as_array().expect("dailyStats");
    assert_eq!(daily.len(), 1);
    assert_eq!(daily[0]["date"], "2100-03-10T00:00:00.000Z");
    assert_eq!(daily[0]["messagesReceived"], 4);

    // apiCalls: every authenticated call naming the instance, this stats call included.
    let before = instance_usage(&srv, &auth, &a, "today").await["apiCalls"]
        .as_u64()
        .expect("n");
    for _ in 0..5 {
        srv.get(&format!("/api/instances/{a}/status"), &auth).await;
    }
    let after = instance_usage(&srv, &auth, &a, "today").await["apiCalls"]
        .as_u64()
        .expect("n");
    assert_eq!(after - before, 6);

    let (status, user) = srv.get("/api/stats/user?period=week", &auth).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["total"]["messagesSent"], 4);
    assert_eq!(user["total"]["messagesReceived"], 4);
    assert_eq!(user["total"]["instanceCount"], 2);
    let list = user["instances"].as_array().expect("instances");
    assert_eq!(list.len(), 2);
    let of_a = list
        .iter()
        .find(|i| i["instanceId"] == a.as_str())
        .expect("a");
    assert_eq!(of_a["name"], "a");
    assert_eq!(of_a["messagesSent"], 4);
    assert!(
        user["total"]["apiCalls"].as_u64().expect("n") >= after,
        "user calls include instance calls"
    );
}

#[tokio::test]
async fn periods_and_daily_buckets_follow_the_clock() {
    let clock = Arc::new(ManualClock::new(day0()));
    let srv = TestServer::start_with_clock(&[], clock.clone()).await;
    let auth = srv.admin();
    let a = srv.connected_instance(&auth, "p", "79220000003").await;
    for _ in 0..2 {
        assert_eq!(send(&srv, &auth, &a, "79220009999").await.0, 200);
    }
    clock.set(day0() + Duration::days(3));
    assert_eq!(send(&srv, &auth, &a, "79220009999").await.0, 200);
    let sent = |u: Value| u["messagesSent"].as_u64().expect("n");
    assert_eq!(sent(instance_usage(&srv, &auth, &a, "today").await), 1);
    assert_eq!(sent(instance_usage(&srv, &auth, &a, "week").await), 3);
    let month = instance_usage(&srv, &auth, &a, "month").await;
    assert_eq!(sent(month.clone()), 3);
    let days: Vec<&str> = month["dailyStats"]
        .as_array()
        .expect("daily")
        .iter()
        .filter_map(|d| d["date"].as_str())
        .collect();
    assert_eq!(
        days,
        ["2100-03-10T00:00:00.000Z", "2100-03-13T00:00:00.000Z"]
    );
    clock.set(day0() + Duration::days(43));
    assert_eq!(send(&srv, &auth, &a, "79220009999").await.0, 200);
    assert_eq!(sent(instance_usage(&srv, &auth, &a, "week").await), 1);
    assert_eq!(sent(instance_usage(&srv, &auth, &a, "month").await), 1);
    assert_eq!(sent(instance_usage(&srv, &auth, &a, "all").await), 4);
    let (_, user) = srv.get("/api/stats/user?period=month", &auth).await;
    assert_eq!(user["total"]["messagesSent"], 1);
    let (_, user) = srv.get("/api/stats/user?period=year", &auth).await;
    assert_eq!(user["total"]["messagesSent"], 4);
    for bad in [
        "/api/stats/user?period=today",
        "/api/stats/user?period=decade",
        &format!("/api/stats/instances/{a}?period=year"),
    ] {
        let (status, body) = srv.get(bad, &auth).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    // Counts survive a restart (flushed at shutdown).
    let srv = srv.restart().await;
    let auth = srv.admin();
    assert_eq!(sent(instance_usage(&srv, &auth, &a, "all").await), 4);
}

#[tokio::test]
async fn system_stats_are_for_admins() {
    let srv = TestServer::start().await;
    let (_, key, _) = srv.new_user("plain@example.com", "user").await;
    let (status, body) = srv.get("/api/stats/system", &Auth::Key(key.clone())).await;
    assert_eq!(status, 403, "{body}");
    let id = srv
        .connected_instance(&Auth::Key(key.clone()), "s", "79220000004")
        .await;
    send(&srv, &Auth::Key(key), &id, "79220009999").await;
    let (status, sys) = srv.get("/api/stats/system", &srv.admin()).await;
    assert_eq!(status, 200, "{sys}");
    assert_eq!(sys["instances"], json!({"total": 1, "active": 1}));
    assert_eq!(sys["users"], json!({"total": 2, "active": 2}));
    assert_eq!(sys["usage"]["messagesSent"], 1);
    assert!(sys["usage"]["apiCalls"].as_u64().expect("n") > 0);
}

#[tokio::test]
async fn message_limits_block_notify_once_and_reset_next_period() {
    let clock = Arc::new(ManualClock::new(day0()));
    let srv = TestServer::start_with_clock(&[], clock.clone()).await;
    let auth = srv.admin();
    let rx = Receiver::start().await;
    let (status, created) = srv
        .post(
            "/api/instances",
            &auth,
            json!({"name": "limited", "engine": "sandbox", "webhookUrl": rx.url(),
                   "limits": {"maxMessagesSent": 2, "period": "day"}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    srv.wait_qr(&auth, &id).await;
    srv.post(
        &format!("/api/sandbox/instances/{id}/scan"),
        &auth,
        json!({"phone": "79220000005"}),
    )
    .await;
    srv.wait_status(&auth, &id, "connected").await;
    for _ in 0..2 {
        assert_eq!(send(&srv, &auth, &id, "79220009999").await.0, 200);
    }
    for _ in 0..2 {
        let (status, body) = send(&srv, &auth, &id, "79220009999").await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["code"], "limit_exceeded");
    }
    let resp = srv
        .request(
            reqwest::Method::POST,
            &format!("/api/whatsapp/{id}/send"),
            &auth,
        )
        .json(&json!({"phone": "79220009999", "message": "x"}))
        .send()
        .await
        .expect("send");
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert_eq!(retry_after, 12 * 3600, "until midnight of the test clock");
    let hooks = rx
        .wait_for("limit_exceeded", 20, |r| {
            r.iter().any(|r| r.json()["event"] == "limit_exceeded")
        })
        .await;
    let limit_hooks: Vec<Value> = hooks
        .iter()
        .map(|r| r.json())
        .filter(|b| b["event"] == "limit_exceeded")
        .collect();
    assert_eq!(limit_hooks.len(), 1, "one per instance per period");
    assert_eq!(
        limit_hooks[0]["data"]["exceededLimits"],
        json!(["maxMessagesSent"])
    );
    assert_eq!(limit_hooks[0]["data"]["usage"]["messagesSent"], 2);
    let (_, ev) = srv
        .get(
            &format!("/api/instances/{id}/events?types=limit_exceeded"),
            &auth,
        )
        .await;
    assert_eq!(ev["count"], 1);

    // The next day the limit is fresh.
    clock.set(day0() + Duration::days(1));
    assert_eq!(send(&srv, &auth, &id, "79220009999").await.0, 200);
    assert_eq!(send(&srv, &auth, &id, "79220009999").await.0, 200);
    assert_eq!(send(&srv, &auth, &id, "79220009999").await.0, 429);
    let (_, ev) = srv
        .get(
            &format!("/api/instances/{id}/events?types=limit_exceeded"),
            &auth,
        )
        .await;
    assert_eq!(ev["count"], 2, "a new period, a new notification");
}

#[tokio::test]
async fn api_call_limits_close_messaging_until_the_month_ends() {
    let clock = Arc::new(ManualClock::new(day0()));
    let srv = TestServer::start_with_clock(&[], clock.clone()).await;
    let auth = srv.admin();
    let id = srv.connected_instance(&auth, "calls", "79220000006").await;
    let (status, body) = srv
        .put(
            &format!("/api/instances/{id}"),
            &auth,
            json!({"limits": {"maxApiCalls": 1000000, "period": "month"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Calls so far this month, then set the limit just above them.
    let used = instance_usage(&srv, &auth, &id, "month").await["apiCalls"]
        .as_u64()
        .expect("n");
    let max = used + 3;
    srv.put(
        &format!("/api/instances/{id}"),
        &auth,
        json!({"limits": {"maxApiCalls": max, "period": "month"}}),
    )
    .await;
    // used+1 (the PUT) … the chats call that makes it max+1 is refused.
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(
            srv.get(&format!("/api/instances/{id}/chats"), &auth)
                .await
                .0,
        );
    }
    assert_eq!(
        codes,
        [200, 200, 429, 429],
        "the call beyond maxApiCalls and later ones are refused"
    );
    // Managing the instance stays possible.
    assert_eq!(
        srv.get(&format!("/api/instances/{id}/status"), &auth)
            .await
            .0,
        200
    );
    clock.set(
        Utc.with_ymd_and_hms(2100, 4, 1, 0, 0, 1)
            .single()
            .expect("date"),
    );
    assert_eq!(
        srv.get(&format!("/api/instances/{id}/chats"), &auth)
            .await
            .0,
        200
    );
}
