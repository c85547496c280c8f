//! The database API: `/api/db/status` and the live provider switch, against a real
//! SQLite file and the MongoDB test server.

use std::sync::Arc;

use serde_json::{Value, json};
use wagate::storage::copy::copy_all;
use wagate::storage::mongo::MongoStorage;
use wagate::storage::sqlite::SqliteStorage;
use wagate_actors::domain::UsageFilter;
use wagate_actors::store::{DynStorage, RecordKind, StoreResult};

use crate::common::{Auth, TestServer, eventually, fresh_mongodb_url};
use crate::storage_suite::{export_everything, fill_every_kind};
use crate::waba::{self, FakeGraph};

/// The SQLite file of a test server (the default URL under its DATA_DIR), opened beside it.
async fn sqlite_of(srv: &TestServer) -> DynStorage {
    let store = SqliteStorage::open(&srv.dir.path().join("whatsapp-api.db"))
        .await
        .expect("open the server's SQLite file");
    Arc::new(store)
}

async fn mongo_at(url: &str) -> DynStorage {
    Arc::new(
        MongoStorage::connect(url)
            .await
            .expect("connect to the MongoDB test server"),
    )
}

async fn switch(srv: &TestServer, auth: &Auth, provider: &str) -> (u16, Value) {
    srv.post("/api/db/switch", auth, json!({"provider": provider}))
        .await
}

async fn provider_of(srv: &TestServer) -> String {
    let (status, body) = srv.get("/api/db/status", &srv.admin()).await;
    assert_eq!(status, 200, "{body}");
    body["provider"].as_str().expect("provider").to_owned()
}

/// A port nobody listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

#[tokio::test]
async fn status_validation_and_admin_only() {
    let srv = TestServer::start().await;
    let admin = srv.admin();
    let (status, body) = srv.get("/api/db/status", &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider"], "sqlite");
    let url = body["url"].as_str().expect("url");
    assert!(
        url.starts_with("file:") && url.ends_with("whatsapp-api.db"),
        "{url}"
    );
    assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{body}");

    let (_, key, token) = srv.new_user("plain@example.com", "user").await;
    for auth in [Auth::Key(key), Auth::Bearer(token)] {
        let (status, body) = srv.get("/api/db/status", &auth).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
        let (status, _) = switch(&srv, &auth, "mongodb").await;
        assert_eq!(status, 403);
    }
    let (status, _) = srv.get("/api/db/status", &Auth::None).await;
    assert_eq!(status, 401);

    let (status, body) = switch(&srv, &admin, "sqlite").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "already_active");
    let (status, body) = switch(&srv, &admin, "oracle").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("oracle")),
        "{body}"
    );
    let (status, body) = srv.post("/api/db/switch", &admin, json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_error"))
    );
    let (status, body) = switch(&srv, &admin, "mongodb").await;
    assert_eq!(status, 422, "no DATABASE_URL: {body}");
    assert_eq!(body["code"], "database_url_missing");
    assert_eq!(provider_of(&srv).await, "sqlite");
}

#[tokio::test]
async fn unreachable_mongodb_keeps_the_old_provider() {
    let url = format!("mongodb://127.0.0.1:{}/wagate", closed_port());
    let srv = TestServer::start_with(&[("database_url", &url)]).await;
    let admin = srv.admin();
    let (status, body) = switch(&srv, &admin, "mongodb").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "database_unavailable");
    let why = body["error"].as_str().expect("error");
    assert!(
        why.contains("mongodb") && why.contains("still on sqlite"),
        "{why}"
    );
    assert_eq!(provider_of(&srv).await, "sqlite");
    assert!(
        !srv.dir.path().join("storage-provider.json").exists(),
        "a failed switch records nothing"
    );
    // The old provider keeps working, for reads and writes.
    let (id, ..) = srv.new_user("after@example.com", "user").await;
    let (status, _) = srv.get(&format!("/api/users/{id}"), &admin).await;
    assert_eq!(status, 200);
    let srv = srv.restart().await;
    assert_eq!(provider_of(&srv).await, "sqlite");
}

/// WABA data created through the API before a switch: an account, a chat with an
/// inbound message the owner read and a reply sent through the fake Graph API that
/// Meta reported delivered.
struct WabaDesk {
    chat: i64,
    inbound: i64,
    reply: i64,
    reply_wamid: String,
}

impl WabaDesk {
    async fn new(srv: &TestServer, owner: &Auth) -> WabaDesk {
        let (code, body) = srv
            .put(
                "/api/waba/settings",
                owner,
                json!({"accessToken": waba::TOKEN, "phoneNumberId": waba::PHONE_NUMBER_ID,
                       "businessAccountId": "WABA_ID", "appSecret": waba::APP_SECRET,
                       "verifyToken": waba::VERIFY_TOKEN}),
            )
            .await;
        assert_eq!(code, 200, "settings: {body}");
        let now = chrono::Utc::now().timestamp();
        let (code, body) = waba::webhook(
            srv,
            &waba::inbound("wamid.DB-IN-1", WABA_CUSTOMER, "Где мой заказ?", now),
            Some(waba::APP_SECRET),
        )
        .await;
        assert_eq!(code, 200, "inbound: {body}");
        let (code, chats) = srv.get("/api/waba/operator/chats", owner).await;
        assert_eq!(code, 200, "chats: {chats}");
        let chat = chats["chats"][0]["id"].as_i64().expect("a chat");
        let (code, history) = srv
            .get(&format!("/api/waba/operator/chat/{chat}/messages"), owner)
            .await;
        assert_eq!(code, 200, "history: {history}");
        let inbound = history["messages"][0]["id"].as_i64().expect("inbound id");
        let (code, read) = srv
            .post(
                &format!("/api/waba/operator/chat/{chat}/read"),
                owner,
                json!({}),
            )
            .await;
        assert_eq!((code, &read["marked"]), (200, &json!(1)), "read: {read}");
        let (code, sent) = srv
            .post(
                "/api/waba/operator/send",
                owner,
                json!({"chatId": chat, "message": "Заказ в пути"}),
            )
            .await;
        assert_eq!(code, 200, "send: {sent}");
        let reply = sent["message"]["id"].as_i64().expect("reply id");
        let reply_wamid = sent["messageId"].as_str().expect("wamid").to_owned();
        let (code, body) = waba::webhook(
            srv,
            &waba::status(&reply_wamid, WABA_CUSTOMER, "delivered"),
            Some(waba::APP_SECRET),
        )
        .await;
        assert_eq!(code, 200, "status: {body}");
        WabaDesk {
            chat,
            inbound,
            reply,
            reply_wamid,
        }
    }

    /// The chat and its messages read back through the API as they were written
    /// (`total` messages in the chat by now).
    async fn reads_back(&self, srv: &TestServer, owner: &Auth, owner_id: &str, total: u64) {
        let chat = self.chat;
        let (code, chats) = srv.get("/api/waba/operator/chats", owner).await;
        assert_eq!(code, 200, "chats: {chats}");
        assert_eq!(chats["total"], 1, "{chats}");
        let c = &chats["chats"][0];
        assert_eq!(c["id"], chat, "{c}");
        assert_eq!(c["customerPhone"], WABA_CUSTOMER);
        assert_eq!(c["customerName"], "Anna Customer");
        assert!(c["windowExpiresAt"].is_string(), "{c}");
        let (code, history) = srv
            .get(&format!("/api/waba/operator/chat/{chat}/messages"), owner)
            .await;
        assert_eq!(code, 200, "history: {history}");
        assert_eq!(history["total"], total, "{history}");
        let messages = history["messages"].as_array().expect("messages");
        let find = |id: i64| {
            messages
                .iter()
                .find(|m| m["id"] == id)
                .unwrap_or_else(|| panic!("message {id} in {history}"))
        };
        let reply = find(self.reply);
        assert_eq!(reply["whatsappMessageId"], self.reply_wamid.as_str());
        assert_eq!(reply["fromMe"], true);
        assert_eq!(reply["content"], "Заказ в пути");
        assert_eq!(reply["status"], "delivered");
        assert_eq!(reply["senderUser"]["id"], owner_id);
        let inbound = find(self.inbound);
        assert_eq!(inbound["whatsappMessageId"], "wamid.DB-IN-1");
        assert_eq!(inbound["fromMe"], false);
        assert_eq!(inbound["status"], "received");
        assert_eq!(inbound["isReadByOperator"], true);
        let (code, s) = srv
            .get(
                &format!("/api/waba/operator/message-status/{}", self.reply),
                owner,
            )
            .await;
        assert_eq!(code, 200, "message-status: {s}");
        assert_eq!(s["status"], "delivered", "{s}");
    }

    /// A customer writes again: the message lands in the same chat under a fresh id,
    /// above every id copied before (`total` messages in the chat afterwards).
    async fn customer_writes(&self, srv: &TestServer, owner: &Auth, wamid: &str, total: u64) {
        let now = chrono::Utc::now().timestamp();
        let (code, body) = waba::webhook(
            srv,
            &waba::inbound(wamid, WABA_CUSTOMER, "Спасибо!", now),
            Some(waba::APP_SECRET),
        )
        .await;
        assert_eq!(code, 200, "inbound: {body}");
        let chat = self.chat;
        let history = eventually(20, "the new inbound message", || async {
            let (_, h) = srv
                .get(&format!("/api/waba/operator/chat/{chat}/messages"), owner)
                .await;
            (h["total"] == total).then_some(h)
        })
        .await;
        let messages = history["messages"].as_array().expect("messages");
        let new = messages
            .iter()
            .find(|m| m["whatsappMessageId"] == wamid)
            .unwrap_or_else(|| panic!("{wamid} in {history}"));
        let id = new["id"].as_i64().expect("numeric id");
        let others: Vec<i64> = messages
            .iter()
            .filter(|m| m["whatsappMessageId"] != wamid)
            .filter_map(|m| m["id"].as_i64())
            .collect();
        assert!(
            others.iter().all(|other| id > *other),
            "{id} is not fresh: {others:?}"
        );
        assert_eq!(new["isReadByOperator"], false);
    }
}

/// The customer of the WABA desk in the switch test.
const WABA_CUSTOMER: &str = "79007778899";

/// The owner's numbers in these tests; the sandbox treats numbers ending in 0000 as not
/// on WhatsApp, so none does.
const CUSTOMER: &str = "79003334455";

#[tokio::test]
async fn switch_copies_everything_survives_a_restart_and_switches_back() {
    let url = fresh_mongodb_url();
    // No periodic statistics flush: the stores are compared record by record right after
    // the switch, so nothing may write behind the test's back.
    let graph = FakeGraph::start().await;
    let graph_url = graph.url();
    let srv = TestServer::start_with(&[
        ("database_url", &url),
        ("stats_flush_ms", "600000"),
        ("waba_graph_base_url", &graph_url),
        ("waba_api_version", "v21.0"),
    ])
    .await;
    let admin = srv.admin();
    let (owner_id, key, _) = srv.new_user("owner@example.com", "user").await;
    let owner = Auth::Key(key.clone());
    let id = srv.connected_instance(&owner, "desk", "79001110001").await;
    for text in ["Здравствуйте!", "Ваш заказ готов"] {
        let (status, body) = srv
            .post(
                &format!("/api/whatsapp/{id}/send"),
                &owner,
                json!({"phone": CUSTOMER, "message": text}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/inbound"),
            &owner,
            json!({"from": CUSTOMER, "body": "Спасибо", "pushName": "Иван"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let history_path = format!("/api/instances/{id}/chats/{CUSTOMER}/messages");
    eventually(20, "3 messages in the chat", || async {
        let (_, h) = srv.get(&history_path, &owner).await;
        (h["pagination"]["total"] == 3).then_some(())
    })
    .await;
    let (status, body) = srv
        .post(
            &format!("/api/whatsapp/{id}/contacts/add"),
            &owner,
            json!({"phone": "79001234567", "name": "Пётр"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let usage_path = format!("/api/stats/instances/{id}?period=all");
    let (_, before) = srv.get(&usage_path, &owner).await;
    assert_eq!(before["usage"]["messagesSent"], 2, "{before}");
    assert_eq!(before["usage"]["messagesReceived"], 1, "{before}");
    let desk = WabaDesk::new(&srv, &owner).await;

    // sqlite → mongodb.
    let (status, body) = switch(&srv, &admin, "mongodb").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["message"], "Database provider switched to mongodb");
    assert_eq!(body["provider"], "mongodb");
    let sqlite = sqlite_of(&srv).await;
    let mongo = mongo_at(&url).await;
    let counts = sqlite.count_records().await.expect("count");
    for kind in RecordKind::ALL {
        assert_eq!(
            body["copied"][kind.as_str()],
            counts.get(kind),
            "{}: {body}",
            kind.as_str()
        );
    }
    assert!(counts.users == 2 && counts.instances == 1 && counts.messages == 3);
    assert!(counts.activity > 0 && counts.events > 0 && counts.contacts >= 2);
    assert!(counts.usage > 0);
    assert_eq!(
        (
            counts.waba_accounts,
            counts.waba_chats,
            counts.waba_messages
        ),
        (1, 1, 2)
    );
    assert_eq!(
        export_everything(&mongo, 500).await,
        export_everything(&sqlite, 500).await,
        "every record copied exactly"
    );
    let (_, status) = srv.get("/api/db/status", &admin).await;
    assert_eq!(status, json!({"provider": "mongodb", "url": url}));

    // Everything reads back through the API, now from MongoDB.
    let (status, login) = srv
        .post(
            "/api/auth/login",
            &Auth::None,
            json!({"email": "owner@example.com", "password": "password1"}),
        )
        .await;
    assert_eq!(status, 200, "login after the switch: {login}");
    let (_, h) = srv.get(&history_path, &owner).await;
    assert_eq!(h["pagination"]["total"], 3, "{h}");
    let (_, contacts) = srv
        .get(
            &format!("/api/instances/{id}/contacts/db?search=пётр"),
            &owner,
        )
        .await;
    assert_eq!(contacts["contacts"][0]["name"], "Пётр", "{contacts}");
    let (_, after) = srv.get(&usage_path, &owner).await;
    for counter in ["messagesSent", "messagesReceived"] {
        assert_eq!(
            after["usage"][counter], before["usage"][counter],
            "{counter}"
        );
    }
    let (_, activity) = srv
        .get(&format!("/api/instances/{id}/activity"), &owner)
        .await;
    assert!(
        activity["logs"].as_array().is_some_and(|l| !l.is_empty()),
        "{activity}"
    );
    assert_eq!(srv.status_of(&owner, &id).await, "connected");
    desk.reads_back(&srv, &owner, &owner_id, 2).await;
    // A new inbound WABA message gets an id above the copied ones, in MongoDB.
    desk.customer_writes(&srv, &owner, "wamid.DB-AFTER-1", 3)
        .await;
    assert_eq!(mongo.count_records().await.expect("count").waba_messages, 3);
    // New writes go to MongoDB.
    let (status, _) = srv
        .post(
            &format!("/api/whatsapp/{id}/send"),
            &owner,
            json!({"phone": CUSTOMER, "message": "после переключения"}),
        )
        .await;
    assert_eq!(status, 200);
    eventually(20, "the new message in MongoDB", || async {
        (mongo.count_records().await.expect("count").messages == 4).then_some(())
    })
    .await;
    assert_eq!(sqlite.count_records().await.expect("count").messages, 3);

    // A restart stays on MongoDB (DATABASE_PROVIDER still says sqlite).
    let srv = srv.restart().await;
    assert_eq!(provider_of(&srv).await, "mongodb");
    let (_, h) = srv.get(&history_path, &owner).await;
    assert_eq!(h["pagination"]["total"], 4, "{h}");
    // The restored session settles before the stores are compared again.
    srv.wait_status(&owner, &id, "connected").await;

    // mongodb → sqlite: the stale SQLite data is replaced, usage is not doubled.
    let admin = srv.admin();
    let (status, body) = switch(&srv, &admin, "sqlite").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Database provider switched to sqlite");
    assert_eq!(body["copied"]["messages"], 4);
    assert_eq!(body["copied"]["wabaMessages"], 3);
    assert_eq!(provider_of(&srv).await, "sqlite");
    assert_eq!(
        export_everything(&sqlite, 500).await,
        export_everything(&mongo, 500).await
    );
    let (_, h) = srv.get(&history_path, &owner).await;
    assert_eq!(h["pagination"]["total"], 4, "{h}");
    let (_, back) = srv.get(&usage_path, &owner).await;
    assert_eq!(back["usage"]["messagesSent"], 3, "{back}");
    assert_eq!(back["usage"]["messagesReceived"], 1, "{back}");
    desk.reads_back(&srv, &owner, &owner_id, 3).await;
    desk.customer_writes(&srv, &owner, "wamid.DB-AFTER-2", 4)
        .await;
    let srv = srv.restart().await;
    assert_eq!(provider_of(&srv).await, "sqlite");
}

#[tokio::test]
async fn writes_during_a_switch_are_held_not_lost() {
    let url = fresh_mongodb_url();
    let srv = Arc::new(TestServer::start_with(&[("database_url", &url)]).await);
    let owner = srv.admin();
    let id = srv.connected_instance(&owner, "busy", "79001110002").await;

    // Two writers (sends and inbound messages) run before, during and after the switch.
    const EACH: usize = 25;
    let sender = {
        let (srv, owner, id) = (srv.clone(), owner.clone(), id.clone());
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            for i in 0..EACH {
                let (status, body) = srv
                    .post(
                        &format!("/api/whatsapp/{id}/send"),
                        &owner,
                        json!({"phone": CUSTOMER, "message": format!("out {i}")}),
                    )
                    .await;
                if status == 200 {
                    accepted.push(body["id"].as_str().expect("id").to_owned());
                }
            }
            accepted
        })
    };
    let receiver = {
        let (srv, owner, id) = (srv.clone(), owner.clone(), id.clone());
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            for i in 0..EACH {
                let (status, body) = srv
                    .post(
                        &format!("/api/sandbox/instances/{id}/inbound"),
                        &owner,
                        json!({"from": CUSTOMER, "body": format!("in {i}")}),
                    )
                    .await;
                if status == 200 {
                    accepted.push(body["messageId"].as_str().expect("messageId").to_owned());
                }
            }
            accepted
        })
    };
    let (status, body) = switch(&srv, &owner, "mongodb").await;
    assert_eq!(status, 200, "{body}");
    let sent = sender.await.expect("sender");
    let received = receiver.await.expect("receiver");
    assert!(
        sent.len() == EACH && received.len() == EACH,
        "every write was accepted (held, not refused): {} sent, {} received",
        sent.len(),
        received.len()
    );

    let mongo = mongo_at(&url).await;
    for message_id in sent.iter().chain(&received) {
        eventually(20, &format!("message {message_id} in MongoDB"), || async {
            mongo
                .message_by_id(&id, message_id)
                .await
                .expect("read")
                .map(|_| ())
        })
        .await;
    }
    let (_, h) = srv
        .get(
            &format!("/api/instances/{id}/chats/{CUSTOMER}/messages?limit=100"),
            &owner,
        )
        .await;
    assert_eq!(h["pagination"]["total"], 2 * EACH, "{h}");
}

/// The copy itself: idempotent after a partial copy, usage buckets equal (not doubled),
/// in both directions.
#[tokio::test]
async fn copies_are_idempotent_in_both_directions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite: DynStorage = Arc::new(
        SqliteStorage::open(&dir.path().join("copy.db"))
            .await
            .expect("sqlite"),
    );
    let mongo = mongo_at(&fresh_mongodb_url()).await;
    let expected = fill_every_kind(&sqlite).await;
    let exported = export_everything(&sqlite, 500).await;

    // A copy interrupted halfway left some records (and a usage bucket) behind.
    let partial: Vec<_> = exported.iter().step_by(2).cloned().collect();
    mongo.import_records(&partial).await.expect("partial");
    for _ in 0..2 {
        let copied = copy_all(sqlite.as_ref(), mongo.as_ref())
            .await
            .expect("copy");
        assert_eq!(copied, expected);
        assert_eq!(export_everything(&mongo, 500).await, exported);
    }
    let sent = |s: DynStorage| async move {
        let rows: StoreResult<_> = s.usage(&UsageFilter::default()).await;
        rows.expect("usage")
            .iter()
            .map(|(_, u)| u.messages_sent)
            .sum::<u64>()
    };
    assert_eq!(sent(mongo.clone()).await, 5, "usage copied, not doubled");

    // And back into a SQLite store that already holds (stale) data.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let back: DynStorage = Arc::new(
        SqliteStorage::open(&other_dir.path().join("back.db"))
            .await
            .expect("sqlite"),
    );
    fill_every_kind(&back).await;
    let copied = copy_all(mongo.as_ref(), back.as_ref())
        .await
        .expect("copy back");
    assert_eq!(copied, expected);
    assert_eq!(export_everything(&back, 500).await, exported);
    assert_eq!(sent(back).await, 5);
}
