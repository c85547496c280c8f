//! The phone's side of chat actions and labels: what the account's phone changes,
//! WhatsApp syncs to the instance.

use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;
use wagate_actors::domain::chat::MAX_LABEL_COLOR;
use wagate_actors::domain::{ChatChange, ChatOp, LabelSpec, Mute};
use wagate_actors::engine::SandboxControl;

use super::{NOT_SANDBOX, Receipted, sandbox_only};
use crate::http::access::VisibleInstance;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, chat_address};
use crate::http::state::AppState;

/// A change the account's phone makes to a chat or a label.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub(super) enum PhoneChange {
    Archive {
        /// The chat: a phone number or WhatsApp address (a group's too).
        #[schema(schema_with = crate::http::openapi::chat_address_schema)]
        chat: String,
    },
    Unarchive {
        /// The chat: a phone number or WhatsApp address (a group's too).
        #[schema(schema_with = crate::http::openapi::chat_address_schema)]
        chat: String,
    },
    Pin {
        /// The chat: a phone number or WhatsApp address (a group's too).
        #[schema(schema_with = crate::http::openapi::chat_address_schema)]
        chat: String,
    },
    Unpin {
        /// The chat: a phone number or WhatsApp address (a group's too).
        #[schema(schema_with = crate::http::openapi::chat_address_schema)]
        chat: String,
    },
    Mute {
        /// The chat: a phone number or WhatsApp address (a group's too).
        #[schema(schema_with = crate::http::openapi::chat_address_schema)]
        chat: String,
        /// Seconds (1 to 31536000); absent: until unmuted.
        #[schema(minimum = 1, maximum = 31_536_000)]
        duration: Option<i64>,
    },
    Unmute {
        /// The chat: a phone number or WhatsApp address (a group's too).
        #[schema(schema_with = crate::http::openapi::chat_address_schema)]
        chat: String,
    },
    /// Puts label `label` on the chat.
    Label {
        /// The chat: a phone number or WhatsApp address (a group's too).
        #[schema(schema_with = crate::http::openapi::chat_address_schema)]
        chat: String,
        /// The label's id.
        #[schema(min_length = 1, max_length = 64, pattern = r"[^\s]")]
        label: String,
    },
    /// Takes label `label` off the chat.
    Unlabel {
        /// The chat: a phone number or WhatsApp address (a group's too).
        #[schema(schema_with = crate::http::openapi::chat_address_schema)]
        chat: String,
        #[schema(min_length = 1, max_length = 64, pattern = r"[^\s]")]
        label: String,
    },
    /// Creates label `label`, or renames and recolours it.
    EditLabel {
        #[schema(min_length = 1, max_length = 64, pattern = r"[^\s]")]
        label: String,
        #[schema(min_length = 1, max_length = 100, pattern = r"[^\s]")]
        name: String,
        /// WhatsApp's colour index, 0 to 19 (default 0).
        #[schema(minimum = 0, maximum = 19)]
        color: Option<i32>,
    },
    DeleteLabel {
        #[schema(min_length = 1, max_length = 64, pattern = r"[^\s]")]
        label: String,
    },
}

/// The account's phone archives, pins, mutes or labels a chat, or creates, changes or
/// deletes a label: the instance keeps the change and reports it (`chat_update`,
/// `label_update`, with `fromPhone: true`), as WhatsApp syncs it from a real phone.
#[utoipa::path(
    post,
    path = "/api/sandbox/instances/{instanceId}/phone-change",
    tag = "sandbox",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = PhoneChange,
    responses(
        (status = 200, description = "Done", body = Receipted),
        (status = 400, description = "An invalid chat, label, name, colour or duration", body = ErrorBody),
        (status = 404, description = "No such instance", body = ErrorBody),
        (status = 409, description = NOT_SANDBOX, body = ErrorBody),
    )
)]
pub(super) async fn phone_change(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    AppJson(body): AppJson<PhoneChange>,
) -> ApiResult<AppJson<Receipted>> {
    let instance = sandbox_only(instance)?;
    let change = |chat: &str, change| -> ApiResult<ChatOp> {
        Ok(ChatOp::Change {
            chat: chat_address("chat", chat)?.into_string(),
            change,
        })
    };
    let label_id = |label: String| -> ApiResult<String> {
        if label.trim().is_empty() || label.chars().count() > 64 {
            return Err(ApiError::validation("label: 1 to 64 characters"));
        }
        Ok(label)
    };
    let op = match body {
        PhoneChange::Archive { chat } => change(&chat, ChatChange::Archive(true))?,
        PhoneChange::Unarchive { chat } => change(&chat, ChatChange::Archive(false))?,
        PhoneChange::Pin { chat } => change(&chat, ChatChange::Pin(true))?,
        PhoneChange::Unpin { chat } => change(&chat, ChatChange::Pin(false))?,
        PhoneChange::Mute { chat, duration } => {
            let mute = match duration {
                None => Mute::Forever,
                Some(secs) if (1..=31_536_000).contains(&secs) => {
                    Mute::Until(chrono::Utc::now() + chrono::Duration::seconds(secs))
                }
                Some(_) => return Err(ApiError::validation("duration: 1 to 31536000 seconds")),
            };
            change(&chat, ChatChange::Mute(Some(mute)))?
        }
        PhoneChange::Unmute { chat } => change(&chat, ChatChange::Mute(None))?,
        PhoneChange::Label { chat, label } => change(
            &chat,
            ChatChange::Label {
                label_id: label_id(label)?,
                attached: true,
            },
        )?,
        PhoneChange::Unlabel { chat, label } => change(
            &chat,
            ChatChange::Label {
                label_id: label_id(label)?,
                attached: false,
            },
        )?,
        PhoneChange::EditLabel { label, name, color } => {
            let color = color.unwrap_or(0);
            if name.trim().is_empty() || name.chars().count() > 100 {
                return Err(ApiError::validation("name: 1 to 100 characters, not blank"));
            }
            if !(0..=MAX_LABEL_COLOR).contains(&color) {
                return Err(ApiError::validation("color: 0 to 19"));
            }
            ChatOp::EditLabel(LabelSpec {
                label_id: label_id(label)?,
                name,
                color,
            })
        }
        PhoneChange::DeleteLabel { label } => ChatOp::DeleteLabel(label_id(label)?),
    };
    state
        .instances
        .get(&instance.id)?
        .sandbox(SandboxControl::PhoneChange(op))
        .await?;
    Ok(AppJson(Receipted { success: true }))
}
