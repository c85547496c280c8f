//! Presence and typing: the account online or offline, "typing…" in a chat, and
//! following a contact's presence (`presence_update` events, with `notifyPresence`).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wagate_actors::domain::Presence;
use wagate_actors::instance::PresenceAction;

use crate::http::access::UsableInstance;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppPath, chat_address};
use crate::http::openapi::{NO_INSTANCE, NOT_CONNECTED, OVER_LIMIT};
use crate::http::state::AppState;

/// Online or offline.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum OwnPresence {
    Available,
    Unavailable,
}

/// What the account is doing in a chat.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum ChatState {
    /// "typing…"
    Composing,
    /// "recording audio…"
    Recording,
    /// Neither any more.
    Paused,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetPresence {
    presence: OwnPresence,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetChatState {
    state: ChatState,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PresenceSent {
    success: bool,
}

/// Shows the account online (`available`) or offline (`unavailable`) to the contacts
/// following its presence. Not a message: it does not count as one.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/presence",
    tag = "presence",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = SetPresence,
    responses(
        (status = 200, description = "Sent", body = PresenceSent),
        (status = 400, description = "Not `available` or `unavailable` (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
pub(super) async fn set_presence(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppJson(body): AppJson<SetPresence>,
) -> ApiResult<AppJson<PresenceSent>> {
    let presence = match body.presence {
        OwnPresence::Available => Presence::Available,
        OwnPresence::Unavailable => Presence::Unavailable,
    };
    state
        .instances
        .get(&instance.id)?
        .presence(PresenceAction::Announce(presence))
        .await?;
    Ok(AppJson(PresenceSent { success: true }))
}

/// Shows the chat that the account is typing (`composing`), recording a voice message
/// (`recording`), or neither any more (`paused`). WhatsApp clears it by itself after a
/// while, or when a message follows.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/chats/{chatId}/typing",
    tag = "presence",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("chatId" = String, Path, description = "A phone number or WhatsApp address (a group's too)"),
    ),
    request_body = SetChatState,
    responses(
        (status = 200, description = "Sent", body = PresenceSent),
        (status = 400, description = "An invalid chat, or a state other than `composing`, `recording`, `paused` (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
pub(super) async fn typing(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppPath((_, chat_id)): AppPath<(String, String)>,
    AppJson(body): AppJson<SetChatState>,
) -> ApiResult<AppJson<PresenceSent>> {
    let chat = chat_address("chatId", &chat_id)?;
    let chat_state = match body.state {
        ChatState::Composing => Presence::Composing,
        ChatState::Recording => Presence::Recording,
        ChatState::Paused => Presence::Paused,
    };
    state
        .instances
        .get(&instance.id)?
        .presence(PresenceAction::ChatState {
            chat: chat.into_string(),
            state: chat_state,
        })
        .await?;
    Ok(AppJson(PresenceSent { success: true }))
}

/// Follows a contact's presence: WhatsApp answers with where they are now, then tells
/// each change, as `presence_update` events (with `notifyPresence`). A subscription
/// lasts while the session is connected.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/presence/subscribe/{phone}",
    tag = "presence",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("phone" = String, Path, description = "The contact's phone number or WhatsApp address"),
    ),
    responses(
        (status = 200, description = "Subscribed", body = PresenceSent),
        (status = 400, description = "Not a person's number or address (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
pub(super) async fn subscribe(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppPath((_, phone)): AppPath<(String, String)>,
) -> ApiResult<AppJson<PresenceSent>> {
    let contact = chat_address("phone", &phone)?;
    if contact.is_group() {
        return Err(ApiError::validation(
            "phone: a group has no presence; follow its members",
        ));
    }
    state
        .instances
        .get(&instance.id)?
        .presence(PresenceAction::Subscribe(contact.into_string()))
        .await?;
    Ok(AppJson(PresenceSent { success: true }))
}
