//! The WABA operator desk API: settings, Meta's webhook, and the operators' chats,
//! messages, sends and live events.
//!
//! Who sees what: an admin sees every account's chats; a user sees the chats of its own
//! account; an operator those of its owner (`ownerId`). Another account's chat or message
//! answers 404, as if it did not exist.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::desk::{GraphError, SendError};
use wagate_actors::domain::MessageStatus;
use wagate_actors::domain::Role;
use wagate_actors::domain::waba::{WabaChat, WabaContent, WabaMessage, window_expires_at};

use crate::http::auth::AuthUser;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppPath, AppQuery};
use crate::http::state::AppState;
use crate::http::{MAX_PAGE_LIMIT, iso};
use crate::waba::webhook::{Notification, meta_time, signature_valid};
use crate::waba::{WabaSettings, mask, verify_token_hash};

/// WhatsApp's limit on the text of one message.
const MAX_TEXT_CHARS: usize = 4096;
/// Default page size of message and chat lists (the spec's default).
const DEFAULT_LIMIT: u32 = 50;
/// Events buffered per SSE client before the slowest events are dropped for it.
const SSE_BUFFER: usize = 64;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(verify_webhook, receive_webhook))
        .routes(routes!(send))
        .routes(routes!(message_status))
        .routes(routes!(list_chats))
        .routes(routes!(chat_messages))
        .routes(routes!(mark_read))
        .routes(routes!(events))
}

const NO_CHAT: &str = "No such chat visible to the caller";

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

/// Who sent an outbound message.
#[derive(Debug, Clone, Serialize, ToSchema)]
struct SenderView {
    id: String,
    /// Null when the account no longer exists.
    email: Option<String>,
}

/// `{id, email}` of message senders, read once per request (or stream).
#[derive(Default)]
struct Senders(HashMap<String, SenderView>);

impl Senders {
    async fn of(&mut self, state: &AppState, user_id: Option<&str>) -> Option<SenderView> {
        let id = user_id?;
        if let Some(v) = self.0.get(id) {
            return Some(v.clone());
        }
        let view = match state.storage.user_by_id(id).await {
            Ok(Some(u)) => SenderView {
                id: u.id,
                email: Some(u.email),
            },
            // A deleted sender (or storage hiccup) still shows who it was.
            _ => SenderView {
                id: id.to_owned(),
                email: None,
            },
        };
        self.0.insert(id.to_owned(), view.clone());
        Some(view)
    }
}

fn delivered(status: MessageStatus) -> bool {
    matches!(status, MessageStatus::Delivered | MessageStatus::Read)
}

/// A message as the chat history (and the live events) show it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct WabaMessageView {
    id: i64,
    chat_id: i64,
    /// Meta's id (`wamid.…`).
    whatsapp_message_id: String,
    content: Option<String>,
    media_url: Option<String>,
    /// `text`, `image`, `document`, `template`; inbound also `audio`, `video`, ...
    #[serde(rename = "type")]
    message_type: String,
    from_me: bool,
    #[schema(format = DateTime)]
    timestamp: String,
    status: MessageStatus,
    /// Outbound and delivered (or read).
    delivered: bool,
    /// Outbound and read.
    read: bool,
    /// Inbound and read by an operator in the desk.
    is_read_by_operator: bool,
    /// Who sent it (outbound).
    sender_user: Option<SenderView>,
}

async fn message_view(state: &AppState, senders: &mut Senders, m: &WabaMessage) -> WabaMessageView {
    WabaMessageView {
        id: m.id,
        chat_id: m.chat_id,
        whatsapp_message_id: m.whatsapp_message_id.clone(),
        content: m.content.clone(),
        media_url: m.media_url.clone(),
        message_type: m.message_type.clone(),
        from_me: m.from_me,
        timestamp: iso(m.timestamp),
        status: m.status,
        delivered: m.from_me && delivered(m.status),
        read: m.from_me && m.status == MessageStatus::Read,
        is_read_by_operator: m.is_read_by_operator,
        sender_user: senders.of(state, m.sender_user_id.as_deref()).await,
    }
}

// --- Settings -------------------------------------------------------------------------

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
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

/// Every field is required the first time; later, an omitted one keeps its stored value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WabaSettingsInput)]
struct SettingsBody {
    /// A Graph API access token of the business.
    access_token: Option<String>,
    phone_number_id: Option<String>,
    business_account_id: Option<String>,
    /// The Meta app's secret: it verifies `X-Hub-Signature-256` of the webhook.
    app_secret: Option<String>,
    /// What Meta sends as `hub.verify_token` when subscribing the webhook.
    verify_token: Option<String>,
}

/// An account's WABA settings; secrets are masked (`****` and the last 4 characters).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WabaSettings)]
struct SettingsView {
    configured: bool,
    owner_id: String,
    phone_number_id: Option<String>,
    business_account_id: Option<String>,
    access_token: Option<String>,
    app_secret: Option<String>,
    verify_token: Option<String>,
    /// Where Meta must send notifications.
    webhook_path: &'static str,
    /// When configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    updated_at: Option<String>,
}

const WEBHOOK_PATH: &str = "/api/waba/webhook";

async fn settings_view(state: &AppState, owner_id: &str) -> ApiResult<SettingsView> {
    Ok(match state.waba.settings(owner_id).await? {
        Some((s, account)) => SettingsView {
            configured: true,
            owner_id: owner_id.to_owned(),
            access_token: Some(mask(&s.access_token)),
            app_secret: Some(mask(&s.app_secret)),
            verify_token: Some(mask(&s.verify_token)),
            phone_number_id: Some(s.phone_number_id),
            business_account_id: Some(s.business_account_id),
            webhook_path: WEBHOOK_PATH,
            updated_at: Some(iso(account.updated_at)),
        },
        None => SettingsView {
            configured: false,
            owner_id: owner_id.to_owned(),
            phone_number_id: None,
            business_account_id: None,
            access_token: None,
            app_secret: None,
            verify_token: None,
            webhook_path: WEBHOOK_PATH,
            updated_at: None,
        },
    })
}

/// The caller's WABA settings (an admin's: any account's, with `ownerId`).
#[utoipa::path(
    get,
    path = "/api/waba/settings",
    tag = "waba",
    params(SettingsQuery),
    responses(
        (status = 200, description = "The settings (`configured: false` when none)", body = SettingsView),
        (status = 403, description = "An operator, or a non-admin naming another account", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    )
)]
async fn get_settings(
    State(state): State<AppState>,
    caller: AuthUser,
    AppQuery(q): AppQuery<SettingsQuery>,
) -> ApiResult<AppJson<SettingsView>> {
    let owner = settings_owner(&state, &caller, &q).await?;
    Ok(AppJson(settings_view(&state, &owner).await?))
}

/// Sets the caller's WABA settings (an admin's: any account's, with `ownerId`).
///
/// Every field is required the first time; later, an omitted secret keeps its stored
/// value (so a client never has to resend them).
#[utoipa::path(
    put,
    path = "/api/waba/settings",
    tag = "waba",
    params(SettingsQuery),
    request_body = SettingsBody,
    responses(
        (status = 200, description = "The stored settings", body = SettingsView),
        (status = 400, description = "A required field is missing", body = ErrorBody),
        (status = 403, description = "An operator, or a non-admin naming another account", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 409, description = "Another account has this phoneNumberId", body = ErrorBody),
    )
)]
async fn put_settings(
    State(state): State<AppState>,
    caller: AuthUser,
    AppQuery(q): AppQuery<SettingsQuery>,
    AppJson(raw): AppJson<Value>,
) -> ApiResult<AppJson<SettingsView>> {
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

/// Meta's webhook subscription check.
///
/// Answers `hub.challenge` as text when `hub.verify_token` is the verify token of some
/// account; 403 otherwise.
#[utoipa::path(
    get,
    path = "/api/waba/webhook",
    tag = "waba",
    security(()),
    params(
        ("hub.mode" = Option<String>, Query, description = "`subscribe`"),
        ("hub.verify_token" = Option<String>, Query, description = "An account's verify token"),
        ("hub.challenge" = Option<String>, Query, description = "Echoed back on success"),
    ),
    responses(
        (status = 200, description = "`hub.challenge`", content_type = "text/plain", body = String),
        (status = 403, description = "Unknown verify token", body = ErrorBody),
    )
)]
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

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WabaReceived)]
struct Received {
    received: bool,
    /// New inbound messages stored.
    messages: u64,
    /// Status changes applied.
    statuses: u64,
}

/// Receives a notification from Meta (messages, statuses).
///
/// Each change is routed by `metadata.phone_number_id` to its account and processed only
/// when `X-Hub-Signature-256` is the HMAC of the raw body under that account's app secret. Unknown phone numbers are acknowledged and ignored (Meta
/// would retry anything else for days); a bad signature is 401. Processing is idempotent
/// (message ids are unique; statuses only move forward), so Meta's retries are harmless,
/// and a storage failure answers 503 so that Meta does retry.
#[utoipa::path(
    post,
    path = "/api/waba/webhook",
    tag = "waba",
    security(()),
    params(
        ("X-Hub-Signature-256" = Option<String>, Header, description = "`sha256=<hex HMAC-SHA256 of the raw body with the app secret>`"),
    ),
    request_body = Notification,
    responses(
        (status = 200, description = "Processed (or ignored: unknown phone number id)", body = Received),
        (status = 400, description = "Not a notification", body = ErrorBody),
        (status = 401, description = "Invalid signature", body = ErrorBody),
        (status = 503, description = "Storage unavailable: Meta retries", body = ErrorBody),
    )
)]
async fn receive_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<AppJson<Received>> {
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
    Ok(AppJson(Received {
        received: true,
        messages,
        statuses,
    }))
}

// --- Operators ------------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WabaSend)]
struct SendBody {
    /// The chat to send to (required).
    chat_id: Option<i64>,
    /// The text (required, except for templates); the caption of media by default.
    #[schema(max_length = 4096)]
    message: Option<String>,
    /// `text` (default), `image`, `document` or `template`.
    #[serde(rename = "type")]
    #[schema(schema_with = send_kinds)]
    kind: Option<String>,
    /// The http(s) URL of an image or document (required for those).
    media_url: Option<String>,
    caption: Option<String>,
    /// The file name of a document.
    filename: Option<String>,
    /// Required for `template`: the only kind allowed outside the 24-hour window.
    template: Option<TemplateBody>,
}

/// The `type`s of a send.
const SEND_KINDS: [&str; 4] = ["text", "image", "document", "template"];

fn send_kinds() -> utoipa::openapi::schema::Object {
    crate::http::openapi::string_enum(&SEND_KINDS)
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = WabaTemplate)]
struct TemplateBody {
    /// An approved template's name.
    name: Option<String>,
    /// `"en_US"` or `{"code": "en_US"}`, as Meta writes it.
    language: Option<Value>,
    /// Meta's template components (an array).
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
                "invalid type '{other}': expected {}",
                SEND_KINDS.join(", ")
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

/// The stored message of a send.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SentWabaMessage {
    id: i64,
    chat_id: i64,
    content: Option<String>,
    #[serde(rename = "type")]
    message_type: String,
    status: MessageStatus,
    #[schema(format = DateTime)]
    timestamp: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct WabaSent {
    success: bool,
    /// Meta's id (`wamid.…`).
    message_id: String,
    message: SentWabaMessage,
}

/// Sends a message to a chat's customer through Meta's Graph API.
#[utoipa::path(
    post,
    path = "/api/waba/operator/send",
    tag = "waba",
    request_body = SendBody,
    responses(
        (status = 200, description = "Sent", body = WabaSent),
        (status = 400, description = "Missing or invalid fields", body = ErrorBody),
        (status = 404, description = NO_CHAT, body = ErrorBody),
        (status = 422, description = "Outside the 24-hour window: only a template may be sent (`outside_24h_window`)", body = ErrorBody),
        (status = 429, description = "Meta's rate limit (`waba_rate_limited`)", body = ErrorBody),
        (status = 500, description = "The chat's account has no WABA settings (`waba_not_configured`)", body = ErrorBody),
        (status = 502, description = "Meta refused or failed (`waba_error`, `waba_token_invalid`, `waba_unavailable`)", body = ErrorBody),
    )
)]
async fn send(
    State(state): State<AppState>,
    caller: AuthUser,
    AppJson(raw): AppJson<Value>,
) -> ApiResult<AppJson<WabaSent>> {
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
    Ok(AppJson(WabaSent {
        success: true,
        message: SentWabaMessage {
            id: sent.id,
            chat_id: sent.chat_id,
            content: sent.content,
            message_type: sent.message_type,
            status: sent.status,
            timestamp: iso(sent.timestamp),
        },
        message_id: sent.whatsapp_message_id,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct WabaMessageStatus {
    id: i64,
    whatsapp_message_id: String,
    status: MessageStatus,
    #[schema(format = DateTime)]
    timestamp: String,
    #[schema(format = DateTime)]
    status_updated_at: Option<String>,
    delivered: bool,
    read: bool,
}

/// The delivery status of a desk message.
#[utoipa::path(
    get,
    path = "/api/waba/operator/message-status/{messageId}",
    tag = "waba",
    params(("messageId" = i64, Path, description = "The message's numeric id")),
    responses(
        (status = 200, description = "The status", body = WabaMessageStatus),
        (status = 400, description = "Not a number", body = ErrorBody),
        (status = 404, description = "No such message visible to the caller", body = ErrorBody),
    )
)]
async fn message_status(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(raw): AppPath<String>,
) -> ApiResult<AppJson<WabaMessageStatus>> {
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
    Ok(AppJson(WabaMessageStatus {
        id: m.id,
        status: m.status,
        timestamp: iso(m.timestamp),
        status_updated_at: m.status_updated_at.map(iso),
        delivered: m.from_me && delivered(m.status),
        read: m.from_me && m.status == MessageStatus::Read,
        whatsapp_message_id: m.whatsapp_message_id,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct OffsetParams {
    /// Page size, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// How many items to skip.
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

#[derive(Debug, Serialize, ToSchema)]
struct WabaHistory {
    messages: Vec<WabaMessageView>,
    total: u64,
    limit: u32,
    offset: u64,
}

/// The messages of a chat.
#[utoipa::path(
    get,
    path = "/api/waba/operator/chat/{chatId}/messages",
    tag = "waba",
    params(("chatId" = i64, Path, description = "The chat's numeric id"), OffsetParams),
    responses(
        (status = 200, description = "A page of messages", body = WabaHistory),
        (status = 400, description = "Invalid chat id or parameters", body = ErrorBody),
        (status = 404, description = NO_CHAT, body = ErrorBody),
    )
)]
async fn chat_messages(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(raw): AppPath<String>,
    AppQuery(page): AppQuery<OffsetParams>,
) -> ApiResult<AppJson<WabaHistory>> {
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
    Ok(AppJson(WabaHistory {
        messages,
        total: page.total,
        limit,
        offset,
    }))
}

/// A chat of the desk with its latest message.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct WabaChatView {
    id: i64,
    /// The customer's WhatsApp id (digits of the phone number).
    customer_phone: String,
    customer_name: Option<String>,
    last_message: Option<WabaMessageView>,
    /// Inbound messages no operator has read yet.
    unread_count: u64,
    /// When the 24-hour window for free-form messages closes (null: never opened).
    #[schema(format = DateTime)]
    window_expires_at: Option<String>,
    assigned_operator_id: Option<String>,
    owner_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct WabaChatList {
    chats: Vec<WabaChatView>,
    total: u64,
    limit: u32,
    offset: u64,
}

/// The chats the caller sees, most recent first.
#[utoipa::path(
    get,
    path = "/api/waba/operator/chats",
    tag = "waba",
    params(OffsetParams),
    responses(
        (status = 200, description = "A page of chats", body = WabaChatList),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
    )
)]
async fn list_chats(
    State(state): State<AppState>,
    caller: AuthUser,
    AppQuery(page): AppQuery<OffsetParams>,
) -> ApiResult<AppJson<WabaChatList>> {
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
            Some(m) => Some(message_view(&state, &mut senders, m).await),
            None => None,
        };
        chats.push(WabaChatView {
            id: s.chat.id,
            customer_phone: s.chat.customer_phone.clone(),
            customer_name: s.chat.customer_name.clone(),
            last_message: last,
            unread_count: s.unread_count,
            window_expires_at: window_expires_at(s.chat.last_customer_message_at).map(iso),
            assigned_operator_id: s.chat.assigned_operator_id.clone(),
            owner_id: s.chat.owner_id.clone(),
        });
    }
    Ok(AppJson(WabaChatList {
        chats,
        total: page.total,
        limit,
        offset,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct WabaMarked {
    success: bool,
    chat_id: i64,
    /// How many messages were marked read.
    marked: u64,
}

/// Marks the chat's inbound messages read by an operator.
#[utoipa::path(
    post,
    path = "/api/waba/operator/chat/{chatId}/read",
    tag = "waba",
    params(("chatId" = i64, Path, description = "The chat's numeric id")),
    responses(
        (status = 200, description = "Marked", body = WabaMarked),
        (status = 400, description = "Not a number", body = ErrorBody),
        (status = 404, description = NO_CHAT, body = ErrorBody),
    )
)]
async fn mark_read(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(raw): AppPath<String>,
) -> ApiResult<AppJson<WabaMarked>> {
    let chat_id = numeric("chatId", &raw)?;
    let chat = visible_chat(&state, &caller, chat_id).await?;
    let marked = state.waba.storage.mark_waba_chat_read(chat.id).await?;
    Ok(AppJson(WabaMarked {
        success: true,
        chat_id: chat.id,
        marked,
    }))
}

/// The caller's chats as a live stream (Server-Sent Events).
///
/// Server-Sent Events of the caller's chats: `data: {"type": "message"|"status", "chatId",
/// "message": {...}}`, the message as the chat history shows it after the change. A live
/// feed: a client that reconnects reads what it missed from the history.
#[utoipa::path(
    get,
    path = "/api/waba/operator/events",
    tag = "waba",
    responses(
        (status = 200, description = "An endless stream: each `data:` is `{\"type\": \"message\"|\"status\", \"chatId\", \"message\"}` (JSON)", content_type = "text/event-stream", body = String),
    )
)]
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
