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
