//! The operators' sends and the delivery status of a desk message.

use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::header;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::domain::MessageStatus;
use wagate_actors::domain::waba::WabaContent;

use super::chats::{ErrorView, error_view};
use super::{DeskCaller, NO_CHAT, numeric, receipts};
use crate::gateway::waba::Attachment;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppMultipart, AppPath, multipart_error};
use crate::http::iso;
use crate::http::state::AppState;
use crate::media;

/// WhatsApp's limit on the text of one message.
const MAX_TEXT_CHARS: usize = 4096;

/// `max_upload` bounds the files of multipart sends.
pub fn router(max_upload: usize) -> OpenApiRouter<AppState> {
    let (schemas, paths, send) = routes!(send);
    // Multipart overhead on top of the file itself.
    let send = send.layer(DefaultBodyLimit::max(max_upload.saturating_add(64 * 1024)));
    OpenApiRouter::new()
        .routes((schemas, paths, send))
        .routes(routes!(message_status))
}

/// A send with a file (`multipart/form-data`).
#[derive(Debug, ToSchema)]
#[schema(as = WabaSendFile)]
#[allow(dead_code)] // Documents the form; the handler reads it part by part.
struct SendFileForm {
    /// The chat to send to.
    #[schema(rename = "chatId")]
    chat_id: i64,
    /// The file, not empty: JPEG or PNG images (5 MB), WebP stickers (500 KB), MP4 or 3GPP video,
    /// AAC, AMR, MP3, MP4 or OGG audio (16 MB), PDF, text and Office documents (100 MB),
    /// within `MAX_UPLOAD_BYTES`. Its kind follows from its type.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream", min_length = 1)]
    file: Vec<u8>,
    /// The caption (images, video, documents); `caption` is taken too.
    #[schema(max_length = 4096)]
    message: Option<String>,
}

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
    /// The http(s) URL of an image or document (required for those); a public host,
    /// unless `ALLOW_PRIVATE_NETWORK_URLS`.
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
///
/// A JSON body sends text, a file by URL or a template; a `multipart/form-data` body
/// (`chatId`, `file`, optional `message`) uploads the file to Meta and sends it by its
/// media id (the desk keeps a copy, at the message's `mediaUrl`).
#[utoipa::path(
    post,
    path = "/api/waba/operator/send",
    tag = "waba",
    request_body(content(
        (SendBody = "application/json"),
        (SendFileForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Sent", body = WabaSent),
        (status = 400, description = "Missing or invalid fields, a `mediaUrl` to a private network (unless `ALLOW_PRIVATE_NETWORK_URLS`), or a file of a type Meta does not send (`unsupported_media_type`)", body = ErrorBody),
        (status = 404, description = NO_CHAT, body = ErrorBody),
        (status = 413, description = "A file over `MAX_UPLOAD_BYTES` or Meta's limit for its kind (`payload_too_large`)", body = ErrorBody),
        (status = 422, description = "Outside the 24-hour window: only a template may be sent (`outside_24h_window`)", body = ErrorBody),
        (status = 429, description = "Meta's rate limit (`waba_rate_limited`)", body = ErrorBody),
        (status = 500, description = "The chat's account has no WABA settings (`waba_not_configured`)", body = ErrorBody),
        (status = 502, description = "Meta refused or failed (`waba_error`, `waba_token_invalid`, `waba_unavailable`)", body = ErrorBody),
    )
)]
async fn send(
    State(state): State<AppState>,
    desk: DeskCaller,
    request: Request,
) -> ApiResult<AppJson<WabaSent>> {
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    let sent = if multipart {
        let AppMultipart(form) = AppMultipart::from_request(request, &state).await?;
        send_file(&state, &desk, form).await?
    } else {
        // The route's body limit is the upload one; JSON keeps the usual limit.
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > state.config.max_body_bytes) {
            return Err(ApiError::payload_too_large(format!(
                "a JSON body may have at most {} bytes",
                state.config.max_body_bytes
            )));
        }
        let AppJson(raw) = AppJson::<Value>::from_request(request, &state).await?;
        let body: SendBody = serde_json::from_value(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
        let Some(chat_id) = body.chat_id else {
            return Err(ApiError::bad_request("chatId is required"));
        };
        let (content, text) = content_of(&body)?;
        state
            .waba
            .send(
                &desk.scope,
                chat_id,
                content,
                text,
                desk.caller.0.id.clone(),
            )
            .await?
    };
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

/// The multipart send: reads `chatId`, `message` (or `caption`) and `file`, then
/// uploads and sends it.
async fn send_file(
    state: &AppState,
    desk: &DeskCaller,
    mut form: axum::extract::Multipart,
) -> ApiResult<wagate_actors::domain::waba::WabaMessage> {
    let max = state.config.max_upload_bytes;
    let mut chat_id = None;
    let mut caption = None;
    let mut file: Option<(Vec<u8>, Option<String>, Option<String>)> = None;
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        match field.name().unwrap_or_default() {
            "chatId" => chat_id = Some(field.text().await.map_err(multipart_error)?),
            "message" | "caption" => {
                let text = field.text().await.map_err(multipart_error)?;
                caption = non_empty(&Some(text)).or(caption);
            }
            "file" => {
                let name = field.file_name().map(str::to_owned);
                let declared = field.content_type().map(str::to_owned);
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    if bytes.len() + chunk.len() > max {
                        return Err(ApiError::payload_too_large(format!(
                            "file is larger than the limit of {max} bytes (MAX_UPLOAD_BYTES)"
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                file = Some((bytes, name, declared));
            }
            _ => {}
        }
    }
    let chat_id = chat_id
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("chatId is required"))
        .and_then(|raw| numeric("chatId", raw))?;
    if let Some(c) = &caption
        && c.chars().count() > MAX_TEXT_CHARS
    {
        return Err(ApiError::bad_request(format!(
            "message is longer than {MAX_TEXT_CHARS} characters"
        )));
    }
    let (bytes, name, declared) = file.ok_or_else(|| ApiError::bad_request("file is required"))?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("file is empty"));
    }
    let file_name = name.and_then(|n| media::safe_file_name(&n));
    let mime_type = media::detect_mime(declared.as_deref(), &bytes, file_name.as_deref());
    let attachment = Attachment {
        bytes,
        mime_type,
        file_name,
    };
    Ok(state
        .waba
        .send_upload(
            &desk.scope,
            chat_id,
            attachment,
            caption,
            desk.caller.0.id.clone(),
        )
        .await?)
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
    /// Why it was not delivered (`status` `failed`): Meta's error code and title, from
    /// the failed send or from Meta's status webhook.
    error: Option<ErrorView>,
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
    desk: DeskCaller,
    AppPath(raw): AppPath<String>,
) -> ApiResult<AppJson<WabaMessageStatus>> {
    let id = numeric("messageId", &raw)?;
    let m = state.waba.message(&desk.scope, id).await?;
    let (delivered, read) = receipts(&m);
    Ok(AppJson(WabaMessageStatus {
        id: m.id,
        status: m.status,
        timestamp: iso(m.timestamp),
        status_updated_at: m.status_updated_at.map(iso),
        delivered,
        read,
        error: error_view(&m),
        whatsapp_message_id: m.whatsapp_message_id,
    }))
}
