//! The operators' live stream (Server-Sent Events), resumable with `Last-Event-ID`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::desk::{EventId, FeedEntry};

use super::DeskCaller;
use super::chats::{Senders, event_data};
use crate::gateway::waba::Scope;
use crate::http::state::AppState;

/// Events buffered per SSE client; a client that does not read blocks only its own task.
const SSE_BUFFER: usize = 64;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// One client's stream: what it sees, and the last event id it was given.
struct Stream {
    state: AppState,
    scope: Scope,
    senders: Senders,
    tx: mpsc::Sender<Result<Event, Infallible>>,
    last: Option<EventId>,
}

impl Stream {
    /// Sends `entry` unless it is one the client already had (or may not see); false
    /// once the client is gone.
    async fn send(&mut self, entry: &FeedEntry) -> bool {
        if self.last.is_some_and(|last| !entry.id.is_after(&last)) {
            return true;
        }
        self.last = Some(entry.id);
        if !self.scope.sees(entry.event.owner_id()) {
            return true;
        }
        let data = event_data(&self.state, &mut self.senders, &entry.event).await;
        let sse = Event::default()
            .id(entry.id.to_string())
            .data(data.to_string());
        self.tx.send(Ok(sse)).await.is_ok()
    }

    /// Tells the client events were missed and it should reload from the API.
    async fn resync(&mut self, reason: &str) -> bool {
        let data = json!({"type": "resync", "reason": reason});
        self.tx
            .send(Ok(Event::default().data(data.to_string())))
            .await
            .is_ok()
    }
}

/// The caller's chats as a live stream (Server-Sent Events).
///
/// Each event has an `id:` and a `data:` — `{"type": "message"|"status"|"media", "chatId",
/// "message": {...}}` (the message as the chat history shows it after the change; `media`
/// when fetching its file from Meta moved on) or
/// `{"type": "assignment", "chatId", "assignedOperatorId"}`. A client that reconnects
/// with `Last-Event-ID` (browsers' `EventSource` does so by itself) first gets every event
/// it missed, as long as the server still keeps it (the last `WABA_EVENT_RETENTION`
/// events, in memory). When it does not — too old, or the server restarted — the
/// stream starts with `{"type": "resync"}`: reload the chat list and open histories.
#[utoipa::path(
    get,
    path = "/api/waba/operator/events",
    tag = "waba",
    params(("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received: the stream resumes after it")),
    responses(
        (status = 200, description = "An endless stream: each event has an `id` and a `data:` of `{\"type\": \"message\"|\"status\"|\"media\", \"chatId\", \"message\"}`, `{\"type\": \"assignment\", \"chatId\", \"assignedOperatorId\"}` or `{\"type\": \"resync\"}` (JSON)", content_type = "text/event-stream", body = String),
    )
)]
async fn events(
    State(state): State<AppState>,
    desk: DeskCaller,
    headers: HeaderMap,
) -> impl IntoResponse {
    let named = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let last_seen = named.and_then(EventId::parse);
    let subscription = state.waba.subscribe(last_seen);
    // A named id that is not one of ours cannot be resumed either.
    let missed = subscription.missed || (named.is_some() && last_seen.is_none());
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(SSE_BUFFER);
    let mut stream = Stream {
        state,
        scope: desk.scope,
        senders: Senders::default(),
        tx,
        // Where this client is: what it named, else (nothing named, or not resumable)
        // the feed's position now.
        last: Some(match last_seen {
            Some(id) if !missed => id,
            _ => subscription.position,
        }),
    };
    let mut live = subscription.live;
    let backlog = subscription.backlog;
    tokio::spawn(async move {
        if missed
            && !stream
                .resync("the events after Last-Event-ID are no longer kept")
                .await
        {
            return;
        }
        for entry in &backlog {
            if !stream.send(entry).await {
                return;
            }
        }
        loop {
            match live.recv().await {
                Ok(entry) => {
                    if !stream.send(&entry).await {
                        return;
                    }
                }
                // Fell behind the live feed: catch up from what it keeps.
                Err(RecvError::Lagged(skipped)) => {
                    let kept = stream.last.and_then(|l| stream.state.waba.events_since(l));
                    match kept {
                        Some(entries) => {
                            for entry in &entries {
                                if !stream.send(entry).await {
                                    return;
                                }
                            }
                        }
                        None => {
                            tracing::warn!(skipped, "a WABA event stream fell too far behind");
                            if !stream.resync("the stream fell behind").await {
                                return;
                            }
                        }
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
