//! Liveness and readiness: `/healthz` answers while the process runs, `/readyz` only
//! while storage answers too.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::AppJson;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> AppJson<Value> {
    AppJson(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> ApiResult<AppJson<Value>> {
    match state.storage.ping().await {
        Ok(()) => Ok(AppJson(
            json!({"status": "ok", "storage": state.storage.provider()}),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError {
                code: "not_ready",
                ..ApiError::unavailable("storage is not answering")
            })
        }
    }
}
