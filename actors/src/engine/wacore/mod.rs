//! The real WhatsApp engine: the WhatsApp Web multi-device protocol through the
//! `whatsapp-rust` crate family.
//!
//! One [`Bot`] per running session, built on the instance's own session store (a SQLite
//! file under `data_dir/instances/<id>/`). The library's events are translated in order,
//! inline on its dispatch path, into [`EngineEvent`]s cast to the instance actor's
//! unbounded mailbox: no buffer in between, so no event is ever dropped.
//!
//! Inbound messages take a stricter path, the library's inbound durability hook: a
//! decrypted message is handed to the instance through [`crate::engine::CommitSink`] and
//! acknowledged to WhatsApp only once it is stored. Until then it waits in the session
//! file's own buffer; if the instance or the process dies first, WhatsApp delivers it
//! again at the next login and the library replays it from that buffer.
//!
//! - [`mapping`]: pure translations (addresses, receipts, message content).
//! - [`observe`]: wrappers around the network seams that remember why a connection
//!   attempt failed; the library only logs it.
//! - [`http`]: the library's HTTP seam (version lookup, media) over reqwest.
//!
//! The library reconnects by itself, with Fibonacci backoff, and raises no event when a
//! connection attempt fails. A watchdog per session reads the library's counter of
//! consecutive failures and reports each new one as [`EngineEvent::Reconnecting`] with
//! the remembered error, so users see why nothing happens. It wakes every
//! [`WATCHDOG_PERIOD`] and holds nothing but counters.

mod chats;
mod groups;
pub mod http;
pub mod keys;
pub mod mapping;
pub mod observe;
mod profile;
mod status;

pub use self::http::ReqwestHttpClient;
pub use whatsapp_rust::http::{HttpClient, HttpRequest, HttpResponse};
pub use whatsapp_rust::transport::{Transport, TransportEvent, TransportFactory};

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::features::{ChatStateType, PollVoteCiphertext, PresenceStatus};
use whatsapp_rust::media::{AudioOptions, DocumentOptions, ImageOptions, VideoOptions};
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::store::{SqliteStore, SqliteStoreConfig};
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::upload::UploadOptions;
use whatsapp_rust::wacore::download::MediaType;
use whatsapp_rust::wacore::proto_helpers::MessageExt;
use whatsapp_rust::wacore::store::traits::Backend;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, RevokeType, SendError};

use self::keys::SharedKeys;
use self::mapping::{AttachmentKind, parse_address};
use self::observe::{ObservedHttp, ObservedTransports, Reasons};
use crate::domain::{ChatOp, GroupAnswer, GroupOp, Presence, ProfileAnswer, ProfileOp};
use crate::engine::{
    Engine, EngineContact, EngineContext, EngineError, EngineEvent, InboundCall, InboundChange,
    InboundMedia, InboundMessage, InboundPresence, InboundReaction, InboundVote, MessageRef,
    OutboundContent, PollRef, SendOptions, SentMessage, VoteChoice,
};

/// How often a session's watchdog looks for failed connection attempts.
pub const WATCHDOG_PERIOD: Duration = Duration::from_secs(1);

/// How long the durability hook waits for the instance to store a message before it
/// gives up and leaves it unacknowledged (WhatsApp delivers it again at the next
/// connection; the store is idempotent). Only a wedged instance gets near it.
const COMMIT_WAIT: Duration = Duration::from_secs(120);

/// The most contacts a session remembers from WhatsApp's events (the storage keeps all
/// of them; this is only the engine's own answer to `contacts()`).
const MAX_REMEMBERED_CONTACTS: usize = 10_000;

/// The session store's file name inside the instance's directory.
pub const SESSION_FILE: &str = "whatsapp.db";

/// SQLite's page cache per session store, in KiB (whatsapp-rust's default is 512). At
/// the default the page cache was the largest part of a connected session's memory; a
/// session's store is small and whatsapp-rust keeps what it reads often in caches of its
/// own, so a smaller cache mostly means reads served by the OS's file cache, and
/// thousands of sessions fit in one process (BENCHMARKS.md, S7).
const SESSION_CACHE_KIB: u32 = 64;

/// How the real engine reaches WhatsApp.
#[derive(Clone)]
pub struct WacoreSettings {
    /// The WhatsApp Web version to announce; `None` asks web.whatsapp.com at each
    /// connection.
    pub version: Option<(u32, u32, u32)>,
    /// The WebSocket endpoint; `None` is WhatsApp's own.
    pub ws_url: Option<String>,
    /// Replaces the WebSocket transport entirely (tests drive the client through it).
    pub transport: Option<Arc<dyn TransportFactory>>,
    /// Replaces the HTTP client of the version lookup and media transfers; `None` is a
    /// [`ReqwestHttpClient`] shared by all sessions (tests send media to a local server).
    pub http: Option<Arc<dyn HttpClient>>,
    /// How long a session gets to disconnect cleanly before it is aborted.
    pub shutdown_timeout: Duration,
    /// How long a pair-code request waits for the connection to WhatsApp.
    pub connect_wait: Duration,
}

impl Default for WacoreSettings {
    fn default() -> Self {
        WacoreSettings {
            version: None,
            ws_url: None,
            transport: None,
            http: None,
            shutdown_timeout: Duration::from_secs(5),
            connect_wait: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for WacoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WacoreSettings")
            .field("version", &self.version)
            .field("ws_url", &self.ws_url)
            .field("custom_transport", &self.transport.is_some())
            .field("custom_http", &self.http.is_some())
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("connect_wait", &self.connect_wait)
            .finish()
    }
}

/// Parses a WhatsApp Web version written as `2.3000.1027934701`.
///
/// Fails when it is not three dot-separated numbers.
pub fn parse_version(text: &str) -> Result<(u32, u32, u32), String> {
    let parts: Vec<&str> = text.trim().split('.').collect();
    let number = |s: &str| s.parse::<u32>().ok();
    match parts.as_slice() {
        [a, b, c] => match (number(a), number(b), number(c)) {
            (Some(a), Some(b), Some(c)) => Ok((a, b, c)),
            _ => Err(format!("'{text}' is not a version like 2.3000.1027934701")),
        },
        _ => Err(format!("'{text}' is not a version like 2.3000.1027934701")),
    }
}

/// One instance's real WhatsApp session.
pub struct WacoreEngine {
    settings: Arc<WacoreSettings>,
    /// The settings' HTTP client, or the one all sessions share.
    http: Arc<dyn HttpClient>,
    ctx: EngineContext,
    shared: Arc<Shared>,
    running: Option<Running>,
}

struct Running {
    handle: BotHandle,
    client: Arc<Client>,
    watchdog: tokio::task::JoinHandle<()>,
}

/// What the engine, its event callback and its watchdog share.
struct Shared {
    instance_id: String,
    sink: crate::engine::EventSink,
    /// Set when the engine is being stopped: late events of a dying session are dropped.
    closing: AtomicBool,
    /// Decisions about the connection state are taken and emitted under this lock, so
    /// the callback and the watchdog reach the actor in the order they decided.
    track: Mutex<Track>,
    contacts: Mutex<HashMap<String, EngineContact>>,
    reasons: Arc<Reasons>,
    /// Where inbound messages go, to be stored before WhatsApp is told they arrived.
    commit: crate::engine::CommitSink,
    /// The running session's client, for the event translation (weak: the session
    /// owns it).
    client: Mutex<Weak<Client>>,
    /// The keys are shared by a cluster's nodes: a replaced stream may be this node's
    /// own session resumed elsewhere, never a reason to drop them.
    shared_keys: bool,
}

#[derive(Default)]
struct Track {
    /// Something happened on the connection since the watchdog last looked (a QR, a
    /// login, a drop): a failure counted meanwhile is already explained.
    progressed: bool,
    /// The library's count of consecutive failed attempts when the watchdog last looked.
    failures_seen: u32,
    connected: bool,
    qr_shown: u32,
    /// The account a pairing on this connection linked to, until the login names it.
    paired_as: Option<String>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain counters behind: keep going.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn emit(&self, event: EngineEvent) {
        if !self.closing.load(Ordering::Acquire) {
            (self.sink)(event);
        }
    }

    /// Keeps `contact` for [`Engine::contacts`], up to [`MAX_REMEMBERED_CONTACTS`].
    fn keep_contact(&self, contact: &EngineContact) {
        let mut contacts = lock(&self.contacts);
        if contacts.len() < MAX_REMEMBERED_CONTACTS || contacts.contains_key(&contact.jid) {
            contacts.insert(contact.jid.clone(), contact.clone());
        }
    }

    /// A contact WhatsApp told us about: kept, and passed on to the instance.
    fn remember_contact(&self, contact: EngineContact) {
        self.keep_contact(&contact);
        self.emit(EngineEvent::Contact(contact));
    }

    /// Translates one library event. Runs inline on the library's event dispatch, in
    /// order, so it only translates and casts (the instance's mailbox is unbounded):
    /// nothing is buffered here, so nothing is dropped.
    fn on_event(self: &Arc<Self>, event: &Event) {
        let Some(client) = lock(&self.client).upgrade() else {
            return;
        };
        let client = &client;
        match event {
            Event::PairingQrCode(qr) => {
                let mut track = lock(&self.track);
                track.progressed = true;
                track.qr_shown += 1;
                self.emit(EngineEvent::Qr {
                    code: qr.code.clone(),
                    attempt: track.qr_shown,
                    ttl: qr.timeout,
                });
            }
            Event::PairingQrCodesExhausted(_) => self.emit(EngineEvent::QrExhausted),
            Event::PairSuccess(pair) => {
                // Linked, not yet logged in: WhatsApp restarts the stream and the device
                // logs in on a new connection. Only `Connected` says it can send.
                let mut track = lock(&self.track);
                track.progressed = true;
                track.paired_as = Some(pair.id.user.to_string());
            }
            Event::Connected(_) => {
                // Logged in and past the critical app-state sync: sends go out now.
                let mut track = lock(&self.track);
                track.progressed = true;
                if !track.connected {
                    track.connected = true;
                    let phone = client
                        .pn()
                        .map(|jid| jid.user.to_string())
                        .or_else(|| track.paired_as.clone())
                        .unwrap_or_default();
                    let push_name = Some(client.push_name()).filter(|n| !n.is_empty());
                    self.emit(EngineEvent::Connected { phone, push_name });
                }
            }
            Event::Disconnected(gone) => {
                let reason = gone.reason.to_string();
                self.reasons.set(format!("connection lost: {reason}"));
                let mut track = lock(&self.track);
                track.progressed = true;
                track.connected = false;
                track.qr_shown = 0;
                self.emit(EngineEvent::Disconnected {
                    reason: reason.clone(),
                });
                self.emit(EngineEvent::Reconnecting {
                    attempt: client.stats().reconnect_errors.saturating_add(1),
                    error: Some(reason),
                });
            }
            Event::LoggedOut(out) => {
                lock(&self.track).connected = false;
                self.emit(EngineEvent::LoggedOut {
                    reason: format!("logged out by WhatsApp ({:?})", out.reason),
                });
            }
            // In a cluster another node may have taken the instance over while this one
            // still ran it: the session is not ended (its keys are the other node's now),
            // the instance fails and is restarted, by which time the lease manager has
            // stopped it here if the lease went away.
            Event::StreamReplaced(_) if self.shared_keys => {
                lock(&self.track).connected = false;
                self.emit(EngineEvent::Failed {
                    error: "another client took over this session (stream replaced); its \
                            keys are kept"
                        .into(),
                });
            }
            Event::StreamReplaced(_) => {
                lock(&self.track).connected = false;
                self.emit(EngineEvent::LoggedOut {
                    reason: "another client took over this session (stream replaced)".into(),
                });
            }
            Event::ClientOutdated(_) => self.reasons.set(
                "WhatsApp refused this client version as outdated: set WACORE_CLIENT_VERSION \
                 to the current WhatsApp Web version, or leave it empty to look it up"
                    .into(),
            ),
            Event::TemporaryBan(ban) => self.reasons.set(format!(
                "WhatsApp banned this number temporarily ({:?}) for {} s",
                ban.code,
                ban.expire.num_seconds()
            )),
            Event::ConnectFailure(failure) => self.reasons.set(format!(
                "WhatsApp refused the connection ({:?}{})",
                failure.reason,
                failure
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )),
            // Stored through the durability hook ([`Durable`]) before WhatsApp heard of
            // them: nothing left to do.
            Event::Messages(batch) if batch.hook_committed => {}
            Event::Messages(batch) => {
                // What bypasses the hook (channel posts, messages recovered from the
                // phone): translated off the dispatch path, attachments downloaded.
                let shared = self.clone();
                let client = client.clone();
                let batch = batch.messages.clone();
                tokio::spawn(async move {
                    for item in batch.iter() {
                        if let Some(event) = shared.translate(&client, item).await {
                            shared.emit(event);
                        }
                    }
                });
            }
            Event::Receipt(receipt) => {
                if let Some(status) = mapping::receipt_status(&receipt.r#type) {
                    let (chat, _) = mapping::chat_and_sender(&receipt.source);
                    self.emit(EngineEvent::Receipt {
                        chat,
                        message_ids: receipt
                            .message_ids
                            .iter()
                            .map(|id| id.to_string())
                            .collect(),
                        status,
                    });
                }
            }
            Event::ContactUpdated(update) if update.jid.is_pn() => {
                self.remember_contact(EngineContact {
                    jid: update.jid.to_non_ad_string(),
                    name: None,
                    push_name: None,
                });
            }
            Event::Presence(update) => self.emit(EngineEvent::Presence(InboundPresence {
                chat: mapping::phone_form(&update.from, None),
                sender: mapping::phone_form(&update.from, None),
                presence: if update.unavailable {
                    Presence::Unavailable
                } else {
                    Presence::Available
                },
                last_seen: update.last_seen,
            })),
            Event::GroupUpdate(update) => {
                if let Some(update) = groups::update_of(update) {
                    self.emit(EngineEvent::Group(update));
                }
            }
            Event::IncomingCall(call) => {
                if let Some(call) = mapping::incoming_call(call) {
                    self.emit(EngineEvent::Call(call));
                }
            }
            Event::ChatPresence(update) => {
                let (chat, sender) = mapping::chat_and_sender(&update.source);
                self.emit(EngineEvent::Presence(InboundPresence {
                    chat,
                    sender,
                    presence: mapping::chat_state(update.state, update.media),
                    last_seen: None,
                }));
            }
            Event::PushNameUpdate(update) => {
                let jid =
                    mapping::phone_form(&update.jid, update.message.source.sender_alt.as_ref());
                self.remember_contact(EngineContact {
                    jid,
                    name: None,
                    push_name: Some(update.new_push_name.clone()).filter(|n| !n.is_empty()),
                });
            }
            other => {
                if let Some(op) = chats::sync_of(other) {
                    self.emit(EngineEvent::ChatSync(op));
                }
            }
        }
    }

    /// The event of one message: [`EngineEvent::Message`], or
    /// [`EngineEvent::SentByPhone`] for the account's own messages written on its
    /// phone. `None` for messages with nothing a user reads.
    async fn translate(
        &self,
        client: &Arc<Client>,
        item: &whatsapp_rust::wacore::types::events::InboundMessage,
    ) -> Option<EngineEvent> {
        if let Some((poll_id, payload, iv)) = mapping::vote(&item.message) {
            let (chat, voter) = mapping::chat_and_sender(&item.info.source);
            return Some(EngineEvent::Vote(InboundVote {
                chat,
                voter,
                from_me: item.info.source.is_from_me,
                poll_id,
                choice: VoteChoice::Sealed { payload, iv },
                timestamp: item.info.timestamp,
            }));
        }
        if let Some((target_id, change)) = mapping::change(&item.message) {
            let (chat, sender) = mapping::chat_and_sender(&item.info.source);
            return Some(EngineEvent::Change(InboundChange {
                chat,
                sender,
                from_me: item.info.source.is_from_me,
                target_id,
                change,
                timestamp: item.info.timestamp,
            }));
        }
        if let Some((target_id, emoji)) = mapping::reaction(&item.message) {
            let (chat, sender) = mapping::chat_and_sender(&item.info.source);
            return Some(EngineEvent::Reaction(InboundReaction {
                chat,
                sender,
                from_me: item.info.source.is_from_me,
                target_id,
                emoji,
                timestamp: item.info.timestamp,
            }));
        }
        let message = self.inbound(client, &item.message, &item.info).await?;
        Some(if item.info.source.is_from_me {
            EngineEvent::SentByPhone(message)
        } else {
            EngineEvent::Message(message)
        })
    }

    /// Builds the gateway's view of an inbound message, downloading its attachment.
    /// A failed download keeps the message (text, caption) and logs why.
    async fn inbound(
        &self,
        client: &Arc<Client>,
        message: &whatsapp_rust::waproto::whatsapp::Message,
        info: &whatsapp_rust::wacore::types::message::MessageInfo,
    ) -> Option<InboundMessage> {
        let typed = mapping::typed(message);
        let (text, attachment) = match (mapping::content(message), &typed) {
            (Some(content), _) => content,
            (None, Some(_)) => (None, None),
            (None, None) => return None,
        };
        let (typed, message_secret) = typed.unwrap_or_default();
        let (chat, sender) = mapping::chat_and_sender(&info.source);
        let media = match attachment {
            Some(attachment) => match download(client, message, attachment.kind).await {
                Ok(bytes) => Some(InboundMedia {
                    bytes: bytes.into(),
                    mime_type: attachment.mime_type,
                    file_name: attachment.file_name,
                }),
                Err(err) => {
                    tracing::warn!(instance = %self.instance_id, message = %info.id, %err,
                        "cannot download an inbound attachment");
                    None
                }
            },
            None => None,
        };
        let (quoted_id, mentions) = mapping::references(message);
        Some(InboundMessage {
            message_id: info.id.to_string(),
            chat,
            sender,
            push_name: Some(info.push_name.clone()).filter(|n| !n.is_empty()),
            text,
            media,
            timestamp: info.timestamp,
            quoted_id,
            mentions,
            typed,
            message_secret,
        })
    }

    /// Reports a failed connection attempt the library counted but did not announce.
    fn check_failures(&self, client: &Client) {
        let stats = client.stats();
        let failures = stats.reconnect_errors;
        let mut track = lock(&self.track);
        let progressed = std::mem::take(&mut track.progressed);
        let new_failure = failures > track.failures_seen;
        track.failures_seen = failures;
        if new_failure && !progressed && !client.is_connected() {
            let error = self.reasons.take().unwrap_or_else(|| {
                "WhatsApp did not answer (no connection could be established)".into()
            });
            self.emit(EngineEvent::Reconnecting {
                attempt: failures,
                error: Some(error),
            });
        }
    }
}

/// The library's events, translated inline on its dispatch path.
struct Events {
    shared: Arc<Shared>,
}

impl whatsapp_rust::types::events::EventHandler for Events {
    fn handle_event(&self, event: Arc<Event>) {
        self.shared.on_event(&event);
    }
}

/// The library's inbound durability hook: a decrypted message is acknowledged to
/// WhatsApp only once the instance stored it. If the instance cannot (it stopped, its
/// storage failed, the process died), the message stays in the session's own buffer
/// unacknowledged and WhatsApp delivers it again at the next connection.
struct Durable {
    shared: Arc<Shared>,
}

#[async_trait]
impl whatsapp_rust::InboundDurabilityHook for Durable {
    async fn on_messages(
        &self,
        client: Arc<Client>,
        batch: &[whatsapp_rust::wacore::types::events::InboundMessage],
    ) -> whatsapp_rust::anyhow::Result<()> {
        for item in batch {
            let Some(event) = self.shared.translate(&client, item).await else {
                continue;
            };
            if self.shared.closing.load(Ordering::Acquire) {
                whatsapp_rust::anyhow::bail!("the session is stopping");
            }
            match tokio::time::timeout(COMMIT_WAIT, (self.shared.commit)(event)).await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => whatsapp_rust::anyhow::bail!("{why}"),
                Err(_) => whatsapp_rust::anyhow::bail!(
                    "the instance did not store message {} within {COMMIT_WAIT:?}",
                    item.info.id
                ),
            }
        }
        Ok(())
    }
}

async fn download(
    client: &Arc<Client>,
    message: &whatsapp_rust::waproto::whatsapp::Message,
    kind: AttachmentKind,
) -> Result<Vec<u8>, String> {
    use whatsapp_rust::wacore::proto_helpers::MessageExt;
    let base = message.get_base_message();
    let missing = || "the attachment vanished from the message".to_owned();
    let result = match kind {
        AttachmentKind::Image => {
            client
                .download(base.image_message.as_option().ok_or_else(missing)?)
                .await
        }
        AttachmentKind::Video => {
            client
                .download(base.video_message.as_option().ok_or_else(missing)?)
                .await
        }
        AttachmentKind::Audio => {
            client
                .download(base.audio_message.as_option().ok_or_else(missing)?)
                .await
        }
        AttachmentKind::Document => {
            client
                .download(base.document_message.as_option().ok_or_else(missing)?)
                .await
        }
        AttachmentKind::Sticker => {
            client
                .download(base.sticker_message.as_option().ok_or_else(missing)?)
                .await
        }
    };
    result.map_err(|e| e.to_string())
}

impl WacoreEngine {
    pub fn new(settings: Arc<WacoreSettings>, ctx: EngineContext) -> Self {
        let shared = Arc::new(Shared {
            instance_id: ctx.instance_id.clone(),
            sink: ctx.sink.clone(),
            closing: AtomicBool::new(false),
            track: Mutex::new(Track::default()),
            contacts: Mutex::new(HashMap::new()),
            reasons: Arc::new(Reasons::default()),
            commit: ctx.commit.clone(),
            client: Mutex::new(Weak::new()),
            shared_keys: ctx.keys.is_some(),
        });
        let http = settings.http.clone().unwrap_or_else(shared_http);
        WacoreEngine {
            settings,
            http,
            ctx,
            shared,
            running: None,
        }
    }

    /// The client, once it is logged in; `InvalidState` before.
    fn logged_in(&self) -> Result<Arc<Client>, EngineError> {
        let client = self.client()?.clone();
        if !client.is_logged_in() {
            return Err(EngineError::InvalidState(
                "the session is not logged in".into(),
            ));
        }
        Ok(client)
    }

    fn client(&self) -> Result<&Arc<Client>, EngineError> {
        self.running
            .as_ref()
            .map(|r| &r.client)
            .ok_or_else(|| EngineError::InvalidState("the session is not running".into()))
    }

    async fn build_bot(&self) -> Result<Bot, EngineError> {
        let store: Arc<dyn Backend> = match &self.ctx.keys {
            Some(vault) => Arc::new(
                SharedKeys::open(vault.clone(), &self.ctx.instance_id)
                    .await
                    .map_err(|e| EngineError::Io(format!("cannot read the shared session: {e}")))?,
            ),
            None => Arc::new(open_store(&self.ctx.session_dir).await?),
        };
        let inner: Arc<dyn TransportFactory> =
            match (&self.settings.transport, &self.settings.ws_url) {
                (Some(custom), _) => custom.clone(),
                (None, Some(url)) => Arc::new(TokioWebSocketTransportFactory::new().with_url(url)),
                (None, None) => Arc::new(TokioWebSocketTransportFactory::new()),
            };
        let reasons = self.shared.reasons.clone();
        let shared = self.shared.clone();
        let mut builder = Bot::builder()
            .with_backend_arc(store)
            .with_transport_factory(ObservedTransports::new(inner, reasons.clone()))
            .with_http_client(ObservedHttp::new(self.http.clone(), reasons))
            .with_event_handler(Events {
                shared: shared.clone(),
            })
            .with_inbound_durability_hook(Durable { shared });
        if let Some(version) = self.settings.version {
            builder = builder.with_version(version);
        }
        builder
            .build()
            .await
            .map_err(|e| EngineError::Io(format!("cannot open the WhatsApp session: {e}")))
    }
}

/// One HTTP client (one connection pool) for every session of the process.
fn shared_http() -> Arc<dyn HttpClient> {
    static SHARED: OnceLock<Arc<ReqwestHttpClient>> = OnceLock::new();
    SHARED
        .get_or_init(|| Arc::new(ReqwestHttpClient::new()))
        .clone()
}

async fn open_store(dir: &Path) -> Result<SqliteStore, EngineError> {
    tokio::fs::create_dir_all(dir).await?;
    let path = dir.join(SESSION_FILE);
    let url = path
        .to_str()
        .ok_or_else(|| EngineError::Io(format!("{} is not valid UTF-8", path.display())))?;
    let config = SqliteStoreConfig {
        cache_size_kib: SESSION_CACHE_KIB,
        ..SqliteStoreConfig::default()
    };
    SqliteStore::with_config(url, config)
        .await
        .map_err(|e| EngineError::Io(format!("cannot open {}: {e}", path.display())))
}

/// The account's own address (phone form), the author of its messages.
fn own_address(client: &Client) -> String {
    client
        .pn()
        .map(|jid| jid.to_non_ad_string())
        .unwrap_or_default()
}

/// The length of a poll's secret, as WhatsApp Web makes it.
const POLL_SECRET_LEN: usize = 32;

/// What the seam reports of a message WhatsApp took (without a secret to keep).
fn sent_message(sent: &whatsapp_rust::SendResult) -> SentMessage {
    SentMessage {
        message_id: sent.message_id.to_string(),
        timestamp: chrono::Utc::now(),
        message_secret: None,
    }
}

fn send_error(err: SendError) -> EngineError {
    match err {
        SendError::NotLoggedIn => EngineError::InvalidState("the session is not logged in".into()),
        SendError::InvalidRequest(why) => EngineError::InvalidInput(why),
        other => EngineError::Unavailable(format!("WhatsApp did not take the message: {other}")),
    }
}

#[async_trait]
impl Engine for WacoreEngine {
    async fn start(&mut self) -> Result<(), EngineError> {
        if self.running.is_some() {
            return Ok(());
        }
        self.shared.closing.store(false, Ordering::Release);
        *lock(&self.shared.track) = Track::default();
        let bot = self.build_bot().await?;
        *lock(&self.shared.client) = Arc::downgrade(&bot.client());
        let handle = bot.spawn();
        let client = handle.client();
        let watchdog = {
            let shared = self.shared.clone();
            let client = Arc::downgrade(&client);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(WATCHDOG_PERIOD);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(client) = client.upgrade() else {
                        break;
                    };
                    shared.check_failures(&client);
                }
            })
        };
        self.running = Some(Running {
            handle,
            client,
            watchdog,
        });
        Ok(())
    }

    async fn stop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        let Some(running) = self.running.take() else {
            return;
        };
        let Running {
            mut handle,
            client,
            watchdog,
        } = running;
        watchdog.abort();
        // A clean disconnect flushes the session's keys; it can wait for a connection
        // attempt in progress (up to the library's own 20 s timeout): bound it, then abort.
        let graceful = async {
            client.disconnect().await;
            (&mut handle).await;
        };
        if tokio::time::timeout(self.settings.shutdown_timeout, graceful)
            .await
            .is_err()
        {
            tracing::warn!(instance = %self.ctx.instance_id, "the WhatsApp session did not stop in time: aborted");
            handle.abort();
        }
    }

    async fn logout(&mut self) -> Result<(), EngineError> {
        if let Some(running) = &self.running {
            // Best effort: tells WhatsApp to unlink this device when connected.
            self.shared.closing.store(true, Ordering::Release);
            let client = running.client.clone();
            if tokio::time::timeout(self.settings.shutdown_timeout, client.logout())
                .await
                .is_err()
            {
                tracing::warn!(instance = %self.ctx.instance_id, "WhatsApp did not confirm the logout in time");
            }
        }
        self.stop().await;
        Ok(())
    }

    async fn pair_code(&mut self, phone: &str) -> Result<String, EngineError> {
        let client = self.client()?.clone();
        if client.is_logged_in() {
            return Err(EngineError::InvalidState(
                "the session is already linked".into(),
            ));
        }
        client
            .wait_for_socket(self.settings.connect_wait)
            .await
            .map_err(|e| EngineError::Unavailable(format!("WhatsApp cannot be reached: {e}")))?;
        client
            .pair_with_code(PairCodeOptions {
                phone_number: phone.to_owned(),
                ..Default::default()
            })
            .await
            .map_err(|e| EngineError::Unavailable(format!("WhatsApp refused the pair code: {e}")))
    }

    async fn send(
        &mut self,
        to: &str,
        content: &OutboundContent,
        options: &SendOptions,
    ) -> Result<SentMessage, EngineError> {
        let to = parse_address(to)?;
        let client = self.logged_in()?;
        if let Some(post) = &options.status {
            return status::post(&client, content, post).await;
        }
        let context = mapping::outbound_context(options, &own_address(&client));
        let mut send_options = whatsapp_rust::send::SendOptions::default();
        if let Some(id) = &options.message_id {
            send_options = send_options.with_message_id(id.clone());
        }
        if matches!(
            to.server,
            whatsapp_rust::Server::Pn | whatsapp_rust::Server::Lid
        ) {
            // WhatsApp takes a message for a number without devices and delivers it to
            // no one: ask first (the device list is cached after the first send).
            let devices = client
                .signal()
                .get_user_devices(std::slice::from_ref(&to))
                .await
                .map_err(|e| {
                    EngineError::Unavailable(format!(
                        "WhatsApp did not list the recipient's devices: {e}"
                    ))
                })?;
            if devices.is_empty() {
                return Err(EngineError::NotOnWhatsApp(to.to_non_ad_string()));
            }
        }
        let mut poll_secret = None;
        let sent = match content {
            OutboundContent::Typed(typed) => {
                // A poll's secret is made here, not by the library's poll feature, so
                // the poll goes under the id asked for (a queued send's) like any other
                // message; the secret is kept with the message to open its votes.
                if typed.poll.is_some() {
                    let mut secret = vec![0u8; POLL_SECRET_LEN];
                    rand::Rng::fill(&mut rand::rng(), &mut secret[..]);
                    poll_secret = Some(secret);
                }
                let secret = poll_secret.as_deref().unwrap_or_default();
                let Some(mut message) = mapping::outbound_typed(typed, secret) else {
                    return Err(EngineError::InvalidInput("nothing to send".into()));
                };
                if let Some(context) = context {
                    message.set_context_info(context);
                }
                client
                    .send_message_with_options(to, message, send_options)
                    .await
            }
            OutboundContent::Text(text) => {
                let message = match context {
                    None => {
                        use whatsapp_rust::wacore::proto_helpers::MessageBuilderExt;
                        wa::Message::text(text.clone())
                    }
                    Some(context) => {
                        let mut message = wa::Message {
                            conversation: Some(text.clone()),
                            ..Default::default()
                        };
                        message.set_context_info(context);
                        message
                    }
                };
                client
                    .send_message_with_options(to, message, send_options)
                    .await
            }
            OutboundContent::Media {
                bytes,
                mime_type,
                file_name,
                caption,
                ..
            } => {
                let kind = mapping::upload_kind(mime_type);
                let upload = client
                    .upload(bytes.to_vec(), kind, UploadOptions::default())
                    .await
                    .map_err(|e| {
                        EngineError::Unavailable(format!("the upload to WhatsApp failed: {e}"))
                    })?;
                let mimetype = Some(mime_type.clone());
                let message = match kind {
                    MediaType::Image => whatsapp_rust::media::image_message(
                        upload,
                        ImageOptions {
                            caption: caption.clone(),
                            mimetype,
                            ..Default::default()
                        },
                    ),
                    MediaType::Video => whatsapp_rust::media::video_message(
                        upload,
                        VideoOptions {
                            caption: caption.clone(),
                            mimetype,
                            ..Default::default()
                        },
                    ),
                    MediaType::Audio => whatsapp_rust::media::audio_message(
                        upload,
                        AudioOptions {
                            mimetype,
                            ..Default::default()
                        },
                    ),
                    _ => whatsapp_rust::media::document_message(
                        upload,
                        DocumentOptions {
                            mimetype,
                            file_name: file_name.clone(),
                            caption: caption.clone(),
                            ..Default::default()
                        },
                    ),
                };
                let mut message = message;
                if let Some(context) = context {
                    message.set_context_info(context);
                }
                client
                    .send_message_with_options(to, message, send_options)
                    .await
            }
        }
        .map_err(send_error)?;
        Ok(SentMessage {
            message_secret: poll_secret,
            ..sent_message(&sent)
        })
    }

    async fn react(
        &mut self,
        chat: &str,
        target: &MessageRef,
        emoji: &str,
    ) -> Result<SentMessage, EngineError> {
        let chat = parse_address(chat)?;
        let client = self.logged_in()?;
        let key = mapping::target_key(&chat, target, &own_address(&client));
        let sent = client
            .send_reaction(chat, key, emoji)
            .await
            .map_err(send_error)?;
        Ok(sent_message(&sent))
    }

    async fn open_vote(
        &mut self,
        poll: &PollRef,
        voter: &str,
        payload: &[u8],
        iv: &[u8],
    ) -> Result<Vec<String>, EngineError> {
        let client = self.logged_in()?;
        let creator = parse_address(&poll.creator)?;
        let voter = parse_address(voter)?;
        let chosen = client
            .polls()
            .decrypt_vote(
                PollVoteCiphertext {
                    enc_payload: payload,
                    enc_iv: iv,
                },
                &poll.secret,
                &poll.message_id,
                &creator,
                &voter,
            )
            .await
            .map_err(|e| EngineError::InvalidInput(format!("the vote cannot be opened: {e}")))?;
        Ok(poll
            .options
            .iter()
            .filter(|name| {
                let hash = whatsapp_rust::wacore::poll::compute_option_hash(name);
                chosen.iter().any(|c| c.as_slice() == hash.as_slice())
            })
            .cloned()
            .collect())
    }

    async fn edit(
        &mut self,
        chat: &str,
        target: &MessageRef,
        text: &str,
    ) -> Result<SentMessage, EngineError> {
        let chat = parse_address(chat)?;
        let client = self.logged_in()?;
        let content = wa::Message {
            conversation: Some(text.to_owned()),
            ..Default::default()
        };
        client
            .edit_message(chat, target.message_id.clone(), content)
            .await
            .map_err(send_error)?;
        Ok(SentMessage {
            message_id: target.message_id.clone(),
            timestamp: chrono::Utc::now(),
            message_secret: None,
        })
    }

    async fn revoke(
        &mut self,
        chat: &str,
        target: &MessageRef,
    ) -> Result<SentMessage, EngineError> {
        let chat = parse_address(chat)?;
        let client = self.logged_in()?;
        client
            .revoke_message(chat, target.message_id.clone(), RevokeType::Sender)
            .await
            .map_err(send_error)?;
        Ok(SentMessage {
            message_id: target.message_id.clone(),
            timestamp: chrono::Utc::now(),
            message_secret: None,
        })
    }

    async fn group(&mut self, op: GroupOp) -> Result<GroupAnswer, EngineError> {
        let client = self.logged_in()?;
        groups::run(&client, op).await
    }

    async fn profile(&mut self, op: ProfileOp) -> Result<ProfileAnswer, EngineError> {
        let client = self.logged_in()?;
        profile::run(&client, op).await
    }

    async fn chat(&mut self, op: &ChatOp) -> Result<(), EngineError> {
        let client = self.logged_in()?;
        chats::run(&client, op).await
    }

    async fn reject_call(&mut self, call: &InboundCall) -> Result<(), EngineError> {
        let peer = parse_address(&call.peer)?;
        let creator = parse_address(&call.creator)?;
        let client = self.logged_in()?;
        client
            .voip()
            .reject_call(&call.call_id, &peer, &creator)
            .await
            .map_err(|e| EngineError::Unavailable(format!("cannot reject the call: {e}")))
    }

    async fn set_presence(&mut self, presence: Presence) -> Result<(), EngineError> {
        let status = match presence {
            Presence::Available => PresenceStatus::Available,
            Presence::Unavailable => PresenceStatus::Unavailable,
            _ => {
                return Err(EngineError::InvalidInput(
                    "a presence is available or unavailable".into(),
                ));
            }
        };
        let client = self.logged_in()?;
        client.presence().set(status).await.map_err(|e| match e {
            whatsapp_rust::features::PresenceError::PushNameEmpty => EngineError::InvalidState(
                "WhatsApp has not told the account's name yet; presence needs it".into(),
            ),
            other => EngineError::Unavailable(format!("cannot send the presence: {other}")),
        })
    }

    async fn chat_state(&mut self, chat: &str, state: Presence) -> Result<(), EngineError> {
        let state = match state {
            Presence::Composing => ChatStateType::Composing,
            Presence::Recording => ChatStateType::Recording,
            Presence::Paused => ChatStateType::Paused,
            _ => {
                return Err(EngineError::InvalidInput(
                    "a chat state is composing, recording or paused".into(),
                ));
            }
        };
        let chat = parse_address(chat)?;
        let client = self.logged_in()?;
        client
            .chatstate()
            .send(&chat, state)
            .await
            .map_err(|e| EngineError::Unavailable(format!("cannot send the chat state: {e}")))
    }

    async fn subscribe_presence(&mut self, jid: &str) -> Result<(), EngineError> {
        let jid = parse_address(jid)?;
        let client = self.logged_in()?;
        client
            .presence()
            .subscribe(jid)
            .await
            .map_err(|e| EngineError::Unavailable(format!("cannot subscribe to the presence: {e}")))
    }

    async fn mark_read(&mut self, chat: &str, message_ids: &[String]) -> Result<(), EngineError> {
        let chat = parse_address(chat)?;
        let client = self.client()?.clone();
        let ids: Vec<&str> = message_ids.iter().map(String::as_str).collect();
        client
            .mark_as_read(&chat, None, &ids)
            .await
            .map_err(|e| EngineError::Unavailable(format!("cannot send the read receipt: {e}")))
    }

    async fn contacts(&mut self) -> Result<Vec<EngineContact>, EngineError> {
        let mut contacts: Vec<EngineContact> =
            lock(&self.shared.contacts).values().cloned().collect();
        contacts.sort_by(|a, b| a.jid.cmp(&b.jid));
        Ok(contacts)
    }

    async fn add_contact(&mut self, jid: &str, name: Option<&str>) -> Result<bool, EngineError> {
        let address = parse_address(jid)?;
        let client = self.client()?.clone();
        if !client.is_logged_in() {
            return Err(EngineError::InvalidState(
                "the session is not logged in".into(),
            ));
        }
        let found = client
            .contacts()
            .is_on_whatsapp(std::slice::from_ref(&address))
            .await
            .map_err(|e| {
                EngineError::Unavailable(format!("WhatsApp did not answer the number check: {e}"))
            })?;
        let registered = found.iter().any(|r| r.is_registered);
        if registered {
            self.shared.keep_contact(&EngineContact {
                jid: address.to_non_ad_string(),
                name: name.map(str::to_owned),
                push_name: None,
            });
        }
        Ok(registered)
    }
}

impl Drop for WacoreEngine {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.watchdog.abort();
            // Dropping the handle aborts the session task.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions_parse() {
        assert_eq!(
            parse_version("2.3000.1027934701"),
            Ok((2, 3000, 1027934701))
        );
        assert!(parse_version("2.3000").is_err());
        assert!(parse_version("a.b.c").is_err());
        assert!(parse_version("").is_err());
    }
}
