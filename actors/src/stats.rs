//! Usage statistics and limits: the `StatsCounter` actor counts in memory and flushes the counts into daily
//! buckets in storage periodically and on shutdown. Limits are checked against the
//! stored counts plus what is still in memory, so they are exact.
//!
//! The counter also owns the rule "one `limit_exceeded` event per instance and period":
//! [`StatsHandle::check`] publishes it the first time a limit is found reached, and a
//! counter restarted by the root supervisor asks the stored events before publishing
//! again.
//!
//! An increment is never a wait: [`StatsHandle::add`] merges it into counts the handle
//! shares with the counter and casts only when none were waiting, so the counter takes
//! whatever gathered in one message (at most one cast per request, usually far fewer).
//!
//! Time comes from a [`Clock`], so tests move days and months without waiting.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::NaiveDate;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::domain::event::{LimitExceeded, LimitUsage};
use crate::domain::usage::{exceeded, period_end, period_start};
use crate::domain::{Clock, Event, EventKind, EventQuery, Instance, Usage, UsageFilter, UsageKey};
use crate::error::DomainError;
use crate::event_hub::EventHub;
use crate::handle::ActorSlot;
use crate::store::DynStorage;

/// How often counts go to storage.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

const WHO: &str = "the stats counter";

/// The typed face of the counter. Cheap to clone; follows the counter across restarts.
#[derive(Clone)]
pub struct StatsHandle {
    slot: ActorSlot<StatsMsg>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    pub(crate) unsent: Unsent,
}

/// Counts added and not yet taken by the counter, shared by the handle and the counter.
pub(crate) type Unsent = Arc<Mutex<HashMap<UsageKey, Usage>>>;

/// Takes what waits in `unsent` (empty afterwards).
fn take(unsent: &Unsent) -> HashMap<UsageKey, Usage> {
    std::mem::take(&mut *unsent.lock().unwrap_or_else(PoisonError::into_inner))
}

/// A limit the instance has reached: the request must be refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitReached {
    /// `maxMessagesSent`, `maxApiCalls`.
    pub limits: Vec<&'static str>,
    /// Seconds until the period ends and the limit resets (at least 1).
    pub retry_after: u64,
}

/// What the counter needs to run; kept by the root to respawn it.
#[derive(Clone)]
pub(crate) struct StatsArgs {
    pub storage: DynStorage,
    pub events: EventHub,
    pub clock: Arc<dyn Clock>,
    pub flush_every: Duration,
    /// The handle's [`StatsHandle::unsent`].
    pub unsent: Unsent,
}

impl StatsHandle {
    pub(crate) fn new(clock: Arc<dyn Clock>, timeout: Duration) -> Self {
        StatsHandle {
            slot: ActorSlot::default(),
            clock,
            timeout,
            unsent: Unsent::default(),
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The counter running now (tests kill it to see it respawned).
    pub fn cell(&self) -> Option<ActorCell> {
        self.slot.cell()
    }

    /// Counts `delta` for the user (and instance) today. Never waits: merged into the
    /// counts waiting for the counter, with a cast only when none were waiting. While
    /// the counter is being respawned the counts wait for the new one.
    pub fn add(&self, user_id: &str, instance_id: Option<&str>, delta: Usage) {
        let key = UsageKey {
            day: self.clock.now().date_naive(),
            user_id: user_id.to_owned(),
            instance_id: instance_id.unwrap_or_default().to_owned(),
        };
        let first = {
            let mut unsent = self.unsent.lock().unwrap_or_else(PoisonError::into_inner);
            let first = unsent.is_empty();
            unsent.entry(key).or_default().add(&delta);
            first
        };
        // When the cast fails (a respawn), the counter's next message or tick takes them.
        if first && !self.slot.cast(StatsMsg::Take) {
            tracing::debug!("the stats counter is restarting; it takes the counts when back");
        }
    }

    /// Writes what is counted in memory to storage.
    pub async fn flush(&self) -> Result<(), DomainError> {
        self.slot.call(self.timeout, WHO, StatsMsg::Flush).await?
    }

    /// Whether the instance may make this call: `Some` when one of its limits is reached
    /// (only `maxApiCalls` counts unless `sending`). The first time in a period that a
    /// limit is found reached, a `limit_exceeded` event is published.
    pub async fn check(
        &self,
        instance: &Instance,
        sending: bool,
    ) -> Result<Option<LimitReached>, DomainError> {
        let Some(limits) = instance.limits.as_ref() else {
            return Ok(None);
        };
        let relevant =
            limits.max_api_calls.is_some() || (sending && limits.max_messages_sent.is_some());
        if !relevant {
            return Ok(None);
        }
        let instance = instance.clone();
        self.slot
            .call(self.timeout, WHO, |reply| StatsMsg::Check {
                instance: Box::new(instance),
                sending,
                reply,
            })
            .await?
    }
}

pub(crate) enum StatsMsg {
    /// Take the counts waiting in [`StatsHandle::unsent`].
    Take,
    Flush(RpcReplyPort<Result<(), DomainError>>),
    Tick,
    Check {
        instance: Box<Instance>,
        sending: bool,
        reply: RpcReplyPort<Result<Option<LimitReached>, DomainError>>,
    },
}

pub(crate) struct StatsCounter;

pub(crate) struct StatsState {
    args: StatsArgs,
    /// Counts not yet in storage, per bucket: bounded by buckets, not by events.
    pending: HashMap<UsageKey, Usage>,
    /// (instance, period start) pairs known to have had their `limit_exceeded`.
    notified: HashSet<(String, NaiveDate)>,
}

/// Spawns the counter under `parent` and points `handle` at it.
pub(crate) async fn spawn(
    handle: &StatsHandle,
    args: StatsArgs,
    parent: ActorCell,
) -> Result<ActorCell, ActorProcessingErr> {
    let (actor, _) = Actor::spawn_linked(None, StatsCounter, args, parent).await?;
    handle.slot.set(Some(actor.clone()));
    Ok(actor.get_cell())
}

/// The counter died: calls answer `Unavailable` until it is respawned.
pub(crate) fn vacate(handle: &StatsHandle) {
    handle.slot.set(None);
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
        myself.send_interval(args.flush_every, || StatsMsg::Tick);
        Ok(StatsState {
            args,
            pending: HashMap::new(),
            notified: HashSet::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<StatsMsg>,
        state: &mut StatsState,
    ) -> Result<(), ActorProcessingErr> {
        take_unsent(state);
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
        // Every message takes them: a check counts what was added before it.
        take_unsent(state);
        match msg {
            StatsMsg::Take => {}
            StatsMsg::Flush(reply) => {
                let _ = reply.send(flush(state).await);
            }
            StatsMsg::Tick => {
                if let Err(err) = flush(state).await {
                    tracing::warn!(%err, "cannot flush usage statistics; keeping them for the next try");
                }
            }
            StatsMsg::Check {
                instance,
                sending,
                reply,
            } => {
                let _ = reply.send(check(state, &instance, sending).await);
            }
        }
        Ok(())
    }
}

fn take_unsent(state: &mut StatsState) {
    for (key, delta) in take(&state.args.unsent) {
        state.pending.entry(key).or_default().add(&delta);
    }
}

async fn check(
    state: &mut StatsState,
    instance: &Instance,
    sending: bool,
) -> Result<Option<LimitReached>, DomainError> {
    let Some(limits) = instance.limits.as_ref() else {
        return Ok(None);
    };
    let now = state.args.clock.now();
    let from = period_start(limits.period, now.date_naive());
    let usage = period_usage(state, &instance.user_id, &instance.id, from).await?;
    let mut over = exceeded(limits, &usage);
    if !sending {
        over.retain(|l| *l == "maxApiCalls");
    }
    if over.is_empty() {
        return Ok(None);
    }
    let key = (instance.id.clone(), from);
    if !state.notified.contains(&key) {
        if !already_notified(state, &instance.id, from).await? {
            let event = Event::LimitExceeded(LimitExceeded {
                exceeded_limits: over.iter().map(|l| (*l).to_owned()).collect(),
                usage: LimitUsage {
                    messages_sent: usage.messages_sent,
                    api_calls: usage.api_calls,
                },
                period: limits.period,
            });
            state.args.events.raise(&instance.id, event).await?;
        }
        state.notified.insert(key);
    }
    let retry_after = (period_end(limits.period, now) - now).num_seconds().max(1) as u64;
    Ok(Some(LimitReached {
        limits: over,
        retry_after,
    }))
}

/// The instance's usage (of its owner) since `from`, exact: stored plus in memory.
async fn period_usage(
    state: &StatsState,
    owner: &str,
    instance: &str,
    from: NaiveDate,
) -> Result<Usage, DomainError> {
    let filter = UsageFilter {
        user_id: Some(owner.to_owned()),
        instance_id: Some(instance.to_owned()),
        from: Some(from),
    };
    let rows = state.args.storage.usage(&filter).await?;
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

/// Whether a `limit_exceeded` event was already published this period: the stored
/// events survive restarts of the counter and of the process.
async fn already_notified(
    state: &StatsState,
    instance: &str,
    from: NaiveDate,
) -> Result<bool, DomainError> {
    let Some(since) = from
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc() - chrono::Duration::milliseconds(1))
    else {
        return Ok(false);
    };
    let query = EventQuery {
        since: Some(since),
        types: vec![EventKind::LimitExceeded.as_str().to_owned()],
        limit: 1,
        ..Default::default()
    };
    let (found, _) = state.args.storage.list_events(instance, &query).await?;
    Ok(!found.is_empty())
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
    state.args.storage.add_usage(&rows).await?;
    state.pending.clear();
    Ok(())
}
