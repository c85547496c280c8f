//! `GET`/`PUT /api/waba/settings`: an account's WABA settings, secrets masked.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::settings_owner;
use crate::gateway::waba::{SettingsInput, StoredSettings, mask};
use crate::http::auth::AuthUser;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppQuery};
use crate::http::iso;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_settings, put_settings))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SettingsQuery {
    /// Admins may read and write another account's settings.
    #[serde(rename = "ownerId")]
    owner_id: Option<String>,
}

/// Every field is required the first time; later, an omitted one keeps its stored value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WabaSettingsInput)]
struct SettingsBody {
    /// A Graph API access token of the business.
    access_token: Option<String>,
    phone_number_id: Option<String>,
    business_account_id: Option<String>,
    /// The Meta app's secret: it verifies `X-Hub-Signature-256` of the webhook.
    app_secret: Option<String>,
    /// What Meta sends as `hub.verify_token` when subscribing the webhook.
    verify_token: Option<String>,
}

/// An account's WABA settings; secrets are masked (`****` and the last 4 characters).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WabaSettings)]
struct SettingsView {
    configured: bool,
    owner_id: String,
    phone_number_id: Option<String>,
    business_account_id: Option<String>,
    access_token: Option<String>,
    app_secret: Option<String>,
    verify_token: Option<String>,
    /// Where Meta must send notifications.
    webhook_path: &'static str,
    /// When configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    updated_at: Option<String>,
}

const WEBHOOK_PATH: &str = "/api/waba/webhook";

fn settings_view(owner_id: String, stored: Option<StoredSettings>) -> SettingsView {
    match stored {
        Some(StoredSettings {
            settings: s,
            updated_at,
        }) => SettingsView {
            configured: true,
            owner_id,
            access_token: Some(mask(&s.access_token)),
            app_secret: Some(mask(&s.app_secret)),
            verify_token: Some(mask(&s.verify_token)),
            phone_number_id: Some(s.phone_number_id),
            business_account_id: Some(s.business_account_id),
            webhook_path: WEBHOOK_PATH,
            updated_at: Some(iso(updated_at)),
        },
        None => SettingsView {
            configured: false,
            owner_id,
            phone_number_id: None,
            business_account_id: None,
            access_token: None,
            app_secret: None,
            verify_token: None,
            webhook_path: WEBHOOK_PATH,
            updated_at: None,
        },
    }
}

/// The caller's WABA settings (an admin's: any account's, with `ownerId`).
#[utoipa::path(
    get,
    path = "/api/waba/settings",
    tag = "waba",
    params(SettingsQuery),
    responses(
        (status = 200, description = "The settings (`configured: false` when none)", body = SettingsView),
        (status = 403, description = "An operator, or a non-admin naming another account", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    )
)]
async fn get_settings(
    State(state): State<AppState>,
    caller: AuthUser,
    AppQuery(q): AppQuery<SettingsQuery>,
) -> ApiResult<AppJson<SettingsView>> {
    let owner = settings_owner(&state, &caller, q.owner_id.as_deref()).await?;
    let stored = state.waba.settings(&owner).await?;
    Ok(AppJson(settings_view(owner, stored)))
}

/// Sets the caller's WABA settings (an admin's: any account's, with `ownerId`).
///
/// Every field is required the first time; later, an omitted secret keeps its stored
/// value (so a client never has to resend them).
#[utoipa::path(
    put,
    path = "/api/waba/settings",
    tag = "waba",
    params(SettingsQuery),
    request_body = SettingsBody,
    responses(
        (status = 200, description = "The stored settings", body = SettingsView),
        (status = 400, description = "A required field is missing", body = ErrorBody),
        (status = 403, description = "An operator, or a non-admin naming another account", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 409, description = "Another account has this phoneNumberId", body = ErrorBody),
    )
)]
async fn put_settings(
    State(state): State<AppState>,
    caller: AuthUser,
    AppQuery(q): AppQuery<SettingsQuery>,
    AppJson(raw): AppJson<Value>,
) -> ApiResult<AppJson<SettingsView>> {
    let owner = settings_owner(&state, &caller, q.owner_id.as_deref()).await?;
    let body: SettingsBody = serde_json::from_value(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let input = SettingsInput {
        access_token: body.access_token,
        phone_number_id: body.phone_number_id,
        business_account_id: body.business_account_id,
        app_secret: body.app_secret,
        verify_token: body.verify_token,
    };
    let stored = state.waba.put_settings(&owner, input).await?;
    Ok(AppJson(settings_view(owner, stored)))
}
