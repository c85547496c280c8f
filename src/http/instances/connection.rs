//! An instance's connection: its live status, and the controls that link, relink or
//! unlink it (QR code, pair code, reconnect, logout), sent to its actor.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wagate_actors::domain::{InstanceStatus, normalize_phone};
use wagate_actors::instance::QrAnswer;

use super::{ConnectionStatus, Done, OPERATOR, connection, done};
use crate::http::access::VisibleInstance;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppQuery};
use crate::http::iso;
use crate::http::openapi::{Binary, NO_INSTANCE};
use crate::http::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct StatusAnswer {
    instance_id: String,
    status: InstanceStatus,
    ready: bool,
    has_qr: bool,
    /// The connected phone number.
    phone: Option<String>,
    #[schema(format = DateTime)]
    last_activity: Option<String>,
    /// Paced sends (`sendRate`) waiting in the instance's queue.
    queued_sends: u64,
    connection_details: ConnectionStatus,
    /// Cluster mode: the node that owns the instance (and answered).
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    /// Cluster mode: the epoch of the owner's lease; it grows at every change of node.
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_epoch: Option<u64>,
}

/// The instance's live connection status.
///
/// The same state the send path decides on: from the moment a session stops (dropped,
/// crashed, unlinked) it is `disconnected` or `reconnecting` with `ready: false`, never
/// `connected` while a send would be refused. `logged_out` and `failed` show once they
/// are recorded in the activity log.
#[utoipa::path(
    get,
    path = "/api/instances/{instanceId}/status",
    tag = "instances",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "The status", body = StatusAnswer),
        (status = 403, description = OPERATOR, body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
    )
)]
pub(super) async fn status(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
) -> ApiResult<AppJson<StatusAnswer>> {
    let conn = connection(&state, &instance);
    let (node, lease_epoch) = crate::http::cluster::lease_of(&state, &instance.id).unzip();
    Ok(AppJson(StatusAnswer {
        node,
        lease_epoch,
        instance_id: instance.id.clone(),
        status: conn.status,
        ready: conn.ready,
        has_qr: conn.has_qr,
        phone: instance.phone.clone(),
        last_activity: instance.last_activity.map(iso),
        queued_sends: state.instances.status_board().queued(&instance.id),
        connection_details: ConnectionStatus { ..conn },
    }))
}

/// The instance's live connection status, short form.
#[utoipa::path(
    get,
    path = "/api/whatsapp/{instanceId}/status",
    tag = "instances",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "The status", body = ConnectionStatus),
        (status = 403, description = OPERATOR, body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
    )
)]
pub(super) async fn whatsapp_status(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
) -> ApiResult<AppJson<ConnectionStatus>> {
    Ok(AppJson(connection(&state, &instance)))
}

/// Drops the instance's connection and connects again.
#[utoipa::path(
    post,
    path = "/api/instances/{instanceId}/reconnect",
    tag = "instances",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "Reconnected", body = Done),
        (status = 403, description = OPERATOR, body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
    )
)]
pub(super) async fn reconnect(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
) -> ApiResult<AppJson<Done>> {
    state.instances.reconnect(&instance).await?;
    Ok(done(format!("Instance {} reconnected", instance.id)))
}

/// Logs the instance out of WhatsApp (unlinks the device); a new QR code follows.
#[utoipa::path(
    post,
    path = "/api/instances/{instanceId}/logout",
    tag = "instances",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "Logged out", body = Done),
        (status = 403, description = OPERATOR, body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
    )
)]
pub(super) async fn logout(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
) -> ApiResult<AppJson<Done>> {
    state.instances.get(&instance.id)?.logout().await?;
    Ok(done(format!("Instance {} logged out", instance.id)))
}

/// [`logout`] under `/api/whatsapp`: answers `{"success": true}`.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/logout",
    tag = "instances",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "Logged out", body = Done),
        (status = 403, description = OPERATOR, body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
    )
)]
pub(super) async fn whatsapp_logout(
    state: State<AppState>,
    visible: VisibleInstance,
) -> ApiResult<AppJson<Done>> {
    logout(state, visible).await?;
    Ok(AppJson(Done {
        success: true,
        message: None,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct QrParams {
    /// `json` (the default) or `png`.
    #[param(schema_with = qr_formats)]
    format: Option<String>,
}

fn qr_formats() -> utoipa::openapi::schema::Object {
    crate::http::openapi::string_enum(&["json", "png"])
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct QrCode {
    /// The text of the QR code (render it, or ask for `format=png`).
    #[schema(example = "2@Xk9...")]
    qr_code: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct QrPending {
    message: &'static str,
    /// `generating`.
    status: &'static str,
}

/// The QR code to link the instance, as text or as a PNG image.
#[utoipa::path(
    get,
    path = "/api/instances/{instanceId}/qr",
    tag = "instances",
    params(("instanceId" = String, Path, description = "The instance's id"), QrParams),
    responses(
        (status = 200, description = "The current QR code", content(
            (QrCode = "application/json"),
            (Binary = "image/png"),
        )),
        (status = 202, description = "Not generated yet: retry in a few seconds", body = QrPending),
        (status = 400, description = "Unknown format", body = ErrorBody),
        (status = 403, description = OPERATOR, body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = "Already connected, or no QR code in this state", body = ErrorBody),
    )
)]
pub(super) async fn qr(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    AppQuery(params): AppQuery<QrParams>,
) -> ApiResult<Response> {
    let png = match params.format.as_deref() {
        None | Some("json") => false,
        Some("png") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format '{other}' is not supported (use png or json)"
            )));
        }
    };
    match state.instances.get(&instance.id)?.qr().await? {
        QrAnswer::Code(code) if png => {
            let bytes = crate::qr::png(&code).map_err(ApiError::internal)?;
            Ok((
                [
                    (header::CONTENT_TYPE, "image/png"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                bytes,
            )
                .into_response())
        }
        QrAnswer::Code(code) => Ok(AppJson(QrCode { qr_code: code }).into_response()),
        QrAnswer::Generating => Ok((
            StatusCode::ACCEPTED,
            AppJson(QrPending {
                message: "QR code generation in progress. Please try again in a few seconds.",
                status: "generating",
            }),
        )
            .into_response()),
    }
}

/// [`qr`] under `/api/whatsapp`.
#[utoipa::path(
    get,
    path = "/api/whatsapp/{instanceId}/qr",
    tag = "instances",
    params(("instanceId" = String, Path, description = "The instance's id"), QrParams),
    responses(
        (status = 200, description = "The current QR code", content(
            (QrCode = "application/json"),
            (Binary = "image/png"),
        )),
        (status = 202, description = "Not generated yet: retry in a few seconds", body = QrPending),
        (status = 400, description = "Unknown format", body = ErrorBody),
        (status = 403, description = OPERATOR, body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = "Already connected, or no QR code in this state", body = ErrorBody),
    )
)]
pub(super) async fn whatsapp_qr(
    state: State<AppState>,
    visible: VisibleInstance,
    params: AppQuery<QrParams>,
) -> ApiResult<Response> {
    qr(state, visible, params).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PairCodeRequest {
    /// The phone number to link, in international form.
    #[schema(schema_with = crate::http::openapi::phone_schema)]
    phone: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PairCode {
    /// The code to type on the phone (WhatsApp → Linked devices → Link with phone number).
    #[schema(example = "ABCD-EFGH")]
    code: String,
}

/// A code to link the instance by typing it on the phone, instead of scanning the QR.
#[utoipa::path(
    post,
    path = "/api/instances/{instanceId}/pair-code",
    tag = "instances",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = PairCodeRequest,
    responses(
        (status = 200, description = "The code", body = PairCode),
        (status = 403, description = OPERATOR, body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = "Already connected, or not waiting for a link", body = ErrorBody),
        (status = 400, description = "A missing phone, or not a phone number (`validation_error`)", body = ErrorBody),
    )
)]
pub(super) async fn pair_code(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    AppJson(body): AppJson<PairCodeRequest>,
) -> ApiResult<AppJson<PairCode>> {
    let phone = normalize_phone(&body.phone).map_err(ApiError::validation)?;
    let code = state.instances.get(&instance.id)?.pair_code(&phone).await?;
    Ok(AppJson(PairCode { code }))
}
