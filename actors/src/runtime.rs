//! Starting and stopping the actor runtime: the one entry point the server calls.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, RactorErr};

use crate::error::DomainError;
use crate::events::EventHub;
use crate::instance::{InstanceDeps, InstanceSupervisor, InstancesHandle, StatusBoard};
use crate::root::{ROOT_BACKOFF, RootMsg, RootSupervisor};

/// The running actor system, as handles. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    /// Keeps reaching the instance supervisor after the root respawned it.
    pub instances: InstancesHandle,
    pub events: EventHub,
    pub status: StatusBoard,
    root: ActorRef<RootMsg>,
    call_timeout: Duration,
}

/// Starts the root supervisor and, under it, the instance supervisor. Instances are not
/// started yet: call [`InstancesHandle::restore_all`] once the server is ready for them.
///
/// Fails with `Unavailable` when the supervisors cannot be spawned.
pub async fn start_runtime(deps: InstanceDeps) -> Result<Runtime, DomainError> {
    let events = deps.events.clone();
    let call_timeout = deps.call_timeout;
    let status = StatusBoard::default();
    let supervisor = InstanceSupervisor::new(deps, status.clone());
    let instances = InstancesHandle::new(&supervisor);
    let root = RootSupervisor::new(supervisor, instances.clone(), ROOT_BACKOFF, call_timeout);
    let (root, _) = Actor::spawn(None, root, ())
        .await
        .map_err(|err| DomainError::Unavailable(format!("the supervisors did not start: {err}")))?;
    Ok(Runtime {
        instances,
        events,
        status,
        root,
        call_timeout,
    })
}

impl Runtime {
    /// Stops the tree from the leaves up: every instance (engines stopped, sessions and
    /// stored statuses kept for the next start), then the instance supervisor, then the
    /// root, which takes none of it for a failure. Calling it again does nothing.
    pub async fn shutdown(&self) {
        // The root waits for the instances (two call timeouts) and their supervisor (one).
        match self
            .root
            .call(RootMsg::Shutdown, Some(self.call_timeout * 4))
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
