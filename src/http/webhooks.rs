//! An instance's webhook deliveries and a test delivery.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::domain::event::WebhookTest;
use wagate_actors::domain::{Event, InstanceEvent};
use wagate_actors::webhook_queue::{DeliveryRecord, DeliveryStatus};

use crate::http::access::VisibleInstance;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppQuery};
use crate::http::state::AppState;
use crate::http::{PageParams, Pagination, iso};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(deliveries))
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

#[derive(Debug, Serialize, ToSchema)]
struct DeliveryList {
    deliveries: Vec<DeliveryView>,
    pagination: Pagination,
}

/// The instance's recent webhook delivery attempts, newest first.
#[utoipa::path(
    get,
    path = "/api/instances/{instanceId}/webhook/deliveries",
    tag = "webhooks",
    params(("instanceId" = String, Path, description = "The instance's id"), PageParams),
    responses(
        (status = 200, description = "A page of attempts (default limit 50)", body = DeliveryList),
        (status = 404, description = "No such instance visible to the caller", body = ErrorBody),
    )
)]
async fn deliveries(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    AppQuery(page): AppQuery<PageParams>,
) -> ApiResult<AppJson<DeliveryList>> {
    let (limit, skip) = page.resolve(50)?;
    let found = state.webhooks.deliveries(&instance.id, limit, skip).await?;
    Ok(AppJson(DeliveryList {
        deliveries: found.items.into_iter().map(DeliveryView::from).collect(),
        pagination: Pagination::new(found.total, limit, skip),
    }))
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
