//! Creating, listing, reading, updating and deleting instances. The rules live in the
//! use cases ([`crate::gateway::instances`]); this file maps the API's shapes to them.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wagate_actors::domain::{
    EngineKind, Instance, InstanceStatus, LimitPeriod, Limits, WebhookOrdering,
};

use super::{ConnectionStatus, Done, OPERATOR, connection, done};
use crate::gateway::instances::{self as cases, InstancePatch, NewInstance};
use crate::http::access::{InstanceManager, VisibleInstance};
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::AppJson;
use crate::http::iso;
use crate::http::openapi::NO_INSTANCE;
use crate::http::state::AppState;

/// Which events the webhook receives, and how deliveries are retried.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct WebhookSettingsView {
    instance_id: String,
    notify_received: bool,
    notify_sent: bool,
    notify_delivery: bool,
    notify_read: bool,
    notify_presence: bool,
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
pub(super) struct InstanceView {
    id: String,
    name: String,
    description: Option<String>,
    user_id: String,
    engine: EngineKind,
    status: InstanceStatus,
    phone: Option<String>,
    webhook_url: Option<String>,
    webhook_enabled: bool,
    /// Delivery is paused (by `POST …/webhook/pause`, or automatically after
    /// `WEBHOOK_AUTO_PAUSE_MS` of failures): events are queued, not sent, until a resume.
    webhook_paused: bool,
    webhook_ordering: WebhookOrdering,
    /// Incoming calls are rejected (`call_received` says so).
    reject_calls: bool,
    /// Sent to a caller whose call was rejected.
    reject_calls_message: Option<String>,
    /// Outbound messages per minute when sends are paced; null: sent at once.
    send_rate: Option<u32>,
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
            notify_presence: i.webhook.notify_presence,
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
            webhook_paused: i.webhook.paused,
            webhook_ordering: i.webhook.ordering,
            reject_calls: i.webhook.reject_calls,
            reject_calls_message: i.webhook.reject_calls_message.clone(),
            send_rate: i.webhook.send_rate,
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
pub(super) struct CreateInstance {
    /// 1 to 200 characters, not blank.
    #[schema(
        example = "Support line",
        min_length = 1,
        max_length = 200,
        pattern = r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    name: String,
    /// At most 2000 characters.
    #[schema(max_length = 2000)]
    description: Option<String>,
    /// The server's `WA_ENGINE` when omitted.
    engine: Option<EngineKind>,
    /// An http(s) URL receiving the events (not on a private network unless allowed).
    #[schema(schema_with = crate::http::openapi::webhook_url_schema)]
    webhook_url: Option<String>,
    /// On by default when a webhookUrl is given.
    webhook_enabled: Option<bool>,
    notify_received: Option<bool>,
    notify_sent: Option<bool>,
    notify_delivery: Option<bool>,
    notify_read: Option<bool>,
    /// `presence_update` events (contacts online, typing); off by default.
    notify_presence: Option<bool>,
    /// Reject incoming calls (off by default); `call_received` reports every call.
    reject_calls: Option<bool>,
    /// Sent to a caller whose call was rejected (at most 4096 characters).
    #[schema(max_length = 4096)]
    reject_calls_message: Option<String>,
    /// Paces outbound messages to this many a minute, 1 to 600, with jitter: sends
    /// then answer 202 `pending` and wait in the instance's durable queue, in order;
    /// 0 removes the pace.
    #[schema(maximum = 600)]
    send_rate: Option<u32>,
    /// At most 20.
    #[schema(maximum = 20)]
    max_retries: Option<u32>,
    /// Milliseconds between retries, 100 to 3,600,000.
    #[schema(minimum = 100, maximum = 3600000)]
    retry_interval: Option<u64>,
    /// The secret signing the deliveries (`X-Webhook-Signature`).
    webhook_secret: Option<String>,
    /// Extra headers sent with every delivery (at most 20).
    #[schema(schema_with = crate::http::openapi::headers_schema)]
    headers: Option<BTreeMap<String, String>>,
    /// `strict` (default): webhooks in the order of the events, a failing delivery
    /// holding back the later ones until it succeeds or its retries run out;
    /// `unordered`: a failing delivery waits for its retry while later ones go out.
    webhook_ordering: Option<WebhookOrdering>,
    limits: Option<LimitsInput>,
}

/// The `webhookSettings` object of `PUT /api/instances/{instanceId}`; absent fields stay.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SettingsPatch {
    notify_received: Option<bool>,
    notify_sent: Option<bool>,
    notify_delivery: Option<bool>,
    notify_read: Option<bool>,
    /// `presence_update` events (contacts online, typing); off by default.
    notify_presence: Option<bool>,
    /// Reject incoming calls; `call_received` reports every call.
    reject_calls: Option<bool>,
    /// Sent to a caller whose call was rejected (at most 4096 characters); an empty
    /// string removes it.
    #[schema(max_length = 4096)]
    reject_calls_message: Option<String>,
    /// Paces outbound messages to this many a minute, 1 to 600, with jitter: sends
    /// then answer 202 `pending` and wait in the instance's durable queue, in order;
    /// 0 removes the pace.
    #[schema(maximum = 600)]
    send_rate: Option<u32>,
    /// At most 20.
    #[schema(maximum = 20)]
    max_retries: Option<u32>,
    /// Milliseconds between retries, 100 to 3,600,000.
    #[schema(minimum = 100, maximum = 3600000)]
    retry_interval: Option<u64>,
    /// The signing secret; an empty string removes it.
    secret: Option<String>,
    /// With a new `secret`: seconds (at most 30 days) during which the replaced secret
    /// still signs every delivery beside it — `X-Webhook-Signature: <new>,<old>` — so
    /// receivers rotate without downtime.
    #[schema(maximum = 2592000)]
    secret_grace_period: Option<u64>,
    /// Extra headers sent with every delivery (at most 20); replaces the previous set.
    #[schema(schema_with = crate::http::openapi::headers_schema)]
    headers: Option<BTreeMap<String, String>>,
}

impl From<SettingsPatch> for cases::SettingsPatch {
    fn from(p: SettingsPatch) -> Self {
        cases::SettingsPatch {
            notify_received: p.notify_received,
            notify_sent: p.notify_sent,
            notify_delivery: p.notify_delivery,
            notify_read: p.notify_read,
            notify_presence: p.notify_presence,
            reject_calls: p.reject_calls,
            reject_calls_message: p.reject_calls_message,
            send_rate: p.send_rate,
            max_retries: p.max_retries,
            retry_interval_ms: p.retry_interval,
            secret: p.secret,
            secret_grace_secs: p.secret_grace_period,
            headers: p.headers,
            ordering: None,
        }
    }
}

impl From<LimitsInput> for Limits {
    fn from(l: LimitsInput) -> Self {
        Limits {
            max_messages_sent: l.max_messages_sent,
            max_api_calls: l.max_api_calls,
            period: l.period,
        }
    }
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
pub(super) async fn create(
    State(state): State<AppState>,
    InstanceManager(caller): InstanceManager,
    AppJson(body): AppJson<CreateInstance>,
) -> ApiResult<(StatusCode, AppJson<InstanceView>)> {
    let instance = state
        .instance_admin
        .create(NewInstance {
            owner_id: caller.0.id,
            name: body.name,
            description: body.description,
            engine: body.engine,
            webhook_url: body.webhook_url,
            webhook_enabled: body.webhook_enabled,
            settings: cases::SettingsPatch {
                notify_received: body.notify_received,
                notify_sent: body.notify_sent,
                notify_delivery: body.notify_delivery,
                notify_read: body.notify_read,
                notify_presence: body.notify_presence,
                reject_calls: body.reject_calls,
                reject_calls_message: body.reject_calls_message,
                send_rate: body.send_rate,
                max_retries: body.max_retries,
                retry_interval_ms: body.retry_interval,
                secret: body.webhook_secret,
                secret_grace_secs: None,
                headers: body.headers,
                ordering: body.webhook_ordering,
            },
            limits: body.limits.map(Limits::from),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        AppJson(InstanceView::new(&state, instance, None, false)),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct InstanceList {
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
pub(super) async fn list(
    State(state): State<AppState>,
    InstanceManager(caller): InstanceManager,
) -> ApiResult<AppJson<InstanceList>> {
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
pub(super) async fn read(
    State(state): State<AppState>,
    VisibleInstance { caller, instance }: VisibleInstance,
) -> ApiResult<AppJson<InstanceView>> {
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
pub(super) struct UpdateInstance {
    /// 1 to 200 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    name: Option<String>,
    /// At most 2000 characters.
    #[schema(max_length = 2000)]
    description: Option<String>,
    /// An http(s) URL (not on a private network unless allowed); an empty string removes
    /// it.
    #[schema(schema_with = crate::http::openapi::webhook_url_schema)]
    webhook_url: Option<String>,
    webhook_enabled: Option<bool>,
    webhook_settings: Option<SettingsPatch>,
    notify_received: Option<bool>,
    notify_sent: Option<bool>,
    notify_delivery: Option<bool>,
    notify_read: Option<bool>,
    /// `presence_update` events (contacts online, typing); off by default.
    notify_presence: Option<bool>,
    /// Reject incoming calls; `call_received` reports every call.
    reject_calls: Option<bool>,
    /// Sent to a caller whose call was rejected (at most 4096 characters); an empty
    /// string removes it.
    #[schema(max_length = 4096)]
    reject_calls_message: Option<String>,
    /// Paces outbound messages to this many a minute, 1 to 600, with jitter: sends
    /// then answer 202 `pending` and wait in the instance's durable queue, in order;
    /// 0 removes the pace.
    #[schema(maximum = 600)]
    send_rate: Option<u32>,
    /// At most 20.
    #[schema(maximum = 20)]
    max_retries: Option<u32>,
    /// Milliseconds between retries, 100 to 3,600,000.
    #[schema(minimum = 100, maximum = 3600000)]
    retry_interval: Option<u64>,
    /// The signing secret (`secret` of `webhookSettings`); an empty string removes it.
    webhook_secret: Option<String>,
    /// `secretGracePeriod` of `webhookSettings`: with a new `webhookSecret`, seconds (at
    /// most 30 days) during which the replaced secret still signs beside it.
    #[schema(maximum = 2592000)]
    webhook_secret_grace_period: Option<u64>,
    /// Extra headers sent with every delivery (at most 20); replaces the previous set.
    #[schema(schema_with = crate::http::openapi::headers_schema)]
    headers: Option<BTreeMap<String, String>>,
    /// `strict` or `unordered` (see the creation request).
    webhook_ordering: Option<WebhookOrdering>,
    limits: Option<LimitsInput>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct UpdatedInstance {
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
pub(super) async fn update(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    AppJson(body): AppJson<UpdateInstance>,
) -> ApiResult<AppJson<UpdatedInstance>> {
    let flat = cases::SettingsPatch {
        notify_received: body.notify_received,
        notify_sent: body.notify_sent,
        notify_delivery: body.notify_delivery,
        notify_read: body.notify_read,
        notify_presence: body.notify_presence,
        reject_calls: body.reject_calls,
        reject_calls_message: body.reject_calls_message,
        send_rate: body.send_rate,
        max_retries: body.max_retries,
        retry_interval_ms: body.retry_interval,
        secret: body.webhook_secret,
        secret_grace_secs: body.webhook_secret_grace_period,
        headers: body.headers,
        ordering: body.webhook_ordering,
    };
    let webhook_settings = match body.webhook_settings.map(cases::SettingsPatch::from) {
        Some(nested) => Some(flat.overlaid(nested)),
        None => (!flat.is_empty()).then_some(flat),
    };
    let instance = state
        .instance_admin
        .update(
            instance,
            InstancePatch {
                name: body.name,
                description: body.description,
                webhook_url: body.webhook_url,
                webhook_enabled: body.webhook_enabled,
                webhook_settings,
                limits: body.limits.map(Limits::from),
            },
        )
        .await?;
    Ok(AppJson(UpdatedInstance {
        id: instance.id,
        name: instance.name,
        description: instance.description,
        webhook_url: instance.webhook_url,
        webhook_enabled: instance.webhook_enabled,
        updated_at: iso(instance.updated_at),
    }))
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
pub(super) async fn remove(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
) -> ApiResult<AppJson<Done>> {
    state.instance_admin.delete(&instance).await?;
    Ok(done(format!(
        "Instance {} deleted successfully",
        instance.id
    )))
}
