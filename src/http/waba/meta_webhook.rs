//! Meta's webhook: the subscription check (`GET`) and the notifications (`POST`).
//! Public: Meta authenticates with the verify token and the body's signature.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppQuery, from_json};
use crate::http::state::AppState;
use crate::waba::meta_webhook::Notification;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(verify_webhook, receive_webhook))
}

/// Meta's webhook subscription check.
///
/// Answers `hub.challenge` as text when `hub.verify_token` is the verify token of some
/// account; 403 otherwise.
#[utoipa::path(
    get,
    path = "/api/waba/webhook",
    tag = "waba",
    security(()),
    params(
        ("hub.mode" = Option<String>, Query, description = "`subscribe`"),
        ("hub.verify_token" = Option<String>, Query, description = "An account's verify token"),
        ("hub.challenge" = Option<String>, Query, description = "Echoed back on success"),
    ),
    responses(
        (status = 200, description = "`hub.challenge`", content_type = "text/plain", body = String),
        (status = 403, description = "Unknown verify token", body = ErrorBody),
    )
)]
async fn verify_webhook(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<HashMap<String, String>>,
) -> ApiResult<Response> {
    let mode = q.get("hub.mode").map(String::as_str);
    let token = q.get("hub.verify_token").map(String::as_str).unwrap_or("");
    let challenge = q.get("hub.challenge").cloned().unwrap_or_default();
    state.waba.verify_subscription(mode, token).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        challenge,
    )
        .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WabaReceived)]
struct Received {
    received: bool,
    /// New inbound messages stored.
    messages: u64,
    /// Status changes applied.
    statuses: u64,
}

/// Receives a notification from Meta (messages, statuses).
///
/// Each change is routed by `metadata.phone_number_id` to its account and processed only
/// when `X-Hub-Signature-256` is the HMAC of the raw body under that account's app secret. Unknown phone numbers are acknowledged and ignored (Meta
/// would retry anything else for days); a bad signature is 401. Processing is idempotent
/// (message ids are unique; statuses only move forward), so Meta's retries are harmless,
/// and a storage failure answers 503 so that Meta does retry.
#[utoipa::path(
    post,
    path = "/api/waba/webhook",
    tag = "waba",
    security(()),
    params(
        ("X-Hub-Signature-256" = Option<String>, Header, description = "`sha256=<hex HMAC-SHA256 of the raw body with the app secret>`"),
    ),
    request_body = Notification,
    responses(
        (status = 200, description = "Processed (or ignored: unknown phone number id)", body = Received),
        (status = 400, description = "Not a notification", body = ErrorBody),
        (status = 401, description = "Invalid signature", body = ErrorBody),
        (status = 503, description = "Storage unavailable: Meta retries", body = ErrorBody),
    )
)]
async fn receive_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<AppJson<Received>> {
    let notification: Notification = serde_json::from_slice(&body)
        .map_err(|e| e.to_string())
        .and_then(|value| from_json(value).map_err(|e| e.to_string()))
        .map_err(|e| ApiError::bad_request(format!("invalid notification: {e}")))?;
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let done = state.waba.ingest(&notification, &body, signature).await?;
    Ok(AppJson(Received {
        received: true,
        messages: done.messages,
        statuses: done.statuses,
    }))
}
