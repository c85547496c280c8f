//! Reading what was sent and received: a chat's history, the chats, marking a chat
//! read, and downloading a message's media.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use wagate_actors::domain::address::{STATUS_BROADCAST, is_group_jid};
use wagate_actors::domain::{HistoryQuery, Jid, Message};

use crate::http::access::UsableInstance;
use crate::http::chats::ChatStateView;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppPath, AppQuery, chat_address};
use crate::http::openapi::{Binary, NO_INSTANCE, NOT_CONNECTED, OVER_LIMIT};
use crate::http::state::AppState;
use crate::http::{DateRangePage, Pagination, iso, page_limit};

/// A message as the history shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    id: String,
    instance_id: String,
    remote_jid: String,
    from_me: bool,
    message_type: String,
    content: Option<String>,
    message_id: String,
    has_media: bool,
    media_url: Option<String>,
    caption: Option<String>,
    mime_type: Option<String>,
    file_name: Option<String>,
    status: wagate_actors::domain::MessageStatus,
    push_name: Option<String>,
    /// Engine-specific details.
    metadata: Value,
    #[schema(format = DateTime)]
    timestamp: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    #[schema(format = DateTime)]
    status_updated_at: Option<String>,
    /// The WhatsApp id of the message of this chat it replies to.
    quoted_message_id: Option<String>,
    /// The people it mentions (`…@s.whatsapp.net`).
    mentions: Vec<String>,
    /// One reaction per person who reacted (the latest).
    reactions: Vec<wagate_actors::domain::Reaction>,
    /// When its text was last edited; absent when never.
    #[schema(format = DateTime)]
    #[serde(skip_serializing_if = "Option::is_none")]
    edited_at: Option<String>,
    /// Deleted for everyone: its text, caption and media are gone.
    revoked: bool,
    /// A location, contact cards or a poll (with its votes), when it carries one.
    #[serde(flatten)]
    typed: wagate_actors::domain::Typed,
}

impl From<Message> for MessageView {
    fn from(m: Message) -> Self {
        MessageView {
            id: m.id,
            instance_id: m.instance_id,
            remote_jid: m.remote_jid,
            from_me: m.from_me,
            message_type: m.message_type,
            content: m.content,
            message_id: m.message_id,
            has_media: m.has_media,
            media_url: m.media_url,
            caption: m.caption,
            mime_type: m.mime_type,
            file_name: m.file_name,
            status: m.status,
            push_name: m.push_name,
            metadata: m.metadata,
            timestamp: iso(m.timestamp),
            created_at: iso(m.created_at),
            updated_at: iso(m.updated_at),
            status_updated_at: m.status_updated_at.map(iso),
            quoted_message_id: m.quoted_message_id,
            mentions: m.mentions,
            reactions: m.reactions,
            edited_at: m.edited_at.map(iso),
            revoked: m.revoked,
            typed: m.typed,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(super) struct HistoryParams {
    /// Page size, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// How many messages to skip.
    skip: Option<u64>,
    /// Only messages at or after this ISO 8601 date or date-time.
    #[param(format = DateTime, example = "2024-01-31T00:00:00Z")]
    start_date: Option<String>,
    /// Only messages at or before this ISO 8601 date or date-time; not before
    /// `startDate` (400 otherwise).
    #[param(format = DateTime, example = "2024-01-31T12:00:00Z")]
    end_date: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct History {
    /// Newest first.
    messages: Vec<MessageView>,
    pagination: Pagination,
}

/// `chatId` of a path: a phone number or a JID; 400 when it is neither.
fn chat_jid(chat_id: &str) -> ApiResult<Jid> {
    chat_address("chatId", chat_id).map_err(|e| ApiError::bad_request(e.message))
}

/// `chatId` of a history read: what [`chat_jid`] takes, or the account's status chat
/// (`status@broadcast`), where its status posts and the ones shown to it are kept.
fn readable_chat(chat_id: &str) -> ApiResult<Jid> {
    if chat_id.trim() == STATUS_BROADCAST {
        return Ok(Jid::status_broadcast());
    }
    chat_jid(chat_id)
}

/// The messages of one chat, newest first.
#[utoipa::path(
    get,
    path = "/api/instances/{instanceId}/chats/{chatId}/messages",
    tag = "messages",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("chatId" = String, Path, description = "A phone number or WhatsApp address, or `status@broadcast` (the status posts)"),
        HistoryParams,
    ),
    responses(
        (status = 200, description = "A page of messages", body = History),
        (status = 400, description = "Invalid chat id or parameters", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
pub(super) async fn history(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppPath((_, chat_id)): AppPath<(String, String)>,
    AppQuery(p): AppQuery<HistoryParams>,
) -> ApiResult<AppJson<History>> {
    let DateRangePage {
        limit,
        skip,
        start,
        end,
    } = DateRangePage::parse(
        p.limit,
        p.skip,
        p.start_date.as_deref(),
        p.end_date.as_deref(),
        50,
    )?;
    let jid = readable_chat(&chat_id)?;
    let page = state
        .storage
        .chat_history(
            &instance.id,
            jid.as_str(),
            &HistoryQuery {
                limit,
                skip,
                start,
                end,
            },
        )
        .await?;
    Ok(AppJson(History {
        messages: page.items.into_iter().map(MessageView::from).collect(),
        pagination: Pagination::new(page.total, limit, skip),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ChatParams {
    /// Page size, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// How many chats to skip.
    skip: Option<u64>,
}

/// A chat and its latest message.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ChatView {
    remote_jid: String,
    is_group: bool,
    /// Inbound messages not yet marked read.
    unread_count: u64,
    message_count: u64,
    last_message: MessageView,
    /// How the account keeps it: archived, pinned, muted, labelled.
    #[serde(flatten)]
    state: ChatStateView,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ChatList {
    /// Most recent activity first.
    chats: Vec<ChatView>,
    pagination: Pagination,
}

/// The instance's chats, most recent first.
#[utoipa::path(
    get,
    path = "/api/instances/{instanceId}/chats",
    tag = "messages",
    params(("instanceId" = String, Path, description = "The instance's id"), ChatParams),
    responses(
        (status = 200, description = "A page of chats", body = ChatList),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
pub(super) async fn chats(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppQuery(p): AppQuery<ChatParams>,
) -> ApiResult<AppJson<ChatList>> {
    let limit = page_limit(p.limit, 50)?;
    let skip = p.skip.unwrap_or(0);
    let page = state.storage.list_chats(&instance.id, limit, skip).await?;
    let jids: Vec<String> = page.items.iter().map(|c| c.remote_jid.clone()).collect();
    let settings = state.storage.chat_settings_of(&instance.id, &jids).await?;
    let now = chrono::Utc::now();
    let chats = page
        .items
        .into_iter()
        .map(|c| {
            let kept = settings.iter().find(|s| s.remote_jid == c.remote_jid);
            ChatView {
                state: ChatStateView::new(&c.remote_jid, kept, now),
                is_group: is_group_jid(&c.remote_jid),
                remote_jid: c.remote_jid,
                unread_count: c.unread_count,
                message_count: c.message_count,
                last_message: MessageView::from(c.last_message),
            }
        })
        .collect();
    Ok(AppJson(ChatList {
        chats,
        pagination: Pagination::new(page.total, limit, skip),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Marked {
    success: bool,
    /// How many messages were marked read.
    marked: u64,
}

/// Marks the chat's inbound messages read (and tells WhatsApp).
#[utoipa::path(
    post,
    path = "/api/instances/{instanceId}/chats/{chatId}/read",
    tag = "messages",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("chatId" = String, Path, description = "A phone number or WhatsApp address"),
    ),
    responses(
        (status = 200, description = "Marked", body = Marked),
        (status = 400, description = "Invalid chat id", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
pub(super) async fn mark_read(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppPath((_, chat_id)): AppPath<(String, String)>,
) -> ApiResult<AppJson<Marked>> {
    let jid = chat_jid(&chat_id)?;
    let marked = state
        .instances
        .get(&instance.id)?
        .mark_read(jid.as_str())
        .await?;
    Ok(AppJson(Marked {
        success: true,
        marked,
    }))
}

/// The media file of a message, as an attachment.
#[utoipa::path(
    get,
    path = "/api/instances/{instanceId}/messages/{messageId}/media",
    tag = "messages",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("messageId" = String, Path, description = "The message's WhatsApp id (`messageId` in the history)"),
    ),
    responses(
        (status = 200, description = "The file, with its own Content-Type (the media type it was sent or received with)", content_type = "*/*", body = Binary),
        (status = 404, description = "No such instance or message, or no stored media", body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
pub(super) async fn download_media(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppPath((_, message_id)): AppPath<(String, String)>,
) -> ApiResult<Response> {
    let message = state
        .storage
        .message_by_id(&instance.id, &message_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("message {message_id} not found")))?;
    let stored = message
        .media_path
        .as_deref()
        .ok_or_else(|| ApiError::not_found("this message has no media"))?;
    // In cluster mode a file another node stored is fetched from the shared store.
    let path = state
        .media
        .local_path(stored)
        .await?
        .ok_or_else(|| ApiError::not_found("the media file is no longer stored"))?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| ApiError::not_found("the media file is no longer stored"))?;
    let mime = message
        .mime_type
        .unwrap_or_else(|| "application/octet-stream".into());
    let name = message
        .file_name
        .unwrap_or_else(|| message.message_id.clone());
    let disposition = content_disposition(&name);
    let stream = tokio_util::io::ReaderStream::new(file);
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            (header::CONTENT_DISPOSITION, disposition),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `attachment` with an ASCII fallback name plus the exact name in RFC 5987 form, so
/// any file name (Cyrillic included) survives and the header stays valid.
pub(crate) fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}
