//! The WABA operator desk API: settings, Meta's webhook, and the operators' chats,
//! messages, sends and live events. The rules are [`crate::gateway::waba`]'s; these
//! handlers parse, authorize and shape the answers.
//!
//! Who sees what: an admin sees every account's chats; a user sees the chats of its own
//! account; an operator those of its owner (`ownerId`). Another account's chat or message
//! answers 404, as if it did not exist. Operators work the desk but cannot manage the
//! settings. Both rules are here, in [`DeskCaller`] and [`settings_owner`].
//!
//! - [`settings`]: `GET`/`PUT /api/waba/settings`;
//! - [`meta_webhook`]: Meta's subscription check and notifications;
//! - [`operator`]: sends and message statuses;
//! - [`chats`]: chat lists, histories, marking read and assignment;
//! - [`events`]: the live events, resumable with `Last-Event-ID`;
//! - [`media`]: the desk's files (inbound attachments fetched from Meta);
//! - [`templates`]: the account's approved message templates, cached from Meta.

pub mod chats;
pub mod events;
pub mod media;
pub mod meta_webhook;
pub mod operator;
pub mod settings;
pub mod templates;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use utoipa_axum::router::OpenApiRouter;
use wagate_actors::domain::waba::WabaMessage;
use wagate_actors::domain::{MessageStatus, Role};

use crate::gateway::waba::Scope;
use crate::http::auth::AuthUser;
use crate::http::error::{ApiError, ApiResult};
use crate::http::state::AppState;

/// `max_upload` bounds the files of multipart sends.
pub fn router(max_upload: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(settings::router())
        .merge(meta_webhook::router())
        .merge(operator::router(max_upload))
        .merge(chats::router())
        .merge(events::router())
        .merge(media::router())
        .merge(templates::router())
}

const NO_CHAT: &str = "No such chat visible to the caller";

// --- Access ---------------------------------------------------------------------------

/// A caller of the desk, with the chats it sees.
pub struct DeskCaller {
    pub caller: AuthUser,
    pub scope: Scope,
}

impl DeskCaller {
    pub fn of(caller: AuthUser) -> DeskCaller {
        let u = &caller.0;
        let scope = match u.role {
            Role::Admin => Scope::All,
            Role::User => Scope::Owner(u.id.clone()),
            // An operator without an owner sees nothing of anybody else.
            Role::Operator => Scope::Owner(u.owner_id.clone().unwrap_or_else(|| u.id.clone())),
        };
        DeskCaller { caller, scope }
    }
}

impl FromRequestParts<AppState> for DeskCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(DeskCaller::of(
            AuthUser::from_request_parts(parts, state).await?,
        ))
    }
}

/// The account whose settings the caller manages: its own, or (admin) `requested`.
/// Operators manage none; a named account must exist and not be an operator.
pub async fn settings_owner(
    state: &AppState,
    caller: &AuthUser,
    requested: Option<&str>,
) -> ApiResult<String> {
    if caller.0.role == Role::Operator {
        return Err(ApiError::forbidden(
            "operators cannot manage WABA settings; their owner or an admin can",
        ));
    }
    match requested {
        Some(owner) if owner != caller.0.id => {
            caller.require_admin()?;
            match state.storage.user_by_id(owner).await? {
                Some(u) if u.role != Role::Operator => Ok(u.id),
                _ => Err(ApiError::not_found(format!("user {owner} not found"))),
            }
        }
        _ => Ok(caller.0.id.clone()),
    }
}

// --- Shared by the answers ------------------------------------------------------------

/// A numeric id from the path (400 otherwise).
fn numeric(name: &str, raw: &str) -> ApiResult<i64> {
    raw.trim()
        .parse::<i64>()
        .map_err(|_| ApiError::bad_request(format!("{name} must be a number")))
}

/// `(delivered, read)` of a message: outbound and delivered (or read), outbound and read.
fn receipts(m: &WabaMessage) -> (bool, bool) {
    let outbound = |s: &[MessageStatus]| m.from_me && s.contains(&m.status);
    (
        outbound(&[MessageStatus::Delivered, MessageStatus::Read]),
        outbound(&[MessageStatus::Read]),
    )
}
