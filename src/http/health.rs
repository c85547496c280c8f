//! Liveness and readiness: `/healthz` answers while the process runs, `/readyz` only
//! while storage answers too.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::AppJson;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(Debug, Serialize, ToSchema)]
struct Live {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness: answers while the process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    security(()),
    responses((status = 200, description = "The process runs", body = Live))
)]
async fn healthz() -> AppJson<Live> {
    AppJson(Live { status: "ok" })
}

#[derive(Debug, Serialize, ToSchema)]
struct Ready {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
    /// The storage provider in use: `sqlite` or `mongodb`.
    #[schema(example = "sqlite")]
    storage: &'static str,
}

/// Readiness: answers 200 while storage answers, 503 `not_ready` otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Storage answers", body = Ready),
        (status = 503, description = "Storage does not answer (`not_ready`)", body = ErrorBody),
    )
)]
async fn readyz(State(state): State<AppState>) -> ApiResult<AppJson<Ready>> {
    match state.storage.ping().await {
        Ok(()) => Ok(AppJson(Ready {
            status: "ok",
            storage: state.storage.provider(),
        })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError {
                code: "not_ready",
                ..ApiError::unavailable("storage is not answering")
            })
        }
    }
}
