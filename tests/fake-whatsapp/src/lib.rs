//! WhatsApp's servers and phones, in process, for the unmodified whatsapp-rust client.
//!
//! [`FakeWhatsApp`] is a [`TransportFactory`]: every connection the client opens leads to
//! a server task that speaks the real protocol: the Noise handshakes (XX for new devices,
//! IK for registered ones), QR pairing signed by a phone, the IQs the client waits on after
//! login, a key directory, and message and receipt routing to scripted phones ([`Peer`]s).
//! All cryptography is the library's own: wacore's Noise state machine, its Signal
//! sessions (each peer is an unconnected whatsapp-rust client on the in-memory store), its
//! ADV signature checks and its media encryption.
//!
//! It also keeps groups (phone-number addressed, see `groups.rs`): the `w:g2` IQs,
//! `w:gp2` notifications to the members' devices, and sender-key group messages that the
//! members' phones decrypt. What it does not do is anything else the library does not
//! need: app-state contents (every collection is empty), communities, LID-addressed
//! groups, history sync. An IQ it does not know is answered `<error code="501"/>` and
//! counted ([`FakeWhatsApp::unknown_iqs`]), so a test notices when the client starts
//! asking for something new.
//!
//! # Using it
//!
//! - Give the client [`FakeWhatsApp::factory`] as its transport and, for media,
//!   [`FakeWhatsApp::http_client`] around any HTTP client.
//! - A new device shows QR codes (`REF-<connection>-<n>` refs); [`FakeWhatsApp::scan`]
//!   with the code and a phone number links it to that account. The device logs in again
//!   right away and is [`FakeWhatsApp::online`] once it left passive mode.
//! - [`FakeWhatsApp::user`] makes another WhatsApp user; [`FakeWhatsApp::phone`] is an
//!   account's own phone. A [`Peer`] reads what the device sends
//!   ([`Peer::next_message`], [`Peer::download`]), sends texts and images to it and
//!   receipts ([`Peer::next_receipt`], [`Peer::send_receipt`]).
//! - [`FakeWhatsApp::create_group`] makes a group from a user's phone;
//!   [`FakeWhatsApp::group`] shows a group as the server holds it; a peer in it writes
//!   with [`Peer::send_group_text`] and reads the group's messages with
//!   [`Peer::next_message`] ([`ReceivedMessage::group`]).
//! - [`FakeWhatsApp::wait_until`] waits on the server's state without polling;
//!   [`FakeWhatsApp::stanzas`], [`FakeWhatsApp::removed_devices`] and
//!   [`FakeWhatsApp::handshakes`] tell what the client did.
//! - For a client in another process, [`FakeWhatsApp::serve_unix`] serves on a Unix
//!   socket and [`UnixTransports`] is that client's transport factory.
//!
//! The client checks the server's certificate chain; the fake's is zero-signed, which
//! only whatsapp-rust's `danger-skip-cert-chain-verify` feature accepts. This crate enables
//! it and is only ever a dev-dependency, so the shipped binary never has it.

mod calls;
mod conn;
mod groups;
mod handshake;
mod media;
mod peer;
mod presence;
mod profile;
mod server;
mod socket;
mod wire;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use whatsapp_rust::http::HttpClient;
use whatsapp_rust::transport::{Transport, TransportEvent, TransportFactory};
use whatsapp_rust::wacore_binary::node::Node;
use whatsapp_rust::{anyhow, async_channel, async_trait};

pub use calls::RejectedCall;
pub use groups::{Group, Role};
pub use handshake::Pattern;
pub use peer::{Peer, ReceivedMessage, ReceivedPresence, ReceivedReceipt};
pub use server::MEDIA_HOST;
pub use socket::UnixTransports;
/// WhatsApp's addresses, as the fake's answers name users, devices and groups.
pub use whatsapp_rust::Jid;
/// WhatsApp's message protobufs, for tests that build or inspect what peers exchange.
pub use whatsapp_rust::buffa::MessageField;
pub use whatsapp_rust::waproto::whatsapp as wa;

use crate::conn::ClientSide;
use crate::media::{MediaRoute, MediaServer};
use crate::server::{Command, Inner};
use crate::wire::ToClient;

/// How WhatsApp ends a connection, on the test's command.
#[derive(Debug, Clone, Copy)]
pub enum Ending {
    /// `<stream:error code="…">`: 401 unlinks the device, 515 restarts the stream.
    StreamError(u16),
    /// `<stream:error><conflict type="replaced"/>`: another client took the session.
    Replaced,
    /// The socket drops without a word.
    Drop,
    /// `<stream:error code="401"><conflict type="device_removed"/>`: the phone unlinked
    /// the device.
    DeviceRemoved,
}

/// What an account told WhatsApp about itself ([`FakeWhatsApp::profile`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountProfile {
    pub push_name: Option<String>,
    pub about: Option<String>,
    pub picture: Option<Vec<u8>>,
    /// The addresses it blocks, as its client named them (`…@lid`).
    pub blocked: Vec<String>,
}

/// A pair-code request the server received.
#[derive(Debug, Clone, PartialEq)]
pub struct PairCodeRequest {
    /// The `jid` the client asked to link (`<phone>@s.whatsapp.net`).
    pub jid: String,
}

/// A stanza a client sent, with the connection it came on (1-based).
#[derive(Debug, Clone)]
pub struct Stanza {
    pub connection: usize,
    pub node: Node,
}

impl Stanza {
    /// The value of attribute `key`, if present.
    pub fn attr(&self, key: &str) -> Option<String> {
        wire::attr(&self.node, key)
    }

    /// Whether this is an IQ of namespace `xmlns` whose first child is `<child>`.
    pub fn is_iq(&self, xmlns: &str, child: &str) -> bool {
        self.node.tag == "iq"
            && self.attr("xmlns").as_deref() == Some(xmlns)
            && self
                .node
                .children()
                .and_then(|c| c.first())
                .is_some_and(|c| c.tag == child)
    }
}

/// The fake WhatsApp. Cloning shares it. Create it inside a Tokio runtime (it starts its
/// media server).
#[derive(Clone)]
pub struct FakeWhatsApp {
    inner: Arc<Inner>,
    media: Arc<MediaServer>,
}

impl Default for FakeWhatsApp {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeWhatsApp {
    /// A server with a fresh static key, no accounts and no users.
    ///
    /// # Panics
    /// Outside a Tokio runtime, or when no loopback port is free.
    pub fn new() -> Self {
        let inner = Arc::new_cyclic(|me| Inner::new(me.clone()).expect("the server's keys"));
        let media =
            MediaServer::start(inner.blobs.clone()).expect("a loopback port for the media server");
        FakeWhatsApp {
            inner,
            media: Arc::new(media),
        }
    }

    /// The transport factory to give the client.
    pub fn factory(&self) -> Arc<dyn TransportFactory> {
        Arc::new(self.clone())
    }

    /// An HTTP client that sends media requests for [`MEDIA_HOST`] to this fake's media
    /// server and everything else to `inner`.
    pub fn http_client(&self, inner: Arc<dyn HttpClient>) -> Arc<dyn HttpClient> {
        Arc::new(MediaRoute {
            base: self.media.base.clone(),
            inner,
        })
    }

    /// What the media server serves at `url` (`https://{MEDIA_HOST}/…`), if anything.
    pub fn media_at(&self, url: &str) -> Option<Vec<u8>> {
        let path = url.strip_prefix(&format!("https://{MEDIA_HOST}"))?;
        self.inner.blobs.get(path)
    }

    /// The push name, about text and picture account `phone` set, and the addresses it
    /// blocks.
    pub fn profile(&self, phone: &str) -> AccountProfile {
        let profile = self
            .inner
            .state()
            .profiles
            .get(phone)
            .cloned()
            .unwrap_or_default();
        AccountProfile {
            push_name: profile.push_name,
            about: profile.about,
            picture: profile.picture.map(|(_, bytes)| bytes),
            blocked: profile.blocked.into_iter().collect(),
        }
    }

    /// User or account `creator` makes a group of `members` from its phone, as WhatsApp
    /// would: the linked devices of the accounts in it hear of it (`w:gp2` create).
    /// Returns the group's address.
    pub fn create_group(
        &self,
        creator: &str,
        subject: &str,
        members: &[&str],
    ) -> Result<Jid, String> {
        self.inner.create_group_by(creator, subject, members)
    }

    /// Group `jid` as the server holds it now.
    pub fn group(&self, jid: &Jid) -> Option<Group> {
        self.inner.group(jid)
    }

    /// The calls the accounts' devices rejected, in order.
    pub fn rejected_calls(&self) -> Vec<RejectedCall> {
        self.inner.state().rejected_calls.clone()
    }

    /// User or account `phone` takes `jpeg` as its profile picture.
    pub fn set_picture(&self, phone: &str, jpeg: Vec<u8>) {
        self.inner.keep_picture(phone, Some(jpeg));
    }

    /// How many encrypted blobs the media server holds.
    pub fn media_blobs(&self) -> usize {
        self.inner.blobs.len()
    }

    /// How many connections the client opened so far.
    pub fn connections(&self) -> usize {
        self.inner.state().conns.len()
    }

    /// The handshake each connection used, in order (`None` while it runs).
    pub fn handshakes(&self) -> Vec<Option<Pattern>> {
        self.inner.state().conns.iter().map(|c| c.pattern).collect()
    }

    /// Ends connection `n` (1-based) the way `ending` says.
    ///
    /// # Panics
    /// When connection `n` was never opened or is already closed.
    pub fn end(&self, n: usize, ending: Ending) {
        assert!(
            self.inner.command(n, Command::End(ending)),
            "connection {n} was never opened or is gone"
        );
    }

    /// The phone of account `phone` unlinks its device `device` (Settings → Linked
    /// devices → Log out): the server forgets it and ends its connection, if any.
    pub fn unlink(&self, phone: &str, device: u16) -> Result<(), String> {
        self.inner.unlink(phone, device)
    }

    /// The next IQ of namespace `xmlns` (`usync`, `w:m`, `encrypt`…) is answered with
    /// `<error code="{code}"/>`, as WhatsApp answers a request it refuses.
    pub fn refuse_next_iq(&self, xmlns: &str, code: u16) {
        self.inner
            .state()
            .refusals
            .push((xmlns.to_owned(), Some(code)));
    }

    /// The next IQ of namespace `xmlns` is never answered: the client waits on it, as
    /// on a server that is slow to answer.
    pub fn hold_next_iq(&self, xmlns: &str) {
        self.inner.state().refusals.push((xmlns.to_owned(), None));
    }

    /// The IQs held unanswered so far.
    pub fn held_iqs(&self) -> Vec<Node> {
        self.inner.state().held.clone()
    }

    /// Messages delivered to device `device` of account `phone` and not acknowledged
    /// yet (they come again at its next login).
    pub fn unacked(&self, phone: &str, device: u16) -> Vec<String> {
        self.inner.unacked(phone, device)
    }

    pub fn pair_requests(&self) -> Vec<PairCodeRequest> {
        self.inner.state().pair_requests.clone()
    }

    /// The QR ref the server hands out first on connection `n`.
    pub fn first_ref(n: usize) -> String {
        format!("REF-{n}-1")
    }

    /// The phone of account `phone` scans `qr`: the device showing it is linked to that
    /// account (created on first use). Pairing completes when the device signs its
    /// identity; it then logs in again on a new connection.
    pub async fn scan(&self, qr: &str, phone: &str) -> Result<(), String> {
        self.inner.scan(qr, phone).await
    }

    /// The primary phone of account `phone`, created on first use.
    pub async fn phone(&self, phone: &str) -> Result<Peer, String> {
        self.inner.account(phone).await
    }

    /// A WhatsApp user (not one of the accounts), created on first use.
    pub async fn user(&self, phone: &str, name: &str) -> Result<Peer, String> {
        self.inner.user(phone, name).await
    }

    /// Whether device `device` of account `phone` finished pairing.
    pub fn is_linked(&self, phone: &str, device: u16) -> bool {
        self.inner.registered(phone, device)
    }

    /// Whether a linked device of account `phone` is logged in and out of passive mode
    /// (it sent `<active/>`): what it sends now goes out, what it is sent arrives.
    pub fn online(&self, phone: &str) -> bool {
        self.inner.online(phone)
    }

    /// How many IQs the server did not know (and answered with error 501).
    pub fn unknown_iqs(&self) -> usize {
        self.inner.state().unknown_iqs.len()
    }

    /// The IQs the server did not know.
    pub fn unknown_iq_stanzas(&self) -> Vec<Node> {
        self.inner.state().unknown_iqs.clone()
    }

    /// Every stanza the clients sent after their handshakes.
    pub fn stanzas(&self) -> Vec<Stanza> {
        self.inner.state().stanzas.clone()
    }

    /// Things that went wrong on the server's side (a message a phone could not
    /// decrypt, a retry receipt, a bad signature): a passing test expects none.
    pub fn problems(&self) -> Vec<String> {
        self.inner.state().problems.clone()
    }

    /// Devices unlinked by their own request (`remove-companion-device`).
    pub fn removed_devices(&self) -> Vec<Jid> {
        self.inner.state().removed.clone()
    }

    /// Waits until `check` finds what it looks for, re-checking whenever the server's
    /// state changes; fails after `within`.
    pub async fn wait_until<T>(
        &self,
        within: Duration,
        what: &str,
        mut check: impl FnMut(&FakeWhatsApp) -> Option<T>,
    ) -> Result<T, String> {
        let mut changes = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            changes.mark_unchanged();
            if let Some(found) = check(self) {
                return Ok(found);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(format!("the fake WhatsApp is gone: {what}")),
                Err(_) => {
                    return Err(format!(
                        "timed out after {within:?} waiting for {what}; unknown IQs: {}; problems: {:?}",
                        self.unknown_iqs(),
                        self.problems()
                    ));
                }
            }
        }
    }
}

#[async_trait]
impl TransportFactory for FakeWhatsApp {
    async fn create_transport(
        &self,
    ) -> Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>), anyhow::Error> {
        let (to_server, from_client) = mpsc::unbounded_channel();
        let (events, to_client) = async_channel::unbounded();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let n = self.inner.connect(commands);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            if let Err(err) =
                conn::serve(inner, n, from_client, ToClient(events), commands_rx).await
            {
                eprintln!("fake WhatsApp, connection {n}: {err}");
            }
        });
        Ok((
            Arc::new(ClientSide {
                to_server: Mutex::new(Some(to_server)),
            }),
            to_client,
        ))
    }
}
