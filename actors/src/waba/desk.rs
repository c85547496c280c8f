//! [`OperatorDesk`]: the supervisor of the chat actors, and [`OperatorDeskHandle`], the way
//! the HTTP edge reaches a chat.
//!
//! Chat actors are spawned on first use and live until shutdown. A chat actor that dies
//! (a panic in a handler) is forgotten by the desk and spawned again, from storage, by
//! the next request for its chat: its only state is the chat row, so a lazy restart loses
//! nothing and needs no backoff. The desk itself never returns an error from a handler.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::broadcast;

use super::chat::{ChatMsg, OperatorChatActor};
use super::{GraphApi, GraphCredentials, SendError, WabaChat, WabaContent, WabaMessage, WabaStore};
use crate::error::DomainError;
use crate::instance::ask_actor;
use crate::messaging::MessageStatus;

/// Events buffered for slow live subscribers before they lag.
pub const EVENT_CAPACITY: usize = 256;

/// What the live feed (`/api/waba/operator/events`) carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WabaEventKind {
    /// A new message, inbound or sent.
    Message,
    /// A message's status moved forward.
    Status,
}

impl WabaEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WabaEventKind::Message => "message",
            WabaEventKind::Status => "status",
        }
    }
}

/// One event of the live feed: the message as stored after the change.
#[derive(Debug, Clone, PartialEq)]
pub struct WabaEvent {
    pub kind: WabaEventKind,
    pub message: WabaMessage,
}

/// The messages of the desk (public only because [`OperatorDesk`] names it).
pub enum DeskMsg {
    /// The actor of a chat, spawned when missing.
    Chat {
        chat: Box<WabaChat>,
        reply: RpcReplyPort<Result<ActorRef<ChatMsg>, DomainError>>,
    },
    Shutdown(RpcReplyPort<()>),
}

/// The supervisor of every [`OperatorChatActor`].
pub struct OperatorDesk {
    store: Arc<dyn WabaStore>,
    graph: Arc<dyn GraphApi>,
    events: broadcast::Sender<WabaEvent>,
    call_timeout: Duration,
}

pub struct DeskState {
    chats: HashMap<i64, ActorRef<ChatMsg>>,
    by_actor: HashMap<ActorId, i64>,
    stopping: bool,
}

impl Actor for OperatorDesk {
    type Msg = DeskMsg;
    type State = DeskState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(DeskState {
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
                let answer = self.chat_actor(&myself, state, *chat).await;
                let _ = reply.send(answer);
            }
            DeskMsg::Shutdown(reply) => {
                state.stopping = true;
                myself
                    .stop_children_and_wait(Some("shutdown".into()), Some(self.call_timeout))
                    .await;
                state.chats.clear();
                state.by_actor.clear();
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
        if let Some(chat) = state.by_actor.remove(&cell.get_id())
            && state
                .chats
                .get(&chat)
                .is_some_and(|a| a.get_id() == cell.get_id())
        {
            state.chats.remove(&chat);
        }
        Ok(())
    }
}

impl OperatorDesk {
    async fn chat_actor(
        &self,
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
            store: self.store.clone(),
            graph: self.graph.clone(),
            events: self.events.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, actor, chat, myself.get_cell())
            .await
            .map_err(|e| {
                DomainError::Unavailable(format!("the actor of chat {id} did not start: {e}"))
            })?;
        state.by_actor.insert(actor.get_id(), id);
        state.chats.insert(id, actor.clone());
        Ok(actor)
    }
}

/// The operator desk. Cheap to clone.
///
/// Every method fails with `Unavailable` when the desk or the chat actor is not running
/// and with `Timeout` when it does not answer in time.
#[derive(Clone)]
pub struct OperatorDeskHandle {
    desk: ActorRef<DeskMsg>,
    events: broadcast::Sender<WabaEvent>,
    call_timeout: Duration,
    /// Calls into a chat actor wait behind the chat's sends, each of which may take the
    /// Graph API client's whole retry budget.
    chat_timeout: Duration,
}

/// Starts the desk.
///
/// `call_timeout` bounds calls into the desk; `chat_timeout` bounds calls into a chat
/// actor, so it must exceed the Graph API client's longest send (with retries).
/// Fails with `Unavailable` when the actor cannot start.
pub async fn start_operator_desk(
    store: Arc<dyn WabaStore>,
    graph: Arc<dyn GraphApi>,
    call_timeout: Duration,
    chat_timeout: Duration,
) -> Result<OperatorDeskHandle, DomainError> {
    let (events, _) = broadcast::channel(EVENT_CAPACITY);
    let desk = OperatorDesk {
        store,
        graph,
        events: events.clone(),
        call_timeout,
    };
    let (desk, _) = Actor::spawn(None, desk, ())
        .await
        .map_err(|e| DomainError::Unavailable(format!("cannot start the operator desk: {e}")))?;
    Ok(OperatorDeskHandle {
        desk,
        events,
        call_timeout,
        chat_timeout,
    })
}

impl OperatorDeskHandle {
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
        let actor = self.chat(chat).await?;
        ask_actor(&actor, self.chat_timeout, &who(chat), |reply| {
            ChatMsg::Send {
                credentials,
                content,
                text,
                sender_user_id,
                reply,
            }
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
        let actor = self.chat(chat).await?;
        ask_actor(&actor, self.chat_timeout, &who(chat), |reply| {
            ChatMsg::Inbound {
                message: Box::new(message),
                reply,
            }
        })
        .await?
    }

    /// Applies a status Meta reported for a message of `chat`, forward only. Answers None
    /// when it changed nothing.
    pub async fn status(
        &self,
        chat: &WabaChat,
        whatsapp_message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>,
    ) -> Result<Option<WabaMessage>, DomainError> {
        let actor = self.chat(chat).await?;
        let whatsapp_message_id = whatsapp_message_id.to_owned();
        ask_actor(&actor, self.chat_timeout, &who(chat), |reply| {
            ChatMsg::Status {
                whatsapp_message_id,
                status,
                at,
                reply,
            }
        })
        .await?
    }

    /// The live feed of new messages and status changes of every chat; the caller
    /// filters what its user may see.
    pub fn subscribe(&self) -> broadcast::Receiver<WabaEvent> {
        self.events.subscribe()
    }

    /// Stops every chat actor, then the desk. Calling it again does nothing.
    pub async fn shutdown(&self) {
        if ask_actor(
            &self.desk,
            self.chat_timeout,
            "the operator desk",
            DeskMsg::Shutdown,
        )
        .await
        .is_err()
        {
            return;
        }
        self.desk.stop(Some("shutdown".into()));
    }

    async fn chat(&self, chat: &WabaChat) -> Result<ActorRef<ChatMsg>, DomainError> {
        let chat = Box::new(chat.clone());
        ask_actor(
            &self.desk,
            self.call_timeout,
            "the operator desk",
            |reply| DeskMsg::Chat { chat, reply },
        )
        .await?
    }
}

fn who(chat: &WabaChat) -> String {
    format!("the actor of chat {}", chat.id)
}
