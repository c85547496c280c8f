//! The instance endpoints, by concern:
//! - [`lifecycle`]: create, list, read, update and delete instances;
//! - [`connection`]: the live status and connection control (QR, pair code, reconnect,
//!   logout);
//! - [`activity`]: the activity log, stored events and the live event stream.
//!
//! Lifecycle changes go through the use cases ([`crate::gateway::instances`]), connection
//! control to the instance's actor through its typed handle; reads of stored data go
//! straight to storage.

mod activity;
mod connection;
mod lifecycle;

use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::domain::{Instance, InstanceStatus};
use wagate_actors::instance::StatusView;

use crate::http::extract::AppJson;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(lifecycle::create, lifecycle::list))
        .routes(routes!(
            lifecycle::read,
            lifecycle::update,
            lifecycle::remove
        ))
        .routes(routes!(connection::status))
        .routes(routes!(connection::reconnect))
        .routes(routes!(connection::logout))
        .routes(routes!(connection::qr))
        .routes(routes!(connection::pair_code))
        .routes(routes!(activity::activity))
        .routes(routes!(activity::events))
        .routes(routes!(activity::event_stream))
        .routes(routes!(connection::whatsapp_status))
        .routes(routes!(connection::whatsapp_qr))
        .routes(routes!(connection::whatsapp_logout))
}

/// Operators work the WABA desk only.
const OPERATOR: &str = "An operator (operators cannot manage WhatsApp instances)";

/// `{ready, status, hasQr}` as the spec's `connectionStatus`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    ready: bool,
    status: InstanceStatus,
    has_qr: bool,
}

/// The live status from the status board; the stored one while no actor reports.
fn connection(state: &AppState, instance: &Instance) -> ConnectionStatus {
    let view: StatusView = state
        .instances
        .live_status(&instance.id)
        .unwrap_or_else(|| StatusView::from_status(instance.status));
    ConnectionStatus {
        ready: view.ready,
        status: view.status,
        has_qr: view.has_qr,
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct Done {
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

fn done(message: String) -> AppJson<Done> {
    AppJson(Done {
        success: true,
        message: Some(message),
    })
}
