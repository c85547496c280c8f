//! Changing a sent message: editing its text, deleting it for everyone or from this
//! account's history.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::history::MessageView;
use crate::http::access::SendingInstance;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppPath, AppQuery};
use crate::http::openapi::{NOT_CONNECTED, OVER_LIMIT};
use crate::http::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EditText {
    /// The new text: not blank, at most 65,536 characters.
    #[schema(
        example = "Hello again!",
        pattern = r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]",
        max_length = 65536
    )]
    message: String,
}

/// Replaces the text of one of the account's own text messages (`message_edited`
/// follows). WhatsApp allows it for 15 minutes after the message was sent. Counts as a
/// sent message.
#[utoipa::path(
    put,
    path = "/api/whatsapp/{instanceId}/messages/{messageId}",
    tag = "messages",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("messageId" = String, Path, description = "The WhatsApp id of the message"),
    ),
    request_body = EditText,
    responses(
        (status = 200, description = "Edited: the message as stored now", body = MessageView),
        (status = 400, description = "Blank or too long text (`validation_error`)", body = ErrorBody),
        (status = 404, description = "No such instance, or no such message of it", body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 422, description = "WhatsApp does not allow it: someone else's message (`not_own_message`), not a text (`not_text`), deleted (`message_deleted`), or sent more than 15 minutes ago (`edit_window_passed`)", body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
pub(super) async fn edit(
    State(state): State<AppState>,
    SendingInstance { instance, .. }: SendingInstance,
    AppPath((_, message_id)): AppPath<(String, String)>,
    AppJson(body): AppJson<EditText>,
) -> ApiResult<AppJson<MessageView>> {
    let message = state
        .messenger
        .edit(&instance.id, &message_id, body.message)
        .await?;
    Ok(AppJson(message.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DeleteParams {
    /// `true` (the default): delete one of the account's own messages for everyone in
    /// the chat. `false`: only remove the message (either direction) from this
    /// account's history; WhatsApp is not told.
    #[serde(default)]
    for_everyone: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct MessageDeleted {
    success: bool,
}

/// Deletes a message (`message_revoked` follows). For everyone, the history keeps the
/// message marked `revoked`, with its text, caption and media gone; for this account
/// only, it leaves the history. Deleting for everyone counts as a sent message.
#[utoipa::path(
    delete,
    path = "/api/whatsapp/{instanceId}/messages/{messageId}",
    tag = "messages",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("messageId" = String, Path, description = "The WhatsApp id of the message"),
        DeleteParams,
    ),
    responses(
        (status = 200, description = "Deleted", body = MessageDeleted),
        (status = 400, description = "`forEveryone` is not true or false", body = ErrorBody),
        (status = 404, description = "No such instance, or no such message of it", body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 422, description = "Someone else's message cannot be deleted for everyone (`not_own_message`)", body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    SendingInstance { instance, .. }: SendingInstance,
    AppPath((_, message_id)): AppPath<(String, String)>,
    AppQuery(params): AppQuery<DeleteParams>,
) -> ApiResult<AppJson<MessageDeleted>> {
    state
        .messenger
        .delete(
            &instance.id,
            &message_id,
            params.for_everyone.unwrap_or(true),
        )
        .await?;
    Ok(AppJson(MessageDeleted { success: true }))
}
