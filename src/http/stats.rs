//! Usage statistics (`/api/stats/*`) and the usage limits of instances.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{Duration, NaiveDate};
use serde::Deserialize;
use serde_json::{Value, json};
use wagate_actors::domain::{EventQuery, Instance, InstanceEvent, InstanceStatus};
use wagate_actors::stats::{self, Usage, UsageFilter};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::http::auth::AuthUser;
use crate::http::extract::{AppJson, AppPath, AppQuery};
use crate::http::instances::visible_instance;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/stats/user", get(user_stats))
        .route("/api/stats/instances/{id}", get(instance_stats))
        .route("/api/stats/system", get(system_stats))
}

#[derive(Debug, Deserialize)]
struct PeriodParams {
    period: Option<String>,
}

/// The first day a period covers, counting back from `today` (None: all time).
/// `week` is the last 7 days, `month` the last 30, `year` the last 365, today included.
fn period_from(period: &str, today: NaiveDate, allowed: &[&str]) -> ApiResult<Option<NaiveDate>> {
    if !allowed.contains(&period) {
        return Err(ApiError::bad_request(format!(
            "period must be one of {}",
            allowed.join(", ")
        )));
    }
    let back = |days: i64| Some(today - Duration::days(days - 1));
    Ok(match period {
        "today" => Some(today),
        "week" => back(7),
        "month" => back(30),
        "year" => back(365),
        _ => None,
    })
}

/// Reads the usage buckets matching `filter`, after writing out what is still counted in
/// memory, so the answer is exact.
async fn usage_rows(
    state: &AppState,
    filter: &UsageFilter,
) -> ApiResult<Vec<(stats::UsageKey, Usage)>> {
    state.stats.flush().await?;
    Ok(state.storage.usage(filter).await?)
}

fn usage_json(u: &Usage) -> serde_json::Map<String, Value> {
    match serde_json::to_value(u) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

async fn user_stats(
    State(state): State<AppState>,
    caller: AuthUser,
    AppQuery(p): AppQuery<PeriodParams>,
) -> ApiResult<AppJson<Value>> {
    let today = state.stats.clock().now().date_naive();
    let from = period_from(
        p.period.as_deref().unwrap_or("month"),
        today,
        &["week", "month", "year", "all"],
    )?;
    let rows = usage_rows(
        &state,
        &UsageFilter {
            user_id: Some(caller.0.id.clone()),
            instance_id: None,
            from,
        },
    )
    .await?;
    let instances = state.storage.list_instances(Some(&caller.0.id)).await?;
    let mut total = Usage::default();
    let mut per_instance: BTreeMap<String, Usage> = BTreeMap::new();
    for (k, u) in &rows {
        total.add(u);
        if !k.instance_id.is_empty() {
            per_instance
                .entry(k.instance_id.clone())
                .or_default()
                .add(u);
        }
    }
    let mut total_json = usage_json(&total);
    total_json.insert("instanceCount".into(), json!(instances.len()));
    let list: Vec<Value> = instances
        .iter()
        .map(|i| {
            let mut v = usage_json(per_instance.get(&i.id).unwrap_or(&Usage::default()));
            v.insert("instanceId".into(), json!(i.id));
            v.insert("name".into(), json!(i.name));
            Value::Object(v)
        })
        .collect();
    Ok(AppJson(json!({"total": total_json, "instances": list})))
}

async fn instance_stats(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
    AppQuery(p): AppQuery<PeriodParams>,
) -> ApiResult<AppJson<Value>> {
    let today = state.stats.clock().now().date_naive();
    let from = period_from(
        p.period.as_deref().unwrap_or("today"),
        today,
        &["today", "week", "month", "all"],
    )?;
    let instance = visible_instance(&state, &caller, &id).await?;
    let rows = usage_rows(
        &state,
        &UsageFilter {
            user_id: Some(instance.user_id.clone()),
            instance_id: Some(instance.id.clone()),
            from,
        },
    )
    .await?;
    let mut total = Usage::default();
    let mut daily: BTreeMap<NaiveDate, Usage> = BTreeMap::new();
    for (k, u) in &rows {
        total.add(u);
        daily.entry(k.day).or_default().add(u);
    }
    let daily_stats: Vec<Value> = daily
        .iter()
        .map(|(day, u)| {
            json!({
                "date": format!("{}T00:00:00.000Z", day.format("%Y-%m-%d")),
                "messagesSent": u.messages_sent,
                "messagesReceived": u.messages_received,
                "mediaSent": u.media_sent,
                "mediaReceived": u.media_received,
            })
        })
        .collect();
    let mut usage = usage_json(&total);
    usage.insert("dailyStats".into(), json!(daily_stats));
    Ok(AppJson(json!({"usage": usage})))
}

async fn system_stats(
    State(state): State<AppState>,
    caller: AuthUser,
) -> ApiResult<AppJson<Value>> {
    caller.require_admin()?;
    let rows = usage_rows(&state, &UsageFilter::default()).await?;
    let mut total = Usage::default();
    for (_, u) in &rows {
        total.add(u);
    }
    let instances = state.storage.list_instances(None).await?;
    let board = state.instances.status_board();
    let active_instances = instances
        .iter()
        .filter(|i| {
            board
                .get(&i.id)
                .is_some_and(|v| v.status == InstanceStatus::Connected)
        })
        .count();
    let (mut active_users, mut skip) = (0u64, 0u64);
    let users = loop {
        let page = state.storage.list_users(1000, skip).await?;
        active_users += page.items.iter().filter(|u| u.active).count() as u64;
        skip += page.items.len() as u64;
        if page.items.is_empty() || skip >= page.total {
            break page.total;
        }
    };
    Ok(AppJson(json!({
        "instances": {"total": instances.len(), "active": active_instances},
        "users": {"total": users, "active": active_users},
        "usage": usage_json(&total),
    })))
}

/// Refuses a call with 429 when the instance's limits are reached, publishing one
/// `limit_exceeded` event per instance per period. `sending` adds the messages limit to
/// the API-calls limit (which every instance call is checked against).
pub async fn enforce_limits(state: &AppState, instance: &Instance, sending: bool) -> ApiResult<()> {
    let Some(limits) = instance.limits.as_ref() else {
        return Ok(());
    };
    let relevant =
        limits.max_api_calls.is_some() || (sending && limits.max_messages_sent.is_some());
    if !relevant {
        return Ok(());
    }
    let usage = state
        .stats
        .period_usage(&instance.user_id, &instance.id, limits.period)
        .await?;
    let mut over = stats::exceeded(limits, &usage);
    if !sending {
        over.retain(|l| *l == "maxApiCalls");
    }
    if over.is_empty() {
        return Ok(());
    }
    let now = state.stats.clock().now();
    if state
        .stats
        .first_exceed(&instance.id, limits.period)
        .await?
        && !already_notified(state, instance, limits.period).await?
    {
        let event = InstanceEvent::new(
            &instance.id,
            "limit_exceeded",
            json!({
                "exceededLimits": over,
                "usage": {"messagesSent": usage.messages_sent, "apiCalls": usage.api_calls},
                "period": limits.period,
            }),
        );
        state.events.publish(event).await?;
    }
    let retry_after = (stats::period_end(limits.period, now) - now)
        .num_seconds()
        .max(1) as u64;
    Err(ApiError {
        retry_after: Some(retry_after),
        ..ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "limit_exceeded",
            format!(
                "usage limit reached ({}); it resets at the start of the next period",
                over.join(", ")
            ),
        )
    })
}

/// Whether a `limit_exceeded` event was already published this period (survives restarts,
/// unlike the counter's memory).
async fn already_notified(
    state: &AppState,
    instance: &Instance,
    period: wagate_actors::domain::LimitPeriod,
) -> ApiResult<bool> {
    let start = stats::period_start(period, state.stats.clock().now().date_naive());
    let Some(since) = start
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc() - Duration::milliseconds(1))
    else {
        return Ok(false);
    };
    let query = EventQuery {
        since: Some(since),
        types: vec!["limit_exceeded".into()],
        limit: 1,
        ..Default::default()
    };
    let (found, _) = state.storage.list_events(&instance.id, &query).await?;
    Ok(!found.is_empty())
}
