//! The sandbox engine: an in-process simulated WhatsApp.
//!
//! It behaves like the real thing where a client can see it: QR codes shaped like
//! WhatsApp's that rotate on WhatsApp's schedule, pairing by phone code, a session that
//! survives restarts (no re-scan), and faults on demand. Instances pair by being
//! "scanned" through the sandbox endpoints or automatically after a configured delay.

mod groups;
mod profile;
mod stored;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::{
    Engine, EngineContact, EngineContext, EngineError, EngineEvent, EventSink, FaultKind,
    InboundCall, InboundChange, InboundMedia, InboundMessage, InboundPresence, InboundReaction,
    MessageChange, MessageRef, OutboundContent, PollRef, SandboxControl, SendOptions, SentMessage,
};
use crate::domain::address::{USER_SERVER, is_group_jid, jid_for};
use crate::domain::normalize_phone;
use crate::domain::{
    ChatChange, ChatOp, GroupAnswer, GroupOp, MessageStatus, Mute, Presence, Profile,
    ProfileAnswer, ProfileOp, ProfilePicture, Typed,
};
use profile::PublicProfile;
use stored::{SessionFile, StoredSession};

/// Name of the session file inside an instance's session directory.
pub const SESSION_FILE: &str = "sandbox-session.json";

/// How long a pair code takes to "be typed on the phone" when no autopair delay is set.
pub const PAIR_CODE_DELAY: Duration = Duration::from_secs(1);

/// Timings of the simulated network.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// Pair automatically this long after the first QR code (`SANDBOX_AUTOPAIR_MS`).
    pub autopair: Option<Duration>,
    /// Validity of the first QR code of a pairing (WhatsApp: 60 s).
    pub first_qr_ttl: Duration,
    /// Validity of every later QR code (WhatsApp: 20 s).
    pub next_qr_ttl: Duration,
    /// QR codes per pairing before giving up (WhatsApp: 6).
    pub qr_refs: u32,
    /// How long a `disconnect` fault keeps the connection down, and how long the
    /// reconnection then takes.
    pub reconnect_delay: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            autopair: None,
            first_qr_ttl: Duration::from_secs(60),
            next_qr_ttl: Duration::from_secs(20),
            qr_refs: 6,
            reconnect_delay: Duration::from_millis(200),
        }
    }
}

/// The simulated WhatsApp network shared by every sandbox engine of a server: linked
/// phone numbers are registered here so sandbox instances can reach each other.
/// Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SandboxNetwork {
    shared: Arc<NetworkShared>,
}

#[derive(Debug, Default)]
struct NetworkShared {
    config: SandboxConfig,
    /// Linked phone → the device connected as it. A std mutex: held for a map operation
    /// only, never across an await.
    devices: Mutex<HashMap<String, Device>>,
    /// Who follows whose presence, and what each announced last.
    presence: Mutex<PresenceBook>,
    groups: Mutex<groups::GroupBook>,
}

#[derive(Debug, Default)]
struct PresenceBook {
    /// Phone → the phones subscribed to its presence.
    subscribers: HashMap<String, BTreeSet<String>>,
    /// Phone → the presence it announced last, and when.
    announced: HashMap<String, (Presence, DateTime<Utc>)>,
}

/// A connected sandbox session, as the network reaches it.
#[derive(Clone)]
struct Device {
    instance_id: String,
    /// The session's event sink: messages and receipts for it are delivered here.
    sink: EventSink,
    profile: PublicProfile,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

impl SandboxNetwork {
    pub fn new(config: SandboxConfig) -> Self {
        SandboxNetwork {
            shared: Arc::new(NetworkShared {
                config,
                devices: Mutex::new(HashMap::new()),
                presence: Mutex::default(),
                groups: Mutex::default(),
            }),
        }
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.shared.config
    }

    /// Whether some sandbox instance is connected as `phone`.
    pub fn is_registered(&self, phone: &str) -> bool {
        self.devices().contains_key(phone)
    }

    /// The instance connected as `phone`, if any.
    pub fn instance_for(&self, phone: &str) -> Option<String> {
        self.devices().get(phone).map(|d| d.instance_id.clone())
    }

    fn register(&self, phone: &str, instance_id: &str, sink: EventSink, profile: PublicProfile) {
        self.devices().insert(
            phone.to_owned(),
            Device {
                instance_id: instance_id.to_owned(),
                sink,
                profile,
            },
        );
    }

    /// Shows `phone`'s new profile, if `instance_id` is still the one connected as it.
    fn publish_profile(&self, phone: &str, instance_id: &str, profile: PublicProfile) {
        if let Some(device) = self.devices().get_mut(phone)
            && device.instance_id == instance_id
        {
            device.profile = profile;
        }
    }

    /// Whether the account connected as `phone` takes messages and calls from `from`
    /// (it does when nothing is connected as it).
    fn admits(&self, phone: &str, from: &str) -> bool {
        self.devices()
            .get(phone)
            .is_none_or(|d| d.profile.admits(from))
    }

    /// The picture of the account connected at `jid` (a person's address), unless it has
    /// none or blocks `asker`.
    fn picture_for(&self, jid: &str, asker: &str) -> Option<ProfilePicture> {
        let phone = jid.strip_suffix(&format!("@{USER_SERVER}"))?;
        self.devices()
            .get(phone)
            .filter(|d| d.profile.admits(asker))
            .and_then(|d| d.profile.picture.clone())
    }

    /// The sink of the device connected at `jid`, unless it blocks `from`.
    fn sink_admitting(&self, jid: &str, from: &str) -> Option<EventSink> {
        let phone = jid.strip_suffix(&format!("@{USER_SERVER}"))?;
        self.devices()
            .get(phone)
            .filter(|d| d.profile.admits(from))
            .map(|d| d.sink.clone())
    }

    /// Removes `phone` only if it still belongs to `instance_id` (another instance may
    /// have linked the same number since).
    fn unregister(&self, phone: &str, instance_id: &str) {
        let mut devices = self.devices();
        if devices
            .get(phone)
            .is_some_and(|owner| owner.instance_id == instance_id)
        {
            devices.remove(phone);
        }
    }

    /// The sink of the device connected at `jid` (a person's address), if any.
    fn sink_for(&self, jid: &str) -> Option<EventSink> {
        let phone = jid.strip_suffix(&format!("@{USER_SERVER}"))?;
        self.devices().get(phone).map(|d| d.sink.clone())
    }

    /// `phone` announces `presence`: every connected subscriber hears of it.
    fn announce(&self, phone: &str, presence: Presence) {
        let subscribers = {
            let mut book = self.presence();
            book.announced
                .insert(phone.to_owned(), (presence, Utc::now()));
            book.subscribers.get(phone).cloned().unwrap_or_default()
        };
        let update = presence_of(phone, presence, Some(Utc::now()));
        for subscriber in subscribers {
            if let Some(sink) = self.sink_for(&jid_for(&subscriber)) {
                sink(EngineEvent::Presence(update.clone()));
            }
        }
    }

    /// `subscriber` follows `phone`'s presence; answers what it is now: what `phone`
    /// announced last, else available while a sandbox instance is connected as it,
    /// else unavailable.
    fn subscribe(&self, subscriber: &str, phone: &str) -> InboundPresence {
        let announced = {
            let mut book = self.presence();
            book.subscribers
                .entry(phone.to_owned())
                .or_default()
                .insert(subscriber.to_owned());
            book.announced.get(phone).copied()
        };
        match announced {
            Some((presence, at)) => presence_of(phone, presence, Some(at)),
            None if self.is_registered(phone) => presence_of(phone, Presence::Available, None),
            None => presence_of(phone, Presence::Unavailable, None),
        }
    }

    /// Carries out a group operation of `me`, then tells the members' sessions.
    fn group_op(&self, me: &str, op: GroupOp) -> Result<GroupAnswer, EngineError> {
        let outcome = self.groups().apply(me, op, Utc::now())?;
        for (member, update) in outcome.updates {
            if let Some(sink) = self.sink_for(&member) {
                sink(EngineEvent::Group(update));
            }
        }
        Ok(outcome.answer)
    }

    /// Who receives what `me` sends to `to`: the member sessions of a sandbox group
    /// (`Forbidden` for a non-member, or a non-admin of an announce group), else the
    /// session linked as `to`.
    fn recipients(&self, me: &str, to: &str) -> Result<Vec<EventSink>, EngineError> {
        let members = {
            let groups = self.groups();
            match groups.members(to) {
                None => None,
                Some(group) => {
                    let role = group.role_of(me).ok_or_else(|| {
                        EngineError::Forbidden(format!("the account is not in group {to}"))
                    })?;
                    if group.announce && !role.is_admin() {
                        return Err(EngineError::Forbidden(format!(
                            "only admins send to group {to}"
                        )));
                    }
                    Some(
                        group
                            .participants
                            .iter()
                            .filter(|m| m.jid != me)
                            .map(|m| m.jid.clone())
                            .collect::<Vec<_>>(),
                    )
                }
            }
        };
        Ok(match members {
            Some(members) => members
                .iter()
                .filter_map(|m| self.sink_admitting(m, me))
                .collect(),
            None => self.sink_admitting(to, me).into_iter().collect(),
        })
    }

    fn groups(&self) -> MutexGuard<'_, groups::GroupBook> {
        self.shared
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn presence(&self) -> MutexGuard<'_, PresenceBook> {
        self.shared
            .presence
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn devices(&self) -> MutexGuard<'_, HashMap<String, Device>> {
        self.shared
            .devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// `phone`'s presence as others hear it; an unavailable one announced `at` was last
/// seen then.
fn presence_of(phone: &str, presence: Presence, at: Option<DateTime<Utc>>) -> InboundPresence {
    InboundPresence {
        chat: jid_for(phone),
        sender: jid_for(phone),
        presence,
        last_seen: at.filter(|_| presence == Presence::Unavailable),
    }
}

/// Where the simulated connection is.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Not started, stopped, or pairing gave up.
    Idle,
    /// A QR code is showing and can be scanned.
    Qr,
    Connected {
        phone: String,
        push_name: Option<String>,
    },
    /// Dropped by a `disconnect` fault; comes back on its own.
    Reconnecting {
        phone: String,
        push_name: Option<String>,
    },
}

impl Phase {
    fn phone(&self) -> Option<&str> {
        match self {
            Phase::Connected { phone, .. } | Phase::Reconnecting { phone, .. } => Some(phone),
            Phase::Idle | Phase::Qr => None,
        }
    }
}

/// One sandbox session.
pub struct SandboxEngine {
    session: Arc<Session>,
}

/// The part of a session its background tasks share with the engine.
struct Session {
    network: SandboxNetwork,
    instance_id: String,
    /// `sandbox-session.json`, and what it holds.
    file: SessionFile,
    sink: EventSink,
    /// A std mutex: held only to read or swap the phase, never across an await.
    state: Mutex<SessionState>,
}

struct SessionState {
    phase: Phase,
    /// The QR rotation, aborted as soon as the session links.
    qr_task: Option<AbortHandle>,
    /// Every other background task (pairing by code, reconnection).
    tasks: Vec<AbortHandle>,
}

impl SandboxEngine {
    /// Something about a message of `chat` (a reaction, an edit, a deletion) goes to
    /// the sandbox instance linked as the chat, if any: `event` builds what it hears,
    /// from our address and the send's time.
    fn tell_chat(
        &self,
        chat: &str,
        event: impl FnOnce(String, chrono::DateTime<Utc>) -> EngineEvent,
    ) -> Result<SentMessage, EngineError> {
        let (phone, _) = self.session.connected_as()?;
        let sent = SentMessage {
            message_id: new_message_id(),
            timestamp: Utc::now(),
            message_secret: None,
        };
        if let Some(recipient) = self.session.network.sink_for(chat) {
            recipient(event(jid_for(&phone), sent.timestamp));
        }
        Ok(sent)
    }

    /// Our own message `target` of `chat` changed: the linked instance hears of it as
    /// its author's change.
    fn change(
        &self,
        chat: &str,
        target: &MessageRef,
        change: MessageChange,
    ) -> Result<SentMessage, EngineError> {
        self.tell_chat(chat, |me, timestamp| {
            EngineEvent::Change(InboundChange {
                chat: me.clone(),
                sender: me,
                from_me: false,
                target_id: target.message_id.clone(),
                change,
                timestamp,
            })
        })
    }

    pub fn new(network: SandboxNetwork, ctx: EngineContext) -> Self {
        SandboxEngine {
            session: Arc::new(Session {
                network,
                instance_id: ctx.instance_id,
                file: SessionFile::new(ctx.session_dir.join(SESSION_FILE)),
                sink: ctx.sink,
                state: Mutex::new(SessionState {
                    phase: Phase::Idle,
                    qr_task: None,
                    tasks: Vec::new(),
                }),
            }),
        }
    }
}

impl Drop for SandboxEngine {
    /// An instance actor that dies without a clean stop (a crash, a kill) still must not
    /// leave timers running that talk to its successor's mailbox, nor a stale phone in
    /// the network.
    fn drop(&mut self) {
        self.session.halt();
    }
}

impl Session {
    fn state(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(&self, event: EngineEvent) {
        (self.sink)(event);
    }

    fn config(&self) -> &SandboxConfig {
        self.network.config()
    }

    /// Aborts every background task, unregisters the phone and goes idle.
    fn halt(&self) {
        let (phase, qr, tasks) = {
            let mut state = self.state();
            let phase = std::mem::replace(&mut state.phase, Phase::Idle);
            (
                phase,
                state.qr_task.take(),
                std::mem::take(&mut state.tasks),
            )
        };
        for task in qr.into_iter().chain(tasks) {
            task.abort();
        }
        if let Some(phone) = phase.phone() {
            self.network.unregister(phone, &self.instance_id);
        }
    }

    fn track(&self, task: AbortHandle) {
        let mut state = self.state();
        state.tasks.retain(|t| !t.is_finished());
        state.tasks.push(task);
    }

    /// Links the session as `phone`: stores it, registers it and reports `Connected`.
    /// Does nothing when already connected (a scan and a pair code racing).
    ///
    /// The QR task may call this itself: aborting it is the last step, so the abort
    /// lands after the work is done (there is no await in here).
    fn link(&self, phone: &str) -> Result<(), EngineError> {
        if self.state().phase.phone().is_some() {
            return Ok(());
        }
        self.file.write(StoredSession::linked(phone))?;
        let qr = {
            let mut state = self.state();
            state.phase = Phase::Connected {
                phone: phone.to_owned(),
                push_name: None,
            };
            state.qr_task.take()
        };
        self.network.register(
            phone,
            &self.instance_id,
            self.sink.clone(),
            PublicProfile::default(),
        );
        self.emit(EngineEvent::Connected {
            phone: phone.to_owned(),
            push_name: None,
        });
        if let Some(qr) = qr {
            qr.abort();
        }
        Ok(())
    }

    /// The linked phone and push name while connected; `InvalidState` otherwise.
    fn connected_as(&self) -> Result<(String, Option<String>), EngineError> {
        match &self.state().phase {
            Phase::Connected { phone, push_name } => Ok((phone.clone(), push_name.clone())),
            _ => Err(EngineError::InvalidState("not connected".into())),
        }
    }

    /// Changes the stored session (its profile) with `change`; writes nothing when that
    /// changed nothing.
    fn update_stored(&self, change: impl FnOnce(&mut StoredSession)) -> Result<(), EngineError> {
        self.file.edit(|stored| {
            let before = stored.clone();
            change(stored);
            *stored != before
        })
    }

    /// The stored session; `InvalidState` when there is none.
    fn stored(&self) -> Result<StoredSession, EngineError> {
        self.file
            .read()?
            .ok_or_else(|| EngineError::InvalidState("not linked".into()))
    }

    /// The stored session's profile, as the network shows it.
    fn public_profile(&self) -> Result<PublicProfile, EngineError> {
        public_profile(self.file.path(), &self.stored()?)
    }

    /// Changes the stored profile with `change` and shows the network the result.
    fn change_profile(
        &self,
        phone: &str,
        change: impl FnOnce(&mut StoredSession),
    ) -> Result<(), EngineError> {
        self.update_stored(change)?;
        let profile = self.public_profile()?;
        self.network
            .publish_profile(phone, &self.instance_id, profile);
        Ok(())
    }

    fn link_or_fail(&self, phone: &str) {
        if let Err(err) = self.link(phone) {
            self.emit(EngineEvent::Failed {
                error: format!("cannot store the sandbox session: {err}"),
            });
        }
    }

    /// Shows QR codes on WhatsApp's schedule until one is scanned, autopair links the
    /// session, or every code expired.
    async fn rotate_qr(self: Arc<Self>) {
        let config = self.config().clone();
        let autopair_at = config.autopair.map(|delay| Instant::now() + delay);
        for attempt in 1..=config.qr_refs {
            let ttl = if attempt == 1 {
                config.first_qr_ttl
            } else {
                config.next_qr_ttl
            };
            self.state().phase = Phase::Qr;
            self.emit(EngineEvent::Qr {
                code: qr_code(),
                attempt,
                ttl,
            });
            let expires = Instant::now() + ttl;
            if let Some(at) = autopair_at
                && at <= expires
            {
                tokio::time::sleep_until(at).await;
                self.link_or_fail(&random_phone());
                return;
            }
            tokio::time::sleep_until(expires).await;
        }
        {
            let mut state = self.state();
            state.phase = Phase::Idle;
            state.qr_task = None;
        }
        self.emit(EngineEvent::QrExhausted);
    }

    /// The connection drops, then comes back on its own: `Disconnected`, a delay,
    /// `Reconnecting`, another delay, `Connected`.
    async fn ride_out_disconnect(self: Arc<Self>, phone: String, push_name: Option<String>) {
        let delay = self.config().reconnect_delay;
        tokio::time::sleep(delay).await;
        self.emit(EngineEvent::Reconnecting {
            attempt: 1,
            error: None,
        });
        tokio::time::sleep(delay).await;
        {
            let mut state = self.state();
            if !matches!(state.phase, Phase::Reconnecting { .. }) {
                return;
            }
            state.phase = Phase::Connected {
                phone: phone.clone(),
                push_name: push_name.clone(),
            };
        }
        let profile = match self.public_profile() {
            Ok(profile) => profile,
            Err(err) => {
                self.emit(EngineEvent::Failed {
                    error: format!("cannot read the sandbox session: {err}"),
                });
                return;
            }
        };
        self.network
            .register(&phone, &self.instance_id, self.sink.clone(), profile);
        self.emit(EngineEvent::Connected { phone, push_name });
    }
}

#[async_trait]
impl Engine for SandboxEngine {
    async fn start(&mut self) -> Result<(), EngineError> {
        self.session.halt();
        if let Some(stored) = self.session.file.load()? {
            self.session.state().phase = Phase::Connected {
                phone: stored.phone.clone(),
                push_name: stored.push_name.clone(),
            };
            let profile = public_profile(self.session.file.path(), &stored)?;
            self.session.network.register(
                &stored.phone,
                &self.session.instance_id,
                self.session.sink.clone(),
                profile,
            );
            self.session.emit(EngineEvent::Connected {
                phone: stored.phone,
                push_name: stored.push_name,
            });
            return Ok(());
        }
        let task = tokio::spawn(self.session.clone().rotate_qr());
        self.session.state().qr_task = Some(task.abort_handle());
        Ok(())
    }

    async fn stop(&mut self) {
        self.session.halt();
    }

    async fn logout(&mut self) -> Result<(), EngineError> {
        self.session.halt();
        self.session.file.remove()
    }

    /// The code is made up; "typing it on the phone" takes the autopair delay when one is
    /// configured, else [`PAIR_CODE_DELAY`], then the session links as `phone`.
    async fn pair_code(&mut self, phone: &str) -> Result<String, EngineError> {
        let phone = normalize_phone(phone).map_err(EngineError::InvalidInput)?;
        if self.session.state().phase.phone().is_some() {
            return Err(EngineError::InvalidState("already connected".into()));
        }
        let delay = self.session.config().autopair.unwrap_or(PAIR_CODE_DELAY);
        let session = self.session.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            session.link_or_fail(&phone);
        });
        self.session.track(task.abort_handle());
        Ok(pair_code())
    }

    /// Delivers to the sandbox instance linked as the recipient (the sandbox instances
    /// of a status post's audience), if any, and reports it `delivered` at once; other
    /// recipients are simulated contacts that acknowledge through the receipt control.
    async fn send(
        &mut self,
        to: &str,
        content: &OutboundContent,
        options: &SendOptions,
    ) -> Result<SentMessage, EngineError> {
        let (phone, push_name) = self.session.connected_as()?;
        let sent = SentMessage {
            message_id: options.message_id.clone().unwrap_or_else(new_message_id),
            timestamp: Utc::now(),
            message_secret: None,
        };
        let me = jid_for(&phone);
        let recipients = match &options.status {
            // A status post reaches the sandbox instances among its audience that do not
            // block the account.
            Some(post) => post
                .audience
                .iter()
                .filter_map(|jid| self.session.network.sink_admitting(jid, &me))
                .collect(),
            None => self.session.network.recipients(&me, to)?,
        };
        if !recipients.is_empty() {
            let (text, media, typed) = match content {
                OutboundContent::Text(text) => (Some(text.clone()), None, Typed::default()),
                OutboundContent::Typed(typed) => (None, None, typed.clone()),
                OutboundContent::Media {
                    bytes,
                    mime_type,
                    file_name,
                    caption,
                    ..
                } => (
                    caption.clone(),
                    Some(InboundMedia {
                        bytes: bytes.clone(),
                        mime_type: mime_type.clone(),
                        file_name: file_name.clone(),
                    }),
                    Typed::default(),
                ),
            };
            // In a group the chat is the group, for a status post the status broadcast;
            // else it is the sender.
            let chat = if is_group_jid(to) || options.status.is_some() {
                to.to_owned()
            } else {
                me.clone()
            };
            let message = InboundMessage {
                message_id: sent.message_id.clone(),
                chat,
                sender: me,
                push_name: push_name.or(Some(phone)),
                text,
                media,
                timestamp: sent.timestamp,
                quoted_id: options.reply_to.as_ref().map(|q| q.message_id.clone()),
                mentions: options.mentions.clone(),
                typed,
                message_secret: None,
            };
            for recipient in recipients {
                recipient(EngineEvent::Message(message.clone()));
            }
            self.session.emit(EngineEvent::Receipt {
                chat: to.to_owned(),
                message_ids: vec![sent.message_id.clone()],
                status: MessageStatus::Delivered,
            });
        }
        Ok(sent)
    }

    /// Delivers the reaction to the sandbox instance linked as the chat, if any.
    async fn react(
        &mut self,
        chat: &str,
        target: &MessageRef,
        emoji: &str,
    ) -> Result<SentMessage, EngineError> {
        self.tell_chat(chat, |me, timestamp| {
            EngineEvent::Reaction(InboundReaction {
                chat: me.clone(),
                sender: me,
                from_me: false,
                target_id: target.message_id.clone(),
                emoji: emoji.to_owned(),
                timestamp,
            })
        })
    }

    /// Sandbox votes travel as names: there is nothing to open.
    async fn open_vote(
        &mut self,
        _poll: &PollRef,
        _voter: &str,
        _payload: &[u8],
        _iv: &[u8],
    ) -> Result<Vec<String>, EngineError> {
        Err(EngineError::InvalidInput(
            "the sandbox carries no sealed votes".into(),
        ))
    }

    /// Delivers the edit to the sandbox instance linked as the chat, if any.
    async fn edit(
        &mut self,
        chat: &str,
        target: &MessageRef,
        text: &str,
    ) -> Result<SentMessage, EngineError> {
        self.change(chat, target, MessageChange::Edited(text.to_owned()))
    }

    /// Delivers the deletion to the sandbox instance linked as the chat, if any.
    async fn revoke(
        &mut self,
        chat: &str,
        target: &MessageRef,
    ) -> Result<SentMessage, EngineError> {
        self.change(chat, target, MessageChange::Revoked)
    }

    /// Groups live in the sandbox network; their members' sessions hear of changes.
    async fn group(&mut self, op: GroupOp) -> Result<GroupAnswer, EngineError> {
        let (phone, _) = self.session.connected_as()?;
        self.session.network.group_op(&jid_for(&phone), op)
    }

    /// The profile lives in the stored session; other sandbox accounts see it.
    async fn profile(&mut self, op: ProfileOp) -> Result<ProfileAnswer, EngineError> {
        let (phone, _) = self.session.connected_as()?;
        let session = &self.session;
        match op {
            ProfileOp::Get => {
                let profile = session.public_profile()?;
                Ok(ProfileAnswer::Profile(Profile {
                    phone: Some(phone),
                    name: profile.name,
                    about: profile.about,
                    picture: profile.picture,
                }))
            }
            ProfileOp::Update(patch) => {
                let name = patch.name.clone();
                session.change_profile(&phone, |s| {
                    if let Some(name) = patch.name {
                        s.push_name = Some(name);
                    }
                    if let Some(about) = patch.about {
                        s.about = Some(about).filter(|a| !a.is_empty());
                    }
                })?;
                if let Some(name) = name
                    && let Phase::Connected { push_name, .. } = &mut session.state().phase
                {
                    *push_name = Some(name);
                }
                Ok(ProfileAnswer::Done)
            }
            ProfileOp::Picture(jpeg) => {
                profile::write_picture(session.file.path(), jpeg.as_deref())?;
                let id = jpeg.map(|_| new_message_id());
                session.change_profile(&phone, |s| s.picture_id = id)?;
                Ok(ProfileAnswer::Done)
            }
            ProfileOp::ContactPicture(jid) => {
                let picture = session.network.picture_for(&jid, &jid_for(&phone));
                Ok(ProfileAnswer::Picture(picture))
            }
            ProfileOp::Block(jid) => {
                session.change_profile(&phone, |s| {
                    s.blocked.insert(jid);
                })?;
                Ok(ProfileAnswer::Done)
            }
            ProfileOp::Unblock(jid) => {
                session.change_profile(&phone, |s| {
                    s.blocked.remove(&jid);
                })?;
                Ok(ProfileAnswer::Done)
            }
            ProfileOp::Blocklist => {
                let stored = session.stored()?;
                Ok(ProfileAnswer::Blocklist(
                    stored.blocked.into_iter().collect(),
                ))
            }
        }
    }

    /// The sandbox's WhatsApp keeps nothing of it: the instance stores the outcome. Like
    /// WhatsApp, it refuses a mute that has already ended and a label without an id or
    /// a name.
    async fn chat(&mut self, op: &ChatOp) -> Result<(), EngineError> {
        self.session.connected_as()?;
        check_chat_op(op)
    }

    /// A simulated caller has no one to tell: the call simply ends.
    async fn reject_call(&mut self, _call: &InboundCall) -> Result<(), EngineError> {
        self.session.connected_as()?;
        Ok(())
    }

    /// Subscribed sandbox instances hear of it.
    async fn set_presence(&mut self, presence: Presence) -> Result<(), EngineError> {
        let (phone, _) = self.session.connected_as()?;
        if presence.is_chat_state() {
            return Err(EngineError::InvalidInput(
                "a presence is available or unavailable".into(),
            ));
        }
        self.session.network.announce(&phone, presence);
        Ok(())
    }

    /// The sandbox instance linked as the chat, if any, sees it.
    async fn chat_state(&mut self, chat: &str, state: Presence) -> Result<(), EngineError> {
        let (phone, _) = self.session.connected_as()?;
        if !state.is_chat_state() {
            return Err(EngineError::InvalidInput(
                "a chat state is composing, recording or paused".into(),
            ));
        }
        if let Some(recipient) = self.session.network.sink_for(chat) {
            recipient(EngineEvent::Presence(presence_of(&phone, state, None)));
        }
        Ok(())
    }

    /// Answered at once with the contact's presence now, then with what it announces.
    async fn subscribe_presence(&mut self, jid: &str) -> Result<(), EngineError> {
        let (phone, _) = self.session.connected_as()?;
        let watched = crate::domain::address::jid_user(jid);
        let now = self.session.network.subscribe(&phone, watched);
        self.session.emit(EngineEvent::Presence(now));
        Ok(())
    }

    async fn mark_read(&mut self, chat: &str, message_ids: &[String]) -> Result<(), EngineError> {
        let (phone, _) = self.session.connected_as()?;
        if let Some(sender) = self.session.network.sink_for(chat) {
            sender(EngineEvent::Receipt {
                chat: jid_for(&phone),
                message_ids: message_ids.to_vec(),
                status: MessageStatus::Read,
            });
        }
        Ok(())
    }

    async fn contacts(&mut self) -> Result<Vec<EngineContact>, EngineError> {
        let stored = self.session.file.read()?;
        Ok(stored
            .map(|s| {
                s.contacts
                    .into_iter()
                    .map(|(jid, c)| EngineContact {
                        jid,
                        name: c.name,
                        push_name: c.push_name,
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// In the sandbox every valid number is on WhatsApp, except numbers ending in `0000`,
    /// so clients can exercise the "not on WhatsApp" path.
    async fn add_contact(&mut self, jid: &str, name: Option<&str>) -> Result<bool, EngineError> {
        self.session.connected_as()?;
        if crate::domain::address::jid_user(jid).ends_with("0000") {
            return Ok(false);
        }
        self.session.file.edit(|s| s.know(jid, name, None))?;
        Ok(true)
    }

    async fn sandbox(&mut self, control: SandboxControl) -> Result<(), EngineError> {
        match control {
            SandboxControl::Inbound(message) => {
                let (phone, _) = self.session.connected_as()?;
                if !self.session.network.admits(&phone, &message.sender) {
                    return Err(EngineError::Forbidden(format!(
                        "the account blocks {}: WhatsApp does not deliver their messages",
                        message.sender
                    )));
                }
                // Written only when the sender or its push name is new.
                self.session
                    .file
                    .edit(|s| s.know(&message.sender, None, message.push_name.as_deref()))?;
                self.session.emit(EngineEvent::Message(*message));
                Ok(())
            }
            SandboxControl::Vote(vote) => {
                self.session.connected_as()?;
                self.session.emit(EngineEvent::Vote(vote));
                Ok(())
            }
            SandboxControl::Presence(presence) => {
                self.session.connected_as()?;
                self.session.emit(EngineEvent::Presence(presence));
                Ok(())
            }
            SandboxControl::Call(call) => {
                let (phone, _) = self.session.connected_as()?;
                if !self.session.network.admits(&phone, &call.from) {
                    return Err(EngineError::Forbidden(format!(
                        "the account blocks {}: WhatsApp does not put their calls through",
                        call.from
                    )));
                }
                self.session.emit(EngineEvent::Call(call));
                Ok(())
            }
            SandboxControl::PhoneChange(op) => {
                self.session.connected_as()?;
                check_chat_op(&op)?;
                self.session.emit(EngineEvent::ChatSync(op));
                Ok(())
            }
            SandboxControl::Receipt {
                chat,
                message_id,
                status,
            } => {
                self.session.connected_as()?;
                self.session.emit(EngineEvent::Receipt {
                    chat,
                    message_ids: vec![message_id],
                    status,
                });
                Ok(())
            }
            SandboxControl::Scan { phone } => {
                let phone = normalize_phone(&phone).map_err(EngineError::InvalidInput)?;
                if self.session.state().phase != Phase::Qr {
                    return Err(EngineError::InvalidState("no QR code is showing".into()));
                }
                self.session.link(&phone)
            }
            SandboxControl::Fault(FaultKind::Crash) => {
                // A broken session takes nothing in any more. Still linked, it would
                // accept inbound messages (and peers' sends) after `Failed`, into the
                // mailbox of an actor about to fail, where they would be lost although
                // they had been accepted. The session file stays: the restart resumes it.
                self.session.halt();
                self.session.emit(EngineEvent::Failed {
                    error: "sandbox fault: crash".into(),
                });
                Ok(())
            }
            SandboxControl::Fault(FaultKind::Disconnect) => {
                let (phone, push_name) = {
                    let mut state = self.session.state();
                    let Phase::Connected { phone, push_name } = state.phase.clone() else {
                        return Err(EngineError::InvalidState("not connected".into()));
                    };
                    state.phase = Phase::Reconnecting {
                        phone: phone.clone(),
                        push_name: push_name.clone(),
                    };
                    (phone, push_name)
                };
                self.session
                    .network
                    .unregister(&phone, &self.session.instance_id);
                self.session.emit(EngineEvent::Disconnected {
                    reason: "sandbox fault: disconnect".into(),
                });
                let task = tokio::spawn(self.session.clone().ride_out_disconnect(phone, push_name));
                self.session.track(task.abort_handle());
                Ok(())
            }
            SandboxControl::Fault(FaultKind::Logout) => {
                if self.session.state().phase.phone().is_none() {
                    return Err(EngineError::InvalidState("not connected".into()));
                }
                self.session.halt();
                self.session.file.remove()?;
                self.session.emit(EngineEvent::LoggedOut {
                    reason: "sandbox fault: logout".into(),
                });
                Ok(())
            }
        }
    }
}

/// What WhatsApp refuses of a chat operation: a mute that has already ended, a label
/// without an id or a name.
fn check_chat_op(op: &ChatOp) -> Result<(), EngineError> {
    match op {
        ChatOp::Change {
            change: ChatChange::Mute(Some(Mute::Until(at))),
            ..
        } if *at <= Utc::now() => Err(EngineError::InvalidInput(
            "the mute would already have ended".into(),
        )),
        ChatOp::Change {
            change: ChatChange::Label { label_id, .. },
            ..
        }
        | ChatOp::DeleteLabel(label_id)
            if label_id.is_empty() =>
        {
            Err(EngineError::InvalidInput("a label needs an id".into()))
        }
        ChatOp::EditLabel(spec) if spec.label_id.is_empty() || spec.name.trim().is_empty() => Err(
            EngineError::InvalidInput("a label needs an id and a name".into()),
        ),
        _ => Ok(()),
    }
}

/// What the network shows of the account stored at `session_file`.
fn public_profile(
    session_file: &Path,
    stored: &StoredSession,
) -> Result<PublicProfile, EngineError> {
    Ok(PublicProfile {
        name: stored.push_name.clone(),
        about: stored.about.clone(),
        picture: profile::read_picture(session_file, stored.picture_id.as_deref())?,
        blocked: stored.blocked.clone(),
    })
}

/// A QR payload shaped like WhatsApp's: `2@<ref>,<noise public key>,<identity public
/// key>,<adv secret>`, every part base64.
fn qr_code() -> String {
    let mut rng = rand::rng();
    let mut reference = [0u8; 52];
    let mut noise = [0u8; 32];
    let mut identity = [0u8; 32];
    let mut adv = [0u8; 32];
    rng.fill(&mut reference[..]);
    rng.fill(&mut noise[..]);
    rng.fill(&mut identity[..]);
    rng.fill(&mut adv[..]);
    format!(
        "2@{},{},{},{}",
        BASE64.encode(reference),
        BASE64.encode(noise),
        BASE64.encode(identity),
        BASE64.encode(adv)
    )
}

/// A message id shaped like WhatsApp Web's: `3EB0` and 18 upper-case hex digits.
pub fn new_message_id() -> String {
    let mut bytes = [0u8; 9];
    rand::rng().fill(&mut bytes[..]);
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    format!("3EB0{hex}")
}

/// A pair code shaped like WhatsApp's: `ABCD-EFGH`.
fn pair_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    let mut code = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            code.push('-');
        }
        code.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
    }
    code
}

/// A US test number (555) for sessions that pair themselves.
fn random_phone() -> String {
    let digits: u32 = rand::rng().random_range(0..10_000_000);
    format!("1555{digits:07}")
}

/// An inbound text from `number` as the sandbox's inbound route hands it over (tests).
#[cfg(test)]
pub(crate) fn text_from(
    message_id: &str,
    number: &str,
    push_name: Option<&str>,
    text: &str,
) -> SandboxControl {
    let jid = format!("{number}@s.whatsapp.net");
    SandboxControl::Inbound(Box::new(InboundMessage {
        message_id: message_id.into(),
        chat: jid.clone(),
        sender: jid,
        push_name: push_name.map(str::to_owned),
        text: Some(text.into()),
        media: None,
        timestamp: Utc::now(),
        quoted_id: None,
        mentions: Vec::new(),
        typed: Default::default(),
        message_secret: None,
    }))
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    struct Fixture {
        engine: SandboxEngine,
        events: mpsc::UnboundedReceiver<EngineEvent>,
        network: SandboxNetwork,
        dir: tempfile::TempDir,
    }

    fn fixture(config: SandboxConfig) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let network = SandboxNetwork::new(config);
        let (tx, events) = mpsc::unbounded_channel();
        let engine = SandboxEngine::new(
            network.clone(),
            EngineContext::with_sink(
                "i1".into(),
                dir.path().to_owned(),
                Arc::new(move |event| {
                    let _ = tx.send(event);
                }),
            ),
        );
        Fixture {
            engine,
            events,
            network,
            dir,
        }
    }

    impl Fixture {
        /// The next event, or a panic when none comes within an hour of (paused) time.
        async fn next(&mut self) -> EngineEvent {
            tokio::time::timeout(Duration::from_secs(3600), self.events.recv())
                .await
                .expect("an event in time")
                .expect("sink alive")
        }

        fn session_file(&self) -> std::path::PathBuf {
            self.dir.path().join(SESSION_FILE)
        }

        /// Restarts the same session directory with a fresh engine; returns the events
        /// receiver of the dropped one.
        fn reopen(&mut self) -> mpsc::UnboundedReceiver<EngineEvent> {
            let (tx, events) = mpsc::unbounded_channel();
            let old = std::mem::replace(&mut self.events, events);
            self.engine = SandboxEngine::new(
                self.network.clone(),
                EngineContext::with_sink(
                    "i1".into(),
                    self.dir.path().to_owned(),
                    Arc::new(move |event| {
                        let _ = tx.send(event);
                    }),
                ),
            );
            old
        }
    }

    /// A text from 79990001122, with its push name.
    fn inbound(push_name: Option<&str>, text: &str) -> SandboxControl {
        text_from(&new_message_id(), "79990001122", push_name, text)
    }

    #[tokio::test(start_paused = true)]
    async fn qr_codes_rotate_then_exhaust() {
        let mut f = fixture(SandboxConfig::default());
        let started = Instant::now();
        f.engine.start().await.expect("start");
        let mut shown = Vec::new();
        for attempt in 1..=6 {
            match f.next().await {
                EngineEvent::Qr {
                    code,
                    attempt: got,
                    ttl,
                } => {
                    assert_eq!(got, attempt);
                    let expected_ttl = if attempt == 1 { 60 } else { 20 };
                    assert_eq!(ttl, Duration::from_secs(expected_ttl));
                    assert!(code.starts_with("2@"), "{code}");
                    assert_eq!(code.split(',').count(), 4, "{code}");
                    shown.push(started.elapsed());
                }
                other => panic!("expected a QR, got {other:?}"),
            }
        }
        let secs: Vec<u64> = shown.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [0, 60, 80, 100, 120, 140]);
        assert_eq!(f.next().await, EngineEvent::QrExhausted);
        assert_eq!(started.elapsed().as_secs(), 160);
        let err = f
            .engine
            .sandbox(SandboxControl::Scan {
                phone: "15550001111".into(),
            })
            .await;
        assert!(matches!(err, Err(EngineError::InvalidState(_))), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn scan_links_and_persists_then_restart_skips_qr() {
        let mut f = fixture(SandboxConfig::default());
        f.engine.start().await.expect("start");
        assert!(matches!(f.next().await, EngineEvent::Qr { attempt: 1, .. }));
        f.engine
            .sandbox(SandboxControl::Scan {
                phone: "+1 555 000 1111".into(),
            })
            .await
            .expect("scan");
        assert_eq!(
            f.next().await,
            EngineEvent::Connected {
                phone: "15550001111".into(),
                push_name: None
            }
        );
        assert!(f.network.is_registered("15550001111"));
        let stored: serde_json::Value =
            serde_json::from_slice(&std::fs::read(f.session_file()).expect("session file"))
                .expect("json");
        assert_eq!(stored["phone"], "15550001111");
        assert!(stored["pairedAt"].is_string());

        // No more QR codes after the scan.
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(f.events.try_recv().is_err());

        f.engine.stop().await;
        assert!(!f.network.is_registered("15550001111"));
        let _ = f.reopen();
        f.engine.start().await.expect("restart");
        assert_eq!(
            f.next().await,
            EngineEvent::Connected {
                phone: "15550001111".into(),
                push_name: None
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn scan_without_qr_is_refused() {
        let mut f = fixture(SandboxConfig::default());
        let err = f
            .engine
            .sandbox(SandboxControl::Scan {
                phone: "15550001111".into(),
            })
            .await;
        assert_eq!(
            err,
            Err(EngineError::InvalidState("no QR code is showing".into()))
        );
        let err = f
            .engine
            .sandbox(SandboxControl::Scan {
                phone: "not a phone".into(),
            })
            .await;
        assert!(matches!(err, Err(EngineError::InvalidInput(_))), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn autopair_links_after_delay() {
        let mut f = fixture(SandboxConfig {
            autopair: Some(Duration::from_secs(70)),
            ..SandboxConfig::default()
        });
        let started = Instant::now();
        f.engine.start().await.expect("start");
        assert!(matches!(f.next().await, EngineEvent::Qr { attempt: 1, .. }));
        assert!(matches!(f.next().await, EngineEvent::Qr { attempt: 2, .. }));
        match f.next().await {
            EngineEvent::Connected { phone, .. } => {
                assert!(phone.starts_with("1555") && phone.len() == 11, "{phone}");
                assert!(f.network.is_registered(&phone));
            }
            other => panic!("expected connected, got {other:?}"),
        }
        assert_eq!(started.elapsed(), Duration::from_secs(70));
        assert!(f.session_file().exists());
    }

    #[tokio::test(start_paused = true)]
    async fn pair_code_links_after_a_second() {
        let mut f = fixture(SandboxConfig::default());
        f.engine.start().await.expect("start");
        assert!(matches!(f.next().await, EngineEvent::Qr { .. }));
        let started = Instant::now();
        let code = f.engine.pair_code("79001234567").await.expect("code");
        assert_eq!(code.len(), 9);
        assert_eq!(&code[4..5], "-");
        assert!(
            code.chars()
                .all(|c| c == '-' || c.is_ascii_uppercase() || c.is_ascii_digit())
        );
        assert_eq!(
            f.next().await,
            EngineEvent::Connected {
                phone: "79001234567".into(),
                push_name: None
            }
        );
        assert_eq!(started.elapsed(), PAIR_CODE_DELAY);
        let again = f.engine.pair_code("79001234567").await;
        assert!(matches!(again, Err(EngineError::InvalidState(_))));
    }

    async fn connected(f: &mut Fixture) {
        f.engine.start().await.expect("start");
        assert!(matches!(f.next().await, EngineEvent::Qr { .. }));
        f.engine
            .sandbox(SandboxControl::Scan {
                phone: "15550001111".into(),
            })
            .await
            .expect("scan");
        assert!(matches!(f.next().await, EngineEvent::Connected { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn disconnect_fault_comes_back() {
        let mut f = fixture(SandboxConfig::default());
        connected(&mut f).await;
        let started = Instant::now();
        f.engine
            .sandbox(SandboxControl::Fault(FaultKind::Disconnect))
            .await
            .expect("fault");
        assert_eq!(
            f.next().await,
            EngineEvent::Disconnected {
                reason: "sandbox fault: disconnect".into()
            }
        );
        assert!(!f.network.is_registered("15550001111"));
        assert_eq!(
            f.next().await,
            EngineEvent::Reconnecting {
                attempt: 1,
                error: None
            }
        );
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        assert!(matches!(f.next().await, EngineEvent::Connected { .. }));
        assert_eq!(started.elapsed(), Duration::from_millis(400));
        assert!(f.network.is_registered("15550001111"));
    }

    #[tokio::test(start_paused = true)]
    async fn crash_fault_fails_the_session() {
        let mut f = fixture(SandboxConfig::default());
        connected(&mut f).await;
        f.engine
            .sandbox(SandboxControl::Fault(FaultKind::Crash))
            .await
            .expect("fault");
        assert_eq!(
            f.next().await,
            EngineEvent::Failed {
                error: "sandbox fault: crash".into()
            }
        );
        assert!(f.session_file().exists(), "a crash keeps the session");
        // The broken session takes nothing in: an inbound message now would be lost in
        // the failing actor's mailbox, so it is refused instead.
        assert!(!f.network.is_registered("15550001111"));
        let inbound = f.engine.sandbox(inbound(None, "too late")).await;
        assert!(
            matches!(inbound, Err(EngineError::InvalidState(_))),
            "{inbound:?}"
        );
        // A restart resumes the session without a new scan.
        f.reopen();
        f.engine.start().await.expect("restart");
        assert!(matches!(f.next().await, EngineEvent::Connected { .. }));
    }

    /// An inbound message from a sender the address book knows under the same push name
    /// leaves the session file as it is (not even rewritten).
    #[tokio::test(start_paused = true)]
    async fn the_session_file_is_written_only_when_it_changes() {
        use std::os::unix::fs::MetadataExt;
        let mut f = fixture(SandboxConfig::default());
        connected(&mut f).await;
        // Every write replaces the file (a new inode): the inode tells whether it was.
        let inode = |f: &Fixture| std::fs::metadata(f.session_file()).expect("session").ino();
        f.engine
            .sandbox(inbound(Some("Ann"), "hi"))
            .await
            .expect("inbound");
        let written = inode(&f);
        f.engine
            .sandbox(inbound(Some("Ann"), "hi"))
            .await
            .expect("inbound");
        assert_eq!(inode(&f), written, "nothing changed, nothing written");
        f.engine
            .sandbox(inbound(Some("Ann B"), "hi"))
            .await
            .expect("inbound");
        assert_ne!(inode(&f), written, "a new push name is written");
        let stored: serde_json::Value =
            serde_json::from_slice(&std::fs::read(f.session_file()).expect("session"))
                .expect("json");
        assert_eq!(
            stored["contacts"]["79990001122@s.whatsapp.net"]["pushName"],
            "Ann B"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn logout_fault_forgets_the_session() {
        let mut f = fixture(SandboxConfig::default());
        connected(&mut f).await;
        f.engine
            .sandbox(SandboxControl::Fault(FaultKind::Logout))
            .await
            .expect("fault");
        assert_eq!(
            f.next().await,
            EngineEvent::LoggedOut {
                reason: "sandbox fault: logout".into()
            }
        );
        assert!(!f.session_file().exists());
        assert!(!f.network.is_registered("15550001111"));
        let again = f
            .engine
            .sandbox(SandboxControl::Fault(FaultKind::Logout))
            .await;
        assert!(matches!(again, Err(EngineError::InvalidState(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn logout_and_drop_clean_up() {
        let mut f = fixture(SandboxConfig::default());
        connected(&mut f).await;
        f.engine.logout().await.expect("logout");
        assert!(!f.session_file().exists());
        assert!(!f.network.is_registered("15550001111"));

        // A dropped engine stops its QR rotation.
        f.engine.start().await.expect("start");
        assert!(matches!(f.next().await, EngineEvent::Qr { .. }));
        let mut old = f.reopen();
        tokio::time::advance(Duration::from_secs(300)).await;
        tokio::task::yield_now().await;
        // Disconnected (not Empty): the aborted task dropped the last sink.
        assert_eq!(old.try_recv(), Err(mpsc::error::TryRecvError::Disconnected));
    }
}
