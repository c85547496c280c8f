//! Faults, and what must still hold after them: the process killed in the middle of
//! traffic, the database going away and coming back under a running server, webhook
//! receivers that hang or answer too late, and a soak with random session faults.
//!
//! Every wait here waits for a condition (`eventually`, `Receiver::wait_for`), never for a
//! fixed time, and nothing asserts how long anything took.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Auth, Mongo, ProcessServer, TestServer, call_at, eventually, free_port};
use crate::receiver::{Received, Receiver};

/// What the fault tests need of a server, in process or as a child process.
trait Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<Value>,
    ) -> (u16, Value);
}

impl Api for TestServer {
    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<Value>,
    ) -> (u16, Value) {
        TestServer::call(self, method, path, auth, body).await
    }
}

impl Api for ProcessServer {
    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<Value>,
    ) -> (u16, Value) {
        call_at(&self.client, &self.base, method, path, auth, body).await
    }
}

/// One request to a server that may be dead or dying: None when no complete answer came
/// back (connection refused or reset, body cut short).
async fn try_call(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    auth: &Auth,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut rb = auth.apply(client.request(method, format!("{base}{path}")));
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.ok()?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.ok()?;
    Some((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// Creates a sandbox instance with `settings` (webhook fields of the create request),
/// scans its QR code as `phone` and waits until it is connected.
async fn connected(api: &impl Api, auth: &Auth, phone: &str, settings: Value) -> String {
    let mut body = json!({"name": phone, "engine": "sandbox"});
    if let (Some(b), Some(s)) = (body.as_object_mut(), settings.as_object()) {
        b.extend(s.clone());
    }
    let (status, created) = api
        .call(Method::POST, "/api/instances", auth, Some(body))
        .await;
    assert_eq!(status, 201, "create instance: {created}");
    let id = created["id"].as_str().expect("id").to_owned();
    eventually(20, "a QR code to scan", || async {
        let (s, _) = api
            .call(Method::GET, &format!("/api/instances/{id}/qr"), auth, None)
            .await;
        (s == 200).then_some(())
    })
    .await;
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/api/sandbox/instances/{id}/scan"),
            auth,
            Some(json!({"phone": phone})),
        )
        .await;
    assert_eq!(status, 200, "scan: {body}");
    wait_connected(api, auth, &id, 20).await;
    id
}

async fn status_of(api: &impl Api, auth: &Auth, id: &str) -> String {
    let (code, body) = api
        .call(
            Method::GET,
            &format!("/api/instances/{id}/status"),
            auth,
            None,
        )
        .await;
    assert_eq!(code, 200, "status: {body}");
    body["status"].as_str().unwrap_or_default().to_owned()
}

async fn wait_connected(api: &impl Api, auth: &Auth, id: &str, secs: u64) {
    eventually(secs, &format!("instance {id} to be connected"), || async {
        (status_of(api, auth, id).await == "connected").then_some(())
    })
    .await;
}

/// Every message stored in one chat as the history API shows it, all pages.
async fn history(api: &impl Api, auth: &Auth, id: &str, chat: &str) -> Vec<Value> {
    let mut all = Vec::new();
    loop {
        let path = format!(
            "/api/instances/{id}/chats/{chat}/messages?limit=1000&skip={}",
            all.len()
        );
        let (status, page) = api.call(Method::GET, &path, auth, None).await;
        assert_eq!(status, 200, "history: {page}");
        let messages = page["messages"].as_array().expect("messages").clone();
        let done = messages.is_empty() || page["pagination"]["hasMore"] != true;
        all.extend(messages);
        if done {
            return all;
        }
    }
}

/// The WhatsApp ids of every message stored in one chat.
async fn history_ids(api: &impl Api, auth: &Auth, id: &str, chat: &str) -> Vec<String> {
    history(api, auth, id, chat)
        .await
        .iter()
        .map(|m| m["messageId"].as_str().expect("messageId").to_owned())
        .collect()
}

/// Asserts no WhatsApp id appears twice in `stored`.
fn assert_unique(stored: &[String], what: &str) {
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "{what}: a message stored twice");
}

/// (instance, event, messageId) of every webhook received, deduplicated.
fn delivered_messages(received: &[Received]) -> HashSet<(String, String, String)> {
    received
        .iter()
        .filter_map(|r| {
            let body = r.json();
            Some((
                body["data"]["instanceId"].as_str()?.to_owned(),
                body["event"].as_str()?.to_owned(),
                body["data"]["messageId"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Traffic that got a success answer, shared by the tasks that make it.
type Accepted = Arc<Mutex<Vec<(String, String)>>>;

fn count(accepted: &Accepted) -> usize {
    accepted.lock().expect("accepted").len()
}

// ─── a. SIGKILL in the middle of traffic ─────────────────────────────────────────────

/// Senders and inbound writers, each bounded so one page of events holds everything.
const SENDERS: usize = 4;
const INBOUND: usize = 2;
const PER_TASK: usize = 50;
const KILLS: usize = 3;

/// Runs concurrent sends and inbound messages against `srv` and SIGKILLs it once enough
/// of them were accepted (recorded in `sent` and `inbound` as (chat, message id)).
async fn traffic_then_sigkill(
    srv: ProcessServer,
    auth: &Auth,
    id: &str,
    round: usize,
    sent: &Accepted,
    inbound: &Accepted,
) {
    let (sent_before, inbound_before) = (count(sent), count(inbound));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..SENDERS + INBOUND {
        let (client, base, auth) = (srv.client.clone(), srv.base.clone(), auth.clone());
        let (accepted, path, chat) = if w < SENDERS {
            (
                sent.clone(),
                format!("/api/whatsapp/{id}/send"),
                format!("7912100000{w}"),
            )
        } else {
            (
                inbound.clone(),
                format!("/api/sandbox/instances/{id}/inbound"),
                format!("7912200000{w}"),
            )
        };
        let receipt = format!("/api/sandbox/instances/{id}/receipt");
        tasks.spawn(async move {
            for n in 0..PER_TASK {
                let body = if w < SENDERS {
                    json!({"phone": chat, "message": format!("out {round}-{w}-{n}")})
                } else {
                    json!({"from": chat, "body": format!("in {round}-{w}-{n}")})
                };
                let answer = try_call(&client, &base, Method::POST, &path, &auth, Some(body)).await;
                let Some((status, body)) = answer else {
                    return; // the server is gone
                };
                assert_eq!(status, 200, "{path}: {body}");
                let key = if w < SENDERS { "id" } else { "messageId" };
                let mid = body[key].as_str().expect("message id").to_owned();
                accepted
                    .lock()
                    .expect("accepted")
                    .push((chat.clone(), mid.clone()));
                if w < SENDERS {
                    // The recipient's phone acknowledges it: a status change racing the
                    // kill too.
                    let body = json!({"messageId": mid, "status": "delivered"});
                    let answer =
                        try_call(&client, &base, Method::POST, &receipt, &auth, Some(body)).await;
                    let Some((status, body)) = answer else {
                        return;
                    };
                    assert_eq!(status, 200, "{receipt}: {body}");
                }
            }
        });
    }
    eventually(60, "traffic to be under way", || async {
        (count(sent) >= sent_before + 25 && count(inbound) >= inbound_before + 8).then_some(())
    })
    .await;
    srv.kill_hard().await;
    while let Some(done) = tasks.join_next().await {
        done.expect("a traffic task");
    }
    let (new_sent, new_inbound) = (count(sent) - sent_before, count(inbound) - inbound_before);
    assert!(
        new_sent < SENDERS * PER_TASK,
        "the kill came after all traffic ({new_sent} sends): it was not mid-traffic"
    );
    println!("round {round}: killed after {new_sent} accepted sends and {new_inbound} inbound");
}

/// Concurrent sends and inbound messages (each generating webhooks, with the receiver
/// failing some so retries are pending) while the process is SIGKILLed, three times, the
/// later kills landing while the restarted server replays its webhook backlog. After the
/// last restart on the same DATA_DIR: every send and inbound message answered with success
/// is stored exactly once, nothing is stored twice, every stored message has its event,
/// so does every status a receipt moved it to, and every such event stored before a kill
/// is delivered to the receiver, which stayed up throughout.
///
/// `webhooks::order_holds_and_nothing_is_lost_across_sigkill` covers the queue's order
/// with sequential traffic and a receiver that was down; this one races kills against
/// requests and deliveries in flight.
#[tokio::test]
async fn sigkill_mid_traffic_loses_no_accepted_message_and_no_webhook() {
    let data = tempfile::tempdir().expect("tempdir");
    let rx = Receiver::start().await;
    let srv = ProcessServer::spawn(data.path(), &[]).await;
    let auth = srv.admin().await;
    let id = connected(
        &srv,
        &auth,
        "79120000001",
        json!({
            "webhookUrl": rx.url(), "maxRetries": 20, "retryInterval": 100, "notifyDelivery": true
        }),
    )
    .await;
    let sent: Accepted = Arc::default();
    let inbound: Accepted = Arc::default();
    let mut srv = srv;
    for round in 0..KILLS {
        rx.fail_first(2);
        traffic_then_sigkill(srv, &auth, &id, round, &sent, &inbound).await;
        srv = ProcessServer::spawn(data.path(), &[]).await;
        wait_connected(&srv, &auth, &id, 30).await;
    }
    let sent = sent.lock().expect("sent").clone();
    let inbound = inbound.lock().expect("inbound").clone();

    // Every accepted send and every accepted inbound message is stored exactly once: both
    // are answered only once committed.
    let mut chats: HashMap<String, Vec<(&str, &str)>> = HashMap::new();
    for (chat, mid) in &sent {
        chats.entry(chat.clone()).or_default().push(("send", mid));
    }
    for (chat, mid) in &inbound {
        chats
            .entry(chat.clone())
            .or_default()
            .push(("inbound message", mid));
    }
    let mut stored_messages = Vec::new();
    for (chat, accepted) in &chats {
        let stored = history(&srv, &auth, &id, chat).await;
        let ids: Vec<String> = stored
            .iter()
            .map(|m| m["messageId"].as_str().expect("messageId").to_owned())
            .collect();
        assert_unique(&ids, chat);
        for (what, mid) in accepted {
            assert!(
                ids.contains(&(*mid).to_owned()),
                "the accepted {what} {mid} in {chat} is not stored"
            );
        }
        stored_messages.extend(stored);
    }
    println!(
        "{} accepted sends and {} accepted inbound messages, all stored",
        sent.len(),
        inbound.len()
    );

    // Every stored message has its event (they commit together), and every message event
    // stored before a kill reaches the receiver.
    let (status, events) = srv
        .call(
            Method::GET,
            &format!("/api/instances/{id}/events?limit=1000&types=message_sent,message_received"),
            &auth,
            None,
        )
        .await;
    assert_eq!(status, 200, "{events}");
    assert_eq!(events["hasMore"], false, "one page holds every event");
    let expected: HashSet<(String, String, String)> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                id.clone(),
                e["type"].as_str().expect("type").to_owned(),
                e["data"]["messageId"]
                    .as_str()
                    .expect("messageId")
                    .to_owned(),
            )
        })
        .collect();
    for m in &stored_messages {
        let kind = if m["fromMe"] == true {
            "message_sent"
        } else {
            "message_received"
        };
        let mid = m["messageId"].as_str().expect("messageId");
        assert!(
            expected.contains(&(id.clone(), kind.to_owned(), mid.to_owned())),
            "the stored message {mid} has no {kind} event"
        );
    }
    // Every status a receipt moved a stored message to has its event (they commit
    // together too), which reaches the receiver as well.
    let (status, statuses) = srv
        .call(
            Method::GET,
            &format!("/api/instances/{id}/events?limit=1000&types=message_status"),
            &auth,
            None,
        )
        .await;
    assert_eq!(status, 200, "{statuses}");
    assert_eq!(statuses["hasMore"], false, "one page holds every event");
    let reported: HashSet<(String, String)> = statuses["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let data = &e["data"];
            let mid = data["messageId"].as_str().expect("messageId").to_owned();
            (mid, data["status"].as_str().expect("status").to_owned())
        })
        .collect();
    let mut moved = 0;
    for m in stored_messages
        .iter()
        .filter(|m| m["status"] == "delivered")
    {
        let mid = m["messageId"].as_str().expect("messageId");
        assert!(
            reported.contains(&(mid.to_owned(), "delivered".to_owned())),
            "the stored message {mid} became delivered without its message_status event"
        );
        moved += 1;
    }
    assert!(
        moved > 0,
        "no receipt was stored: the check checked nothing"
    );
    println!("{moved} sends stored as delivered, each with its event");
    let mut expected = expected;
    expected.extend(
        reported
            .into_iter()
            .map(|(mid, _)| (id.clone(), "message_status".to_owned(), mid)),
    );
    rx.wait_for("every stored message event as a webhook", 90, |r| {
        expected.is_subset(&delivered_messages(r))
    })
    .await;
    // And the server works on: a send after the restart is stored and delivered.
    let (status, body) = srv
        .call(
            Method::POST,
            &format!("/api/whatsapp/{id}/send"),
            &auth,
            Some(json!({"phone": "79121000000", "message": "after the restart"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let after = body["id"].as_str().expect("id").to_owned();
    rx.wait_for("the webhook of a send after the restart", 30, |r| {
        delivered_messages(r).contains(&(id.clone(), "message_sent".into(), after.clone()))
    })
    .await;
}

// ─── b. The database goes away and comes back ────────────────────────────────────────

/// MongoDB killed under a running server: every call that needs storage answers 503 in
/// the JSON error shape (bounded by the driver's server selection timeout, never a hang
/// or a 500), `/readyz` 503 while `/healthz` stays 200; MongoDB back on the same port:
/// the same server answers again, with its data, without a restart.
#[tokio::test]
async fn a_database_outage_answers_503_and_heals_without_a_restart() {
    let storage = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mongo = Mongo::start(storage.path(), port).await;
    let srv = TestServer::start_with(&[
        ("database_provider", "mongodb"),
        ("database_url", &mongo.url("wagate_outage")),
    ])
    .await;
    let key = Auth::Key(srv.admin_key.clone());
    let id = srv.connected_instance(&key, "outage", "79130000001").await;
    let send = format!("/api/whatsapp/{id}/send");
    let (status, body) = srv
        .post(
            &send,
            &key,
            json!({"phone": "79130000002", "message": "before"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let before = body["id"].as_str().expect("id").to_owned();
    assert_eq!(srv.get("/readyz", &Auth::None).await.0, 200);
    // A user no request has read yet: a user that one has read is kept in the request-path
    // cache (storage/cache.rs), and `/api/auth/me` would be answered from there.
    let (_, _, unread) = srv.new_user("outage@example.com", "user").await;
    let unread = Auth::Bearer(unread);

    mongo.kill().await;

    let history = format!("/api/instances/{id}/chats/79130000002/messages");
    let login =
        json!({"email": crate::common::ADMIN_EMAIL, "password": crate::common::ADMIN_PASSWORD});
    let calls: Vec<(Method, &str, &Auth, Option<Value>, &str)> = vec![
        (Method::GET, "/readyz", &Auth::None, None, "not_ready"),
        (
            Method::GET,
            "/api/instances",
            &key,
            None,
            "storage_unavailable",
        ),
        (
            Method::GET,
            "/api/auth/me",
            &unread,
            None,
            "storage_unavailable",
        ),
        (
            Method::POST,
            "/api/auth/login",
            &Auth::None,
            Some(login.clone()),
            "storage_unavailable",
        ),
        (Method::GET, &history, &key, None, "storage_unavailable"),
        (
            Method::POST,
            &send,
            &key,
            Some(json!({"phone": "79130000002", "message": "during"})),
            "storage_unavailable",
        ),
    ];
    // Concurrently: each waits out the server selection timeout.
    let answers = futures::future::join_all(
        calls
            .iter()
            .map(|(m, path, auth, body, _)| srv.call(m.clone(), path, auth, body.clone())),
    )
    .await;
    for ((m, path, _, _, code), (status, body)) in calls.iter().zip(answers) {
        assert_eq!(status, 503, "{m} {path} during the outage: {body}");
        assert_eq!(body["code"], *code, "{m} {path}: {body}");
    }
    let (status, body) = srv.get("/healthz", &Auth::None).await;
    assert_eq!(status, 200, "the process is alive: {body}");

    let mongo = Mongo::start(storage.path(), port).await;
    eventually(60, "the server to be ready again", || async {
        (srv.get("/readyz", &Auth::None).await.0 == 200).then_some(())
    })
    .await;
    let (status, list) = srv.get("/api/instances", &key).await;
    assert_eq!(status, 200, "{list}");
    assert!(
        list.to_string().contains(&id),
        "the instance survived: {list}"
    );
    let (status, body) = srv
        .post(
            &send,
            &key,
            json!({"phone": "79130000002", "message": "after"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let after = body["id"].as_str().expect("id").to_owned();
    let stored = history_ids(&srv, &key, &id, "79130000002").await;
    assert!(
        stored.contains(&before) && stored.contains(&after),
        "{stored:?}"
    );
    assert_eq!(srv.post("/api/auth/login", &Auth::None, login).await.0, 200);
    assert_eq!(srv.status_of(&key, &id).await, "connected");
    drop(srv);
    drop(mongo);
}

// ─── c. Slow and hung webhook receivers ──────────────────────────────────────────────

/// Accepts TCP connections and never reads from or answers them.
struct Blackhole {
    addr: std::net::SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    async fn start() -> Blackhole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(socket);
            }
        });
        Blackhole {
            addr,
            accepted,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Closes the port and every held connection.
    async fn close(self) -> std::net::SocketAddr {
        self.task.abort();
        let _ = self.task.await;
        self.addr
    }
}

/// The delivery records of an instance, newest first.
async fn deliveries(srv: &TestServer, auth: &Auth, id: &str) -> Vec<Value> {
    let (status, page) = srv
        .get(
            &format!("/api/instances/{id}/webhook/deliveries?limit=1000"),
            auth,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["deliveries"].as_array().expect("deliveries").clone()
}

async fn inbound(srv: &TestServer, auth: &Auth, id: &str, body: &str) -> String {
    let (status, resp) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/inbound"),
            auth,
            json!({"from": "79990002233", "body": body}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    resp["messageId"].as_str().expect("messageId").to_owned()
}

/// With a short WEBHOOK_TIMEOUT_MS:
/// - a receiver that accepts the connection and never answers: every attempt times out,
///   exactly 1 + maxRetries attempts are made, the delivery is recorded failed, and a
///   receiver that comes up later on that address gets the next events;
/// - a receiver that answers only after the timeout: attempts time out and are retried
///   with the same event id, the queue behind them waits, other instances' webhooks flow
///   meanwhile, and once it answers in time every event arrives, in order.
#[tokio::test]
async fn hung_and_slow_receivers_time_out_retry_and_lose_nothing() {
    let srv = TestServer::start_with(&[("webhook_timeout_ms", "300")]).await;
    let auth = srv.admin();
    let hole = Blackhole::start().await;
    let slow = Receiver::start().await;
    slow.hold();
    let good = Receiver::start().await;
    let hung_id = connected(
        &srv,
        &auth,
        "79140000001",
        json!({"webhookUrl": hole.url(), "maxRetries": 2, "retryInterval": 100}),
    )
    .await;
    let slow_id = connected(
        &srv,
        &auth,
        "79140000002",
        json!({"webhookUrl": slow.url(), "maxRetries": 20, "retryInterval": 100}),
    )
    .await;
    let good_id = connected(
        &srv,
        &auth,
        "79140000003",
        json!({"webhookUrl": good.url()}),
    )
    .await;

    // The slow receiver's first event (connected) is attempted, times out, and is tried
    // again with the same id, while later events wait behind it.
    let queued: Vec<String> = {
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(inbound(&srv, &auth, &slow_id, &format!("slow {n}")).await);
        }
        ids
    };
    let attempts = slow
        .wait_for("three attempts of the first event", 30, |r| r.len() >= 3)
        .await;
    let first = attempts[0].header("x-webhook-id").expect("id").to_owned();
    assert!(
        attempts
            .iter()
            .all(|r| r.header("x-webhook-id") == Some(first.as_str())),
        "nothing overtakes the head of the queue: {attempts:?}"
    );
    let numbers: Vec<&str> = attempts[..3]
        .iter()
        .filter_map(|r| r.header("x-webhook-attempt"))
        .collect();
    assert_eq!(numbers, ["1", "2", "3"]);
    let records = eventually(20, "timed-out attempts on record", || async {
        let records = deliveries(&srv, &auth, &slow_id).await;
        (records.len() >= 2).then_some(records)
    })
    .await;
    for record in &records {
        assert_eq!(record["status"], "retrying", "{record}");
        assert!(
            record["error"]
                .as_str()
                .is_some_and(|e| e.contains("timed out")),
            "{record}"
        );
        assert!(record["httpStatus"].is_null(), "{record}");
    }

    // Meanwhile the other instance's webhooks flow: no head-of-line blocking.
    let flowing = inbound(&srv, &auth, &good_id, "still flowing").await;
    good.wait_for("the other instance's webhook", 20, |r| {
        delivered_messages(r).contains(&(
            good_id.clone(),
            "message_received".into(),
            flowing.clone(),
        ))
    })
    .await;
    assert!(
        !delivered_messages(&slow.received())
            .iter()
            .any(|(_, _, m)| queued.contains(m)),
        "the slow instance's queue is still behind its head"
    );

    // The hung receiver: 1 + maxRetries attempts, each timed out, then given up.
    let records = eventually(
        30,
        "the hung receiver's delivery to be given up",
        || async {
            let records = deliveries(&srv, &auth, &hung_id).await;
            records
                .iter()
                .any(|d| d["status"] == "failed")
                .then_some(records)
        },
    )
    .await;
    // Oldest first; the first event's attempts, before the next event's.
    let mut records = records;
    records.reverse();
    let first = records[0]["eventId"].clone();
    let first_event: Vec<&Value> = records.iter().filter(|d| d["eventId"] == first).collect();
    let attempts: Vec<(u64, &str)> = first_event
        .iter()
        .map(|d| {
            (
                d["attempt"].as_u64().expect("attempt"),
                d["status"].as_str().expect("status"),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [(1, "retrying"), (2, "retrying"), (3, "failed")],
        "{records:?}"
    );
    assert!(
        first_event
            .iter()
            .all(|d| d["error"].as_str().is_some_and(|e| e.contains("timed out"))),
        "{records:?}"
    );
    assert!(hole.accepted() >= 3, "every attempt reached the receiver");
    // The hung receiver recovers: a receiver on its address gets the next event.
    let addr = hole.close().await;
    let revived = Receiver::start_on(addr).await;
    let later = inbound(&srv, &auth, &hung_id, "after recovery").await;
    revived
        .wait_for("the next event at the recovered receiver", 20, |r| {
            delivered_messages(r).contains(&(
                hung_id.clone(),
                "message_received".into(),
                later.clone(),
            ))
        })
        .await;

    // The slow receiver answers in time again: everything arrives, in order.
    slow.release();
    let got = slow
        .wait_for("every queued event", 30, |r| {
            let delivered = delivered_messages(r);
            queued.iter().all(|m| {
                delivered.contains(&(slow_id.clone(), "message_received".into(), m.clone()))
            })
        })
        .await;
    let mut order: Vec<String> = Vec::new();
    for r in &got {
        let id = r.header("x-webhook-id").expect("id").to_owned();
        if !order.contains(&id) {
            order.push(id);
        }
    }
    let bodies: Vec<String> = order
        .iter()
        .map(|eid| {
            let r = got
                .iter()
                .find(|r| r.header("x-webhook-id") == Some(eid.as_str()))
                .expect("request");
            let body = r.json();
            body["data"]["messageId"].as_str().map_or_else(
                || body["event"].as_str().unwrap_or_default().to_owned(),
                str::to_owned,
            )
        })
        .collect();
    // The QR code was shown with webhooks already set, before the scan.
    let mut expected = vec!["qr_received".to_owned(), "connected".to_owned()];
    expected.extend(queued.iter().cloned());
    assert_eq!(bodies[..expected.len()], expected[..], "in order");
    let records = eventually(20, "every queued event delivered on record", || async {
        let records = deliveries(&srv, &auth, &slow_id).await;
        let delivered = records
            .iter()
            .filter(|d| d["status"] == "delivered")
            .count();
        (delivered >= expected.len()).then_some(records)
    })
    .await;
    assert!(
        !records.iter().any(|d| d["status"] == "failed"),
        "nothing given up: {records:?}"
    );
}

// ─── d. A bounded soak with random session faults ────────────────────────────────────

/// How long the soak's traffic runs, in seconds (`WAGATE_SOAK_SECS`, default 5).
fn soak_secs() -> u64 {
    std::env::var("WAGATE_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// Answers the traffic of the soak may get while sessions fail under it: accepted, or
/// refused for a reason of the moment (not connected, the session restarting, a call
/// timing out). Never 500, never a 4xx about the request itself.
fn transient(status: u16) -> bool {
    matches!(status, 409 | 502 | 503 | 504)
}

/// Several sandbox instances writing to each other and receiving messages while random
/// `disconnect` and `crash` faults hit them. Afterwards: every instance is connected and
/// really is (its session sends and receives), every accepted send is stored exactly
/// once, no message is stored twice, and every stored message reached the webhook
/// receiver. `WAGATE_SOAK_SECS` makes it longer, `WAGATE_SOAK_SEED` replays a run.
#[tokio::test]
async fn soak_with_random_session_faults_keeps_every_invariant() {
    const INSTANCES: usize = 4;
    const EXTERNAL: [&str; 3] = ["79158000001", "79158000002", "79158000003"];
    let seed: u64 = std::env::var("WAGATE_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!(
        "soak: WAGATE_SOAK_SECS={} WAGATE_SOAK_SEED={seed}",
        soak_secs()
    );
    let srv = Arc::new(
        TestServer::start_with(&[
            // Crashes are the point here: never park an instance as failed for them.
            ("restart_budget", "100000"),
            ("restart_window_ms", "1000"),
        ])
        .await,
    );
    let auth = srv.admin();
    let rx = Receiver::start().await;
    let phones: Vec<String> = (0..INSTANCES).map(|i| format!("7915000000{i}")).collect();
    let mut ids = Vec::new();
    for phone in &phones {
        let settings = json!({"webhookUrl": rx.url(), "maxRetries": 20, "retryInterval": 100});
        ids.push(connected(srv.as_ref(), &auth, phone, settings).await);
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(soak_secs());
    // (instance index, chat) → accepted message ids.
    let sent: Arc<Mutex<Vec<(usize, String, String)>>> = Arc::default();
    let received: Arc<Mutex<Vec<(usize, String, String)>>> = Arc::default();
    let faults = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..INSTANCES {
        {
            // Sends: to another instance (delivered through the sandbox network) or outside.
            let (srv, auth, ids, phones, sent) = (
                srv.clone(),
                auth.clone(),
                ids.clone(),
                phones.clone(),
                sent.clone(),
            );
            let mut rng = StdRng::seed_from_u64(seed ^ (i as u64 * 3 + 1));
            tasks.spawn(async move {
                let mut n = 0;
                while tokio::time::Instant::now() < deadline {
                    let to = if rng.random_bool(0.5) {
                        phones[(i + rng.random_range(1..INSTANCES)) % INSTANCES].clone()
                    } else {
                        EXTERNAL[rng.random_range(0..EXTERNAL.len())].to_owned()
                    };
                    n += 1;
                    let (status, body) = srv
                        .post(
                            &format!("/api/whatsapp/{}/send", ids[i]),
                            &auth,
                            json!({"phone": to, "message": format!("soak {i}-{n}")}),
                        )
                        .await;
                    if status == 200 {
                        let mid = body["id"].as_str().expect("id").to_owned();
                        sent.lock().expect("sent").push((i, to, mid));
                    } else {
                        assert!(transient(status), "send answered {status}: {body}");
                    }
                }
            });
        }
        {
            // Inbound messages from simulated contacts.
            let (srv, auth, ids, received) =
                (srv.clone(), auth.clone(), ids.clone(), received.clone());
            let mut rng = StdRng::seed_from_u64(seed ^ (i as u64 * 3 + 2));
            tasks.spawn(async move {
                let mut n = 0;
                while tokio::time::Instant::now() < deadline {
                    n += 1;
                    let from = EXTERNAL[rng.random_range(0..EXTERNAL.len())];
                    let (status, body) = srv
                        .post(
                            &format!("/api/sandbox/instances/{}/inbound", ids[i]),
                            &auth,
                            json!({"from": from, "body": format!("inbound {i}-{n}")}),
                        )
                        .await;
                    if status == 200 {
                        let mid = body["messageId"].as_str().expect("messageId").to_owned();
                        received
                            .lock()
                            .expect("received")
                            .push((i, from.to_owned(), mid));
                    } else {
                        assert!(transient(status), "inbound answered {status}: {body}");
                    }
                }
            });
        }
        {
            // Faults, paced at random.
            let (srv, auth, ids, faults) = (srv.clone(), auth.clone(), ids.clone(), faults.clone());
            let mut rng = StdRng::seed_from_u64(seed ^ (i as u64 * 3 + 3));
            tasks.spawn(async move {
                while tokio::time::Instant::now() < deadline {
                    let pause = rng.random_range(50..400);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    let kind = if rng.random_bool(0.5) {
                        "disconnect"
                    } else {
                        "crash"
                    };
                    let (status, body) = srv
                        .post(
                            &format!("/api/sandbox/instances/{}/fault", ids[i]),
                            &auth,
                            json!({"kind": kind}),
                        )
                        .await;
                    if status == 200 {
                        faults.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    } else {
                        assert!(transient(status), "fault {kind} answered {status}: {body}");
                    }
                }
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a soak task");
    }
    let sent = sent.lock().expect("sent").clone();
    let received = received.lock().expect("received").clone();
    let faults = faults.load(std::sync::atomic::Ordering::SeqCst);
    println!(
        "soak: {} sends, {} inbound messages accepted; {faults} faults injected",
        sent.len(),
        received.len()
    );
    assert!(faults > 0 && !sent.is_empty() && !received.is_empty());

    // The faults settle: every instance reports connected, and its session really is:
    // a probe to the next instance goes out and arrives there.
    for id in &ids {
        wait_connected(srv.as_ref(), &auth, id, 30).await;
    }
    // A crash injected just before the end may still be taking effect (the session stops,
    // then the supervisor restarts it): a probe refused as not connected is retried until
    // the instance is back, within the bound. Any other answer fails the test.
    let mut probes = Vec::new();
    for i in 0..INSTANCES {
        let to = &phones[(i + 1) % INSTANCES];
        let id = eventually(30, &format!("a probe from instance {i}"), || async {
            let (status, body) = srv
                .post(
                    &format!("/api/whatsapp/{}/send", ids[i]),
                    &auth,
                    json!({"phone": to, "message": "probe"}),
                )
                .await;
            if status == 409 && body["code"] == "not_connected" {
                return None;
            }
            assert_eq!(status, 200, "probe from instance {i}: {body}");
            Some(body["id"].as_str().expect("id").to_owned())
        })
        .await;
        probes.push(id);
    }
    for i in 0..INSTANCES {
        let (at, from) = ((i + 1) % INSTANCES, &phones[i]);
        eventually(20, "the probe to arrive", || async {
            history_ids(srv.as_ref(), &auth, &ids[at], from)
                .await
                .contains(&probes[i])
                .then_some(())
        })
        .await;
    }

    // Storage: every accepted send exactly once, nothing twice.
    let mut chats: Vec<String> = phones.clone();
    chats.extend(EXTERNAL.iter().map(|p| (*p).to_owned()));
    let mut stored: HashMap<(usize, String), Vec<Value>> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        for chat in &chats {
            stored.insert(
                (i, chat.clone()),
                history(srv.as_ref(), &auth, id, chat).await,
            );
        }
    }
    let mid = |m: &Value| m["messageId"].as_str().expect("messageId").to_owned();
    for ((i, chat), messages) in &stored {
        let mids: Vec<String> = messages.iter().map(mid).collect();
        assert_unique(&mids, &format!("instance {i}, chat {chat}"));
    }
    for (i, to, sent_id) in &sent {
        let in_chat = stored[&(*i, to.clone())]
            .iter()
            .filter(|m| mid(m) == *sent_id)
            .count();
        assert_eq!(
            in_chat, 1,
            "the accepted send {sent_id} of instance {i} to {to} is stored exactly once"
        );
    }
    // An inbound message the session accepted is stored exactly once, faults or not.
    for (i, from, inbound_id) in &received {
        let in_chat = stored[&(*i, from.clone())]
            .iter()
            .filter(|m| mid(m) == *inbound_id)
            .count();
        assert_eq!(
            in_chat, 1,
            "the accepted inbound message {inbound_id} of instance {i} from {from} is stored exactly once"
        );
    }

    // Webhooks: every stored message reached the receiver, as the event its direction
    // names.
    let expected: HashSet<(String, String, String)> = stored
        .iter()
        .flat_map(|((i, _), messages)| {
            messages.iter().map(|m| {
                let event = if m["fromMe"] == true {
                    "message_sent"
                } else {
                    "message_received"
                };
                (ids[*i].clone(), event.to_owned(), mid(m))
            })
        })
        .collect();
    rx.wait_for("every stored message as a webhook", 120, |r| {
        expected.is_subset(&delivered_messages(r))
    })
    .await;
}
