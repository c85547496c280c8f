//! [`OperatorChatActor`]: one per WABA chat. Its mailbox is the order of everything that
//! happens to the chat: a status webhook for a message being sent waits until the send
//! has stored it, and the 24-hour window is checked against the newest inbound message
//! it has processed.
//!
//! A chat actor passivates: once nothing has reached it for the desk's idle time it asks
//! the desk to retire it, and the next request for the chat starts a new one from
//! storage (its only state is the chat row).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};
// Tokio's clock, so tests can move time instead of waiting for it.
use tokio::time::Instant;

use super::feed::DeskFeed;
use super::{GraphApi, SendError, WabaEvent};
use crate::domain::MessageStatus;
use crate::domain::waba::{
    GraphCredentials, SendFailure, WabaChat, WabaContent, WabaMedia, WabaMessage, window_open,
};
use crate::error::{DomainError, StoreError};
use crate::store::WabaStore;

/// The messages of a chat actor (public only because [`OperatorChatActor`] names it).
pub enum ChatMsg {
    Send {
        credentials: GraphCredentials,
        content: WabaContent,
        /// The stored text of the message (the operator's `message`).
        text: Option<String>,
        sender_user_id: Option<String>,
        /// The file sent, when the desk keeps a copy.
        media: Option<Box<WabaMedia>>,
        reply: RpcReplyPort<Result<WabaMessage, SendError>>,
    },
    /// An inbound message; answers None when it was already stored (a webhook retry).
    Inbound {
        message: Box<WabaMessage>,
        reply: RpcReplyPort<Result<Option<WabaMessage>, DomainError>>,
    },
    /// A status from Meta; answers None when it changes nothing (unknown, or backwards).
    Status {
        whatsapp_message_id: String,
        status: MessageStatus,
        at: DateTime<Utc>,
        /// Meta's error of a `failed` status.
        error: Option<SendFailure>,
        reply: RpcReplyPort<Result<Option<WabaMessage>, DomainError>>,
    },
    /// Time to see whether the chat has been idle for the desk's idle time.
    IdleCheck,
}

/// The actor of one chat. `self` is configuration shared by every chat actor.
pub struct OperatorChatActor {
    pub(super) store: Arc<dyn WabaStore>,
    pub(super) graph: Arc<dyn GraphApi>,
    pub(super) events: DeskFeed,
    /// Tells the desk this actor (of this chat) has been idle for `idle_after`.
    pub(super) retire: Arc<dyn Fn(ActorId) + Send + Sync>,
    pub(super) idle_after: Duration,
}

pub struct ChatState {
    chat: WabaChat,
    /// When the last request reached the actor.
    last_active: Instant,
}

impl Actor for OperatorChatActor {
    type Msg = ChatMsg;
    type State = ChatState;
    /// The chat as the desk found it; reloaded here so the window starts from storage.
    type Arguments = WabaChat;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        chat: WabaChat,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_after(self.idle_after, || ChatMsg::IdleCheck);
        let chat = match self.store.waba_chat(chat.id).await {
            Ok(Some(stored)) => stored,
            // Storage down or the row gone: start from what the caller saw; the next
            // inbound message brings the window up to date anyway.
            Ok(None) | Err(_) => chat,
        };
        Ok(ChatState {
            chat,
            last_active: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(message, ChatMsg::IdleCheck) {
            state.last_active = Instant::now();
        }
        match message {
            ChatMsg::IdleCheck => {
                let idle = state.last_active.elapsed();
                if idle >= self.idle_after {
                    // The desk forgets this actor, then drains it: what is queued still
                    // runs, and a request that comes later reaches a new actor.
                    (self.retire)(myself.get_id());
                } else {
                    myself.send_after(self.idle_after - idle, || ChatMsg::IdleCheck);
                }
            }
            ChatMsg::Send {
                credentials,
                content,
                text,
                sender_user_id,
                media,
                reply,
            } => {
                let answer = self
                    .send(
                        state,
                        &credentials,
                        content,
                        text,
                        sender_user_id,
                        media.map(|m| *m),
                    )
                    .await;
                let _ = reply.send(answer);
            }
            ChatMsg::Inbound { message, reply } => {
                let answer = self.inbound(state, *message).await;
                let _ = reply.send(answer);
            }
            ChatMsg::Status {
                whatsapp_message_id,
                status,
                at,
                error,
                reply,
            } => {
                let mut answer = self
                    .store
                    .advance_waba_message_status(state.chat.id, &whatsapp_message_id, status, at)
                    .await
                    .map_err(DomainError::from);
                if let (Ok(Some(m)), Some(error)) = (&answer, &error)
                    && m.status == MessageStatus::Failed
                {
                    answer = self
                        .store
                        .settle_waba_message(
                            m.id,
                            &m.whatsapp_message_id,
                            m.status,
                            Some(error),
                            at,
                        )
                        .await
                        .map_err(DomainError::from);
                }
                if let Ok(Some(m)) = &answer {
                    self.publish(WabaEvent::Status(m.clone()));
                }
                let _ = reply.send(answer);
            }
        }
        Ok(())
    }
}

impl OperatorChatActor {
    async fn send(
        &self,
        state: &mut ChatState,
        credentials: &GraphCredentials,
        content: WabaContent,
        text: Option<String>,
        sender_user_id: Option<String>,
        media: Option<WabaMedia>,
    ) -> Result<WabaMessage, SendError> {
        let now = Utc::now();
        let is_template = matches!(content, WabaContent::Template { .. });
        if !is_template && !window_open(state.chat.last_customer_message_at, now) {
            return Err(SendError::OutsideWindow);
        }
        // Stored first as `pending` (under a placeholder id until Meta names it), so the
        // operator sees the send at once and, whatever happens, how it ended.
        let placeholder = format!("pending.{}", crate::domain::new_id());
        let message = WabaMessage {
            id: 0,
            chat_id: state.chat.id,
            owner_id: state.chat.owner_id.clone(),
            whatsapp_message_id: placeholder.clone(),
            from_me: true,
            message_type: content.kind().to_owned(),
            content: text,
            media_url: content.media_url().map(str::to_owned),
            media,
            error: None,
            status: MessageStatus::Pending,
            is_read_by_operator: true,
            sender_user_id,
            timestamp: now,
            status_updated_at: Some(now),
        };
        let pending = self
            .store
            .insert_waba_message(&message)
            .await
            .map_err(|e| SendError::Domain(DomainError::Store(e)))?;
        state.chat.last_message_at = Some(now);
        self.publish(WabaEvent::Message(pending.clone()));
        let sent = self
            .graph
            .send_message(credentials, &state.chat.customer_phone, &content)
            .await;
        let (wamid, status, failure) = match &sent {
            Ok(wamid) => (wamid.as_str(), MessageStatus::Sent, None),
            Err(e) => (
                placeholder.as_str(),
                MessageStatus::Failed,
                Some(SendFailure {
                    code: e.code(),
                    title: e.to_string(),
                }),
            ),
        };
        let settled = self
            .store
            .settle_waba_message(pending.id, wamid, status, failure.as_ref(), Utc::now())
            .await;
        let settled = match settled {
            Ok(Some(m)) => {
                self.publish(WabaEvent::Status(m.clone()));
                m
            }
            // Meta's answer stands either way; the row keeps `pending`, which the log
            // explains.
            Ok(None) | Err(_) => {
                tracing::error!(
                    chat = state.chat.id,
                    message = pending.id,
                    ?status,
                    wamid,
                    "the outcome of a send could not be stored"
                );
                WabaMessage {
                    whatsapp_message_id: wamid.to_owned(),
                    status,
                    error: failure.clone(),
                    ..pending
                }
            }
        };
        match sent {
            Ok(_) => Ok(settled),
            Err(e) => Err(SendError::Graph(e)),
        }
    }

    async fn inbound(
        &self,
        state: &mut ChatState,
        mut message: WabaMessage,
    ) -> Result<Option<WabaMessage>, DomainError> {
        message.chat_id = state.chat.id;
        message.owner_id = state.chat.owner_id.clone();
        match self.store.insert_waba_message(&message).await {
            Ok(stored) => {
                let ts = stored.timestamp;
                if state.chat.last_customer_message_at.is_none_or(|t| t < ts) {
                    state.chat.last_customer_message_at = Some(ts);
                }
                if state.chat.last_message_at.is_none_or(|t| t < ts) {
                    state.chat.last_message_at = Some(ts);
                }
                self.publish(WabaEvent::Message(stored.clone()));
                Ok(Some(stored))
            }
            Err(StoreError::Conflict(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn publish(&self, event: WabaEvent) {
        self.events.publish(event);
    }
}
