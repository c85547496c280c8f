//! The WABA operator desk against a local fake of Meta's Graph API (which checks the exact
//! Cloud API payloads and the bearer token) and signed webhook notifications.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common::{Auth, Backend, TestServer};

pub(crate) const TOKEN: &str = "EAAG-test-access-token-0001";
pub(crate) const APP_SECRET: &str = "app-secret-0123456789";
pub(crate) const VERIFY_TOKEN: &str = "verify-me-please";
pub(crate) const PHONE_NUMBER_ID: &str = "106540352242922";
pub(crate) const CUSTOMER: &str = "79001234567";

// --- The fake Graph API ---------------------------------------------------------------

/// One request Meta received.
#[derive(Debug, Clone)]
struct GraphRequest {
    phone_number_id: String,
    version: String,
    authorization: String,
    body: Value,
}

#[derive(Default)]
struct GraphShared {
    requests: Mutex<Vec<GraphRequest>>,
    /// Scripted answers (status, body), used before the default success.
    script: Mutex<VecDeque<(u16, Value)>>,
    /// The files Meta keeps, by media id: (bytes, MIME type).
    media: Mutex<HashMap<String, (Vec<u8>, String)>>,
    /// Faults of the next media requests, before the default answers.
    media_faults: Mutex<VecDeque<MediaFault>>,
    /// Media requests, as `GET <path>` with the bearer token they carried.
    media_requests: Mutex<Vec<(String, String)>>,
    /// Files uploaded to `/{phone_number_id}/media`.
    uploads: Mutex<Vec<Upload>>,
    /// The address the fake listens on (for the download URLs it hands out).
    addr: Mutex<Option<SocketAddr>>,
    /// The templates of every business account, as Meta lists them.
    templates: Mutex<Vec<Value>>,
    /// Scripted answers of `message_templates`, before the default pages.
    template_script: Mutex<VecDeque<(u16, Value)>>,
    /// Template list requests: (business account id, query, Authorization header).
    template_requests: Mutex<Vec<TemplateRequest>>,
}

/// One request for a page of templates.
#[derive(Debug, Clone)]
pub(crate) struct TemplateRequest {
    pub(crate) business_account_id: String,
    pub(crate) query: HashMap<String, String>,
    pub(crate) authorization: String,
}

/// Templates per page of the fake's `message_templates` (small, so lists have pages).
const TEMPLATE_PAGE: usize = 2;

/// `GET /{version}/{business_account_id}/message_templates`: a page of templates, with
/// Meta's cursors.
async fn graph_templates(
    State(shared): State<Arc<GraphShared>>,
    Path((_version, business_account_id)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let authorization = bearer(&headers);
    shared
        .template_requests
        .lock()
        .expect("lock")
        .push(TemplateRequest {
            business_account_id,
            query: query.clone(),
            authorization: authorization.clone(),
        });
    if authorization != format!("Bearer {TOKEN}") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(meta_error(190, "Invalid OAuth access token.")),
        );
    }
    if let Some((status, body)) = shared.template_script.lock().expect("lock").pop_front() {
        return (StatusCode::from_u16(status).expect("status"), Json(body));
    }
    let all: Vec<Value> = shared
        .templates
        .lock()
        .expect("lock")
        .iter()
        .filter(|t| {
            query
                .get("status")
                .is_none_or(|s| t["status"] == s.as_str())
        })
        .cloned()
        .collect();
    let start: usize = query
        .get("after")
        .and_then(|a| a.strip_prefix("cursor-"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let end = (start + TEMPLATE_PAGE).min(all.len());
    let mut paging =
        json!({"cursors": {"before": format!("cursor-{start}"), "after": format!("cursor-{end}")}});
    if end < all.len() {
        paging["next"] = json!(format!(
            "https://graph.facebook.com/v21.0/x/message_templates?after=cursor-{end}"
        ));
    }
    (
        StatusCode::OK,
        Json(json!({"data": all.get(start..end).unwrap_or_default(), "paging": paging})),
    )
}

/// One file uploaded to Meta.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub(crate) phone_number_id: String,
    /// The `type` field.
    pub(crate) kind: String,
    pub(crate) file_name: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) bytes: Vec<u8>,
    pub(crate) messaging_product: String,
}

/// `POST /{version}/{phone_number_id}/media`: an upload, answered with its media id.
async fn graph_upload(
    State(shared): State<Arc<GraphShared>>,
    Path((_version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    mut form: axum::extract::Multipart,
) -> (StatusCode, Json<Value>) {
    if bearer(&headers) != format!("Bearer {TOKEN}") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "Invalid OAuth access token.", "code": 190}})),
        );
    }
    let mut upload = Upload {
        phone_number_id,
        kind: String::new(),
        file_name: None,
        content_type: None,
        bytes: Vec::new(),
        messaging_product: String::new(),
    };
    while let Ok(Some(field)) = form.next_field().await {
        match field.name().unwrap_or_default() {
            "type" => upload.kind = field.text().await.unwrap_or_default(),
            "messaging_product" => {
                upload.messaging_product = field.text().await.unwrap_or_default()
            }
            "file" => {
                upload.file_name = field.file_name().map(str::to_owned);
                upload.content_type = field.content_type().map(str::to_owned);
                upload.bytes = field.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            }
            _ => {}
        }
    }
    let n = {
        let mut uploads = shared.uploads.lock().expect("lock");
        uploads.push(upload);
        uploads.len()
    };
    (StatusCode::OK, Json(json!({"id": format!("UPLOAD-{n}")})))
}

/// What the fake does instead of answering a media request normally.
#[derive(Debug, Clone)]
pub(crate) enum MediaFault {
    /// The media id lookup answers this status and body.
    Lookup(u16, Value),
    /// The download never finishes (in time).
    Stall,
}

/// A fake of `POST /{version}/{phone_number_id}/messages`.
#[derive(Clone)]
pub(crate) struct FakeGraph {
    shared: Arc<GraphShared>,
    addr: SocketAddr,
}

async fn graph_messages(
    State(shared): State<Arc<GraphShared>>,
    Path((version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let n = {
        let mut requests = shared.requests.lock().expect("lock");
        requests.push(GraphRequest {
            phone_number_id,
            version,
            authorization: authorization.clone(),
            body: body.clone(),
        });
        requests.len()
    };
    if authorization != format!("Bearer {TOKEN}") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(
                json!({"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}}),
            ),
        );
    }
    if let Some((status, body)) = shared.script.lock().expect("lock").pop_front() {
        return (StatusCode::from_u16(status).expect("status"), Json(body));
    }
    // A read receipt: `{"status": "read", "message_id"}`.
    if body["status"] == "read" {
        return (StatusCode::OK, Json(json!({"success": true})));
    }
    let to = body["to"].as_str().unwrap_or_default().to_owned();
    (
        StatusCode::OK,
        Json(json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": format!("wamid.FAKE{n}")}],
        })),
    )
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `GET /{version}/{media_id}`: the file's URL, type and size.
async fn graph_media_lookup(
    State(shared): State<Arc<GraphShared>>,
    Path((version, media_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let authorization = bearer(&headers);
    shared
        .media_requests
        .lock()
        .expect("lock")
        .push((format!("GET /{version}/{media_id}"), authorization.clone()));
    if authorization != format!("Bearer {TOKEN}") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "Invalid OAuth access token.", "code": 190}})),
        );
    }
    let fault = {
        let mut faults = shared.media_faults.lock().expect("lock");
        match faults.front() {
            Some(MediaFault::Lookup(..)) => faults.pop_front(),
            _ => None,
        }
    };
    if let Some(MediaFault::Lookup(status, body)) = fault {
        return (StatusCode::from_u16(status).expect("status"), Json(body));
    }
    let known = shared
        .media
        .lock()
        .expect("lock")
        .get(&media_id)
        .map(|(bytes, mime)| (bytes.len(), mime.clone()));
    let Some((size, mime)) = known else {
        return (
            StatusCode::BAD_REQUEST,
            Json(meta_error(
                100,
                "Unsupported get request. Object with ID does not exist",
            )),
        );
    };
    let addr = shared.addr.lock().expect("lock").expect("address");
    (
        StatusCode::OK,
        Json(
            json!({"messaging_product": "whatsapp", "id": media_id, "mime_type": mime,
                    "sha256": "x", "file_size": size,
                    "url": format!("http://{addr}/download/{media_id}")}),
        ),
    )
}

/// `GET /download/{media_id}`: the file itself.
async fn graph_media_download(
    State(shared): State<Arc<GraphShared>>,
    Path(media_id): Path<String>,
    headers: HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let authorization = bearer(&headers);
    shared
        .media_requests
        .lock()
        .expect("lock")
        .push((format!("GET /download/{media_id}"), authorization.clone()));
    if authorization != format!("Bearer {TOKEN}") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let stall = {
        let mut faults = shared.media_faults.lock().expect("lock");
        match faults.front() {
            Some(MediaFault::Stall) => faults.pop_front().is_some(),
            _ => false,
        }
    };
    if stall {
        // Longer than any test's media timeout: the desk gives up first.
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    match shared.media.lock().expect("lock").get(&media_id).cloned() {
        Some((bytes, mime)) => ([(axum::http::header::CONTENT_TYPE, mime)], bytes).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

impl FakeGraph {
    pub(crate) async fn start() -> FakeGraph {
        let shared = Arc::new(GraphShared::default());
        let app = axum::Router::new()
            .route(
                "/{version}/{phone_number_id}/messages",
                axum::routing::post(graph_messages),
            )
            .route(
                "/{version}/{media_id}",
                axum::routing::get(graph_media_lookup),
            )
            .route(
                "/{version}/{phone_number_id}/media",
                axum::routing::post(graph_upload),
            )
            .route(
                "/{version}/{phone_number_id}/message_templates",
                axum::routing::get(graph_templates),
            )
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
            .route(
                "/download/{media_id}",
                axum::routing::get(graph_media_download),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        *shared.addr.lock().expect("lock") = Some(addr);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGraph { shared, addr }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<GraphRequest> {
        self.shared.requests.lock().expect("lock").clone()
    }

    /// Meta keeps `bytes` of type `mime` as `media_id`.
    pub(crate) fn keep_media(&self, media_id: &str, bytes: &[u8], mime: &str) {
        self.shared
            .media
            .lock()
            .expect("lock")
            .insert(media_id.to_owned(), (bytes.to_vec(), mime.to_owned()));
    }

    /// The next media requests meet `fault`, in order.
    pub(crate) fn media_fault(&self, fault: MediaFault) {
        self.shared
            .media_faults
            .lock()
            .expect("lock")
            .push_back(fault);
    }

    /// The files uploaded so far.
    pub(crate) fn uploads(&self) -> Vec<Upload> {
        self.shared.uploads.lock().expect("lock").clone()
    }

    /// Message requests so far (sends and read receipts): their bodies.
    pub(crate) fn message_bodies(&self) -> Vec<Value> {
        self.requests().into_iter().map(|r| r.body).collect()
    }

    /// Media requests so far: (`GET <path>`, the Authorization header).
    pub(crate) fn media_requests(&self) -> Vec<(String, String)> {
        self.shared.media_requests.lock().expect("lock").clone()
    }

    /// Meta's templates are now `templates` (statuses included: the fake filters).
    pub(crate) fn set_templates(&self, templates: Vec<Value>) {
        *self.shared.templates.lock().expect("lock") = templates;
    }

    /// The next answers of `message_templates`, before the default pages.
    pub(crate) fn answer_templates(&self, status: u16, body: Value) {
        self.shared
            .template_script
            .lock()
            .expect("lock")
            .push_back((status, body));
    }

    /// The template list requests so far.
    pub(crate) fn template_requests(&self) -> Vec<TemplateRequest> {
        self.shared.template_requests.lock().expect("lock").clone()
    }

    /// The next answers, before the default success.
    pub(crate) fn answer(&self, status: u16, body: Value) {
        self.shared
            .script
            .lock()
            .expect("lock")
            .push_back((status, body));
    }
}

pub(crate) fn meta_error(code: i64, message: &str) -> Value {
    json!({"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "x"}})
}

// --- Meta's webhook -------------------------------------------------------------------

pub(crate) fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub(crate) fn notification(phone_number_id: &str, value: Value) -> Value {
    let mut value = value;
    value["messaging_product"] = json!("whatsapp");
    value["metadata"] =
        json!({"display_phone_number": "15550001111", "phone_number_id": phone_number_id});
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA_ID", "changes": [{"field": "messages", "value": value}]}],
    })
}

pub(crate) fn inbound(wamid: &str, from: &str, text: &str, ts_secs: i64) -> Value {
    notification(
        PHONE_NUMBER_ID,
        json!({
            "contacts": [{"profile": {"name": "Anna Customer"}, "wa_id": from}],
            "messages": [{"from": from, "id": wamid, "timestamp": ts_secs.to_string(),
                          "type": "text", "text": {"body": text}}],
        }),
    )
}

pub(crate) fn status(wamid: &str, to: &str, status: &str) -> Value {
    notification(
        PHONE_NUMBER_ID,
        json!({"statuses": [{"id": wamid, "status": status, "timestamp": chrono::Utc::now().timestamp().to_string(),
                             "recipient_id": to, "conversation": {"id": "c1"}, "pricing": {"billable": true}}]}),
    )
}

/// Posts a notification signed with `secret` (None: unsigned).
pub(crate) async fn webhook(
    server: &TestServer,
    body: &Value,
    secret: Option<&str>,
) -> (u16, Value) {
    let raw = serde_json::to_vec(body).expect("json");
    let mut rb = server
        .request(Method::POST, "/api/waba/webhook", &Auth::None)
        .header("content-type", "application/json");
    if let Some(secret) = secret {
        rb = rb.header("x-hub-signature-256", sign(secret, &raw));
    }
    crate::common::read(rb.body(raw).send().await.expect("webhook")).await
}

// --- Setup ----------------------------------------------------------------------------

pub(crate) struct Desk {
    pub(crate) server: TestServer,
    pub(crate) graph: FakeGraph,
    pub(crate) owner_id: String,
    pub(crate) owner: Auth,
}

pub(crate) async fn desk_on(backend: Backend) -> Desk {
    desk_with(backend, &[]).await
}

/// A desk on `backend` with `extra` config overrides.
pub(crate) async fn desk_with(backend: Backend, extra: &[(&str, &str)]) -> Desk {
    desk_at(backend, extra, None).await
}

/// A desk on `backend` with `extra` config overrides, on `clock` when given.
pub(crate) async fn desk_at(
    backend: Backend,
    extra: &[(&str, &str)],
    clock: Option<Arc<wagate_actors::domain::ManualClock>>,
) -> Desk {
    let graph = FakeGraph::start().await;
    let url = graph.url();
    let mut config = vec![
        ("waba_graph_base_url", url.as_str()),
        ("waba_api_version", "v21.0"),
    ];
    config.extend_from_slice(extra);
    let server = match clock {
        Some(clock) => TestServer::start_on_with_clock(backend, &config, clock).await,
        None => TestServer::start_on(backend, &config).await,
    };
    let (owner_id, _, token) = server.new_user("owner@example.com", "user").await;
    let owner = Auth::Bearer(token);
    let (code, body) = server
        .put(
            "/api/waba/settings",
            &owner,
            json!({"accessToken": TOKEN, "phoneNumberId": PHONE_NUMBER_ID, "businessAccountId": "WABA_ID",
                   "appSecret": APP_SECRET, "verifyToken": VERIFY_TOKEN}),
        )
        .await;
    assert_eq!(code, 200, "settings: {body}");
    Desk {
        server,
        graph,
        owner_id,
        owner,
    }
}

/// Creates an operator working for `owner_id`; returns its id and token.
pub(crate) async fn operator(server: &TestServer, email: &str, owner_id: &str) -> (String, Auth) {
    let (code, body) = server
        .post(
            "/api/users",
            &server.admin(),
            json!({"email": email, "password": "password1", "firstName": "Op", "lastName": "Erator",
                   "role": "operator", "ownerId": owner_id}),
        )
        .await;
    assert_eq!(code, 201, "operator: {body}");
    let (code, login) = server
        .post(
            "/api/auth/login",
            &Auth::None,
            json!({"email": email, "password": "password1"}),
        )
        .await;
    assert_eq!(code, 200, "login: {login}");
    (
        body["id"].as_str().expect("id").to_owned(),
        Auth::Bearer(login["token"].as_str().expect("token").to_owned()),
    )
}

pub(crate) fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A customer writes; returns the chat's id.
pub(crate) async fn customer_writes(d: &Desk, wamid: &str, ts_secs: i64) -> i64 {
    let (code, body) = webhook(
        &d.server,
        &inbound(wamid, CUSTOMER, "Hello, is my order ready?", ts_secs),
        Some(APP_SECRET),
    )
    .await;
    assert_eq!(code, 200, "inbound: {body}");
    let (code, chats) = d.server.get("/api/waba/operator/chats", &d.owner).await;
    assert_eq!(code, 200, "chats: {chats}");
    chats["chats"][0]["id"].as_i64().expect("a chat")
}

async fn message_status(d: &Desk, id: i64) -> Value {
    let (code, body) = d
        .server
        .get(&format!("/api/waba/operator/message-status/{id}"), &d.owner)
        .await;
    assert_eq!(code, 200, "message-status: {body}");
    body
}

// --- Tests ----------------------------------------------------------------------------

async fn inbound_send_and_statuses(backend: Backend) {
    let d = desk_on(backend).await;
    let chat = customer_writes(&d, "wamid.IN1", now_secs()).await;

    let (_, chats) = d.server.get("/api/waba/operator/chats", &d.owner).await;
    let c = &chats["chats"][0];
    assert_eq!(chats["total"], 1);
    assert_eq!(c["customerPhone"], CUSTOMER);
    assert_eq!(c["customerName"], "Anna Customer");
    assert_eq!(c["unreadCount"], 1);
    assert!(c["windowExpiresAt"].is_string(), "{c}");
    assert_eq!(c["lastMessage"]["content"], "Hello, is my order ready?");

    // The same notification again (Meta retries): still one message.
    let (code, _) = webhook(
        &d.server,
        &inbound(
            "wamid.IN1",
            CUSTOMER,
            "Hello, is my order ready?",
            now_secs(),
        ),
        Some(APP_SECRET),
    )
    .await;
    assert_eq!(code, 200);

    let (code, sent) = d
        .server
        .post(
            "/api/waba/operator/send",
            &d.owner,
            json!({"chatId": chat, "message": "Your order is ready"}),
        )
        .await;
    assert_eq!(code, 200, "send: {sent}");
    assert_eq!(sent["success"], true);
    let wamid = sent["messageId"].as_str().expect("wamid").to_owned();
    assert!(wamid.starts_with("wamid.FAKE"), "{sent}");
    assert_eq!(sent["message"]["chatId"], chat);
    assert_eq!(sent["message"]["content"], "Your order is ready");
    assert_eq!(sent["message"]["status"], "sent");
    let id = sent["message"]["id"].as_i64().expect("numeric id");

    let requests = d.graph.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].authorization, format!("Bearer {TOKEN}"));
    assert_eq!(requests[0].phone_number_id, PHONE_NUMBER_ID);
    assert_eq!(requests[0].version, "v21.0");
    assert_eq!(
        requests[0].body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": CUSTOMER,
               "type": "text", "text": {"body": "Your order is ready"}})
    );

    let s = message_status(&d, id).await;
    assert_eq!(
        (
            s["status"].as_str(),
            s["delivered"].as_bool(),
            s["read"].as_bool()
        ),
        (Some("sent"), Some(false), Some(false))
    );
    assert_eq!(s["whatsappMessageId"], wamid.as_str());

    for (next, delivered, read) in [("delivered", true, false), ("read", true, true)] {
        let (code, body) =
            webhook(&d.server, &status(&wamid, CUSTOMER, next), Some(APP_SECRET)).await;
        assert_eq!(code, 200, "{next}: {body}");
        let s = message_status(&d, id).await;
        assert_eq!(
            (
                s["status"].as_str(),
                s["delivered"].as_bool(),
                s["read"].as_bool()
            ),
            (Some(next), Some(delivered), Some(read))
        );
    }
    // A late `delivered` after `read` changes nothing, and so does a repeated `read`.
    for late in ["delivered", "read", "sent"] {
        let (code, body) =
            webhook(&d.server, &status(&wamid, CUSTOMER, late), Some(APP_SECRET)).await;
        assert_eq!(code, 200);
        assert_eq!(body["statuses"], 0, "{late} changed something: {body}");
    }
    assert_eq!(message_status(&d, id).await["status"], "read");

    let (code, history) = d
        .server
        .get(
            &format!("/api/waba/operator/chat/{chat}/messages?limit=20&offset=0"),
            &d.owner,
        )
        .await;
    assert_eq!(code, 200, "history: {history}");
    assert_eq!(
        (&history["total"], &history["limit"], &history["offset"]),
        (&json!(2), &json!(20), &json!(0))
    );
    let out = &history["messages"][0];
    assert_eq!(out["id"], id);
    assert_eq!(out["whatsappMessageId"], wamid.as_str());
    assert_eq!(out["type"], "text");
    assert_eq!(out["fromMe"], true);
    assert_eq!(out["status"], "read");
    assert_eq!(
        (&out["delivered"], &out["read"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(out["mediaUrl"], Value::Null);
    assert_eq!(out["senderUser"]["id"], d.owner_id.as_str());
    assert_eq!(out["senderUser"]["email"], "owner@example.com");
    let inn = &history["messages"][1];
    assert_eq!(inn["fromMe"], false);
    assert_eq!(inn["status"], "received");
    assert_eq!(
        (&inn["delivered"], &inn["read"]),
        (&json!(false), &json!(false))
    );
    assert_eq!(inn["isReadByOperator"], false);
    assert_eq!(inn["senderUser"], Value::Null);
    assert_eq!(inn["whatsappMessageId"], "wamid.IN1");

    let (code, read) = d
        .server
        .post(
            &format!("/api/waba/operator/chat/{chat}/read"),
            &d.owner,
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "read: {read}");
    assert_eq!(read["marked"], 1);
    let (_, chats) = d.server.get("/api/waba/operator/chats", &d.owner).await;
    assert_eq!(chats["chats"][0]["unreadCount"], 0);
    assert_eq!(chats["chats"][0]["lastMessage"]["fromMe"], true);
    let (_, history) = d
        .server
        .get(
            &format!("/api/waba/operator/chat/{chat}/messages"),
            &d.owner,
        )
        .await;
    assert_eq!(history["messages"][1]["isReadByOperator"], true);
}

async fn window_and_templates(backend: Backend) {
    let d = desk_on(backend).await;
    // The customer wrote 25 hours ago: the window is closed.
    let chat = customer_writes(&d, "wamid.OLD", now_secs() - 25 * 3600).await;
    let (code, body) = d
        .server
        .post(
            "/api/waba/operator/send",
            &d.owner,
            json!({"chatId": chat, "message": "Still there?"}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["code"], "outside_24h_window");
    assert!(
        d.graph.requests().is_empty(),
        "Meta was called outside the window"
    );

    // Templates are allowed outside it.
    let (code, body) = d
        .server
        .post(
            "/api/waba/operator/send",
            &d.owner,
            json!({"chatId": chat, "type": "template",
                   "template": {"name": "order_ready", "language": {"code": "ru"},
                                "components": [{"type": "body", "parameters": [{"type": "text", "text": "12345"}]}]}}),
        )
        .await;
    assert_eq!(code, 200, "template: {body}");
    assert_eq!(
        d.graph.requests()[0].body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": CUSTOMER,
               "type": "template", "template": {"name": "order_ready", "language": {"code": "ru"},
               "components": [{"type": "body", "parameters": [{"type": "text", "text": "12345"}]}]}})
    );

    // A fresh message opens the window: media may go out, with the exact payloads.
    customer_writes(&d, "wamid.NEW", now_secs()).await;
    let (code, body) = d
        .server
        .post(
            "/api/waba/operator/send",
            &d.owner,
            json!({"chatId": chat, "type": "image", "mediaUrl": "https://example.com/photo.jpg",
                   "message": "Photo of your order", "caption": "Order #12345"}),
        )
        .await;
    assert_eq!(code, 200, "image: {body}");
    let (code, body) = d
        .server
        .post(
            "/api/waba/operator/send",
            &d.owner,
            json!({"chatId": chat, "type": "document", "mediaUrl": "https://example.com/invoice.pdf",
                   "message": "Invoice", "filename": "invoice_12345.pdf", "caption": "Invoice #12345"}),
        )
        .await;
    assert_eq!(code, 200, "document: {body}");
    let requests = d.graph.requests();
    assert_eq!(
        requests[1].body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": CUSTOMER,
               "type": "image", "image": {"link": "https://example.com/photo.jpg", "caption": "Order #12345"}})
    );
    assert_eq!(
        requests[2].body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": CUSTOMER,
               "type": "document", "document": {"link": "https://example.com/invoice.pdf",
               "caption": "Invoice #12345", "filename": "invoice_12345.pdf"}})
    );
    let (_, history) = d
        .server
        .get(
            &format!("/api/waba/operator/chat/{chat}/messages"),
            &d.owner,
        )
        .await;
    assert_eq!(history["messages"][0]["type"], "document");
    assert_eq!(
        history["messages"][0]["mediaUrl"],
        "https://example.com/invoice.pdf"
    );
}

/// Reads a Server-Sent Events stream until `n` events arrived (20 s at most); returns
/// each as (id, data).
pub(crate) async fn sse_events(
    stream: &mut reqwest::Response,
    buffer: &mut String,
    n: usize,
) -> Vec<(Option<String>, Value)> {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let events: Vec<(Option<String>, Value)> = buffer
                .split("\n\n")
                .filter_map(|block| {
                    let mut id = None;
                    let mut data = None;
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            id = Some(v.trim().to_owned());
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data = serde_json::from_str::<Value>(v.trim()).ok();
                        }
                    }
                    data.map(|d| (id, d))
                })
                .collect();
            if events.len() >= n {
                return events;
            }
            let chunk = stream.chunk().await.expect("chunk").expect("stream open");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the events in time")
}

async fn assign(d: &Desk, who: &Auth, chat: i64, operator: Value) -> (u16, Value) {
    d.server
        .post(
            &format!("/api/waba/operator/chat/{chat}/assign"),
            who,
            json!({ "operatorId": operator }),
        )
        .await
}

async fn listed(d: &Desk, who: &Auth, assigned: &str) -> Vec<i64> {
    let (code, body) = d
        .server
        .get(
            &format!("/api/waba/operator/chats?assigned={assigned}"),
            who,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    body["chats"]
        .as_array()
        .expect("chats")
        .iter()
        .map(|c| c["id"].as_i64().expect("id"))
        .collect()
}

async fn assignment(backend: Backend) {
    let d = desk_on(backend).await;
    let chat = customer_writes(&d, "wamid.A1", now_secs()).await;
    let (op1_id, op1) = operator(&d.server, "op1@example.com", &d.owner_id).await;
    let (op2_id, op2) = operator(&d.server, "op2@example.com", &d.owner_id).await;
    let (other_owner, _, _) = d.server.new_user("other@example.com", "user").await;
    let (stranger_id, stranger) = operator(&d.server, "stranger@example.com", &other_owner).await;
    let mut stream = d
        .server
        .request(Method::GET, "/api/waba/operator/events", &op2)
        .send()
        .await
        .expect("events");
    assert_eq!(stream.status().as_u16(), 200);

    let (_, chats) = d.server.get("/api/waba/operator/chats", &op1).await;
    assert_eq!(chats["chats"][0]["assignedOperatorId"], Value::Null);
    assert_eq!(listed(&d, &op1, "none").await, vec![chat]);
    assert!(listed(&d, &op1, "me").await.is_empty());

    // An operator takes the free chat.
    let (code, body) = assign(&d, &op1, chat, json!(op1_id)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["id"], chat);
    assert_eq!(body["assignedOperatorId"], op1_id.as_str());
    let (_, chats) = d.server.get("/api/waba/operator/chats", &d.owner).await;
    assert_eq!(chats["chats"][0]["assignedOperatorId"], op1_id.as_str());
    assert_eq!(listed(&d, &op1, "me").await, vec![chat]);
    assert!(listed(&d, &op1, "none").await.is_empty());
    assert!(listed(&d, &op2, "me").await.is_empty());
    assert_eq!(listed(&d, &op2, "all").await, vec![chat]);

    // Another operator can neither take it, nor release it, nor give it away.
    let (code, body) = assign(&d, &op2, chat, json!(op2_id)).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["code"], "chat_assigned");
    let (code, body) = assign(&d, &op2, chat, Value::Null).await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = assign(&d, &op1, chat, json!(op2_id)).await;
    assert_eq!(code, 403, "{body}");
    // Another account's operator does not see the chat at all.
    let (code, body) = assign(&d, &stranger, chat, json!(stranger_id)).await;
    assert_eq!(code, 404, "{body}");

    // The owner reassigns it; nobody outside the account can be the assignee.
    let (code, body) = assign(&d, &d.owner, chat, json!(stranger_id)).await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = assign(&d, &d.owner, chat, json!("no-such-user")).await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = assign(&d, &d.owner, chat, json!(op2_id)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["assignedOperatorId"], op2_id.as_str());
    // Its operator releases it; the admin may assign anyone of the account too.
    let (code, body) = assign(&d, &op2, chat, Value::Null).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["assignedOperatorId"], Value::Null);
    let (code, body) = assign(&d, &d.server.admin(), chat, json!(d.owner_id)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["assignedOperatorId"], d.owner_id.as_str());

    // Bad requests.
    let (code, body) = d
        .server
        .post(
            &format!("/api/waba/operator/chat/{chat}/assign"),
            &d.owner,
            json!({}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("operatorId")
    );
    let (code, _) = assign(&d, &d.owner, 424242, Value::Null).await;
    assert_eq!(code, 404);
    let (code, _) = d
        .server
        .get("/api/waba/operator/chats?assigned=everyone", &d.owner)
        .await;
    assert_eq!(code, 400);

    // Every change went on the stream, in order.
    let mut buffer = String::new();
    let events = sse_events(&mut stream, &mut buffer, 4).await;
    let assignments: Vec<Value> = events
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e["type"] == "assignment")
        .map(|e| {
            assert_eq!(e["chatId"], chat);
            e["assignedOperatorId"].clone()
        })
        .collect();
    assert_eq!(
        assignments,
        [json!(op1_id), json!(op2_id), Value::Null, json!(d.owner_id)]
    );
}

/// `wagate_waba_chat_actors` from `/metrics`.
async fn chat_actors(server: &TestServer) -> u64 {
    let text = server
        .request(Method::GET, "/metrics", &Auth::None)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix("wagate_waba_chat_actors "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the chat actor gauge")
}

async fn idle_chats_stop_and_wake(backend: Backend) {
    let d = desk_with(backend, &[("waba_chat_idle_ms", "300")]).await;
    let chat = customer_writes(&d, "wamid.I1", now_secs()).await;
    crate::common::eventually(20, "the idle chat actor to stop", || async {
        (chat_actors(&d.server).await == 0).then_some(())
    })
    .await;
    // The chat wakes on demand: a customer message and an answer both work, and the
    // answer sees the window the stored message opened.
    let again = customer_writes(&d, "wamid.I2", now_secs()).await;
    assert_eq!(again, chat);
    let (code, sent) = d
        .server
        .post(
            "/api/waba/operator/send",
            &d.owner,
            json!({"chatId": chat, "message": "Still here"}),
        )
        .await;
    assert_eq!(code, 200, "{sent}");
    let (_, history) = d
        .server
        .get(
            &format!("/api/waba/operator/chat/{chat}/messages"),
            &d.owner,
        )
        .await;
    assert_eq!(history["total"], 3, "{history}");
    crate::common::eventually(20, "the woken actor to stop again", || async {
        (chat_actors(&d.server).await == 0).then_some(())
    })
    .await;
}

/// Opens the operator stream, resuming after `last_event_id` when given.
pub(crate) async fn open_events(d: &Desk, last_event_id: Option<&str>) -> reqwest::Response {
    let mut rb = d
        .server
        .request(Method::GET, "/api/waba/operator/events", &d.owner);
    if let Some(id) = last_event_id {
        rb = rb.header("last-event-id", id);
    }
    let stream = rb.send().await.expect("events");
    assert_eq!(stream.status().as_u16(), 200);
    stream
}

/// The `type`s of events.
fn kinds(events: &[(Option<String>, Value)]) -> Vec<String> {
    events
        .iter()
        .map(|(_, e)| e["type"].as_str().expect("type").to_owned())
        .collect()
}

async fn events_resume_after_last_event_id(backend: Backend) {
    let d = desk_with(backend, &[("waba_event_retention", "3")]).await;
    let mut first = open_events(&d, None).await;
    let chat = customer_writes(&d, "wamid.R1", now_secs()).await;
    let (code, sent) = d
        .server
        .post(
            "/api/waba/operator/send",
            &d.owner,
            json!({"chatId": chat, "message": "hello"}),
        )
        .await;
    assert_eq!(code, 200, "{sent}");
    let wamid = sent["messageId"].as_str().expect("wamid").to_owned();
    let mut buffer = String::new();
    // The customer's message, the answer as `pending`, then `sent`.
    let seen = sse_events(&mut first, &mut buffer, 3).await;
    assert_eq!(kinds(&seen), ["message", "message", "status"]);
    assert_eq!(seen[1].1["message"]["status"], "pending");
    assert_eq!(seen[2].1["message"]["status"], "sent");
    let ids: Vec<String> = seen
        .iter()
        .map(|(id, _)| id.clone().expect("every event has an id"))
        .collect();
    assert_ne!(ids[0], ids[1]);
    drop(first);

    // While nobody listens: a status and an assignment.
    let (code, _) = webhook(
        &d.server,
        &status(&wamid, CUSTOMER, "delivered"),
        Some(APP_SECRET),
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = assign(&d, &d.owner, chat, json!(d.owner_id)).await;
    assert_eq!(code, 200);

    // Resuming after the third event: exactly what came later, in order, then live.
    let mut resumed = open_events(&d, Some(&ids[2])).await;
    let mut buffer = String::new();
    let caught_up = sse_events(&mut resumed, &mut buffer, 2).await;
    assert_eq!(kinds(&caught_up), ["status", "assignment"]);
    assert_eq!(caught_up[0].1["message"]["status"], "delivered");
    assert_eq!(caught_up[1].1["assignedOperatorId"], d.owner_id.as_str());
    let (code, _) = assign(&d, &d.owner, chat, Value::Null).await;
    assert_eq!(code, 200);
    let with_live = sse_events(&mut resumed, &mut buffer, 3).await;
    assert_eq!(kinds(&with_live), ["status", "assignment", "assignment"]);
    assert_eq!(with_live[2].1["assignedOperatorId"], Value::Null);
    let last = with_live[2].0.clone().expect("id");
    drop(resumed);

    // Up to date: nothing to catch up on, the next event is live.
    let mut current = open_events(&d, Some(&last)).await;
    customer_writes(&d, "wamid.R2", now_secs()).await;
    let mut buffer = String::new();
    let next = sse_events(&mut current, &mut buffer, 1).await;
    assert_eq!(kinds(&next), ["message"]);
    assert_eq!(next[0].1["message"]["whatsappMessageId"], "wamid.R2");

    // Six events so far, three kept: resuming after the second misses some, and so does
    // an id the server never gave. The stream says so first.
    for named in [ids[1].as_str(), "not-an-id", "1-1"] {
        let mut stale = open_events(&d, Some(named)).await;
        let mut buffer = String::new();
        let told = sse_events(&mut stale, &mut buffer, 1).await;
        assert_eq!(kinds(&told), ["resync"], "{named}");
    }
}

async fn mark_read(d: &Desk, chat: i64) -> Value {
    let (code, body) = d
        .server
        .post(
            &format!("/api/waba/operator/chat/{chat}/read"),
            &d.owner,
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "read: {body}");
    body
}

async fn read_receipts_reach_meta(backend: Backend) {
    let d = desk_on(backend).await;
    let chat = customer_writes(&d, "wamid.OLDER", now_secs() - 60).await;
    customer_writes(&d, "wamid.NEWER", now_secs()).await;
    let (code, _) = d
        .server
        .post(
            "/api/waba/operator/send",
            &d.owner,
            json!({"chatId": chat, "message": "Looking into it"}),
        )
        .await;
    assert_eq!(code, 200);

    // The customer's latest message is reported read, with the account's token.
    let read = mark_read(&d, chat).await;
    assert_eq!(read["marked"], 2, "{read}");
    assert_eq!(
        read["metaReadReceipt"],
        json!({"status": "sent", "whatsappMessageId": "wamid.NEWER", "error": null})
    );
    let receipt = d.graph.requests().pop().expect("a request");
    assert_eq!(receipt.authorization, format!("Bearer {TOKEN}"));
    assert_eq!(receipt.phone_number_id, PHONE_NUMBER_ID);
    assert_eq!(
        receipt.body,
        json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.NEWER"})
    );

    // Meta failing: retried on 5xx, then reported; the local mark stands.
    customer_writes(&d, "wamid.THIRD", now_secs()).await;
    d.graph
        .answer(500, json!({"error": {"message": "oops", "code": 1}}));
    let before = d.graph.requests().len();
    let read = mark_read(&d, chat).await;
    assert_eq!(read["metaReadReceipt"]["status"], "sent", "{read}");
    assert_eq!(d.graph.requests().len() - before, 2, "retried once");

    customer_writes(&d, "wamid.FOURTH", now_secs()).await;
    d.graph.answer(400, meta_error(100, "Invalid parameter"));
    let read = mark_read(&d, chat).await;
    assert_eq!(read["marked"], 1, "{read}");
    let failed = &read["metaReadReceipt"];
    assert_eq!(failed["status"], "failed", "{read}");
    assert_eq!(failed["whatsappMessageId"], "wamid.FOURTH");
    assert!(
        failed["error"]
            .as_str()
            .expect("error")
            .contains("Invalid parameter"),
        "{read}"
    );
    let (_, chats) = d.server.get("/api/waba/operator/chats", &d.owner).await;
    assert_eq!(chats["chats"][0]["unreadCount"], 0);
}

async fn media_urls_to_private_networks_are_refused_before_meta(backend: Backend) {
    let d = desk_with(backend, &[("allow_private_network_urls", "false")]).await;
    let chat = customer_writes(&d, "wamid.M1", now_secs()).await;
    for url in crate::security::PRIVATE_TARGETS
        .into_iter()
        .chain(["ftp://example.com/a.jpg", "not a url"])
    {
        for kind in ["image", "document"] {
            let (code, body) = d
                .server
                .post(
                    "/api/waba/operator/send",
                    &d.owner,
                    json!({"chatId": chat, "type": kind, "mediaUrl": url, "message": "x"}),
                )
                .await;
            assert_eq!(code, 400, "{kind} {url}: {body}");
            assert!(
                body["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("mediaUrl")),
                "{kind} {url}: {body}"
            );
        }
    }
    assert!(d.graph.requests().is_empty(), "Meta was asked to fetch one");
    // A public URL goes through.
    let (code, body) = d
        .server
        .post(
            "/api/waba/operator/send",
            &d.owner,
            json!({"chatId": chat, "type": "image", "mediaUrl": "https://93.184.215.14/photo.jpg",
                   "message": "Photo"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(d.graph.requests().len(), 1);
}

backend_tests!(
    media_urls_to_private_networks_are_refused_before_meta,
    webhook_signatures_routing_and_verification,
    operators_see_only_their_owners_chats,
    meta_errors_are_mapped_and_retried,
    settings_are_masked_and_requests_checked,
    live_events_carry_new_messages_and_statuses,
    read_receipts_reach_meta,
    events_resume_after_last_event_id,
    inbound_send_and_statuses,
    window_and_templates,
    assignment,
    idle_chats_stop_and_wake
);

async fn webhook_signatures_routing_and_verification(backend: Backend) {
    let d = desk_on(backend).await;
    let body = inbound("wamid.X", CUSTOMER, "hi", now_secs());
    let (code, err) = webhook(&d.server, &body, Some("not-the-secret")).await;
    assert_eq!(code, 401, "{err}");
    let (code, _) = webhook(&d.server, &body, None).await;
    assert_eq!(code, 401);
    // A tampered body under a valid signature of the original.
    let raw = serde_json::to_vec(&body).expect("json");
    let mut tampered = body.clone();
    tampered["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"] = json!("evil");
    let resp = d
        .server
        .request(Method::POST, "/api/waba/webhook", &Auth::None)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign(APP_SECRET, &raw))
        .body(serde_json::to_vec(&tampered).expect("json"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);

    // An unknown phone number id is acknowledged (so Meta stops retrying) and ignored.
    let mut unknown = inbound("wamid.Y", CUSTOMER, "hi", now_secs());
    unknown["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = json!("999");
    let (code, _) = webhook(&d.server, &unknown, Some("whatever")).await;
    assert_eq!(code, 200);
    let (_, chats) = d.server.get("/api/waba/operator/chats", &d.owner).await;
    assert_eq!(chats["total"], 0, "{chats}");

    // Meta's subscription check.
    let verify = |token: &str| {
        format!(
            "/api/waba/webhook?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
        )
    };
    let resp = d
        .server
        .request(Method::GET, &verify(VERIFY_TOKEN), &Auth::None)
        .send()
        .await
        .expect("verify");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/plain")
    );
    assert_eq!(resp.text().await.expect("text"), "1158201444");
    let (code, _) = d.server.get(&verify("wrong"), &Auth::None).await;
    assert_eq!(code, 403);
}

async fn operators_see_only_their_owners_chats(backend: Backend) {
    let d = desk_on(backend).await;
    let chat = customer_writes(&d, "wamid.IN", now_secs()).await;
    let (op_id, op) = operator(&d.server, "op@example.com", &d.owner_id).await;
    let (other_owner, _, other_token) = d.server.new_user("other@example.com", "user").await;
    let other = Auth::Bearer(other_token);
    let (_, stranger) = operator(&d.server, "stranger@example.com", &other_owner).await;

    // The owner's operator sees and answers; the message says who sent it.
    let (_, chats) = d.server.get("/api/waba/operator/chats", &op).await;
    assert_eq!(chats["total"], 1);
    let (code, sent) = d
        .server
        .post(
            "/api/waba/operator/send",
            &op,
            json!({"chatId": chat, "message": "On it"}),
        )
        .await;
    assert_eq!(code, 200, "{sent}");
    let id = sent["message"]["id"].as_i64().expect("id");
    let (_, history) = d
        .server
        .get(&format!("/api/waba/operator/chat/{chat}/messages"), &op)
        .await;
    assert_eq!(history["messages"][0]["senderUser"]["id"], op_id.as_str());
    assert_eq!(
        history["messages"][0]["senderUser"]["email"],
        "op@example.com"
    );

    // Another account's operator or user: 404 everywhere, an empty list.
    for who in [&stranger, &other] {
        let (_, chats) = d.server.get("/api/waba/operator/chats", who).await;
        assert_eq!(chats["total"], 0);
        let (code, _) = d
            .server
            .get(&format!("/api/waba/operator/chat/{chat}/messages"), who)
            .await;
        assert_eq!(code, 404);
        let (code, _) = d
            .server
            .get(&format!("/api/waba/operator/message-status/{id}"), who)
            .await;
        assert_eq!(code, 404);
        let (code, _) = d
            .server
            .post(
                &format!("/api/waba/operator/chat/{chat}/read"),
                who,
                json!({}),
            )
            .await;
        assert_eq!(code, 404);
    }
    // The stranger's owner has no settings: that is what a send learns first.
    let (code, body) = d
        .server
        .post(
            "/api/waba/operator/send",
            &stranger,
            json!({"chatId": chat, "message": "x"}),
        )
        .await;
    assert_eq!(code, 500, "{body}");
    assert_eq!(body["code"], "waba_not_configured");
    // Once configured, another account's chat is simply not found.
    let (code, _) = d
        .server
        .put(
            "/api/waba/settings",
            &other,
            json!({"accessToken": "t-other", "phoneNumberId": "222", "businessAccountId": "W2",
                   "appSecret": "s2", "verifyToken": "v2"}),
        )
        .await;
    assert_eq!(code, 200);
    let (code, _) = d
        .server
        .post(
            "/api/waba/operator/send",
            &stranger,
            json!({"chatId": chat, "message": "x"}),
        )
        .await;
    assert_eq!(code, 404);

    // The admin sees every account's chats.
    let (_, chats) = d
        .server
        .get("/api/waba/operator/chats", &d.server.admin())
        .await;
    assert_eq!(chats["total"], 1);
    assert_eq!(d.graph.requests().len(), 1);
}

async fn meta_errors_are_mapped_and_retried(backend: Backend) {
    let d = desk_on(backend).await;
    let chat = customer_writes(&d, "wamid.IN", now_secs()).await;
    let send = || async {
        d.server
            .post(
                "/api/waba/operator/send",
                &d.owner,
                json!({"chatId": chat, "message": "hi"}),
            )
            .await
    };

    d.graph
        .answer(400, meta_error(131047, "Re-engagement message"));
    let (code, body) = send().await;
    assert_eq!(code, 422, "{body}");
    assert!(body["error"].as_str().expect("message").contains("131047"));

    // Throughput: retried with backoff, then 429.
    for _ in 0..3 {
        d.graph.answer(429, meta_error(130429, "Rate limit hit"));
    }
    let before = d.graph.requests().len();
    let (code, body) = send().await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(body["code"], "waba_rate_limited");
    assert_eq!(d.graph.requests().len() - before, 3, "three attempts");

    // A 5xx once, then success: retried.
    d.graph.answer(
        503,
        json!({"error": {"message": "temporarily unavailable", "code": 2}}),
    );
    let before = d.graph.requests().len();
    let (code, body) = send().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(d.graph.requests().len() - before, 2);

    // Other 4xx are not retried.
    d.graph.answer(400, meta_error(100, "Invalid parameter"));
    let before = d.graph.requests().len();
    let (code, body) = send().await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(d.graph.requests().len() - before, 1);

    // A bad token (190): 502 saying so.
    let (code, _) = d
        .server
        .put(
            "/api/waba/settings",
            &d.owner,
            json!({"accessToken": "EAAG-expired-token-xyz"}),
        )
        .await;
    assert_eq!(code, 200);
    let (code, body) = send().await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(body["code"], "waba_token_invalid");
    assert!(
        body["error"]
            .as_str()
            .expect("message")
            .contains("access token")
    );
}

async fn settings_are_masked_and_requests_checked(backend: Backend) {
    let d = desk_on(backend).await;
    let (code, s) = d.server.get("/api/waba/settings", &d.owner).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["configured"], true);
    assert_eq!(s["phoneNumberId"], PHONE_NUMBER_ID);
    assert_eq!(s["businessAccountId"], "WABA_ID");
    let text = s.to_string();
    for secret in [TOKEN, APP_SECRET, VERIFY_TOKEN] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert_eq!(s["accessToken"], "****0001");

    // Nothing stored in the clear either: not in the SQLite file, not in any MongoDB
    // document.
    if backend == Backend::Mongodb {
        let url = d.server.setting("database_url").expect("the MongoDB URL");
        let client = ::mongodb::Client::with_uri_str(&url).await.expect("client");
        let db = client.default_database().expect("a database in the URL");
        let mut account_seen = false;
        for name in db.list_collection_names().await.expect("collections") {
            let mut docs = db
                .collection::<::mongodb::bson::Document>(&name)
                .find(::mongodb::bson::doc! {})
                .await
                .expect("find");
            while docs.advance().await.expect("next document") {
                let text = format!("{:?}", docs.deserialize_current().expect("document"));
                assert!(
                    !text.contains(TOKEN) && !text.contains(APP_SECRET),
                    "{name} holds a secret"
                );
                account_seen |= text.contains(PHONE_NUMBER_ID);
            }
        }
        assert!(account_seen, "the account's settings were looked at");
    }
    let files: &[&str] = match backend {
        Backend::Sqlite => &["whatsapp-api.db", "whatsapp-api.db-wal"],
        Backend::Mongodb => &[],
    };
    for &file in files {
        let Ok(bytes) = std::fs::read(d.server.dir.path().join(file)) else {
            assert_ne!(file, "whatsapp-api.db", "the database file exists");
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(TOKEN) && !text.contains(APP_SECRET),
            "{file} holds a secret"
        );
    }

    let (_, fresh, fresh_token) = d.server.new_user("fresh@example.com", "user").await;
    let _ = fresh;
    let fresh = Auth::Bearer(fresh_token);
    let (code, s) = d.server.get("/api/waba/settings", &fresh).await;
    assert_eq!((code, &s["configured"]), (200, &json!(false)));
    let (code, body) = d
        .server
        .put(
            "/api/waba/settings",
            &fresh,
            json!({"accessToken": "t", "phoneNumberId": "p"}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    // Another account's phone number id is refused.
    let (code, body) = d
        .server
        .put(
            "/api/waba/settings",
            &fresh,
            json!({"accessToken": "t", "phoneNumberId": PHONE_NUMBER_ID, "businessAccountId": "b",
                   "appSecret": "s", "verifyToken": "v"}),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    let (_, op) = operator(&d.server, "op@example.com", &d.owner_id).await;
    let (code, _) = d.server.get("/api/waba/settings", &op).await;
    assert_eq!(code, 403);

    // 400s of the send, and 404 for an unknown chat.
    for (body, what) in [
        (json!({"message": "x"}), "chatId"),
        (json!({"chatId": 1}), "message"),
        (
            json!({"chatId": 1, "message": "x", "type": "video"}),
            "type",
        ),
        (
            json!({"chatId": 1, "message": "x", "type": "image"}),
            "mediaUrl",
        ),
        (json!({"chatId": 1, "type": "template"}), "template"),
        (json!({"chatId": "abc", "message": "x"}), "invalid"),
    ] {
        let (code, err) = d
            .server
            .post("/api/waba/operator/send", &d.owner, body)
            .await;
        assert_eq!(code, 400, "{what}: {err}");
        assert!(
            err["error"].as_str().expect("message").contains(what),
            "{what}: {err}"
        );
    }
    let (code, _) = d
        .server
        .post(
            "/api/waba/operator/send",
            &d.owner,
            json!({"chatId": 424242, "message": "x"}),
        )
        .await;
    assert_eq!(code, 404);
    let (code, _) = d
        .server
        .get("/api/waba/operator/chat/424242/messages", &d.owner)
        .await;
    assert_eq!(code, 404);
    let (code, _) = d
        .server
        .get("/api/waba/operator/message-status/abc", &d.owner)
        .await;
    assert_eq!(code, 400);
}

async fn live_events_carry_new_messages_and_statuses(backend: Backend) {
    let d = desk_on(backend).await;
    let mut stream = d
        .server
        .request(Method::GET, "/api/waba/operator/events", &d.owner)
        .send()
        .await
        .expect("events");
    assert_eq!(stream.status().as_u16(), 200);
    let chat = customer_writes(&d, "wamid.LIVE", now_secs()).await;
    let (code, sent) = d
        .server
        .post(
            "/api/waba/operator/send",
            &d.owner,
            json!({"chatId": chat, "message": "hello"}),
        )
        .await;
    assert_eq!(code, 200);
    let wamid = sent["messageId"].as_str().expect("wamid").to_owned();
    webhook(
        &d.server,
        &status(&wamid, CUSTOMER, "delivered"),
        Some(APP_SECRET),
    )
    .await;

    let mut buffer = String::new();
    let events: Vec<Value> = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let events: Vec<Value> = buffer
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str(d.trim()).ok())
                .collect();
            if events.len() >= 4 {
                return events;
            }
            let chunk = stream.chunk().await.expect("chunk").expect("stream open");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("four events in time");
    assert_eq!(events[0]["type"], "message");
    assert_eq!(events[0]["message"]["whatsappMessageId"], "wamid.LIVE");
    assert_eq!(events[1]["type"], "message");
    assert_eq!(events[1]["message"]["fromMe"], true);
    assert_eq!(events[1]["message"]["status"], "pending");
    assert_eq!(events[2]["type"], "status");
    assert_eq!(events[2]["message"]["status"], "sent");
    assert_eq!(events[2]["message"]["whatsappMessageId"], wamid.as_str());
    assert_eq!(events[3]["type"], "status");
    assert_eq!(events[3]["message"]["status"], "delivered");
    assert_eq!(events[3]["chatId"], chat);
}
