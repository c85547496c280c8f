//! Sending: texts, files the server downloads from a URL, uploaded files. The instance
//! is checked to be within its limits, messages included, before anything is sent.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wagate_actors::domain::{Message, MessageStatus};

use crate::gateway::messaging::{Extras, MediaByUrl, check_caption};
use crate::http::access::SendingInstance;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{
    AppJson, AppMultipart, AppPath, chat_address, field_bytes, multipart_error,
};
use crate::http::openapi::{
    NO_INSTANCE_NUMBER_OR_QUOTE, NOT_CONNECTED, NOT_IN_GROUP, OVER_LIMIT, PACED,
};
use crate::http::state::AppState;
use crate::media::{self, MediaFile};

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Sent {
    /// The WhatsApp id of the sent message.
    pub(super) id: String,
    /// `pending` (with 202) when the instance paces its sends (`sendRate`): the
    /// message waits in the instance's queue, and `message_sent` follows when it goes.
    /// Absent when it was sent at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "pending")]
    status: Option<String>,
}

impl Sent {
    /// 200 for a message that went, 202 for one waiting in the send queue.
    pub(super) fn answer(message: Message) -> (StatusCode, AppJson<Sent>) {
        if message.status == MessageStatus::Pending {
            let sent = Sent {
                id: message.message_id,
                status: Some(message.status.as_str().to_owned()),
            };
            (StatusCode::ACCEPTED, AppJson(sent))
        } else {
            let sent = Sent {
                id: message.message_id,
                status: None,
            };
            (StatusCode::OK, AppJson(sent))
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SendText {
    /// A phone number or a WhatsApp address (person or group).
    #[schema(schema_with = crate::http::openapi::chat_address_schema)]
    phone: String,
    /// The text: not blank, at most 65,536 characters.
    #[schema(
        example = "Hello!",
        pattern = r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]",
        max_length = 65536
    )]
    message: String,
    /// The WhatsApp id of a message of this chat to reply to (quote); 404 when the
    /// chat has no such message.
    #[serde(rename = "replyTo")]
    reply_to: Option<String>,
    /// Phone numbers of the people the message mentions (`@` mentions).
    #[serde(default)]
    #[schema(schema_with = crate::http::openapi::phone_list_schema)]
    mentions: Vec<String>,
    /// Milliseconds (at most 20,000) of "typing…" in the chat before the message
    /// goes; the answer comes once it went.
    #[schema(maximum = 20000)]
    delay: Option<u64>,
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
        (status = 202, description = PACED, body = Sent),
        (status = 404, description = NO_INSTANCE_NUMBER_OR_QUOTE, body = ErrorBody),
        (status = 403, description = NOT_IN_GROUP, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 400, description = "A missing or invalid phone or message (`validation_error`)", body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
pub(super) async fn send_text(
    State(state): State<AppState>,
    SendingInstance { instance, .. }: SendingInstance,
    AppJson(body): AppJson<SendText>,
) -> ApiResult<(StatusCode, AppJson<Sent>)> {
    let to = chat_address("phone", &body.phone)?;
    let sent = state
        .messenger
        .send_text(
            &instance.id,
            &to,
            body.message,
            Extras {
                reply_to: body.reply_to,
                mentions: body.mentions,
                delay_ms: body.delay,
                send_rate: instance.webhook.send_rate,
            },
        )
        .await?;
    Ok(Sent::answer(sent))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SendMedia {
    /// A phone number or a WhatsApp address (person or group).
    #[schema(schema_with = crate::http::openapi::chat_address_schema)]
    phone: String,
    /// Where the server downloads the file from (http or https); 502
    /// `media_fetch_failed` when it cannot.
    url: String,
    /// At most 4096 characters.
    #[schema(max_length = 4096)]
    caption: Option<String>,
    /// The file name the recipient sees.
    filename: Option<String>,
    /// The WhatsApp id of a message of this chat to reply to.
    #[serde(rename = "replyTo")]
    reply_to: Option<String>,
    /// Phone numbers of the people the caption mentions.
    #[serde(default)]
    #[schema(schema_with = crate::http::openapi::phone_list_schema)]
    mentions: Vec<String>,
    /// Milliseconds (at most 20,000) of "typing…" in the chat before the message
    /// goes; the answer comes once it went.
    #[schema(maximum = 20000)]
    delay: Option<u64>,
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
        (status = 202, description = PACED, body = Sent),
        (status = 404, description = NO_INSTANCE_NUMBER_OR_QUOTE, body = ErrorBody),
        (status = 403, description = NOT_IN_GROUP, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 413, description = "The file is over the upload limit", body = ErrorBody),
        (status = 400, description = "A missing or invalid phone, URL or caption (`validation_error`)", body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
        (status = 502, description = "The file cannot be downloaded (`media_fetch_failed`)", body = ErrorBody),
    )
)]
pub(super) async fn send_media(
    State(state): State<AppState>,
    SendingInstance { instance, .. }: SendingInstance,
    AppJson(body): AppJson<SendMedia>,
) -> ApiResult<(StatusCode, AppJson<Sent>)> {
    let to = chat_address("phone", &body.phone)?;
    let caption = check_caption(body.caption)?;
    let media = MediaByUrl {
        url: body.url,
        caption,
        file_name: body.filename,
    };
    let sent = state
        .messenger
        .send_from_url(
            &instance.id,
            &to,
            media,
            Extras {
                reply_to: body.reply_to,
                mentions: body.mentions,
                delay_ms: body.delay,
                send_rate: instance.webhook.send_rate,
            },
        )
        .await?;
    Ok(Sent::answer(sent))
}

/// The form of `send-file`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct SendFileForm {
    /// A phone number or a WhatsApp address (person or group).
    #[schema(schema_with = crate::http::openapi::chat_address_schema)]
    phone: String,
    /// At most 4096 characters.
    #[schema(max_length = 4096)]
    caption: Option<String>,
    /// The WhatsApp id of a message of this chat to reply to.
    #[schema(rename = "replyTo")]
    reply_to: Option<String>,
    /// Phone numbers of the people the caption mentions: the field repeated, or
    /// numbers separated by commas.
    #[schema(schema_with = crate::http::openapi::phone_list_schema)]
    mentions: Vec<String>,
    /// Milliseconds (at most 20,000) of "typing…" in the chat before the file goes. A
    /// form field has no null: leave it out for none.
    #[schema(maximum = 20000, nullable = false)]
    delay: Option<u64>,
    /// The file, not empty (its name and type are taken from the part).
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream", min_length = 1)]
    file: Vec<u8>,
}

/// Sends an uploaded file (`multipart/form-data`: `phone`, `file`, optional `caption`,
/// `replyTo`, `mentions` and `delay`).
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/send-file",
    tag = "messages",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body(content = SendFileForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Sent", body = Sent),
        (status = 202, description = PACED, body = Sent),
        (status = 400, description = "Not a multipart form (`invalid_content_type`), or a missing or invalid phone, file or caption (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_INSTANCE_NUMBER_OR_QUOTE, body = ErrorBody),
        (status = 403, description = NOT_IN_GROUP, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 413, description = "The file is over the upload limit", body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
pub(super) async fn send_file(
    State(state): State<AppState>,
    SendingInstance { instance, .. }: SendingInstance,
    AppMultipart(mut form): AppMultipart,
) -> ApiResult<(StatusCode, AppJson<Sent>)> {
    let max = state.config.max_upload_bytes;
    let mut phone = None;
    let mut caption = None;
    let mut extras = Extras {
        send_rate: instance.webhook.send_rate,
        ..Extras::default()
    };
    let mut file: Option<(Vec<u8>, Option<String>, Option<String>)> = None;
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        match field.name().unwrap_or_default() {
            "phone" => phone = Some(field.text().await.map_err(multipart_error)?),
            "caption" => caption = Some(field.text().await.map_err(multipart_error)?),
            "replyTo" => extras.reply_to = Some(field.text().await.map_err(multipart_error)?),
            "delay" => {
                let text = field.text().await.map_err(multipart_error)?;
                let ms = text.trim().parse::<u64>().map_err(|_| {
                    ApiError::validation("delay must be a whole number of milliseconds")
                })?;
                extras.delay_ms = Some(ms);
            }
            "mentions" => extras.mentions.extend(
                field
                    .text()
                    .await
                    .map_err(multipart_error)?
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned),
            ),
            "file" => {
                let name = field.file_name().map(str::to_owned);
                let declared = field.content_type().map(str::to_owned);
                let bytes = field_bytes(&mut field, max, "file").await?;
                file = Some((bytes, name, declared));
            }
            _ => {}
        }
    }
    let phone = phone.ok_or_else(|| ApiError::validation("phone is required"))?;
    let to = chat_address("phone", &phone)?;
    let caption = check_caption(caption)?;
    let (bytes, name, declared) = file.ok_or_else(|| ApiError::validation("file is required"))?;
    let file_name = name.and_then(|n| media::safe_file_name(&n));
    let mime_type = media::detect_mime(declared.as_deref(), &bytes, file_name.as_deref());
    let file = MediaFile {
        bytes,
        mime_type,
        file_name,
    };
    let sent = state
        .messenger
        .send_upload(&instance.id, &to, file, caption, extras)
        .await?;
    Ok(Sent::answer(sent))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct React {
    /// One emoji (at most 16 characters, with its modifiers and joiners, no white
    /// space); empty takes the reaction back.
    #[schema(
        example = "👍",
        pattern = r"^[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$",
        max_length = 16
    )]
    emoji: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Reacted {
    success: bool,
}

/// Reacts to a stored message of either direction (`message_reaction` follows); an
/// empty emoji takes the reaction back. Counts as a sent message.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/messages/{messageId}/reaction",
    tag = "messages",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("messageId" = String, Path, description = "The WhatsApp id of the message"),
    ),
    request_body = React,
    responses(
        (status = 200, description = "Reacted", body = Reacted),
        (status = 400, description = "Not one emoji (`validation_error`)", body = ErrorBody),
        (status = 404, description = "No such instance, or no such message of it", body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
pub(super) async fn react(
    State(state): State<AppState>,
    SendingInstance { instance, .. }: SendingInstance,
    AppPath((_, message_id)): AppPath<(String, String)>,
    AppJson(body): AppJson<React>,
) -> ApiResult<AppJson<Reacted>> {
    state
        .messenger
        .react(&instance.id, &message_id, &body.emoji)
        .await?;
    Ok(AppJson(Reacted { success: true }))
}
