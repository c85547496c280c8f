//! [`InstanceSupervisor`]: starts, restarts and removes instance actors, and
//! [`InstancesHandle`], the way to reach any instance.
//!
//! A failed instance is restarted after a backoff delay ([`Backoff`]); past its restart
//! budget it is marked `failed` and started again *parked*, so a manual reconnect
//! revives it. The supervisor itself must never die: it never returns an error and
//! never panics on a child's behalf.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::Utc;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use serde_json::json;
use tokio::time::Instant;

use super::actor::{InstanceActor, InstanceArgs, InstanceMsg};
use super::api::{InstanceHandle, ask};
use super::status::StatusBoard;
use super::{InstanceDeps, session_dir};
use crate::backoff::Backoff;
use crate::domain::{ActivityEntry, Instance, InstanceStatus};
use crate::error::DomainError;
use crate::storage::DynStorage;

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
    /// A scheduled restart; stale when `generation` is not the child's current one.
    Restart {
        id: String,
        generation: u64,
    },
    Shutdown(RpcReplyPort<()>),
}

/// Where each instance can be reached. Written by the supervisor only, read by
/// [`InstancesHandle::get`] without a round trip through the supervisor's mailbox: a
/// restart storm keeps the supervisor busy, and HTTP must still answer 503 at once.
#[derive(Debug, Clone, Default)]
struct Directory {
    slots: Arc<RwLock<HashMap<String, Slot>>>,
}

#[derive(Debug, Clone)]
enum Slot {
    Live(InstanceHandle),
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
}

/// The parent of every instance actor.
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
                child.actor = Some(actor);
                self.directory.set(&id, Slot::Live(handle.clone()));
                Ok(handle)
            }
            Err(err) => {
                // Only a panic in the actor's start gets here: nothing to retry.
                let reason = format!("the instance actor did not start: {err}");
                tracing::error!(instance = %id, %reason);
                self.directory.set(&id, Slot::Down(reason.clone()));
                self.board.set_status(&id, InstanceStatus::Failed);
                record(
                    &self.deps.storage,
                    &id,
                    InstanceStatus::Failed,
                    ("failed", json!({ "reason": reason, "restarts": 0 })),
                )
                .await;
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
                self.board.set_status(&id, InstanceStatus::Failed);
                record(
                    &self.deps.storage,
                    &id,
                    InstanceStatus::Failed,
                    ("failed", json!({ "reason": reason, "restarts": restarts })),
                )
                .await;
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

    async fn remove(&self, state: &mut SupervisorState, id: &str) {
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
    supervisor: ActorRef<SupervisorMsg>,
    directory: Directory,
    board: StatusBoard,
    storage: DynStorage,
    timeout: Duration,
}

impl InstancesHandle {
    /// Spawns the supervisor (unlinked: nothing above it restarts it, so it is written
    /// never to fail).
    pub(crate) async fn spawn(deps: InstanceDeps, board: StatusBoard) -> Result<Self, DomainError> {
        let directory = Directory::default();
        let storage = deps.storage.clone();
        let timeout = deps.call_timeout;
        let supervisor = InstanceSupervisor {
            deps,
            board: board.clone(),
            directory: directory.clone(),
        };
        let (supervisor, _) = Actor::spawn(None, supervisor, ()).await.map_err(|err| {
            DomainError::Unavailable(format!("the instance supervisor did not start: {err}"))
        })?;
        Ok(InstancesHandle {
            supervisor,
            directory,
            board,
            storage,
            timeout,
        })
    }

    /// Starts the actor of `instance` (its engine too, unless `parked`) and returns its
    /// handle; an instance already running just returns its handle.
    pub async fn start(
        &self,
        instance: Instance,
        parked: bool,
    ) -> Result<InstanceHandle, DomainError> {
        // Starting an engine can take a full call timeout on its own.
        ask(
            &self.supervisor,
            self.timeout * 2,
            "the instance supervisor",
            |reply| SupervisorMsg::Start {
                instance: Box::new(instance),
                parked,
                reply,
            },
        )
        .await?
    }

    /// Stops the instance's actor and deletes its session directory
    /// (`data_dir/instances/<id>/`). Removing an unknown id only deletes the directory.
    pub async fn remove(&self, id: &str) -> Result<(), DomainError> {
        let id = id.to_owned();
        ask(
            &self.supervisor,
            self.timeout * 2,
            "the instance supervisor",
            |reply| SupervisorMsg::Remove { id, reply },
        )
        .await
    }

    /// The handle of a running instance. Fails with `NotFound` for an id never started
    /// (or removed) and with `Unavailable` while it is restarting or down.
    pub fn get(&self, id: &str) -> Result<InstanceHandle, DomainError> {
        match self.directory.get(id) {
            Some(Slot::Live(handle)) => Ok(handle),
            Some(Slot::Restarting) => {
                Err(DomainError::Unavailable("instance is restarting".into()))
            }
            Some(Slot::Down(reason)) => Err(DomainError::Unavailable(reason)),
            None => Err(DomainError::NotFound("instance not found".into())),
        }
    }

    /// Reconnects an instance: the running actor restarts its engine (reviving a failed
    /// or logged-out one); an instance with no actor (never started, or its actor could
    /// not start) gets one. Fails with `Unavailable` while a restart is pending or when
    /// the engine cannot start.
    pub async fn reconnect(&self, instance: &Instance) -> Result<(), DomainError> {
        match self.directory.get(&instance.id) {
            Some(Slot::Live(handle)) => handle.reconnect().await,
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
        let mut started = 0;
        for instance in instances {
            let id = instance.id.clone();
            let parked = !instance.status.restores_on_start();
            match self.start(instance, parked).await {
                Ok(_) => started += 1,
                Err(err) => tracing::error!(instance = %id, %err, "cannot restore instance"),
            }
        }
        Ok(started)
    }

    /// Stops every instance (engines stopped, sessions kept) and the supervisor, and waits
    /// for them.
    pub async fn shutdown(&self) {
        let stopped = ask(
            &self.supervisor,
            self.timeout * 2,
            "the instance supervisor",
            SupervisorMsg::Shutdown,
        )
        .await;
        if let Err(err) = stopped {
            tracing::warn!(%err, "instances did not stop cleanly");
        }
        if let Err(err) = self
            .supervisor
            .stop_and_wait(None, Some(self.timeout))
            .await
        {
            tracing::warn!(%err, "the instance supervisor did not stop in time");
        }
    }

    pub fn status_board(&self) -> StatusBoard {
        self.board.clone()
    }

    /// Whether the supervisor is alive (for readiness checks and tests).
    pub fn is_alive(&self) -> bool {
        matches!(
            self.supervisor.get_status(),
            ractor::ActorStatus::Running | ractor::ActorStatus::Starting
        )
    }
}
