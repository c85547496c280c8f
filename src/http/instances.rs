//! The instance endpoints: CRUD, connection control (QR, pair code, reconnect, logout),
//! activity, events and the live event stream. Lifecycle calls go to the instance's actor
//! through its typed handle; reads of stored data go straight to storage.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::domain::event::{EventData, WebhookUpdated};
use wagate_actors::domain::normalize_phone;
use wagate_actors::domain::{
    ActivityEntry, ActivityQuery, EngineKind, EventQuery, Instance, InstanceEvent, InstanceStatus,
    LimitPeriod, Limits, Role, WebhookSettings, new_id,
};
use wagate_actors::instance::{QrAnswer, StatusView};

use crate::http::auth::AuthUser;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppPath, AppQuery};
use crate::http::openapi::{Binary, NO_INSTANCE};
use crate::http::state::AppState;
use crate::http::{DateRangePage, Pagination, iso, page_limit, parse_date_param};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read, update, remove))
        .routes(routes!(status))
        .routes(routes!(reconnect))
        .routes(routes!(logout))
        .routes(routes!(qr))
        .routes(routes!(pair_code))
        .routes(routes!(activity))
        .routes(routes!(events))
        .routes(routes!(event_stream))
        .routes(routes!(whatsapp_status))
        .routes(routes!(whatsapp_qr))
        .routes(routes!(whatsapp_logout))
}

/// Operators work the WABA desk only.
const OPERATOR: &str = "An operator (operators cannot manage WhatsApp instances)";

/// Longest accepted instance name or description.
const MAX_NAME: usize = 200;
const MAX_DESCRIPTION: usize = 2000;
/// Custom webhook headers: at most this many, each name and value bounded.
const MAX_HEADERS: usize = 20;
const MAX_HEADER_LEN: usize = 1024;
/// Retries are bounded so a dead receiver cannot keep a delivery alive for days.
const MAX_RETRIES: u32 = 20;
const MIN_RETRY_INTERVAL_MS: u64 = 100;
const MAX_RETRY_INTERVAL_MS: u64 = 3_600_000;

pub use crate::http::access::visible_instance;

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
        .status_board()
        .get(&instance.id)
        .unwrap_or_else(|| StatusView::from_status(instance.status));
    ConnectionStatus {
        ready: view.ready,
        status: view.status,
        has_qr: view.has_qr,
    }
}

/// Which events the webhook receives, and how deliveries are retried.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct WebhookSettingsView {
    instance_id: String,
    notify_received: bool,
    notify_sent: bool,
    notify_delivery: bool,
    notify_read: bool,
    max_retries: u32,
    /// Milliseconds between retries.
    retry_interval: u64,
    /// The signing secret; `********` for an admin who is not the owner.
    secret: Option<String>,
    /// Extra headers sent with every delivery.
    headers: BTreeMap<String, String>,
}

/// Usage limits: calls past them answer 429 `limit_exceeded` until the period ends.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct LimitsView {
    max_messages_sent: Option<u64>,
    max_api_calls: Option<u64>,
    period: LimitPeriod,
}

/// An instance as the API shows it. `webhookSettings` (with the secret) only appears on
/// the single-instance answer, which only the owner (or an admin) can read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct InstanceView {
    id: String,
    name: String,
    description: Option<String>,
    user_id: String,
    engine: EngineKind,
    status: InstanceStatus,
    phone: Option<String>,
    webhook_url: Option<String>,
    webhook_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<LimitsView>,
    #[schema(format = DateTime)]
    last_activity: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// Only in `GET /api/instances/{instanceId}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_settings: Option<WebhookSettingsView>,
    /// In the list and in `GET /api/instances/{instanceId}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_status: Option<ConnectionStatus>,
}

impl InstanceView {
    /// `webhookSettings` (with the secret) when `settings_for` is the owner's id; for
    /// anybody else (an admin) the secret is masked.
    fn new(
        state: &AppState,
        i: Instance,
        settings_for: Option<&str>,
        with_connection: bool,
    ) -> Self {
        let conn = connection(state, &i);
        let with_settings = settings_for.is_some();
        let owner = settings_for == Some(i.user_id.as_str());
        let settings = with_settings.then(|| WebhookSettingsView {
            instance_id: i.id.clone(),
            notify_received: i.webhook.notify_received,
            notify_sent: i.webhook.notify_sent,
            notify_delivery: i.webhook.notify_delivery,
            notify_read: i.webhook.notify_read,
            max_retries: i.webhook.max_retries,
            retry_interval: i.webhook.retry_interval_ms,
            secret: if owner {
                i.webhook.secret.clone()
            } else {
                i.webhook.secret.as_ref().map(|_| "********".to_owned())
            },
            headers: i.webhook.headers.clone(),
        });
        InstanceView {
            status: conn.status,
            id: i.id,
            name: i.name,
            description: i.description,
            user_id: i.user_id,
            engine: i.engine,
            phone: i.phone,
            webhook_url: i.webhook_url,
            webhook_enabled: i.webhook_enabled,
            limits: i.limits.map(|l| LimitsView {
                max_messages_sent: l.max_messages_sent,
                max_api_calls: l.max_api_calls,
                period: l.period,
            }),
            last_activity: i.last_activity.map(iso),
            created_at: iso(i.created_at),
            updated_at: iso(i.updated_at),
            webhook_settings: settings,
            connection_status: with_connection.then_some(conn),
        }
    }
}

/// Usage limits; an absent maximum is no limit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LimitsInput {
    max_messages_sent: Option<u64>,
    max_api_calls: Option<u64>,
    period: LimitPeriod,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateInstance {
    /// 1 to 200 characters.
    #[schema(example = "Support line")]
    name: String,
    /// At most 2000 characters.
    description: Option<String>,
    /// The server's `WA_ENGINE` when omitted.
    engine: Option<EngineKind>,
    /// An http(s) URL receiving the events (not on a private network unless allowed).
    #[schema(example = "https://hooks.example/wagate")]
    webhook_url: Option<String>,
    /// On by default when a webhookUrl is given.
    webhook_enabled: Option<bool>,
    notify_received: Option<bool>,
    notify_sent: Option<bool>,
    notify_delivery: Option<bool>,
    notify_read: Option<bool>,
    /// At most 20.
    #[schema(maximum = 20)]
    max_retries: Option<u32>,
    /// Milliseconds between retries, 100 to 3,600,000.
    #[schema(minimum = 100, maximum = 3600000)]
    retry_interval: Option<u64>,
    /// The secret signing the deliveries (`X-Webhook-Signature`).
    webhook_secret: Option<String>,
    /// Extra headers sent with every delivery (at most 20).
    headers: Option<BTreeMap<String, String>>,
    limits: Option<LimitsInput>,
}

/// The `webhookSettings` object of `PUT /api/instances/{instanceId}`; absent fields stay.
#[derive(Debug, Default, PartialEq, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SettingsPatch {
    notify_received: Option<bool>,
    notify_sent: Option<bool>,
    notify_delivery: Option<bool>,
    notify_read: Option<bool>,
    /// At most 20.
    #[schema(maximum = 20)]
    max_retries: Option<u32>,
    /// Milliseconds between retries, 100 to 3,600,000.
    #[schema(minimum = 100, maximum = 3600000)]
    retry_interval: Option<u64>,
    /// The signing secret; an empty string removes it.
    secret: Option<String>,
    /// Extra headers sent with every delivery (at most 20); replaces the previous set.
    headers: Option<BTreeMap<String, String>>,
}

fn validate_name(name: &str) -> ApiResult<String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > MAX_NAME {
        return Err(ApiError::validation(format!(
            "name must be 1 to {MAX_NAME} characters"
        )));
    }
    Ok(n.to_owned())
}

fn validate_description(d: Option<String>) -> ApiResult<Option<String>> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(ApiError::validation(format!(
            "description must be at most {MAX_DESCRIPTION} characters"
        ))),
        Some(d) if d.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// http(s) URLs only; an empty string clears the URL.
/// http(s) URLs only, not on private networks unless allowed; empty clears the URL.
async fn validate_webhook_url(
    url: Option<String>,
    allow_private: bool,
) -> ApiResult<Option<String>> {
    let Some(url) = url else { return Ok(None) };
    let url = url.trim().to_owned();
    if url.is_empty() {
        return Ok(None);
    }
    if url.len() > 2048 {
        return Err(ApiError::validation(
            "webhookUrl must be at most 2048 characters",
        ));
    }
    let parsed = reqwest::Url::parse(&url)
        .map_err(|_| ApiError::validation("webhookUrl must be an absolute http(s) URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ApiError::validation(
            "webhookUrl must be an absolute http(s) URL",
        ));
    }
    crate::outbound::check_url_resolving(&parsed, allow_private)
        .await
        .map_err(|e| ApiError::validation(format!("webhookUrl: {e}")))?;
    Ok(Some(url))
}

fn apply_settings(w: &mut WebhookSettings, p: SettingsPatch) -> ApiResult<()> {
    if let Some(v) = p.notify_received {
        w.notify_received = v;
    }
    if let Some(v) = p.notify_sent {
        w.notify_sent = v;
    }
    if let Some(v) = p.notify_delivery {
        w.notify_delivery = v;
    }
    if let Some(v) = p.notify_read {
        w.notify_read = v;
    }
    if let Some(v) = p.max_retries {
        if v > MAX_RETRIES {
            return Err(ApiError::validation(format!(
                "maxRetries must be at most {MAX_RETRIES}"
            )));
        }
        w.max_retries = v;
    }
    if let Some(v) = p.retry_interval {
        if !(MIN_RETRY_INTERVAL_MS..=MAX_RETRY_INTERVAL_MS).contains(&v) {
            return Err(ApiError::validation(format!(
                "retryInterval must be between {MIN_RETRY_INTERVAL_MS} and {MAX_RETRY_INTERVAL_MS} ms"
            )));
        }
        w.retry_interval_ms = v;
    }
    if let Some(secret) = p.secret {
        if secret.len() > MAX_HEADER_LEN {
            return Err(ApiError::validation(format!(
                "secret must be at most {MAX_HEADER_LEN} characters"
            )));
        }
        w.secret = (!secret.is_empty()).then_some(secret);
    }
    if let Some(headers) = p.headers {
        if headers.len() > MAX_HEADERS {
            return Err(ApiError::validation(format!(
                "headers may hold at most {MAX_HEADERS} entries"
            )));
        }
        for (name, value) in &headers {
            let valid_name = !name.is_empty()
                && name.len() <= MAX_HEADER_LEN
                && axum::http::HeaderName::from_bytes(name.as_bytes()).is_ok();
            if !valid_name {
                return Err(ApiError::validation(format!(
                    "headers: '{name}' is not a valid header name"
                )));
            }
            if value.len() > MAX_HEADER_LEN || axum::http::HeaderValue::from_str(value).is_err() {
                return Err(ApiError::validation(format!(
                    "headers: the value of '{name}' is not a valid header value"
                )));
            }
        }
        w.headers = headers;
    }
    Ok(())
}

fn validate_limits(l: Option<LimitsInput>) -> Option<Limits> {
    l.map(|l| Limits {
        max_messages_sent: l.max_messages_sent,
        max_api_calls: l.max_api_calls,
        period: l.period,
    })
}

/// Creates an instance owned by the caller and starts connecting it.
#[utoipa::path(
    post,
    path = "/api/instances",
    tag = "instances",
    request_body = CreateInstance,
    responses(
        (status = 201, description = "Created", body = InstanceView),
        (status = 403, description = OPERATOR, body = ErrorBody),
        (status = 400, description = "A missing, unknown or invalid field: name, URL or webhook settings (`validation_error`)", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    caller: AuthUser,
    AppJson(body): AppJson<CreateInstance>,
) -> ApiResult<(StatusCode, AppJson<InstanceView>)> {
    if caller.0.role == Role::Operator {
        return Err(ApiError::forbidden(
            "operators cannot manage WhatsApp instances",
        ));
    }
    let name = validate_name(&body.name)?;
    let description = validate_description(body.description)?;
    let webhook_url =
        validate_webhook_url(body.webhook_url, state.config.allow_private_network_urls).await?;
    let mut webhook = WebhookSettings::default();
    apply_settings(
        &mut webhook,
        SettingsPatch {
            notify_received: body.notify_received,
            notify_sent: body.notify_sent,
            notify_delivery: body.notify_delivery,
            notify_read: body.notify_read,
            max_retries: body.max_retries,
            retry_interval: body.retry_interval,
            secret: body.webhook_secret,
            headers: body.headers,
        },
    )?;
    let now = Utc::now();
    let instance = Instance {
        id: new_id(),
        user_id: caller.0.id.clone(),
        name,
        description,
        engine: body.engine.unwrap_or(state.config.wa_engine),
        status: InstanceStatus::Connecting,
        phone: None,
        webhook_enabled: body.webhook_enabled.unwrap_or(webhook_url.is_some()),
        webhook_url,
        webhook,
        limits: validate_limits(body.limits),
        last_activity: None,
        created_at: now,
        updated_at: now,
    };
    state.storage.create_instance(&instance).await?;
    state
        .storage
        .append_activity(&ActivityEntry::new(
            &instance.id,
            "created",
            json!({"name": instance.name, "engine": instance.engine}),
        ))
        .await?;
    state.instances.start(instance.clone(), false).await?;
    Ok((
        StatusCode::CREATED,
        AppJson(InstanceView::new(&state, instance, None, false)),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
struct InstanceList {
    instances: Vec<InstanceView>,
}

/// The caller's instances (an admin's: everybody's).
#[utoipa::path(
    get,
    path = "/api/instances",
    tag = "instances",
    responses(
        (status = 200, description = "The instances", body = InstanceList),
        (status = 403, description = OPERATOR, body = ErrorBody),
    )
)]
async fn list(State(state): State<AppState>, caller: AuthUser) -> ApiResult<AppJson<InstanceList>> {
    if caller.0.role == Role::Operator {
        return Err(ApiError::forbidden(
            "operators cannot manage WhatsApp instances",
        ));
    }
    let owner = (!caller.is_admin()).then_some(caller.0.id.as_str());
    let found = state.storage.list_instances(owner).await?;
    Ok(AppJson(InstanceList {
        instances: found
            .into_iter()
            .map(|i| InstanceView::new(&state, i, None, true))
            .collect(),
    }))
}

/// One instance, with its webhook settings and live connection status.
#[utoipa::path(
    get,
    path = "/api/instances/{instanceId}",
    tag = "instances",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "The instance", body = InstanceView),
        (status = 403, description = OPERATOR, body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
    )
)]
async fn read(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<InstanceView>> {
    let instance = visible_instance(&state, &caller, &id).await?;
    Ok(AppJson(InstanceView::new(
        &state,
        instance,
        Some(caller.0.id.as_str()),
        true,
    )))
}

/// Absent fields stay as they are. The webhook settings may be given inside
/// `webhookSettings` (as the API document's update example) or flat, as at creation; a
/// setting given both ways takes its `webhookSettings` value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateInstance {
    name: Option<String>,
    description: Option<String>,
    /// An empty string removes the URL.
    webhook_url: Option<String>,
    webhook_enabled: Option<bool>,
    webhook_settings: Option<SettingsPatch>,
    notify_received: Option<bool>,
    notify_sent: Option<bool>,
    notify_delivery: Option<bool>,
    notify_read: Option<bool>,
    /// At most 20.
    #[schema(maximum = 20)]
    max_retries: Option<u32>,
    /// Milliseconds between retries, 100 to 3,600,000.
    #[schema(minimum = 100, maximum = 3600000)]
    retry_interval: Option<u64>,
    /// The signing secret (`secret` of `webhookSettings`); an empty string removes it.
    webhook_secret: Option<String>,
    /// Extra headers sent with every delivery (at most 20); replaces the previous set.
    headers: Option<BTreeMap<String, String>>,
    limits: Option<LimitsInput>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct UpdatedInstance {
    id: String,
    name: String,
    description: Option<String>,
    webhook_url: Option<String>,
    webhook_enabled: bool,
    #[schema(format = DateTime)]
    updated_at: String,
}

/// Updates an instance's name, description, webhook or limits.
#[utoipa::path(
    put,
    path = "/api/instances/{instanceId}",
    tag = "instances",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = UpdateInstance,
    responses(
        (status = 200, description = "Updated", body = UpdatedInstance),
        (status = 403, description = OPERATOR, body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 400, description = "A missing, unknown or invalid field: name, URL or webhook settings (`validation_error`)", body = ErrorBody),
    )
)]
async fn update(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<UpdateInstance>,
) -> ApiResult<AppJson<UpdatedInstance>> {
    let mut instance = visible_instance(&state, &caller, &id).await?;
    let mut changed: Vec<&str> = Vec::new();
    if let Some(name) = body.name {
        instance.name = validate_name(&name)?;
        changed.push("name");
    }
    if body.description.is_some() {
        instance.description = validate_description(body.description)?;
        changed.push("description");
    }
    let mut webhook_changed = false;
    if body.webhook_url.is_some() {
        let had_url = instance.webhook_url.is_some();
        instance.webhook_url =
            validate_webhook_url(body.webhook_url, state.config.allow_private_network_urls).await?;
        // As at creation: a first URL switches webhooks on unless the request says otherwise.
        if !had_url && instance.webhook_url.is_some() && body.webhook_enabled.is_none() {
            instance.webhook_enabled = true;
        }
        changed.push("webhookUrl");
        webhook_changed = true;
    }
    if let Some(enabled) = body.webhook_enabled {
        instance.webhook_enabled = enabled;
        changed.push("webhookEnabled");
        webhook_changed = true;
    }
    let flat = SettingsPatch {
        notify_received: body.notify_received,
        notify_sent: body.notify_sent,
        notify_delivery: body.notify_delivery,
        notify_read: body.notify_read,
        max_retries: body.max_retries,
        retry_interval: body.retry_interval,
        secret: body.webhook_secret,
        headers: body.headers,
    };
    let flat = (flat != SettingsPatch::default()).then_some(flat);
    let mut settings_given = false;
    for patch in [flat, body.webhook_settings].into_iter().flatten() {
        apply_settings(&mut instance.webhook, patch)?;
        settings_given = true;
    }
    if settings_given {
        changed.push("webhookSettings");
        webhook_changed = true;
    }
    if body.limits.is_some() {
        instance.limits = validate_limits(body.limits);
        changed.push("limits");
    }
    instance.updated_at = Utc::now();
    if !state.storage.update_instance(&instance).await? {
        return Err(ApiError::not_found(format!("instance {id} not found")));
    }
    // The webhook queue keeps the instance's URL and settings; it reads them again.
    state.webhooks.invalidate(&instance.id);
    state
        .storage
        .append_activity(&ActivityEntry::new(
            &id,
            "updated",
            json!({"fields": changed}),
        ))
        .await?;
    if webhook_changed {
        state
            .events
            .publish(InstanceEvent::new(
                &id,
                wagate_actors::domain::Event::WebhookUpdated(WebhookUpdated {
                    timestamp: iso(instance.updated_at),
                    webhook_url: instance.webhook_url.clone(),
                    webhook_enabled: instance.webhook_enabled,
                }),
            ))
            .await?;
    }
    Ok(AppJson(UpdatedInstance {
        id: instance.id,
        name: instance.name,
        description: instance.description,
        webhook_url: instance.webhook_url,
        webhook_enabled: instance.webhook_enabled,
        updated_at: iso(instance.updated_at),
    }))
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

/// Deletes an instance: its session, its stored data and its media.
#[utoipa::path(
    delete,
    path = "/api/instances/{instanceId}",
    tag = "instances",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "Deleted", body = Done),
        (status = 403, description = OPERATOR, body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
    )
)]
async fn remove(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<Done>> {
    let instance = visible_instance(&state, &caller, &id).await?;
    state.instances.remove(&instance.id).await?;
    state.storage.delete_instance(&instance.id).await?;
    state.media.remove_instance(&instance.id).await;
    state.webhooks.purge(&instance.id);
    Ok(done(format!("Instance {id} deleted successfully")))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct StatusAnswer {
    instance_id: String,
    status: InstanceStatus,
    ready: bool,
    has_qr: bool,
    /// The connected phone number.
    phone: Option<String>,
    #[schema(format = DateTime)]
    last_activity: Option<String>,
    connection_details: ConnectionStatus,
}

/// The instance's live connection status.
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
async fn status(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<StatusAnswer>> {
    let instance = visible_instance(&state, &caller, &id).await?;
    let conn = connection(&state, &instance);
    Ok(AppJson(StatusAnswer {
        instance_id: instance.id.clone(),
        status: conn.status,
        ready: conn.ready,
        has_qr: conn.has_qr,
        phone: instance.phone.clone(),
        last_activity: instance.last_activity.map(iso),
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
async fn whatsapp_status(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<ConnectionStatus>> {
    let instance = visible_instance(&state, &caller, &id).await?;
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
async fn reconnect(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<Done>> {
    let instance = visible_instance(&state, &caller, &id).await?;
    state.instances.reconnect(&instance).await?;
    Ok(done(format!("Instance {id} reconnected")))
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
async fn logout(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<Done>> {
    let instance = visible_instance(&state, &caller, &id).await?;
    state.instances.get(&instance.id)?.logout().await?;
    Ok(done(format!("Instance {id} logged out")))
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
async fn whatsapp_logout(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<Done>> {
    let instance = visible_instance(&state, &caller, &id).await?;
    state.instances.get(&instance.id)?.logout().await?;
    Ok(AppJson(Done {
        success: true,
        message: None,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct QrParams {
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
async fn qr(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
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
    let instance = visible_instance(&state, &caller, &id).await?;
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
async fn whatsapp_qr(
    state: State<AppState>,
    caller: AuthUser,
    id: AppPath<String>,
    params: AppQuery<QrParams>,
) -> ApiResult<Response> {
    qr(state, caller, id, params).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PairCodeRequest {
    /// The phone number to link, in international form.
    #[schema(example = "79001234567")]
    phone: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct PairCode {
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
async fn pair_code(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<PairCodeRequest>,
) -> ApiResult<AppJson<PairCode>> {
    let phone = normalize_phone(&body.phone).map_err(ApiError::validation)?;
    let instance = visible_instance(&state, &caller, &id).await?;
    let code = state.instances.get(&instance.id)?.pair_code(&phone).await?;
    Ok(AppJson(PairCode { code }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct ActivityParams {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// How many entries to skip.
    skip: Option<u64>,
    /// Comma-separated actions to keep, e.g. `connected,disconnected`.
    actions: Option<String>,
    /// Only entries at or after this ISO 8601 date or date-time.
    #[param(example = "2024-01-31")]
    start_date: Option<String>,
    /// Only entries at or before this ISO 8601 date or date-time.
    #[param(example = "2024-01-31T12:00:00Z")]
    end_date: Option<String>,
}

/// Splits a comma-separated list parameter, dropping empty items.
fn csv(value: Option<&str>) -> Vec<String> {
    value
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// One entry of an instance's activity log.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct LogView {
    id: String,
    instance_id: String,
    /// What happened: `created`, `connected`, `disconnected`, `updated`, ...
    action: String,
    /// Depends on the action.
    details: Value,
    #[schema(format = DateTime)]
    created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct ActivityLog {
    /// Newest first.
    logs: Vec<LogView>,
    pagination: Pagination,
}

/// The instance's activity log, newest first.
#[utoipa::path(
    get,
    path = "/api/instances/{instanceId}/activity",
    tag = "instances",
    params(("instanceId" = String, Path, description = "The instance's id"), ActivityParams),
    responses(
        (status = 200, description = "A page of the log", body = ActivityLog),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 403, description = OPERATOR, body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
    )
)]
async fn activity(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
    AppQuery(p): AppQuery<ActivityParams>,
) -> ApiResult<AppJson<ActivityLog>> {
    let DateRangePage {
        limit,
        skip,
        start,
        end,
    } = DateRangePage::parse(
        p.limit,
        p.skip,
        p.start_date.as_deref(),
        p.end_date.as_deref(),
        100,
    )?;
    let instance = visible_instance(&state, &caller, &id).await?;
    let query = ActivityQuery {
        limit,
        skip,
        actions: csv(p.actions.as_deref()),
        start,
        end,
    };
    let page = state.storage.list_activity(&instance.id, &query).await?;
    let logs = page
        .items
        .into_iter()
        .map(|e| LogView {
            id: e.id,
            instance_id: e.instance_id,
            action: e.action,
            details: e.details,
            created_at: iso(e.created_at),
        })
        .collect();
    Ok(AppJson(ActivityLog {
        logs,
        pagination: Pagination::new(page.total, limit, skip),
    }))
}

/// An event as `/events`, the SSE stream and the webhooks show it.
#[derive(Debug, Serialize, ToSchema)]
struct EventView<'a> {
    /// `connected`, `message_received`, `message_status`, `webhook_test`, ...
    #[serde(rename = "type")]
    kind: &'static str,
    #[schema(format = DateTime)]
    timestamp: String,
    /// Depends on the type.
    #[schema(value_type = serde_json::Value)]
    data: EventData<'a>,
}

impl<'a> EventView<'a> {
    fn of(e: &'a InstanceEvent) -> Self {
        EventView {
            kind: e.kind().as_str(),
            timestamp: e.wire_timestamp(),
            data: e.data(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventParams {
    /// Only events after this ISO 8601 date or date-time.
    #[param(example = "2024-01-31T12:00:00Z")]
    since: Option<String>,
    /// How many events, 1 to 1000 (default 20).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Comma-separated event types to keep.
    types: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct EventList<'a> {
    /// Oldest first.
    events: Vec<EventView<'a>>,
    /// The timestamp of the last event (or `since`): the next `since`.
    #[schema(format = DateTime)]
    latest_timestamp: Option<String>,
    count: usize,
    has_more: bool,
}

/// The instance's stored events after `since`, oldest first (polling; see also the stream).
#[utoipa::path(
    get,
    path = "/api/instances/{instanceId}/events",
    tag = "instances",
    params(("instanceId" = String, Path, description = "The instance's id"), EventParams),
    responses(
        (status = 200, description = "The events", body = EventList),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 403, description = OPERATOR, body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
    )
)]
async fn events(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
    AppQuery(p): AppQuery<EventParams>,
) -> ApiResult<Response> {
    let limit = page_limit(p.limit, 20)?;
    let since = p
        .since
        .as_deref()
        .map(|v| parse_date_param("since", v))
        .transpose()?;
    let instance = visible_instance(&state, &caller, &id).await?;
    let query = EventQuery {
        since,
        after_id: None,
        types: csv(p.types.as_deref()),
        limit,
    };
    let (found, has_more) = state.storage.list_events(&instance.id, &query).await?;
    let latest = found
        .last()
        .map(|e| iso(e.timestamp))
        .or_else(|| since.map(iso));
    let events: Vec<EventView> = found.iter().map(EventView::of).collect();
    Ok(AppJson(EventList {
        count: events.len(),
        events,
        latest_timestamp: latest,
        has_more,
    })
    .into_response())
}

/// How many stored events one resume step reads.
const SSE_BATCH: u32 = 200;
/// Events buffered per SSE client before it is considered too slow and re-reads storage.
const SSE_BUFFER: usize = 64;

/// The instance's events as a live stream (Server-Sent Events).
///
/// Server-Sent Events of one instance: first what was stored after `Last-Event-ID` (if
/// given), then live events. Each event's `id:` is its time-ordered id, so a client that
/// reconnects with `Last-Event-ID` misses nothing.
#[utoipa::path(
    get,
    path = "/api/instances/{instanceId}/events/stream",
    tag = "instances",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id"),
    ),
    responses(
        (status = 200, description = "An endless stream: each `data:` is an event as `/events` shows it (JSON), each `id:` its id", content_type = "text/event-stream", body = String),
        (status = 403, description = OPERATOR, body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
    )
)]
async fn event_stream(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let instance = visible_instance(&state, &caller, &id).await?;
    let mut cursor = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .filter(|s| !s.is_empty() && s.len() <= 64);
    // Subscribe before reading the backlog so nothing published in between is missed.
    let mut live = state.events.subscribe(&instance.id);
    let storage = state.storage.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(SSE_BUFFER);
    tokio::spawn(async move {
        let send = |e: &InstanceEvent| {
            Event::default()
                .id(e.id.clone())
                .data(serde_json::to_string(&e.element()).unwrap_or_default())
        };
        // Replays stored events after the cursor; false when the client went away.
        let replay = async |cursor: &mut Option<String>,
                            tx: &tokio::sync::mpsc::Sender<Result<Event, Infallible>>|
               -> bool {
            let Some(after) = cursor.clone() else {
                return true;
            };
            let mut after = after;
            loop {
                let q = EventQuery {
                    after_id: Some(after.clone()),
                    limit: SSE_BATCH,
                    ..Default::default()
                };
                let Ok((batch, more)) = storage.list_events(&instance.id, &q).await else {
                    return false;
                };
                for e in &batch {
                    if tx.send(Ok(send(e))).await.is_err() {
                        return false;
                    }
                    after = e.id.clone();
                }
                *cursor = Some(after.clone());
                if !more {
                    return true;
                }
            }
        };
        if !replay(&mut cursor, &tx).await {
            return;
        }
        loop {
            match live.recv().await {
                Ok(e) => {
                    if cursor.as_ref().is_some_and(|c| e.id <= *c) {
                        continue;
                    }
                    cursor = Some(e.id.clone());
                    if tx.send(Ok(send(&e))).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow for the live channel: catch up from storage.
                    if cursor.is_none() {
                        cursor = Some(String::new());
                    }
                    if !replay(&mut cursor, &tx).await {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
