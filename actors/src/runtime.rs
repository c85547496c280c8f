//! Starting and stopping the actor runtime: the one entry point the server calls, and the
//! one place that wires the parts together (the event hub into the webhook queue, the
//! stats counter into the instances and the delivery observer).
//!
//! Start order: the webhook queue (its catch-up first), the stats counter, the operator
//! desk, then the instance supervisor. Shutdown runs the other way round, instances
//! first, so that what they publish while stopping is still queued and counted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RactorErr};

use crate::backoff::BackoffConfig;
use crate::cluster::{
    self, ClusterSettings, LeaseBoard, LeaseManagerHandle, LeaseStore, SessionVault,
};
use crate::desk::{self, GraphApi, OperatorDeskHandle};
use crate::domain::{Clock, SystemClock, Usage};
use crate::engine::EngineFactory;
use crate::error::DomainError;
use crate::event_hub::{EventHub, EventObserver};
use crate::instance::{
    DEFAULT_CALL_TIMEOUT, InstanceDeps, InstanceSupervisor, InstancesHandle, StatusBoard,
};
use crate::media_store::SharedMedia;
use crate::root::{ROOT_BACKOFF, RootMsg, RootSupervisor, Service};
use crate::stats::{self, DEFAULT_FLUSH_INTERVAL, StatsHandle};
use crate::store::DynStorage;
use crate::webhook_queue::{
    self, DeliveryObserver, Holds, Outbox, WebhookConfig, WebhookQueueHandle, WebhookTransport,
};

/// Everything the runtime is made of. [`RuntimeConfig::new`] gives the defaults of a
/// runtime without webhooks or operator desk (tests); the server fills in the rest.
#[derive(Clone)]
pub struct RuntimeConfig {
    pub storage: DynStorage,
    pub engines: Arc<dyn EngineFactory>,
    /// Session stores live in `data_dir/instances/<id>/`.
    pub data_dir: PathBuf,
    /// Every call into an actor gives up after this long.
    pub call_timeout: Duration,
    /// Restart delays of instance actors.
    pub backoff: BackoffConfig,
    /// The clock of usage days and limit periods.
    pub clock: Arc<dyn Clock>,
    /// How often usage counts go to storage.
    pub stats_flush_every: Duration,
    /// Durable webhook delivery; None: events are stored and streamed, never posted.
    pub webhooks: Option<WebhookParts>,
    /// The WABA operator desk; None: no desk runs.
    pub desk: Option<DeskParts>,
    /// Told the kind of every published event (metrics).
    pub on_event: Option<EventObserver>,
    /// Cluster mode: instances run only while this node holds their lease. None: this
    /// node runs every instance.
    pub cluster: Option<ClusterParts>,
}

/// Cluster mode's edges.
#[derive(Clone)]
pub struct ClusterParts {
    pub settings: ClusterSettings,
    pub store: Arc<dyn LeaseStore>,
    pub vault: Arc<dyn SessionVault>,
    pub board: LeaseBoard,
    /// Where media files are kept so every node can read them.
    pub media: Arc<dyn SharedMedia>,
}

/// The webhook queue's edges.
#[derive(Clone)]
pub struct WebhookParts {
    pub outbox: Arc<dyn Outbox>,
    pub transport: Arc<dyn WebhookTransport>,
    /// Randomise retry delays (±20 %). Off only in tests that check exact schedules.
    pub jitter: bool,
    /// Told the outcome of every attempt (metrics). Delivered webhooks are counted in
    /// the usage statistics whatever this is.
    pub on_result: Option<DeliveryObserver>,
    /// Pause an instance's delivery once every attempt has failed for this long; None:
    /// never.
    pub auto_pause_after: Option<Duration>,
}

/// The operator desk's edges.
#[derive(Clone)]
pub struct DeskParts {
    pub graph: Arc<dyn GraphApi>,
    /// Bounds calls into a chat actor: more than the Graph client's longest send.
    pub chat_timeout: Duration,
    /// How long a chat actor lives without a request.
    pub chat_idle: Duration,
    /// Live feed events kept for subscribers that resume.
    pub event_retention: usize,
}

impl RuntimeConfig {
    /// A runtime over `storage` and `engines` with default timeouts, the system clock,
    /// and neither webhooks nor desk.
    pub fn new(storage: DynStorage, engines: Arc<dyn EngineFactory>, data_dir: PathBuf) -> Self {
        RuntimeConfig {
            storage,
            engines,
            data_dir,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            backoff: BackoffConfig::default(),
            clock: Arc::new(SystemClock),
            stats_flush_every: DEFAULT_FLUSH_INTERVAL,
            webhooks: None,
            desk: None,
            on_event: None,
            cluster: None,
        }
    }
}

/// The running actor system, as handles. Cheap to clone; every handle follows its actor
/// across respawns.
#[derive(Clone)]
pub struct Runtime {
    pub instances: InstancesHandle,
    pub events: EventHub,
    pub status: StatusBoard,
    pub stats: StatsHandle,
    pub webhooks: WebhookQueueHandle,
    /// Present when the configuration has a desk.
    pub desk: Option<OperatorDeskHandle>,
    /// Present in cluster mode.
    pub leases: Option<LeaseManagerHandle>,
    root: ActorRef<RootMsg>,
    call_timeout: Duration,
}

/// Starts the root supervisor and, under it, the services and the instance supervisor.
/// Instances are not started yet: call [`InstancesHandle::restore_all`] once the server
/// is ready for them.
///
/// Fails with `Unavailable` when an actor cannot be spawned.
pub async fn start_runtime(config: RuntimeConfig) -> Result<Runtime, DomainError> {
    let RuntimeConfig {
        storage,
        engines,
        data_dir,
        call_timeout,
        backoff,
        clock,
        stats_flush_every,
        webhooks: webhook_parts,
        desk: desk_parts,
        on_event,
        cluster,
    } = config;
    let mut services: Vec<Arc<dyn Service>> = Vec::new();

    let stats = StatsHandle::new(clock.clone(), call_timeout);
    let webhooks = match &webhook_parts {
        Some(parts) => WebhookQueueHandle::new(parts.outbox.clone()),
        None => WebhookQueueHandle::detached(),
    };
    let events = EventHub::new(storage.clone(), webhooks.clone(), on_event);
    if let Some(parts) = webhook_parts {
        let hub = events.clone();
        let config = WebhookConfig {
            storage: storage.clone(),
            outbox: parts.outbox,
            transport: parts.transport,
            jitter: parts.jitter,
            on_result: Some(count_deliveries(stats.clone(), parts.on_result)),
            leases: cluster.as_ref().map(|parts| {
                let board = parts.board.clone();
                let holds: Holds = Arc::new(move |id: &str| board.epoch(id).is_some());
                holds
            }),
            auto_pause_after: parts.auto_pause_after,
            raise: Some(Arc::new(move |id, event| {
                let hub = hub.clone();
                Box::pin(async move { hub.raise(&id, event).await })
            })),
        };
        services.push(Arc::new(QueueService {
            handle: webhooks.clone(),
            config,
        }));
    }
    services.push(Arc::new(StatsService {
        handle: stats.clone(),
        args: stats::StatsArgs {
            storage: storage.clone(),
            events: events.clone(),
            clock,
            flush_every: stats_flush_every,
            unsent: stats.unsent.clone(),
        },
    }));
    let desk = desk_parts.map(|parts| {
        let handle = OperatorDeskHandle::new(
            call_timeout,
            parts.chat_timeout,
            parts.chat_idle,
            parts.event_retention,
        );
        let args = handle.args(storage.clone(), parts.graph);
        services.push(Arc::new(DeskService {
            handle: handle.clone(),
            args,
        }));
        handle
    });

    let deps = InstanceDeps {
        storage: storage.clone(),
        events: events.clone(),
        engines,
        data_dir,
        call_timeout,
        backoff,
        stats: stats.clone(),
        vault: cluster.as_ref().map(|parts| parts.vault.clone()),
        shared_media: cluster.as_ref().map(|parts| parts.media.clone()),
    };
    let status = StatusBoard::default();
    let supervisor = InstanceSupervisor::new(deps, status.clone());
    let instances = InstancesHandle::new(&supervisor);
    {
        let instances = instances.clone();
        events.relay_through(Arc::new(move |id, event| instances.relay(id, event)));
    }
    // Last of the services: stopped first, once the instances have stopped, releasing
    // their leases.
    let leases = cluster.map(|parts| {
        let handle = LeaseManagerHandle::new(parts.board.clone(), parts.settings.clone());
        services.push(Arc::new(LeaseService {
            handle: handle.clone(),
            args: cluster::LeaseArgs {
                settings: parts.settings,
                store: parts.store,
                storage: storage.clone(),
                instances: instances.clone(),
                board: parts.board,
                webhooks: webhooks.clone(),
            },
        }));
        handle
    });
    let root = RootSupervisor::new(
        supervisor,
        instances.clone(),
        services,
        storage,
        ROOT_BACKOFF,
        call_timeout,
    );
    let (root, _) = Actor::spawn(None, root, ())
        .await
        .map_err(|err| DomainError::Unavailable(format!("the actors did not start: {err}")))?;
    Ok(Runtime {
        instances,
        events,
        status,
        stats,
        webhooks,
        desk,
        leases,
        root,
        call_timeout,
    })
}

/// The delivery observer: counts delivered webhooks (`webhookSent`), then tells `next`.
fn count_deliveries(stats: StatsHandle, next: Option<DeliveryObserver>) -> DeliveryObserver {
    Arc::new(move |record, instance| {
        if record.status == webhook_queue::DeliveryStatus::Delivered
            && let Some(instance) = instance
        {
            let sent = Usage {
                webhook_sent: 1,
                ..Usage::default()
            };
            stats.add(&instance.user_id, Some(&instance.id), sent);
        }
        if let Some(next) = &next {
            next(record, instance);
        }
    })
}

impl Runtime {
    /// Stops the tree from the leaves up: every instance (engines stopped, sessions and
    /// stored statuses kept for the next start), then the instance supervisor, the
    /// operator desk, the stats counter (its counts flushed) and the webhook queue
    /// (pending jobs stay in the outbox), then the root. Calling it again does nothing.
    pub async fn shutdown(&self) {
        // The root waits for the instances (two call timeouts), their supervisor (one)
        // and each service (one each).
        match self
            .root
            .call(RootMsg::Shutdown, Some(self.call_timeout * 8))
            .await
        {
            Ok(CallResult::Success(())) => {}
            Ok(CallResult::Timeout) => tracing::warn!("the actors did not stop in time"),
            Ok(CallResult::SenderError) | Err(_) => return, // already stopped
        }
        if let Err(RactorErr::Timeout) = self
            .root
            .stop_and_wait(Some("shutdown".into()), Some(self.call_timeout))
            .await
        {
            tracing::warn!("the root supervisor did not stop in time");
        }
    }

    /// The cell of the root supervisor, for tests.
    #[cfg(test)]
    pub(crate) fn root_cell(&self) -> ractor::ActorCell {
        self.root.get_cell()
    }
}

struct QueueService {
    handle: WebhookQueueHandle,
    config: WebhookConfig,
}

#[async_trait]
impl Service for QueueService {
    fn name(&self) -> &'static str {
        "webhook queue"
    }
    async fn spawn(&self, root: ActorCell) -> Result<ActorCell, ActorProcessingErr> {
        webhook_queue::spawn(&self.handle, self.config.clone(), root).await
    }
    fn vacate(&self) {
        webhook_queue::vacate(&self.handle);
    }
}

struct StatsService {
    handle: StatsHandle,
    args: stats::StatsArgs,
}

#[async_trait]
impl Service for StatsService {
    fn name(&self) -> &'static str {
        "stats counter"
    }
    async fn spawn(&self, root: ActorCell) -> Result<ActorCell, ActorProcessingErr> {
        stats::spawn(&self.handle, self.args.clone(), root).await
    }
    fn vacate(&self) {
        stats::vacate(&self.handle);
    }
}

struct DeskService {
    handle: OperatorDeskHandle,
    args: desk::DeskArgs,
}

#[async_trait]
impl Service for DeskService {
    fn name(&self) -> &'static str {
        "operator desk"
    }
    async fn spawn(&self, root: ActorCell) -> Result<ActorCell, ActorProcessingErr> {
        desk::spawn(&self.handle, self.args.clone(), Some(root)).await
    }
    fn vacate(&self) {
        desk::vacate(&self.handle);
    }
    async fn stop(&self, _cell: ActorCell, _timeout: Duration) {
        self.handle.shutdown().await;
    }
}

struct LeaseService {
    handle: LeaseManagerHandle,
    args: cluster::LeaseArgs,
}

#[async_trait]
impl Service for LeaseService {
    fn name(&self) -> &'static str {
        "lease manager"
    }
    async fn spawn(&self, root: ActorCell) -> Result<ActorCell, ActorProcessingErr> {
        cluster::spawn(&self.handle, self.args.clone(), root).await
    }
    fn vacate(&self) {
        cluster::vacate(&self.handle);
    }
}

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod instance_tests;
#[cfg(test)]
mod supervision_tests;
