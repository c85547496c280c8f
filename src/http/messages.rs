//! Sending (text, media by URL, media upload), chat history, chats, and media download.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::domain::address::{is_group_jid, jid_for};
use wagate_actors::domain::normalize_phone;
use wagate_actors::domain::{HistoryQuery, Message};
use wagate_actors::engine::OutboundContent;

use crate::http::access::usable_instance;
use crate::http::auth::AuthUser;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppPath, AppQuery};
use crate::http::openapi::{Binary, NO_INSTANCE, NOT_CONNECTED, OVER_LIMIT};
use crate::http::state::AppState;
use crate::http::{DateRangePage, Pagination, iso, page_limit};
use crate::media::{self, MediaFile};
use crate::outbound::OutboundError;

pub fn router(max_upload: usize) -> OpenApiRouter<AppState> {
    let (schemas, paths, upload) = routes!(send_file);
    // Multipart overhead on top of the file itself.
    let upload = upload.layer(DefaultBodyLimit::max(max_upload.saturating_add(64 * 1024)));
    OpenApiRouter::new()
        .routes(routes!(send_text))
        .routes(routes!(send_media))
        .routes((schemas, paths, upload))
        .routes(routes!(chats))
        .routes(routes!(history))
        .routes(routes!(mark_read))
        .routes(routes!(download_media))
}

/// Longest accepted text message (WhatsApp's own limit is about 65,000 characters).
pub const MAX_TEXT: usize = 65_536;
/// Longest accepted caption.
pub const MAX_CAPTION: usize = 4096;

/// A phone number (normalised) or a group/user JID → the chat's JID.
pub fn target_jid(field: &str, value: &str) -> ApiResult<String> {
    let v = value.trim();
    if let Some((user, server)) = v.split_once('@') {
        let valid_user = !user.is_empty() && user.chars().all(|c| c.is_ascii_digit() || c == '-');
        return match server {
            "g.us" if valid_user => Ok(v.to_owned()),
            "s.whatsapp.net" | "c.us" if valid_user => {
                let phone = normalize_phone(user)
                    .map_err(|e| ApiError::validation(format!("{field}: {e}")))?;
                Ok(jid_for(&phone))
            }
            _ => Err(ApiError::validation(format!(
                "{field} must be a phone number or a WhatsApp address like 79001234567@s.whatsapp.net or 1203630@g.us"
            ))),
        };
    }
    let phone = normalize_phone(v).map_err(|e| ApiError::validation(format!("{field}: {e}")))?;
    Ok(jid_for(&phone))
}

#[derive(Debug, Serialize, ToSchema)]
struct Sent {
    /// The WhatsApp id of the sent message.
    id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SendText {
    /// A phone number or a WhatsApp address (person or group).
    #[schema(example = "79001234567")]
    phone: String,
    /// The text, at most 65,536 characters.
    #[schema(example = "Hello!")]
    message: String,
}

/// Sends a text message.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/send",
    tag = "messages",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = SendText,
    responses(
        (status = 200, description = "Sent", body = Sent),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 400, description = "A missing or invalid phone or message (`validation_error`)", body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn send_text(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<SendText>,
) -> ApiResult<AppJson<Sent>> {
    let to = target_jid("phone", &body.phone)?;
    if body.message.trim().is_empty() {
        return Err(ApiError::validation("message must not be empty"));
    }
    if body.message.chars().count() > MAX_TEXT {
        return Err(ApiError::validation(format!(
            "message must be at most {MAX_TEXT} characters"
        )));
    }
    let instance = usable_instance(&state, &caller, &id, true).await?;
    let sent = state
        .instances
        .get(&instance.id)?
        .send(&to, OutboundContent::Text(body.message))
        .await?;
    Ok(AppJson(Sent {
        id: sent.message_id,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SendMedia {
    /// A phone number or a WhatsApp address (person or group).
    #[schema(example = "79001234567")]
    phone: String,
    /// Where the server downloads the file from (http or https); 502
    /// `media_fetch_failed` when it cannot.
    url: String,
    /// At most 4096 characters.
    caption: Option<String>,
    /// The file name the recipient sees.
    filename: Option<String>,
}

fn media_error(e: OutboundError) -> ApiError {
    match e {
        OutboundError::TooLarge(_) => ApiError::payload_too_large(format!("url: {e}")),
        OutboundError::InvalidUrl(_) | OutboundError::PrivateAddress(_) => {
            ApiError::validation(format!("url: {e}"))
        }
        OutboundError::Timeout | OutboundError::Status(_) | OutboundError::Network(_) => {
            ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "media_fetch_failed",
                format!("url: {e}"),
            )
        }
    }
}

fn check_caption(caption: Option<String>) -> ApiResult<Option<String>> {
    match caption {
        Some(c) if c.chars().count() > MAX_CAPTION => Err(ApiError::validation(format!(
            "caption must be at most {MAX_CAPTION} characters"
        ))),
        Some(c) if c.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// Sends a file the server downloads from `url`.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/send-media",
    tag = "messages",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = SendMedia,
    responses(
        (status = 200, description = "Sent", body = Sent),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 413, description = "The file is over the upload limit", body = ErrorBody),
        (status = 400, description = "A missing or invalid phone, URL or caption (`validation_error`)", body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
        (status = 502, description = "The file cannot be downloaded (`media_fetch_failed`)", body = ErrorBody),
    )
)]
async fn send_media(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<SendMedia>,
) -> ApiResult<AppJson<Sent>> {
    let to = target_jid("phone", &body.phone)?;
    let caption = check_caption(body.caption)?;
    let instance = usable_instance(&state, &caller, &id, true).await?;
    // Refuse early when the instance cannot send, before downloading anything.
    let handle = state.instances.get(&instance.id)?;
    handle.ensure_connected().await?;
    let file = media::fetch(
        &state.media_client,
        &body.url,
        state.config.allow_private_network_urls,
        state.config.max_upload_bytes as u64,
    )
    .await
    .map_err(media_error)?;
    let file_name = body
        .filename
        .and_then(|n| media::safe_file_name(&n))
        .or(file.file_name.clone());
    let sent =
        send_file_message(&state, &handle, &instance.id, to, file, file_name, caption).await?;
    Ok(AppJson(Sent {
        id: sent.message_id,
    }))
}

/// Stores the file under uploads, then hands it to the instance to send.
async fn send_file_message(
    state: &AppState,
    handle: &wagate_actors::instance::InstanceHandle,
    instance_id: &str,
    to: String,
    file: MediaFile,
    file_name: Option<String>,
    caption: Option<String>,
) -> ApiResult<Message> {
    if file.bytes.is_empty() {
        return Err(ApiError::validation("the file is empty"));
    }
    let path = state
        .media
        .save(instance_id, &file.bytes)
        .await
        .map_err(ApiError::internal)?;
    let size = file.bytes.len() as u64;
    let content = OutboundContent::Media {
        bytes: file.bytes.into(),
        mime_type: file.mime_type,
        file_name,
        caption,
        path: path.clone(),
        size,
    };
    let result = handle.send(&to, content).await;
    if result.is_err() {
        state.media.remove_file(&path).await;
    }
    Ok(result?)
}

/// The form of `send-file`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct SendFileForm {
    /// A phone number or a WhatsApp address (person or group).
    phone: String,
    /// At most 4096 characters.
    caption: Option<String>,
    /// The file (its name and type are taken from the part).
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    file: Vec<u8>,
}

/// Sends an uploaded file (`multipart/form-data`: `phone`, `file`, optional `caption`).
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/send-file",
    tag = "messages",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body(content = SendFileForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Sent", body = Sent),
        (status = 400, description = "Not a multipart form, or a missing or invalid phone, file or caption (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 413, description = "The file is over the upload limit", body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn send_file(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
    mut form: Multipart,
) -> ApiResult<AppJson<Sent>> {
    let instance = usable_instance(&state, &caller, &id, true).await?;
    let max = state.config.max_upload_bytes;
    let mut phone = None;
    let mut caption = None;
    let mut file: Option<(Vec<u8>, Option<String>, Option<String>)> = None;
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        match field.name().unwrap_or_default() {
            "phone" => phone = Some(field.text().await.map_err(multipart_error)?),
            "caption" => caption = Some(field.text().await.map_err(multipart_error)?),
            "file" => {
                let name = field.file_name().map(str::to_owned);
                let declared = field.content_type().map(str::to_owned);
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    if bytes.len() + chunk.len() > max {
                        return Err(ApiError::payload_too_large(format!(
                            "file is larger than the limit of {max} bytes"
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                file = Some((bytes, name, declared));
            }
            _ => {}
        }
    }
    let phone = phone.ok_or_else(|| ApiError::validation("phone is required"))?;
    let to = target_jid("phone", &phone)?;
    let caption = check_caption(caption)?;
    let (bytes, name, declared) = file.ok_or_else(|| ApiError::validation("file is required"))?;
    let file_name = name.and_then(|n| media::safe_file_name(&n));
    let mime_type = media::detect_mime(declared.as_deref(), &bytes, file_name.as_deref());
    let handle = state.instances.get(&instance.id)?;
    let sent = send_file_message(
        &state,
        &handle,
        &instance.id,
        to,
        MediaFile {
            bytes,
            mime_type,
            file_name: file_name.clone(),
        },
        file_name,
        caption,
    )
    .await?;
    Ok(AppJson(Sent {
        id: sent.message_id,
    }))
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::payload_too_large("upload is larger than the allowed limit")
    } else {
        ApiError::bad_request(format!("invalid multipart body: {}", e.body_text()))
    }
}

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
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct HistoryParams {
    /// Page size, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// How many messages to skip.
    skip: Option<u64>,
    /// Only messages at or after this ISO 8601 date or date-time.
    #[param(example = "2024-01-31")]
    start_date: Option<String>,
    /// Only messages at or before this ISO 8601 date or date-time.
    #[param(example = "2024-01-31T12:00:00Z")]
    end_date: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct History {
    /// Newest first.
    messages: Vec<MessageView>,
    pagination: Pagination,
}

/// `chatId` of a path: a phone number or a JID.
fn chat_jid(chat_id: &str) -> ApiResult<String> {
    target_jid("chatId", chat_id)
}

/// The messages of one chat, newest first.
#[utoipa::path(
    get,
    path = "/api/instances/{instanceId}/chats/{chatId}/messages",
    tag = "messages",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("chatId" = String, Path, description = "A phone number or WhatsApp address"),
        HistoryParams,
    ),
    responses(
        (status = 200, description = "A page of messages", body = History),
        (status = 400, description = "Invalid chat id or parameters", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn history(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath((id, chat_id)): AppPath<(String, String)>,
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
    let jid = chat_jid(&chat_id).map_err(|e| ApiError::bad_request(e.message))?;
    let instance = usable_instance(&state, &caller, &id, false).await?;
    let page = state
        .storage
        .chat_history(
            &instance.id,
            &jid,
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
struct ChatParams {
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
    /// The chat's WhatsApp address (as `remoteJid`).
    chat_id: String,
    remote_jid: String,
    is_group: bool,
    /// Inbound messages not yet marked read.
    unread_count: u64,
    message_count: u64,
    last_message: MessageView,
}

#[derive(Debug, Serialize, ToSchema)]
struct ChatList {
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
async fn chats(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
    AppQuery(p): AppQuery<ChatParams>,
) -> ApiResult<AppJson<ChatList>> {
    let limit = page_limit(p.limit, 50)?;
    let skip = p.skip.unwrap_or(0);
    let instance = usable_instance(&state, &caller, &id, false).await?;
    let page = state.storage.list_chats(&instance.id, limit, skip).await?;
    let chats = page
        .items
        .into_iter()
        .map(|c| ChatView {
            chat_id: c.remote_jid.clone(),
            is_group: is_group_jid(&c.remote_jid),
            remote_jid: c.remote_jid,
            unread_count: c.unread_count,
            message_count: c.message_count,
            last_message: MessageView::from(c.last_message),
        })
        .collect();
    Ok(AppJson(ChatList {
        chats,
        pagination: Pagination::new(page.total, limit, skip),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
struct Marked {
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
async fn mark_read(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath((id, chat_id)): AppPath<(String, String)>,
) -> ApiResult<AppJson<Marked>> {
    let jid = chat_jid(&chat_id).map_err(|e| ApiError::bad_request(e.message))?;
    let instance = usable_instance(&state, &caller, &id, false).await?;
    let marked = state.instances.get(&instance.id)?.mark_read(&jid).await?;
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
        (status = 200, description = "The file, with its own Content-Type", content_type = "application/octet-stream", body = Binary),
        (status = 404, description = "No such instance or message, or no stored media", body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn download_media(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath((id, message_id)): AppPath<(String, String)>,
) -> ApiResult<Response> {
    let instance = usable_instance(&state, &caller, &id, false).await?;
    let message = state
        .storage
        .message_by_id(&instance.id, &message_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("message {message_id} not found")))?;
    let path = message
        .media_path
        .as_deref()
        .and_then(|p| state.media.path_of(p))
        .ok_or_else(|| ApiError::not_found("this message has no media"))?;
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
fn content_disposition(name: &str) -> String {
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
