//! [`RootSupervisor`]: the top of the actor tree. Its children are the
//! [`InstanceSupervisor`] and the long-lived services — the webhook queue, the stats
//! counter and the operator desk — each respawned when it dies, with its state taken
//! back from storage, and each respawn written to the runtime's activity log
//! ([`SYSTEM_ACTIVITY`]).
//!
//! **Services** ([`Service`]) are respawned after a [`Backoff`] delay; their handles
//! follow them (an [`crate::handle::ActorSlot`] each), answering `Unavailable` meanwhile.
//!
//! **The instance supervisor** is written never to die. Should it die anyway (a panic, a
//! kill), its instance actors die with it — they are linked to it, and ractor kills the
//! children of an actor that terminates — and the root:
//! 1. marks every instance `restarting`, points the [`InstancesHandle`] at no
//!    supervisor (calls answer `Unavailable` at once) and remembers the instance actors
//!    that were live;
//! 2. after a short [`Backoff`] delay (`send_after`, never a sleep in a handler), waits
//!    until each of those actors is gone, so a session never runs in two actors at once
//!    (two engines on one session directory, the sandbox network routing to the dead
//!    one, the dead one's late cleanup unregistering the new one);
//! 3. spawns a new supervisor sharing the directory and the status board, points every
//!    clone of the [`InstancesHandle`] at it, and starts again from storage the instances
//!    the dead one ran ([`InstancesHandle::restore_all`] semantics, limited to those).
//!
//! A child stopping during the shutdown is expected and not respawned;
//! `Runtime::shutdown` goes through the root so that a shutdown and a pending respawn
//! cannot cross. The shutdown order: instances, then the services in reverse start
//! order.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use tokio::time::Instant;

use crate::backoff::{Backoff, BackoffConfig};
use crate::domain::ActivityEntry;
use crate::domain::instance::SYSTEM_ACTIVITY;
use crate::instance::{InstanceSupervisor, InstancesHandle, SupervisorMsg};
use crate::store::DynStorage;

/// Respawn delays of the root's children: short, since a part of the gateway is down
/// meanwhile, and growing when it keeps dying. Past the budget the root keeps trying
/// every `max`: nothing above it could do better.
pub(crate) const ROOT_BACKOFF: BackoffConfig = BackoffConfig {
    base: Duration::from_millis(100),
    max: Duration::from_secs(5),
    budget: 5,
    window: Duration::from_secs(60),
};

/// A long-lived actor the root keeps running.
#[async_trait]
pub(crate) trait Service: Send + Sync {
    /// Its name in logs and in the activity log.
    fn name(&self) -> &'static str;
    /// Spawns it linked to `root` and points its handle at it.
    async fn spawn(&self, root: ActorCell) -> Result<ActorCell, ActorProcessingErr>;
    /// It died: its handle points at nothing until the respawn.
    fn vacate(&self);
    /// Stops it for good, letting it finish what it is doing (flushes included).
    async fn stop(&self, cell: ActorCell, timeout: Duration) {
        if cell
            .stop_and_wait(Some("shutdown".into()), Some(timeout))
            .await
            .is_err()
        {
            tracing::warn!(actor = self.name(), "did not stop in time");
        }
    }
}

/// The messages of the root (crate-private: only `Runtime` talks to it).
pub(crate) enum RootMsg {
    /// A scheduled respawn of the instance supervisor; stale when `generation` is not
    /// the current one.
    Respawn { generation: u64 },
    /// A scheduled respawn of service `index`.
    RespawnService { index: usize, generation: u64 },
    /// Stops the instances, their supervisor, then the services, for good.
    Shutdown(RpcReplyPort<()>),
}

/// The top of the tree. Its configuration is that of the children it spawns.
pub(crate) struct RootSupervisor {
    supervisor: InstanceSupervisor,
    instances: InstancesHandle,
    /// Started in this order, stopped in the reverse one, before the instances.
    services: Vec<Arc<dyn Service>>,
    storage: DynStorage,
    backoff: BackoffConfig,
    /// How long to wait for an orphaned instance actor, or a stopping service, to die.
    timeout: Duration,
}

/// One child's restart bookkeeping.
pub(crate) struct ChildState {
    /// The actor running now; `None` while a respawn is pending.
    current: Option<ActorId>,
    backoff: Backoff,
    /// Bumped at every scheduled respawn, so only the latest one runs.
    generation: u64,
}

impl ChildState {
    fn new(current: ActorId, config: BackoffConfig) -> Self {
        ChildState {
            current: Some(current),
            backoff: Backoff::new(config),
            generation: 0,
        }
    }
}

pub(crate) struct RootState {
    instances: ChildState,
    services: Vec<(ChildState, Option<ActorCell>)>,
    /// Instance actors of dead supervisors, not yet seen stopped.
    orphans: Vec<ActorCell>,
    stopping: bool,
}

impl RootSupervisor {
    pub(crate) fn new(
        supervisor: InstanceSupervisor,
        instances: InstancesHandle,
        services: Vec<Arc<dyn Service>>,
        storage: DynStorage,
        backoff: BackoffConfig,
        timeout: Duration,
    ) -> Self {
        RootSupervisor {
            supervisor,
            instances,
            services,
            storage,
            backoff,
            timeout,
        }
    }
}

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = ();

    /// Fails (and with it `start_runtime`) when a child cannot be spawned. The services
    /// start first: the instances publish into them.
    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut services = Vec::with_capacity(self.services.len());
        for service in &self.services {
            let cell = service.spawn(myself.get_cell()).await?;
            services.push((ChildState::new(cell.get_id(), self.backoff), Some(cell)));
        }
        let supervisor = self.spawn_supervisor(&myself).await?;
        Ok(RootState {
            instances: ChildState::new(supervisor.get_id(), self.backoff),
            services,
            orphans: Vec::new(),
            stopping: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMsg::Respawn { generation } => {
                if generation == state.instances.generation
                    && state.instances.current.is_none()
                    && !state.stopping
                    && !self.instances.is_shutting_down()
                {
                    self.respawn(&myself, state).await;
                }
            }
            RootMsg::RespawnService { index, generation } => {
                let pending = state.services.get(index).is_some_and(|(child, _)| {
                    child.generation == generation && child.current.is_none()
                });
                if pending && !state.stopping {
                    self.respawn_service(&myself, state, index).await;
                }
            }
            RootMsg::Shutdown(reply) => {
                state.stopping = true;
                // Instances first, then their supervisor (both inside); orphans of a
                // supervisor that died just before are waited for too.
                self.instances.shutdown().await;
                self.reap(state).await;
                for (index, service) in self.services.iter().enumerate().rev() {
                    if let Some(cell) = state.services.get_mut(index).and_then(|(_, c)| c.take()) {
                        service.stop(cell, self.timeout).await;
                    }
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match message {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                format!("stopped: {}", reason.as_deref().unwrap_or("no reason")),
            ),
            _ => return Ok(()),
        };
        if state.stopping {
            return Ok(());
        }
        if let Some(index) = state
            .services
            .iter()
            .position(|(child, _)| child.current == Some(cell.get_id()))
        {
            let service = &self.services[index];
            tracing::error!(actor = service.name(), %reason, "a runtime actor died; respawning it");
            service.vacate();
            if let Some((child, cell)) = state.services.get_mut(index) {
                child.current = None;
                *cell = None;
            }
            self.log_restart(service.name(), &reason).await;
            self.schedule_service(&myself, state, index);
            return Ok(());
        }
        if state.instances.current != Some(cell.get_id()) {
            return Ok(());
        }
        state.instances.current = None;
        if self.instances.is_shutting_down() {
            return Ok(());
        }
        self.instances.set_supervisor(None);
        let orphans = self.instances.orphan_all();
        tracing::error!(%reason, instances = orphans.len(), "the instance supervisor died; respawning it");
        self.log_restart("instance supervisor", &reason).await;
        state.orphans.extend(orphans);
        self.schedule(&myself, state);
        Ok(())
    }
}

impl RootSupervisor {
    /// Spawns an instance supervisor linked to the root and points the handle at it.
    async fn spawn_supervisor(
        &self,
        myself: &ActorRef<RootMsg>,
    ) -> Result<ActorRef<SupervisorMsg>, ActorProcessingErr> {
        let (supervisor, _) =
            Actor::spawn_linked(None, self.supervisor.clone(), (), myself.get_cell()).await?;
        self.instances.set_supervisor(Some(supervisor.clone()));
        Ok(supervisor)
    }

    /// The delay before the next respawn of a child that keeps dying.
    fn delay(&self, child: &mut ChildState, name: &str) -> Duration {
        child.backoff.next(Instant::now()).unwrap_or_else(|| {
            tracing::error!(max = ?self.backoff.max, actor = name, "keeps dying; still respawning it");
            self.backoff.max
        })
    }

    fn schedule(&self, myself: &ActorRef<RootMsg>, state: &mut RootState) {
        let delay = self.delay(&mut state.instances, "the instance supervisor");
        state.instances.generation += 1;
        let generation = state.instances.generation;
        myself.send_after(delay, move || RootMsg::Respawn { generation });
    }

    fn schedule_service(&self, myself: &ActorRef<RootMsg>, state: &mut RootState, index: usize) {
        let Some((child, _)) = state.services.get_mut(index) else {
            return;
        };
        let delay = self.delay(child, self.services[index].name());
        child.generation += 1;
        let generation = child.generation;
        myself.send_after(delay, move || RootMsg::RespawnService { index, generation });
    }

    async fn respawn_service(
        &self,
        myself: &ActorRef<RootMsg>,
        state: &mut RootState,
        index: usize,
    ) {
        let service = &self.services[index];
        match service.spawn(myself.get_cell()).await {
            Ok(cell) => {
                tracing::info!(actor = service.name(), "respawned");
                if let Some((child, slot)) = state.services.get_mut(index) {
                    child.current = Some(cell.get_id());
                    *slot = Some(cell);
                }
            }
            Err(err) => {
                tracing::error!(actor = service.name(), %err, "did not start; trying again");
                self.schedule_service(myself, state, index);
            }
        }
    }

    async fn respawn(&self, myself: &ActorRef<RootMsg>, state: &mut RootState) {
        self.reap(state).await;
        match self.spawn_supervisor(myself).await {
            Ok(supervisor) => {
                state.instances.current = Some(supervisor.get_id());
                match self.instances.restore_known().await {
                    Ok(restored) => {
                        tracing::info!(restored, "instance supervisor respawned");
                    }
                    Err(err) => {
                        tracing::error!(%err, "instance supervisor respawned; cannot restore its instances");
                    }
                }
            }
            Err(err) => {
                tracing::error!(%err, "the instance supervisor did not start; trying again");
                self.schedule(myself, state);
            }
        }
    }

    /// Waits until every orphaned instance actor has stopped (they were killed with
    /// their supervisor; this only waits for the kill to land). One that will not stop
    /// is logged and left behind rather than blocking the respawn for good.
    async fn reap(&self, state: &mut RootState) {
        for orphan in state.orphans.drain(..) {
            if let Err(err) = orphan.kill_and_wait(Some(self.timeout)).await {
                tracing::warn!(actor = %orphan.get_id(), %err, "an orphaned instance actor did not stop in time");
            }
        }
    }

    /// Writes a death and its respawn to the runtime's activity log. A storage failure
    /// only loses the entry.
    async fn log_restart(&self, actor: &str, reason: &str) {
        let entry = ActivityEntry::new(
            SYSTEM_ACTIVITY,
            "actor_restarted",
            serde_json::json!({"actor": actor, "reason": reason}),
        );
        if let Err(err) = self.storage.append_activity(&entry).await {
            tracing::warn!(%err, "cannot log an actor restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::Utc;
    use ractor::{ActorCell, ActorStatus};

    use crate::backoff::BackoffConfig;
    use crate::domain::instance::SYSTEM_ACTIVITY;
    use crate::domain::{EngineKind, Instance, InstanceStatus, WebhookSettings};
    use crate::engine::{Engines, SandboxConfig, SandboxControl, SandboxNetwork};
    use crate::error::DomainError;
    use crate::instance::{InstanceHandle, InstancesHandle, QrAnswer, session_dir};
    use crate::runtime::{Runtime, RuntimeConfig, start_runtime};
    use crate::store::InstanceStore;
    use crate::testing::MemoryStorage;

    /// Longest a condition may take to come true before a test fails.
    const PATIENCE: Duration = Duration::from_secs(10);

    struct World {
        runtime: Runtime,
        storage: Arc<MemoryStorage>,
        network: SandboxNetwork,
        dir: tempfile::TempDir,
    }

    async fn world() -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Arc::new(MemoryStorage::default());
        let network = SandboxNetwork::new(SandboxConfig::default());
        let engines = Arc::new(Engines::new(network.clone(), Default::default()));
        let config = RuntimeConfig {
            call_timeout: Duration::from_secs(5),
            backoff: BackoffConfig {
                base: Duration::from_millis(10),
                max: Duration::from_millis(50),
                budget: 5,
                window: Duration::from_secs(60),
            },
            ..RuntimeConfig::new(storage.clone(), engines, dir.path().to_owned())
        };
        let runtime = start_runtime(config).await.expect("runtime");
        World {
            runtime,
            storage,
            network,
            dir,
        }
    }

    fn instance(id: &str) -> Instance {
        let now = Utc::now();
        Instance {
            id: id.to_owned(),
            user_id: "u1".into(),
            name: id.to_owned(),
            description: None,
            engine: EngineKind::Sandbox,
            status: InstanceStatus::Disconnected,
            phone: None,
            webhook_url: None,
            webhook_enabled: false,
            webhook: WebhookSettings::default(),
            limits: None,
            last_activity: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Waits until `check` holds, polling every few milliseconds.
    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        let waited = tokio::time::timeout(PATIENCE, async {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            while !check() {
                tick.tick().await;
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out waiting for {what}");
    }

    impl World {
        fn instances(&self) -> &InstancesHandle {
            &self.runtime.instances
        }

        async fn create(&self, id: &str) -> InstanceHandle {
            let instance = instance(id);
            self.storage
                .create_instance(&instance)
                .await
                .expect("store instance");
            self.instances()
                .start(instance, false)
                .await
                .expect("start")
        }

        fn status(&self, id: &str) -> Option<InstanceStatus> {
            self.runtime.status.get(id).map(|v| v.status)
        }

        fn count(&self, id: &str, action: &str) -> usize {
            self.storage
                .activity_of(id)
                .iter()
                .filter(|e| e.action == action)
                .count()
        }

        async fn scan(&self, handle: &InstanceHandle, phone: &str) {
            let waited = tokio::time::timeout(PATIENCE, async {
                while !matches!(handle.qr().await, Ok(QrAnswer::Code(_))) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            waited.expect("a QR code in time");
            handle
                .sandbox(SandboxControl::Scan {
                    phone: phone.into(),
                })
                .await
                .expect("scan");
            until("connected", || {
                self.status(handle.id()) == Some(InstanceStatus::Connected)
            })
            .await;
        }

        fn supervisor(&self) -> ActorCell {
            self.instances().supervisor_cell().expect("a supervisor")
        }
    }

    /// Kills (or stops) the instance supervisor under two connected instances, a
    /// logged-out one and a stored one the server never started, then checks the
    /// repair.
    async fn supervisor_death_is_repaired(kill: bool) {
        let w = world().await;
        // A clone taken before the restart, like the one in the server's HTTP state.
        let instances = w.instances().clone();
        let a = w.create("a").await;
        let b = w.create("b").await;
        let c = w.create("c").await;
        w.scan(&a, "15550000001").await;
        w.scan(&b, "15550000002").await;
        c.logout().await.expect("logout");
        let mut d = instance("d");
        d.status = InstanceStatus::Connected;
        w.storage.create_instance(&d).await.expect("store d");

        let old = w.supervisor();
        let old_actors = old.get_children();
        assert_eq!(old_actors.len(), 3);
        if kill {
            old.kill();
        } else {
            old.stop(Some("test".into()));
        }

        until("a new supervisor with the instances restored", || {
            instances
                .supervisor_cell()
                .is_some_and(|cell| cell.get_id() != old.get_id())
                && ["a", "b"]
                    .iter()
                    .all(|id| w.status(id) == Some(InstanceStatus::Connected))
                && ["a", "b", "c"].iter().all(|id| instances.get(id).is_ok())
        })
        .await;
        assert!(instances.is_alive());
        let new = w.supervisor();
        for actor in &old_actors {
            assert_eq!(actor.get_status(), ActorStatus::Stopped, "{actor:?}");
        }

        // Each instance runs exactly once: one actor each under the new supervisor, none
        // of the old ones, and the sandbox network routes each phone to its instance.
        let children = new.get_children();
        assert_eq!(children.len(), 3, "{children:?}");
        assert!(
            children
                .iter()
                .all(|child| old_actors.iter().all(|o| o.get_id() != child.get_id()))
        );
        assert_eq!(w.network.instance_for("15550000001").as_deref(), Some("a"));
        assert_eq!(w.network.instance_for("15550000002").as_deref(), Some("b"));

        // Connected again from the stored session, without a re-scan.
        assert!(
            session_dir(w.dir.path(), "a")
                .join("sandbox-session.json")
                .exists()
        );
        for id in ["a", "b"] {
            assert_eq!(w.count(id, "connected"), 2, "{id}");
            assert_eq!(w.count(id, "qr_received"), 1, "{id}");
            let view = instances
                .get(id)
                .expect("live")
                .status()
                .await
                .expect("status");
            assert!(view.ready, "{id}: {view:?}");
        }
        // Old handles reach the dead actor and say so; new ones work.
        assert!(matches!(a.status().await, Err(DomainError::Unavailable(_))));
        assert_eq!(w.status("c"), Some(InstanceStatus::LoggedOut));
        let c = instances.get("c").expect("parked handle");
        assert_eq!(
            c.status().await.expect("status").status,
            InstanceStatus::LoggedOut
        );
        // Only what the dead supervisor ran comes back.
        assert!(matches!(instances.get("d"), Err(DomainError::NotFound(_))));

        // The handle works through the new supervisor: start, idempotent start, remove.
        instances.start(d, true).await.expect("start d");
        assert!(instances.get("d").is_ok());
        let again = instances
            .start(instance("a"), false)
            .await
            .expect("start a");
        assert!(again.status().await.expect("status").ready);
        assert_eq!(new.get_children().len(), 4);
        instances.remove("b").await.expect("remove b");
        assert!(matches!(instances.get("b"), Err(DomainError::NotFound(_))));
        assert!(!w.network.is_registered("15550000002"));

        // A shutdown is no failure: nothing is respawned.
        w.runtime.shutdown().await;
        assert!(!instances.is_alive());
        assert_eq!(w.runtime.root_cell().get_status(), ActorStatus::Stopped);
        assert_eq!(
            instances.supervisor_cell().map(|cell| cell.get_id()),
            Some(new.get_id())
        );
        assert!(new.get_children().is_empty());
        assert!(!w.network.is_registered("15550000001"));
    }

    #[tokio::test]
    async fn killed_instance_supervisor_is_respawned_and_restores() {
        supervisor_death_is_repaired(true).await;
    }

    #[tokio::test]
    async fn stopped_instance_supervisor_is_respawned_and_restores() {
        supervisor_death_is_repaired(false).await;
    }

    #[tokio::test]
    async fn a_killed_service_is_respawned_and_its_restart_logged() {
        let w = world().await;
        let stats = w.runtime.stats.clone();
        let old = stats.cell().expect("a stats counter");
        old.kill();
        until("a new stats counter", || {
            stats
                .cell()
                .is_some_and(|cell| cell.get_id() != old.get_id())
        })
        .await;
        stats.flush().await.expect("the new counter answers");
        let restarts = w.storage.activity_of(SYSTEM_ACTIVITY);
        assert_eq!(restarts.len(), 1, "{restarts:?}");
        assert_eq!(restarts[0].action, "actor_restarted");
        assert_eq!(restarts[0].details["actor"], "stats counter");
        // Stopping on purpose is no death: nothing more is logged.
        w.runtime.shutdown().await;
        assert_eq!(w.storage.activity_of(SYSTEM_ACTIVITY).len(), 1);
        assert!(
            stats
                .cell()
                .is_none_or(|cell| cell.get_status() != ActorStatus::Running)
        );
    }

    #[tokio::test]
    async fn shutdown_stops_the_whole_tree() {
        let w = world().await;
        let a = w.create("a").await;
        w.scan(&a, "15550000001").await;
        let supervisor = w.supervisor();
        let actor = supervisor.get_children().pop().expect("instance actor");
        w.runtime.shutdown().await;
        assert_eq!(actor.get_status(), ActorStatus::Stopped);
        assert_eq!(supervisor.get_status(), ActorStatus::Stopped);
        assert_eq!(w.runtime.root_cell().get_status(), ActorStatus::Stopped);
        assert!(!w.network.is_registered("15550000001"));
        // Stopped on purpose: the session is kept, the stored status too, for the next
        // process to restore.
        assert!(
            session_dir(w.dir.path(), "a")
                .join("sandbox-session.json")
                .exists()
        );
        let stored = w
            .storage
            .instance_by_id("a")
            .await
            .expect("storage")
            .expect("instance");
        assert_eq!(stored.status, InstanceStatus::Connected);
        // A second shutdown is harmless.
        w.runtime.shutdown().await;
    }
}
