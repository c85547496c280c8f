//! Starting and stopping the actor runtime: the one entry point the server calls.

use crate::error::DomainError;
use crate::events::EventHub;
use crate::instance::{InstanceDeps, InstancesHandle, StatusBoard};

/// The running actor system, as handles. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    pub instances: InstancesHandle,
    pub events: EventHub,
    pub status: StatusBoard,
}

/// Starts the instance supervisor. Instances are not started yet: call
/// [`InstancesHandle::restore_all`] once the server is ready for them.
///
/// Fails with `Unavailable` when the supervisor cannot be spawned.
pub async fn start_runtime(deps: InstanceDeps) -> Result<Runtime, DomainError> {
    let events = deps.events.clone();
    let status = StatusBoard::default();
    let instances = InstancesHandle::spawn(deps, status.clone()).await?;
    Ok(Runtime {
        instances,
        events,
        status,
    })
}

impl Runtime {
    /// Stops every instance (engines stopped, sessions kept for the next start).
    pub async fn shutdown(&self) {
        self.instances.shutdown().await;
    }
}
