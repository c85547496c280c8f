//! `GET /metrics`: the Prometheus exposition (OpenMetrics text), without authentication.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// The Prometheus exposition (OpenMetrics text): HTTP traffic, instances by status, the
/// webhook queue.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    security(()),
    responses((
        status = 200,
        description = "The metrics",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8",
        body = String
    ))
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let depth = match state.webhooks.depth().await {
        Ok(depth) => Some(depth),
        Err(err) => {
            tracing::warn!(%err, "cannot read the webhook queue depth for /metrics");
            None
        }
    };
    let backlog = match state.webhooks.backlog().await {
        Ok(backlog) => Some(backlog),
        Err(err) => {
            tracing::warn!(%err, "cannot read the webhook backlog for /metrics");
            None
        }
    };
    let body = state.metrics.render(
        &state.instances.status_board(),
        depth,
        backlog.as_deref(),
        state.waba.chat_actors(),
    );
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body)
}
