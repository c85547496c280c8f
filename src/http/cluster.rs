//! Cluster mode at the HTTP edge: the node list (`GET /api/cluster/nodes`, admins) and
//! [`route`], the layer that makes any node answer any call.
//!
//! Reads that storage answers (instance records, history, activity, stored events and
//! contacts, deliveries, media downloads) are served by whichever node gets them, and so
//! are live event streams: a media file is kept in the shared database too, and a node
//! that did not store it fetches it from there into its disk cache
//! ([`crate::media::MediaStore`]); every node's feed follows the events all nodes store
//! ([`crate::storage::mongo::feed`]). Calls that need the session (status, send, QR, pair
//! code, logout, reconnect, sandbox controls, changes…) run on the instance's owner:
//! another node forwards them there, once, signed with `CLUSTER_SECRET`
//! ([`crate::cluster`]), and passes the answer back as it comes. While an instance has no
//! live owner (it is moving) they answer 503 `instance_moving` with `Retry-After`. Every
//! `/api/waba` call (the operator desk, Meta's webhook) runs on the node holding the
//! desk's lease ([`DESK_LEASE`]) the same way, 503 `desk_moving` while it has none.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::cluster::{DESK_LEASE, LeaseStore};
use wagate_actors::error::StoreError;

use crate::cluster::{
    Cluster, NODE_HEADER, SERVED_BY_HEADER, SIGNATURE_HEADER, TIME_HEADER, sign, verify,
};
use crate::http::access::AdminOnly;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::AppJson;
use crate::http::iso;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(nodes))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct NodeList {
    /// The node that answered.
    node: String,
    /// Live nodes (heartbeat not expired), by id.
    nodes: Vec<NodeEntry>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct NodeEntry {
    node_id: String,
    /// Where the other nodes reach it.
    url: String,
    /// Its last heartbeat, on the database's clock.
    #[schema(format = DateTime)]
    last_heartbeat: String,
    /// Instances whose unexpired lease it holds.
    instances: u64,
    /// Whether it serves the WABA operator desk (every `/api/waba` call goes there).
    desk: bool,
}

/// The live nodes of the cluster (admins only).
#[utoipa::path(
    get,
    path = "/api/cluster/nodes",
    tag = "cluster",
    responses(
        (status = 200, description = "The live nodes", body = NodeList),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "Not in cluster mode (`not_clustered`)", body = ErrorBody),
    )
)]
async fn nodes(State(state): State<AppState>, _admin: AdminOnly) -> ApiResult<AppJson<NodeList>> {
    let cluster = clustered(&state)?;
    let view = cluster.store.view().await?;
    let nodes = view
        .nodes
        .iter()
        .map(|node| NodeEntry {
            node_id: node.node_id.clone(),
            url: node.url.clone(),
            last_heartbeat: DateTime::<Utc>::from_timestamp_millis(node.last_heartbeat_ms)
                .map(iso)
                .unwrap_or_default(),
            instances: view
                .leases
                .iter()
                .filter(|l| {
                    l.owner == node.node_id
                        && l.expires_at_ms > view.now_ms
                        && l.instance_id != DESK_LEASE
                })
                .count() as u64,
            desk: view
                .valid_lease(DESK_LEASE)
                .is_some_and(|l| l.owner == node.node_id),
        })
        .collect();
    Ok(AppJson(NodeList {
        node: cluster.config.node_id.clone(),
        nodes,
    }))
}

fn clustered(state: &AppState) -> Result<&Cluster, ApiError> {
    state.cluster.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_clustered",
            "this server is not in cluster mode",
        )
    })
}

/// The instance a call needs the session of, if it is one: `None` for every call that
/// storage answers alone.
pub fn session_call<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let read = method == Method::GET || method == Method::HEAD;
    match parts.as_slice() {
        ["", "api", "instances", id] => (!read).then_some(*id),
        ["", "api", "instances", id, rest @ ..] => {
            let stored = matches!(
                rest,
                ["activity"]
                    | ["events"]
                    | ["events", "stream"]
                    | ["chats"]
                    | ["chats", _, "messages"]
                    | ["messages", _, "media"]
                    | ["contacts", "db"]
                    | ["webhook", "deliveries"]
            );
            (!(read && stored)).then_some(*id)
        }
        ["", "api", "whatsapp", id, rest @ ..] if !rest.is_empty() => {
            (!(read && matches!(rest, ["contacts", "db"]))).then_some(*id)
        }
        ["", "api", "sandbox", "instances", id, _, ..] => Some(*id),
        // The operator desk runs on the node holding its lease.
        ["", "api", "waba", _, ..] => Some(DESK_LEASE),
        _ => None,
    }
}

fn moving(id: &str) -> Response {
    if id == DESK_LEASE {
        return ApiError {
            code: "desk_moving",
            ..ApiError::unavailable(
                "the operator desk is moving to another node; retry shortly".to_owned(),
            )
        }
        .into_response();
    }
    ApiError {
        code: "instance_moving",
        ..ApiError::unavailable(format!(
            "instance {id} is moving to another node; retry shortly"
        ))
    }
    .into_response()
}

/// Runs a call here, forwards it to the instance's owner, or answers 503 while the
/// instance has none. Outside cluster mode it does nothing. Every answer in cluster mode
/// carries the handling node's id ([`SERVED_BY_HEADER`]).
pub async fn route(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return next.run(request).await;
    };
    let me = cluster.config.node_id.clone();
    let id = session_call(request.method(), request.uri().path()).map(str::to_owned);
    let signed = request.headers().contains_key(SIGNATURE_HEADER);
    let response = match id {
        None if !signed => next.run(request).await,
        None => match check_signature(&cluster, request, state.config.max_upload_bytes).await {
            Ok(request) => next.run(request).await,
            Err(response) => response,
        },
        Some(id) if signed => {
            match check_signature(&cluster, request, state.config.max_upload_bytes).await {
                // One hop: a forwarded call runs here or nowhere.
                Ok(request) if runs_here(&state, &cluster, &id) => next.run(request).await,
                Ok(_) => moving(&id),
                Err(response) => response,
            }
        }
        Some(id) if runs_here(&state, &cluster, &id) => next.run(request).await,
        Some(id) => match owner_of(&cluster, &id).await {
            Ok(Some((owner, url))) if owner != me => {
                let answer = forward(&cluster, &url, request, state.config.max_upload_bytes).await;
                if answer.status() == StatusCode::SERVICE_UNAVAILABLE {
                    // Dying, or no longer the owner: look it up again next time.
                    cluster.owners.forget(&id);
                }
                answer
            }
            // This node holds the lease but has not started the actor yet, or is
            // stopping it.
            Ok(Some(_)) => moving(&id),
            // Nobody serves the desk: a node takes its lease within a scan.
            Ok(None) if id == DESK_LEASE => moving(&id),
            Ok(None) => match state.storage.instance_by_id(&id).await {
                // Unknown here: the handler answers 404 (or 401/403) as on one server.
                Ok(None) => next.run(request).await,
                Ok(Some(_)) => moving(&id),
                Err(err) => ApiError::from(err).into_response(),
            },
            Err(err) => ApiError::from(err).into_response(),
        },
    };
    let mut response = response;
    if !response.headers().contains_key(SERVED_BY_HEADER)
        && let Ok(value) = HeaderValue::from_str(&me)
    {
        response
            .headers_mut()
            .insert(HeaderName::from_static(SERVED_BY_HEADER), value);
    }
    response
}

/// The owner of `id` and its URL: cached for a moment, else read from the database.
async fn owner_of(cluster: &Cluster, id: &str) -> Result<Option<(String, String)>, StoreError> {
    if let Some(cached) = cluster.owners.get(id) {
        return Ok(Some(cached));
    }
    let found = cluster.store.owner_of(id).await?;
    if let Some((owner, _, url)) = &found {
        cluster.owners.put(id, owner, url);
    }
    Ok(found.map(|(owner, _, url)| (owner, url)))
}

/// Whether the call for `id` (an instance, or the desk) runs on this node.
fn runs_here(state: &AppState, cluster: &Cluster, id: &str) -> bool {
    if id == DESK_LEASE {
        cluster.board.holds_desk()
    } else {
        state.instances.runs(id)
    }
}

/// Reads a forwarded call's body and checks its signature; the call comes back whole,
/// or the refusal (401 `invalid_forward`).
async fn check_signature(
    cluster: &Cluster,
    request: Request,
    limit: usize,
) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the body is too large",
        )
        .into_response()
    })?;
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    verify(
        cluster.config.secret.0.as_bytes(),
        header(NODE_HEADER),
        header(TIME_HEADER),
        header(SIGNATURE_HEADER),
        parts.method.as_str(),
        target,
        &bytes,
        Utc::now().timestamp_millis(),
    )
    .map_err(|why| {
        tracing::warn!(from = header(NODE_HEADER), %why, "a forwarded call was refused");
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_forward", why.to_string()).into_response()
    })?;
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Headers that belong to one connection, never passed along.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
            | "host"
            | "content-length"
    )
}

/// Sends the call to the owner at `base`, signed, and streams its answer back. An owner
/// that cannot be reached answers 503 `instance_moving`: it is dying, and its leases
/// move within a TTL.
async fn forward(cluster: &Cluster, base: &str, request: Request, limit: usize) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the body is too large",
        )
        .into_response();
    };
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let node = cluster.config.node_id.as_str();
    let now = Utc::now().timestamp_millis();
    let signature = sign(
        cluster.config.secret.0.as_bytes(),
        node,
        now,
        parts.method.as_str(),
        &target,
        &bytes,
    );
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let Ok(method) = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()) else {
        return ApiError::bad_request("unsupported method").into_response();
    };
    let sent = cluster
        .client
        .request(method, format!("{base}{target}"))
        .headers(headers)
        .header(NODE_HEADER, node)
        .header(TIME_HEADER, now.to_string())
        .header(SIGNATURE_HEADER, signature)
        .body(bytes)
        .send();
    // Bounded only until the answer begins: a live stream then flows as long as it lasts.
    let answer = match tokio::time::timeout(cluster.forward_timeout, sent).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(err)) => {
            tracing::warn!(owner = %base, %err, "cannot reach the instance's owner");
            let id = session_call(&parts.method, parts.uri.path()).unwrap_or_default();
            return moving(id);
        }
        Err(_) => {
            tracing::warn!(owner = %base, "the instance's owner does not answer");
            let id = session_call(&parts.method, parts.uri.path()).unwrap_or_default();
            return moving(id);
        }
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    if let Some(out) = response.headers_mut() {
        for (name, value) in answer.headers() {
            if !hop_by_hop(name) {
                out.append(name.clone(), value.clone());
            }
        }
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|_| ApiError::internal("cannot pass the owner's answer on").into_response())
}

/// The lease epoch of `instance_id` when this node holds its lease.
pub fn lease_of(state: &AppState, instance_id: &str) -> Option<(String, u64)> {
    let cluster = state.cluster.as_ref()?;
    let epoch = cluster.board.epoch(instance_id)?;
    Some((cluster.config.node_id.clone(), epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_calls_are_told_from_stored_reads() {
        let get = Method::GET;
        let post = Method::POST;
        for (method, path, expected) in [
            (&get, "/api/instances/i1/status", Some("i1")),
            (&get, "/api/instances/i1/qr", Some("i1")),
            (&get, "/api/instances/i1/events/stream", None),
            (&post, "/api/whatsapp/i1/send", Some("i1")),
            (&get, "/api/whatsapp/i1/status", Some("i1")),
            (&post, "/api/sandbox/instances/i1/scan", Some("i1")),
            (&Method::DELETE, "/api/instances/i1", Some("i1")),
            (&Method::PATCH, "/api/instances/i1", Some("i1")),
            (&get, "/api/instances/i1", None),
            (&get, "/api/instances/i1/messages/m1/media", None),
            (&post, "/api/instances/i1/messages/m1/media", Some("i1")),
            (&get, "/api/instances/i1/chats/79990001122/messages", None),
            (&get, "/api/instances/i1/events", None),
            (&get, "/api/instances/i1/activity", None),
            (&get, "/api/whatsapp/i1/contacts/db", None),
            (&post, "/api/whatsapp/i1/contacts/db", Some("i1")),
            (&get, "/api/instances", None),
            (&post, "/api/instances", None),
            (&get, "/api/cluster/nodes", None),
            (&post, "/api/waba/webhook", Some(DESK_LEASE)),
            (&get, "/api/waba/operator/events", Some(DESK_LEASE)),
            (&get, "/api/waba/settings", Some(DESK_LEASE)),
        ] {
            assert_eq!(session_call(method, path), expected, "{method} {path}");
        }
    }
}
