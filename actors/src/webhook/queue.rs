//! The webhook queue: one `WebhookQueue` actor takes every event, keeps the ones each
//! instance wants in the durable outbox, and runs one `DeliveryWorker` per instance that
//! has pending jobs. A worker delivers its instance's jobs strictly in order (retrying
//! the head until it succeeds or gives up), so order holds per instance while instances
//! deliver concurrently and a dead endpoint only ever holds up its own instance.
//!
//! Memory stays bounded whatever the backlog: jobs live in the outbox; a worker holds one
//! job at a time, and an instance without pending jobs has no worker.
//!
//! The queue and each worker keep a copy of their instance (webhook URL and settings)
//! instead of reading it from storage for every event and every attempt; whoever changes
//! an instance's settings in storage calls [`WebhookQueueHandle::invalidate`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use rand::Rng;

use super::{
    DeliveryRecord, DeliveryStatus, Outbox, WebhookJob, WebhookRequest, WebhookTransport, envelope,
    headers, retry_delay, target_url, wants,
};
use crate::domain::{EventQuery, Instance, InstanceEvent, Page};
use crate::error::{DomainError, StoreError};
use crate::storage::DynStorage;

/// Events re-read per step when catching up after a crash.
const RECONCILE_BATCH: u32 = 500;
/// How long a failing outbox waits before a worker tries again.
const OUTBOX_RETRY: Duration = Duration::from_secs(1);

/// What the queue needs.
#[derive(Clone)]
pub struct WebhookConfig {
    pub storage: DynStorage,
    pub outbox: Arc<dyn Outbox>,
    pub transport: Arc<dyn WebhookTransport>,
    /// Randomise retry delays (±20 %). Off only in tests that check exact schedules.
    pub jitter: bool,
    /// Counts delivered webhooks (`webhookSent`); None where nothing is counted.
    pub stats: Option<crate::stats::StatsHandle>,
    /// Told the outcome of every attempt as it is recorded (metrics); None where nobody
    /// listens.
    pub on_result: Option<DeliveryObserver>,
}

/// Called with the outcome of every delivery attempt.
pub type DeliveryObserver = Arc<dyn Fn(DeliveryStatus) + Send + Sync>;

/// The typed face of the queue. Cheap to clone.
#[derive(Clone)]
pub struct WebhookQueueHandle {
    actor: ActorRef<QueueMsg>,
    outbox: Arc<dyn Outbox>,
    /// Completes when the queue actor has stopped; taken by the first shutdown.
    stopped: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

/// Starts the queue: first catches up on events stored but not yet handed to the outbox
/// (a crash between the two), then resumes every instance with pending jobs.
///
/// Fails with `Unavailable` when the actor cannot start or the outbox cannot be read.
pub async fn start_webhook_queue(config: WebhookConfig) -> Result<WebhookQueueHandle, DomainError> {
    let outbox = config.outbox.clone();
    let (actor, join) = Actor::spawn(None, WebhookQueue, config)
        .await
        .map_err(|e| DomainError::Unavailable(format!("cannot start the webhook queue: {e}")))?;
    Ok(WebhookQueueHandle {
        actor,
        outbox,
        stopped: Arc::new(tokio::sync::Mutex::new(Some(join))),
    })
}

impl WebhookQueueHandle {
    /// Hands an event to the queue. Never blocks: the queue's mailbox takes it at once
    /// and the queue stores it in the outbox in arrival order.
    pub fn forward(&self, event: InstanceEvent) {
        if self.actor.cast(QueueMsg::Event(event)).is_err() {
            tracing::error!("the webhook queue is not running; an event was not queued");
        }
    }

    /// Delivery attempts of an instance, newest first.
    pub async fn deliveries(
        &self,
        instance_id: &str,
        limit: u32,
        skip: u64,
    ) -> Result<Page<DeliveryRecord>, StoreError> {
        self.outbox.deliveries(instance_id, limit, skip).await
    }

    /// Pending deliveries, all instances together.
    pub async fn depth(&self) -> Result<u64, StoreError> {
        self.outbox.depth().await
    }

    /// The instance's webhook URL or settings changed in storage: the queue and its
    /// worker read them again for the next event and the next attempt.
    pub fn invalidate(&self, instance_id: &str) {
        let _ = self
            .actor
            .cast(QueueMsg::Invalidate(instance_id.to_owned()));
    }

    /// Drops everything of a deleted instance (its worker stops).
    pub fn purge(&self, instance_id: &str) {
        let _ = self.actor.cast(QueueMsg::Purge(instance_id.to_owned()));
    }

    /// Stops the queue and its workers. Pending jobs stay in the outbox for the next
    /// start; an attempt cut short is made again then (delivery is at least once).
    pub async fn shutdown(&self) {
        self.actor.stop(None);
        if let Some(join) = self.stopped.lock().await.take()
            && tokio::time::timeout(Duration::from_secs(5), join)
                .await
                .is_err()
        {
            tracing::warn!("the webhook queue did not stop within 5 s");
        }
    }
}

pub enum QueueMsg {
    Event(InstanceEvent),
    /// A worker found its instance's queue empty.
    Idle(String),
    Invalidate(String),
    Purge(String),
}

struct WebhookQueue;

struct QueueState {
    config: WebhookConfig,
    /// Instance id → its running worker.
    workers: HashMap<String, ActorRef<WorkerMsg>>,
    /// The instances events came from, as last read from storage.
    instances: HashMap<String, Instance>,
}

impl Actor for WebhookQueue {
    type Msg = QueueMsg;
    type State = QueueState;
    type Arguments = WebhookConfig;

    async fn pre_start(
        &self,
        myself: ActorRef<QueueMsg>,
        config: WebhookConfig,
    ) -> Result<QueueState, ActorProcessingErr> {
        let mut state = QueueState {
            config,
            workers: HashMap::new(),
            instances: HashMap::new(),
        };
        reconcile(&state.config, &mut state.instances).await?;
        for instance_id in state.config.outbox.pending_instances().await? {
            ensure_worker(&myself, &mut state, &instance_id).await;
        }
        Ok(state)
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
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<QueueMsg>,
        msg: QueueMsg,
        state: &mut QueueState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            QueueMsg::Event(event) => {
                if let Err(err) = accept(&state.config, &mut state.instances, &event).await {
                    tracing::error!(instance = %event.instance_id, event = %event.id, %err, "cannot queue a webhook");
                    return Ok(());
                }
                ensure_worker(&myself, state, &event.instance_id).await;
            }
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
                            let _ = worker.cast(WorkerMsg::Run);
                        }
                    }
                }
            }
            QueueMsg::Invalidate(instance_id) => {
                state.instances.remove(&instance_id);
                if let Some(worker) = state.workers.get(&instance_id) {
                    let _ = worker.cast(WorkerMsg::Invalidate);
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

/// Stores the event as a job when its instance wants it; moves the cursor either way.
async fn accept(
    config: &WebhookConfig,
    cache: &mut HashMap<String, Instance>,
    event: &InstanceEvent,
) -> Result<(), StoreError> {
    let Some(instance) = cached_instance(config, cache, &event.instance_id).await? else {
        return Ok(());
    };
    if !wants(instance, event) {
        return config.outbox.skip(&event.instance_id, &event.id).await;
    }
    config
        .outbox
        .push(WebhookJob {
            seq: 0,
            instance_id: event.instance_id.clone(),
            event_id: event.id.clone(),
            event: event.kind.clone(),
            body: envelope(event),
            attempts: 0,
            created_at: Utc::now(),
        })
        .await
        .map(|_| ())
}

/// Events stored after an instance's cursor never reached the outbox (the process died
/// in between): queue them now, in order.
async fn reconcile(
    config: &WebhookConfig,
    cache: &mut HashMap<String, Instance>,
) -> Result<(), StoreError> {
    for instance in config.storage.list_instances(None).await? {
        let Some(mut cursor) = config.outbox.cursor(&instance.id).await? else {
            continue;
        };
        loop {
            let query = EventQuery {
                after_id: Some(cursor.clone()),
                limit: RECONCILE_BATCH,
                ..Default::default()
            };
            let (events, more) = config.storage.list_events(&instance.id, &query).await?;
            for event in &events {
                accept(config, cache, event).await?;
                cursor = event.id.clone();
            }
            if !more {
                break;
            }
        }
    }
    Ok(())
}

async fn ensure_worker(myself: &ActorRef<QueueMsg>, state: &mut QueueState, instance_id: &str) {
    if state.workers.contains_key(instance_id) {
        return;
    }
    let worker = DeliveryWorker {
        instance_id: instance_id.to_owned(),
        config: state.config.clone(),
        queue: myself.clone(),
    };
    match Actor::spawn_linked(None, worker, (), myself.get_cell()).await {
        Ok((actor, _)) => {
            let _ = actor.cast(WorkerMsg::Run);
            state.workers.insert(instance_id.to_owned(), actor);
        }
        Err(err) => tracing::error!(instance = %instance_id, %err, "cannot start a webhook worker"),
    }
}

pub enum WorkerMsg {
    /// Attempt the head job (again).
    Run,
    /// Read the instance from storage again before the next attempt.
    Invalidate,
}

struct DeliveryWorker {
    instance_id: String,
    config: WebhookConfig,
    queue: ActorRef<QueueMsg>,
}

impl Actor for DeliveryWorker {
    type Msg = WorkerMsg;
    /// The instance as last read from storage (None until the first attempt).
    type State = Option<Instance>;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        _: (),
    ) -> Result<Option<Instance>, ActorProcessingErr> {
        Ok(None)
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        cached: &mut Option<Instance>,
    ) -> Result<(), ActorProcessingErr> {
        if let WorkerMsg::Invalidate = msg {
            *cached = None;
            return Ok(());
        }
        match self.attempt_head(cached).await {
            Ok(Next::Now) => {
                let _ = myself.cast(WorkerMsg::Run);
            }
            Ok(Next::After(delay)) => {
                myself.send_after(delay, || WorkerMsg::Run);
            }
            Ok(Next::Idle) => {
                let _ = self.queue.cast(QueueMsg::Idle(self.instance_id.clone()));
            }
            Err(err) => {
                tracing::warn!(instance = %self.instance_id, %err, "webhook outbox unavailable; retrying");
                myself.send_after(OUTBOX_RETRY, || WorkerMsg::Run);
            }
        }
        Ok(())
    }
}

enum Next {
    Now,
    After(Duration),
    Idle,
}

impl DeliveryWorker {
    async fn attempt_head(&self, cached: &mut Option<Instance>) -> Result<Next, StoreError> {
        let outbox = &self.config.outbox;
        let Some(mut job) = outbox.head(&self.instance_id).await? else {
            return Ok(Next::Idle);
        };
        let attempt = job.attempts + 1;
        let record = |status, http_status, error: Option<String>, duration_ms| {
            if let Some(observe) = &self.config.on_result {
                observe(status);
            }
            DeliveryRecord {
                event_id: job.event_id.clone(),
                event: job.event.clone(),
                attempt,
                status,
                http_status,
                error,
                duration_ms,
                created_at: Utc::now(),
            }
        };
        if cached.is_none() {
            *cached = self
                .config
                .storage
                .instance_by_id(&self.instance_id)
                .await?;
        }
        let instance = cached.clone();
        let url = instance.as_ref().and_then(|i| {
            if job.event == "webhook_test" {
                i.webhook_url.as_deref().filter(|u| !u.is_empty())
            } else {
                target_url(i)
            }
        });
        let (Some(instance), Some(url)) = (instance.as_ref(), url) else {
            // Webhooks were switched off (or the instance deleted) after the job was queued.
            outbox
                .record(
                    &self.instance_id,
                    record(
                        DeliveryStatus::Failed,
                        None,
                        Some("webhooks are disabled for this instance".into()),
                        0,
                    ),
                )
                .await?;
            outbox.remove(&job).await?;
            return Ok(Next::Now);
        };
        let request = WebhookRequest {
            url: url.to_owned(),
            headers: headers(instance, &job, attempt, Utc::now()),
            body: job.body.clone(),
        };
        let started = Instant::now();
        let result = self.config.transport.post(request).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (http_status, error) = match result {
            Ok(status) if (200..300).contains(&status) => {
                if let Some(stats) = &self.config.stats {
                    let sent = crate::stats::Usage {
                        webhook_sent: 1,
                        ..Default::default()
                    };
                    stats.add(&instance.user_id, Some(&instance.id), sent);
                }
                outbox
                    .record(
                        &self.instance_id,
                        record(DeliveryStatus::Delivered, Some(status), None, duration_ms),
                    )
                    .await?;
                outbox.remove(&job).await?;
                return Ok(Next::Now);
            }
            Ok(status) => (
                Some(status),
                Some(format!("the receiver answered {status}")),
            ),
            Err(err) => (None, Some(err)),
        };
        job.attempts = attempt;
        if attempt > instance.webhook.max_retries {
            outbox
                .record(
                    &self.instance_id,
                    record(DeliveryStatus::Failed, http_status, error, duration_ms),
                )
                .await?;
            outbox.remove(&job).await?;
            return Ok(Next::Now);
        }
        outbox
            .record(
                &self.instance_id,
                record(DeliveryStatus::Retrying, http_status, error, duration_ms),
            )
            .await?;
        outbox.update(&job).await?;
        let jitter = if self.config.jitter {
            rand::rng().random_range(0.8..=1.2)
        } else {
            1.0
        };
        Ok(Next::After(retry_delay(
            instance.webhook.retry_interval_ms,
            attempt,
            jitter,
        )))
    }
}
