//! An instance's webhook deliveries and a test delivery.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde_json::{Value, json};
use wagate_actors::domain::InstanceEvent;
use wagate_actors::webhook::DeliveryRecord;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::http::auth::AuthUser;
use crate::http::extract::{AppJson, AppPath, AppQuery};
use crate::http::instances::visible_instance;
use crate::http::{PageParams, Pagination, iso};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/instances/{id}/webhook/deliveries", get(deliveries))
        .route("/api/instances/{id}/webhook/test", post(test))
}

fn record_json(r: DeliveryRecord) -> Value {
    let mut v = json!({
        "eventId": r.event_id,
        "event": r.event,
        "attempt": r.attempt,
        "status": r.status,
        "durationMs": r.duration_ms,
        "createdAt": iso(r.created_at),
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(status) = r.http_status {
            obj.insert("httpStatus".into(), json!(status));
        }
        if let Some(error) = r.error {
            obj.insert("error".into(), json!(error));
        }
    }
    v
}

async fn deliveries(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
    AppQuery(page): AppQuery<PageParams>,
) -> ApiResult<AppJson<Value>> {
    let (limit, skip) = page.resolve(50)?;
    let instance = visible_instance(&state, &caller, &id).await?;
    let found = state.webhooks.deliveries(&instance.id, limit, skip).await?;
    let deliveries: Vec<Value> = found.items.into_iter().map(record_json).collect();
    Ok(AppJson(json!({
        "deliveries": deliveries,
        "pagination": Pagination::new(found.total, limit, skip),
    })))
}

/// Queues a `webhook_test` event now (also while webhooks are disabled, so an endpoint
/// can be checked before it is switched on).
async fn test(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<Value>> {
    let instance = visible_instance(&state, &caller, &id).await?;
    let Some(url) = instance.webhook_url.clone().filter(|u| !u.is_empty()) else {
        return Err(ApiError::conflict(
            "webhook_not_configured",
            "set a webhookUrl on the instance before testing it",
        ));
    };
    let event = InstanceEvent::new(
        &instance.id,
        "webhook_test",
        json!({"message": "This is a test webhook from wagate", "webhookUrl": url}),
    );
    let event_id = event.id.clone();
    state.events.publish(event).await?;
    Ok(AppJson(
        json!({"success": true, "eventId": event_id, "message": "Test webhook queued"}),
    ))
}
