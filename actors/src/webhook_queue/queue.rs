//! The webhook queue: one `WebhookQueue` actor takes every event, keeps the ones each
//! instance wants in the durable outbox, and runs one [`DeliveryWorker`] per instance
//! that has pending jobs. A worker delivers its instance's jobs strictly in order, so
//! order holds per instance while instances deliver concurrently and a dead endpoint
//! only ever holds up its own instance.
//!
//! Memory stays bounded whatever the backlog: jobs live in the outbox; a worker holds one
//! job at a time, and an instance without pending jobs has no worker.
//!
//! **No event is skipped.** Events are stored before they are forwarded here, and the
//! outbox keeps, per instance, the last event handled (its cursor). Catch-up walks the
//! stored events after each cursor — from the first event for an instance that has
//! none — whenever the queue starts (a process start, or a respawn by the root
//! supervisor) and whenever the outbox failed: a failed push leaves the cursor before
//! the event, and the next catch-up queues it again in order. Events arriving while a
//! catch-up is pending are left to it.
//!
//! **Dead letters.** A job given up stays in the outbox as a dead letter with its last
//! outcome. A retry or a replay queues it (or, for a replay of everything, a fresh job of
//! a stored event) again at the end of the instance's queue, through this actor, which
//! stays the only one that adds jobs; the cursor does not move back.
//!
//! **Pause.** An instance's delivery can be paused: events keep being queued, its worker
//! stops at the head job and no new one starts until a resume, which delivers the
//! backlog in order. A worker whose every attempt has failed for the configured time
//! reports the endpoint as failing; the queue then pauses the instance itself, logs a
//! `webhook_paused` activity entry and publishes a `webhook_paused` event. The flag is
//! the instance's (`webhookPaused`), written only here.
//!
//! **Batches.** An event is staged, not written at once: the queue casts itself a
//! `Commit` behind the events already in its mailbox, and writes everything staged by
//! then as one outbox write with one flush (any other message writes what is staged
//! first). An instance without a webhook URL (or with delivery switched off) writes
//! nothing: the queue remembers its last event in memory and moves its cursor there when
//! the settings change, so a later catch-up does not deliver its history.
//!
//! **Cluster mode.** Every node's queue shares one outbox in the database, and handles
//! the instances whose lease its node holds: it catches up on, and runs workers for,
//! those only. When the lease manager takes a lease it tells the queue to adopt the
//! instance before the instance starts: the outbox orders this node's jobs after the
//! ones already queued, and a catch-up from the instance's (shared) cursor queues the
//! events its previous owner stored but did not queue. A lost or released lease stops
//! the instance's worker. So a node's death strands nothing: the next owner delivers
//! its backlog in order; the only duplicate is an attempt in flight when it died.
//!
//! The queue and each worker keep a copy of their instance (webhook URL and settings)
//! instead of reading it from storage for every event and every attempt; whoever changes
//! an instance's settings in storage calls [`WebhookQueueHandle::invalidate`] before it
//! publishes anything of the change. The queue drops its copy on the message, which comes
//! before the change's events in its mailbox. A worker cannot rely on a message: one
//! already attempting would see it only afterwards, so a job queued because of the new
//! settings (the first one after a URL is set) could meet the copy read before them, and
//! be given up as "webhooks are disabled". Workers compare their copy with the
//! [`SettingsEpoch`] instead, after they have read their jobs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use serde_json::json;

use super::delivery::{DeliveryWorker, WorkerMsg, WorkerReport};
use super::{
    DeadLetter, DeliveryRecord, OUTBOX_RETRY, Outbox, SettingsEpoch, WebhookConfig, WebhookJob,
    target_url, wants,
};
use crate::domain::event::{PauseReason, WebhookPaused};
use crate::domain::{ActivityEntry, Event, Instance, InstanceEvent, Page};
use crate::error::{DomainError, StoreError};
use crate::handle::ActorSlot;
use crate::store::EventsAfter;

/// How long a retry or a replay may take (a replay walks the instance's stored events).
const REPLAY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a settings change waits for the queue to handle the events before it.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// Which deliveries a replay queues again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayScope {
    /// The dead letters whose jobs were queued in the range.
    Failed,
    /// Every stored event in the range the instance's settings want, delivered or not
    /// (a dead letter among them is revived, keeping its attempt count).
    All,
}

/// Events re-read per step when catching up.
const CATCH_UP_BATCH: u32 = 500;
/// Ids remembered from a catch-up to drop their late duplicates from the mailbox.
const CAUGHT_KEPT: usize = 100_000;

/// The typed face of the queue. Cheap to clone; follows the queue across restarts.
#[derive(Clone)]
pub struct WebhookQueueHandle {
    slot: ActorSlot<QueueMsg>,
    outbox: Option<Arc<dyn Outbox>>,
    epoch: SettingsEpoch,
}

impl WebhookQueueHandle {
    pub(crate) fn new(outbox: Arc<dyn Outbox>) -> Self {
        WebhookQueueHandle {
            slot: ActorSlot::default(),
            outbox: Some(outbox),
            epoch: SettingsEpoch::default(),
        }
    }

    /// A handle to no queue: events forwarded to it go nowhere. For components used
    /// without webhooks (tests of the event hub, tools).
    pub fn detached() -> Self {
        WebhookQueueHandle {
            slot: ActorSlot::default(),
            outbox: None,
            epoch: SettingsEpoch::default(),
        }
    }

    /// The queue actor running now (tests kill it to see it respawned).
    pub fn cell(&self) -> Option<ActorCell> {
        self.slot.cell()
    }

    /// Hands a stored event to the queue. Never blocks. While the queue is being
    /// respawned the event is not lost: the new queue's catch-up reads it from storage.
    pub fn forward(&self, event: InstanceEvent) {
        if !self.slot.cast(QueueMsg::Event(event)) && self.outbox.is_some() {
            tracing::debug!("the webhook queue is restarting; its catch-up will queue the event");
        }
    }

    /// Delivery attempts of an instance, newest first.
    pub async fn deliveries(
        &self,
        instance_id: &str,
        limit: u32,
        skip: u64,
    ) -> Result<Page<DeliveryRecord>, StoreError> {
        match &self.outbox {
            Some(outbox) => outbox.deliveries(instance_id, limit, skip).await,
            None => Ok(Page {
                items: Vec::new(),
                total: 0,
            }),
        }
    }

    /// The instance's dead letters, oldest first.
    pub async fn dead_letters(&self, instance_id: &str) -> Result<Vec<DeadLetter>, StoreError> {
        match &self.outbox {
            Some(outbox) => outbox.dead_letters(instance_id).await,
            None => Ok(Vec::new()),
        }
    }

    /// Queues the dead letter of `event_id` again, at the end of the instance's queue,
    /// as its next attempt. Fails with `NotFound` when the event has no dead letter.
    pub async fn retry(&self, instance_id: &str, event_id: &str) -> Result<(), DomainError> {
        let (instance_id, event_id) = (instance_id.to_owned(), event_id.to_owned());
        let found = self
            .slot
            .call(REPLAY_TIMEOUT, "the webhook queue", |reply| {
                QueueMsg::Retry {
                    instance_id,
                    event_id,
                    reply,
                }
            })
            .await??;
        if found {
            Ok(())
        } else {
            Err(DomainError::NotFound(
                "no failed delivery of this event".into(),
            ))
        }
    }

    /// Queues again, in the order of the events, the deliveries of `scope` whose events
    /// happened in `[since, until]`; returns how many.
    pub async fn replay(
        &self,
        instance_id: &str,
        scope: ReplayScope,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<u64, DomainError> {
        let instance_id = instance_id.to_owned();
        let queued = self
            .slot
            .call(REPLAY_TIMEOUT, "the webhook queue", |reply| {
                QueueMsg::Replay {
                    instance_id,
                    scope,
                    since,
                    until,
                    reply,
                }
            })
            .await??;
        Ok(queued)
    }

    /// Pauses (`paused`) or resumes the instance's delivery; a resume delivers the
    /// backlog in order. Returns whether it is paused now. Pausing what is paused, or
    /// resuming what runs, changes nothing.
    ///
    /// Fails with `NotFound` when the instance is gone, `Unavailable` when storage is.
    pub async fn set_paused(&self, instance_id: &str, paused: bool) -> Result<bool, DomainError> {
        let instance_id = instance_id.to_owned();
        let done = self
            .slot
            .call(REPLAY_TIMEOUT, "the webhook queue", |reply| {
                QueueMsg::SetPaused {
                    instance_id,
                    paused,
                    reply,
                }
            })
            .await??;
        done.ok_or_else(|| DomainError::NotFound("no such instance".into()))
    }

    /// What waits in the outbox, per instance.
    pub async fn backlog(&self) -> Result<Vec<super::Backlog>, StoreError> {
        match &self.outbox {
            Some(outbox) => outbox.backlog().await,
            None => Ok(Vec::new()),
        }
    }

    /// Pending deliveries, all instances together.
    pub async fn depth(&self) -> Result<u64, StoreError> {
        match &self.outbox {
            Some(outbox) => outbox.depth().await,
            None => Ok(0),
        }
    }

    /// Waits (at most [`SYNC_TIMEOUT`]) until the queue has handled every event forwarded
    /// before now. Call it before storing a change of an instance's webhook URL or
    /// settings: the queue reads an instance it has not seen yet from storage when its
    /// first event comes, and an event forwarded before the change but handled after it
    /// would otherwise be judged by the new settings (a URL set on an instance that had
    /// none would get the events from before it). A queue that is restarting or slow is
    /// not waited for longer: the change goes on.
    pub async fn sync(&self) {
        if let Err(err) = self
            .slot
            .call(SYNC_TIMEOUT, "the webhook queue", QueueMsg::Sync)
            .await
        {
            tracing::debug!(%err, "the webhook queue did not answer before a settings change");
        }
    }

    /// The instance's webhook URL or settings changed in storage: the queue and its
    /// worker read them again for the next event and the next attempt. Call it once the
    /// change is stored and before any event of it is published.
    pub fn invalidate(&self, instance_id: &str) {
        self.epoch.advance();
        self.slot.cast(QueueMsg::Invalidate(instance_id.to_owned()));
    }

    /// Drops everything of a deleted instance (its worker stops).
    pub fn purge(&self, instance_id: &str) {
        self.slot.cast(QueueMsg::Purge(instance_id.to_owned()));
    }

    /// Cluster mode: this node took the instance's lease. Call it before the instance
    /// starts, so that the adoption comes before the instance's events in the queue's
    /// mailbox (see the module's "Cluster mode").
    pub fn adopt(&self, instance_id: &str) {
        self.slot.cast(QueueMsg::Adopt(instance_id.to_owned()));
    }

    /// Cluster mode: this node no longer holds the instance's lease; its worker stops
    /// (the jobs stay queued for the next owner).
    pub fn release(&self, instance_id: &str) {
        self.slot.cast(QueueMsg::Release(instance_id.to_owned()));
    }
}

/// Spawns the queue under `parent` and points `handle` at it. Its first message is a
/// catch-up, queued before any event can reach it.
pub(crate) async fn spawn(
    handle: &WebhookQueueHandle,
    config: WebhookConfig,
    parent: ActorCell,
) -> Result<ActorCell, ActorProcessingErr> {
    let args = QueueArgs {
        config,
        slot: handle.slot.clone(),
        epoch: handle.epoch.clone(),
    };
    let (actor, _) = Actor::spawn_linked(None, WebhookQueue, args, parent).await?;
    Ok(actor.get_cell())
}

/// The queue died: events go nowhere (they wait in storage for the next catch-up).
pub(crate) fn vacate(handle: &WebhookQueueHandle) {
    handle.slot.set(None);
}

pub(crate) enum QueueMsg {
    Event(InstanceEvent),
    /// Write what is staged (see the module's "Batches").
    Commit,
    /// Queue what storage holds after each cursor.
    CatchUp,
    /// A worker found its instance's queue empty.
    Idle(String),
    /// A worker found its instance paused.
    Parked(String),
    /// A worker's attempts have all failed since this instant, for too long.
    Failing {
        instance_id: String,
        since: DateTime<Utc>,
    },
    Invalidate(String),
    /// Answered once everything before it in the mailbox is handled.
    Sync(RpcReplyPort<()>),
    Purge(String),
    /// Cluster mode: this node took the instance's lease.
    Adopt(String),
    /// Cluster mode: this node gave up (or lost) the instance's lease.
    Release(String),
    SetPaused {
        instance_id: String,
        paused: bool,
        /// Whether it is paused now; None when the instance is gone.
        reply: RpcReplyPort<Result<Option<bool>, StoreError>>,
    },
    Retry {
        instance_id: String,
        event_id: String,
        reply: RpcReplyPort<Result<bool, StoreError>>,
    },
    Replay {
        instance_id: String,
        scope: ReplayScope,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        reply: RpcReplyPort<Result<u64, StoreError>>,
    },
}

struct WebhookQueue;

struct QueueArgs {
    config: WebhookConfig,
    slot: ActorSlot<QueueMsg>,
    epoch: SettingsEpoch,
}

struct QueueState {
    config: WebhookConfig,
    /// Shared with the handle and the workers.
    epoch: SettingsEpoch,
    /// Instance id → its running worker.
    workers: HashMap<String, ActorRef<WorkerMsg>>,
    /// The instances events came from, as last read from storage.
    instances: HashMap<String, Instance>,
    /// A catch-up is scheduled: events arriving meanwhile are left to it.
    catching_up: bool,
    /// Events the last catch-up queued; their forwarded copies are dropped.
    caught: HashSet<String>,
    /// Handled events not written to the outbox yet.
    staged: Staged,
    /// A `Commit` is in the mailbox.
    commit_queued: bool,
    /// Instance id → its last event, for instances that write nothing to the outbox
    /// (no webhook URL, or delivery switched off).
    silent: HashMap<String, String>,
    /// When this queue started.
    started: DateTime<Utc>,
}

/// Jobs and cursor moves waiting for one outbox write.
#[derive(Default)]
struct Staged {
    jobs: Vec<WebhookJob>,
    /// Instance id → the last event handled.
    cursors: HashMap<String, String>,
}

impl Staged {
    fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.cursors.is_empty()
    }

    /// Stages the event as a job when the instance wants it, and as its cursor move.
    /// With `silent`, an event of an instance without a target URL stages nothing and is
    /// remembered there instead.
    fn event(
        &mut self,
        instance: &Instance,
        event: &InstanceEvent,
        silent: Option<&mut HashMap<String, String>>,
    ) {
        let wanted = wants(instance, event);
        if !wanted
            && target_url(instance).is_none()
            && let Some(silent) = silent
        {
            silent.insert(event.instance_id.clone(), event.id.clone());
            return;
        }
        if wanted {
            self.jobs.push(job_of(event));
        }
        self.cursors
            .insert(event.instance_id.clone(), event.id.clone());
    }

    /// Writes what is staged (one outbox write); returns the instances that got jobs.
    async fn write(self, outbox: &dyn Outbox) -> Result<HashSet<String>, StoreError> {
        if self.is_empty() {
            return Ok(HashSet::new());
        }
        let with_jobs = self.jobs.iter().map(|j| j.instance_id.clone()).collect();
        outbox
            .push_many(self.jobs, self.cursors.into_iter().collect())
            .await?;
        Ok(with_jobs)
    }
}

impl Actor for WebhookQueue {
    type Msg = QueueMsg;
    type State = QueueState;
    type Arguments = QueueArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<QueueMsg>,
        args: QueueArgs,
    ) -> Result<QueueState, ActorProcessingErr> {
        // The catch-up goes first into the mailbox, then the handle points here: every
        // event forwarded from now on comes after it, and every event forwarded before
        // was stored before the catch-up reads storage.
        myself.cast(QueueMsg::CatchUp)?;
        args.slot.set(Some(myself.clone()));
        Ok(QueueState {
            config: args.config,
            epoch: args.epoch,
            workers: HashMap::new(),
            instances: HashMap::new(),
            catching_up: true,
            caught: HashSet::new(),
            staged: Staged::default(),
            commit_queued: false,
            silent: HashMap::new(),
            started: Utc::now(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<QueueMsg>,
        state: &mut QueueState,
    ) -> Result<(), ActorProcessingErr> {
        // A worker may be waiting on a slow receiver: kill, do not wait for it. Its job
        // stays in the outbox.
        for (_, worker) in state.workers.drain() {
            worker.kill();
        }
        // What is staged is stored as events already: the next catch-up queues it.
        if let Err(err) = std::mem::take(&mut state.staged)
            .write(state.config.outbox.as_ref())
            .await
        {
            tracing::warn!(%err, "cannot write the staged webhooks; the next catch-up queues them");
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<QueueMsg>,
        msg: QueueMsg,
        state: &mut QueueState,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(msg, QueueMsg::Event(_)) {
            // Whatever comes next sees the outbox with every event handled before it.
            commit(&myself, state).await;
        }
        match msg {
            QueueMsg::Event(event) => {
                if state.catching_up || state.caught.remove(&event.id) {
                    return Ok(());
                }
                let config = state.config.clone();
                match cached_instance(&config, &mut state.instances, &event.instance_id).await {
                    Ok(Some(instance)) => {
                        state
                            .staged
                            .event(instance, &event, Some(&mut state.silent));
                        if !state.commit_queued && !state.staged.is_empty() {
                            state.commit_queued = myself.cast(QueueMsg::Commit).is_ok();
                            if !state.commit_queued {
                                commit(&myself, state).await;
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(err) => {
                        tracing::error!(instance = %event.instance_id, event = %event.id, %err,
                            "cannot queue a webhook; catching up from storage shortly");
                        commit(&myself, state).await;
                        state.catching_up = true;
                        myself.send_after(OUTBOX_RETRY, || QueueMsg::CatchUp);
                    }
                }
            }
            QueueMsg::Commit => state.commit_queued = false,
            QueueMsg::CatchUp => match catch_up(state).await {
                Ok(()) => {
                    state.catching_up = false;
                    match state.config.outbox.pending_instances().await {
                        Ok(pending) => {
                            for instance_id in pending {
                                ensure_worker(&myself, state, &instance_id).await;
                            }
                        }
                        Err(err) => {
                            tracing::error!(%err, "cannot list pending webhooks; retrying");
                            state.catching_up = true;
                            myself.send_after(OUTBOX_RETRY, || QueueMsg::CatchUp);
                        }
                    }
                }
                Err(err) => {
                    tracing::error!(%err, "webhook catch-up failed; retrying");
                    myself.send_after(OUTBOX_RETRY, || QueueMsg::CatchUp);
                }
            },
            QueueMsg::Idle(instance_id) => {
                // Only the queue adds jobs, and it handles messages one at a time, so
                // this check cannot race with a push.
                match state.config.outbox.head(&instance_id).await {
                    Ok(None) => {
                        if let Some(worker) = state.workers.remove(&instance_id) {
                            worker.stop(None);
                        }
                    }
                    _ => {
                        if let Some(worker) = state.workers.get(&instance_id) {
                            let _ = worker.cast(WorkerMsg::Nudge);
                        }
                    }
                }
            }
            QueueMsg::Sync(reply) => {
                let _ = reply.send(());
            }
            QueueMsg::Invalidate(instance_id) => {
                state.instances.remove(&instance_id);
                if let Err(err) = settle_silent(state, &instance_id).await {
                    tracing::error!(instance = %instance_id, %err,
                        "cannot move a webhook cursor; catching up from storage shortly");
                    state.catching_up = true;
                    myself.send_after(OUTBOX_RETRY, || QueueMsg::CatchUp);
                }
                match state.workers.get(&instance_id) {
                    Some(worker) => {
                        // The ordering may have changed what is due: look again.
                        let _ = worker.cast(WorkerMsg::Nudge);
                    }
                    // Delivery may have been switched back on with a backlog waiting.
                    None => {
                        if let Ok(Some(_)) = state.config.outbox.head(&instance_id).await {
                            ensure_worker(&myself, state, &instance_id).await;
                        }
                    }
                }
            }
            QueueMsg::Parked(instance_id) => {
                // A resume may have been handled since the worker looked: read again.
                state.instances.remove(&instance_id);
                let config = state.config.clone();
                let paused = cached_instance(&config, &mut state.instances, &instance_id)
                    .await
                    .map(|i| i.is_none_or(|i| i.webhook.paused));
                match (paused, state.workers.get(&instance_id)) {
                    (Ok(false), Some(worker)) => {
                        let _ = worker.cast(WorkerMsg::Nudge);
                    }
                    (Err(_), Some(worker)) => {
                        worker.send_after(OUTBOX_RETRY, || WorkerMsg::Nudge);
                    }
                    _ => {
                        if let Some(worker) = state.workers.remove(&instance_id) {
                            worker.stop(None);
                        }
                    }
                }
            }
            QueueMsg::Failing { instance_id, since } => {
                let paused =
                    set_paused(state, &instance_id, true, PauseReason::Failing, Some(since)).await;
                match (paused, state.workers.get(&instance_id)) {
                    (Err(err), Some(worker)) => {
                        tracing::error!(instance = %instance_id, %err, "cannot pause a failing webhook; delivery goes on");
                        worker.send_after(OUTBOX_RETRY, || WorkerMsg::Nudge);
                    }
                    _ => {
                        if let Some(worker) = state.workers.remove(&instance_id) {
                            worker.stop(None);
                        }
                    }
                }
            }
            QueueMsg::SetPaused {
                instance_id,
                paused,
                reply,
            } => {
                let done = set_paused(state, &instance_id, paused, PauseReason::Manual, None).await;
                if let Ok(Some(false)) = done {
                    ensure_worker(&myself, state, &instance_id).await;
                }
                let _ = reply.send(done);
            }
            QueueMsg::Retry {
                instance_id,
                event_id,
                reply,
            } => {
                let revived = state.config.outbox.revive(&instance_id, &event_id).await;
                if let Ok(Some(_)) = revived {
                    ensure_worker(&myself, state, &instance_id).await;
                }
                let _ = reply.send(revived.map(|job| job.is_some()));
            }
            QueueMsg::Replay {
                instance_id,
                scope,
                since,
                until,
                reply,
            } => {
                let queued = replay(state, &instance_id, scope, since, until).await;
                if matches!(queued, Ok(n) if n > 0) {
                    ensure_worker(&myself, state, &instance_id).await;
                }
                let _ = reply.send(queued);
            }
            QueueMsg::Adopt(instance_id) => {
                state.instances.remove(&instance_id);
                state.silent.remove(&instance_id);
                match adopt(state, &instance_id).await {
                    Ok(true) => ensure_worker(&myself, state, &instance_id).await,
                    Ok(false) => {}
                    Err(err) => {
                        tracing::error!(instance = %instance_id, %err,
                            "cannot take over the webhook queue; catching up from storage shortly");
                        state.catching_up = true;
                        myself.send_after(OUTBOX_RETRY, || QueueMsg::CatchUp);
                    }
                }
            }
            QueueMsg::Release(instance_id) => {
                state.instances.remove(&instance_id);
                state.silent.remove(&instance_id);
                if let Some(worker) = state.workers.remove(&instance_id) {
                    worker.kill();
                }
            }
            QueueMsg::Purge(instance_id) => {
                state.instances.remove(&instance_id);
                if let Some(worker) = state.workers.remove(&instance_id) {
                    worker.kill();
                }
                if let Err(err) = state.config.outbox.purge(&instance_id).await {
                    tracing::warn!(instance = %instance_id, %err, "cannot purge webhook jobs");
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<QueueMsg>,
        event: SupervisionEvent,
        state: &mut QueueState,
    ) -> Result<(), ActorProcessingErr> {
        // A worker that failed is replaced; its job is still at the head of the outbox.
        if let SupervisionEvent::ActorFailed(cell, err) = event {
            let failed = worker_of(state, &cell);
            if let Some(instance_id) = failed {
                tracing::error!(instance = %instance_id, %err, "webhook worker failed; restarting it");
                state.workers.remove(&instance_id);
                ensure_worker(&myself, state, &instance_id).await;
            }
        }
        Ok(())
    }
}

fn worker_of(state: &QueueState, cell: &ActorCell) -> Option<String> {
    state
        .workers
        .iter()
        .find(|(_, w)| w.get_id() == cell.get_id())
        .map(|(id, _)| id.clone())
}

/// The instance, from `cache` or else from storage (then kept in `cache`).
async fn cached_instance<'c>(
    config: &WebhookConfig,
    cache: &'c mut HashMap<String, Instance>,
    instance_id: &str,
) -> Result<Option<&'c Instance>, StoreError> {
    if !cache.contains_key(instance_id) {
        match config.storage.instance_by_id(instance_id).await? {
            Some(instance) => {
                cache.insert(instance_id.to_owned(), instance);
            }
            None => return Ok(None),
        }
    }
    Ok(cache.get(instance_id))
}

/// Pauses or resumes the instance's delivery in storage, with an activity entry (and,
/// for a pause, a `webhook_paused` event); the queue and the worker read the instance
/// again. Returns whether it is paused now; None when the instance is gone.
async fn set_paused(
    state: &mut QueueState,
    instance_id: &str,
    paused: bool,
    reason: PauseReason,
    failing_since: Option<DateTime<Utc>>,
) -> Result<Option<bool>, StoreError> {
    let config = state.config.clone();
    let Some(mut instance) = config.storage.instance_by_id(instance_id).await? else {
        return Ok(None);
    };
    if instance.webhook.paused == paused {
        return Ok(Some(paused));
    }
    let now = Utc::now();
    instance.webhook.paused = paused;
    if !paused {
        instance.webhook.resumed_at = Some(now);
    }
    instance.updated_at = now;
    if !config.storage.update_instance(&instance).await? {
        return Ok(None);
    }
    state.epoch.advance();
    state.instances.remove(instance_id);
    let since = failing_since.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let (action, details) = if paused {
        (
            "webhook_paused",
            json!({"reason": reason, "failingSince": since}),
        )
    } else {
        ("webhook_resumed", json!({}))
    };
    config
        .storage
        .append_activity(&ActivityEntry::new(instance_id, action, details))
        .await?;
    if paused {
        let event = Event::WebhookPaused(WebhookPaused {
            reason,
            failing_since: since,
        });
        match &config.raise {
            Some(raise) => raise(instance_id.to_owned(), event).await?,
            None => {
                let event = InstanceEvent::new(instance_id, event);
                config.storage.append_event(&event).await?;
            }
        }
    }
    Ok(Some(paused))
}

/// Writes what is staged and starts (or nudges) the workers of the instances that got
/// jobs. When the outbox fails, nothing of it is lost: the cursors did not move, and a
/// catch-up from storage queues the events again.
async fn commit(myself: &ActorRef<QueueMsg>, state: &mut QueueState) {
    let staged = std::mem::take(&mut state.staged);
    match staged.write(state.config.outbox.as_ref()).await {
        Ok(with_jobs) => {
            for instance_id in with_jobs {
                ensure_worker(myself, state, &instance_id).await;
            }
        }
        Err(err) => {
            tracing::error!(%err, "cannot queue webhooks; catching up from storage shortly");
            state.catching_up = true;
            myself.send_after(OUTBOX_RETRY, || QueueMsg::CatchUp);
        }
    }
}

/// An instance that wrote nothing to the outbox (no webhook) and now has a webhook URL:
/// its cursor goes to its last event, so that a catch-up does not deliver its history.
/// That event is the last one the queue saw of it, or, for an instance older than the
/// queue that the outbox has no cursor for (it had no URL when the queue started, or the
/// start's catch-up would have written one), the last one in storage. An instance
/// created since has had every event pass through the queue: none is skipped for it.
async fn settle_silent(state: &mut QueueState, instance_id: &str) -> Result<(), StoreError> {
    let config = state.config.clone();
    let Some(instance) = cached_instance(&config, &mut state.instances, instance_id).await? else {
        state.silent.remove(instance_id);
        return Ok(());
    };
    if instance.webhook_url.as_deref().is_none_or(str::is_empty) {
        return Ok(());
    }
    let last = match state.silent.remove(instance_id) {
        Some(last) => last,
        // In cluster mode an instance created since may have had events on another node.
        None if (config.leases.is_none() && instance.created_at >= state.started)
            || config.outbox.cursor(instance_id).await?.is_some() =>
        {
            return Ok(());
        }
        None => {
            let mut events =
                EventsAfter::new(config.storage.as_ref(), instance_id, "", CATCH_UP_BATCH);
            let mut last = None;
            loop {
                let batch = events.next_batch().await?;
                match batch.last() {
                    Some(event) => last = Some(event.id.clone()),
                    None => break,
                }
            }
            match last {
                Some(last) => last,
                None => return Ok(()),
            }
        }
    };
    config
        .outbox
        .push_many(Vec::new(), vec![(instance_id.to_owned(), last)])
        .await?;
    Ok(())
}

/// Queues, in order, every stored event after each instance's cursor (in cluster mode,
/// of each instance this node holds the lease of).
async fn catch_up(state: &mut QueueState) -> Result<(), StoreError> {
    let config = state.config.clone();
    if state.caught.len() > CAUGHT_KEPT {
        state.caught.clear();
    }
    for instance in config.storage.list_instances(None).await? {
        if owns(&config, &instance.id) {
            catch_up_instance(state, &instance).await?;
        }
    }
    Ok(())
}

/// Queues, in order, every stored event of the instance after its cursor. An instance
/// with no cursor never had an event reach the outbox: when it has a webhook URL, its
/// events are walked from the first (the first since the outbox's origin).
async fn catch_up_instance(state: &mut QueueState, instance: &Instance) -> Result<(), StoreError> {
    let config = state.config.clone();
    let cursor = match config.outbox.cursor(&instance.id).await? {
        Some(cursor) => cursor,
        None if instance
            .webhook_url
            .as_deref()
            .is_some_and(|u| !u.is_empty()) =>
        {
            config.outbox.origin().unwrap_or_default().to_owned()
        }
        None => return Ok(()),
    };
    let mut events = EventsAfter::new(
        config.storage.as_ref(),
        &instance.id,
        &cursor,
        CATCH_UP_BATCH,
    );
    loop {
        let batch = events.next_batch().await?;
        if batch.is_empty() {
            break;
        }
        // One outbox write per batch; an instance without a webhook moves its cursor
        // too here, so the next catch-up does not walk these events again.
        let mut staged = Staged::default();
        for event in &batch {
            let Some(instance) =
                cached_instance(&config, &mut state.instances, &event.instance_id).await?
            else {
                continue;
            };
            staged.event(instance, event, None);
            state.caught.insert(event.id.clone());
        }
        staged.write(config.outbox.as_ref()).await?;
        state.silent.remove(&instance.id);
    }
    Ok(())
}

/// Takes the instance's queue over from its previous owner (cluster mode): later jobs
/// go after the queued ones, and the events it stored but did not queue are queued.
/// Returns whether the instance has jobs waiting.
async fn adopt(state: &mut QueueState, instance_id: &str) -> Result<bool, StoreError> {
    let config = state.config.clone();
    config.outbox.adopt(instance_id).await?;
    let Some(instance) = config.storage.instance_by_id(instance_id).await? else {
        return Ok(false);
    };
    catch_up_instance(state, &instance).await?;
    Ok(config.outbox.head(instance_id).await?.is_some())
}

/// Whether this node's queue handles the instance: always on one node; in cluster mode,
/// while the node holds its lease.
fn owns(config: &WebhookConfig, instance_id: &str) -> bool {
    config
        .leases
        .as_ref()
        .is_none_or(|holds| holds(instance_id))
}

/// Queues again what a replay of `scope` over `[since, until]` covers (see
/// [`ReplayScope`]); returns how many jobs.
async fn replay(
    state: &mut QueueState,
    instance_id: &str,
    scope: ReplayScope,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<u64, StoreError> {
    let config = state.config.clone();
    let in_range = |t: DateTime<Utc>| since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u);
    let mut queued = 0;
    if scope == ReplayScope::Failed {
        for dead in config.outbox.dead_letters(instance_id).await? {
            if in_range(dead.job.created_at)
                && config
                    .outbox
                    .revive(instance_id, &dead.job.event_id)
                    .await?
                    .is_some()
            {
                queued += 1;
            }
        }
        return Ok(queued);
    }
    let Some(instance) = config.storage.instance_by_id(instance_id).await? else {
        return Ok(0);
    };
    let mut events = EventsAfter::new(config.storage.as_ref(), instance_id, "", CATCH_UP_BATCH);
    loop {
        let batch = events.next_batch().await?;
        if batch.is_empty() {
            break;
        }
        for event in &batch {
            if until.is_some_and(|u| event.timestamp > u) {
                return Ok(queued);
            }
            if !in_range(event.timestamp) || !wants(&instance, event) {
                continue;
            }
            if config
                .outbox
                .revive(instance_id, &event.id)
                .await?
                .is_none()
            {
                config.outbox.requeue(job_of(event)).await?;
            }
            queued += 1;
        }
    }
    Ok(queued)
}

fn job_of(event: &InstanceEvent) -> WebhookJob {
    WebhookJob {
        seq: 0,
        instance_id: event.instance_id.clone(),
        event_id: event.id.clone(),
        event: event.kind().as_str().to_owned(),
        body: event.webhook_body(),
        attempts: 0,
        created_at: Utc::now(),
        not_before: None,
    }
}

/// Starts a worker for the instance unless its delivery is paused; nudges the one that
/// runs.
async fn ensure_worker(myself: &ActorRef<QueueMsg>, state: &mut QueueState, instance_id: &str) {
    if let Some(worker) = state.workers.get(instance_id) {
        // A new job may be due before the one the worker waits for (`unordered`).
        let _ = worker.cast(WorkerMsg::Nudge);
        return;
    }
    let config = state.config.clone();
    if !owns(&config, instance_id) {
        // Another node delivers it (its jobs wait in the shared outbox).
        return;
    }
    if let Ok(Some(instance)) = cached_instance(&config, &mut state.instances, instance_id).await
        && instance.webhook.paused
    {
        return;
    }
    let queue = myself.clone();
    let of = instance_id.to_owned();
    let worker = DeliveryWorker {
        instance_id: instance_id.to_owned(),
        config: state.config.clone(),
        epoch: state.epoch.clone(),
        report: Arc::new(move |report| {
            let instance_id = of.clone();
            let _ = queue.cast(match report {
                WorkerReport::Idle => QueueMsg::Idle(instance_id),
                WorkerReport::Parked => QueueMsg::Parked(instance_id),
                WorkerReport::Failing(since) => QueueMsg::Failing { instance_id, since },
            });
        }),
    };
    match Actor::spawn_linked(None, worker, (), myself.get_cell()).await {
        Ok((actor, _)) => {
            let _ = actor.cast(WorkerMsg::Nudge);
            state.workers.insert(instance_id.to_owned(), actor);
        }
        Err(err) => tracing::error!(instance = %instance_id, %err, "cannot start a webhook worker"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use tokio::sync::watch;

    use super::*;
    use crate::domain::{EngineKind, InstanceStatus, WebhookSettings};
    use crate::store::InstanceStore;
    use crate::testing::MemoryStorage;
    use crate::webhook_queue::{Backlog, WebhookRequest, WebhookTransport};

    /// One `push_many`: how many jobs, and the cursor moves.
    type Write = (usize, Vec<(String, String)>);

    /// An outbox that keeps only what was written to it, and can hold its first write
    /// until the test lets it go on.
    #[derive(Default)]
    struct Recording {
        writes: Mutex<Vec<Write>>,
        /// Set while the next write is to wait: it says so on the first, then waits for
        /// `true` on the second (see [`Recording::hold_first`]).
        hold: Mutex<Option<(watch::Sender<bool>, watch::Receiver<bool>)>>,
    }

    impl Recording {
        fn writes(&self) -> Vec<Write> {
            self.writes.lock().expect("lock").clone()
        }

        /// The next write waits: returns (a receiver that turns true once it waits, a
        /// sender that lets it go on when sent `true`).
        fn hold_first(&self) -> (watch::Receiver<bool>, watch::Sender<bool>) {
            let (waiting_tx, waiting_rx) = watch::channel(false);
            let (go_tx, go_rx) = watch::channel(false);
            *self.hold.lock().expect("lock") = Some((waiting_tx, go_rx));
            (waiting_rx, go_tx)
        }
    }

    #[async_trait]
    impl Outbox for Recording {
        async fn push_many(
            &self,
            jobs: Vec<WebhookJob>,
            mut cursors: Vec<(String, String)>,
        ) -> Result<Vec<WebhookJob>, StoreError> {
            cursors.sort();
            self.writes
                .lock()
                .expect("lock")
                .push((jobs.len(), cursors));
            let hold = self.hold.lock().expect("lock").take();
            if let Some((waiting, mut go)) = hold {
                let _ = waiting.send(true);
                let _ = go.wait_for(|go| *go).await;
            }
            Ok(jobs)
        }
        async fn cursor(&self, _: &str) -> Result<Option<String>, StoreError> {
            Ok(None)
        }
        async fn head(&self, _: &str) -> Result<Option<WebhookJob>, StoreError> {
            Ok(None)
        }
        async fn pending(&self, _: &str, _: usize) -> Result<Vec<WebhookJob>, StoreError> {
            Ok(Vec::new())
        }
        async fn update(&self, _: &WebhookJob) -> Result<(), StoreError> {
            Ok(())
        }
        async fn remove(&self, _: &WebhookJob) -> Result<(), StoreError> {
            Ok(())
        }
        async fn bury(&self, _: DeadLetter) -> Result<(), StoreError> {
            Ok(())
        }
        async fn dead_letters(&self, _: &str) -> Result<Vec<DeadLetter>, StoreError> {
            Ok(Vec::new())
        }
        async fn revive(&self, _: &str, _: &str) -> Result<Option<WebhookJob>, StoreError> {
            Ok(None)
        }
        async fn requeue(&self, job: WebhookJob) -> Result<WebhookJob, StoreError> {
            Ok(job)
        }
        async fn pending_instances(&self) -> Result<Vec<String>, StoreError> {
            Ok(Vec::new())
        }
        async fn depth(&self) -> Result<u64, StoreError> {
            Ok(0)
        }
        async fn backlog(&self) -> Result<Vec<Backlog>, StoreError> {
            Ok(Vec::new())
        }
        async fn record(&self, _: &str, _: DeliveryRecord) -> Result<(), StoreError> {
            Ok(())
        }
        async fn deliveries(
            &self,
            _: &str,
            _: u32,
            _: u64,
        ) -> Result<Page<DeliveryRecord>, StoreError> {
            Ok(Page {
                items: Vec::new(),
                total: 0,
            })
        }
        async fn purge(&self, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
    }

    struct Accepting;

    #[async_trait]
    impl WebhookTransport for Accepting {
        async fn post(&self, _: WebhookRequest) -> Result<u16, String> {
            Ok(200)
        }
    }

    fn instance(id: &str, webhook_url: Option<&str>) -> Instance {
        Instance {
            id: id.into(),
            user_id: "u1".into(),
            name: id.into(),
            description: None,
            engine: EngineKind::Sandbox,
            status: InstanceStatus::Connected,
            phone: None,
            webhook_url: webhook_url.map(str::to_owned),
            webhook_enabled: true,
            webhook: WebhookSettings::default(),
            limits: None,
            last_activity: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn connected(instance_id: &str) -> InstanceEvent {
        InstanceEvent::new(
            instance_id,
            Event::from_data(
                crate::domain::EventKind::Connected,
                serde_json::json!({"phone": "1"}),
            )
            .expect("data fits"),
        )
    }

    async fn queue(
        instances: &[Instance],
    ) -> (
        WebhookQueueHandle,
        Arc<Recording>,
        Arc<MemoryStorage>,
        ActorRef<QueueMsg>,
    ) {
        let storage = Arc::new(MemoryStorage::default());
        for i in instances {
            storage.create_instance(i).await.expect("instance");
        }
        let outbox = Arc::new(Recording::default());
        let handle = WebhookQueueHandle::new(outbox.clone());
        let config = WebhookConfig {
            storage: storage.clone(),
            outbox: outbox.clone(),
            transport: Arc::new(Accepting),
            jitter: false,
            on_result: None,
            leases: None,
            auto_pause_after: None,
            raise: None,
        };
        let args = QueueArgs {
            config,
            slot: handle.slot.clone(),
            epoch: handle.epoch.clone(),
        };
        let (actor, _) = Actor::spawn(None, WebhookQueue, args).await.expect("spawn");
        (handle, outbox, storage, actor)
    }

    /// Returns once the queue has handled every message sent before (a call through its
    /// mailbox).
    async fn settled(handle: &WebhookQueueHandle) {
        let err = handle
            .retry("none", "none")
            .await
            .expect_err("no dead letter");
        assert!(matches!(err, DomainError::NotFound(_)), "{err}");
    }

    #[tokio::test]
    async fn the_events_of_one_mailbox_drain_are_one_outbox_write() {
        let (handle, outbox, _, actor) =
            queue(&[instance("i1", Some("http://127.0.0.1:9/hook"))]).await;
        settled(&handle).await;
        let (mut waiting, go) = outbox.hold_first();
        handle.forward(connected("i1"));
        waiting
            .wait_for(|w| *w)
            .await
            .expect("the first write waits");
        // These wait in the mailbox while the first write is held.
        let events: Vec<InstanceEvent> = (0..20).map(|_| connected("i1")).collect();
        for e in &events {
            handle.forward(e.clone());
        }
        go.send(true).expect("go");
        settled(&handle).await;
        let last = events.last().map(|e| e.id.clone()).expect("events");
        let writes = outbox.writes();
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert_eq!(writes[1], (20, vec![("i1".to_owned(), last)]));
        actor.stop(None);
    }

    #[tokio::test]
    async fn an_instance_without_a_webhook_writes_nothing_until_it_gets_one() {
        let (handle, outbox, storage, actor) = queue(&[instance("i2", None)]).await;
        let events: Vec<InstanceEvent> = (0..5).map(|_| connected("i2")).collect();
        for e in &events {
            handle.forward(e.clone());
        }
        settled(&handle).await;
        assert_eq!(outbox.writes(), Vec::<Write>::new());
        // A URL is set: the cursor goes to the last event seen, with no job.
        let mut hooked = instance("i2", Some("http://127.0.0.1:9/hook"));
        hooked.updated_at = Utc::now();
        assert!(storage.update_instance(&hooked).await.expect("update"));
        handle.invalidate("i2");
        settled(&handle).await;
        let last = events.last().map(|e| e.id.clone()).expect("events");
        assert_eq!(outbox.writes(), vec![(0, vec![("i2".to_owned(), last)])]);
        actor.stop(None);
    }
}
