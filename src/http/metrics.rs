//! `GET /metrics`: the Prometheus exposition (OpenMetrics text), without authentication.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let depth = match state.webhooks.depth().await {
        Ok(depth) => Some(depth),
        Err(err) => {
            tracing::warn!(%err, "cannot read the webhook queue depth for /metrics");
            None
        }
    };
    let body = state.metrics.render(&state.instances.status_board(), depth);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body)
}
