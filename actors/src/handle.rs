//! What every typed handle is made of: an [`ActorSlot`] naming the actor that runs now
//! (its supervisor repoints it after a restart), and [`call`], one request into an actor
//! with a timeout whose failures become [`DomainError`]s.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorRef, RpcReplyPort};

use crate::error::DomainError;

/// The actor a handle reaches, shared by every clone of the handle.
///
/// The root supervisor points it at each new incarnation of the actor it respawns, so
/// handles the server gave out long ago (HTTP state, background tasks) keep working
/// across restarts. Between a death and the respawn it is empty, and calls answer
/// `Unavailable` at once instead of waiting on a dead mailbox.
///
/// A std `RwLock`: only read to clone the reference out, never held across an await.
pub struct ActorSlot<M: ractor::Message> {
    current: Arc<RwLock<Option<ActorRef<M>>>>,
}

impl<M: ractor::Message> Clone for ActorSlot<M> {
    fn clone(&self) -> Self {
        ActorSlot {
            current: self.current.clone(),
        }
    }
}

impl<M: ractor::Message> Default for ActorSlot<M> {
    fn default() -> Self {
        ActorSlot {
            current: Arc::new(RwLock::new(None)),
        }
    }
}

impl<M: ractor::Message> ActorSlot<M> {
    /// The actor running now, if any.
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Points every clone at `actor` (`None`: there is none now).
    pub(crate) fn set(&self, actor: Option<ActorRef<M>>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = actor;
    }

    /// The cell of the actor running now (for supervision and tests).
    pub fn cell(&self) -> Option<ActorCell> {
        self.get().map(|actor| actor.get_cell())
    }

    /// Whether an actor runs now.
    pub fn is_alive(&self) -> bool {
        self.get().is_some_and(|actor| {
            matches!(
                actor.get_status(),
                ractor::ActorStatus::Running | ractor::ActorStatus::Starting
            )
        })
    }

    /// One request into the actor running now; see [`call`]. `Unavailable` when none
    /// runs.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        timeout: Duration,
        who: &str,
        build: impl FnOnce(RpcReplyPort<T>) -> M,
    ) -> Result<T, DomainError> {
        let Some(actor) = self.get() else {
            return Err(DomainError::Unavailable(format!(
                "{who} is restarting; retry shortly"
            )));
        };
        call(&actor, timeout, who, build).await
    }

    /// A message to the actor running now, without waiting. False when none runs (the
    /// message is dropped).
    pub(crate) fn cast(&self, message: M) -> bool {
        self.get().is_some_and(|actor| actor.cast(message).is_ok())
    }
}

/// One request into an actor, with its failures turned into domain errors: `Timeout`
/// when it does not answer within `timeout`, `Unavailable` when it is not running.
pub(crate) async fn call<M, T>(
    actor: &ActorRef<M>,
    timeout: Duration,
    who: &str,
    build: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Result<T, DomainError>
where
    M: ractor::Message,
    T: Send + 'static,
{
    match actor.call(build, Some(timeout)).await {
        Ok(CallResult::Success(answer)) => Ok(answer),
        Ok(CallResult::Timeout) => Err(DomainError::Timeout(format!(
            "{who} did not answer within {} ms",
            timeout.as_millis()
        ))),
        Ok(CallResult::SenderError) | Err(_) => {
            Err(DomainError::Unavailable(format!("{who} is not running")))
        }
    }
}
