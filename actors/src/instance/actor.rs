//! [`InstanceActor`]: one WhatsApp instance. It owns the engine, turns engine events
//! into status transitions (status board, storage, activity log, events) and answers
//! the requests of its handle.
//!
//! Request-level failures go back in the reply and the actor keeps running. Only a
//! broken session (`EngineEvent::Failed`) fails the actor, so its supervisor restarts
//! it with backoff. A session that cannot even start (no such engine, unreadable
//! session) parks as `failed` instead: restarting would fail the same way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::InstanceDeps;
use super::pace::Pace;
use super::status::{StatusBoard, StatusView};
use crate::domain::address::{STATUS_BROADCAST, is_group_jid, jid_for};
use crate::domain::chat::next_label_id;
use crate::domain::event::{
    CallReceived, ChatUpdated, Connected, Disconnected, LOGOUT_REASON, LabelUpdated, MediaFields,
    MessageEdited, MessageReaction, MessageReceived, MessageRevoked, MessageSent, PollVoted,
    PresenceUpdate, QrReceived, ReplyFields, StatusReport,
};
use crate::domain::message::{EDIT_WINDOW, media_url};
use crate::domain::{
    ActivityEntry, ChatAnswer, ChatChange, ChatOp, ChatSettings, Contact, EngineKind, Event,
    GroupAnswer, GroupOp, Instance, InstanceEvent, InstanceStatus, Label, MediaKind, Message,
    MessageStatus, Mute, PollVote, Presence, ProfileAnswer, ProfileOp, Reaction, apply_reaction,
    new_id,
};
use crate::engine::{
    CommitSink, Engine, EngineContact, EngineContext, EngineError, EngineEvent, EventSink,
    InboundCall, InboundChange, InboundMessage, InboundPresence, InboundReaction, InboundVote,
    MessageChange, MessageRef, OutboundContent, PollRef, SandboxControl, SendOptions, StatusPost,
    VoteChoice,
};
use crate::error::{DomainError, StoreError};
use crate::media_store::MediaStore;

/// The answer to "give me the QR code".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QrAnswer {
    /// The QR payload to render.
    Code(String),
    /// No code is ready yet; ask again shortly (202 at the HTTP edge).
    Generating,
}

/// The messages of an instance actor. Public only because [`InstanceActor`] names it;
/// the module is private, so nothing outside this crate can build one.
pub enum InstanceMsg {
    /// An event of the engine started in `epoch`; events of an older engine are dropped.
    Engine {
        epoch: u64,
        event: EngineEvent,
    },
    /// An event the engine must not lose: answered once it is handled (stored).
    EngineCommit {
        epoch: u64,
        event: EngineEvent,
        reply: RpcReplyPort<Result<(), String>>,
    },
    Status(RpcReplyPort<StatusView>),
    Qr(RpcReplyPort<Result<QrAnswer, DomainError>>),
    PairCode {
        phone: String,
        reply: RpcReplyPort<Result<String, DomainError>>,
    },
    Reconnect(RpcReplyPort<Result<(), DomainError>>),
    Logout(RpcReplyPort<Result<(), DomainError>>),
    Sandbox {
        control: SandboxControl,
        reply: RpcReplyPort<Result<(), DomainError>>,
    },
    Send {
        to: String,
        content: OutboundContent,
        extras: SendExtras,
        reply: RpcReplyPort<Result<Message, DomainError>>,
    },
    React {
        message_id: String,
        emoji: String,
        reply: RpcReplyPort<Result<(), DomainError>>,
    },
    Edit {
        message_id: String,
        text: String,
        reply: RpcReplyPort<Result<Message, DomainError>>,
    },
    Delete {
        message_id: String,
        for_everyone: bool,
        reply: RpcReplyPort<Result<(), DomainError>>,
    },
    MarkRead {
        chat: String,
        reply: RpcReplyPort<Result<u64, DomainError>>,
    },
    Presence {
        action: PresenceAction,
        reply: RpcReplyPort<Result<(), DomainError>>,
    },
    Group {
        op: GroupOp,
        reply: RpcReplyPort<Result<GroupAnswer, DomainError>>,
    },
    Profile {
        op: ProfileOp,
        reply: RpcReplyPort<Result<ProfileAnswer, DomainError>>,
    },
    Chat {
        op: ChatOp,
        reply: RpcReplyPort<Result<ChatAnswer, DomainError>>,
    },
    Contacts(RpcReplyPort<Result<Vec<EngineContact>, DomainError>>),
    /// The send queue may move: its head goes when the pace and connection allow.
    DrainQueue,
    /// An event raised outside the actor (a limit reached, a webhook paused), published
    /// once the writes queued before it are committed: its id comes after theirs.
    Publish(Event),
    AddContact {
        jid: String,
        name: Option<String>,
        reply: RpcReplyPort<Result<bool, DomainError>>,
    },
}

/// What the account tells WhatsApp about its presence.
#[derive(Debug, Clone, PartialEq)]
pub enum PresenceAction {
    /// Online (`Available`) or offline (`Unavailable`).
    Announce(Presence),
    /// Typing, recording or paused in a chat.
    ChatState { chat: String, state: Presence },
    /// Follow a contact's presence.
    Subscribe(String),
}

/// How an instance actor starts (public only because [`InstanceActor`] names it).
pub struct InstanceArgs {
    pub instance: Instance,
    /// Do not start the engine: the instance stays `failed` or `logged_out` until a
    /// reconnect, a QR request or a pair code revives it.
    pub parked: bool,
}

/// The behaviour of one instance; its mutable state is `InstanceState`.
pub struct InstanceActor {
    deps: InstanceDeps,
    board: StatusBoard,
    media: MediaStore,
}

impl InstanceActor {
    pub(crate) fn new(deps: InstanceDeps, board: StatusBoard) -> Self {
        let media = MediaStore::new(&deps.data_dir).with_shared(deps.shared_media.clone());
        InstanceActor { deps, board, media }
    }
}

/// What one instance actor knows about its session.
pub struct InstanceState {
    id: String,
    /// The owner, whose usage statistics the instance's messages count toward.
    user_id: String,
    kind: EngineKind,
    session_dir: PathBuf,
    /// None while parked.
    engine: Option<Box<dyn Engine>>,
    /// The session token of the running engine (from the status board, unique in the
    /// process), so late events of a stopped engine are ignored.
    epoch: u64,
    status: InstanceStatus,
    phone: Option<String>,
    qr: Option<ShownQr>,
    /// Callers of inbound messages the sandbox accepted, by WhatsApp message id: each is
    /// answered once its message is committed (or failed to be).
    awaiting: HashMap<String, Vec<InboundReply>>,
    /// Completes once the last message write this actor queued without waiting (a send,
    /// a message WhatsApp brought) is committed or failed. Writes commit in the order
    /// queued, so then every earlier one has too.
    committing: Option<oneshot::Receiver<()>>,
    /// The paced sends waiting (`pending` in storage), by WhatsApp id, oldest first.
    queue: std::collections::VecDeque<String>,
    pace: Pace,
    /// A `DrainQueue` is scheduled: no second one is.
    drain_scheduled: bool,
    /// The queue's head whose "typing…" is showing: it goes at the next drain.
    typing_for: Option<String>,
    /// Failed attempts to send the queue's head.
    head_attempts: u32,
}

type InboundReply = RpcReplyPort<Result<(), DomainError>>;

struct ShownQr {
    code: String,
    expires_at: Instant,
}

impl InstanceState {
    fn live_qr(&self) -> Option<&ShownQr> {
        self.qr.as_ref().filter(|qr| qr.expires_at > Instant::now())
    }

    fn view(&self) -> StatusView {
        StatusView::new(self.status, self.live_qr().is_some(), self.phone.clone())
    }

    /// A write is about to be queued, behind every earlier one: [`settle`](Self::settle)
    /// waits for it from now on. Send `()` once it is committed (or failed).
    fn queuing(&mut self) -> oneshot::Sender<()> {
        let (committed, settled) = oneshot::channel();
        self.committing = Some(settled);
        committed
    }

    /// Waits until every message write this actor queued is committed (or failed), so
    /// that what runs next reads storage as if it had awaited them.
    async fn settle(&mut self) {
        if let Some(last) = self.committing.take() {
            // An error only says the write's completion is gone: it ended too.
            let _ = last.await;
        }
    }
}

/// Whether the actor handles `message` without waiting for its queued message writes to
/// commit: these read nothing such a write changes (a send quoting a message reads it,
/// so it waits). Every other message waits for them first, which keeps each handler's
/// view of storage what it was when every write was awaited in place.
fn pipelined(message: &InstanceMsg) -> bool {
    match message {
        InstanceMsg::Send { extras, .. } => extras.reply_to.is_none(),
        InstanceMsg::Sandbox { control, .. } => matches!(control, SandboxControl::Inbound(_)),
        InstanceMsg::Engine { event, .. } => matches!(
            event,
            EngineEvent::Message(_) | EngineEvent::SentByPhone(_) | EngineEvent::Receipt { .. }
        ),
        InstanceMsg::EngineCommit { event, .. } => {
            matches!(event, EngineEvent::Message(_) | EngineEvent::SentByPhone(_))
        }
        InstanceMsg::Status(_) => true,
        _ => false,
    }
}

/// What a transition records besides the status itself.
#[derive(Default)]
struct Record {
    activity: Option<(&'static str, Value)>,
    event: Option<Event>,
}

impl Actor for InstanceActor {
    type Msg = InstanceMsg;
    type State = InstanceState;
    type Arguments = InstanceArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: InstanceArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let instance = args.instance;
        let mut state = InstanceState {
            session_dir: super::session_dir(&self.deps.data_dir, &instance.id),
            id: instance.id,
            user_id: instance.user_id,
            kind: instance.engine,
            engine: None,
            epoch: 0,
            status: instance.status,
            phone: instance.phone,
            qr: None,
            awaiting: HashMap::new(),
            committing: None,
            queue: Default::default(),
            pace: Pace::default(),
            drain_scheduled: false,
            typing_for: None,
            head_attempts: 0,
        };
        match self.deps.storage.pending_sends(&state.id).await {
            Ok(queued) => state.queue = queued.into(),
            Err(err) => {
                tracing::warn!(instance = %state.id, %err, "cannot read the send queue; it waits for the next start");
            }
        }
        if args.parked {
            if !matches!(
                state.status,
                InstanceStatus::Failed | InstanceStatus::LoggedOut
            ) {
                state.status = InstanceStatus::Disconnected;
            }
            self.board.set(&state.id, state.view());
        } else {
            // A start failure parks the instance as failed (recorded inside): it stays
            // reachable so a person can see why and reconnect.
            let _ = self.open(&myself, &mut state).await;
        }
        self.board.set_queued(&state.id, state.queue.len() as u64);
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        close(state).await;
        // Stopped means done writing: whoever deletes the instance next finds nothing
        // of it still to come.
        state.settle().await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // ractor keeps each actor's message loop in one allocation for the actor's life,
        // sized for the largest future the loop may hold: this one. Inline, dispatch's
        // largest arm (6.5 KiB of future, 15 KiB of loop) stayed resident in every idle
        // instance; boxed, the loop holds a pointer and each message pays one allocation,
        // freed once handled (S5: 30 → 15 KiB per instance; S1 and S3 unchanged).
        let handled = Box::pin(self.dispatch(&myself, message, state)).await;
        // Whatever happened (a connection, a send), a waiting queue keeps moving.
        if state.status == InstanceStatus::Connected
            && !state.queue.is_empty()
            && !state.drain_scheduled
        {
            let after = if self.board.ready(&state.id) {
                std::time::Duration::ZERO
            } else {
                QUEUE_RECHECK
            };
            schedule_drain(&myself, state, after);
        }
        handled
    }
}

impl InstanceActor {
    async fn dispatch(
        &self,
        myself: &ActorRef<InstanceMsg>,
        message: InstanceMsg,
        state: &mut InstanceState,
    ) -> Result<(), ActorProcessingErr> {
        if !pipelined(&message) {
            state.settle().await;
        }
        match message {
            InstanceMsg::Engine { epoch, event } => {
                if epoch == state.epoch {
                    let loss = shown_on_loss(&event).is_some();
                    self.on_engine_event(state, event).await?;
                    if loss {
                        self.board.loss_handled(&state.id, epoch);
                    }
                } else if let EngineEvent::Message(m) = event {
                    answer_inbound(
                        state,
                        &m.message_id,
                        Err(DomainError::Unavailable(
                            "the session restarted before the message was stored".into(),
                        )),
                    );
                }
            }
            InstanceMsg::EngineCommit {
                epoch,
                event,
                reply,
            } => {
                if epoch != state.epoch {
                    let _ = reply.send(Err("the session that received it was stopped".into()));
                    return Ok(());
                }
                let (message, from_me) = match event {
                    EngineEvent::Message(message) => (message, false),
                    EngineEvent::SentByPhone(message) => (message, true),
                    EngineEvent::Reaction(reaction) => {
                        let _ = reply.send(self.on_reaction(state, reaction).await);
                        return Ok(());
                    }
                    EngineEvent::Change(change) => {
                        let _ = reply.send(self.on_change(state, change).await);
                        return Ok(());
                    }
                    EngineEvent::Vote(vote) => {
                        let _ = reply.send(self.on_vote(state, vote).await);
                        return Ok(());
                    }
                    other => {
                        let answer = self.on_engine_event(state, other).await;
                        // Answered once what it queued (a receipt's status) is written or
                        // failed (a failed receipt is logged, not answered as an error).
                        state.settle().await;
                        let _ = reply.send(answer.map_err(|e| e.to_string()));
                        return Ok(());
                    }
                };
                // Answered once committed, without holding up the mailbox meanwhile.
                self.on_message(state, message, from_me, move |stored| {
                    let _ = reply.send(stored.map_err(|e| e.to_string()));
                })
                .await;
            }
            InstanceMsg::Status(reply) => {
                let view = self.board.get(&state.id).unwrap_or_else(|| state.view());
                let _ = reply.send(view);
            }
            InstanceMsg::Qr(reply) => {
                let answer = self.qr(myself, state).await;
                let _ = reply.send(answer);
            }
            InstanceMsg::PairCode { phone, reply } => {
                let answer = self.pair_code(myself, state, &phone).await;
                let _ = reply.send(answer);
            }
            InstanceMsg::Reconnect(reply) => {
                let answer = self
                    .open(myself, state)
                    .await
                    .map_err(DomainError::Unavailable);
                let _ = reply.send(answer);
            }
            InstanceMsg::Logout(reply) => {
                self.logout(state).await;
                let _ = reply.send(Ok(()));
            }
            InstanceMsg::Sandbox { control, reply } => {
                let inbound = match &control {
                    SandboxControl::Inbound(m) => Some(m.message_id.clone()),
                    _ => None,
                };
                match (sandbox(state, control).await, inbound) {
                    // The session put the message into this mailbox: its caller hears
                    // back once it is committed, not before.
                    (Ok(()), Some(message_id)) => {
                        state.awaiting.entry(message_id).or_default().push(reply);
                    }
                    (answer, _) => {
                        let _ = reply.send(answer);
                    }
                }
            }
            InstanceMsg::Send {
                to,
                content,
                mut extras,
                reply,
            } => {
                if extras.send_rate.is_some() {
                    let answer = self.enqueue(state, &to, content, extras).await;
                    if answer.is_ok() {
                        schedule_drain(myself, state, std::time::Duration::ZERO);
                    }
                    let _ = reply.send(answer);
                } else if let Some(delay) = extras.delay.take().filter(|d| !d.is_zero()) {
                    // "typing…" now; the send comes back to this mailbox once the delay
                    // is over, and is answered then.
                    match self.show_typing(state, &to).await {
                        Ok(()) => {
                            myself.send_after(delay, move || InstanceMsg::Send {
                                to,
                                content,
                                extras,
                                reply,
                            });
                        }
                        Err(err) => {
                            let _ = reply.send(Err(err));
                        }
                    }
                } else {
                    // Answered once committed, without holding up the mailbox meanwhile.
                    self.send(state, &to, content, extras, reply).await;
                }
            }
            InstanceMsg::Publish(event) => self.publish(&state.id, event).await,
            InstanceMsg::DrainQueue => {
                state.drain_scheduled = false;
                self.drain(myself, state).await;
            }
            InstanceMsg::React {
                message_id,
                emoji,
                reply,
            } => {
                let answer = self.react(state, &message_id, emoji).await;
                let _ = reply.send(answer);
            }
            InstanceMsg::Edit {
                message_id,
                text,
                reply,
            } => {
                let answer = self.edit(state, &message_id, text).await;
                let _ = reply.send(answer);
            }
            InstanceMsg::Delete {
                message_id,
                for_everyone,
                reply,
            } => {
                let answer = self.delete(state, &message_id, for_everyone).await;
                let _ = reply.send(answer);
            }
            InstanceMsg::MarkRead { chat, reply } => {
                let answer = self.mark_read(state, &chat).await;
                let _ = reply.send(answer);
            }
            InstanceMsg::Presence { action, reply } => {
                let answer = match connected_engine(&self.board, state) {
                    Ok(engine) => match action {
                        PresenceAction::Announce(presence) => engine.set_presence(presence).await,
                        PresenceAction::ChatState { chat, state } => {
                            engine.chat_state(&chat, state).await
                        }
                        PresenceAction::Subscribe(jid) => engine.subscribe_presence(&jid).await,
                    }
                    .map_err(engine_error),
                    Err(err) => Err(err),
                };
                let _ = reply.send(answer);
            }
            InstanceMsg::Group { op, reply } => {
                let answer = match connected_engine(&self.board, state) {
                    Ok(engine) => engine.group(op).await.map_err(engine_error),
                    Err(err) => Err(err),
                };
                let _ = reply.send(answer);
            }
            InstanceMsg::Profile { op, reply } => {
                let answer = match connected_engine(&self.board, state) {
                    Ok(engine) => engine.profile(op).await.map_err(engine_error),
                    Err(err) => Err(err),
                };
                let _ = reply.send(answer);
            }
            InstanceMsg::Chat { op, reply } => {
                let answer = self.chat(state, op).await;
                let _ = reply.send(answer);
            }
            InstanceMsg::Contacts(reply) => {
                let answer = match state.engine.as_mut() {
                    Some(engine) => engine.contacts().await.map_err(engine_error),
                    None => Ok(Vec::new()),
                };
                let _ = reply.send(answer);
            }
            InstanceMsg::AddContact { jid, name, reply } => {
                let answer = match connected_engine(&self.board, state) {
                    Ok(engine) => engine
                        .add_contact(&jid, name.as_deref())
                        .await
                        .map_err(engine_error),
                    Err(e) => Err(e),
                };
                let _ = reply.send(answer);
            }
        }
        Ok(())
    }

    /// Shows "typing…" in `chat` (a delayed send's). Fails with
    /// `Conflict("not_connected")` unless connected; an engine that cannot show it only
    /// costs the typing, not the send.
    async fn show_typing(&self, state: &mut InstanceState, chat: &str) -> Result<(), DomainError> {
        let engine = connected_engine(&self.board, state)?;
        if let Err(err) = engine.chat_state(chat, Presence::Composing).await {
            tracing::warn!(instance = %state.id, %err, "cannot show typing before a send");
        }
        Ok(())
    }

    /// Puts a paced send in the queue: stored `pending` under the WhatsApp id it will go
    /// with, which the caller gets now. Fails as a send would before reaching WhatsApp:
    /// `Conflict("not_connected")`, `NotFound` for an unknown quoted message.
    async fn enqueue(
        &self,
        state: &mut InstanceState,
        to: &str,
        content: OutboundContent,
        extras: SendExtras,
    ) -> Result<Message, DomainError> {
        connected_engine(&self.board, state)?;
        let quoted = match &extras.reply_to {
            Some(id) => Some(self.message_of_chat(state, to, id).await?.message_id),
            None => None,
        };
        let queued = crate::engine::SentMessage {
            message_id: crate::engine::sandbox::new_message_id(),
            timestamp: Utc::now(),
            message_secret: None,
        };
        let extra = match extras.delay.filter(|d| !d.is_zero()) {
            Some(delay) => json!({ DELAY_KEY: delay.as_millis() as u64 }),
            None => json!({}),
        };
        let outbound = Outbound {
            instance_id: &state.id,
            to,
            quoted,
            mentions: extras.mentions,
        };
        let message = outbound.message(content, &queued, MessageStatus::Pending, extra);
        self.deps.storage.insert_message(&message).await?;
        // Counted now, before the caller hears of it, so the next send's limit check
        // sees it: a burst of queued sends cannot pass a limit. It stays counted if it
        // finally fails, as the send the limit let through.
        self.deps
            .stats
            .add(&state.user_id, Some(&state.id), sent_usage(&message));
        state.queue.push_back(message.message_id.clone());
        self.board.set_queued(&state.id, state.queue.len() as u64);
        Ok(message)
    }

    /// Moves the send queue: its head goes when connected and the pace allows (after
    /// its "typing…" when it asked for a delay); otherwise another drain is scheduled
    /// for when it may. One send per drain, so the mailbox never waits on the queue.
    async fn drain(&self, myself: &ActorRef<InstanceMsg>, state: &mut InstanceState) {
        let Some(head) = state.queue.front().cloned() else {
            return;
        };
        if connected_engine(&self.board, state).is_err() {
            // The next connection moves it (see `handle`).
            return;
        }
        let rate = match self.deps.storage.instance_by_id(&state.id).await {
            Ok(instance) => instance.and_then(|i| i.webhook.send_rate),
            Err(err) => {
                tracing::warn!(instance = %state.id, %err, "cannot read the send rate; the queue waits");
                schedule_drain(myself, state, QUEUE_RECHECK);
                return;
            }
        };
        let clock = self.deps.stats.clock().clone();
        if rate.is_some() {
            let wait = state.pace.wait(clock.now());
            if !wait.is_zero() {
                schedule_drain(myself, state, wait.min(QUEUE_RECHECK));
                return;
            }
        }
        let queued = match self.deps.storage.message_by_id(&state.id, &head).await {
            Ok(Some(m)) if m.status == MessageStatus::Pending => m,
            Ok(_) => {
                // Deleted meanwhile, or already settled: nothing to send.
                self.dequeue(myself, state);
                return;
            }
            Err(err) => {
                tracing::warn!(instance = %state.id, %err, "cannot read a queued send; the queue waits");
                schedule_drain(myself, state, QUEUE_RECHECK);
                return;
            }
        };
        let delay = queued
            .metadata
            .get(DELAY_KEY)
            .and_then(Value::as_u64)
            .filter(|&ms| ms > 0);
        if let Some(ms) = delay
            && state.typing_for.as_deref() != Some(head.as_str())
        {
            if self.show_typing(state, &queued.remote_jid).await.is_ok() {
                state.typing_for = Some(head);
                schedule_drain(myself, state, std::time::Duration::from_millis(ms));
            }
            return;
        }
        // The pace counts from when the send went, not from when its storing ended: a
        // reader that saw it stored and then moved the clock must not delay the next.
        let went_at = clock.now();
        match self.send_queued(state, &queued).await {
            Ok(()) => {
                if let Some(rate) = rate {
                    state.pace.sent(went_at, rate, rand::random::<f64>());
                }
                self.dequeue(myself, state);
            }
            Err(err) if retried(&err) && state.head_attempts + 1 < QUEUE_ATTEMPTS => {
                state.head_attempts += 1;
                tracing::warn!(instance = %state.id, message = %head, %err, "a queued send failed; it is tried again");
                schedule_drain(myself, state, QUEUE_RECHECK);
            }
            Err(err) => {
                tracing::warn!(instance = %state.id, message = %head, %err, "a queued send failed");
                self.fail_queued(state, &queued).await;
                self.dequeue(myself, state);
            }
        }
    }

    /// The queue's head is done with (sent, failed or gone): the next may go.
    fn dequeue(&self, myself: &ActorRef<InstanceMsg>, state: &mut InstanceState) {
        state.queue.pop_front();
        state.typing_for = None;
        state.head_attempts = 0;
        self.board.set_queued(&state.id, state.queue.len() as u64);
        if !state.queue.is_empty() {
            schedule_drain(myself, state, std::time::Duration::ZERO);
        }
    }

    /// Sends a queued message under its own id, then stores it `sent` with its
    /// `message_sent` event and announces the event (its usage was counted when it was
    /// queued).
    async fn send_queued(
        &self,
        state: &mut InstanceState,
        queued: &Message,
    ) -> Result<(), DomainError> {
        let content = self.content_of(queued).await?;
        let quote = match &queued.quoted_message_id {
            // A quoted message deleted meanwhile: the reply goes without its quote.
            Some(id) => self
                .message_of_chat(state, &queued.remote_jid, id)
                .await
                .ok(),
            None => None,
        };
        let options = SendOptions {
            reply_to: quote.as_ref().map(message_ref),
            mentions: queued.mentions.clone(),
            message_id: Some(queued.message_id.clone()),
            // Status posts are never paced.
            status: None,
        };
        let engine = connected_engine(&self.board, state)?;
        let sent = engine
            .send(&queued.remote_jid, &content, &options)
            .await
            .map_err(send_failure)?;
        if sent.message_id != queued.message_id {
            tracing::warn!(instance = %state.id, queued = %queued.message_id, sent = %sent.message_id, "the engine sent a queued message under another id");
        }
        let now = Utc::now();
        let mut message = queued.clone();
        message.status = MessageStatus::Sent;
        message.status_updated_at = Some(now);
        message.updated_at = now;
        message.timestamp = sent.timestamp;
        if let Some(all) = message.metadata.as_object_mut() {
            all.insert("timestamp".into(), json!(sent.timestamp.timestamp()));
        }
        message.message_secret = sent.message_secret;
        let event = InstanceEvent::new(&state.id, sent_event(&message));
        if self
            .deps
            .storage
            .settle_pending_send(&message, &event)
            .await?
        {
            self.deps.events.announce(event);
        }
        Ok(())
    }

    /// What a queued message sends: its text, typed content, or its file read back
    /// from uploads (fetched from the shared media store in cluster mode when another
    /// node stored it). Fails with `Invalid` when the file is gone, `Store` when the
    /// shared media store cannot be reached.
    async fn content_of(&self, m: &Message) -> Result<OutboundContent, DomainError> {
        if let Some(path) = &m.media_path {
            let file =
                self.media.local_path(path).await?.ok_or_else(|| {
                    DomainError::Invalid(format!("the queued file {path} is gone"))
                })?;
            let bytes = tokio::fs::read(&file)
                .await
                .map_err(|e| DomainError::Invalid(format!("the queued file is unreadable: {e}")))?;
            return Ok(OutboundContent::Media {
                size: bytes.len() as u64,
                bytes: bytes.into(),
                mime_type: m.mime_type.clone().unwrap_or_default(),
                file_name: m.file_name.clone(),
                caption: m.caption.clone(),
                path: path.clone(),
            });
        }
        if m.typed.message_type().is_some() {
            return Ok(OutboundContent::Typed(m.typed.clone()));
        }
        Ok(OutboundContent::Text(m.content.clone().unwrap_or_default()))
    }

    /// A queued message that cannot go: stored `failed`, with its status event.
    async fn fail_queued(&self, state: &InstanceState, queued: &Message) {
        let failed = self
            .deps
            .storage
            .advance_message_status(
                &state.id,
                &queued.message_id,
                MessageStatus::Failed,
                Utc::now(),
                &StatusReport::new(None),
            )
            .await;
        match failed {
            Ok(Some(event)) => self.deps.events.announce(event),
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(instance = %state.id, %err, "cannot mark a queued send failed")
            }
        }
    }

    /// (Re)starts the session with a fresh engine. On failure the instance is parked as
    /// `failed` (recorded) and the reason returned.
    async fn open(
        &self,
        myself: &ActorRef<InstanceMsg>,
        state: &mut InstanceState,
    ) -> Result<(), String> {
        close(state).await;
        state.qr = None;
        state.epoch = self.board.session_started(&state.id);
        if let Err(err) = tokio::fs::create_dir_all(&state.session_dir).await {
            return self
                .park_failed(
                    state,
                    format!(
                        "cannot create the session directory {}: {err}",
                        state.session_dir.display()
                    ),
                )
                .await;
        }
        if let Err(reason) = self.restore_session(state).await {
            return self.park_failed(state, reason).await;
        }
        let me = myself.clone();
        let epoch = state.epoch;
        let board = self.board.clone();
        let id = state.id.clone();
        let sink: EventSink = Arc::new(move |event| {
            // A stopped session shows on the board now, not once the actor gets to it:
            // a status read must not say `connected` while sends are already refused.
            if let Some(shown) = shown_on_loss(&event) {
                board.session_lost(&id, epoch, shown);
            }
            // Fails only when the actor is gone; its successor has its own engine.
            let _ = me.cast(InstanceMsg::Engine { epoch, event });
        });
        let me = myself.clone();
        let commit: CommitSink = Arc::new(move |event| {
            let me = me.clone();
            Box::pin(async move {
                // No timeout: the engine bounds its own wait, and an answer that comes
                // late is still an answer (the message is stored either way).
                match me
                    .call(
                        |reply| InstanceMsg::EngineCommit {
                            epoch,
                            event,
                            reply,
                        },
                        None,
                    )
                    .await
                {
                    Ok(ractor::rpc::CallResult::Success(answer)) => answer,
                    Ok(_) => Err("the instance stopped before storing it".into()),
                    Err(err) => Err(format!("the instance is gone: {err}")),
                }
            })
        });
        let ctx = EngineContext {
            instance_id: state.id.clone(),
            session_dir: state.session_dir.clone(),
            sink,
            commit,
            keys: (state.kind == EngineKind::Wacore)
                .then(|| self.deps.vault.clone())
                .flatten(),
        };
        let mut engine = match self.deps.engines.create(state.kind, ctx) {
            Ok(engine) => engine,
            Err(err) => return self.park_failed(state, err.to_string()).await,
        };
        self.transition(state, InstanceStatus::Connecting, Record::default())
            .await;
        if let Err(err) = engine.start().await {
            engine.stop().await;
            return self
                .park_failed(state, format!("the engine did not start: {err}"))
                .await;
        }
        state.engine = Some(engine);
        Ok(())
    }

    /// Cluster mode: writes the session kept in the vault into the session directory
    /// (replacing what a earlier ownership of this node left there), so the engine
    /// resumes it. A real session reads its keys from the vault itself (`SharedKeys`).
    async fn restore_session(&self, state: &InstanceState) -> Result<(), String> {
        let Some(vault) = self.vault_for(state) else {
            return Ok(());
        };
        let files = vault
            .load(&state.id)
            .await
            .map_err(|err| format!("cannot read the shared session: {err}"))?;
        wipe_dir(&state.session_dir)
            .await
            .map_err(|err| format!("cannot clear the session directory: {err}"))?;
        for (name, bytes) in files {
            if !is_plain_file_name(&name) {
                continue;
            }
            tokio::fs::write(state.session_dir.join(&name), bytes)
                .await
                .map_err(|err| format!("cannot write the session file {name}: {err}"))?;
        }
        Ok(())
    }

    /// Cluster mode: copies the session directory's files into the vault (none: the
    /// session is gone). A refused write (this node lost the lease) is logged: the lease
    /// manager stops the instance.
    async fn keep_session(&self, state: &InstanceState) {
        let Some(vault) = self.vault_for(state) else {
            return;
        };
        let files = match read_session_files(&state.session_dir).await {
            Ok(files) => files,
            Err(err) => {
                tracing::warn!(instance = %state.id, %err, "cannot read the session files");
                return;
            }
        };
        if let Err(err) = vault.save(&state.id, files).await {
            tracing::warn!(instance = %state.id, %err, "the session was not stored");
        }
    }

    fn vault_for(&self, state: &InstanceState) -> Option<&Arc<dyn crate::store::SessionVault>> {
        // A real session's keys are an open SQLite database, not files to copy.
        (state.kind == EngineKind::Sandbox)
            .then_some(self.deps.vault.as_ref())
            .flatten()
    }

    async fn park_failed(&self, state: &mut InstanceState, reason: String) -> Result<(), String> {
        close(state).await;
        state.qr = None;
        tracing::warn!(instance = %state.id, %reason, "instance failed to start");
        self.transition(
            state,
            InstanceStatus::Failed,
            Record {
                activity: Some(("failed", json!({ "reason": reason, "restarts": 0 }))),
                event: None,
            },
        )
        .await;
        Err(reason)
    }

    async fn on_engine_event(
        &self,
        state: &mut InstanceState,
        event: EngineEvent,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            EngineEvent::Qr { code, attempt, ttl } => {
                state.qr = Some(ShownQr {
                    code: code.clone(),
                    expires_at: Instant::now() + ttl,
                });
                self.transition(
                    state,
                    InstanceStatus::Qr,
                    Record {
                        activity: Some(("qr_received", json!({ "attempt": attempt }))),
                        event: Some(Event::QrReceived(QrReceived {
                            qr_code: code,
                            attempt,
                        })),
                    },
                )
                .await;
            }
            EngineEvent::QrExhausted => {
                // Pairing is over; the next QR request starts a new one.
                close(state).await;
                state.qr = None;
                self.disconnected(state, "qr_exhausted", false).await;
            }
            EngineEvent::Connected { phone, push_name } => {
                state.qr = None;
                state.phone = Some(phone.clone());
                // Kept where another node finds it before anybody hears `connected`.
                self.keep_session(state).await;
                self.transition(
                    state,
                    InstanceStatus::Connected,
                    Record {
                        activity: Some(("connected", json!({ "phone": phone }))),
                        event: Some(Event::Connected(Connected { phone, push_name })),
                    },
                )
                .await;
            }
            EngineEvent::Disconnected { reason } => {
                // Engines reconnect on their own after a dropped connection.
                self.disconnected(state, &reason, true).await;
            }
            EngineEvent::Reconnecting { attempt, error } => {
                self.transition(
                    state,
                    InstanceStatus::Reconnecting,
                    Record {
                        activity: Some((
                            "reconnecting",
                            json!({ "attempt": attempt, "reason": error }),
                        )),
                        event: None,
                    },
                )
                .await;
            }
            EngineEvent::LoggedOut { reason } => {
                close(state).await;
                self.logged_out(state, &reason).await;
            }
            EngineEvent::Message(message) => {
                let callers = state
                    .awaiting
                    .remove(&message.message_id)
                    .unwrap_or_default();
                self.on_message(state, message, false, move |stored| {
                    for reply in callers {
                        // Fails only when the caller gave up (timed out) meanwhile.
                        let _ = reply.send(stored.clone());
                    }
                })
                .await;
            }
            EngineEvent::SentByPhone(message) => {
                self.on_message(state, message, true, |_| {}).await;
            }
            EngineEvent::Reaction(reaction) => {
                let _ = self.on_reaction(state, reaction).await;
            }
            EngineEvent::Change(change) => {
                let _ = self.on_change(state, change).await;
            }
            EngineEvent::Vote(vote) => {
                let _ = self.on_vote(state, vote).await;
            }
            EngineEvent::Presence(presence) => self.on_presence(state, presence).await,
            EngineEvent::Call(call) => self.on_call(state, call).await,
            EngineEvent::Group(update) => {
                self.publish(&state.id, Event::GroupUpdate(update)).await;
            }
            EngineEvent::ChatSync(op) => {
                if let Err(err) = self.keep_chat_op(state, op, true).await {
                    tracing::warn!(instance = %state.id, %err, "cannot store a chat change");
                }
            }
            EngineEvent::Receipt {
                chat,
                message_ids,
                status,
            } => {
                for id in message_ids {
                    self.on_receipt(state, &chat, &id, status).await;
                }
            }
            EngineEvent::Contact(contact) => {
                let now = Utc::now();
                self.upsert_contact(
                    state,
                    &contact.jid,
                    contact.name,
                    contact.push_name,
                    None,
                    now,
                )
                .await;
                self.keep_session(state).await;
            }
            EngineEvent::Failed { error } => {
                // The session is broken: stop it cleanly, then fail so the supervisor
                // restarts the instance (its reason is this error).
                close(state).await;
                return Err(error.into());
            }
        }
        Ok(())
    }

    async fn disconnected(&self, state: &mut InstanceState, reason: &str, will_reconnect: bool) {
        self.transition(
            state,
            InstanceStatus::Disconnected,
            Record {
                activity: Some(("disconnected", json!({ "reason": reason }))),
                event: Some(Event::Disconnected(Disconnected {
                    reason: reason.to_owned(),
                    will_reconnect,
                })),
            },
        )
        .await;
    }

    /// The session is gone: wipe what is left of it and park as `logged_out`.
    async fn logged_out(&self, state: &mut InstanceState, reason: &str) {
        if let Err(err) = wipe_dir(&state.session_dir).await {
            tracing::warn!(instance = %state.id, %err, "cannot wipe the session directory");
        }
        self.keep_session(state).await;
        // A real session's keys shared by the cluster go too (a fenced write: a node that
        // lost the lease cannot erase the new owner's session).
        if state.kind == EngineKind::Wacore
            && let Some(vault) = &self.deps.vault
        {
            let clear = crate::store::KeyBatch {
                clear: true,
                writes: Vec::new(),
            };
            if let Err(err) = vault.write_keys(&state.id, clear).await {
                tracing::warn!(instance = %state.id, %err, "cannot drop the shared session keys");
            }
        }
        state.qr = None;
        state.phone = None;
        self.transition(
            state,
            InstanceStatus::LoggedOut,
            Record {
                activity: Some(("logged_out", json!({ "reason": reason }))),
                event: Some(Event::Disconnected(Disconnected {
                    reason: LOGOUT_REASON.to_owned(),
                    will_reconnect: false,
                })),
            },
        )
        .await;
    }

    async fn qr(
        &self,
        myself: &ActorRef<InstanceMsg>,
        state: &mut InstanceState,
    ) -> Result<QrAnswer, DomainError> {
        if state.status == InstanceStatus::Connected {
            return Err(already_connected());
        }
        if let Some(qr) = state.live_qr() {
            return Ok(QrAnswer::Code(qr.code.clone()));
        }
        if state.engine.is_none() {
            self.open(myself, state)
                .await
                .map_err(DomainError::Unavailable)?;
        }
        Ok(QrAnswer::Generating)
    }

    async fn pair_code(
        &self,
        myself: &ActorRef<InstanceMsg>,
        state: &mut InstanceState,
        phone: &str,
    ) -> Result<String, DomainError> {
        if state.status == InstanceStatus::Connected {
            return Err(already_connected());
        }
        if state.engine.is_none() {
            self.open(myself, state)
                .await
                .map_err(DomainError::Unavailable)?;
        }
        let engine = state
            .engine
            .as_mut()
            .ok_or_else(|| DomainError::Unavailable("the instance is not running".into()))?;
        engine.pair_code(phone).await.map_err(|err| match err {
            EngineError::NotSupported => {
                DomainError::Invalid("this engine cannot pair by phone code".into())
            }
            other => engine_error(other),
        })
    }

    async fn logout(&self, state: &mut InstanceState) {
        if let Some(engine) = state.engine.as_mut()
            && let Err(err) = engine.logout().await
        {
            // The local session is wiped anyway: the user asked to forget it.
            tracing::warn!(instance = %state.id, %err, "engine logout failed");
        }
        close(state).await;
        self.logged_out(state, "logout requested").await;
    }

    /// Sends through the engine, then stores the message as `sent` and publishes
    /// `message_sent`, and answers `reply`: a message is stored before the caller hears
    /// it was accepted. The answer comes once the write is committed; the mailbox does
    /// not wait for it.
    async fn send(
        &self,
        state: &mut InstanceState,
        to: &str,
        content: OutboundContent,
        extras: SendExtras,
        reply: RpcReplyPort<Result<Message, DomainError>>,
    ) {
        let (message, event) = match self.send_through_engine(state, to, content, extras).await {
            Ok(sent) => sent,
            Err(err) => {
                let _ = reply.send(Err(err));
                return;
            }
        };
        let stored = message.clone();
        self.record_then(state, &message, None, event, move |outcome| {
            let _ = reply.send(outcome.map(|()| stored).map_err(DomainError::from));
        })
        .await;
    }

    /// The send of [`send`](Self::send) up to its storage: the message to store and its
    /// event.
    async fn send_through_engine(
        &self,
        state: &mut InstanceState,
        to: &str,
        content: OutboundContent,
        extras: SendExtras,
    ) -> Result<(Message, InstanceEvent), DomainError> {
        connected_engine(&self.board, state)?;
        let reply_to = match &extras.reply_to {
            Some(id) => Some(self.message_of_chat(state, to, id).await?),
            None => None,
        };
        let status = match extras.status {
            Some(post) if to == STATUS_BROADCAST => Some(self.status_audience(state, post).await?),
            Some(_) => {
                return Err(DomainError::Invalid(format!(
                    "a status post goes to {STATUS_BROADCAST}"
                )));
            }
            None if to == STATUS_BROADCAST => {
                return Err(DomainError::Invalid(
                    "a status post needs its audience".into(),
                ));
            }
            None => None,
        };
        let options = SendOptions {
            reply_to: reply_to.as_ref().map(message_ref),
            mentions: extras.mentions,
            message_id: None,
            status,
        };
        let engine = connected_engine(&self.board, state)?;
        let sent = engine
            .send(to, &content, &options)
            .await
            .map_err(send_failure)?;
        let outbound = Outbound {
            instance_id: &state.id,
            to,
            quoted: reply_to.map(|m| m.message_id),
            mentions: options.mentions,
        };
        let message = outbound.message(content, &sent, MessageStatus::Sent, json!({}));
        let event = sent_event(&message);
        // The message and its event commit together: no stored send without its webhook.
        Ok((message, InstanceEvent::new(&state.id, event)))
    }

    /// Queues a message with its contact and event (one transaction), without waiting for
    /// the commit: the mailbox moves on meanwhile. Once committed, its usage is counted
    /// and its event announced, then `done` is told how the write ended; this runs on
    /// storage's writer, in commit order, so events go out in the order they were stored
    /// and never before. Until then the next handler that reads storage waits
    /// ([`InstanceState::settle`]).
    async fn record_then(
        &self,
        state: &mut InstanceState,
        message: &Message,
        contact: Option<&Contact>,
        event: InstanceEvent,
        done: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) {
        let usage = if message.from_me {
            sent_usage(message)
        } else {
            crate::domain::Usage {
                messages_received: 1,
                media_received: u64::from(message.has_media),
                total_media_size: message.media_size.unwrap_or(0),
                ..Default::default()
            }
        };
        let (stats, events) = (self.deps.stats.clone(), self.deps.events.clone());
        let (user_id, instance_id) = (state.user_id.clone(), state.id.clone());
        let committed = state.queuing();
        let stored = event.clone();
        self.deps
            .storage
            .record_message_then(
                message,
                contact,
                &stored,
                Box::new(move |outcome| {
                    if outcome.is_ok() {
                        stats.add(&user_id, Some(&instance_id), usage);
                        events.announce(event);
                    }
                    done(outcome);
                    let _ = committed.send(());
                }),
            )
            .await;
    }

    /// The stored message `id` of `chat`; `NotFound` when the chat has none.
    async fn message_of_chat(
        &self,
        state: &InstanceState,
        chat: &str,
        id: &str,
    ) -> Result<Message, DomainError> {
        self.deps
            .storage
            .message_by_id(&state.id, id)
            .await?
            .filter(|m| m.remote_jid == chat)
            .ok_or_else(|| DomainError::NotFound(format!("message {id} not found in this chat")))
    }

    /// Reacts to stored message `id` through the engine, then stores the reaction on
    /// it and publishes `message_reaction`.
    async fn react(
        &self,
        state: &mut InstanceState,
        id: &str,
        emoji: String,
    ) -> Result<(), DomainError> {
        connected_engine(&self.board, state)?;
        let message = self
            .deps
            .storage
            .message_by_id(&state.id, id)
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("message {id} not found")))?;
        let engine = connected_engine(&self.board, state)?;
        let sent = engine
            .react(&message.remote_jid, &message_ref(&message), &emoji)
            .await
            .map_err(send_failure)?;
        self.count(state, |u| u.messages_sent = 1);
        let me = state.phone.as_deref().map(jid_for).unwrap_or_default();
        let reaction = Reaction {
            sender: me,
            from_me: true,
            emoji,
            timestamp: sent.timestamp.timestamp(),
        };
        self.store_reaction(state, message, reaction)
            .await
            .map_err(DomainError::Store)
    }

    /// Stores an inbound reaction on the message it is for and publishes
    /// `message_reaction`; a reaction to a message this instance never stored is only
    /// published.
    async fn on_reaction(
        &self,
        state: &mut InstanceState,
        r: InboundReaction,
    ) -> Result<(), String> {
        let sender = author(state, r.from_me, r.sender);
        let reaction = Reaction {
            sender,
            from_me: r.from_me,
            emoji: r.emoji,
            timestamp: r.timestamp.timestamp(),
        };
        let stored = self
            .deps
            .storage
            .message_by_id(&state.id, &r.target_id)
            .await
            .map_err(|e| format!("cannot read message {}: {e}", r.target_id))?;
        match stored {
            Some(message) => self
                .store_reaction(state, message, reaction)
                .await
                .map_err(|e| format!("cannot store a reaction to {}: {e}", r.target_id)),
            None => {
                self.publish_reaction(&state.id, r.target_id, r.chat, reaction)
                    .await;
                Ok(())
            }
        }
    }

    async fn store_reaction(
        &self,
        state: &InstanceState,
        mut message: Message,
        reaction: Reaction,
    ) -> Result<(), StoreError> {
        apply_reaction(&mut message.reactions, reaction.clone());
        self.deps
            .storage
            .set_message_reactions(
                &state.id,
                &message.message_id,
                &message.reactions,
                Utc::now(),
            )
            .await?;
        self.publish_reaction(&state.id, message.message_id, message.remote_jid, reaction)
            .await;
        Ok(())
    }

    /// Publishes `message_reaction` for `reaction` to message `message_id` of `chat`.
    async fn publish_reaction(
        &self,
        instance_id: &str,
        message_id: String,
        chat: String,
        reaction: Reaction,
    ) {
        let event = Event::MessageReaction(MessageReaction {
            message_id,
            remote_jid: chat,
            sender: reaction.sender,
            from_me: reaction.from_me,
            emoji: reaction.emoji,
            timestamp: reaction.timestamp,
        });
        self.publish(instance_id, event).await;
    }

    /// Edits our own stored text message `id` through the engine, within WhatsApp's
    /// edit window, then stores the new text with its `message_edited` event.
    async fn edit(
        &self,
        state: &mut InstanceState,
        id: &str,
        text: String,
    ) -> Result<Message, DomainError> {
        connected_engine(&self.board, state)?;
        let mut message = self.stored_message(state, id).await?;
        if !message.from_me {
            return Err(DomainError::refused(
                "not_own_message",
                "only the account's own messages can be edited",
            ));
        }
        if message.revoked {
            return Err(DomainError::refused(
                "message_deleted",
                "the message was deleted for everyone",
            ));
        }
        if message.has_media || message.content.is_none() {
            return Err(DomainError::refused(
                "not_text",
                "only text messages can be edited",
            ));
        }
        let now = self.deps.stats.clock().now();
        if now - message.timestamp > EDIT_WINDOW {
            return Err(DomainError::refused(
                "edit_window_passed",
                "WhatsApp lets a message be edited for 15 minutes after it was sent",
            ));
        }
        let engine = connected_engine(&self.board, state)?;
        engine
            .edit(&message.remote_jid, &message_ref(&message), &text)
            .await
            .map_err(send_failure)?;
        self.count(state, |u| u.messages_sent = 1);
        message.edit(text.clone(), now);
        let event = Event::MessageEdited(MessageEdited {
            message_id: message.message_id.clone(),
            remote_jid: message.remote_jid.clone(),
            sender: own_address(state),
            from_me: true,
            message: text,
            timestamp: now.timestamp(),
        });
        self.rewrite(state, &message, event).await?;
        Ok(message)
    }

    /// Deletes stored message `id`: for everyone (our own messages only, through the
    /// engine; the row stays, marked revoked, with nothing of what it said) or only
    /// from this account's history (any message; WhatsApp is not told).
    async fn delete(
        &self,
        state: &mut InstanceState,
        id: &str,
        for_everyone: bool,
    ) -> Result<(), DomainError> {
        let mut message = self.stored_message(state, id).await?;
        let now = self.deps.stats.clock().now();
        let me = own_address(state);
        let event = |for_everyone| {
            Event::MessageRevoked(MessageRevoked {
                message_id: message.message_id.clone(),
                remote_jid: message.remote_jid.clone(),
                sender: me.clone(),
                from_me: true,
                for_everyone,
                timestamp: now.timestamp(),
            })
        };
        if !for_everyone {
            let event = InstanceEvent::new(&state.id, event(false));
            if let Some(path) = &message.media_path {
                self.media.remove_file(path).await;
            }
            self.deps
                .storage
                .forget_message(&state.id, &message.message_id, &event)
                .await?;
            self.deps.events.announce(event);
            return Ok(());
        }
        if !message.from_me {
            return Err(DomainError::refused(
                "not_own_message",
                "only the account's own messages can be deleted for everyone",
            ));
        }
        if message.revoked {
            return Ok(());
        }
        let engine = connected_engine(&self.board, state)?;
        engine
            .revoke(&message.remote_jid, &message_ref(&message))
            .await
            .map_err(send_failure)?;
        self.count(state, |u| u.messages_sent = 1);
        let event = event(true);
        self.revoke_stored(&mut message, now).await;
        self.rewrite(state, &message, event).await?;
        Ok(())
    }

    /// Applies an edit or a deletion WhatsApp brought to the message it is for, by
    /// its author only, and publishes it; one for a message this instance never
    /// stored is only published.
    async fn on_change(&self, state: &mut InstanceState, c: InboundChange) -> Result<(), String> {
        let sender = author(state, c.from_me, c.sender);
        let stored = self
            .deps
            .storage
            .message_by_id(&state.id, &c.target_id)
            .await
            .map_err(|e| format!("cannot read message {}: {e}", c.target_id))?;
        let now = Utc::now();
        let (event, changed) = match c.change {
            MessageChange::Edited(text) => {
                let changed = stored.map(|mut m| {
                    m.edit(text.clone(), now);
                    m
                });
                let event = Event::MessageEdited(MessageEdited {
                    message_id: c.target_id.clone(),
                    remote_jid: c.chat,
                    sender,
                    from_me: c.from_me,
                    message: text,
                    timestamp: c.timestamp.timestamp(),
                });
                (event, changed)
            }
            MessageChange::Revoked => {
                let mut changed = stored;
                if let Some(m) = changed.as_mut() {
                    self.revoke_stored(m, now).await;
                }
                let event = Event::MessageRevoked(MessageRevoked {
                    message_id: c.target_id.clone(),
                    remote_jid: c.chat,
                    sender,
                    from_me: c.from_me,
                    for_everyone: true,
                    timestamp: c.timestamp.timestamp(),
                });
                (event, changed)
            }
        };
        // Only a message's author changes it: a change naming someone else's
        // message (or another chat's) is published, not applied.
        let changed =
            changed.filter(|m| m.from_me == c.from_me && m.remote_jid == event_chat(&event));
        match changed {
            Some(message) => self
                .rewrite(state, &message, event)
                .await
                .map_err(|e| format!("cannot store a change of {}: {e}", c.target_id)),
            None => {
                self.publish(&state.id, event).await;
                Ok(())
            }
        }
    }

    /// Opens a vote, stores it on its poll (each voter's latest choice) and publishes
    /// `poll_vote`. A vote for a poll this instance never stored is published when it
    /// can be read (the sandbox's), else dropped with a warning: without the poll
    /// there is no key to open it.
    async fn on_vote(&self, state: &mut InstanceState, v: InboundVote) -> Result<(), String> {
        let voter = author(state, v.from_me, v.voter);
        let stored = self
            .deps
            .storage
            .message_by_id(&state.id, &v.poll_id)
            .await
            .map_err(|e| format!("cannot read poll {}: {e}", v.poll_id))?
            .filter(|m| m.typed.poll.is_some());
        let options = match (v.choice, &stored) {
            (VoteChoice::Names(names), _) => names,
            (VoteChoice::Sealed { payload, iv }, Some(poll_message)) => {
                let (Some(poll), Some(secret)) =
                    (&poll_message.typed.poll, &poll_message.message_secret)
                else {
                    return Err(format!("poll {} has no secret to open votes", v.poll_id));
                };
                let creator = if poll_message.from_me {
                    own_address(state)
                } else {
                    message_ref(poll_message).author
                };
                let poll = PollRef {
                    message_id: poll_message.message_id.clone(),
                    creator,
                    options: poll.options.clone(),
                    secret: secret.clone(),
                };
                let engine = state
                    .engine
                    .as_mut()
                    .ok_or_else(|| "no session to open the vote".to_owned())?;
                engine
                    .open_vote(&poll, &voter, &payload, &iv)
                    .await
                    .map_err(|e| format!("cannot open a vote in poll {}: {e}", v.poll_id))?
            }
            (VoteChoice::Sealed { .. }, None) => {
                tracing::warn!(instance = %state.id, poll = %v.poll_id, "a vote in a poll never stored cannot be opened");
                return Ok(());
            }
        };
        let event = Event::PollVote(PollVoted {
            message_id: v.poll_id.clone(),
            remote_jid: v.chat,
            voter: voter.clone(),
            from_me: v.from_me,
            options: options.clone(),
            timestamp: v.timestamp.timestamp(),
        });
        match stored {
            Some(mut message) => {
                if let Some(poll) = message.typed.poll.as_mut() {
                    poll.apply_vote(PollVote {
                        voter,
                        from_me: v.from_me,
                        options: options
                            .into_iter()
                            .filter(|o| poll.options.contains(o))
                            .collect(),
                        timestamp: v.timestamp.timestamp(),
                    });
                }
                message.updated_at = Utc::now();
                self.rewrite(state, &message, event)
                    .await
                    .map_err(|e| format!("cannot store a vote in poll {}: {e}", v.poll_id))
            }
            None => {
                self.publish(&state.id, event).await;
                Ok(())
            }
        }
    }

    /// Marks a stored message revoked and removes its media file: nothing of what it
    /// said stays.
    async fn revoke_stored(&self, message: &mut Message, now: DateTime<Utc>) {
        if let Some(path) = message.media_path.clone() {
            self.media.remove_file(&path).await;
        }
        message.revoke(now);
    }

    /// Publishes `presence_update` when the instance asked for them (`notifyPresence`):
    /// presence is many small events, kept out of the event log unless wanted.
    async fn on_presence(&self, state: &InstanceState, p: InboundPresence) {
        let wanted = match self.deps.storage.instance_by_id(&state.id).await {
            Ok(instance) => instance.is_some_and(|i| i.webhook.notify_presence),
            Err(err) => {
                tracing::warn!(instance = %state.id, %err, "cannot read the instance; presence dropped");
                false
            }
        };
        if !wanted {
            return;
        }
        let event = Event::PresenceUpdate(PresenceUpdate {
            remote_jid: p.chat,
            sender: p.sender,
            presence: p.presence,
            last_seen: p.last_seen.map(|t| t.timestamp()),
            timestamp: self.deps.stats.clock().now().timestamp(),
        });
        self.publish(&state.id, event).await;
    }

    /// An incoming call: rejected (and the caller told so, when the instance has a
    /// message for it) with `rejectCalls`, and published as `call_received` either way.
    async fn on_call(&self, state: &mut InstanceState, call: InboundCall) {
        let settings = match self.deps.storage.instance_by_id(&state.id).await {
            Ok(instance) => instance.map(|i| i.webhook).unwrap_or_default(),
            Err(err) => {
                tracing::warn!(instance = %state.id, %err, "cannot read the instance; the call is not rejected");
                Default::default()
            }
        };
        let mut rejected = false;
        if settings.reject_calls
            && let Some(engine) = state.engine.as_mut()
        {
            match engine.reject_call(&call).await {
                Ok(()) => rejected = true,
                Err(err) => {
                    tracing::warn!(instance = %state.id, call = %call.call_id, %err, "cannot reject the call");
                }
            }
        }
        let event = Event::CallReceived(CallReceived {
            remote_jid: call.from.clone(),
            call_id: call.call_id,
            video: call.video,
            is_group: call.group,
            rejected,
            timestamp: call.timestamp.timestamp(),
        });
        self.publish(&state.id, event).await;
        if let Some(text) = settings.reject_calls_message.filter(|_| rejected) {
            let answer = OutboundContent::Text(text);
            match self
                .send_through_engine(state, &call.from, answer, SendExtras::default())
                .await
            {
                Ok((message, event)) => {
                    let instance = state.id.clone();
                    self.record_then(state, &message, None, event, move |stored| {
                        if let Err(err) = stored {
                            tracing::warn!(%instance, %err, "cannot store the answer to a rejected call");
                        }
                    })
                    .await;
                }
                Err(err) => {
                    tracing::warn!(instance = %state.id, %err, "cannot answer the rejected call");
                }
            }
        }
    }

    /// Stores a changed message together with the event that reports it, then
    /// announces the event.
    async fn rewrite(
        &self,
        state: &InstanceState,
        message: &Message,
        event: Event,
    ) -> Result<(), StoreError> {
        let event = InstanceEvent::new(&state.id, event);
        self.deps.storage.rewrite_message(message, &event).await?;
        self.deps.events.announce(event);
        Ok(())
    }

    /// The stored message `id`; `NotFound` when there is none.
    async fn stored_message(
        &self,
        state: &InstanceState,
        id: &str,
    ) -> Result<Message, DomainError> {
        self.deps
            .storage
            .message_by_id(&state.id, id)
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("message {id} not found")))
    }

    /// Stores a message (and its media) WhatsApp brought: an inbound one remembers the
    /// sender as a contact and publishes `message_received`; one the account sent from
    /// its phone (`from_me`) is stored as sent and publishes `message_sent`. The message,
    /// its contact and its event commit together. A message WhatsApp delivers twice is
    /// stored once (the second time is a success: it is stored).
    ///
    /// `done` is told once the write is committed (or failed); the mailbox does not wait.
    async fn on_message(
        &self,
        state: &mut InstanceState,
        m: InboundMessage,
        from_me: bool,
        done: impl FnOnce(Result<(), DomainError>) + Send + 'static,
    ) {
        let now = Utc::now();
        let (media_path, media_size, mime_type, file_name) = match &m.media {
            Some(media) => match self.media.save(&state.id, &media.bytes).await {
                Ok(path) => (
                    Some(path),
                    Some(media.bytes.len() as u64),
                    Some(media.mime_type.clone()),
                    media.file_name.clone(),
                ),
                Err(err) => {
                    tracing::error!(instance = %state.id, %err, "cannot store inbound media");
                    (
                        None,
                        None,
                        Some(media.mime_type.clone()),
                        media.file_name.clone(),
                    )
                }
            },
            None => (None, None, None, None),
        };
        let message_type = match m.typed.message_type() {
            Some(kind) => kind,
            None => mime_type
                .as_deref()
                .map_or("text", |mime| MediaKind::of_mime(mime).as_str()),
        }
        .to_owned();
        let message = Message {
            id: new_id(),
            instance_id: state.id.clone(),
            message_id: m.message_id.clone(),
            remote_jid: m.chat.clone(),
            from_me,
            message_type: message_type.clone(),
            content: m.text.clone().or_else(|| m.typed.summary()),
            has_media: m.media.is_some(),
            media_url: media_path
                .as_ref()
                .map(|_| media_url(&state.id, &m.message_id)),
            caption: m.media.as_ref().and(m.text.clone()),
            mime_type,
            file_name,
            media_path,
            media_size,
            status: if from_me {
                MessageStatus::Sent
            } else {
                MessageStatus::Received
            },
            push_name: m.push_name.clone(),
            metadata: json!({
                "pushName": m.push_name,
                "timestamp": m.timestamp.timestamp(),
                "sender": m.sender,
            }),
            timestamp: m.timestamp,
            created_at: now,
            updated_at: now,
            status_updated_at: from_me.then_some(now),
            quoted_message_id: m.quoted_id.clone(),
            mentions: m.mentions.clone(),
            reactions: Vec::new(),
            edited_at: None,
            revoked: false,
            typed: m.typed.clone(),
            message_secret: m.message_secret.clone(),
        };
        let (event, contact) = if from_me {
            let event = Event::MessageSent(Box::new(MessageSent {
                message_id: message.message_id.clone(),
                to: message.remote_jid.clone(),
                body: message.content.clone(),
                message_type: message.message_type.clone(),
                timestamp: m.timestamp.timestamp(),
                has_media: message.has_media,
                from_me: true,
                status: MessageStatus::Sent,
                media: MediaFields::of(&message),
                reply: ReplyFields::of(&message),
                typed: message.typed.clone(),
            }));
            (event, None)
        } else {
            let event = Event::MessageReceived(Box::new(MessageReceived {
                message_id: message.message_id.clone(),
                from: message.remote_jid.clone(),
                remote_jid: message.remote_jid.clone(),
                sender: m.sender.clone(),
                from_me: false,
                body: message.content.clone(),
                message_type: if message_type == "text" {
                    "conversation".to_owned()
                } else {
                    message_type.clone()
                },
                timestamp: m.timestamp.timestamp(),
                has_media: message.has_media,
                push_name: m.push_name.clone(),
                is_group: is_group_jid(&message.remote_jid),
                status: MessageStatus::Received,
                metadata: message.metadata.clone(),
                media: MediaFields::of(&message),
                reply: ReplyFields::of(&message),
                typed: message.typed.clone(),
            }));
            let contact = Contact {
                push_name: m.push_name.clone(),
                last_activity: Some(m.timestamp),
                ..Contact::new(&state.id, &m.sender, now)
            };
            (event, Some(contact))
        };
        let event = InstanceEvent::new(&state.id, event);
        let (instance_id, message_id) = (state.id.clone(), message.message_id.clone());
        self.record_then(state, &message, contact.as_ref(), event, move |outcome| {
            done(match outcome {
                Ok(()) => Ok(()),
                // Delivered twice: stored the first time.
                Err(StoreError::Conflict(_)) => Ok(()),
                Err(err) => {
                    tracing::error!(instance = %instance_id, %err, %message_id, "cannot store a message WhatsApp brought");
                    Err(err.into())
                }
            })
        })
        .await;
    }

    /// Moves a sent message's status forward and publishes `message_status`, stored
    /// with it; stale or repeated receipts change nothing. Pipelined: queued behind the
    /// writes before it (so it finds a message whose write is still queued), published
    /// once committed, without holding up the mailbox meanwhile.
    async fn on_receipt(
        &self,
        state: &mut InstanceState,
        chat: &str,
        id: &str,
        status: MessageStatus,
    ) {
        let (events, instance_id) = (self.deps.events.clone(), state.id.clone());
        let committed = state.queuing();
        self.deps
            .storage
            .advance_message_status_then(
                &state.id,
                id,
                status,
                Utc::now(),
                // Made now, in the order the actor queues its writes.
                &StatusReport::new(Some(chat)),
                Box::new(move |advanced| {
                    match advanced {
                        Ok(Some(event)) => events.announce(event),
                        Ok(None) => {}
                        Err(err) => {
                            tracing::warn!(instance = %instance_id, %err, "cannot store a receipt")
                        }
                    }
                    let _ = committed.send(());
                }),
            )
            .await;
    }

    /// Marks a chat's inbound messages read and tells the senders' phones.
    async fn mark_read(&self, state: &mut InstanceState, chat: &str) -> Result<u64, DomainError> {
        let ids = self.deps.storage.mark_chat_read(&state.id, chat).await?;
        if !ids.is_empty()
            && let Ok(engine) = connected_engine(&self.board, state)
            && let Err(err) = engine.mark_read(chat, &ids).await
        {
            tracing::warn!(instance = %state.id, %err, "cannot send read receipts");
        }
        Ok(ids.len() as u64)
    }

    async fn upsert_contact(
        &self,
        state: &InstanceState,
        jid: &str,
        name: Option<String>,
        push_name: Option<String>,
        last_activity: Option<DateTime<Utc>>,
        now: chrono::DateTime<Utc>,
    ) {
        let contact = Contact {
            name,
            push_name,
            last_activity,
            ..Contact::new(&state.id, jid, now)
        };
        if let Err(err) = self.deps.storage.upsert_contact(&contact).await {
            tracing::warn!(instance = %state.id, %err, "cannot store a contact");
        }
    }

    /// Counts usage of this instance for its owner (a cast to the stats counter).
    fn count(&self, state: &InstanceState, fill: impl FnOnce(&mut crate::domain::Usage)) {
        let mut usage = crate::domain::Usage::default();
        fill(&mut usage);
        self.deps.stats.add(&state.user_id, Some(&state.id), usage);
    }

    /// `post` with its audience made every person among the session's contacts when it
    /// names none. `Refused("no_audience")` when there is no one to show it to.
    async fn status_audience(
        &self,
        state: &mut InstanceState,
        mut post: StatusPost,
    ) -> Result<StatusPost, DomainError> {
        if post.audience.is_empty() {
            let contacts = connected_engine(&self.board, state)?
                .contacts()
                .await
                .map_err(send_failure)?;
            post.audience = contacts
                .into_iter()
                .map(|c| c.jid)
                .filter(|jid| !is_group_jid(jid) && jid != STATUS_BROADCAST)
                .collect();
            post.audience.sort();
            post.audience.dedup();
        }
        if post.audience.is_empty() {
            return Err(DomainError::refused(
                "no_audience",
                "the account has no contacts to show a status to: name the recipients",
            ));
        }
        Ok(post)
    }

    /// Carries out a client's chat or label operation on WhatsApp, then keeps its
    /// outcome. A new label gets the next free id; attaching a label the instance does
    /// not know is `NotFound`.
    async fn chat(
        &self,
        state: &mut InstanceState,
        mut op: ChatOp,
    ) -> Result<ChatAnswer, DomainError> {
        connected_engine(&self.board, state)?;
        match &mut op {
            ChatOp::EditLabel(spec) if spec.label_id.is_empty() => {
                let labels = self.deps.storage.labels(&state.id).await?;
                spec.label_id = next_label_id(labels.iter().map(|l| l.label_id.as_str()));
            }
            ChatOp::Change {
                change:
                    ChatChange::Label {
                        label_id,
                        attached: true,
                    },
                ..
            } => {
                let labels = self.deps.storage.labels(&state.id).await?;
                if !labels.iter().any(|l| &l.label_id == label_id) {
                    return Err(DomainError::NotFound(format!("label {label_id} not found")));
                }
            }
            _ => {}
        }
        connected_engine(&self.board, state)?
            .chat(&op)
            .await
            .map_err(send_failure)?;
        self.keep_chat_op(state, op, false).await
    }

    /// Stores what a chat or label operation changed and publishes it (`chat_update`,
    /// `label_update`).
    async fn keep_chat_op(
        &self,
        state: &InstanceState,
        op: ChatOp,
        from_phone: bool,
    ) -> Result<ChatAnswer, DomainError> {
        let storage = &self.deps.storage;
        let now = Utc::now();
        match op {
            ChatOp::Change { chat, change } => {
                let mut settings = storage
                    .chat_settings(&state.id, &chat)
                    .await?
                    .unwrap_or_else(|| ChatSettings::new(&state.id, &chat, now));
                settings.apply(&change, now);
                storage.put_chat_settings(&settings).await?;
                let event = chat_updated(&settings, from_phone, now);
                self.publish(&state.id, Event::ChatUpdate(event)).await;
                Ok(ChatAnswer::Chat(settings))
            }
            ChatOp::EditLabel(spec) => {
                let label = Label {
                    id: new_id(),
                    instance_id: state.id.clone(),
                    label_id: spec.label_id,
                    name: spec.name,
                    color: spec.color,
                    created_at: now,
                    updated_at: now,
                };
                storage.put_label(&label).await?;
                let event = LabelUpdated {
                    label_id: label.label_id.clone(),
                    name: Some(label.name.clone()),
                    color: Some(label.color),
                    deleted: false,
                    from_phone,
                };
                self.publish(&state.id, Event::LabelUpdate(event)).await;
                Ok(ChatAnswer::Label(label))
            }
            ChatOp::DeleteLabel(label_id) => {
                storage.delete_label(&state.id, &label_id).await?;
                let event = LabelUpdated {
                    label_id,
                    name: None,
                    color: None,
                    deleted: true,
                    from_phone,
                };
                self.publish(&state.id, Event::LabelUpdate(event)).await;
                Ok(ChatAnswer::Done)
            }
        }
    }

    async fn publish(&self, instance_id: &str, event: Event) {
        if let Err(err) = self
            .deps
            .events
            .publish(InstanceEvent::new(instance_id, event))
            .await
        {
            tracing::warn!(instance = %instance_id, %err, "cannot store an event");
        }
    }

    /// Records a status change everywhere it shows: storage, the activity log, the event
    /// stream, and last the status board. Last, so that whoever sees the new status
    /// (HTTP reads the board) also finds its activity entry and event. Storage failures
    /// are logged, not fatal: a database outage must not take WhatsApp sessions down.
    async fn transition(&self, state: &mut InstanceState, status: InstanceStatus, record: Record) {
        state.status = status;
        let storage = &self.deps.storage;
        if let Err(err) = storage
            .set_instance_status(&state.id, status, state.phone.as_deref(), Utc::now())
            .await
        {
            tracing::warn!(instance = %state.id, %err, "cannot store the instance status");
        }
        if let Some((action, details)) = record.activity
            && let Err(err) = storage
                .append_activity(&ActivityEntry::new(&state.id, action, details))
                .await
        {
            tracing::warn!(instance = %state.id, %err, "cannot store an activity entry");
        }
        if let Some(event) = record.event
            && let Err(err) = self
                .deps
                .events
                .publish(InstanceEvent::new(&state.id, event))
                .await
        {
            tracing::warn!(instance = %state.id, %err, "cannot store an event");
        }
        self.board.set(&state.id, state.view());
    }
}

/// Answers the callers waiting for the commit of inbound message `message_id`, if any.
fn answer_inbound(state: &mut InstanceState, message_id: &str, stored: Result<(), DomainError>) {
    for reply in state.awaiting.remove(message_id).unwrap_or_default() {
        // Fails only when the caller gave up (timed out) meanwhile.
        let _ = reply.send(stored.clone());
    }
}

async fn sandbox(state: &mut InstanceState, control: SandboxControl) -> Result<(), DomainError> {
    let not_sandbox =
        || DomainError::Invalid("sandbox controls are only for sandbox instances".into());
    if state.kind != EngineKind::Sandbox {
        return Err(not_sandbox());
    }
    let engine = state.engine.as_mut().ok_or_else(|| {
        DomainError::conflict(
            "invalid_state",
            format!(
                "the instance is {}; reconnect it first",
                state.status.as_str()
            ),
        )
    })?;
    engine.sandbox(control).await.map_err(|err| match err {
        EngineError::NotSupported => not_sandbox(),
        other => engine_error(other),
    })
}

/// Stops and drops the engine, if one runs.
async fn close(state: &mut InstanceState) {
    if let Some(mut engine) = state.engine.take() {
        engine.stop().await;
    }
}

/// The account's own address (empty before it is linked).
fn own_address(state: &InstanceState) -> String {
    state.phone.as_deref().map(jid_for).unwrap_or_default()
}

/// Who did something WhatsApp reported: this account when `from_me` (WhatsApp may
/// name one of its devices), else `sender`.
fn author(state: &InstanceState, from_me: bool, sender: String) -> String {
    if from_me {
        state.phone.as_deref().map(jid_for).unwrap_or(sender)
    } else {
        sender
    }
}

/// The chat an edit or deletion event names.
fn event_chat(event: &Event) -> &str {
    match event {
        Event::MessageEdited(e) => &e.remote_jid,
        Event::MessageRevoked(r) => &r.remote_jid,
        _ => "",
    }
}

/// What a reply or a reaction says about the message it refers to.
/// Who and what an outbound message is addressed to, besides its content.
struct Outbound<'a> {
    instance_id: &'a str,
    to: &'a str,
    /// The WhatsApp id of the message it quotes.
    quoted: Option<String>,
    mentions: Vec<String>,
}

impl Outbound<'_> {
    /// The message to store for `content`, sent (or queued) as `sent` says, with
    /// `extra` merged into its metadata.
    fn message(
        self,
        content: OutboundContent,
        sent: &crate::engine::SentMessage,
        status: MessageStatus,
        extra: Value,
    ) -> Message {
        let now = Utc::now();
        let (message_type, text, caption, media) = match &content {
            OutboundContent::Text(text) => ("text".to_owned(), Some(text.clone()), None, None),
            OutboundContent::Typed(typed) => (
                typed.message_type().unwrap_or("text").to_owned(),
                typed.summary(),
                None,
                None,
            ),
            OutboundContent::Media {
                mime_type,
                file_name,
                caption,
                path,
                size,
                ..
            } => (
                MediaKind::of_mime(mime_type).as_str().to_owned(),
                caption.clone(),
                caption.clone(),
                Some((mime_type.clone(), file_name.clone(), path.clone(), *size)),
            ),
        };
        let mut metadata = json!({ "timestamp": sent.timestamp.timestamp() });
        if let (Some(all), Value::Object(extra)) = (metadata.as_object_mut(), extra) {
            all.extend(extra);
        }
        Message {
            id: new_id(),
            instance_id: self.instance_id.to_owned(),
            message_id: sent.message_id.clone(),
            remote_jid: self.to.to_owned(),
            from_me: true,
            message_type,
            content: text,
            has_media: media.is_some(),
            media_url: media
                .as_ref()
                .map(|_| media_url(self.instance_id, &sent.message_id)),
            caption,
            mime_type: media.as_ref().map(|m| m.0.clone()),
            file_name: media.as_ref().and_then(|m| m.1.clone()),
            media_path: media.as_ref().map(|m| m.2.clone()),
            media_size: media.as_ref().map(|m| m.3),
            status,
            push_name: None,
            metadata,
            timestamp: sent.timestamp,
            created_at: now,
            updated_at: now,
            status_updated_at: Some(now),
            quoted_message_id: self.quoted,
            mentions: self.mentions,
            reactions: Vec::new(),
            edited_at: None,
            revoked: false,
            typed: match content {
                OutboundContent::Typed(typed) => typed,
                _ => Default::default(),
            },
            message_secret: sent.message_secret.clone(),
        }
    }
}

/// Schedules the next `DrainQueue` after `after`, unless one is scheduled already.
fn schedule_drain(
    myself: &ActorRef<InstanceMsg>,
    state: &mut InstanceState,
    after: std::time::Duration,
) {
    if state.drain_scheduled {
        return;
    }
    state.drain_scheduled = true;
    if after.is_zero() {
        // Behind what the mailbox holds now, without a timer.
        if myself.send_message(InstanceMsg::DrainQueue).is_err() {
            state.drain_scheduled = false;
        }
    } else {
        myself.send_after(after, || InstanceMsg::DrainQueue);
    }
}

/// The usage of sending `message`: one message, and its media if it has any.
fn sent_usage(message: &Message) -> crate::domain::Usage {
    crate::domain::Usage {
        messages_sent: 1,
        media_sent: u64::from(message.has_media),
        total_media_size: message.media_size.unwrap_or(0),
        ..Default::default()
    }
}

/// Whether a queued send that failed this way is tried again: the connection or
/// WhatsApp failed, not the message.
fn retried(err: &DomainError) -> bool {
    matches!(
        err,
        DomainError::Engine(_)
            | DomainError::Store(_)
            | DomainError::Unavailable(_)
            | DomainError::Timeout(_)
            | DomainError::Conflict { .. }
    )
}

/// `message_sent` for a stored outbound message.
fn sent_event(message: &Message) -> Event {
    Event::MessageSent(Box::new(MessageSent {
        message_id: message.message_id.clone(),
        to: message.remote_jid.clone(),
        body: message.content.clone(),
        message_type: message.message_type.clone(),
        timestamp: message.timestamp.timestamp(),
        has_media: message.has_media,
        from_me: true,
        status: MessageStatus::Sent,
        media: MediaFields::of(message),
        reply: ReplyFields::of(message),
        typed: message.typed.clone(),
    }))
}

fn message_ref(m: &Message) -> MessageRef {
    MessageRef {
        message_id: m.message_id.clone(),
        from_me: m.from_me,
        author: m
            .metadata
            .get("sender")
            .and_then(Value::as_str)
            .unwrap_or(&m.remote_jid)
            .to_owned(),
        text: m.content.clone(),
    }
}

/// Replies, mentions and pacing asked for with a send, before they are checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendExtras {
    /// The id of a stored message of the same chat.
    pub reply_to: Option<String>,
    /// Addresses of the people mentioned.
    pub mentions: Vec<String>,
    /// Show "typing…" in the chat this long before the message goes.
    pub delay: Option<std::time::Duration>,
    /// The instance's `sendRate` (messages per minute): the send waits in the queue
    /// and goes at that pace. None: it goes at once.
    pub send_rate: Option<u32>,
    /// A status post's audience and look: with it, and only with it, the send goes to
    /// `status@broadcast`.
    pub status: Option<StatusPost>,
}

/// The `chat_update` event of `chat` as it is at `now`.
fn chat_updated(chat: &ChatSettings, from_phone: bool, now: DateTime<Utc>) -> ChatUpdated {
    let mute = chat.mute.filter(|m| m.holds_at(now));
    ChatUpdated {
        remote_jid: chat.remote_jid.clone(),
        archived: chat.archived,
        pinned: chat.pinned,
        muted: mute.is_some(),
        muted_until: match mute {
            Some(Mute::Until(at)) => Some(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            _ => None,
        },
        labels: chat.labels.clone(),
        from_phone,
    }
}

/// How often a waiting send queue looks at the clock again: the clock may be moved
/// (a test's), and the pace may change meanwhile.
const QUEUE_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// How many times a queued send is tried when WhatsApp fails to take it, before it is
/// marked `failed`.
const QUEUE_ATTEMPTS: u32 = 5;

/// The metadata key of a queued send's typing delay, in milliseconds.
const DELAY_KEY: &str = "delayMs";

/// A send-like engine call that failed: the session is not connected, or the
/// engine's own error.
fn send_failure(err: EngineError) -> DomainError {
    match err {
        EngineError::InvalidState(_) => not_connected(),
        other => engine_error(other),
    }
}

fn not_connected() -> DomainError {
    DomainError::conflict("not_connected", "the instance is not connected to WhatsApp")
}

/// The engine, if the session is connected; `not_connected` otherwise. The status board
/// decides, as it does for `/status`: a session its engine has reported stopped is not
/// connected, even before this actor has handled that report.
fn connected_engine<'s>(
    board: &StatusBoard,
    state: &'s mut InstanceState,
) -> Result<&'s mut Box<dyn Engine>, DomainError> {
    if state.status != InstanceStatus::Connected || !board.ready(&state.id) {
        return Err(not_connected());
    }
    state.engine.as_mut().ok_or_else(not_connected)
}

/// The status a session-ending engine event shows until the actor has handled it
/// (`logged_out` and `failed` only once the actor has recorded them); None for events
/// that do not end a session.
fn shown_on_loss(event: &EngineEvent) -> Option<InstanceStatus> {
    match event {
        EngineEvent::Disconnected { .. }
        | EngineEvent::LoggedOut { .. }
        | EngineEvent::QrExhausted => Some(InstanceStatus::Disconnected),
        EngineEvent::Reconnecting { .. } | EngineEvent::Failed { .. } => {
            Some(InstanceStatus::Reconnecting)
        }
        _ => None,
    }
}

fn already_connected() -> DomainError {
    DomainError::conflict("already_connected", "the instance is already connected")
}

fn engine_error(err: EngineError) -> DomainError {
    match err {
        EngineError::InvalidState(message) => DomainError::conflict("invalid_state", message),
        EngineError::InvalidInput(message) => DomainError::Invalid(message),
        EngineError::NotSupported => DomainError::Invalid(err.to_string()),
        EngineError::NotOnWhatsApp(number) => DomainError::NotOnWhatsApp(number),
        EngineError::Io(_) | EngineError::Unavailable(_) => DomainError::Engine(err.to_string()),
        EngineError::Forbidden(message) => DomainError::Forbidden(message),
        EngineError::NotFound(message) => DomainError::NotFound(message),
    }
}

/// A file name without a directory part, safe to join to the session directory.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// The regular files directly in `dir` (temporary files left by an interrupted write
/// excluded): name → bytes. A missing directory has none.
async fn read_session_files(
    dir: &Path,
) -> std::io::Result<std::collections::BTreeMap<String, Vec<u8>>> {
    let mut files = std::collections::BTreeMap::new();
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(err) => return Err(err),
    };
    while let Some(entry) = entries.next_entry().await? {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.ends_with(".tmp") || !entry.file_type().await?.is_file() {
            continue;
        }
        files.insert(name, tokio::fs::read(entry.path()).await?);
    }
    Ok(files)
}

/// Empties a session directory but keeps it (the instance still exists).
async fn wipe_dir(dir: &Path) -> std::io::Result<()> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    while let Some(entry) = entries.next_entry().await? {
        if entry.file_type().await?.is_dir() {
            tokio::fs::remove_dir_all(entry.path()).await?;
        } else {
            tokio::fs::remove_file(entry.path()).await?;
        }
    }
    Ok(())
}
