//! Usage statistics and limits: the `StatsCounter` actor counts in memory (an increment
//! is a cast, nothing more on the request's path) and flushes the counts into daily
//! buckets in storage periodically and on shutdown. Limits are checked against the
//! stored counts plus what is still in memory, so they are exact.
//!
//! Time comes from a [`Clock`], so tests move days and months without waiting.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;

use crate::domain::{LimitPeriod, Limits};
use crate::error::DomainError;
use crate::storage::StoreResult;

/// The time of the gateway: the system clock in production, a settable one in tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The real time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(at))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The counters of the statistics API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    pub messages_sent: u64,
    pub messages_received: u64,
    pub media_sent: u64,
    pub media_received: u64,
    pub total_media_size: u64,
    pub api_calls: u64,
    pub webhook_sent: u64,
}

impl Usage {
    pub fn add(&mut self, o: &Usage) {
        self.messages_sent += o.messages_sent;
        self.messages_received += o.messages_received;
        self.media_sent += o.media_sent;
        self.media_received += o.media_received;
        self.total_media_size += o.total_media_size;
        self.api_calls += o.api_calls;
        self.webhook_sent += o.webhook_sent;
    }

    pub fn is_zero(&self) -> bool {
        *self == Usage::default()
    }
}

/// One daily bucket: a day, the user, and the instance ("" for calls naming none).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsageKey {
    pub day: NaiveDate,
    pub user_id: String,
    pub instance_id: String,
}

/// Which buckets to read; None means any.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub user_id: Option<String>,
    pub instance_id: Option<String>,
    /// First day included.
    pub from: Option<NaiveDate>,
}

impl UsageFilter {
    pub fn matches(&self, k: &UsageKey) -> bool {
        self.user_id.as_ref().is_none_or(|u| *u == k.user_id)
            && self
                .instance_id
                .as_ref()
                .is_none_or(|i| *i == k.instance_id)
            && self.from.is_none_or(|f| k.day >= f)
    }
}

/// Daily usage buckets in storage.
#[async_trait]
pub trait StatsStore: Send + Sync {
    /// Adds each delta to its bucket (creating it), atomically for the whole batch.
    async fn add_usage(&self, rows: &[(UsageKey, Usage)]) -> StoreResult<()>;
    /// The buckets matching the filter, in no particular order.
    async fn usage(&self, filter: &UsageFilter) -> StoreResult<Vec<(UsageKey, Usage)>>;
}

/// The first day of the limit period containing `day`.
pub fn period_start(period: LimitPeriod, day: NaiveDate) -> NaiveDate {
    match period {
        LimitPeriod::Day => day,
        LimitPeriod::Month => day.with_day(1).unwrap_or(day),
    }
}

/// When the limit period containing `now` ends.
pub fn period_end(period: LimitPeriod, now: DateTime<Utc>) -> DateTime<Utc> {
    let day = now.date_naive();
    let next = match period {
        LimitPeriod::Day => day.succ_opt(),
        LimitPeriod::Month => {
            let (y, m) = if day.month() == 12 {
                (day.year() + 1, 1)
            } else {
                (day.year(), day.month() + 1)
            };
            NaiveDate::from_ymd_opt(y, m, 1)
        }
    };
    next.and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(now, |t| t.and_utc())
}

/// Which limits `usage` has reached (`maxMessagesSent` at the limit: the next send would
/// exceed it; `maxApiCalls` beyond it: the current call is already counted).
pub fn exceeded(limits: &Limits, usage: &Usage) -> Vec<&'static str> {
    let mut out = Vec::new();
    if limits
        .max_messages_sent
        .is_some_and(|max| usage.messages_sent >= max)
    {
        out.push("maxMessagesSent");
    }
    if limits
        .max_api_calls
        .is_some_and(|max| usage.api_calls > max)
    {
        out.push("maxApiCalls");
    }
    out
}

/// The typed face of the counter. Cheap to clone.
#[derive(Clone)]
pub struct StatsHandle {
    actor: ActorRef<StatsMsg>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
}

/// How often counts go to storage.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Starts the counter.
///
/// Fails with `Unavailable` when the actor cannot start.
pub async fn start_stats(
    store: Arc<dyn StatsStore>,
    clock: Arc<dyn Clock>,
    flush_every: Duration,
    timeout: Duration,
) -> Result<StatsHandle, DomainError> {
    let (actor, _) = Actor::spawn(
        None,
        StatsCounter,
        StatsArgs {
            store,
            clock: clock.clone(),
            flush_every,
        },
    )
    .await
    .map_err(|e| DomainError::Unavailable(format!("cannot start the stats counter: {e}")))?;
    Ok(StatsHandle {
        actor,
        clock,
        timeout,
    })
}

impl StatsHandle {
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Counts `delta` for the user (and instance) today. A cast: never waits.
    pub fn add(&self, user_id: &str, instance_id: Option<&str>, delta: Usage) {
        let key = UsageKey {
            day: self.clock.now().date_naive(),
            user_id: user_id.to_owned(),
            instance_id: instance_id.unwrap_or_default().to_owned(),
        };
        let _ = self.actor.cast(StatsMsg::Add(key, delta));
    }

    /// Writes what is counted in memory to storage.
    pub async fn flush(&self) -> Result<(), DomainError> {
        crate::instance::ask_actor(
            &self.actor,
            self.timeout,
            "the stats counter",
            StatsMsg::Flush,
        )
        .await?
    }

    /// The instance's usage (of its owner) in the current limit period, exact.
    pub async fn period_usage(
        &self,
        owner_id: &str,
        instance_id: &str,
        period: LimitPeriod,
    ) -> Result<Usage, DomainError> {
        let from = period_start(period, self.clock.now().date_naive());
        let owner = owner_id.to_owned();
        let instance = instance_id.to_owned();
        crate::instance::ask_actor(&self.actor, self.timeout, "the stats counter", |reply| {
            StatsMsg::PeriodUsage {
                owner,
                instance,
                from,
                reply,
            }
        })
        .await?
    }

    /// True the first time it is asked for this instance and period: one
    /// `limit_exceeded` event per instance per period.
    pub async fn first_exceed(
        &self,
        instance_id: &str,
        period: LimitPeriod,
    ) -> Result<bool, DomainError> {
        let from = period_start(period, self.clock.now().date_naive());
        let instance = instance_id.to_owned();
        crate::instance::ask_actor(&self.actor, self.timeout, "the stats counter", |reply| {
            StatsMsg::FirstExceed {
                instance,
                from,
                reply,
            }
        })
        .await
    }

    /// Flushes, then stops the counter; nothing counted is lost on a graceful shutdown.
    pub async fn shutdown(&self) {
        if let Err(err) = self.flush().await {
            tracing::error!(%err, "cannot flush usage statistics at shutdown");
        }
        self.actor.stop(None);
    }
}

enum StatsMsg {
    Add(UsageKey, Usage),
    Flush(RpcReplyPort<Result<(), DomainError>>),
    Tick,
    PeriodUsage {
        owner: String,
        instance: String,
        from: NaiveDate,
        reply: RpcReplyPort<Result<Usage, DomainError>>,
    },
    FirstExceed {
        instance: String,
        from: NaiveDate,
        reply: RpcReplyPort<bool>,
    },
}

struct StatsCounter;

struct StatsArgs {
    store: Arc<dyn StatsStore>,
    clock: Arc<dyn Clock>,
    flush_every: Duration,
}

struct StatsState {
    store: Arc<dyn StatsStore>,
    /// Counts not yet in storage, per bucket: bounded by buckets, not by events.
    pending: HashMap<UsageKey, Usage>,
    /// (instance, period start) pairs that already had their `limit_exceeded`.
    notified: HashSet<(String, NaiveDate)>,
}

impl Actor for StatsCounter {
    type Msg = StatsMsg;
    type State = StatsState;
    type Arguments = StatsArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<StatsMsg>,
        args: StatsArgs,
    ) -> Result<StatsState, ActorProcessingErr> {
        let _ = args.clock;
        myself.send_interval(args.flush_every, || StatsMsg::Tick);
        Ok(StatsState {
            store: args.store,
            pending: HashMap::new(),
            notified: HashSet::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<StatsMsg>,
        state: &mut StatsState,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(err) = flush(state).await {
            tracing::error!(%err, buckets = state.pending.len(), "usage statistics lost at stop");
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<StatsMsg>,
        msg: StatsMsg,
        state: &mut StatsState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StatsMsg::Add(key, delta) => state.pending.entry(key).or_default().add(&delta),
            StatsMsg::Flush(reply) => {
                let _ = reply.send(flush(state).await);
            }
            StatsMsg::Tick => {
                if let Err(err) = flush(state).await {
                    tracing::warn!(%err, "cannot flush usage statistics; keeping them for the next try");
                }
            }
            StatsMsg::PeriodUsage {
                owner,
                instance,
                from,
                reply,
            } => {
                let filter = UsageFilter {
                    user_id: Some(owner),
                    instance_id: Some(instance),
                    from: Some(from),
                };
                let answer = match state.store.usage(&filter).await {
                    Ok(rows) => {
                        let mut total = Usage::default();
                        let stored = rows.iter().map(|(_, u)| u);
                        let in_memory = state
                            .pending
                            .iter()
                            .filter(|(k, _)| filter.matches(k))
                            .map(|(_, u)| u);
                        for u in stored.chain(in_memory) {
                            total.add(u);
                        }
                        Ok(total)
                    }
                    Err(e) => Err(e.into()),
                };
                let _ = reply.send(answer);
            }
            StatsMsg::FirstExceed {
                instance,
                from,
                reply,
            } => {
                let _ = reply.send(state.notified.insert((instance, from)));
            }
        }
        Ok(())
    }
}

async fn flush(state: &mut StatsState) -> Result<(), DomainError> {
    if state.pending.is_empty() {
        return Ok(());
    }
    let rows: Vec<(UsageKey, Usage)> = state
        .pending
        .iter()
        .filter(|(_, u)| !u.is_zero())
        .map(|(k, u)| (k.clone(), *u))
        .collect();
    state.store.add_usage(&rows).await?;
    state.pending.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        let d = NaiveDate::from_ymd_opt(2024, 12, 17).expect("date");
        assert_eq!(period_start(LimitPeriod::Day, d), d);
        assert_eq!(
            period_start(LimitPeriod::Month, d),
            NaiveDate::from_ymd_opt(2024, 12, 1).expect("date")
        );
        let now = d.and_hms_opt(15, 0, 0).expect("time").and_utc();
        assert_eq!(
            period_end(LimitPeriod::Month, now).date_naive(),
            NaiveDate::from_ymd_opt(2025, 1, 1).expect("date")
        );
        assert_eq!(
            period_end(LimitPeriod::Day, now).date_naive(),
            NaiveDate::from_ymd_opt(2024, 12, 18).expect("date")
        );
    }

    #[test]
    fn exceeded_limits() {
        let limits = Limits {
            max_messages_sent: Some(2),
            max_api_calls: Some(3),
            period: LimitPeriod::Day,
        };
        let mut u = Usage {
            messages_sent: 1,
            api_calls: 3,
            ..Usage::default()
        };
        assert!(exceeded(&limits, &u).is_empty());
        u.messages_sent = 2;
        u.api_calls = 4;
        assert_eq!(exceeded(&limits, &u), ["maxMessagesSent", "maxApiCalls"]);
    }
}
