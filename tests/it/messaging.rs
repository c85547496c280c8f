//! Sending and receiving on the sandbox: text, media, receipts, history, chats, contacts.

use std::net::SocketAddr;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};
use wagate_actors::domain::{Message, MessageStatus};

use crate::common::{Auth, Backend, SseEvents, TestServer, eventually};

backend_tests!(
    two_sandbox_instances_message_each_other,
    inbound_receipts_and_status_only_moving_forward,
    media_by_url_and_upload_reach_the_recipient,
    private_network_urls_are_refused_by_default,
    bad_phones_and_sending_while_not_connected,
    contacts_on_both_path_families,
    history_pagination_and_dates_over_10000_messages,
    sends_at_once_are_stored_before_they_are_announced_in_order,
);

/// The events of an instance of one type, oldest first.
async fn events_of(srv: &TestServer, auth: &Auth, id: &str, kind: &str) -> Vec<Value> {
    let (status, body) = srv
        .get(
            &format!("/api/instances/{id}/events?types={kind}&limit=1000"),
            auth,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().cloned().unwrap_or_default()
}

async fn history(srv: &TestServer, auth: &Auth, id: &str, chat: &str, query: &str) -> Value {
    let (status, body) = srv
        .get(
            &format!("/api/instances/{id}/chats/{chat}/messages?{query}"),
            auth,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn status_of_message(
    srv: &TestServer,
    auth: &Auth,
    id: &str,
    chat: &str,
    message_id: &str,
) -> String {
    let body = history(srv, auth, id, chat, "limit=1000").await;
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["messageId"] == message_id))
        .and_then(|m| m["status"].as_str())
        .unwrap_or_default()
        .to_owned()
}

async fn two_sandbox_instances_message_each_other(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let a = srv.connected_instance(&auth, "alice", "79001110001").await;
    let b = srv.connected_instance(&auth, "bob", "79001110002").await;

    let (status, sent) = srv
        .post(
            &format!("/api/whatsapp/{a}/send"),
            &auth,
            json!({"phone": "+7 (900) 111-00-02", "message": "Привет! Как дела?"}),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let message_id = sent["id"].as_str().expect("id").to_owned();

    // Bob receives it, from Alice's number.
    let received = eventually(20, "message_received on bob", || async {
        events_of(&srv, &auth, &b, "message_received")
            .await
            .into_iter()
            .next()
    })
    .await;
    let data = &received["data"];
    assert_eq!(data["messageId"], message_id.as_str());
    assert_eq!(data["from"], "79001110001@s.whatsapp.net");
    assert_eq!(data["body"], "Привет! Как дела?");
    assert_eq!(data["type"], "conversation");
    assert_eq!(data["hasMedia"], false);
    assert_eq!(data["instanceId"], b.as_str());
    assert!(data["timestamp"].is_i64());

    // Alice sees message_sent, then delivered.
    let sent_events = events_of(&srv, &auth, &a, "message_sent").await;
    assert_eq!(sent_events[0]["data"]["to"], "79001110002@s.whatsapp.net");
    assert_eq!(sent_events[0]["data"]["type"], "text");
    eventually(20, "delivered", || async {
        (status_of_message(&srv, &auth, &a, "79001110002", &message_id).await == "delivered")
            .then_some(())
    })
    .await;

    // Bob's chat with Alice shows it as unread; reading it sends a read receipt back.
    let (_, chats) = srv.get(&format!("/api/instances/{b}/chats"), &auth).await;
    assert_eq!(chats["chats"][0]["remoteJid"], "79001110001@s.whatsapp.net");
    assert_eq!(chats["chats"][0]["unreadCount"], 1);
    assert_eq!(
        chats["chats"][0]["lastMessage"]["content"],
        "Привет! Как дела?"
    );
    let (status, body) = srv
        .post(
            &format!("/api/instances/{b}/chats/79001110001/read"),
            &auth,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["marked"], 1);
    eventually(20, "read", || async {
        (status_of_message(&srv, &auth, &a, "79001110002", &message_id).await == "read")
            .then_some(())
    })
    .await;
    // The status is stored before its event is published: wait for the event too.
    let statuses = eventually(20, "two message_status events", || async {
        let statuses: Vec<String> = events_of(&srv, &auth, &a, "message_status")
            .await
            .iter()
            .map(|e| e["data"]["status"].as_str().unwrap_or_default().to_owned())
            .collect();
        (statuses.len() >= 2).then_some(statuses)
    })
    .await;
    assert_eq!(statuses, ["delivered", "read"]);
    let (_, chats) = srv.get(&format!("/api/instances/{b}/chats"), &auth).await;
    assert_eq!(chats["chats"][0]["unreadCount"], 0);

    // Alice's history has every field of the spec.
    let body = history(&srv, &auth, &a, "79001110002@s.whatsapp.net", "").await;
    let m = &body["messages"][0];
    for field in [
        "id",
        "instanceId",
        "remoteJid",
        "fromMe",
        "messageType",
        "content",
        "messageId",
        "hasMedia",
        "mediaUrl",
        "caption",
        "mimeType",
        "fileName",
        "status",
        "metadata",
        "createdAt",
        "updatedAt",
        "statusUpdatedAt",
    ] {
        assert!(m.get(field).is_some(), "{field} missing in {m}");
    }
    assert_eq!(m["fromMe"], true);
    assert_eq!(m["messageType"], "text");
    assert!(m["metadata"]["timestamp"].is_i64());
    // And Bob has Alice as a contact, with her push name (her number, as the sandbox sets none).
    let (_, contacts) = srv
        .get(
            &format!("/api/instances/{b}/contacts/db?search=79001110001"),
            &auth,
        )
        .await;
    assert_eq!(contacts["pagination"]["total"], 1, "{contacts}");
}

async fn inbound_receipts_and_status_only_moving_forward(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let id = srv.connected_instance(&auth, "desk", "79002220001").await;

    let (status, body) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/inbound"),
            &auth,
            json!({"from": "79003334455", "body": "Где мой заказ?", "pushName": "Иван"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let inbound_id = body["messageId"].as_str().expect("messageId").to_owned();
    let ev = eventually(20, "message_received", || async {
        events_of(&srv, &auth, &id, "message_received")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(ev["data"]["pushName"], "Иван");
    assert_eq!(ev["data"]["metadata"]["pushName"], "Иван");
    assert_eq!(ev["data"]["messageId"], inbound_id.as_str());
    let body = history(&srv, &auth, &id, "79003334455", "").await;
    assert_eq!(body["messages"][0]["status"], "received");
    assert_eq!(body["messages"][0]["fromMe"], false);
    let (_, contacts) = srv
        .get(
            &format!("/api/instances/{id}/contacts/db?search=иван"),
            &auth,
        )
        .await;
    assert_eq!(contacts["contacts"][0]["pushName"], "Иван", "{contacts}");
    assert!(contacts["contacts"][0]["lastActivity"].is_string());

    // Reply to a simulated contact: it stays `sent` until the contact acknowledges.
    let (_, sent) = srv
        .post(
            &format!("/api/whatsapp/{id}/send"),
            &auth,
            json!({"phone": "79003334455", "message": "Уже в пути"}),
        )
        .await;
    let mid = sent["id"].as_str().expect("id").to_owned();
    assert_eq!(
        status_of_message(&srv, &auth, &id, "79003334455", &mid).await,
        "sent"
    );
    let receipt = |status: &'static str| {
        let (srv, auth, id, mid) = (&srv, &auth, &id, &mid);
        async move {
            let (code, body) = srv
                .post(
                    &format!("/api/sandbox/instances/{id}/receipt"),
                    auth,
                    json!({"messageId": mid, "status": status}),
                )
                .await;
            assert_eq!(code, 200, "{body}");
        }
    };
    receipt("read").await;
    eventually(20, "read", || async {
        (status_of_message(&srv, &auth, &id, "79003334455", &mid).await == "read").then_some(())
    })
    .await;
    // A late `delivered`: then a probe message through the same actor mailbox, so once
    // the probe is stored the receipt has been handled too.
    receipt("delivered").await;
    srv.post(
        &format!("/api/sandbox/instances/{id}/inbound"),
        &auth,
        json!({"from": "79003334455", "body": "probe"}),
    )
    .await;
    eventually(20, "the probe", || async {
        let body = history(&srv, &auth, &id, "79003334455", "").await;
        (body["pagination"]["total"] == 3).then_some(())
    })
    .await;
    assert_eq!(
        status_of_message(&srv, &auth, &id, "79003334455", &mid).await,
        "read",
        "never backwards"
    );
    let statuses = events_of(&srv, &auth, &id, "message_status").await;
    assert_eq!(
        statuses.len(),
        1,
        "a late delivered after read publishes nothing: {statuses:?}"
    );
    assert_eq!(statuses[0]["data"]["fromMe"], true);
    let (status, body) = srv
        .post(
            &format!("/api/sandbox/instances/{id}/receipt"),
            &auth,
            json!({"messageId": "nope", "status": "read"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
}

/// Seeds 10 000 messages of one chat, `M{i}` at minute `i` after `base`, straight into the
/// server's storage through a second connection (as a migration would).
async fn seed_history(srv: &TestServer, backend: Backend, id: &str, base: DateTime<Utc>) {
    match backend {
        Backend::Sqlite => {
            let store = wagate::storage::sqlite::SqliteStorage::open(
                &srv.dir.path().join("whatsapp-api.db"),
            )
            .await
            .expect("open");
            let mut tx = store.pool().begin().await.expect("tx");
            for i in 0..10_000i64 {
                let ts = (base + Duration::minutes(i)).timestamp_millis();
                sqlx::query(
                    "INSERT INTO messages (id, instance_id, message_id, remote_jid, from_me, message_type, content, status,
                                           metadata, ts, created_at, updated_at)
                     VALUES (?, ?, ?, '79004440000@s.whatsapp.net', ?, 'text', ?, 'sent', '{}', ?, ?, ?)",
                )
                .bind(format!("{i:08}"))
                .bind(id)
                .bind(format!("M{i}"))
                .bind(i % 2 == 0)
                .bind(format!("message {i}"))
                .bind(ts)
                .bind(ts)
                .bind(ts)
                .execute(&mut *tx)
                .await
                .expect("insert");
            }
            tx.commit().await.expect("commit");
        }
        Backend::Mongodb => {
            let url = srv.setting("database_url").expect("database_url");
            let store = wagate::storage::mongo::MongoStorage::connect(&url)
                .await
                .expect("connect");
            let messages: Vec<Message> = (0..10_000i64)
                .map(|i| {
                    let ts = base + Duration::minutes(i);
                    Message {
                        id: format!("{i:08}"),
                        instance_id: id.to_owned(),
                        message_id: format!("M{i}"),
                        remote_jid: "79004440000@s.whatsapp.net".into(),
                        from_me: i % 2 == 0,
                        message_type: "text".into(),
                        content: Some(format!("message {i}")),
                        has_media: false,
                        media_url: None,
                        caption: None,
                        mime_type: None,
                        file_name: None,
                        media_path: None,
                        media_size: None,
                        status: MessageStatus::Sent,
                        push_name: None,
                        metadata: json!({}),
                        timestamp: ts,
                        created_at: ts,
                        updated_at: ts,
                        status_updated_at: None,
                        quoted_message_id: None,
                        mentions: Vec::new(),
                        reactions: Vec::new(),
                        edited_at: None,
                        revoked: false,
                        typed: Default::default(),
                        message_secret: None,
                    }
                })
                .collect();
            store.insert_messages(&messages).await.expect("insert");
        }
    }
}

async fn history_pagination_and_dates_over_10000_messages(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let id = srv.new_instance(&auth, "archive").await;
    let base = Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .expect("date");
    seed_history(&srv, backend, &id, base).await;

    let body = history(&srv, &auth, &id, "79004440000", "").await;
    assert_eq!(
        body["pagination"],
        json!({"total": 10000, "limit": 50, "skip": 0, "hasMore": true})
    );
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(50));
    assert_eq!(body["messages"][0]["messageId"], "M9999", "newest first");
    let body = history(
        &srv,
        &auth,
        &id,
        "79004440000@s.whatsapp.net",
        "limit=100&skip=9950",
    )
    .await;
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(50));
    assert_eq!(body["messages"][49]["messageId"], "M0");
    assert_eq!(body["pagination"]["hasMore"], false);
    // One day: minutes 1440..=2879.
    let body = history(
        &srv,
        &auth,
        &id,
        "79004440000",
        "startDate=2024-01-02T00:00:00.000Z&endDate=2024-01-02T23:59:59.999Z&limit=1000",
    )
    .await;
    assert_eq!(body["pagination"]["total"], 1440);
    assert_eq!(body["messages"][0]["messageId"], "M2879");
    assert_eq!(body["messages"][999]["messageId"], "M1880");
    for bad in ["limit=0", "startDate=x", "limit=5000"] {
        let (status, body) = srv
            .get(
                &format!("/api/instances/{id}/chats/79004440000/messages?{bad}"),
                &auth,
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = srv
        .get(
            &format!("/api/instances/{id}/chats/not-a-chat/messages"),
            &auth,
        )
        .await;
    assert_eq!(status, 400);
}

/// A local server for media: `/cat.png` (a PNG), `/big` (larger than the test limit) and
/// `/redirect` (to the PNG).
pub(crate) async fn media_server() -> SocketAddr {
    use axum::response::Redirect;
    let png = wagate::qr::png("media").expect("png");
    let app = axum::Router::new()
        .route(
            "/cat.png",
            axum::routing::get(move || {
                let png = png.clone();
                async move { ([("content-type", "image/png")], png) }
            }),
        )
        .route("/big", axum::routing::get(|| async { vec![7u8; 300_000] }))
        .route(
            "/redirect",
            axum::routing::get(|| async { Redirect::temporary("/cat.png") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn download(
    srv: &TestServer,
    auth: &Auth,
    id: &str,
    message_id: &str,
) -> (u16, String, Vec<u8>) {
    let resp = srv
        .request(
            reqwest::Method::GET,
            &format!("/api/instances/{id}/messages/{message_id}/media"),
            auth,
        )
        .send()
        .await
        .expect("download");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ct, resp.bytes().await.expect("bytes").to_vec())
}

async fn media_by_url_and_upload_reach_the_recipient(backend: Backend) {
    let srv = TestServer::start_on(backend, &[("max_upload_bytes", "200000")]).await;
    let auth = srv.admin();
    let a = srv.connected_instance(&auth, "sender", "79005550001").await;
    let b = srv
        .connected_instance(&auth, "receiver", "79005550002")
        .await;
    let media = media_server().await;
    let png = wagate::qr::png("media").expect("png");

    let (status, sent) = srv
        .post(
            &format!("/api/whatsapp/{a}/send-media"),
            &auth,
            json!({"phone": "79005550002", "url": format!("http://{media}/redirect"), "caption": "Описание", "filename": "cat.png"}),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let mid = sent["id"].as_str().expect("id").to_owned();
    let body = history(&srv, &auth, &a, "79005550002", "").await;
    let m = &body["messages"][0];
    assert_eq!(m["messageType"], "image");
    assert_eq!(m["hasMedia"], true);
    assert_eq!(m["mimeType"], "image/png");
    assert_eq!(m["fileName"], "cat.png");
    assert_eq!(m["caption"], "Описание");
    assert_eq!(
        m["mediaUrl"],
        format!("/api/instances/{a}/messages/{mid}/media")
    );
    let (status, ct, bytes) = download(&srv, &auth, &a, &mid).await;
    assert_eq!((status, ct.as_str()), (200, "image/png"));
    assert_eq!(bytes, png);
    // The recipient stored its own copy.
    let received = eventually(20, "media on the recipient", || async {
        events_of(&srv, &auth, &b, "message_received")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(received["data"]["hasMedia"], true);
    assert_eq!(received["data"]["type"], "image");
    assert_eq!(received["data"]["caption"], "Описание");
    let (status, _, bytes) = download(&srv, &auth, &b, &mid).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, png);

    // Multipart upload, with a Cyrillic file name.
    let form = reqwest::multipart::Form::new()
        .text("phone", "79005550002")
        .text("caption", "Счёт")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"%PDF-1.4 invoice".to_vec()).file_name("счёт №5.pdf"),
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
    let (status, body) = crate::common::read(resp).await;
    assert_eq!(status, 200, "{body}");
    let fid = body["id"].as_str().expect("id");
    let (status, ct, bytes) = download(&srv, &auth, &a, fid).await;
    assert_eq!((status, ct.as_str()), (200, "application/pdf"));
    assert_eq!(bytes, b"%PDF-1.4 invoice");
    let body = history(&srv, &auth, &a, "79005550002", "limit=1").await;
    assert_eq!(body["messages"][0]["messageType"], "document");
    assert_eq!(body["messages"][0]["fileName"], "счёт №5.pdf");

    // Too large: by URL and by upload, 413.
    let (status, body) = srv
        .post(
            &format!("/api/whatsapp/{a}/send-media"),
            &auth,
            json!({"phone": "79005550002", "url": format!("http://{media}/big")}),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    let form = reqwest::multipart::Form::new()
        .text("phone", "79005550002")
        .part(
            "file",
            reqwest::multipart::Part::bytes(vec![1u8; 300_000]).file_name("big.bin"),
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
    assert_eq!(crate::common::read(resp).await.0, 413);
    // Nobody else can download the media.
    let (_, other_key, _) = srv.new_user("other@example.com", "user").await;
    assert_eq!(download(&srv, &Auth::Key(other_key), &a, &mid).await.0, 404);
    // Inbound media through the sandbox, as base64.
    let (status, body) = srv
        .post(
            &format!("/api/sandbox/instances/{b}/inbound"),
            &auth,
            json!({"from": "79006660000", "body": "scan", "media": {"base64": "JVBERi0xLjQK", "fileName": "doc.pdf"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let iid = body["messageId"].as_str().expect("id").to_owned();
    let (status, ct, bytes) = eventually(20, "inbound media stored", || async {
        let d = download(&srv, &auth, &b, &iid).await;
        (d.0 == 200).then_some(d)
    })
    .await;
    assert_eq!((status, ct.as_str()), (200, "application/pdf"));
    assert_eq!(bytes, b"%PDF-1.4\n");
}

async fn private_network_urls_are_refused_by_default(backend: Backend) {
    let srv = TestServer::start_on(backend, &[("allow_private_network_urls", "false")]).await;
    let auth = srv.admin();
    let a = srv
        .connected_instance(&auth, "guarded", "79007770001")
        .await;
    let media = media_server().await;
    for url in [
        format!("http://{media}/cat.png"),
        format!("http://localhost:{}/cat.png", media.port()),
        format!("http://[::1]:{}/cat.png", media.port()),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://10.0.0.1/x.png".to_owned(),
        "file:///etc/passwd".to_owned(),
        "gopher://example.com/".to_owned(),
    ] {
        let (status, body) = srv
            .post(
                &format!("/api/whatsapp/{a}/send-media"),
                &auth,
                json!({"phone": "79007770002", "url": url}),
            )
            .await;
        assert_eq!(status, 400, "{url}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("url")),
            "{body}"
        );
    }
    let body = history(&srv, &auth, &a, "79007770002", "").await;
    assert_eq!(body["pagination"]["total"], 0, "nothing was sent");
}

async fn bad_phones_and_sending_while_not_connected(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let idle = srv.new_instance(&auth, "idle").await;
    let (status, body) = srv
        .post(
            &format!("/api/whatsapp/{idle}/send"),
            &auth,
            json!({"phone": "79001234567", "message": "hi"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "not_connected");
    let (status, body) = srv
        .post(
            &format!("/api/whatsapp/{idle}/send-media"),
            &auth,
            json!({"phone": "79001234567", "url": "http://127.0.0.1:1/x"}),
        )
        .await;
    assert_eq!(status, 409, "refused before fetching anything: {body}");

    let id = srv.connected_instance(&auth, "live", "79008880001").await;
    for phone in [
        "",
        "123",
        "12345678901234567",
        "79OO1234567",
        "+7 900 abc",
        "123@lid",
        "@g.us",
    ] {
        let (status, body) = srv
            .post(
                &format!("/api/whatsapp/{id}/send"),
                &auth,
                json!({"phone": phone, "message": "hi"}),
            )
            .await;
        assert_eq!(status, 400, "{phone}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("phone")),
            "{body}"
        );
    }
    for body in [
        json!({"phone": "79001234567"}),
        json!({"phone": "79001234567", "message": ""}),
        json!({"message": "x"}),
    ] {
        let (status, resp) = srv
            .post(&format!("/api/whatsapp/{id}/send"), &auth, body.clone())
            .await;
        assert_eq!(status, 400, "{body}: {resp}");
    }
    // Groups are accepted.
    let (status, body) = srv
        .post(
            &format!("/api/whatsapp/{id}/send"),
            &auth,
            json!({"phone": "120363041234567890@g.us", "message": "всем привет"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let body = history(&srv, &auth, &id, "120363041234567890@g.us", "").await;
    assert_eq!(body["pagination"]["total"], 1);
}

async fn contacts_on_both_path_families(backend: Backend) {
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let id = srv.connected_instance(&auth, "book", "79009990001").await;
    let (status, body) = srv
        .post(
            &format!("/api/whatsapp/{id}/contacts/add"),
            &auth,
            json!({"phone": "79001234567", "name": "Иван Иванов"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(
        body["contact"],
        json!({"id": "79001234567@s.whatsapp.net", "number": "79001234567", "name": "Иван Иванов"})
    );
    // The sandbox treats numbers ending in 0000 as not on WhatsApp.
    let (status, body) = srv
        .post(
            &format!("/api/whatsapp/{id}/contacts/add"),
            &auth,
            json!({"phone": "79001230000"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "not_on_whatsapp");
    srv.post(
        &format!("/api/sandbox/instances/{id}/inbound"),
        &auth,
        json!({"from": "15551112222", "body": "hello", "pushName": "Bob"}),
    )
    .await;
    let live = eventually(20, "two live contacts", || async {
        let (_, body) = srv
            .get(&format!("/api/whatsapp/{id}/contacts"), &auth)
            .await;
        let list = body["contacts"].as_array()?.clone();
        (list.len() == 2).then_some(list)
    })
    .await;
    assert!(live.iter().any(|c| c["id"] == "79001234567@s.whatsapp.net"
        && c["name"] == "Иван Иванов"
        && c["isGroup"] == false));
    assert!(live.iter().any(|c| c["number"] == "15551112222"));

    for family in ["/api/instances", "/api/whatsapp"] {
        let (status, body) = srv
            .post(
                &format!("{family}/{id}/contacts/save"),
                &auth,
                json!({"number": "120363000111", "name": "Рабочая группа", "isGroup": true, "about": "Чат отдела"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["remoteJid"], "120363000111@g.us");
        assert_eq!(body["instanceId"], id.as_str());
        let (status, body) = srv
            .post(&format!("{family}/{id}/contacts/import"), &auth, json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["importedCount"], 2);
        assert_eq!(body["message"], "Successfully imported 2 contacts");
        let (_, all) = srv.get(&format!("{family}/{id}/contacts/db"), &auth).await;
        assert_eq!(all["pagination"]["total"], 3, "{all}");
        let (_, groups) = srv
            .get(&format!("{family}/{id}/contacts/db?onlyGroups=true"), &auth)
            .await;
        assert_eq!(groups["pagination"]["total"], 1);
        assert_eq!(groups["contacts"][0]["isGroup"], true);
        let (_, found) = srv
            .get(&format!("{family}/{id}/contacts/db?search=ИВАН"), &auth)
            .await;
        assert_eq!(found["contacts"][0]["name"], "Иван Иванов", "{found}");
        let (_, found) = srv
            .get(
                &format!("{family}/{id}/contacts/db?search=1112&limit=1&skip=0"),
                &auth,
            )
            .await;
        assert_eq!(found["contacts"][0]["pushName"], "Bob");
        let (status, _) = srv
            .get(
                &format!("{family}/{id}/contacts/db?onlyGroups=maybe"),
                &auth,
            )
            .await;
        assert_eq!(status, 400);
    }
    let (status, body) = srv
        .post(
            &format!("/api/instances/{id}/contacts/save"),
            &auth,
            json!({"number": "abc"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

/// The document's live contact: «"name": "Иван Иванов", "number": "79001234567"» — a
/// string, never null. A contact nobody saved is named by the name the person set (push
/// name), and one without either by its number.
#[tokio::test]
async fn live_contacts_always_have_a_name() {
    let srv = TestServer::start().await;
    let auth = srv.admin();
    let id = srv.connected_instance(&auth, "names", "79009990002").await;
    let (status, body) = srv
        .post(
            &format!("/api/whatsapp/{id}/contacts/add"),
            &auth,
            json!({"phone": "79001234567", "name": "Иван Иванов"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for inbound in [
        json!({"from": "15551112222", "body": "hello", "pushName": "Bob"}),
        json!({"from": "15553334444", "body": "no name"}),
    ] {
        let (status, body) = srv
            .post(
                &format!("/api/sandbox/instances/{id}/inbound"),
                &auth,
                inbound,
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let live = eventually(20, "three live contacts", || async {
        let (_, body) = srv
            .get(&format!("/api/whatsapp/{id}/contacts"), &auth)
            .await;
        let list = body["contacts"].as_array()?.clone();
        (list.len() == 3).then_some(list)
    })
    .await;
    let name_of = |number: &str| {
        live.iter()
            .find(|c| c["number"] == number)
            .map(|c| c["name"].clone())
            .unwrap_or_else(|| panic!("{number} in {live:?}"))
    };
    assert_eq!(name_of("79001234567"), "Иван Иванов", "the saved name");
    assert_eq!(name_of("15551112222"), "Bob", "the push name");
    assert_eq!(name_of("15553334444"), "15553334444", "the number");
    assert!(
        live.iter().all(|c| c["name"].is_string()),
        "«\"name\": \"Иван Иванов\"»: a string for every contact: {live:?}"
    );
}

/// Many sends to one instance at once: the instance queues each write and takes the next
/// send without waiting for the commit. Every send answered 200 is in the history at once;
/// each `message_sent` event is in storage when it is seen live, and the live stream shows
/// them in the order they were stored. The recipient is a sandbox instance, so each send
/// also brings a `delivered` receipt, queued between the sends: the stream shows every
/// event in the order of its id (which the webhook queue's cursor relies on).
async fn sends_at_once_are_stored_before_they_are_announced_in_order(backend: Backend) {
    const SENDS: usize = 48;
    let srv = TestServer::start_on(backend, &[]).await;
    let auth = srv.admin();
    let id = srv.connected_instance(&auth, "burst", "79006660002").await;
    srv.connected_instance(&auth, "recipient", "79001234567")
        .await;
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
    let path = format!("/api/whatsapp/{id}/send");
    let answers = futures::future::join_all((0..SENDS).map(|i| {
        srv.post(
            &path,
            &auth,
            json!({"phone": "79001234567", "message": format!("burst {i}")}),
        )
    }))
    .await;
    let mut answered = Vec::new();
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
        answered.push(body["id"].as_str().expect("id").to_owned());
    }
    answered.sort_unstable();
    let stored = history(&srv, &auth, &id, "79001234567", "limit=1000").await;
    let mut in_history: Vec<String> = stored["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["messageId"].as_str().map(str::to_owned))
        .collect();
    in_history.sort_unstable();
    assert_eq!(in_history, answered, "every answered send is stored");

    let sent_events = |events: Vec<Value>| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| e["data"]["messageId"].as_str().map(str::to_owned))
            .collect()
    };
    let mut frames = SseEvents::new(stream);
    let mut live: Vec<String> = Vec::new();
    let (mut ids, mut delivered) = (Vec::new(), 0);
    while live.len() < SENDS || delivered < SENDS {
        let (event_id, event) = frames.next().await;
        ids.push(event_id);
        if event["type"] == "message_status" {
            assert_eq!(event["data"]["status"], "delivered", "{event}");
            delivered += 1;
        }
        if event["type"] != "message_sent" {
            continue;
        }
        let message_id = event["data"]["messageId"].as_str().expect("messageId");
        let stored = sent_events(events_of(&srv, &auth, &id, "message_sent").await);
        assert!(
            stored.iter().any(|m| m == message_id),
            "the event of {message_id} was stored before it was seen live"
        );
        live.push(message_id.to_owned());
    }
    let stored = sent_events(events_of(&srv, &auth, &id, "message_sent").await);
    assert_eq!(live, stored, "announced in the order stored");
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "announced in the order of their ids: {ids:?}"
    );
    live.sort_unstable();
    assert_eq!(live, answered, "one event per answered send");
}
