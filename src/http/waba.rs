//! The WABA operator desk API: settings, Meta's webhook, and the operators' chats,
//! messages, sends and live events.
//!
//! Who sees what: an admin sees every account's chats; a user sees the chats of its own
//! account; an operator those of its owner (`ownerId`). Another account's chat or message
//! answers 404, as if it did not exist.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::wrappers::ReceiverStream;
use wagate_actors::domain::Role;
use wagate_actors::messaging::MessageStatus;
use wagate_actors::waba::{
    GraphError, SendError, WabaChat, WabaContent, WabaMessage, window_expires_at,
};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::http::auth::AuthUser;
use crate::http::extract::{AppJson, AppPath, AppQuery};
use crate::http::{MAX_PAGE_LIMIT, iso};
use crate::waba::webhook::{Notification, meta_time, signature_valid};
use crate::waba::{WabaSettings, mask, verify_token_hash};

/// WhatsApp's limit on the text of one message.
const MAX_TEXT_CHARS: usize = 4096;
/// Default page size of message and chat lists (the spec's default).
const DEFAULT_LIMIT: u32 = 50;
/// Events buffered per SSE client before the slowest events are dropped for it.
const SSE_BUFFER: usize = 64;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/waba/settings", get(get_settings).put(put_settings))
        .route(
            "/api/waba/webhook",
            get(verify_webhook).post(receive_webhook),
        )
        .route("/api/waba/operator/send", post(send))
        .route(
            "/api/waba/operator/message-status/{message_id}",
            get(message_status),
        )
        .route("/api/waba/operator/chats", get(list_chats))
        .route(
            "/api/waba/operator/chat/{chat_id}/messages",
            get(chat_messages),
        )
        .route("/api/waba/operator/chat/{chat_id}/read", post(mark_read))
        .route("/api/waba/operator/events", get(events))
}

// --- Access ---------------------------------------------------------------------------

/// Whose chats the caller sees: None for everybody's (admin).
fn owner_scope(caller: &AuthUser) -> Option<String> {
    let u = &caller.0;
    match u.role {
        Role::Admin => None,
        Role::User => Some(u.id.clone()),
        // An operator without an owner sees nothing of anybody else.
        Role::Operator => Some(u.owner_id.clone().unwrap_or_else(|| u.id.clone())),
    }
}

fn sees(scope: &Option<String>, owner_id: &str) -> bool {
    scope.as_deref().is_none_or(|o| o == owner_id)
}

fn chat_not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("chat {id} not found"))
}

/// The chat, if the caller may see it; 404 otherwise.
async fn visible_chat(state: &AppState, caller: &AuthUser, id: i64) -> ApiResult<WabaChat> {
    match state.waba.storage.waba_chat(id).await? {
        Some(chat) if sees(&owner_scope(caller), &chat.owner_id) => Ok(chat),
        _ => Err(chat_not_found(id)),
    }
}

/// A numeric id from the path (400 otherwise).
fn numeric(name: &str, raw: &str) -> ApiResult<i64> {
    raw.trim()
        .parse::<i64>()
        .map_err(|_| ApiError::bad_request(format!("{name} must be a number")))
}

// --- Views ----------------------------------------------------------------------------

/// `{id, email}` of message senders, read once per request (or stream).
#[derive(Default)]
struct Senders(HashMap<String, Value>);

impl Senders {
    async fn of(&mut self, state: &AppState, user_id: Option<&str>) -> Value {
        let Some(id) = user_id else {
            return Value::Null;
        };
        if let Some(v) = self.0.get(id) {
            return v.clone();
        }
        let view = match state.storage.user_by_id(id).await {
            Ok(Some(u)) => json!({"id": u.id, "email": u.email}),
            // A deleted sender (or storage hiccup) still shows who it was.
            _ => json!({"id": id, "email": null}),
        };
        self.0.insert(id.to_owned(), view.clone());
        view
    }
}

fn delivered(status: MessageStatus) -> bool {
    matches!(status, MessageStatus::Delivered | MessageStatus::Read)
}

/// A message as the chat history (and the live events) show it.
async fn message_view(state: &AppState, senders: &mut Senders, m: &WabaMessage) -> Value {
    json!({
        "id": m.id,
        "chatId": m.chat_id,
        "whatsappMessageId": m.whatsapp_message_id,
        "content": m.content,
        "mediaUrl": m.media_url,
        "type": m.message_type,
        "fromMe": m.from_me,
        "timestamp": iso(m.timestamp),
        "status": m.status.as_str(),
        "delivered": m.from_me && delivered(m.status),
        "read": m.from_me && m.status == MessageStatus::Read,
        "isReadByOperator": m.is_read_by_operator,
        "senderUser": senders.of(state, m.sender_user_id.as_deref()).await,
    })
}

// --- Settings -------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct SettingsQuery {
    /// Admins may read and write another account's settings.
    #[serde(rename = "ownerId")]
    owner_id: Option<String>,
}

/// The account whose settings the caller manages: its own, or (admin) `?ownerId=`.
async fn settings_owner(
    state: &AppState,
    caller: &AuthUser,
    q: &SettingsQuery,
) -> ApiResult<String> {
    if caller.0.role == Role::Operator {
        return Err(ApiError::forbidden(
            "operators cannot manage WABA settings; their owner or an admin can",
        ));
    }
    match &q.owner_id {
        Some(owner) if owner != &caller.0.id => {
            caller.require_admin()?;
            match state.storage.user_by_id(owner).await? {
                Some(u) if u.role != Role::Operator => Ok(u.id),
                _ => Err(ApiError::not_found(format!("user {owner} not found"))),
            }
        }
        _ => Ok(caller.0.id.clone()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SettingsBody {
    access_token: Option<String>,
    phone_number_id: Option<String>,
    business_account_id: Option<String>,
    app_secret: Option<String>,
    verify_token: Option<String>,
}

async fn settings_view(state: &AppState, owner_id: &str) -> ApiResult<Value> {
    Ok(match state.waba.settings(owner_id).await? {
        Some((s, account)) => json!({
            "configured": true,
            "ownerId": owner_id,
            "phoneNumberId": s.phone_number_id,
            "businessAccountId": s.business_account_id,
            "accessToken": mask(&s.access_token),
            "appSecret": mask(&s.app_secret),
            "verifyToken": mask(&s.verify_token),
            "webhookPath": "/api/waba/webhook",
            "updatedAt": iso(account.updated_at),
        }),
        None => json!({
            "configured": false,
            "ownerId": owner_id,
            "phoneNumberId": null,
            "businessAccountId": null,
            "accessToken": null,
            "appSecret": null,
            "verifyToken": null,
            "webhookPath": "/api/waba/webhook",
        }),
    })
}

async fn get_settings(
    State(state): State<AppState>,
    caller: AuthUser,
    AppQuery(q): AppQuery<SettingsQuery>,
) -> ApiResult<AppJson<Value>> {
    let owner = settings_owner(&state, &caller, &q).await?;
    Ok(AppJson(settings_view(&state, &owner).await?))
}

/// Sets the account's settings. Every field is required the first time; later, an
/// omitted secret keeps its stored value (so a client never has to resend them).
async fn put_settings(
    State(state): State<AppState>,
    caller: AuthUser,
    AppQuery(q): AppQuery<SettingsQuery>,
    AppJson(raw): AppJson<Value>,
) -> ApiResult<AppJson<Value>> {
    let owner = settings_owner(&state, &caller, &q).await?;
    let body: SettingsBody = serde_json::from_value(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let current = state.waba.settings(&owner).await?.map(|(s, _)| s);
    let pick = |given: Option<String>, stored: Option<&String>, name: &str| {
        let value = given
            .map(|v| v.trim().to_owned())
            .or_else(|| stored.cloned())
            .unwrap_or_default();
        if value.is_empty() {
            Err(ApiError::bad_request(format!("{name} is required")))
        } else {
            Ok(value)
        }
    };
    let c = current.as_ref();
    let settings = WabaSettings {
        access_token: pick(body.access_token, c.map(|s| &s.access_token), "accessToken")?,
        phone_number_id: pick(
            body.phone_number_id,
            c.map(|s| &s.phone_number_id),
            "phoneNumberId",
        )?,
        business_account_id: pick(
            body.business_account_id,
            c.map(|s| &s.business_account_id),
            "businessAccountId",
        )?,
        app_secret: pick(body.app_secret, c.map(|s| &s.app_secret), "appSecret")?,
        verify_token: pick(body.verify_token, c.map(|s| &s.verify_token), "verifyToken")?,
    };
    state.waba.put_settings(&owner, &settings).await?;
    Ok(AppJson(settings_view(&state, &owner).await?))
}

// --- Meta's webhook -------------------------------------------------------------------

/// Meta's subscription check: answers `hub.challenge` as text when `hub.verify_token` is
/// the verify token of some account; 403 otherwise.
async fn verify_webhook(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<HashMap<String, String>>,
) -> ApiResult<Response> {
    let mode = q.get("hub.mode").map(String::as_str);
    let token = q.get("hub.verify_token").map(String::as_str).unwrap_or("");
    let challenge = q.get("hub.challenge").cloned().unwrap_or_default();
    let refused = || ApiError::forbidden("webhook verification failed: unknown verify token");
    if mode != Some("subscribe") || token.is_empty() {
        return Err(refused());
    }
    let Some(account) = state
        .waba
        .storage
        .waba_account_by_verify_token_hash(&verify_token_hash(token))
        .await?
    else {
        return Err(refused());
    };
    // The hash found it; the sealed token confirms it (a hash collision is not a match).
    let settings = state.waba.open(&account)?;
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        settings.verify_token.as_bytes(),
        token.as_bytes(),
    )) {
        return Err(refused());
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        challenge,
    )
        .into_response())
}

/// A notification from Meta. Each change is routed by `metadata.phone_number_id` to its
/// account and processed only when `X-Hub-Signature-256` is the HMAC of the raw body under
/// that account's app secret. Unknown phone numbers are acknowledged and ignored (Meta
/// would retry anything else for days); a bad signature is 401. Processing is idempotent
/// (message ids are unique; statuses only move forward), so Meta's retries are harmless,
/// and a storage failure answers 503 so that Meta does retry.
async fn receive_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<AppJson<Value>> {
    let notification: Notification = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid notification: {e}")))?;
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");

    // Which accounts the notification names, and which of them signed it.
    let mut accounts: HashMap<String, Option<String>> = HashMap::new();
    for change in notification.entry.iter().flat_map(|e| &e.changes) {
        let Some(meta) = &change.value.metadata else {
            continue;
        };
        if accounts.contains_key(&meta.phone_number_id) {
            continue;
        }
        let owner = match state
            .waba
            .storage
            .waba_account_by_phone_number_id(&meta.phone_number_id)
            .await?
        {
            Some(account) => {
                let settings = state.waba.open(&account)?;
                if !signature_valid(&settings.app_secret, &body, signature) {
                    return Err(ApiError::unauthorized(
                        "invalid X-Hub-Signature-256: it must be sha256=<hex HMAC-SHA256 of the raw body with the app secret>",
                    ));
                }
                Some(account.owner_id)
            }
            None => {
                tracing::info!(phone_number_id = %meta.phone_number_id, "WABA notification for an unknown phone number id: ignored");
                None
            }
        };
        accounts.insert(meta.phone_number_id.clone(), owner);
    }

    let now = Utc::now();
    let (mut messages, mut statuses) = (0u64, 0u64);
    for change in notification.entry.iter().flat_map(|e| &e.changes) {
        let value = &change.value;
        let Some(Some(owner)) = value
            .metadata
            .as_ref()
            .and_then(|m| accounts.get(&m.phone_number_id))
        else {
            continue;
        };
        for m in &value.messages {
            let chat = state
                .waba
                .storage
                .waba_chat_for_customer(owner, &m.from, value.name_of(&m.from), now)
                .await?;
            let message = WabaMessage {
                id: 0,
                chat_id: chat.id,
                owner_id: owner.clone(),
                whatsapp_message_id: m.id.clone(),
                from_me: false,
                message_type: m.message_type(),
                content: m.content(),
                media_url: None,
                status: MessageStatus::Received,
                is_read_by_operator: false,
                sender_user_id: None,
                timestamp: meta_time(m.timestamp.as_deref(), now),
                status_updated_at: None,
            };
            if state.waba.desk.inbound(&chat, message).await?.is_some() {
                messages += 1;
            }
        }
        for s in &value.statuses {
            let Some(status) = s.status() else {
                continue;
            };
            let Some(chat) = state
                .waba
                .storage
                .find_waba_chat(owner, &s.recipient_id)
                .await?
            else {
                continue;
            };
            let at = meta_time(s.timestamp.as_deref(), now);
            if state
                .waba
                .desk
                .status(&chat, &s.id, status, at)
                .await?
                .is_some()
            {
                statuses += 1;
            }
        }
    }
    Ok(AppJson(json!({
        "received": true,
        "messages": messages,
        "statuses": statuses,
    })))
}

// --- Operators ------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendBody {
    chat_id: Option<i64>,
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    media_url: Option<String>,
    caption: Option<String>,
    filename: Option<String>,
    template: Option<TemplateBody>,
}

#[derive(Debug, Deserialize)]
struct TemplateBody {
    name: Option<String>,
    /// `"en_US"` or `{"code": "en_US"}`, as Meta writes it.
    language: Option<Value>,
    components: Option<Value>,
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The media URL of an image or document: required, http(s).
fn media_link(body: &SendBody, kind: &str) -> ApiResult<String> {
    let Some(link) = non_empty(&body.media_url) else {
        return Err(ApiError::bad_request(format!(
            "mediaUrl is required for type {kind}"
        )));
    };
    match url::Url::parse(&link) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(link),
        _ => Err(ApiError::bad_request("mediaUrl must be an http(s) URL")),
    }
}

/// The checked content of a send and the text to store; 400 for what is missing or wrong.
fn content_of(body: &SendBody) -> ApiResult<(WabaContent, Option<String>)> {
    let kind = body.kind.as_deref().unwrap_or("text");
    let text = non_empty(&body.message);
    if let Some(t) = &text
        && t.chars().count() > MAX_TEXT_CHARS
    {
        return Err(ApiError::bad_request(format!(
            "message is longer than {MAX_TEXT_CHARS} characters"
        )));
    }
    let need_text = || {
        text.clone()
            .ok_or_else(|| ApiError::bad_request("message is required"))
    };
    let caption = non_empty(&body.caption).or_else(|| text.clone());
    let content = match kind {
        "text" => WabaContent::Text { body: need_text()? },
        "image" => WabaContent::Image {
            link: media_link(body, kind)?,
            caption,
        },
        "document" => WabaContent::Document {
            link: media_link(body, kind)?,
            caption,
            filename: non_empty(&body.filename),
        },
        "template" => {
            let Some(t) = &body.template else {
                return Err(ApiError::bad_request(
                    "template {name, language, components?} is required for type template",
                ));
            };
            let Some(name) = non_empty(&t.name) else {
                return Err(ApiError::bad_request("template.name is required"));
            };
            let language = match &t.language {
                Some(Value::String(code)) => code.trim().to_owned(),
                Some(Value::Object(o)) => o
                    .get("code")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .trim()
                    .to_owned(),
                _ => String::new(),
            };
            if language.is_empty() {
                return Err(ApiError::bad_request(
                    "template.language is required (e.g. \"en_US\")",
                ));
            }
            if let Some(c) = &t.components
                && !c.is_array()
            {
                return Err(ApiError::bad_request(
                    "template.components must be an array",
                ));
            }
            let stored = text.clone().or_else(|| Some(format!("[template: {name}]")));
            return Ok((
                WabaContent::Template {
                    name,
                    language,
                    components: t.components.clone(),
                },
                stored,
            ));
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid type '{other}': expected text, image, document or template"
            )));
        }
    };
    if kind != "text" && text.is_none() {
        return Err(ApiError::bad_request("message is required"));
    }
    Ok((content, text))
}

fn send_error(e: SendError) -> ApiError {
    match e {
        SendError::OutsideWindow => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "outside_24h_window",
            "the customer's last message is more than 24 hours old (or the customer never wrote): \
             only an approved template (type \"template\") may be sent",
        ),
        SendError::Graph(GraphError::ReEngagement(m)) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "outside_24h_window", m)
        }
        SendError::Graph(GraphError::Throttled(m)) => ApiError {
            retry_after: Some(5),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "waba_rate_limited", m)
        },
        SendError::Graph(GraphError::BadToken(m)) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "waba_token_invalid", m)
        }
        SendError::Graph(GraphError::Rejected { code, message }) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "waba_error",
            format!("Meta refused the message (code {code}): {message}"),
        ),
        SendError::Graph(GraphError::Unavailable(m)) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "waba_unavailable", m)
        }
        SendError::Domain(e) => e.into(),
    }
}

async fn send(
    State(state): State<AppState>,
    caller: AuthUser,
    AppJson(raw): AppJson<Value>,
) -> ApiResult<AppJson<Value>> {
    let body: SendBody = serde_json::from_value(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let Some(chat_id) = body.chat_id else {
        return Err(ApiError::bad_request("chatId is required"));
    };
    let (content, text) = content_of(&body)?;
    // A caller whose own account has no settings learns that first, whatever the chat.
    if let Some(owner) = owner_scope(&caller) {
        state.waba.credentials(&owner).await?;
    }
    let chat = visible_chat(&state, &caller, chat_id).await?;
    let credentials = state.waba.credentials(&chat.owner_id).await?;
    let sent = state
        .waba
        .desk
        .send(&chat, credentials, content, text, Some(caller.0.id.clone()))
        .await
        .map_err(send_error)?;
    Ok(AppJson(json!({
        "success": true,
        "messageId": sent.whatsapp_message_id,
        "message": {
            "id": sent.id,
            "chatId": sent.chat_id,
            "content": sent.content,
            "type": sent.message_type,
            "status": sent.status.as_str(),
            "timestamp": iso(sent.timestamp),
        },
    })))
}

async fn message_status(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(raw): AppPath<String>,
) -> ApiResult<AppJson<Value>> {
    let id = numeric("messageId", &raw)?;
    let not_found = || ApiError::not_found(format!("message {id} not found"));
    let m = state
        .waba
        .storage
        .waba_message(id)
        .await?
        .ok_or_else(not_found)?;
    if !sees(&owner_scope(&caller), &m.owner_id) {
        return Err(not_found());
    }
    Ok(AppJson(json!({
        "id": m.id,
        "whatsappMessageId": m.whatsapp_message_id,
        "status": m.status.as_str(),
        "timestamp": iso(m.timestamp),
        "statusUpdatedAt": m.status_updated_at.map(iso),
        "delivered": m.from_me && delivered(m.status),
        "read": m.from_me && m.status == MessageStatus::Read,
    })))
}

#[derive(Debug, Deserialize)]
struct OffsetParams {
    limit: Option<u32>,
    offset: Option<u64>,
}

impl OffsetParams {
    fn resolve(&self) -> ApiResult<(u32, u64)> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_PAGE_LIMIT {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and {MAX_PAGE_LIMIT}"
            )));
        }
        Ok((limit, self.offset.unwrap_or(0)))
    }
}

async fn chat_messages(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(raw): AppPath<String>,
    AppQuery(page): AppQuery<OffsetParams>,
) -> ApiResult<AppJson<Value>> {
    let chat_id = numeric("chatId", &raw)?;
    let (limit, offset) = page.resolve()?;
    let chat = visible_chat(&state, &caller, chat_id).await?;
    let page = state
        .waba
        .storage
        .waba_chat_messages(chat.id, limit, offset)
        .await?;
    let mut senders = Senders::default();
    let mut messages = Vec::with_capacity(page.items.len());
    for m in &page.items {
        messages.push(message_view(&state, &mut senders, m).await);
    }
    Ok(AppJson(json!({
        "messages": messages,
        "total": page.total,
        "limit": limit,
        "offset": offset,
    })))
}

async fn list_chats(
    State(state): State<AppState>,
    caller: AuthUser,
    AppQuery(page): AppQuery<OffsetParams>,
) -> ApiResult<AppJson<Value>> {
    let (limit, offset) = page.resolve()?;
    let scope = owner_scope(&caller);
    let page = state
        .waba
        .storage
        .list_waba_chats(scope.as_deref(), limit, offset)
        .await?;
    let mut senders = Senders::default();
    let mut chats = Vec::with_capacity(page.items.len());
    for s in &page.items {
        let last = match &s.last_message {
            Some(m) => message_view(&state, &mut senders, m).await,
            None => Value::Null,
        };
        chats.push(json!({
            "id": s.chat.id,
            "customerPhone": s.chat.customer_phone,
            "customerName": s.chat.customer_name,
            "lastMessage": last,
            "unreadCount": s.unread_count,
            "windowExpiresAt": window_expires_at(s.chat.last_customer_message_at).map(iso),
            "assignedOperatorId": s.chat.assigned_operator_id,
            "ownerId": s.chat.owner_id,
        }));
    }
    Ok(AppJson(json!({
        "chats": chats,
        "total": page.total,
        "limit": limit,
        "offset": offset,
    })))
}

async fn mark_read(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(raw): AppPath<String>,
) -> ApiResult<AppJson<Value>> {
    let chat_id = numeric("chatId", &raw)?;
    let chat = visible_chat(&state, &caller, chat_id).await?;
    let marked = state.waba.storage.mark_waba_chat_read(chat.id).await?;
    Ok(AppJson(
        json!({"success": true, "chatId": chat.id, "marked": marked}),
    ))
}

/// Server-Sent Events of the caller's chats: `data: {"type": "message"|"status", "chatId",
/// "message": {...}}`, the message as the chat history shows it after the change. A live
/// feed: a client that reconnects reads what it missed from the history.
async fn events(State(state): State<AppState>, caller: AuthUser) -> impl IntoResponse {
    let scope = owner_scope(&caller);
    let mut live = state.waba.desk.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(SSE_BUFFER);
    tokio::spawn(async move {
        let mut senders = Senders::default();
        loop {
            match live.recv().await {
                Ok(event) => {
                    if !sees(&scope, &event.message.owner_id) {
                        continue;
                    }
                    let data = json!({
                        "type": event.kind.as_str(),
                        "chatId": event.message.chat_id,
                        "message": message_view(&state, &mut senders, &event.message).await,
                    });
                    let sse = Event::default().data(data.to_string());
                    if tx.send(Ok(sse)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "a WABA event stream fell behind");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
