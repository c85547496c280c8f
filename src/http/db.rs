//! The database API (`/api/db/*`, admins only; the spec shows no auth, we require an
//! admin because a switch moves every record): which provider is in use, and the live
//! switch to the other one, copying all data across while writes are held.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::store::RecordCounts;

use crate::http::auth::AuthUser;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::AppJson;
use crate::http::state::AppState;
use crate::storage::provider::{self, OpenError};
use crate::storage::switchable::SwitchError;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(switch))
}

#[derive(Debug, Serialize, ToSchema)]
struct DbStatus {
    /// `sqlite` or `mongodb`.
    #[schema(example = "sqlite")]
    provider: &'static str,
    /// The provider's URL with any password masked.
    url: String,
}

/// The storage provider in use (admins only).
#[utoipa::path(
    get,
    path = "/api/db/status",
    tag = "db",
    responses(
        (status = 200, description = "The provider", body = DbStatus),
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
async fn status(State(state): State<AppState>, caller: AuthUser) -> ApiResult<AppJson<DbStatus>> {
    caller.require_admin()?;
    let provider = state.db.active().provider();
    Ok(AppJson(DbStatus {
        provider,
        url: provider::display_url(&state.config, provider),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
struct SwitchRequest {
    /// `sqlite` or `mongodb`.
    #[schema(example = "mongodb")]
    provider: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct SwitchResponse {
    success: bool,
    message: String,
    /// The provider now in use.
    provider: &'static str,
    /// Records of each kind now in the new provider (equal to the old one's).
    copied: RecordCounts,
}

/// Switches the storage provider live (admins only), copying every record across.
///
/// Opens the target provider (before holding any write), then copies everything into
/// it, records the choice in `DATA_DIR/storage-provider.json` and swaps. Any failure
/// leaves the old provider in use and says why: 409 already on that provider, 422
/// `DATABASE_URL` missing for mongodb, 503 target unreachable, 502 copy failed.
#[utoipa::path(
    post,
    path = "/api/db/switch",
    tag = "db",
    request_body = SwitchRequest,
    responses(
        (status = 200, description = "Switched", body = SwitchResponse),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "Already on that provider (`already_active`)", body = ErrorBody),
        (status = 400, description = "A missing or unknown provider (`validation_error`)", body = ErrorBody),
        (status = 422, description = "`DATABASE_URL` is not configured, needed for mongodb (`database_url_missing`)", body = ErrorBody),
        (status = 502, description = "The copy failed (`switch_failed`); still on the old provider", body = ErrorBody),
        (status = 503, description = "The target cannot be reached (`database_unavailable`)", body = ErrorBody),
    )
)]
async fn switch(
    State(state): State<AppState>,
    caller: AuthUser,
    AppJson(req): AppJson<SwitchRequest>,
) -> ApiResult<AppJson<SwitchResponse>> {
    caller.require_admin()?;
    let target = provider::parse(&req.provider).ok_or_else(|| {
        ApiError::validation(format!(
            "provider must be sqlite or mongodb, not '{}'",
            req.provider
        ))
    })?;
    let current = state.db.active().provider();
    if current == target.as_str() {
        return Err(already_active(current));
    }
    let backend = provider::open(&state.config, target)
        .await
        .map_err(|e| match e {
            OpenError::NotConfigured => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "database_url_missing",
                "DATABASE_URL is not configured: set it to use mongodb",
            ),
            OpenError::Store { .. } => {
                tracing::warn!(error = %e, "database switch: the target cannot be opened");
                ApiError {
                    code: "database_unavailable",
                    ..ApiError::unavailable(format!("{e}; still on {current}"))
                }
            }
        })?;
    // Usage still counted in memory goes to the old provider now and is copied with the
    // rest (it would reach the new one after the switch anyway; this keeps the copy
    // report current).
    if let Err(e) = state.stats.flush().await {
        tracing::warn!(error = %e, "database switch: statistics not flushed before the copy");
    }
    let data_dir = state.config.data_dir.clone();
    let copied = state
        .db
        .switch_to(backend, move || {
            provider::write_choice(&data_dir, target).map_err(|e| {
                format!(
                    "cannot record the choice in {}: {e}",
                    data_dir.join(provider::CHOICE_FILE).display()
                )
            })
        })
        .await
        .map_err(|e| switch_failed(e, current))?;
    Ok(AppJson(SwitchResponse {
        success: true,
        message: format!("Database provider switched to {}", target.as_str()),
        provider: target.as_str(),
        copied,
    }))
}

fn already_active(provider: &str) -> ApiError {
    ApiError::conflict(
        "already_active",
        format!("{provider} is already the active database provider"),
    )
}

/// The answer to a failed switch: what failed, and that the old provider is still used.
fn switch_failed(e: SwitchError, current: &str) -> ApiError {
    match e {
        SwitchError::AlreadyActive(p) => already_active(p),
        SwitchError::Copy(copy) if copy.is_unavailable() => ApiError {
            code: "database_unavailable",
            ..ApiError::unavailable(format!(
                "switch failed, still on {current}: copy failed: {copy}"
            ))
        },
        SwitchError::Copy(copy) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "switch_failed",
            format!("switch failed, still on {current}: copy failed: {copy}"),
        ),
        SwitchError::Commit(why) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "switch_failed",
            format!("switch failed, still on {current}: {why}"),
        ),
    }
}
