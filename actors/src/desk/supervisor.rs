//! [`OperatorDesk`]: the supervisor of the chat actors, and [`OperatorDeskHandle`], the way
//! the HTTP edge reaches a chat.
//!
//! Chat actors are spawned on first use and stop after `idle_after` without a request
//! (see `chat.rs`): the desk forgets the actor, then drains it, so a request that was
//! already queued still runs and one sent later is refused by the closed mailbox and
//! sent again, by the handle, to a fresh actor. A chat actor that dies
//! (a panic in a handler) is forgotten by the desk and spawned again, from storage, by
//! the next request for its chat: its only state is the chat row, so a lazy restart loses
//! nothing and needs no backoff. The desk itself never returns an error from a handler;
//! should it die anyway, the root supervisor respawns it (its chats start again lazily)
//! and the handle, with the live feed, follows it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::rpc::CallResult;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};

use super::chat::{ChatMsg, OperatorChatActor};
use super::feed::{DeskFeed, EventId, FeedEntry, Subscription};
use super::{GraphApi, SendError, WabaEvent};
use crate::domain::MessageStatus;
use crate::domain::waba::{
    GraphCredentials, SendFailure, WabaChat, WabaContent, WabaMedia, WabaMessage,
};
use crate::error::DomainError;
use crate::handle::{ActorSlot, call};

/// Requests into a chat whose actor keeps being retired under them before giving up.
const CHAT_ATTEMPTS: usize = 3;
use crate::store::WabaStore;

/// The messages of the desk (public only because [`OperatorDesk`] names it).
pub(crate) enum DeskMsg {
    /// The actor of a chat, spawned when missing.
    Chat {
        chat: Box<WabaChat>,
        reply: RpcReplyPort<Result<ActorRef<ChatMsg>, DomainError>>,
    },
    /// A chat actor idle for the idle time: forgotten and drained, unless the chat
    /// already has another actor.
    Idle {
        chat_id: i64,
        actor: ActorId,
    },
    Shutdown(RpcReplyPort<()>),
}

/// The supervisor of every [`OperatorChatActor`].
pub(crate) struct OperatorDesk;

/// What the desk needs; kept by the root to respawn it.
#[derive(Clone)]
pub(crate) struct DeskArgs {
    pub store: Arc<dyn WabaStore>,
    pub graph: Arc<dyn GraphApi>,
    pub events: DeskFeed,
    pub call_timeout: Duration,
    /// How long a chat actor lives without a request.
    pub idle_after: Duration,
    /// How many chat actors run now, for metrics and tests.
    pub running: Arc<AtomicUsize>,
}

pub(crate) struct DeskState {
    args: DeskArgs,
    chats: HashMap<i64, ActorRef<ChatMsg>>,
    by_actor: HashMap<ActorId, i64>,
    stopping: bool,
}

impl Actor for OperatorDesk {
    type Msg = DeskMsg;
    type State = DeskState;
    type Arguments = DeskArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: DeskArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(DeskState {
            args,
            chats: HashMap::new(),
            by_actor: HashMap::new(),
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
            DeskMsg::Chat { chat, reply } => {
                let answer = chat_actor(&myself, state, *chat).await;
                let _ = reply.send(answer);
            }
            DeskMsg::Idle { chat_id, actor } => {
                if let Some(current) = state.chats.get(&chat_id)
                    && current.get_id() == actor
                {
                    let current = current.clone();
                    forget(state, chat_id, actor);
                    // Already stopping (shutdown) is fine: it stops either way.
                    let _ = current.drain();
                }
            }
            DeskMsg::Shutdown(reply) => {
                state.stopping = true;
                myself
                    .stop_children_and_wait(Some("shutdown".into()), Some(state.args.call_timeout))
                    .await;
                state.chats.clear();
                state.by_actor.clear();
                state.args.running.store(0, Ordering::Relaxed);
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let cell = match message {
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::warn!(error = %err, "an operator chat actor failed; it restarts on next use");
                cell
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => cell,
            _ => return Ok(()),
        };
        if let Some(&chat) = state.by_actor.get(&cell.get_id()) {
            forget(state, chat, cell.get_id());
        }
        Ok(())
    }
}

/// Forgets the actor `actor` of `chat_id` (if it is still the chat's).
fn forget(state: &mut DeskState, chat_id: i64, actor: ActorId) {
    state.by_actor.remove(&actor);
    if state
        .chats
        .get(&chat_id)
        .is_some_and(|a| a.get_id() == actor)
    {
        state.chats.remove(&chat_id);
    }
    state
        .args
        .running
        .store(state.chats.len(), Ordering::Relaxed);
}

async fn chat_actor(
    myself: &ActorRef<DeskMsg>,
    state: &mut DeskState,
    chat: WabaChat,
) -> Result<ActorRef<ChatMsg>, DomainError> {
    if state.stopping {
        return Err(DomainError::Unavailable(
            "the server is shutting down".into(),
        ));
    }
    if let Some(actor) = state.chats.get(&chat.id) {
        return Ok(actor.clone());
    }
    let id = chat.id;
    let actor = OperatorChatActor {
        store: state.args.store.clone(),
        graph: state.args.graph.clone(),
        events: state.args.events.clone(),
        retire: {
            let desk = myself.clone();
            Arc::new(move |actor| {
                let _ = desk.cast(DeskMsg::Idle { chat_id: id, actor });
            })
        },
        idle_after: state.args.idle_after,
    };
    let (actor, _) = Actor::spawn_linked(None, actor, chat, myself.get_cell())
        .await
        .map_err(|e| {
            DomainError::Unavailable(format!("the actor of chat {id} did not start: {e}"))
        })?;
    state.by_actor.insert(actor.get_id(), id);
    state.chats.insert(id, actor.clone());
    state
        .args
        .running
        .store(state.chats.len(), Ordering::Relaxed);
    Ok(actor)
}

/// The operator desk. Cheap to clone.
///
/// Every method fails with `Unavailable` when the desk or the chat actor is not running
/// and with `Timeout` when it does not answer in time.
#[derive(Clone)]
pub struct OperatorDeskHandle {
    slot: ActorSlot<DeskMsg>,
    /// The live feed: kept here so subscribers outlive a respawn of the desk.
    events: DeskFeed,
    call_timeout: Duration,
    /// Calls into a chat actor wait behind the chat's sends, each of which may take the
    /// Graph API client's whole retry budget.
    chat_timeout: Duration,
    idle_after: Duration,
    /// How many chat actors run now (kept by the desk).
    running: Arc<AtomicUsize>,
}

/// Spawns the desk under `parent` (none: unsupervised, in tests) and points `handle`
/// at it.
pub(crate) async fn spawn(
    handle: &OperatorDeskHandle,
    args: DeskArgs,
    parent: Option<ActorCell>,
) -> Result<ActorCell, ActorProcessingErr> {
    let (desk, _) = match parent {
        Some(parent) => Actor::spawn_linked(None, OperatorDesk, args, parent).await?,
        None => Actor::spawn(None, OperatorDesk, args).await?,
    };
    handle.slot.set(Some(desk.clone()));
    Ok(desk.get_cell())
}

/// The desk died: calls answer `Unavailable` until it is respawned.
pub(crate) fn vacate(handle: &OperatorDeskHandle) {
    handle.slot.set(None);
}

impl OperatorDeskHandle {
    /// `call_timeout` bounds calls into the desk; `chat_timeout` bounds calls into a
    /// chat actor, so it must exceed the Graph API client's longest send (with retries);
    /// a chat actor stops after `idle_after` without a request; the live feed keeps its
    /// last `retention` events for subscribers that resume.
    pub(crate) fn new(
        call_timeout: Duration,
        chat_timeout: Duration,
        idle_after: Duration,
        retention: usize,
    ) -> Self {
        OperatorDeskHandle {
            slot: ActorSlot::default(),
            events: DeskFeed::new(retention),
            call_timeout,
            chat_timeout,
            idle_after,
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How many chat actors run now.
    pub fn chat_actors(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// What the desk needs to run, around this handle's live feed.
    pub(crate) fn args(&self, store: Arc<dyn WabaStore>, graph: Arc<dyn GraphApi>) -> DeskArgs {
        DeskArgs {
            store,
            graph,
            events: self.events.clone(),
            call_timeout: self.call_timeout,
            idle_after: self.idle_after,
            running: self.running.clone(),
        }
    }

    /// The desk running now (tests kill it to see it respawned).
    pub fn cell(&self) -> Option<ActorCell> {
        self.slot.cell()
    }
    /// Sends `content` in `chat`: refused with `OutsideWindow` (before Meta is called)
    /// unless it is a template or the customer wrote within 24 hours. Returns the stored
    /// message (status `sent`, Meta's id).
    pub async fn send(
        &self,
        chat: &WabaChat,
        credentials: GraphCredentials,
        content: WabaContent,
        text: Option<String>,
        sender_user_id: Option<String>,
    ) -> Result<WabaMessage, SendError> {
        self.send_with_file(chat, credentials, content, text, sender_user_id, None)
            .await
    }

    /// [`send`](Self::send), the stored message keeping `media`: the record of the file
    /// it sends (an upload the desk keeps a copy of).
    pub async fn send_with_file(
        &self,
        chat: &WabaChat,
        credentials: GraphCredentials,
        content: WabaContent,
        text: Option<String>,
        sender_user_id: Option<String>,
        media: Option<WabaMedia>,
    ) -> Result<WabaMessage, SendError> {
        self.in_chat(chat, |reply| ChatMsg::Send {
            credentials: credentials.clone(),
            content: content.clone(),
            text: text.clone(),
            sender_user_id: sender_user_id.clone(),
            media: media.clone().map(Box::new),
            reply,
        })
        .await?
    }

    /// Records an inbound message of `chat`'s customer (its `chat_id` and `owner_id` are
    /// taken from `chat`). Answers None when the message was already stored.
    pub async fn inbound(
        &self,
        chat: &WabaChat,
        message: WabaMessage,
    ) -> Result<Option<WabaMessage>, DomainError> {
        self.in_chat(chat, |reply| ChatMsg::Inbound {
            message: Box::new(message.clone()),
            reply,
        })
        .await?
    }

    /// Applies a status Meta reported for a message of `chat`, forward only, keeping
    /// Meta's `error` when it moved to `failed`. Answers None when it changed nothing.
    pub async fn status(
        &self,
        chat: &WabaChat,
        whatsapp_message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>,
        error: Option<SendFailure>,
    ) -> Result<Option<WabaMessage>, DomainError> {
        self.in_chat(chat, |reply| ChatMsg::Status {
            whatsapp_message_id: whatsapp_message_id.to_owned(),
            status,
            at,
            error: error.clone(),
            reply,
        })
        .await?
    }

    /// The live feed of new messages, status changes and assignments of every chat;
    /// the caller filters what its user may see.
    /// With `last_seen`, the kept events after it come first (see [`DeskFeed`]).
    pub fn subscribe(&self, last_seen: Option<EventId>) -> Subscription {
        self.events.subscribe(last_seen)
    }

    /// The kept events after `id`; None when some are no longer kept. What a subscriber
    /// that fell behind the live feed catches up from.
    pub fn events_since(&self, id: EventId) -> Option<Vec<FeedEntry>> {
        self.events.since(id)
    }

    /// Puts an event of a change made outside the chat actors (an assignment) on the
    /// live feed.
    pub fn publish(&self, event: WabaEvent) {
        self.events.publish(event);
    }

    /// Stops every chat actor (each finishes what it is doing), then the desk. Calling
    /// it again does nothing.
    pub(crate) async fn shutdown(&self) {
        let Some(desk) = self.slot.get() else {
            return;
        };
        if call(
            &desk,
            self.chat_timeout,
            "the operator desk",
            DeskMsg::Shutdown,
        )
        .await
        .is_ok()
        {
            let _ = desk
                .stop_and_wait(Some("shutdown".into()), Some(self.call_timeout))
                .await;
        }
    }

    /// One request into the chat's actor. An actor that was retired (idle) between the
    /// desk handing it out and the request reaching it refuses the request unread; the
    /// request then goes to the chat's new actor. A request that was accepted is never
    /// sent twice.
    async fn in_chat<T: Send + 'static>(
        &self,
        chat: &WabaChat,
        build: impl Fn(RpcReplyPort<T>) -> ChatMsg,
    ) -> Result<T, DomainError> {
        for _ in 0..CHAT_ATTEMPTS {
            let actor = self.chat(chat).await?;
            match actor.call(&build, Some(self.chat_timeout)).await {
                Ok(CallResult::Success(answer)) => return Ok(answer),
                Ok(CallResult::Timeout) => {
                    return Err(DomainError::Timeout(format!(
                        "{} did not answer within {} ms",
                        who(chat),
                        self.chat_timeout.as_millis()
                    )));
                }
                // Accepted, then dropped without an answer: the actor failed while
                // handling it (a send may have reached Meta), so no retry.
                Ok(CallResult::SenderError) => {
                    return Err(DomainError::Unavailable(format!(
                        "{} failed; retry",
                        who(chat)
                    )));
                }
                // Refused unread: the actor is draining or gone.
                Err(_) => continue,
            }
        }
        Err(DomainError::Unavailable(format!(
            "{} is restarting; retry shortly",
            who(chat)
        )))
    }

    async fn chat(&self, chat: &WabaChat) -> Result<ActorRef<ChatMsg>, DomainError> {
        let chat = Box::new(chat.clone());
        self.slot
            .call(self.call_timeout, "the operator desk", |reply| {
                DeskMsg::Chat { chat, reply }
            })
            .await?
    }
}

fn who(chat: &WabaChat) -> String {
    format!("the actor of chat {}", chat.id)
}
