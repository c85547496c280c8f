//! An instance's webhook deliveries, its dead letters (failed deliveries) with retry and
//! replay, pausing and resuming its delivery, and a test delivery.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::domain::event::WebhookTest;
use wagate_actors::domain::{Event, InstanceEvent, WebhookOrdering};
use wagate_actors::webhook_queue::{DeadLetter, DeliveryRecord, DeliveryStatus, ReplayScope};

use crate::http::access::VisibleInstance;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppPath, AppQuery};
use crate::http::state::AppState;
use crate::http::{MAX_PAGE_LIMIT, PageParams, Pagination, iso, parse_date_param};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(deliveries))
        .routes(routes!(retry))
        .routes(routes!(replay))
        .routes(routes!(status))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(test))
}

/// One delivery attempt of one event.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct DeliveryView {
    event_id: String,
    /// The event type, e.g. `message_received`.
    event: String,
    /// 1 for the first attempt.
    attempt: u32,
    status: DeliveryStatus,
    /// The receiver's HTTP status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    http_status: Option<u16>,
    /// Why the attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    duration_ms: u64,
    #[schema(format = DateTime)]
    created_at: String,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(r: DeliveryRecord) -> Self {
        DeliveryView {
            event_id: r.event_id,
            event: r.event,
            attempt: r.attempt,
            status: r.status,
            http_status: r.http_status,
            error: r.error,
            duration_ms: r.duration_ms,
            created_at: iso(r.created_at),
        }
    }
}

impl From<DeadLetter> for DeliveryView {
    fn from(d: DeadLetter) -> Self {
        DeliveryView {
            event_id: d.job.event_id,
            event: d.job.event,
            attempt: d.job.attempts,
            status: DeliveryStatus::Failed,
            http_status: d.http_status,
            error: d.error,
            duration_ms: 0,
            created_at: iso(d.failed_at),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeliveryParams {
    /// Page size, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// How many items to skip.
    skip: Option<u64>,
    /// `failed`: the dead letters — deliveries given up, with their last attempt, until
    /// retried or replayed. `delivered` or `retrying`: the attempts with that outcome.
    status: Option<DeliveryStatus>,
}

#[derive(Debug, Serialize, ToSchema)]
struct DeliveryList {
    deliveries: Vec<DeliveryView>,
    pagination: Pagination,
}

/// The instance's recent webhook delivery attempts, newest first; with `status=failed`,
/// its failed deliveries (dead letters), newest first.
#[utoipa::path(
    get,
    path = "/api/instances/{instanceId}/webhook/deliveries",
    tag = "webhooks",
    params(("instanceId" = String, Path, description = "The instance's id"), DeliveryParams),
    responses(
        (status = 200, description = "A page of attempts (default limit 50)", body = DeliveryList),
        (status = 404, description = "No such instance visible to the caller", body = ErrorBody),
    )
)]
async fn deliveries(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    AppQuery(params): AppQuery<DeliveryParams>,
) -> ApiResult<AppJson<DeliveryList>> {
    let page = PageParams {
        limit: params.limit,
        skip: params.skip,
    };
    let (limit, skip) = page.resolve(50)?;
    let (deliveries, total): (Vec<DeliveryView>, u64) = match params.status {
        None => {
            let found = state.webhooks.deliveries(&instance.id, limit, skip).await?;
            let views = found.items.into_iter().map(DeliveryView::from).collect();
            (views, found.total)
        }
        Some(DeliveryStatus::Failed) => {
            let dead = state.webhooks.dead_letters(&instance.id).await?;
            let total = dead.len() as u64;
            let views = dead
                .into_iter()
                .rev()
                .skip(usize::try_from(skip).unwrap_or(usize::MAX))
                .take(limit as usize)
                .map(DeliveryView::from)
                .collect();
            (views, total)
        }
        Some(status) => {
            // Records are bounded (the newest 1000 per instance): filtered in memory.
            let all = state
                .webhooks
                .deliveries(&instance.id, MAX_PAGE_LIMIT, 0)
                .await?;
            let kept: Vec<DeliveryRecord> = all
                .items
                .into_iter()
                .filter(|r| r.status == status)
                .collect();
            let total = kept.len() as u64;
            let views = kept
                .into_iter()
                .skip(usize::try_from(skip).unwrap_or(usize::MAX))
                .take(limit as usize)
                .map(DeliveryView::from)
                .collect();
            (views, total)
        }
    };
    Ok(AppJson(DeliveryList {
        deliveries,
        pagination: Pagination::new(total, limit, skip),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Requeued {
    success: bool,
    /// How many deliveries were queued again.
    queued: u64,
}

/// Sends a failed delivery again: its dead letter goes back to the end of the instance's
/// queue, with the same `X-Webhook-Id` and the next attempt number, signed with the
/// instance's secret of the moment.
#[utoipa::path(
    post,
    path = "/api/instances/{instanceId}/webhook/deliveries/{eventId}/retry",
    tag = "webhooks",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("eventId" = String, Path, description = "The event id of the failed delivery (`X-Webhook-Id`)"),
    ),
    responses(
        (status = 200, description = "Queued again", body = Requeued),
        (status = 404, description = "No such instance visible to the caller, or no failed delivery of this event", body = ErrorBody),
    )
)]
async fn retry(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    AppPath((_, event_id)): AppPath<(String, String)>,
) -> ApiResult<AppJson<Requeued>> {
    state.webhooks.retry(&instance.id, &event_id).await?;
    Ok(AppJson(Requeued {
        success: true,
        queued: 1,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    /// Only deliveries of events at or after this date-time.
    #[schema(format = DateTime)]
    since: Option<String>,
    /// Only deliveries of events at or before this date-time; not before `since` (400
    /// otherwise).
    #[schema(format = DateTime)]
    until: Option<String>,
    /// `failed`: the dead letters queued in the range; `all`: every stored event in the
    /// range that the instance's settings want, delivered before or not.
    #[schema(schema_with = replay_scope_schema)]
    status: String,
}

fn replay_scope_schema() -> utoipa::openapi::schema::Object {
    crate::http::openapi::string_enum(&["failed", "all"])
}

/// Queues deliveries again, in the order of their events: the failed ones, or every
/// event of a time range. Each is signed afresh, with the instance's secret of the
/// moment, and keeps its `X-Webhook-Id`.
#[utoipa::path(
    post,
    path = "/api/instances/{instanceId}/webhook/replay",
    tag = "webhooks",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = ReplayRequest,
    responses(
        (status = 200, description = "Queued again", body = Requeued),
        (status = 400, description = "A malformed date or status, or since after until (`validation_error`)", body = ErrorBody),
        (status = 404, description = "No such instance visible to the caller", body = ErrorBody),
    )
)]
async fn replay(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    AppJson(body): AppJson<ReplayRequest>,
) -> ApiResult<AppJson<Requeued>> {
    let scope = match body.status.as_str() {
        "failed" => ReplayScope::Failed,
        "all" => ReplayScope::All,
        other => {
            return Err(ApiError::validation(format!(
                "status must be failed or all, not '{other}'"
            )));
        }
    };
    let date = |name: &str, value: Option<&str>| {
        value
            .map(|v| parse_date_param(name, v).map_err(|e| ApiError::validation(e.message)))
            .transpose()
    };
    let since = date("since", body.since.as_deref())?;
    let until = date("until", body.until.as_deref())?;
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(ApiError::validation("since must not be after until"));
    }
    let queued = state
        .webhooks
        .replay(&instance.id, scope, since, until)
        .await?;
    Ok(AppJson(Requeued {
        success: true,
        queued,
    }))
}

/// An instance's webhook delivery at a glance.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct WebhookStatus {
    /// Delivery is paused (the instance's `webhookPaused`).
    paused: bool,
    ordering: WebhookOrdering,
    /// Deliveries waiting to go out.
    pending: u64,
    /// Failed deliveries (dead letters), until retried or replayed.
    failed: u64,
    /// When the delivery at the head of the queue was first queued.
    #[schema(format = DateTime)]
    oldest_pending_at: Option<String>,
}

/// The instance's webhook backlog: pending and failed deliveries, and whether delivery
/// is paused.
#[utoipa::path(
    get,
    path = "/api/instances/{instanceId}/webhook/status",
    tag = "webhooks",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "The backlog", body = WebhookStatus),
        (status = 404, description = "No such instance visible to the caller", body = ErrorBody),
    )
)]
async fn status(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
) -> ApiResult<AppJson<WebhookStatus>> {
    let backlog = state
        .webhooks
        .backlog()
        .await?
        .into_iter()
        .find(|b| b.instance_id == instance.id);
    Ok(AppJson(WebhookStatus {
        paused: instance.webhook.paused,
        ordering: instance.webhook.ordering,
        pending: backlog.as_ref().map_or(0, |b| b.pending),
        failed: backlog.as_ref().map_or(0, |b| b.failed),
        oldest_pending_at: backlog.and_then(|b| b.oldest_pending).map(iso),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
struct PauseState {
    /// Whether delivery is paused now (the instance's `webhookPaused`).
    paused: bool,
}

/// Pauses the instance's webhook delivery. Events keep being stored and queued durably;
/// nothing is sent (retries included) until a resume. Pausing a paused instance changes
/// nothing.
#[utoipa::path(
    post,
    path = "/api/instances/{instanceId}/webhook/pause",
    tag = "webhooks",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "Paused", body = PauseState),
        (status = 404, description = "No such instance visible to the caller", body = ErrorBody),
    )
)]
async fn pause(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
) -> ApiResult<AppJson<PauseState>> {
    let paused = state.webhooks.set_paused(&instance.id, true).await?;
    Ok(AppJson(PauseState { paused }))
}

/// Resumes the instance's webhook delivery: the backlog queued meanwhile goes out in
/// order. Also ends an automatic pause; failures before the resume no longer count
/// towards the next one.
#[utoipa::path(
    post,
    path = "/api/instances/{instanceId}/webhook/resume",
    tag = "webhooks",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "Delivering", body = PauseState),
        (status = 404, description = "No such instance visible to the caller", body = ErrorBody),
    )
)]
async fn resume(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
) -> ApiResult<AppJson<PauseState>> {
    let paused = state.webhooks.set_paused(&instance.id, false).await?;
    Ok(AppJson(PauseState { paused }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct TestQueued {
    success: bool,
    /// The id of the queued `webhook_test` event.
    event_id: String,
    message: &'static str,
}

/// Sends a test delivery to the instance's webhook.
///
/// Queues a `webhook_test` event now (also while webhooks are disabled, so an endpoint
/// can be checked before it is switched on).
#[utoipa::path(
    post,
    path = "/api/instances/{instanceId}/webhook/test",
    tag = "webhooks",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "Queued", body = TestQueued),
        (status = 404, description = "No such instance visible to the caller", body = ErrorBody),
        (status = 409, description = "The instance has no webhookUrl (`webhook_not_configured`)", body = ErrorBody),
    )
)]
async fn test(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
) -> ApiResult<AppJson<TestQueued>> {
    let Some(url) = instance.webhook_url.clone().filter(|u| !u.is_empty()) else {
        return Err(ApiError::conflict(
            "webhook_not_configured",
            "set a webhookUrl on the instance before testing it",
        ));
    };
    let event = InstanceEvent::new(
        &instance.id,
        Event::WebhookTest(WebhookTest {
            message: "This is a test webhook from wagate".into(),
            webhook_url: url,
        }),
    );
    let event_id = event.id.clone();
    state.events.publish(event).await?;
    Ok(AppJson(TestQueued {
        success: true,
        event_id,
        message: "Test webhook queued",
    }))
}
