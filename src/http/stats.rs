//! Usage statistics (`/api/stats/*`) and the usage limits of instances.

use std::collections::BTreeMap;

use axum::extract::State;
use chrono::{Duration, NaiveDate};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::domain::InstanceStatus;

use wagate_actors::domain::{Usage, UsageFilter};

use crate::http::access::{AdminOnly, VisibleInstance};
use crate::http::auth::AuthUser;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppQuery};
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(user_stats))
        .routes(routes!(instance_stats))
        .routes(routes!(system_stats))
}

/// The periods of `/api/stats/user`.
const USER_PERIODS: [&str; 4] = ["week", "month", "year", "all"];
/// The periods of `/api/stats/instances/{instanceId}`.
const INSTANCE_PERIODS: [&str; 4] = ["today", "week", "month", "all"];

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct UserPeriod {
    /// `week` (the last 7 days), `month` (30, the default), `year` (365) or `all`.
    #[param(schema_with = user_periods)]
    period: Option<String>,
}

fn user_periods() -> utoipa::openapi::schema::Object {
    crate::http::openapi::string_enum(&USER_PERIODS)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct InstancePeriod {
    /// `today` (the default), `week` (the last 7 days), `month` (30) or `all`.
    #[param(schema_with = instance_periods)]
    period: Option<String>,
}

fn instance_periods() -> utoipa::openapi::schema::Object {
    crate::http::openapi::string_enum(&INSTANCE_PERIODS)
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
) -> ApiResult<Vec<(wagate_actors::domain::UsageKey, Usage)>> {
    state.stats.flush().await?;
    Ok(state.storage.usage(filter).await?)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct UserTotal {
    #[serde(flatten)]
    usage: Usage,
    /// How many instances the caller owns.
    instance_count: usize,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct InstanceUsage {
    #[serde(flatten)]
    usage: Usage,
    instance_id: String,
    name: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct UserStats {
    total: UserTotal,
    instances: Vec<InstanceUsage>,
}

/// The caller's usage over a period, in total and per instance it owns.
#[utoipa::path(
    get,
    path = "/api/stats/user",
    tag = "stats",
    params(UserPeriod),
    responses(
        (status = 200, description = "The caller's usage", body = UserStats),
        (status = 400, description = "Unknown period", body = ErrorBody),
    )
)]
async fn user_stats(
    State(state): State<AppState>,
    caller: AuthUser,
    AppQuery(p): AppQuery<UserPeriod>,
) -> ApiResult<AppJson<UserStats>> {
    let today = state.stats.clock().now().date_naive();
    let from = period_from(p.period.as_deref().unwrap_or("month"), today, &USER_PERIODS)?;
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
    let list = instances
        .iter()
        .map(|i| InstanceUsage {
            usage: per_instance.get(&i.id).copied().unwrap_or_default(),
            instance_id: i.id.clone(),
            name: i.name.clone(),
        })
        .collect();
    Ok(AppJson(UserStats {
        total: UserTotal {
            usage: total,
            instance_count: instances.len(),
        },
        instances: list,
    }))
}

/// One day of an instance's usage.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct DailyUsage {
    /// Midnight UTC of the day.
    #[schema(format = DateTime)]
    date: String,
    messages_sent: u64,
    messages_received: u64,
    media_sent: u64,
    media_received: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct InstanceUsageDays {
    #[serde(flatten)]
    usage: Usage,
    /// Days with any usage, oldest first.
    daily_stats: Vec<DailyUsage>,
}

#[derive(Debug, Serialize, ToSchema)]
struct InstanceStats {
    usage: InstanceUsageDays,
}

/// An instance's usage over a period, in total and per day.
#[utoipa::path(
    get,
    path = "/api/stats/instances/{instanceId}",
    tag = "stats",
    params(("instanceId" = String, Path, description = "The instance's id"), InstancePeriod),
    responses(
        (status = 200, description = "The instance's usage", body = InstanceStats),
        (status = 400, description = "Unknown period", body = ErrorBody),
        (status = 404, description = "No such instance visible to the caller", body = ErrorBody),
    )
)]
async fn instance_stats(
    State(state): State<AppState>,
    VisibleInstance { instance, .. }: VisibleInstance,
    AppQuery(p): AppQuery<InstancePeriod>,
) -> ApiResult<AppJson<InstanceStats>> {
    let today = state.stats.clock().now().date_naive();
    let from = period_from(
        p.period.as_deref().unwrap_or("today"),
        today,
        &INSTANCE_PERIODS,
    )?;
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
    let daily_stats = daily
        .iter()
        .map(|(day, u)| DailyUsage {
            date: format!("{}T00:00:00.000Z", day.format("%Y-%m-%d")),
            messages_sent: u.messages_sent,
            messages_received: u.messages_received,
            media_sent: u.media_sent,
            media_received: u.media_received,
        })
        .collect();
    Ok(AppJson(InstanceStats {
        usage: InstanceUsageDays {
            usage: total,
            daily_stats,
        },
    }))
}

/// A total and how many of it are active.
#[derive(Debug, Serialize, ToSchema)]
struct Counted {
    total: u64,
    active: u64,
}

#[derive(Debug, Serialize, ToSchema)]
struct SystemStats {
    /// Active: connected now.
    instances: Counted,
    /// Active: not deactivated.
    users: Counted,
    /// All usage ever recorded.
    usage: Usage,
}

/// Usage and counts of the whole server (admins only).
#[utoipa::path(
    get,
    path = "/api/stats/system",
    tag = "stats",
    responses(
        (status = 200, description = "The server's usage", body = SystemStats),
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
async fn system_stats(
    State(state): State<AppState>,
    _admin: AdminOnly,
) -> ApiResult<AppJson<SystemStats>> {
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
    Ok(AppJson(SystemStats {
        instances: Counted {
            total: instances.len() as u64,
            active: active_instances as u64,
        },
        users: Counted {
            total: users,
            active: active_users,
        },
        usage: total,
    }))
}
