//! Controls of the sandbox engine: "scan" the QR as a phone, inject faults. Only for
//! instances whose engine is `sandbox`, with the owner's auth.

use axum::extract::State;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::domain::normalize_phone;
use wagate_actors::domain::{EngineKind, Instance};
use wagate_actors::domain::{MessageStatus, Presence};
use wagate_actors::engine::{
    FaultKind, InboundCall, InboundMedia, InboundMessage, InboundPresence, InboundVote,
    SandboxControl, VoteChoice, new_message_id,
};

use crate::gateway::messaging::MAX_TEXT;
use crate::http::access::VisibleInstance;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, chat_address, person_address};
use crate::http::state::AppState;
use crate::media::{self, MediaFile};

mod phone;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(scan))
        .routes(routes!(fault))
        .routes(routes!(inbound))
        .routes(routes!(receipt))
        .routes(routes!(poll_vote))
        .routes(routes!(presence))
        .routes(routes!(call))
        .routes(routes!(phone::phone_change))
}

/// The instance, checked to be on the sandbox engine.
pub(super) fn sandbox_only(instance: Instance) -> ApiResult<Instance> {
    if instance.engine != EngineKind::Sandbox {
        return Err(ApiError::conflict(
            "not_sandbox",
            format!(
                "instance {} runs on the {} engine; sandbox controls need the sandbox engine",
                instance.id,
                instance.engine.as_str()
            ),
        ));
    }
    Ok(instance)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ScanRequest {
    /// The phone that "scans": any common notation of an international number.
    #[schema(schema_with = crate::http::openapi::phone_schema)]
    phone: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct Scanned {
    success: bool,
    /// The normalised phone number the instance is now connected as.
    #[schema(example = "79001234567")]
    phone: String,
}

/// Error answers of every sandbox control.
pub(super) const NOT_SANDBOX: &str = "The instance runs on another engine (`not_sandbox`)";

/// "Scans" the instance's QR code as the phone `phone`: the instance connects.
#[utoipa::path(
    post,
    path = "/api/sandbox/instances/{instanceId}/scan",
    tag = "sandbox",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = ScanRequest,
    responses(
        (status = 200, description = "Scanned", body = Scanned),
        (status = 404, description = "No such instance visible to the caller", body = ErrorBody),
        (status = 409, description = NOT_SANDBOX, body = ErrorBody),
        (status = 400, description = "A missing phone, or not a phone number (`validation_error`)", body = ErrorBody),
    )
)]
async fn scan(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    AppJson(body): AppJson<ScanRequest>,
) -> ApiResult<AppJson<Scanned>> {
    let phone = normalize_phone(&body.phone).map_err(ApiError::validation)?;
    let instance = sandbox_only(instance)?;
    state
        .instances
        .get(&instance.id)?
        .sandbox(SandboxControl::Scan {
            phone: phone.clone(),
        })
        .await?;
    Ok(AppJson(Scanned {
        success: true,
        phone,
    }))
}

/// `disconnect` drops the connection (it comes back), `crash` kills the session (the
/// supervisor restarts it with backoff), `logout` unlinks the device.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum FaultName {
    Disconnect,
    Crash,
    Logout,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    kind: FaultName,
}

#[derive(Debug, Serialize, ToSchema)]
struct Injected {
    success: bool,
    /// The fault injected.
    kind: &'static str,
}

/// Injects a fault into the instance's simulated connection.
#[utoipa::path(
    post,
    path = "/api/sandbox/instances/{instanceId}/fault",
    tag = "sandbox",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = FaultRequest,
    responses(
        (status = 200, description = "Injected", body = Injected),
        (status = 404, description = "No such instance visible to the caller", body = ErrorBody),
        (status = 409, description = NOT_SANDBOX, body = ErrorBody),
    )
)]
async fn fault(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    AppJson(body): AppJson<FaultRequest>,
) -> ApiResult<AppJson<Injected>> {
    let instance = sandbox_only(instance)?;
    let (kind, name) = match body.kind {
        FaultName::Disconnect => (FaultKind::Disconnect, "disconnect"),
        FaultName::Crash => (FaultKind::Crash, "crash"),
        FaultName::Logout => (FaultKind::Logout, "logout"),
    };
    state
        .instances
        .get(&instance.id)?
        .sandbox(SandboxControl::Fault(kind))
        .await?;
    Ok(AppJson(Injected {
        success: true,
        kind: name,
    }))
}

/// Exactly one of `url` and `base64`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MediaInput {
    url: Option<String>,
    base64: Option<String>,
    mime_type: Option<String>,
    file_name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InboundRequest {
    /// The sender: a phone number or a WhatsApp address.
    #[schema(schema_with = crate::http::openapi::chat_address_schema)]
    from: String,
    /// The text, at most 65,536 characters (may be blank only with media).
    #[serde(default)]
    #[schema(max_length = 65536)]
    body: String,
    push_name: Option<String>,
    media: Option<MediaInput>,
    /// The id of a message of this chat the contact replies to (shown as
    /// `quotedMessageId`; not checked, as WhatsApp does not).
    reply_to: Option<String>,
}

/// Loads the media of a simulated inbound message from its URL or base64 content.
async fn load_media(state: &AppState, m: MediaInput) -> ApiResult<MediaFile> {
    let max = state.config.max_upload_bytes;
    let file_name = m.file_name.as_deref().and_then(media::safe_file_name);
    let (bytes, declared) = match (m.url, m.base64) {
        (Some(url), None) => {
            let f = media::fetch(
                &state.media_client,
                &url,
                state.config.allow_private_network_urls,
                max as u64,
            )
            .await
            .map_err(|e| ApiError::validation(format!("media.url: {e}")))?;
            (f.bytes, m.mime_type.or(Some(f.mime_type)))
        }
        (None, Some(b64)) => {
            if b64.len() / 4 * 3 > max {
                return Err(ApiError::payload_too_large(format!(
                    "media is larger than the limit of {max} bytes"
                )));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| ApiError::validation("media.base64 is not valid base64"))?;
            (bytes, m.mime_type)
        }
        _ => {
            return Err(ApiError::validation(
                "media needs exactly one of url or base64",
            ));
        }
    };
    if bytes.is_empty() {
        return Err(ApiError::validation("media is empty"));
    }
    let mime_type = media::detect_mime(declared.as_deref(), &bytes, file_name.as_deref());
    Ok(MediaFile {
        bytes,
        mime_type,
        file_name,
    })
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = InboundDelivered)]
struct Delivered {
    success: bool,
    /// The WhatsApp id of the simulated message.
    message_id: String,
}

/// Delivers a simulated message from `from` to the instance, as if sent from a phone.
/// Answered once the message is stored (it survives a crash from then on).
#[utoipa::path(
    post,
    path = "/api/sandbox/instances/{instanceId}/inbound",
    tag = "sandbox",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = InboundRequest,
    responses(
        (status = 200, description = "Stored in the instance's history, with its contact and `message_received` event", body = Delivered),
        (status = 404, description = "No such instance visible to the caller", body = ErrorBody),
        (status = 409, description = NOT_SANDBOX, body = ErrorBody),
        (status = 413, description = "The media is over the upload limit", body = ErrorBody),
        (status = 400, description = "A missing or invalid sender, text or media (`validation_error`)", body = ErrorBody),
        (status = 403, description = "The instance blocks the sender: WhatsApp would not deliver it (`forbidden`)", body = ErrorBody),
    )
)]
async fn inbound(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    AppJson(body): AppJson<InboundRequest>,
) -> ApiResult<AppJson<Delivered>> {
    let from = chat_address("from", &body.from)?.into_string();
    if body.body.chars().count() > MAX_TEXT {
        return Err(ApiError::validation(format!(
            "body must be at most {MAX_TEXT} characters"
        )));
    }
    if body.body.trim().is_empty() && body.media.is_none() {
        return Err(ApiError::validation("body must not be empty without media"));
    }
    let instance = sandbox_only(instance)?;
    let media = match body.media {
        Some(m) => Some(load_media(&state, m).await?),
        None => None,
    };
    let message_id = new_message_id();
    let text = Some(body.body).filter(|b| !b.trim().is_empty());
    let push_name = body
        .push_name
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty());
    state
        .instances
        .get(&instance.id)?
        .sandbox(SandboxControl::Inbound(Box::new(InboundMessage {
            message_id: message_id.clone(),
            chat: from.clone(),
            sender: from,
            push_name,
            text,
            media: media.map(|m| InboundMedia {
                bytes: m.bytes.into(),
                mime_type: m.mime_type,
                file_name: m.file_name,
            }),
            timestamp: chrono::Utc::now(),
            quoted_id: body.reply_to.filter(|r| !r.trim().is_empty()),
            mentions: Vec::new(),
            typed: Default::default(),
            message_secret: None,
        })))
        .await?;
    Ok(AppJson(Delivered {
        success: true,
        message_id,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum ReceiptStatus {
    Delivered,
    Read,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReceiptRequest {
    /// The id of a message the instance sent (`id` of the send answer).
    message_id: String,
    status: ReceiptStatus,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Receipted {
    success: bool,
}

/// Makes the recipient's phone acknowledge a message the instance sent.
#[utoipa::path(
    post,
    path = "/api/sandbox/instances/{instanceId}/receipt",
    tag = "sandbox",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = ReceiptRequest,
    responses(
        (status = 200, description = "Acknowledged", body = Receipted),
        (status = 404, description = "No such instance, or no such sent message", body = ErrorBody),
        (status = 409, description = NOT_SANDBOX, body = ErrorBody),
    )
)]
async fn receipt(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    AppJson(body): AppJson<ReceiptRequest>,
) -> ApiResult<AppJson<Receipted>> {
    let instance = sandbox_only(instance)?;
    let status = match body.status {
        ReceiptStatus::Delivered => MessageStatus::Delivered,
        ReceiptStatus::Read => MessageStatus::Read,
    };
    let message = state
        .storage
        .message_by_id(&instance.id, &body.message_id)
        .await?
        .filter(|m| m.from_me)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no sent message {} on this instance",
                body.message_id
            ))
        })?;
    state
        .instances
        .get(&instance.id)?
        .sandbox(SandboxControl::Receipt {
            message_id: message.message_id,
            chat: message.remote_jid,
            status,
        })
        .await?;
    Ok(AppJson(Receipted { success: true }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VoteRequest {
    /// The simulated contact who votes: a phone number or a person's WhatsApp address.
    #[schema(schema_with = crate::http::openapi::chat_address_schema)]
    from: String,
    /// The id of a poll the instance sent (`id` of the send-poll answer).
    poll_id: String,
    /// The options chosen, by name; empty takes the vote back.
    #[serde(default)]
    options: Vec<String>,
}

/// Makes a simulated contact vote in a poll the instance sent (`poll_vote` follows).
#[utoipa::path(
    post,
    path = "/api/sandbox/instances/{instanceId}/poll-vote",
    tag = "sandbox",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = VoteRequest,
    responses(
        (status = 200, description = "Voted", body = Receipted),
        (status = 400, description = "An invalid phone, an option the poll does not have, or several for a single-answer poll", body = ErrorBody),
        (status = 404, description = "No such instance, or no such sent poll", body = ErrorBody),
        (status = 409, description = NOT_SANDBOX, body = ErrorBody),
    )
)]
async fn poll_vote(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    AppJson(body): AppJson<VoteRequest>,
) -> ApiResult<AppJson<Receipted>> {
    let instance = sandbox_only(instance)?;
    let voter = chat_address("from", &body.from)?;
    let message = state
        .storage
        .message_by_id(&instance.id, &body.poll_id)
        .await?
        .filter(|m| m.from_me && m.typed.poll.is_some())
        .ok_or_else(|| {
            ApiError::not_found(format!("no sent poll {} on this instance", body.poll_id))
        })?;
    let Some(poll) = &message.typed.poll else {
        return Err(ApiError::not_found("no such poll"));
    };
    if let Some(unknown) = body.options.iter().find(|o| !poll.options.contains(o)) {
        return Err(ApiError::validation(format!(
            "the poll has no option {unknown:?}"
        )));
    }
    if !poll.multiple_answers && body.options.len() > 1 {
        return Err(ApiError::validation("the poll takes one answer"));
    }
    state
        .instances
        .get(&instance.id)?
        .sandbox(SandboxControl::Vote(InboundVote {
            chat: message.remote_jid,
            voter: voter.as_str().to_owned(),
            from_me: false,
            poll_id: message.message_id,
            choice: VoteChoice::Names(body.options),
            timestamp: chrono::Utc::now(),
        }))
        .await?;
    Ok(AppJson(Receipted { success: true }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PresenceRequest {
    /// The simulated contact: a phone number or a person's WhatsApp address.
    #[schema(schema_with = crate::http::openapi::person_address_schema)]
    from: String,
    /// Online (`available`), offline (`unavailable`), or typing (`composing`),
    /// recording (`recording`) or neither (`paused`) in the chat with the instance.
    presence: Presence,
}

/// Makes a simulated contact come online, go offline or type (`presence_update`
/// follows when the instance has `notifyPresence`).
#[utoipa::path(
    post,
    path = "/api/sandbox/instances/{instanceId}/presence",
    tag = "sandbox",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = PresenceRequest,
    responses(
        (status = 200, description = "Done", body = Receipted),
        (status = 400, description = "An invalid phone or presence", body = ErrorBody),
        (status = 404, description = "No such instance", body = ErrorBody),
        (status = 409, description = NOT_SANDBOX, body = ErrorBody),
    )
)]
async fn presence(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    AppJson(body): AppJson<PresenceRequest>,
) -> ApiResult<AppJson<Receipted>> {
    let instance = sandbox_only(instance)?;
    let contact = person_address("from", &body.from)?;
    let now = chrono::Utc::now();
    state
        .instances
        .get(&instance.id)?
        .sandbox(SandboxControl::Presence(InboundPresence {
            chat: contact.as_str().to_owned(),
            sender: contact.as_str().to_owned(),
            presence: body.presence,
            last_seen: (body.presence == Presence::Unavailable).then_some(now),
        }))
        .await?;
    Ok(AppJson(Receipted { success: true }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CallRequest {
    /// The simulated caller: a phone number or a person's WhatsApp address.
    #[schema(schema_with = crate::http::openapi::person_address_schema)]
    from: String,
    /// A video call (default: voice).
    #[serde(default)]
    video: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct CallPlaced {
    /// The call's id, as `call_received` carries it.
    call_id: String,
}

/// A simulated contact calls the instance: `call_received` follows, and with the
/// instance's `rejectCalls` the call is rejected (and `rejectCallsMessage` sent).
#[utoipa::path(
    post,
    path = "/api/sandbox/instances/{instanceId}/call",
    tag = "sandbox",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = CallRequest,
    responses(
        (status = 200, description = "The call is ringing", body = CallPlaced),
        (status = 400, description = "An invalid phone", body = ErrorBody),
        (status = 403, description = "The instance blocks the caller (`forbidden`)", body = ErrorBody),
        (status = 404, description = "No such instance", body = ErrorBody),
        (status = 409, description = NOT_SANDBOX, body = ErrorBody),
    )
)]
async fn call(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    AppJson(body): AppJson<CallRequest>,
) -> ApiResult<AppJson<CallPlaced>> {
    let instance = sandbox_only(instance)?;
    let caller = person_address("from", &body.from)?;
    let call_id = new_message_id();
    let caller = caller.as_str().to_owned();
    state
        .instances
        .get(&instance.id)?
        .sandbox(SandboxControl::Call(InboundCall {
            call_id: call_id.clone(),
            from: caller.clone(),
            peer: caller.clone(),
            creator: caller,
            video: body.video,
            group: false,
            timestamp: chrono::Utc::now(),
        }))
        .await?;
    Ok(AppJson(CallPlaced { call_id }))
}
