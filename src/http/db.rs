//! The database API (`/api/db/*`, admins only; the spec shows no auth, we require an
//! admin because a switch moves every record): which provider is in use, and the live
//! switch to the other one ([`crate::gateway::storage`]), copying all data across while
//! writes are held.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::store::RecordCounts;

use crate::http::access::AdminOnly;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::AppJson;
use crate::http::state::AppState;
use crate::storage::provider;

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
async fn status(State(state): State<AppState>, _admin: AdminOnly) -> ApiResult<AppJson<DbStatus>> {
    let provider = state.db.active().provider();
    Ok(AppJson(DbStatus {
        provider,
        url: provider::display_url(&state.config, provider),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
struct SwitchRequest {
    /// `sqlite` or `mongodb`.
    #[schema(example = "mongodb", schema_with = provider_schema)]
    provider: String,
}

fn provider_schema() -> utoipa::openapi::schema::Object {
    crate::http::openapi::string_enum(&["sqlite", "mongodb"])
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
/// leaves the old provider in use and says why: 409 already on that provider (or a
/// cluster node: every node shares one database, none switches alone), 422
/// `DATABASE_URL` missing for mongodb, 503 target unreachable, 502 copy failed.
#[utoipa::path(
    post,
    path = "/api/db/switch",
    tag = "db",
    request_body = SwitchRequest,
    responses(
        (status = 200, description = "Switched", body = SwitchResponse),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "Already on that provider (`already_active`), or a cluster node (`cluster_mode`)", body = ErrorBody),
        (status = 400, description = "A missing or unknown provider (`validation_error`)", body = ErrorBody),
        (status = 422, description = "`DATABASE_URL` is not configured, needed for mongodb (`database_url_missing`)", body = ErrorBody),
        (status = 502, description = "The copy failed (`switch_failed`); still on the old provider", body = ErrorBody),
        (status = 503, description = "The target cannot be reached (`database_unavailable`)", body = ErrorBody),
    )
)]
async fn switch(
    State(state): State<AppState>,
    _admin: AdminOnly,
    AppJson(req): AppJson<SwitchRequest>,
) -> ApiResult<AppJson<SwitchResponse>> {
    let switched = state.storage_switch.switch(&req.provider).await?;
    Ok(AppJson(SwitchResponse {
        success: true,
        message: format!("Database provider switched to {}", switched.provider),
        provider: switched.provider,
        copied: switched.copied,
    }))
}
