//! Controls of the sandbox engine: "scan" the QR as a phone, inject faults. Only for
//! instances whose engine is `sandbox`, with the owner's auth.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};
use wagate_actors::domain::EngineKind;
use wagate_actors::engine::{FaultKind, SandboxControl};
use wagate_actors::phone::normalize_phone;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::http::auth::AuthUser;
use crate::http::extract::{AppJson, AppPath};
use crate::http::instances::visible_instance;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/sandbox/instances/{id}/scan", post(scan))
        .route("/api/sandbox/instances/{id}/fault", post(fault))
}

/// The instance, checked to be visible to the caller and on the sandbox engine.
async fn sandbox_instance(
    state: &AppState,
    caller: &AuthUser,
    id: &str,
) -> ApiResult<wagate_actors::domain::Instance> {
    let instance = visible_instance(state, caller, id).await?;
    if instance.engine != EngineKind::Sandbox {
        return Err(ApiError::conflict(
            "not_sandbox",
            format!(
                "instance {id} runs on the {} engine; sandbox controls need the sandbox engine",
                instance.engine.as_str()
            ),
        ));
    }
    Ok(instance)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanRequest {
    phone: String,
}

async fn scan(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<ScanRequest>,
) -> ApiResult<AppJson<Value>> {
    let phone = normalize_phone(&body.phone).map_err(ApiError::validation)?;
    let instance = sandbox_instance(&state, &caller, &id).await?;
    state
        .instances
        .get(&instance.id)?
        .sandbox(SandboxControl::Scan {
            phone: phone.clone(),
        })
        .await?;
    Ok(AppJson(json!({"success": true, "phone": phone})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FaultName {
    Disconnect,
    Crash,
    Logout,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    kind: FaultName,
}

async fn fault(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<FaultRequest>,
) -> ApiResult<AppJson<Value>> {
    let instance = sandbox_instance(&state, &caller, &id).await?;
    let (kind, name) = match body.kind {
        FaultName::Disconnect => (FaultKind::Disconnect, "disconnect"),
        FaultName::Crash => (FaultKind::Crash, "crash"),
        FaultName::Logout => (FaultKind::Logout, "logout"),
    };
    state
        .instances
        .get(&instance.id)?
        .sandbox(SandboxControl::Fault(kind))
        .await?;
    Ok(AppJson(json!({"success": true, "kind": name})))
}
