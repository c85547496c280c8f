//! [`InstanceSupervisor`]: starts, restarts and removes instance actors, and
//! [`InstancesHandle`], the way to reach any instance.
//!
//! A failed instance is restarted after a backoff delay ([`Backoff`]); past its restart
//! budget it is marked `failed` and started again *parked*, so a manual reconnect
//! revives it. The supervisor itself should never die: it never returns an error and
//! never panics on a child's behalf. Should it die anyway, its instance actors die with
//! it (they are linked to it) and the `RootSupervisor` (`crate::root`) spawns a new one,
//! swaps it into every [`InstancesHandle`] and restores the instances from storage.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::Utc;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use serde_json::json;
use tokio::time::Instant;

use super::actor::{InstanceActor, InstanceArgs, InstanceMsg};
use super::api::InstanceHandle;
use super::status::{StatusBoard, StatusView};
use super::{InstanceDeps, session_dir};
use crate::backoff::Backoff;
use crate::domain::{ActivityEntry, Event, Instance, InstanceStatus};
use crate::error::DomainError;
use crate::handle::call;
use crate::store::DynStorage;

/// The messages of the supervisor (public only because [`InstanceSupervisor`] names it).
pub enum SupervisorMsg {
    Start {
        instance: Box<Instance>,
        parked: bool,
        reply: RpcReplyPort<Result<InstanceHandle, DomainError>>,
    },
    Remove {
        id: String,
        reply: RpcReplyPort<()>,
    },
    /// Stops the instance's actor, keeping its session: another node takes it over.
    Release {
        id: String,
        reply: RpcReplyPort<()>,
    },
    /// A scheduled restart; stale when `generation` is not the child's current one.
    Restart {
        id: String,
        generation: u64,
    },
    Shutdown(RpcReplyPort<()>),
}

/// Where each instance can be reached. Written by the supervisor (and by the root when
/// the supervisor dies), read by [`InstancesHandle::get`] without a round trip through
/// the supervisor's mailbox: a restart storm keeps the supervisor busy, and HTTP must
/// still answer 503 at once. It outlives any one supervisor: a respawned supervisor
/// shares it, so it also says which instances the dead one ran.
#[derive(Debug, Clone, Default)]
struct Directory {
    slots: Arc<RwLock<HashMap<String, Slot>>>,
}

#[derive(Debug, Clone)]
enum Slot {
    /// The handle, and the cell of the actor behind it (to wait for its death when its
    /// supervisor dies).
    Live(InstanceHandle, ActorCell),
    Restarting,
    Down(String),
}

impl Directory {
    fn get(&self, id: &str) -> Option<Slot> {
        self.slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn set(&self, id: &str, slot: Slot) {
        self.slots
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned(), slot);
    }

    fn remove(&self, id: &str) {
        self.slots
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    fn set_all(&self, slot: Slot) {
        for value in self
            .slots
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .values_mut()
        {
            *value = slot.clone();
        }
    }

    /// Every known instance id.
    fn ids(&self) -> Vec<String> {
        self.slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Marks every instance as restarting and returns the ids and actors that were live.
    fn orphan_all(&self) -> Vec<(String, ActorCell)> {
        let mut orphans = Vec::new();
        for (id, slot) in self
            .slots
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .iter_mut()
        {
            if let Slot::Live(_, cell) = std::mem::replace(slot, Slot::Restarting) {
                orphans.push((id.clone(), cell));
            }
        }
        orphans
    }
}

/// The parent of every instance actor. Cloning it gives the configuration of a
/// replacement supervisor sharing the same directory and status board.
#[derive(Clone)]
pub struct InstanceSupervisor {
    deps: InstanceDeps,
    board: StatusBoard,
    directory: Directory,
}

pub struct SupervisorState {
    /// Which instance each live child actor runs.
    by_actor: HashMap<ActorId, String>,
    children: HashMap<String, Child>,
    /// Set by shutdown: children stopping now are not restarted.
    stopping: bool,
}

struct Child {
    instance: Instance,
    actor: Option<ActorRef<InstanceMsg>>,
    backoff: Backoff,
    /// Bumped at every spawn, so a restart scheduled for an earlier actor is ignored.
    generation: u64,
}

impl InstanceSupervisor {
    /// A supervisor with an empty directory; spawned by the `RootSupervisor`.
    pub(crate) fn new(deps: InstanceDeps, board: StatusBoard) -> Self {
        InstanceSupervisor {
            deps,
            board,
            directory: Directory::default(),
        }
    }
}

impl Actor for InstanceSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState {
            by_actor: HashMap::new(),
            children: HashMap::new(),
            stopping: false,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stopping = true;
        myself
            .stop_children_and_wait(Some("shutdown".into()), Some(self.deps.call_timeout))
            .await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Start {
                instance,
                parked,
                reply,
            } => {
                let answer = self.start(&myself, state, *instance, parked).await;
                let _ = reply.send(answer);
            }
            SupervisorMsg::Remove { id, reply } => {
                self.remove(state, &id).await;
                let _ = reply.send(());
            }
            SupervisorMsg::Release { id, reply } => {
                self.stop_child(state, &id).await;
                self.directory.remove(&id);
                self.board.remove(&id);
                self.deps.events.forget(&id);
                let _ = reply.send(());
            }
            SupervisorMsg::Restart { id, generation } => {
                self.restart(&myself, state, &id, generation).await;
            }
            SupervisorMsg::Shutdown(reply) => {
                state.stopping = true;
                self.directory
                    .set_all(Slot::Down("the server is shutting down".into()));
                myself
                    .stop_children_and_wait(Some("shutdown".into()), Some(self.deps.call_timeout))
                    .await;
                state.by_actor.clear();
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
        match message {
            SupervisionEvent::ActorFailed(cell, err) => {
                self.child_down(&myself, state, cell, err.to_string()).await;
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let reason = reason.unwrap_or_else(|| "the instance actor stopped".into());
                self.child_down(&myself, state, cell, reason).await;
            }
            _ => {}
        }
        Ok(())
    }
}

impl InstanceSupervisor {
    async fn start(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        instance: Instance,
        parked: bool,
    ) -> Result<InstanceHandle, DomainError> {
        if state.stopping {
            return Err(DomainError::Unavailable(
                "the server is shutting down".into(),
            ));
        }
        if let Some(child) = state.children.get(&instance.id)
            && let Some(actor) = &child.actor
        {
            return Ok(self.handle_of(&instance.id, actor));
        }
        self.spawn(myself, state, instance, parked).await
    }

    async fn spawn(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        instance: Instance,
        parked: bool,
    ) -> Result<InstanceHandle, DomainError> {
        let id = instance.id.clone();
        let child = state.children.entry(id.clone()).or_insert_with(|| Child {
            instance: instance.clone(),
            actor: None,
            backoff: Backoff::new(self.deps.backoff),
            generation: 0,
        });
        child.generation += 1;
        child.instance = instance.clone();
        let actor = InstanceActor::new(self.deps.clone(), self.board.clone());
        let args = InstanceArgs { instance, parked };
        match Actor::spawn_linked(None, actor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                state.by_actor.insert(actor.get_id(), id.clone());
                let handle = self.handle_of(&id, &actor);
                self.directory
                    .set(&id, Slot::Live(handle.clone(), actor.get_cell()));
                child.actor = Some(actor);
                Ok(handle)
            }
            Err(err) => {
                // Only a panic in the actor's start gets here: nothing to retry.
                let reason = format!("the instance actor did not start: {err}");
                tracing::error!(instance = %id, %reason);
                self.directory.set(&id, Slot::Down(reason.clone()));
                record(
                    &self.deps.storage,
                    &id,
                    InstanceStatus::Failed,
                    ("failed", json!({ "reason": reason, "restarts": 0 })),
                )
                .await;
                self.board.set_status(&id, InstanceStatus::Failed);
                Err(DomainError::Unavailable(reason))
            }
        }
    }

    fn handle_of(&self, id: &str, actor: &ActorRef<InstanceMsg>) -> InstanceHandle {
        InstanceHandle::new(id.to_owned(), actor.clone(), self.deps.call_timeout)
    }

    /// A child stopped without being asked to: restart it after its backoff delay, or
    /// past its budget, mark it failed and start it parked.
    async fn child_down(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        cell: ActorCell,
        reason: String,
    ) {
        let Some(id) = state.by_actor.remove(&cell.get_id()) else {
            return; // removed or stopped on purpose
        };
        if state.stopping {
            return;
        }
        let Some(child) = state.children.get_mut(&id) else {
            return;
        };
        if child.actor.as_ref().map(|a| a.get_id()) != Some(cell.get_id()) {
            return;
        }
        child.actor = None;
        let now = Instant::now();
        match child.backoff.next(now) {
            Some(delay) => {
                let attempt = child.backoff.attempts(now);
                tracing::warn!(instance = %id, %reason, attempt, ?delay, "instance failed; restarting");
                self.directory.set(&id, Slot::Restarting);
                self.board.set_status(&id, InstanceStatus::Reconnecting);
                self.board.record_restart();
                let storage = self.deps.storage.clone();
                let supervisor = myself.clone();
                let generation = child.generation;
                let details = json!({
                    "attempt": attempt,
                    "reason": reason,
                    "delayMs": u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                });
                // Recorded off the supervisor's mailbox (a storm of failures must not
                // queue behind storage writes), and the restart is scheduled only once
                // the record is written, so `reconnecting` always precedes what the new
                // actor records.
                tokio::spawn(async move {
                    record(
                        &storage,
                        &id,
                        InstanceStatus::Reconnecting,
                        ("reconnecting", details),
                    )
                    .await;
                    supervisor.send_after(delay, move || SupervisorMsg::Restart { id, generation });
                });
            }
            None => {
                let restarts = child.backoff.config().budget;
                tracing::error!(instance = %id, %reason, restarts, "instance failed too often; parking it");
                // A manual reconnect gets a whole budget again.
                child.backoff.reset();
                let mut instance = child.instance.clone();
                instance.status = InstanceStatus::Failed;
                // Recorded first, the status board last: whoever reads `failed` from the
                // board (GET /status) also finds its activity entry.
                record(
                    &self.deps.storage,
                    &id,
                    InstanceStatus::Failed,
                    ("failed", json!({ "reason": reason, "restarts": restarts })),
                )
                .await;
                self.board.set_status(&id, InstanceStatus::Failed);
                let _ = self.spawn(myself, state, instance, true).await;
            }
        }
    }

    async fn restart(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        id: &str,
        generation: u64,
    ) {
        if state.stopping {
            return;
        }
        let Some(child) = state.children.get(id) else {
            return;
        };
        if child.generation != generation || child.actor.is_some() {
            return;
        }
        let instance = child.instance.clone();
        if let Err(err) = self.spawn(myself, state, instance, false).await {
            tracing::error!(instance = %id, %err, "restart failed");
        }
    }

    /// Stops the actor of `id` (killed when it does not stop in time) and forgets it.
    async fn stop_child(&self, state: &mut SupervisorState, id: &str) {
        if let Some(child) = state.children.remove(id)
            && let Some(actor) = child.actor
        {
            state.by_actor.remove(&actor.get_id());
            if let Err(err) = actor
                .stop_and_wait(Some("removed".into()), Some(self.deps.call_timeout))
                .await
            {
                tracing::warn!(instance = %id, %err, "instance actor did not stop in time");
                actor.kill();
            }
        }
    }

    async fn remove(&self, state: &mut SupervisorState, id: &str) {
        self.stop_child(state, id).await;
        self.directory.remove(id);
        self.board.remove(id);
        self.deps.events.forget(id);
        if !is_safe_id(id) {
            tracing::warn!(instance = %id, "not a plain id; its session directory is left alone");
            return;
        }
        let dir = session_dir(&self.deps.data_dir, id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(instance = %id, %err, dir = %dir.display(), "cannot delete the session directory");
            }
        }
    }
}

/// Whether `id` is a single plain path component, safe to delete a directory by.
fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Stores a status the supervisor decided, with its activity entry. Failures are logged:
/// supervision goes on without storage.
async fn record(
    storage: &DynStorage,
    id: &str,
    status: InstanceStatus,
    (action, details): (&str, serde_json::Value),
) {
    if let Err(err) = storage
        .set_instance_status(id, status, None, Utc::now())
        .await
    {
        tracing::warn!(instance = %id, %err, "cannot store the instance status");
    }
    if let Err(err) = storage
        .append_activity(&ActivityEntry::new(id, action, details))
        .await
    {
        tracing::warn!(instance = %id, %err, "cannot store an activity entry");
    }
}

/// Reaches every instance. Cheap to clone.
#[derive(Clone)]
pub struct InstancesHandle {
    /// The instance supervisor currently running; `None` between its death and its
    /// respawn by the `RootSupervisor`.
    ///
    /// Shared by every clone, so a respawn reaches the handles the server already gave
    /// out (HTTP state, background tasks) instead of leaving them pointed at a dead
    /// actor. A std `RwLock` because it is only read to clone the reference out (never
    /// held across an await) and written once per respawn.
    supervisor: Arc<RwLock<Option<ActorRef<SupervisorMsg>>>>,
    /// Set by [`InstancesHandle::shutdown`]: the supervisor stopping from now on is
    /// expected, and the root must not respawn it.
    shutting_down: Arc<AtomicBool>,
    directory: Directory,
    board: StatusBoard,
    storage: DynStorage,
    timeout: Duration,
}

impl InstancesHandle {
    /// A handle for the supervisors configured by `supervisor` (sharing its directory
    /// and status board); it reaches none until [`InstancesHandle::set_supervisor`].
    pub(crate) fn new(supervisor: &InstanceSupervisor) -> Self {
        InstancesHandle {
            supervisor: Arc::new(RwLock::new(None)),
            shutting_down: Arc::new(AtomicBool::new(false)),
            directory: supervisor.directory.clone(),
            board: supervisor.board.clone(),
            storage: supervisor.deps.storage.clone(),
            timeout: supervisor.deps.call_timeout,
        }
    }

    /// Points every clone of this handle at `supervisor` (`None`: there is none now).
    pub(crate) fn set_supervisor(&self, supervisor: Option<ActorRef<SupervisorMsg>>) {
        *self
            .supervisor
            .write()
            .unwrap_or_else(PoisonError::into_inner) = supervisor;
    }

    fn current(&self) -> Option<ActorRef<SupervisorMsg>> {
        self.supervisor
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether [`InstancesHandle::shutdown`] was called.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// The supervisor died: marks every instance as restarting (on the status board too,
    /// so readers do not see a dead session as connected) and returns the instance
    /// actors it ran, which die with it. Their stored status is kept on purpose: it is
    /// what the restore after the respawn starts them from.
    pub(crate) fn orphan_all(&self) -> Vec<ActorCell> {
        self.directory
            .orphan_all()
            .into_iter()
            .map(|(id, cell)| {
                let parked = self
                    .board
                    .get(&id)
                    .is_some_and(|view| !view.status.restores_on_start());
                if !parked {
                    self.board.set_status(&id, InstanceStatus::Reconnecting);
                }
                cell
            })
            .collect()
    }

    async fn ask_supervisor<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> SupervisorMsg,
    ) -> Result<T, DomainError> {
        let Some(supervisor) = self.current() else {
            return Err(DomainError::Unavailable(
                "the instance supervisor is restarting".into(),
            ));
        };
        // Starting an engine can take a full call timeout on its own.
        call(
            &supervisor,
            self.timeout * 2,
            "the instance supervisor",
            build,
        )
        .await
    }

    /// Starts the actor of `instance` (its engine too, unless `parked`) and returns its
    /// handle; an instance already running just returns its handle. Fails with
    /// `Unavailable` while the supervisor is shutting down or being respawned.
    pub async fn start(
        &self,
        instance: Instance,
        parked: bool,
    ) -> Result<InstanceHandle, DomainError> {
        self.ask_supervisor(|reply| SupervisorMsg::Start {
            instance: Box::new(instance),
            parked,
            reply,
        })
        .await?
    }

    /// Stops the instance's actor and deletes its session directory
    /// (`data_dir/instances/<id>/`). Removing an unknown id only deletes the directory.
    pub async fn remove(&self, id: &str) -> Result<(), DomainError> {
        let id = id.to_owned();
        self.ask_supervisor(|reply| SupervisorMsg::Remove { id, reply })
            .await
    }

    /// Stops the instance's actor and forgets it here, keeping its stored session and
    /// status: in cluster mode another node takes it over. Releasing an unknown id does
    /// nothing.
    pub async fn release(&self, id: &str) -> Result<(), DomainError> {
        let id = id.to_owned();
        self.ask_supervisor(|reply| SupervisorMsg::Release { id, reply })
            .await
    }

    /// Whether this node runs an actor for `id` now (live, restarting or down, but
    /// started here and not removed or released).
    pub fn runs(&self, id: &str) -> bool {
        self.directory.get(id).is_some()
    }

    /// The handle of a running instance. Fails with `NotFound` for an id never started
    /// (or removed) and with `Unavailable` while it is restarting or down.
    pub fn get(&self, id: &str) -> Result<InstanceHandle, DomainError> {
        match self.directory.get(id) {
            Some(Slot::Live(handle, _)) => Ok(handle),
            Some(Slot::Restarting) => {
                Err(DomainError::Unavailable("instance is restarting".into()))
            }
            Some(Slot::Down(reason)) => Err(DomainError::Unavailable(reason)),
            None => Err(DomainError::NotFound("instance not found".into())),
        }
    }

    /// Hands a copy of `event` to the running actor of `id`, which publishes it in its
    /// turn (the event hub's relay); false when `id` has no live actor here.
    pub fn relay(&self, id: &str, event: &Event) -> bool {
        match self.directory.get(id) {
            Some(Slot::Live(handle, _)) => handle.publish(event),
            _ => false,
        }
    }

    /// Reconnects an instance: the running actor restarts its engine (reviving a failed
    /// or logged-out one); an instance with no actor (never started, or its actor could
    /// not start) gets one. Fails with `Unavailable` while a restart is pending or when
    /// the engine cannot start.
    pub async fn reconnect(&self, instance: &Instance) -> Result<(), DomainError> {
        match self.directory.get(&instance.id) {
            Some(Slot::Live(handle, _)) => handle.reconnect().await,
            Some(Slot::Restarting) => {
                Err(DomainError::Unavailable("instance is restarting".into()))
            }
            // A shutting-down supervisor refuses the start with `Unavailable`.
            Some(Slot::Down(_)) | None => self.start(instance.clone(), false).await.map(drop),
        }
    }

    /// Starts every stored instance: those whose status restores on start with their
    /// engine (no re-scan while the session is valid), the others parked. Returns how
    /// many were started. Fails when storage cannot list instances; an instance that
    /// fails to start is logged and skipped.
    pub async fn restore_all(&self) -> Result<usize, DomainError> {
        let instances = self.storage.list_instances(None).await?;
        Ok(self.restore(instances).await)
    }

    /// After a respawn of the supervisor: starts again, from storage and like
    /// [`InstancesHandle::restore_all`], every instance the dead supervisor knew (and
    /// only those: one the server never started stays stopped). A known instance no
    /// longer stored is marked down. Fails when storage cannot list instances; then
    /// every known instance is marked down, and a reconnect revives it.
    pub(crate) async fn restore_known(&self) -> Result<usize, DomainError> {
        let known: HashSet<String> = self.directory.ids().into_iter().collect();
        if known.is_empty() {
            return Ok(0);
        }
        let instances = match self.storage.list_instances(None).await {
            Ok(instances) => instances,
            Err(err) => {
                let reason = format!("cannot restore the instance after a restart: {err}");
                for id in &known {
                    self.mark_down_if_restarting(id, &reason);
                }
                return Err(err.into());
            }
        };
        let stored: HashSet<String> = instances.iter().map(|i| i.id.clone()).collect();
        let started = self
            .restore(
                instances
                    .into_iter()
                    .filter(|i| known.contains(&i.id))
                    .collect(),
            )
            .await;
        for id in known.difference(&stored) {
            self.mark_down_if_restarting(id, "the instance is no longer stored");
        }
        Ok(started)
    }

    fn mark_down_if_restarting(&self, id: &str, reason: &str) {
        if matches!(self.directory.get(id), Some(Slot::Restarting)) {
            self.directory.set(id, Slot::Down(reason.to_owned()));
        }
    }

    async fn restore(&self, instances: Vec<Instance>) -> usize {
        let mut started = 0;
        for instance in instances {
            let id = instance.id.clone();
            let parked = !instance.status.restores_on_start();
            match self.start(instance, parked).await {
                Ok(_) => started += 1,
                Err(err) => {
                    tracing::error!(instance = %id, %err, "cannot restore instance");
                    self.mark_down_if_restarting(&id, &err.to_string());
                }
            }
        }
        started
    }

    /// Stops every instance (engines stopped, sessions kept) and the supervisor, and waits
    /// for them. From now on the supervisor stopping is expected: the root does not
    /// respawn it (the server stops through `Runtime::shutdown`, which also stops the
    /// root).
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let Some(supervisor) = self.current() else {
            return;
        };
        let stopped = self.ask_supervisor(SupervisorMsg::Shutdown).await;
        if let Err(err) = stopped {
            tracing::warn!(%err, "instances did not stop cleanly");
        }
        if let Err(err) = supervisor
            .stop_and_wait(Some("shutdown".into()), Some(self.timeout))
            .await
        {
            tracing::warn!(%err, "the instance supervisor did not stop in time");
        }
    }

    pub fn status_board(&self) -> StatusBoard {
        self.board.clone()
    }

    /// The instance's status as the send path sees it: what its status board shows
    /// (which its actor consults before every send), but never `connected` while the
    /// instance cannot be reached (its actor is being restarted, or is down), since a
    /// send would be refused then too. None for an instance no actor reports for.
    pub fn live_status(&self, id: &str) -> Option<StatusView> {
        let view = self.board.get(id)?;
        if view.ready && !matches!(self.directory.get(id), Some(Slot::Live(..))) {
            return Some(StatusView::new(
                InstanceStatus::Reconnecting,
                false,
                view.phone,
            ));
        }
        Some(view)
    }

    /// Whether the supervisor is alive (for readiness checks and tests); false while
    /// the root is respawning it.
    pub fn is_alive(&self) -> bool {
        self.current().is_some_and(|supervisor| {
            matches!(
                supervisor.get_status(),
                ractor::ActorStatus::Running | ractor::ActorStatus::Starting
            )
        })
    }

    /// The cell of the current supervisor, for fault tests that kill it.
    pub fn supervisor_cell(&self) -> Option<ActorCell> {
        self.current().map(|supervisor| supervisor.get_cell())
    }
}
