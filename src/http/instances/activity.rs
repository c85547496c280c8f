//! What happened to an instance: its activity log, its stored events (polling) and the
//! live event stream (Server-Sent Events, resumable with `Last-Event-ID`).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};
use wagate_actors::domain::event::EventData;
use wagate_actors::domain::{ActivityQuery, EventQuery, InstanceEvent};
use wagate_actors::store::EventsAfter;

use super::OPERATOR;
use crate::http::access::VisibleInstance;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppQuery};
use crate::http::openapi::NO_INSTANCE;
use crate::http::state::AppState;
use crate::http::{DateRangePage, Pagination, iso, page_limit, parse_date_param};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(super) struct ActivityParams {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// How many entries to skip.
    skip: Option<u64>,
    /// Comma-separated actions to keep, e.g. `connected,disconnected`.
    actions: Option<String>,
    /// Only entries at or after this ISO 8601 date or date-time.
    #[param(format = DateTime, example = "2024-01-31T00:00:00Z")]
    start_date: Option<String>,
    /// Only entries at or before this ISO 8601 date or date-time; not before
    /// `startDate` (400 otherwise).
    #[param(format = DateTime, example = "2024-01-31T12:00:00Z")]
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
pub(super) struct ActivityLog {
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
pub(super) async fn activity(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
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
    #[schema(value_type = Value)]
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
pub(super) struct EventParams {
    /// Only events after this ISO 8601 date or date-time.
    #[param(example = "2024-01-31T12:00:00Z")]
    #[param(format = DateTime)]
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
pub(super) async fn events(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    AppQuery(p): AppQuery<EventParams>,
) -> ApiResult<Response> {
    let limit = page_limit(p.limit, 20)?;
    let since = p
        .since
        .as_deref()
        .map(|v| parse_date_param("since", v))
        .transpose()?;
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
pub(super) async fn event_stream(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
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
            let mut stored = EventsAfter::new(storage.as_ref(), &instance.id, &after, SSE_BATCH);
            loop {
                let Ok(batch) = stored.next_batch().await else {
                    return false;
                };
                if batch.is_empty() {
                    return true;
                }
                for e in &batch {
                    if tx.send(Ok(send(e))).await.is_err() {
                        return false;
                    }
                    *cursor = Some(e.id.clone());
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
