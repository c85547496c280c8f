//! The engine seam: how an [`InstanceActor`](crate::instance) talks to WhatsApp.
//!
//! An engine owns one WhatsApp session. Commands go in through the [`Engine`] trait;
//! everything that happens on the connection comes back as an [`EngineEvent`] through
//! the [`EventSink`] it was created with. The sink casts into the instance actor's
//! mailbox, so an engine never waits for the actor and the actor never shares state
//! with the engine's background tasks. The one exception is what must not be lost: an
//! engine that can have WhatsApp deliver a message again hands it to the [`CommitSink`]
//! and waits until it is stored before acknowledging it.

pub mod sandbox;
pub mod wacore;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::domain::EngineKind;
use crate::domain::event::GroupUpdated;
use crate::domain::{
    ChatOp, GroupAnswer, GroupOp, MessageStatus, Presence, ProfileAnswer, ProfileOp, Typed,
};

pub use sandbox::{SandboxConfig, SandboxEngine, SandboxNetwork, new_message_id};
pub use wacore::{WacoreEngine, WacoreSettings};

/// What happened on a WhatsApp connection.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// A new QR code to show; it stays valid for `ttl`.
    Qr {
        code: String,
        attempt: u32,
        ttl: Duration,
    },
    /// Every QR code of this pairing expired unscanned; a new pairing must be asked for.
    QrExhausted,
    Connected {
        phone: String,
        push_name: Option<String>,
    },
    Disconnected {
        reason: String,
    },
    /// The engine is reconnecting on its own.
    Reconnecting {
        attempt: u32,
        error: Option<String>,
    },
    /// The phone unlinked this device; the session is gone.
    LoggedOut {
        reason: String,
    },
    /// The session is broken: the instance actor fails and is supervised.
    Failed {
        error: String,
    },
    /// A message arrived.
    Message(InboundMessage),
    /// The account sent a message from another of its devices (the phone itself):
    /// `chat` is where it went, `sender` the account.
    SentByPhone(InboundMessage),
    /// The recipient's phone acknowledged messages this instance sent.
    Receipt {
        /// The chat the messages were sent to.
        chat: String,
        message_ids: Vec<String>,
        status: MessageStatus,
    },
    /// WhatsApp told us a contact's name.
    Contact(EngineContact),
    /// Someone reacted to a message (or took a reaction back: an empty emoji).
    Reaction(InboundReaction),
    /// A message was edited or deleted for everyone by its author.
    Change(InboundChange),
    /// Someone voted in a poll.
    Vote(InboundVote),
    /// A contact's presence (online, offline) or chat state (typing, recording,
    /// paused).
    Presence(InboundPresence),
    /// A group the account is in changed.
    Group(GroupUpdated),
    /// Someone is calling.
    Call(InboundCall),
    /// A chat was archived, pinned, muted or labelled, or a label changed, on another
    /// of the account's devices (WhatsApp syncs these).
    ChatSync(ChatOp),
}

/// An incoming call WhatsApp brought.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundCall {
    pub call_id: String,
    /// The caller; the phone form when known.
    pub from: String,
    /// What WhatsApp names as the other end and as the call's creator, to answer it.
    pub peer: String,
    pub creator: String,
    pub video: bool,
    pub group: bool,
    pub timestamp: chrono::DateTime<chrono::Utc>,
}

/// A presence or chat state WhatsApp brought.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundPresence {
    /// The contact, or the group someone types in.
    pub chat: String,
    /// Whose presence it is; the phone form when known.
    pub sender: String,
    pub presence: Presence,
    /// When they were last online, if WhatsApp says.
    pub last_seen: Option<chrono::DateTime<chrono::Utc>>,
}

/// A vote WhatsApp brought.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundVote {
    /// The chat of the poll.
    pub chat: String,
    /// Who voted; the phone form when known.
    pub voter: String,
    /// The account voted from another of its devices.
    pub from_me: bool,
    /// WhatsApp's id of the poll's message.
    pub poll_id: String,
    pub choice: VoteChoice,
    pub timestamp: chrono::DateTime<chrono::Utc>,
}

/// What a vote says.
#[derive(Debug, Clone, PartialEq)]
pub enum VoteChoice {
    /// The options, by name (the sandbox).
    Names(Vec<String>),
    /// Encrypted with the poll's secret, as WhatsApp carries it: only the engine that
    /// knows the poll can open it ([`Engine::open_vote`]).
    Sealed { payload: Vec<u8>, iv: Vec<u8> },
}

/// A stored poll whose votes are to be opened.
#[derive(Debug, Clone, PartialEq)]
pub struct PollRef {
    /// WhatsApp's id of the poll's message.
    pub message_id: String,
    /// Who created it: the account's address when it did.
    pub creator: String,
    pub options: Vec<String>,
    pub secret: Vec<u8>,
}

/// An edit or a deletion WhatsApp brought.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundChange {
    /// The chat of the message changed.
    pub chat: String,
    /// Who changed it (its author); the phone form when known.
    pub sender: String,
    /// The account changed it from another of its devices (the phone).
    pub from_me: bool,
    /// WhatsApp's id of the message changed.
    pub target_id: String,
    pub change: MessageChange,
    pub timestamp: chrono::DateTime<chrono::Utc>,
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageChange {
    /// Its text (a media message's caption) is now this.
    Edited(String),
    /// Deleted for everyone.
    Revoked,
}

/// A reaction WhatsApp brought.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundReaction {
    /// The chat of the message reacted to.
    pub chat: String,
    /// Who reacted; the phone form when known.
    pub sender: String,
    /// The account reacted from another of its devices (the phone).
    pub from_me: bool,
    /// WhatsApp's id of the message reacted to.
    pub target_id: String,
    /// Empty when the reaction is taken back.
    pub emoji: String,
    pub timestamp: chrono::DateTime<chrono::Utc>,
}

/// A message received from WhatsApp.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    /// WhatsApp's id of the message.
    pub message_id: String,
    /// The chat: the sender's address, or the group's.
    pub chat: String,
    /// Who wrote it (the same as `chat` outside groups); the phone form when known.
    pub sender: String,
    pub push_name: Option<String>,
    /// Text, or the media's caption.
    pub text: Option<String>,
    pub media: Option<InboundMedia>,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    /// The id of the message it replies to.
    pub quoted_id: Option<String>,
    /// The people it mentions (addresses).
    pub mentions: Vec<String>,
    /// A location, contact cards or a poll it carries.
    pub typed: Typed,
    /// Its secret, when it has one (a poll's).
    pub message_secret: Option<Vec<u8>>,
}

/// Media attached to an inbound message, already downloaded.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMedia {
    pub bytes: Arc<[u8]>,
    pub mime_type: String,
    pub file_name: Option<String>,
}

/// What to send.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboundContent {
    Text(String),
    /// A location, contact cards or a poll (without votes).
    Typed(Typed),
    Media {
        bytes: Arc<[u8]>,
        mime_type: String,
        file_name: Option<String>,
        caption: Option<String>,
        /// Where the file is kept under the uploads directory.
        path: String,
        size: u64,
    },
}

/// A stored message another one refers to (a reply's quote, a reaction's target).
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRef {
    /// WhatsApp's id of the message.
    pub message_id: String,
    /// The account wrote it.
    pub from_me: bool,
    /// Who wrote it when the account did not (the chat itself outside groups).
    pub author: String,
    /// Its text or caption, which WhatsApp shows above a reply.
    pub text: Option<String>,
}

/// What goes with a message besides its content.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendOptions {
    /// The message of the same chat it replies to.
    pub reply_to: Option<MessageRef>,
    /// The people it mentions (`…@s.whatsapp.net` addresses).
    pub mentions: Vec<String>,
    /// The WhatsApp id the message must go under (a paced send's, handed out when it
    /// was queued); None: the engine picks one.
    pub message_id: Option<String>,
    /// How a status post goes out: present when, and only when, it is sent to
    /// [`STATUS_BROADCAST`](crate::domain::address::STATUS_BROADCAST).
    pub status: Option<StatusPost>,
}

/// How a status post (a text or an image to `status@broadcast`) goes out.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPost {
    /// Who sees it: people's addresses (`…@s.whatsapp.net`). Asked for empty, the
    /// instance makes it every contact the session knows.
    pub audience: Vec<String>,
    /// A text post's background colour, `0xAARRGGBB`.
    pub background_argb: u32,
}

/// What the engine reports about a message it sent.
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    pub message_id: String,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    /// The message's secret when it has one to keep (a poll's, to open its votes).
    pub message_secret: Option<Vec<u8>>,
}

/// A contact as the engine knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineContact {
    pub jid: String,
    pub name: Option<String>,
    pub push_name: Option<String>,
}

/// Where an engine reports its events. Must not block: it is called from the
/// engine's own tasks.
pub type EventSink = Arc<dyn Fn(EngineEvent) + Send + Sync>;

/// Resolves once the instance handled an event handed to a [`CommitSink`]: `Ok` when
/// what it carries is stored, `Err` with why not (the instance stopped, storage failed).
pub type Committed = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Where an engine hands the events it must not lose (inbound messages): it tells
/// WhatsApp it has a message only once the returned future says it is stored, so a
/// crash in between gets the message delivered again.
pub type CommitSink = Arc<dyn Fn(EngineEvent) -> Committed + Send + Sync>;

/// Why an engine refused or failed a command.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum EngineError {
    /// This engine does not offer the command (sandbox controls on a real session).
    #[error("not supported by this engine")]
    NotSupported,
    /// The command does not fit the session's current state (scan with no QR showing).
    #[error("{0}")]
    InvalidState(String),
    /// The command's input is malformed (a phone number that is not one).
    #[error("{0}")]
    InvalidInput(String),
    /// The recipient's number is not on WhatsApp.
    #[error("{0} is not on WhatsApp")]
    NotOnWhatsApp(String),
    /// The session store could not be read or written.
    #[error("session store: {0}")]
    Io(String),
    /// The engine cannot run here (not built in, WhatsApp unreachable).
    #[error("{0}")]
    Unavailable(String),
    /// WhatsApp refuses the account this (a group change by a non-admin).
    #[error("{0}")]
    Forbidden(String),
    /// WhatsApp knows no such thing, or not for this account (a group it is not in).
    #[error("{0}")]
    NotFound(String),
}

impl From<std::io::Error> for EngineError {
    fn from(err: std::io::Error) -> Self {
        EngineError::Io(err.to_string())
    }
}

/// A fault the sandbox can inject into its simulated connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// The connection drops and comes back on its own.
    Disconnect,
    /// The session fails: the instance actor dies and its supervisor restarts it.
    Crash,
    /// The phone unlinks the device.
    Logout,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Disconnect => "disconnect",
            FaultKind::Crash => "crash",
            FaultKind::Logout => "logout",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disconnect" => Ok(FaultKind::Disconnect),
            "crash" => Ok(FaultKind::Crash),
            "logout" => Ok(FaultKind::Logout),
            other => Err(format!(
                "unknown fault '{other}' (expected disconnect, crash or logout)"
            )),
        }
    }
}

/// Commands only the sandbox engine understands (the `/api/sandbox/...` endpoints).
#[derive(Debug, Clone, PartialEq)]
pub enum SandboxControl {
    /// "Scans" the QR code showing: the instance links as `phone`.
    Scan {
        phone: String,
    },
    Fault(FaultKind),
    /// A simulated contact sends this message to the instance.
    Inbound(Box<InboundMessage>),
    /// A simulated contact votes in a poll.
    Vote(InboundVote),
    /// A simulated contact comes online, goes offline, or types.
    Presence(InboundPresence),
    /// A simulated contact calls.
    Call(InboundCall),
    /// The account's phone archives, pins, mutes or labels a chat, or changes a label.
    PhoneChange(ChatOp),
    /// A simulated recipient acknowledges a message the instance sent.
    Receipt {
        chat: String,
        message_id: String,
        status: MessageStatus,
    },
}

/// One WhatsApp session. Methods are called by a single instance actor, one at a time.
#[async_trait]
pub trait Engine: Send + Sync {
    /// Connects with the stored session, or starts pairing (QR codes) when there is none.
    async fn start(&mut self) -> Result<(), EngineError>;
    /// Disconnects and stops every background task; the stored session stays.
    async fn stop(&mut self);
    /// Unlinks the device and forgets the stored session.
    async fn logout(&mut self) -> Result<(), EngineError>;
    /// Starts pairing by phone number; returns the code the user types on the phone.
    async fn pair_code(&mut self, phone: &str) -> Result<String, EngineError>;
    /// Sends a message to `to` (a person's or a group's address). Fails with
    /// `InvalidState` when the session is not connected.
    async fn send(
        &mut self,
        to: &str,
        content: &OutboundContent,
        options: &SendOptions,
    ) -> Result<SentMessage, EngineError>;
    /// Reacts with `emoji` to `target` in `chat`; an empty emoji takes the reaction
    /// back. Fails with `InvalidState` when the session is not connected.
    async fn react(
        &mut self,
        chat: &str,
        target: &MessageRef,
        emoji: &str,
    ) -> Result<SentMessage, EngineError>;
    /// Replaces the text of our own message `target` of `chat` (a media message's
    /// caption). Fails with `InvalidState` when the session is not connected.
    async fn edit(
        &mut self,
        chat: &str,
        target: &MessageRef,
        text: &str,
    ) -> Result<SentMessage, EngineError>;
    /// Deletes our own message `target` of `chat` for everyone. Fails with
    /// `InvalidState` when the session is not connected.
    async fn revoke(&mut self, chat: &str, target: &MessageRef)
    -> Result<SentMessage, EngineError>;
    /// Opens a sealed vote of `voter` in `poll`: the names of the options chosen.
    async fn open_vote(
        &mut self,
        poll: &PollRef,
        voter: &str,
        payload: &[u8],
        iv: &[u8],
    ) -> Result<Vec<String>, EngineError>;
    /// Announces the account online (`Available`) or offline (`Unavailable`) to the
    /// contacts subscribed to its presence.
    async fn set_presence(&mut self, presence: Presence) -> Result<(), EngineError>;
    /// Shows `chat` that the account is typing, recording or has paused (a chat state).
    async fn chat_state(&mut self, chat: &str, state: Presence) -> Result<(), EngineError>;
    /// Asks WhatsApp for `jid`'s presence updates (`EngineEvent::Presence`).
    async fn subscribe_presence(&mut self, jid: &str) -> Result<(), EngineError>;
    /// A group operation. Fails with `Forbidden` when WhatsApp refuses it to the account
    /// (not an admin), `NotFound` for a group it does not know or the account is not in.
    async fn group(&mut self, op: GroupOp) -> Result<GroupAnswer, EngineError>;
    /// A profile or blocklist operation. Fails with `NotFound` for a contact not on
    /// WhatsApp.
    async fn profile(&mut self, op: ProfileOp) -> Result<ProfileAnswer, EngineError>;
    /// Archives, pins, mutes or labels a chat, or creates, changes or deletes a label
    /// (WhatsApp syncs it to the account's other devices). A new label comes with its
    /// id chosen.
    async fn chat(&mut self, op: &ChatOp) -> Result<(), EngineError>;
    /// Turns down an incoming call.
    async fn reject_call(&mut self, call: &InboundCall) -> Result<(), EngineError>;
    /// Tells the sender's phone that these messages of `chat` were read.
    async fn mark_read(&mut self, chat: &str, message_ids: &[String]) -> Result<(), EngineError>;
    /// The contacts this session knows.
    async fn contacts(&mut self) -> Result<Vec<EngineContact>, EngineError>;
    /// Adds `jid` to the session's contacts if it is on WhatsApp; returns whether it is.
    async fn add_contact(&mut self, jid: &str, name: Option<&str>) -> Result<bool, EngineError>;
    /// A sandbox simulation command. Real engines refuse it.
    async fn sandbox(&mut self, control: SandboxControl) -> Result<(), EngineError> {
        let _ = control;
        Err(EngineError::NotSupported)
    }
}

/// What an engine needs to know about its instance.
#[derive(Clone)]
pub struct EngineContext {
    pub instance_id: String,
    /// The instance's own directory for session key material (`data_dir/instances/<id>/`).
    pub session_dir: PathBuf,
    pub sink: EventSink,
    pub commit: CommitSink,
    /// Cluster mode: where a real session keeps its keys (shared by the nodes, every
    /// write fenced by the lease) instead of the session directory.
    pub keys: Option<Arc<dyn crate::store::SessionVault>>,
}

impl EngineContext {
    /// A context whose commits go to `sink` too and count as stored at once (engines
    /// that keep nothing of their own, tests).
    pub fn with_sink(instance_id: String, session_dir: PathBuf, sink: EventSink) -> Self {
        let to_sink = sink.clone();
        EngineContext {
            instance_id,
            session_dir,
            sink,
            commit: Arc::new(move |event| {
                to_sink(event);
                Box::pin(std::future::ready(Ok(())))
            }),
            keys: None,
        }
    }
}

impl fmt::Debug for EngineContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineContext")
            .field("instance_id", &self.instance_id)
            .field("session_dir", &self.session_dir)
            .finish_non_exhaustive()
    }
}

/// Creates the engine of an instance. A trait so tests can inject engines that
/// misbehave on purpose.
pub trait EngineFactory: Send + Sync {
    fn create(&self, kind: EngineKind, ctx: EngineContext) -> Result<Box<dyn Engine>, EngineError>;
}

/// The engines this build ships.
#[derive(Debug, Clone)]
pub struct Engines {
    sandbox: SandboxNetwork,
    wacore: Arc<WacoreSettings>,
}

impl Engines {
    /// Sandbox engines join `sandbox`, so sandbox instances of one server see each other;
    /// real sessions reach WhatsApp as `wacore` says.
    pub fn new(sandbox: SandboxNetwork, wacore: WacoreSettings) -> Self {
        Engines {
            sandbox,
            wacore: Arc::new(wacore),
        }
    }

    pub fn sandbox_network(&self) -> &SandboxNetwork {
        &self.sandbox
    }
}

impl EngineFactory for Engines {
    fn create(&self, kind: EngineKind, ctx: EngineContext) -> Result<Box<dyn Engine>, EngineError> {
        match kind {
            EngineKind::Sandbox => Ok(Box::new(SandboxEngine::new(self.sandbox.clone(), ctx))),
            EngineKind::Wacore => Ok(Box::new(WacoreEngine::new(self.wacore.clone(), ctx))),
        }
    }
}
