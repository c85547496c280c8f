//! [`RootSupervisor`]: the top of the actor tree, parent of the [`InstanceSupervisor`].
//!
//! The instance supervisor is written never to die. Should it die anyway (a panic, a
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
//! A supervisor stopping once [`InstancesHandle::shutdown`] was called is expected and
//! not respawned; `Runtime::shutdown` goes through the root so that a shutdown and a
//! pending respawn cannot cross.

use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use tokio::time::Instant;

use crate::backoff::{Backoff, BackoffConfig};
use crate::instance::{InstanceSupervisor, InstancesHandle, SupervisorMsg};

/// Respawn delays of the instance supervisor: short, since every instance is down
/// meanwhile, and growing when it keeps dying. Past the budget the root keeps trying
/// every `max`: nothing above it could do better.
pub(crate) const ROOT_BACKOFF: BackoffConfig = BackoffConfig {
    base: Duration::from_millis(100),
    max: Duration::from_secs(5),
    budget: 5,
    window: Duration::from_secs(60),
};

/// The messages of the root (crate-private: only `Runtime` talks to it).
pub(crate) enum RootMsg {
    /// A scheduled respawn; stale when `generation` is not the current one.
    Respawn { generation: u64 },
    /// Stops the instances, then the instance supervisor, for good.
    Shutdown(RpcReplyPort<()>),
}

/// The top of the tree. Its configuration is the configuration of the instance
/// supervisors it spawns and the handle it keeps pointed at the current one.
pub(crate) struct RootSupervisor {
    supervisor: InstanceSupervisor,
    instances: InstancesHandle,
    backoff: BackoffConfig,
    /// How long to wait for an orphaned instance actor to die.
    timeout: Duration,
}

pub(crate) struct RootState {
    /// The instance supervisor running now; `None` while a respawn is pending.
    current: Option<ActorId>,
    backoff: Backoff,
    /// Bumped at every scheduled respawn, so only the latest one runs.
    generation: u64,
    /// Instance actors of dead supervisors, not yet seen stopped.
    orphans: Vec<ActorCell>,
}

impl RootSupervisor {
    pub(crate) fn new(
        supervisor: InstanceSupervisor,
        instances: InstancesHandle,
        backoff: BackoffConfig,
        timeout: Duration,
    ) -> Self {
        RootSupervisor {
            supervisor,
            instances,
            backoff,
            timeout,
        }
    }
}

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = ();

    /// Fails (and with it `start_runtime`) when the first instance supervisor cannot be
    /// spawned.
    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let supervisor = self.spawn_supervisor(&myself).await?;
        Ok(RootState {
            current: Some(supervisor.get_id()),
            backoff: Backoff::new(self.backoff),
            generation: 0,
            orphans: Vec::new(),
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
                if generation == state.generation
                    && state.current.is_none()
                    && !self.instances.is_shutting_down()
                {
                    self.respawn(&myself, state).await;
                }
            }
            RootMsg::Shutdown(reply) => {
                // Instances first, then their supervisor (both inside); orphans of a
                // supervisor that died just before are waited for too.
                self.instances.shutdown().await;
                self.reap(state).await;
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
        if state.current != Some(cell.get_id()) {
            return Ok(());
        }
        state.current = None;
        if self.instances.is_shutting_down() {
            return Ok(());
        }
        self.instances.set_supervisor(None);
        let orphans = self.instances.orphan_all();
        tracing::error!(%reason, instances = orphans.len(), "the instance supervisor died; respawning it");
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

    fn schedule(&self, myself: &ActorRef<RootMsg>, state: &mut RootState) {
        let delay = state.backoff.next(Instant::now()).unwrap_or_else(|| {
            tracing::error!(
                max = ?self.backoff.max,
                "the instance supervisor keeps dying; still respawning it"
            );
            self.backoff.max
        });
        state.generation += 1;
        let generation = state.generation;
        myself.send_after(delay, move || RootMsg::Respawn { generation });
    }

    async fn respawn(&self, myself: &ActorRef<RootMsg>, state: &mut RootState) {
        self.reap(state).await;
        match self.spawn_supervisor(myself).await {
            Ok(supervisor) => {
                state.current = Some(supervisor.get_id());
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
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::Utc;
    use ractor::{ActorCell, ActorStatus};

    use crate::backoff::BackoffConfig;
    use crate::domain::{EngineKind, Instance, InstanceStatus, WebhookSettings};
    use crate::engine::{Engines, SandboxConfig, SandboxControl, SandboxNetwork};
    use crate::error::DomainError;
    use crate::events::EventHub;
    use crate::instance::{InstanceDeps, InstanceHandle, InstancesHandle, QrAnswer, session_dir};
    use crate::runtime::{Runtime, start_runtime};
    use crate::storage::InstanceStore;
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
        let deps = InstanceDeps {
            storage: storage.clone(),
            events: EventHub::new(storage.clone()),
            engines: Arc::new(Engines::new(network.clone(), Default::default())),
            data_dir: dir.path().to_owned(),
            call_timeout: Duration::from_secs(5),
            backoff: BackoffConfig {
                base: Duration::from_millis(10),
                max: Duration::from_millis(50),
                budget: 5,
                window: Duration::from_secs(60),
            },
            stats: None,
        };
        let runtime = start_runtime(deps).await.expect("runtime");
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
