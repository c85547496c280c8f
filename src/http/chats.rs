//! Keeping chats: archiving, pinning, muting and labelling them, and the account's
//! WhatsApp Business labels. WhatsApp syncs all of it to the account's other devices;
//! changes made there come back as `chat_update` and `label_update`.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::domain::chat::MAX_LABEL_COLOR;
use wagate_actors::domain::{ChatChange, ChatSettings, Label, Mute};

use crate::http::access::UsableInstance;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppPath, chat_address};
use crate::http::openapi::{NO_INSTANCE, NOT_CONNECTED, OVER_LIMIT};
use crate::http::state::AppState;

/// The longest mute asked for as a duration: a year (longer is "until unmuted").
const MAX_MUTE_SECONDS: i64 = 365 * 24 * 3600;
/// The longest label name.
const MAX_LABEL_NAME: usize = 100;
/// The longest label id accepted in a path.
const MAX_LABEL_ID: usize = 64;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(change_chat))
        .routes(routes!(mute))
        .routes(routes!(list_labels, create_label))
        .routes(routes!(attach_label, detach_label))
}

/// How the account keeps a chat.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatStateView {
    /// The chat's WhatsApp address (as `remoteJid`).
    chat_id: String,
    archived: bool,
    pinned: bool,
    muted: bool,
    /// When the mute ends; `null` when not muted or muted until unmuted.
    #[schema(format = DateTime)]
    muted_until: Option<String>,
    /// The ids of the labels on the chat.
    labels: Vec<String>,
}

impl ChatStateView {
    /// The state of `chat`, or of a chat with nothing set, at `now` (an ended mute
    /// shows as none).
    pub fn new(jid: &str, chat: Option<&ChatSettings>, now: DateTime<Utc>) -> Self {
        let mute = chat.and_then(|c| c.mute).filter(|m| m.holds_at(now));
        ChatStateView {
            chat_id: jid.to_owned(),
            archived: chat.is_some_and(|c| c.archived),
            pinned: chat.is_some_and(|c| c.pinned),
            muted: mute.is_some(),
            muted_until: match mute {
                Some(Mute::Until(at)) => Some(at.to_rfc3339_opts(SecondsFormat::Millis, true)),
                _ => None,
            },
            labels: chat.map(|c| c.labels.clone()).unwrap_or_default(),
        }
    }
}

/// What to do with the chat.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum ChatAction {
    Archive,
    Unarchive,
    Pin,
    Unpin,
    Unmute,
}

/// Archives, unarchives, pins, unpins or unmutes a chat (archiving also unpins it, as
/// on WhatsApp). The chats list (`GET /api/instances/{id}/chats`) shows the outcome;
/// `chat_update` reports it.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/chats/{chatId}/{action}",
    tag = "chats",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("chatId" = String, Path, description = "A phone number or WhatsApp address (a group's too)"),
        ("action" = inline(ChatAction), Path, description = "`archive`, `unarchive`, `pin`, `unpin` or `unmute` (muting: `…/mute`)"),
    ),
    responses(
        (status = 200, description = "Done: the chat as kept now", body = ChatStateView),
        (status = 400, description = "An invalid chat, or no such action", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn change_chat(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppPath((_, chat_id, action)): AppPath<(String, String, ChatAction)>,
) -> ApiResult<AppJson<ChatStateView>> {
    let change = match action {
        ChatAction::Archive => ChatChange::Archive(true),
        ChatAction::Unarchive => ChatChange::Archive(false),
        ChatAction::Pin => ChatChange::Pin(true),
        ChatAction::Unpin => ChatChange::Pin(false),
        ChatAction::Unmute => ChatChange::Mute(None),
    };
    apply(&state, &instance.id, &chat_id, change).await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MuteChat {
    /// How long, in seconds (1 to 31536000, a year); absent or `null`: until unmuted.
    #[schema(minimum = 1, maximum = 31_536_000, example = 28800)]
    duration: Option<i64>,
}

/// Mutes a chat for `duration` seconds, or until unmuted.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/chats/{chatId}/mute",
    tag = "chats",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("chatId" = String, Path, description = "A phone number or WhatsApp address (a group's too)"),
    ),
    request_body = MuteChat,
    responses(
        (status = 200, description = "Muted: the chat as kept now", body = ChatStateView),
        (status = 400, description = "An invalid chat, or a duration out of bounds (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn mute(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppPath((_, chat_id)): AppPath<(String, String)>,
    AppJson(body): AppJson<MuteChat>,
) -> ApiResult<AppJson<ChatStateView>> {
    let mute = match body.duration {
        None => Mute::Forever,
        Some(secs) if (1..=MAX_MUTE_SECONDS).contains(&secs) => {
            Mute::Until(Utc::now() + Duration::seconds(secs))
        }
        Some(_) => {
            return Err(ApiError::validation(format!(
                "duration: 1 to {MAX_MUTE_SECONDS} seconds, or absent for until unmuted"
            )));
        }
    };
    apply(&state, &instance.id, &chat_id, ChatChange::Mute(Some(mute))).await
}

/// A WhatsApp Business label.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct LabelView {
    /// WhatsApp's id of the label.
    id: String,
    name: String,
    /// WhatsApp's colour index (0 to 19).
    color: i32,
}

impl From<Label> for LabelView {
    fn from(l: Label) -> Self {
        LabelView {
            id: l.label_id,
            name: l.name,
            color: l.color,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct LabelList {
    /// By id.
    labels: Vec<LabelView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateLabel {
    /// 1 to 100 characters, not blank.
    #[schema(
        example = "VIP",
        min_length = 1,
        max_length = 100,
        pattern = r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    name: String,
    /// WhatsApp's colour index, 0 to 19 (default 0).
    #[schema(minimum = 0, maximum = 19)]
    color: Option<i32>,
}

/// The account's labels: those created here and those WhatsApp synced from the
/// account's other devices.
#[utoipa::path(
    get,
    path = "/api/whatsapp/{instanceId}/labels",
    tag = "chats",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "The labels", body = LabelList),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn list_labels(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
) -> ApiResult<AppJson<LabelList>> {
    let labels = state.storage.labels(&instance.id).await?;
    Ok(AppJson(LabelList {
        labels: labels.into_iter().map(LabelView::from).collect(),
    }))
}

/// Creates a label (WhatsApp Business); the instance picks its id. `label_update`
/// reports it.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/labels",
    tag = "chats",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = CreateLabel,
    responses(
        (status = 201, description = "Created", body = LabelView),
        (status = 400, description = "A blank or too long name, or a colour out of bounds (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn create_label(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppJson(body): AppJson<CreateLabel>,
) -> ApiResult<(StatusCode, AppJson<LabelView>)> {
    if body.name.trim().is_empty() || body.name.chars().count() > MAX_LABEL_NAME {
        return Err(ApiError::validation(format!(
            "name: 1 to {MAX_LABEL_NAME} characters, not blank"
        )));
    }
    let color = body.color.unwrap_or(0);
    if !(0..=MAX_LABEL_COLOR).contains(&color) {
        return Err(ApiError::validation(format!(
            "color: 0 to {MAX_LABEL_COLOR}"
        )));
    }
    let label = state
        .instances
        .get(&instance.id)?
        .create_label(body.name, color)
        .await?;
    Ok((StatusCode::CREATED, AppJson(LabelView::from(label))))
}

/// Puts a label on a chat. `chat_update` reports it.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/chats/{chatId}/labels/{labelId}",
    tag = "chats",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("chatId" = String, Path, description = "A phone number or WhatsApp address (a group's too)"),
        ("labelId" = String, Path, description = "The label's id (as `GET …/labels` lists it)"),
    ),
    responses(
        (status = 200, description = "Labelled: the chat as kept now", body = ChatStateView),
        (status = 400, description = "An invalid chat or label id (`validation_error`)", body = ErrorBody),
        (status = 404, description = "No such instance visible to the caller, or no such label", body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn attach_label(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppPath((_, chat_id, label_id)): AppPath<(String, String, String)>,
) -> ApiResult<AppJson<ChatStateView>> {
    label(&state, &instance.id, &chat_id, label_id, true).await
}

/// Takes a label off a chat. `chat_update` reports it.
#[utoipa::path(
    delete,
    path = "/api/whatsapp/{instanceId}/chats/{chatId}/labels/{labelId}",
    tag = "chats",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("chatId" = String, Path, description = "A phone number or WhatsApp address (a group's too)"),
        ("labelId" = String, Path, description = "The label's id"),
    ),
    responses(
        (status = 200, description = "Done: the chat as kept now", body = ChatStateView),
        (status = 400, description = "An invalid chat or label id (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn detach_label(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppPath((_, chat_id, label_id)): AppPath<(String, String, String)>,
) -> ApiResult<AppJson<ChatStateView>> {
    label(&state, &instance.id, &chat_id, label_id, false).await
}

/// Puts label `label_id` on the chat `chat_id` (`attached`) or takes it off.
async fn label(
    state: &AppState,
    instance_id: &str,
    chat_id: &str,
    label_id: String,
    attached: bool,
) -> ApiResult<AppJson<ChatStateView>> {
    if label_id.trim().is_empty() || label_id.chars().count() > MAX_LABEL_ID {
        return Err(ApiError::validation(format!(
            "labelId: 1 to {MAX_LABEL_ID} characters"
        )));
    }
    let change = ChatChange::Label { label_id, attached };
    apply(state, instance_id, chat_id, change).await
}

/// Makes `change` to the chat `chat_id` and answers the chat as kept now.
async fn apply(
    state: &AppState,
    instance_id: &str,
    chat_id: &str,
    change: ChatChange,
) -> ApiResult<AppJson<ChatStateView>> {
    let jid = chat_address("chatId", chat_id)?;
    let chat = state
        .instances
        .get(instance_id)?
        .change_chat(jid.as_str(), change)
        .await?;
    Ok(AppJson(ChatStateView::new(
        &chat.remote_jid,
        Some(&chat),
        Utc::now(),
    )))
}
