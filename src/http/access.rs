//! Who may do what, as extractors: a handler that takes one of these runs only for a
//! caller allowed to, and gets what it needs already checked.
//!
//! - [`VisibleInstance`]: the instance the path names, if the caller may see it (another
//!   user's instance answers 404, like a missing one, so ids are not confirmed).
//! - [`UsableInstance`] / [`SendingInstance`]: the same, refused with 429 once the
//!   instance's usage limits are reached (sending adds the messages limit).
//! - [`InstanceManager`]: a caller who may manage WhatsApp instances (not an operator).
//! - [`AdminOnly`]: an admin.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use wagate_actors::domain::{Instance, Role};

use crate::http::auth::AuthUser;
use crate::http::error::ApiError;
use crate::http::state::AppState;

/// The path parameter naming the instance.
const INSTANCE_PARAMS: [&str; 2] = ["instanceId", "id"];

/// An instance the caller may see, with the caller.
pub struct VisibleInstance {
    pub caller: AuthUser,
    pub instance: Instance,
}

/// [`VisibleInstance`] within its usage limits (API calls).
pub struct UsableInstance {
    pub caller: AuthUser,
    pub instance: Instance,
}

/// [`VisibleInstance`] within its usage limits, messages included: for sends.
pub struct SendingInstance {
    pub caller: AuthUser,
    pub instance: Instance,
}

/// A caller who may manage WhatsApp instances: operators work the WABA desk only.
pub struct InstanceManager(pub AuthUser);

/// An admin.
pub struct AdminOnly(pub AuthUser);

impl FromRequestParts<AppState> for InstanceManager {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = AuthUser::from_request_parts(parts, state).await?;
        if caller.0.role == Role::Operator {
            return Err(ApiError::forbidden(
                "operators cannot manage WhatsApp instances",
            ));
        }
        Ok(InstanceManager(caller))
    }
}

impl FromRequestParts<AppState> for AdminOnly {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = AuthUser::from_request_parts(parts, state).await?;
        caller.require_admin()?;
        Ok(AdminOnly(caller))
    }
}

/// The instance the path names, if the caller may manage instances and see this one.
async fn instance_of_path(
    parts: &mut Parts,
    state: &AppState,
) -> Result<(AuthUser, Instance), ApiError> {
    let InstanceManager(caller) = InstanceManager::from_request_parts(parts, state).await?;
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    let id = params
        .iter()
        .find(|(name, _)| INSTANCE_PARAMS.contains(name))
        .map(|(_, value)| value.to_owned())
        .ok_or_else(|| {
            ApiError::internal("a route without an instance id uses an instance extractor")
        })?;
    match state.storage.instance_by_id(&id).await? {
        Some(instance) if caller.can_access(&instance.user_id) => Ok((caller, instance)),
        _ => Err(ApiError::not_found(format!("instance {id} not found"))),
    }
}

/// 429 once the instance's limits are reached; the first refusal of a period publishes
/// `limit_exceeded` (the stats counter owns that rule).
async fn within_limits(
    state: &AppState,
    instance: &Instance,
    sending: bool,
) -> Result<(), ApiError> {
    match state.stats.check(instance, sending).await? {
        Some(reached) => Err(reached.into()),
        None => Ok(()),
    }
}

impl FromRequestParts<AppState> for VisibleInstance {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (caller, instance) = instance_of_path(parts, state).await?;
        Ok(VisibleInstance { caller, instance })
    }
}

impl FromRequestParts<AppState> for UsableInstance {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (caller, instance) = instance_of_path(parts, state).await?;
        within_limits(state, &instance, false).await?;
        Ok(UsableInstance { caller, instance })
    }
}

impl FromRequestParts<AppState> for SendingInstance {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (caller, instance) = instance_of_path(parts, state).await?;
        within_limits(state, &instance, true).await?;
        Ok(SendingInstance { caller, instance })
    }
}
