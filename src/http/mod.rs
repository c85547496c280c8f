//! The HTTP edge: one module per resource, each exposing `router()`; request and
//! response types live beside their handlers.
//!
//! Every handler carries `#[utoipa::path]` and is registered with `utoipa_axum::routes!`,
//! so [`api`] yields the routes and the OpenAPI document from the same declarations: an
//! endpoint cannot be served without being documented (`GET /openapi.json`, `GET /docs`).

pub mod access;
pub mod auth;
pub mod browser;
pub mod chats;
pub mod cluster;
pub mod contacts;
pub mod dashboard;
pub mod db;
pub mod desk;
pub mod error;
pub mod extract;
pub mod groups;
pub mod health;
pub mod instances;
pub mod messages;
pub mod metrics;
pub mod openapi;
pub mod profile;
pub mod sandbox;
pub mod state;
pub mod stats;
pub mod users;
pub mod waba;
pub mod webhooks;
pub mod wire;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tower_http::trace::TraceLayer;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::http::error::ApiError;
use crate::http::state::AppState;

/// Upper bound of every `limit` parameter: one page never loads more than this.
pub const MAX_PAGE_LIMIT: u32 = 1000;

/// The whole router of the server.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let cors = browser::cors(&state.config.cors_allowed_origins);
    // The document is served by `GET /openapi.json`, built once from the same declarations.
    let (routes, _document) = api(state.config.max_upload_bytes).split_for_parts();
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Cluster mode: a call that needs another node's session goes there.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cluster::route,
        ))
        // Inside the router's layers, so each request's `MatchedPath` is known.
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track_http,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
            }),
        )
        // Any error answer a framework extractor or layer gave without a JSON body.
        .layer(axum::middleware::map_response(wire::json_errors))
        // Outermost, so they also cover 404s, 413s and CORS preflights.
        .layer(tower::util::option_layer(cors))
        .layer(axum::middleware::map_response(browser::security_headers))
        .with_state(state)
}

/// Every endpoint of the server with its OpenAPI description. `max_upload` bounds the
/// bodies of file uploads (it does not show in the document).
pub fn api(max_upload: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(health::router())
        .merge(metrics::router())
        .merge(auth::router())
        .merge(users::router())
        .merge(instances::router())
        .merge(sandbox::router())
        .merge(messages::router(max_upload))
        .merge(groups::router())
        .merge(profile::router())
        .merge(chats::router())
        .merge(contacts::router())
        .merge(webhooks::router())
        .merge(stats::router())
        .merge(db::router())
        .merge(cluster::router())
        .merge(waba::router(max_upload))
        .merge(dashboard::router())
        .merge(desk::router())
        .merge(openapi::router())
}

/// The OpenAPI 3.1 document of every endpoint [`router`] serves, as `/openapi.json`
/// shows it.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    openapi::finish(api(0).into_openapi())
}

async fn not_found() -> impl IntoResponse {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> impl IntoResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

/// ISO 8601 with milliseconds and `Z`, as the spec's examples show.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The spec's pagination object.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    pub total: u64,
    pub limit: u32,
    pub skip: u64,
    pub has_more: bool,
}

impl Pagination {
    pub fn new(total: u64, limit: u32, skip: u64) -> Self {
        Pagination {
            total,
            limit,
            skip,
            has_more: skip.saturating_add(u64::from(limit)) < total,
        }
    }
}

/// `?limit&skip` with the spec's defaults, validated.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1 to 1000 (the default depends on the listing).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// How many items to skip.
    pub skip: Option<u64>,
}

impl PageParams {
    /// The limit (default `default`, 1..=[`MAX_PAGE_LIMIT`]) and the offset.
    pub fn resolve(&self, default: u32) -> Result<(u32, u64), ApiError> {
        Ok((page_limit(self.limit, default)?, self.skip.unwrap_or(0)))
    }
}

/// A `limit` parameter: `default` when absent, else 1..=[`MAX_PAGE_LIMIT`].
pub fn page_limit(limit: Option<u32>, default: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(default);
    if limit == 0 || limit > MAX_PAGE_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE_LIMIT}"
        )));
    }
    Ok(limit)
}

/// A page of a date-filtered listing (`limit`, `skip`, `startDate`, `endDate`), validated.
#[derive(Debug, Clone, Copy)]
pub struct DateRangePage {
    pub limit: u32,
    pub skip: u64,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

impl DateRangePage {
    /// Fails with 400 naming the parameter that is malformed, or when startDate is after
    /// endDate.
    pub fn parse(
        limit: Option<u32>,
        skip: Option<u64>,
        start_date: Option<&str>,
        end_date: Option<&str>,
        default_limit: u32,
    ) -> Result<DateRangePage, ApiError> {
        let limit = page_limit(limit, default_limit)?;
        let start = start_date
            .map(|v| parse_date_param("startDate", v))
            .transpose()?;
        let end = end_date
            .map(|v| parse_date_param("endDate", v))
            .transpose()?;
        if let (Some(s), Some(e)) = (start, end)
            && s > e
        {
            return Err(ApiError::bad_request("startDate must not be after endDate"));
        }
        Ok(DateRangePage {
            limit,
            skip: skip.unwrap_or(0),
            start,
            end,
        })
    }
}

/// Parses an ISO 8601 date or date-time parameter, naming it in the error.
pub fn parse_date_param(name: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(t.and_utc());
    }
    Err(ApiError::bad_request(format!(
        "{name} must be an ISO 8601 date, e.g. 2024-01-31 or 2024-01-31T12:00:00Z"
    )))
}

#[cfg(test)]
mod properties;
