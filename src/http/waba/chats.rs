//! The operators' chats: the list, a chat's history, marking it read and assigning it;
//! and the views the live events share.

use std::collections::HashMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::desk::WabaEvent;
use wagate_actors::domain::MessageStatus;
use wagate_actors::domain::waba::{AssignedFilter, WabaMedia, WabaMessage, window_expires_at};

use super::{DeskCaller, NO_CHAT, numeric, receipts};
use crate::gateway::waba::ReadReceipt;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppPath, AppQuery};
use crate::http::state::AppState;
use crate::http::{iso, page_limit};

/// Default page size of message and chat lists (the spec's default).
const DEFAULT_LIMIT: u32 = 50;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_chats))
        .routes(routes!(chat_messages))
        .routes(routes!(mark_read))
        .routes(routes!(assign))
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
pub(super) struct Senders(HashMap<String, SenderView>);

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

/// A message's file and where fetching it from Meta stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct WabaMediaView {
    /// `pending` (being fetched, or to be retried), `stored` (served at `mediaUrl`) or
    /// `failed` (see `error`; `POST /api/waba/operator/media/{messageId}/retry` tries again).
    #[schema(schema_with = media_states)]
    status: &'static str,
    mime_type: Option<String>,
    file_name: Option<String>,
    /// Bytes, once stored.
    size: Option<u64>,
    /// Fetch attempts so far.
    attempts: u32,
    /// Why the last attempt failed.
    error: Option<String>,
}

fn media_states() -> utoipa::openapi::schema::Object {
    crate::http::openapi::string_enum(&["pending", "stored", "failed"])
}

pub(super) fn media_view(m: &WabaMedia) -> WabaMediaView {
    WabaMediaView {
        status: m.state.as_str(),
        mime_type: m.mime_type.clone(),
        file_name: m.file_name.clone(),
        size: m.size,
        attempts: m.attempts,
        error: m.error.clone(),
    }
}

/// Where a message's file is served: the desk's own path for a file it keeps, else the
/// URL it was sent from.
pub(super) fn media_url(m: &WabaMessage) -> Option<String> {
    match &m.media {
        Some(_) => Some(format!("/api/waba/operator/media/{}", m.id)),
        None => m.media_url.clone(),
    }
}

/// Meta's error for a message it did not deliver.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WabaMessageError)]
pub(super) struct ErrorView {
    /// Meta's error code (131047, 130429, …); null when Meta could not be reached.
    code: Option<i64>,
    /// Meta's title of the error, or what went wrong.
    title: String,
}

pub(super) fn error_view(m: &WabaMessage) -> Option<ErrorView> {
    m.error.as_ref().map(|e| ErrorView {
        code: e.code,
        title: e.title.clone(),
    })
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
    /// Where the file is: `/api/waba/operator/media/{id}` (same auth) for a file the desk
    /// keeps (inbound attachments, uploads), else the URL it was sent from.
    media_url: Option<String>,
    /// The file the desk keeps and where fetching it stands (null: none).
    media: Option<WabaMediaView>,
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
    /// Why it was not delivered (`status` `failed`): Meta's code and title.
    error: Option<ErrorView>,
    /// Who sent it (outbound).
    sender_user: Option<SenderView>,
}

async fn message_view(state: &AppState, senders: &mut Senders, m: &WabaMessage) -> WabaMessageView {
    let (delivered, read) = receipts(m);
    WabaMessageView {
        id: m.id,
        chat_id: m.chat_id,
        whatsapp_message_id: m.whatsapp_message_id.clone(),
        content: m.content.clone(),
        media_url: media_url(m),
        media: m.media.as_ref().map(media_view),
        message_type: m.message_type.clone(),
        from_me: m.from_me,
        timestamp: iso(m.timestamp),
        status: m.status,
        delivered,
        read,
        is_read_by_operator: m.is_read_by_operator,
        error: error_view(m),
        sender_user: senders.of(state, m.sender_user_id.as_deref()).await,
    }
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
        Ok((
            page_limit(self.limit, DEFAULT_LIMIT)?,
            self.offset.unwrap_or(0),
        ))
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
    desk: DeskCaller,
    AppPath(raw): AppPath<String>,
    AppQuery(page): AppQuery<OffsetParams>,
) -> ApiResult<AppJson<WabaHistory>> {
    let chat_id = numeric("chatId", &raw)?;
    let (limit, offset) = page.resolve()?;
    let page = state
        .waba
        .history(&desk.scope, chat_id, limit, offset)
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ChatListParams {
    /// Page size, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// How many items to skip.
    offset: Option<u64>,
    /// `me` (assigned to the caller), `none` (unassigned) or `all` (default).
    #[param(pattern = "^(me|none|all)$")]
    assigned: Option<String>,
}

impl ChatListParams {
    fn assigned(&self, caller_id: &str) -> ApiResult<AssignedFilter> {
        match self.assigned.as_deref().map(str::trim) {
            None | Some("" | "all") => Ok(AssignedFilter::All),
            Some("none") => Ok(AssignedFilter::Unassigned),
            Some("me") => Ok(AssignedFilter::To(caller_id.to_owned())),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid assigned '{other}': expected me, none or all"
            ))),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct WabaChatList {
    chats: Vec<WabaChatView>,
    total: u64,
    limit: u32,
    offset: u64,
}

/// The chats the caller sees, most recent first; `assigned` keeps those assigned to the
/// caller (`me`) or to nobody (`none`).
#[utoipa::path(
    get,
    path = "/api/waba/operator/chats",
    tag = "waba",
    params(ChatListParams),
    responses(
        (status = 200, description = "A page of chats", body = WabaChatList),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
    )
)]
async fn list_chats(
    State(state): State<AppState>,
    desk: DeskCaller,
    AppQuery(params): AppQuery<ChatListParams>,
) -> ApiResult<AppJson<WabaChatList>> {
    let limit = page_limit(params.limit, DEFAULT_LIMIT)?;
    let offset = params.offset.unwrap_or(0);
    let assigned = params.assigned(&desk.caller.0.id)?;
    let page = state
        .waba
        .chats(&desk.scope, &assigned, limit, offset)
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
    /// The read receipt for the customer's latest message, as Meta took it.
    meta_read_receipt: WabaReadReceipt,
}

/// What Meta was told when a chat was marked read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct WabaReadReceipt {
    /// `sent`, `failed` (the local mark stands; see `error`) or `none` (no customer
    /// message to mark).
    #[schema(schema_with = receipt_statuses)]
    status: &'static str,
    /// The customer's message the receipt is for.
    whatsapp_message_id: Option<String>,
    /// Why Meta did not take it.
    error: Option<String>,
}

fn receipt_statuses() -> utoipa::openapi::schema::Object {
    crate::http::openapi::string_enum(&["sent", "failed", "none"])
}

/// Marks the chat's inbound messages read by an operator, and tells Meta the customer's
/// latest message was read (`metaReadReceipt`; a Meta failure is reported there, and the
/// local mark stands).
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
    desk: DeskCaller,
    AppPath(raw): AppPath<String>,
) -> ApiResult<AppJson<WabaMarked>> {
    let chat_id = numeric("chatId", &raw)?;
    let done = state.waba.mark_read(&desk.scope, chat_id).await?;
    let receipt = match done.receipt {
        ReadReceipt::Sent {
            whatsapp_message_id,
        } => WabaReadReceipt {
            status: "sent",
            whatsapp_message_id: Some(whatsapp_message_id),
            error: None,
        },
        ReadReceipt::Failed {
            whatsapp_message_id,
            error,
        } => WabaReadReceipt {
            status: "failed",
            whatsapp_message_id: Some(whatsapp_message_id),
            error: Some(error),
        },
        ReadReceipt::NothingToMark => WabaReadReceipt {
            status: "none",
            whatsapp_message_id: None,
            error: None,
        },
    };
    Ok(AppJson(WabaMarked {
        success: true,
        chat_id,
        marked: done.marked,
        meta_read_receipt: receipt,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WabaAssign)]
struct AssignBody {
    /// The user to assign the chat to (the account's owner or one of its operators);
    /// null releases the chat. Required, null included.
    #[serde(default, deserialize_with = "present")]
    operator_id: Option<Option<String>>,
}

/// Tells a field given as `null` (Some(None)) from one left out (None).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A chat after an assignment.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct WabaChatAssigned {
    id: i64,
    customer_phone: String,
    customer_name: Option<String>,
    #[schema(format = DateTime)]
    window_expires_at: Option<String>,
    assigned_operator_id: Option<String>,
    owner_id: String,
}

/// Assigns the chat to an operator, or releases it (`operatorId: null`).
///
/// An operator may take a chat nobody has, or release its own; the account's owner or an
/// admin may assign it to anyone of the account. The change goes on the live events as
/// `{"type": "assignment", "chatId", "assignedOperatorId"}`.
#[utoipa::path(
    post,
    path = "/api/waba/operator/chat/{chatId}/assign",
    tag = "waba",
    params(("chatId" = i64, Path, description = "The chat's numeric id")),
    request_body = AssignBody,
    responses(
        (status = 200, description = "The chat after the assignment", body = WabaChatAssigned),
        (status = 400, description = "Not a number, `operatorId` missing, or not a user of the chat's account", body = ErrorBody),
        (status = 403, description = "An operator assigning someone else, or releasing another's chat", body = ErrorBody),
        (status = 404, description = NO_CHAT, body = ErrorBody),
        (status = 409, description = "An operator taking a chat assigned to someone else (`chat_assigned`)", body = ErrorBody),
    )
)]
async fn assign(
    State(state): State<AppState>,
    desk: DeskCaller,
    AppPath(raw): AppPath<String>,
    AppJson(body): AppJson<Value>,
) -> ApiResult<AppJson<WabaChatAssigned>> {
    let chat_id = numeric("chatId", &raw)?;
    let body: AssignBody = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let Some(assignee) = body.operator_id else {
        return Err(ApiError::bad_request(
            "operatorId is required (a user id, or null to release the chat)",
        ));
    };
    let assignee = assignee.map(|a| a.trim().to_owned());
    let chat = state
        .waba
        .assign(&desk.scope, &desk.caller.0, chat_id, assignee)
        .await?;
    Ok(AppJson(WabaChatAssigned {
        id: chat.id,
        customer_phone: chat.customer_phone,
        customer_name: chat.customer_name,
        window_expires_at: window_expires_at(chat.last_customer_message_at).map(iso),
        assigned_operator_id: chat.assigned_operator_id,
        owner_id: chat.owner_id,
    }))
}

/// The `data:` of an event.
pub(super) async fn event_data(
    state: &AppState,
    senders: &mut Senders,
    event: &WabaEvent,
) -> Value {
    match event {
        WabaEvent::Message(m) | WabaEvent::Status(m) | WabaEvent::Media(m) => json!({
            "type": event.kind(),
            "chatId": m.chat_id,
            "message": message_view(state, senders, m).await,
        }),
        WabaEvent::Assignment(c) => json!({
            "type": event.kind(),
            "chatId": c.id,
            "assignedOperatorId": c.assigned_operator_id,
        }),
    }
}
