//! The server's state and its answers: accounts and their linked devices, the key
//! directory, message and receipt routing, and every IQ the client waits on.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use tokio::sync::{mpsc, watch};
use whatsapp_rust::NodeBuilder;
use whatsapp_rust::buffa::Message as _;
use whatsapp_rust::wacore::adv::{AdvValidation, validate_adv_with_identity_key};
use whatsapp_rust::wacore::iq::mediaconn::{HostType, MediaConnHostExtended};
use whatsapp_rust::wacore::iq::prekeys::PreKeyBundleUserNode;
use whatsapp_rust::wacore::libsignal::crypto::hmac_sha256;
use whatsapp_rust::wacore::libsignal::protocol::{IdentityKey, PreKeyBundle, PublicKey};
use whatsapp_rust::wacore::pair::PairUtils;
use whatsapp_rust::wacore::prekeys::compute_key_bundle_digest;
use whatsapp_rust::wacore::protocol::ProtocolNode;
use whatsapp_rust::wacore_binary::node::Node;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Jid, Server};

use crate::handshake::{Established, Pattern, ServerKeys};
use crate::peer::{Peer, ReceivedReceipt};
use crate::wire::{Fallible, SERVER, attr, bytes, error, now, result, text};
use crate::{Ending, PairCodeRequest, Stanza};

/// What a connection task is told to do from outside.
pub(crate) enum Command {
    Send(Node),
    End(Ending),
}

/// What the server does after a stanza.
pub(crate) enum Reply {
    Send(Node),
    End(Ending),
}

/// How long after a device signs its identity the server restarts the stream.
const RESTART_AFTER_PAIRING: std::time::Duration = std::time::Duration::from_millis(200);

/// The hostname the fake's `media_conn` answer names; its HTTP client sends it to the
/// loopback media server.
pub const MEDIA_HOST: &str = "mmg.fake-whatsapp.test";

pub(crate) struct Inner {
    pub(crate) keys: ServerKeys,
    /// What the media server holds, by direct path.
    pub(crate) blobs: crate::media::Blobs,
    state: Mutex<State>,
    /// Bumped whenever anything observable changes, so tests wait on events.
    pub(crate) changed: watch::Sender<u64>,
    pub(crate) me: std::sync::Weak<Inner>,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) conns: Vec<Conn>,
    /// Devices that showed QR codes, by their noise key, until a phone scans one.
    registrations: HashMap<[u8; 32], Registration>,
    pub(crate) accounts: BTreeMap<String, Account>,
    /// WhatsApp users other than the accounts, by phone number.
    pub(crate) users: BTreeMap<String, Peer>,
    pub(crate) stanzas: Vec<Stanza>,
    pub(crate) unknown_iqs: Vec<Node>,
    pub(crate) pair_requests: Vec<PairCodeRequest>,
    pub(crate) problems: Vec<String>,
    pub(crate) removed: Vec<Jid>,
    /// IQ namespaces the server refuses next, once each: with an error code, or with
    /// no answer at all (`None`, held).
    pub(crate) refusals: Vec<(String, Option<u16>)>,
    /// IQs held unanswered.
    pub(crate) held: Vec<Node>,
    /// Phone → whether it announced itself available last, and when (Unix seconds).
    pub(crate) presences: BTreeMap<String, (bool, u64)>,
    /// Phone → the phones following its presence.
    pub(crate) presence_subscribers: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Phone → its profile and blocklist.
    pub(crate) profiles: BTreeMap<String, crate::profile::Profile>,
    pub(crate) next_picture: u64,
    pub(crate) rejected_calls: Vec<crate::calls::RejectedCall>,
    /// Groups by the user part of their address.
    pub(crate) groups: BTreeMap<String, crate::groups::Group>,
    pub(crate) next_group: u64,
    next_lid: u64,
}

pub(crate) struct Conn {
    tx: mpsc::UnboundedSender<Command>,
    who: Who,
    pub(crate) pattern: Option<Pattern>,
    open: bool,
}

#[derive(Clone, PartialEq)]
enum Who {
    Nobody,
    Registering([u8; 32]),
    Device { phone: String, device: u16 },
}

/// A device's published keys: what a registration carries, then what it uploads.
#[derive(Clone)]
struct DeviceKeys {
    registration_id: u32,
    identity: [u8; 32],
    signed_id: u32,
    signed_public: [u8; 32],
    signed_signature: Vec<u8>,
    one_time: VecDeque<(u32, [u8; 32])>,
}

struct Registration {
    conn: usize,
    keys: DeviceKeys,
}

pub(crate) struct Account {
    pub(crate) lid: String,
    raw_id: u32,
    pub(crate) phone: Peer,
    companions: BTreeMap<u16, Companion>,
}

struct Companion {
    noise: [u8; 32],
    keys: DeviceKeys,
    /// The device-signed identity from `pair-device-sign`, served in its key bundles.
    signed_identity: Option<Vec<u8>>,
    removed: bool,
    conn: Option<usize>,
    /// Logged in on `conn` and out of passive mode: messages flow.
    active: bool,
    /// Stanzas waiting for the device's next login, delivered when it goes active.
    offline: Vec<Node>,
    /// Messages delivered and not yet acknowledged (by a receipt or an ack), by id: at
    /// the device's next login they are delivered again, as WhatsApp does.
    unacked: Vec<(String, Node)>,
}

impl Account {
    fn pn(&self) -> Jid {
        self.phone.jid()
    }

    fn active(&self) -> impl Iterator<Item = (&u16, &Companion)> {
        self.companions
            .iter()
            .filter(|(_, c)| c.signed_identity.is_some() && !c.removed)
    }
}

impl State {
    /// The account an address (phone number or LID, any device) belongs to.
    fn account_of(&self, jid: &Jid) -> Option<(&str, &Account)> {
        self.accounts
            .iter()
            .find(|(phone, a)| match jid.server {
                Server::Lid => a.lid == jid.user,
                _ => **phone == jid.user,
            })
            .map(|(phone, a)| (phone.as_str(), a))
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    pub(crate) fn new(me: std::sync::Weak<Inner>) -> Fallible<Inner> {
        Ok(Inner {
            keys: ServerKeys::generate()?,
            blobs: crate::media::Blobs::default(),
            state: Mutex::new(State {
                next_lid: 100_000_000_000_001,
                next_group: 120_363_000_000_000_001,
                ..State::default()
            }),
            changed: watch::channel(0).0,
            me,
        })
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub(crate) fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    pub(crate) fn problem(&self, what: String) {
        eprintln!("fake WhatsApp: {what}");
        self.state().problems.push(what);
        self.bump();
    }

    /// A new connection; returns its number (1-based).
    pub(crate) fn connect(&self, tx: mpsc::UnboundedSender<Command>) -> usize {
        let mut state = self.state();
        state.conns.push(Conn {
            tx,
            who: Who::Nobody,
            pattern: None,
            open: true,
        });
        let n = state.conns.len();
        drop(state);
        self.bump();
        n
    }

    pub(crate) fn command(&self, n: usize, command: Command) -> bool {
        let state = self.state();
        match state.conns.get(n.wrapping_sub(1)) {
            Some(conn) => conn.tx.send(command).is_ok(),
            None => false,
        }
    }

    pub(crate) fn closed(&self, n: usize) {
        let mut state = self.state();
        if let Some(conn) = state.conns.get_mut(n.wrapping_sub(1)) {
            conn.open = false;
            if let Who::Device { phone, device } = conn.who.clone()
                && let Some(companion) = state
                    .accounts
                    .get_mut(&phone)
                    .and_then(|a| a.companions.get_mut(&device))
                && companion.conn == Some(n)
            {
                companion.conn = None;
                companion.active = false;
            }
        }
        drop(state);
        self.bump();
    }

    /// The stanzas that open a connection once the handshake is done: QR refs for a new
    /// device, `<success>` or `<failure>` for a login.
    pub(crate) fn open(&self, n: usize, est: &Established) -> Vec<Reply> {
        let mut state = self.state();
        if let Some(conn) = state.conns.get_mut(n - 1) {
            conn.pattern = Some(est.pattern);
        }
        let replies = match est.payload.device_pairing_data.as_option() {
            Some(reg) => {
                let keys = match registration_keys(reg) {
                    Ok(keys) => keys,
                    Err(why) => {
                        state.problems.push(format!("connection {n}: {why}"));
                        return vec![Reply::End(Ending::StreamError(400))];
                    }
                };
                state
                    .registrations
                    .insert(est.client_static, Registration { conn: n, keys });
                if let Some(conn) = state.conns.get_mut(n - 1) {
                    conn.who = Who::Registering(est.client_static);
                }
                let refs = (1..=3).map(|i| {
                    NodeBuilder::new("ref")
                        .bytes(format!("REF-{n}-{i}").into_bytes())
                        .build()
                });
                vec![Reply::Send(
                    NodeBuilder::new("iq")
                        .attr("from", SERVER)
                        .attr("type", "set")
                        .attr("id", format!("pair-{n}"))
                        .attr("xmlns", "md")
                        .children([NodeBuilder::new("pair-device").children(refs).build()])
                        .build(),
                )]
            }
            None => self.login(&mut state, n, est),
        };
        drop(state);
        self.bump();
        replies
    }

    fn login(&self, state: &mut State, n: usize, est: &Established) -> Vec<Reply> {
        let phone = est.payload.username.map(|u| u.to_string());
        let device = est.payload.device.and_then(|d| u16::try_from(d).ok());
        let known = match (&phone, device) {
            (Some(phone), Some(device)) => state
                .accounts
                .get(phone)
                .and_then(|a| a.companions.get(&device).map(|c| (a, c)))
                .filter(|(_, c)| {
                    c.noise == est.client_static && c.signed_identity.is_some() && !c.removed
                })
                .map(|(a, _)| (phone.clone(), device, a.lid.clone())),
            _ => None,
        };
        let Some((phone, device, lid)) = known else {
            return vec![
                Reply::Send(
                    NodeBuilder::new("failure")
                        .attr("reason", "401")
                        .attr("location", "fake")
                        .build(),
                ),
                Reply::End(Ending::Drop),
            ];
        };
        if let Some(conn) = state.conns.get_mut(n - 1) {
            conn.who = Who::Device {
                phone: phone.clone(),
                device,
            };
        }
        let mut replaced = None;
        if let Some(companion) = state
            .accounts
            .get_mut(&phone)
            .and_then(|a| a.companions.get_mut(&device))
        {
            replaced = companion.conn.filter(|old| *old != n);
            companion.conn = Some(n);
            companion.active = false;
            // What the device never acknowledged comes again, first.
            let again: Vec<Node> = std::mem::take(&mut companion.unacked)
                .into_iter()
                .map(|(_, stanza)| stanza)
                .collect();
            companion.offline.splice(0..0, again);
        }
        // Another stream of the same device is still open: WhatsApp replaces it.
        if let Some(old) = replaced
            && let Some(conn) = state.conns.get(old - 1)
            && conn.open
        {
            let _ = conn.tx.send(Command::End(Ending::Replaced));
        }
        vec![Reply::Send(
            NodeBuilder::new("success")
                .attr("t", now().to_string())
                .attr("lid", Jid::lid(&lid))
                .attr("location", "fake")
                .attr("creation", now().to_string())
                .build(),
        )]
    }

    /// The device behind connection `n`, once logged in.
    pub(crate) fn device_of(&self, n: usize) -> Option<(String, u16)> {
        match self
            .state()
            .conns
            .get(n.wrapping_sub(1))
            .map(|c| c.who.clone())
        {
            Some(Who::Device { phone, device }) => Some((phone, device)),
            _ => None,
        }
    }

    /// Everything the client sends after the handshake comes here.
    pub(crate) async fn handle(&self, n: usize, node: Node) -> Vec<Reply> {
        {
            let mut state = self.state();
            state.stanzas.push(Stanza {
                connection: n,
                node: node.clone(),
            });
        }
        self.bump();
        match node.tag.as_ref() {
            "iq" => self.iq(n, &node).await,
            "message" => self.message(n, &node).await,
            "presence" => self.presence(n, &node),
            "chatstate" => self.chatstate(n, &node),
            "call" => self.call(n, &node),
            // A device's receipt of a call offer: nothing to route.
            "receipt" if node.get_optional_child("offer").is_some() => Vec::new(),
            "receipt" => {
                self.acknowledged(n, &node);
                self.receipt(n, &node)
            }
            "ack" => {
                if attr(&node, "class").as_deref() == Some("message") {
                    self.acknowledged(n, &node);
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    async fn iq(&self, n: usize, node: &Node) -> Vec<Reply> {
        let id = attr(node, "id").unwrap_or_default();
        let kind = attr(node, "type").unwrap_or_default();
        let xmlns = attr(node, "xmlns").unwrap_or_default();
        let child = node.children().and_then(|c| c.first());
        let child_tag = child.map(|c| c.tag.to_string()).unwrap_or_default();
        if matches!(kind.as_str(), "get" | "set") {
            let refused = {
                let mut state = self.state();
                let at = state.refusals.iter().position(|(ns, _)| *ns == xmlns);
                at.map(|at| state.refusals.remove(at).1)
            };
            match refused {
                Some(Some(code)) => {
                    self.bump();
                    return vec![Reply::Send(error(&id, code, "refused-by-test"))];
                }
                Some(None) => {
                    self.state().held.push(node.clone());
                    self.bump();
                    return Vec::new();
                }
                None => {}
            }
        }
        let answer = match (kind.as_str(), xmlns.as_str(), child_tag.as_str()) {
            // Answers to the server's own requests.
            ("result", _, "pair-device-sign") => return self.pair_device_sign(n, node).await,
            ("result" | "error", _, _) => return Vec::new(),
            ("get", "w:p", _) => result(&id).build(),
            ("set", "md", "link_code_companion_reg") => {
                let jid = child.and_then(|c| attr(c, "jid")).unwrap_or_default();
                self.state().pair_requests.push(PairCodeRequest { jid });
                result(&id)
                    .children([NodeBuilder::new("link_code_companion_reg")
                        .children([NodeBuilder::new("link_code_pairing_ref")
                            .bytes(format!("PAIR-REF-{n}").into_bytes())
                            .build()])
                        .build()])
                    .build()
            }
            ("set", "md", "remove-companion-device") => self.remove_companion(n, &id),
            ("set", "passive", "active") => return self.go_active(n, &id),
            ("set", "passive", "passive") => result(&id).build(),
            ("set", "encrypt", "rotate") => self.rotate(n, &id, child),
            ("set", "encrypt", _) if node.get_optional_child("registration").is_some() => {
                self.upload_prekeys(n, &id, node)
            }
            ("get", "encrypt", "count") => self.prekey_count(n, &id),
            ("get", "encrypt", "digest") => self.digest(n, &id),
            ("get", "encrypt", "key") => self.prekey_fetch(&id, child),
            ("get", "abt", "props") => result(&id)
                .children([NodeBuilder::new("props")
                    .attr("protocol", "1")
                    .attr("hash", "fake")
                    .attr("refresh", "86400")
                    .build()])
                .build(),
            ("get", "privacy", "privacy") => privacy(&id),
            // Trusted-contact tokens, issued after the first message to someone.
            ("set", "privacy", "tokens") => tokens(&id, child),
            (_, "blocklist" | "status" | "w:profile:picture", _) => {
                match self.profile_iq(n, &kind, &xmlns, &child_tag, &id, node) {
                    Some(answer) => answer,
                    None => return self.unknown_iq(&id, node),
                }
            }
            (_, "w:g2", _) => match self.group_iq(n, &kind, &id, node) {
                Some(answer) => answer,
                None => return self.unknown_iq(&id, node),
            },
            ("set", "w:sync:app:state", "sync") => app_state(&id, child),
            ("get", "usync", "usync") => match child {
                Some(usync) => self.usync(&id, usync),
                None => error(&id, 400, "bad-request"),
            },
            ("set", "w:m", "media_conn") => result(&id)
                .children([NodeBuilder::new("media_conn")
                    .attr("auth", "fake-media-auth")
                    .attr("ttl", "3600")
                    .attr("auth_ttl", "3600")
                    .attr("max_buckets", "1")
                    .children([MediaConnHostExtended::simple(
                        MEDIA_HOST.to_owned(),
                        HostType::Primary,
                    )
                    .into_node()])
                    .build()])
                .build(),
            _ => return self.unknown_iq(&id, node),
        };
        vec![Reply::Send(answer)]
    }

    /// An IQ the server does not know: counted, and answered 501.
    fn unknown_iq(&self, id: &str, node: &Node) -> Vec<Reply> {
        self.state().unknown_iqs.push(node.clone());
        self.bump();
        vec![Reply::Send(error(id, 501, "feature-not-implemented"))]
    }

    /// The device on connection `n` acknowledged the messages a receipt or an ack
    /// names: they are not delivered again.
    fn acknowledged(&self, n: usize, node: &Node) {
        let mut ids: Vec<String> = attr(node, "id").into_iter().collect();
        if let Some(list) = node.get_optional_child("list") {
            ids.extend(
                list.get_children_by_tag("item")
                    .filter_map(|item| attr(item, "id")),
            );
        }
        self.with_companion(n, |companion| {
            companion.unacked.retain(|(id, _)| !ids.contains(id));
        });
    }

    /// A phone scanned `qr`: the device that shows it becomes a companion of `phone`'s
    /// account, signed by the account's key the way a real phone signs it.
    pub(crate) async fn scan(&self, qr: &str, phone: &str) -> Fallible<()> {
        let (_, noise, identity) = PairUtils::parse_qr_code(qr).map_err(|e| e.to_string())?;
        let adv_secret: [u8; 32] = qr
            .split(',')
            .nth(3)
            .and_then(|b64| BASE64_STANDARD.decode(b64).ok())
            .and_then(|secret| secret.try_into().ok())
            .ok_or("the QR code carries no ADV secret")?;
        let account_phone = self.account(phone).await?;
        let mut state = self.state();
        let registration = state
            .registrations
            .remove(&noise)
            .ok_or("no connected device shows this QR code")?;
        if registration.keys.identity != identity {
            return Err("the QR code's identity key is not the device's".into());
        }
        let account = state
            .accounts
            .get_mut(phone)
            .ok_or("the account vanished")?;
        let device = account
            .companions
            .keys()
            .next_back()
            .map_or(1, |last| last + 1);
        let account_key = account_phone.identity();
        let details = wa::ADVDeviceIdentity {
            raw_id: Some(account.raw_id),
            timestamp: Some(now()),
            key_index: Some(u32::from(device)),
            account_type: Some(wa::ADVEncryptionType::E2EE),
            device_type: Some(wa::ADVEncryptionType::E2EE),
        }
        .encode_to_vec();
        let signed_message = [&[6u8, 0][..], &details, &identity].concat();
        let account_signature = account_key
            .private_key
            .calculate_signature(&signed_message, &mut rand10::rng())
            .map_err(|e| format!("signing the device: {e}"))?;
        let signed = wa::ADVSignedDeviceIdentity {
            details: Some(details),
            account_signature_key: Some(account_key.public_key.public_key_bytes().to_vec()),
            account_signature: Some(account_signature.to_vec()),
            device_signature: None,
        }
        .encode_to_vec();
        let hmac = hmac_sha256(&adv_secret, &signed);
        let container = wa::ADVSignedDeviceIdentityHMAC {
            details: Some(signed),
            hmac: Some(hmac.to_vec()),
            account_type: Some(wa::ADVEncryptionType::E2EE),
        }
        .encode_to_vec();
        account.companions.insert(
            device,
            Companion {
                noise,
                keys: registration.keys,
                signed_identity: None,
                removed: false,
                conn: None,
                active: false,
                offline: Vec::new(),
                unacked: Vec::new(),
            },
        );
        let pair_success = NodeBuilder::new("iq")
            .attr("from", SERVER)
            .attr("type", "set")
            .attr("id", format!("pair-success-{}", registration.conn))
            .attr("xmlns", "md")
            .children([NodeBuilder::new("pair-success")
                .children([
                    NodeBuilder::new("device-identity").bytes(container).build(),
                    NodeBuilder::new("device")
                        .attr("jid", Jid::pn_device(phone, device))
                        .attr("lid", Jid::lid_device(&account.lid, device))
                        .build(),
                    NodeBuilder::new("biz")
                        .attr("name", account_phone.name().to_owned())
                        .build(),
                    NodeBuilder::new("platform").attr("name", "android").build(),
                ])
                .build()])
            .build();
        let sent = state
            .conns
            .get(registration.conn - 1)
            .is_some_and(|c| c.open && c.tx.send(Command::Send(pair_success)).is_ok());
        drop(state);
        self.bump();
        if sent {
            Ok(())
        } else {
            Err("the device that showed this QR code is gone".into())
        }
    }

    /// The account of `phone`, created with its primary phone on first use.
    pub(crate) async fn account(&self, phone: &str) -> Fallible<Peer> {
        if let Some(account) = self.state().accounts.get(phone) {
            return Ok(account.phone.clone());
        }
        let peer = Peer::create(phone, &format!("Phone {phone}"), self.me.clone()).await?;
        let mut state = self.state();
        if let Some(account) = state.accounts.get(phone) {
            return Ok(account.phone.clone());
        }
        let lid = state.next_lid;
        state.next_lid += 1;
        let raw_id = u32::try_from(lid % 1_000_000_000).unwrap_or(1);
        state.accounts.insert(
            phone.to_owned(),
            Account {
                lid: lid.to_string(),
                raw_id,
                phone: peer.clone(),
                companions: BTreeMap::new(),
            },
        );
        Ok(peer)
    }

    /// A WhatsApp user who is not an account of this fake's devices.
    pub(crate) async fn user(&self, phone: &str, name: &str) -> Fallible<Peer> {
        if let Some(peer) = self.state().users.get(phone) {
            return Ok(peer.clone());
        }
        let peer = Peer::create(phone, name, self.me.clone()).await?;
        let mut state = self.state();
        Ok(state.users.entry(phone.to_owned()).or_insert(peer).clone())
    }

    /// The device signed its identity: pairing is complete once the signatures check
    /// out. WhatsApp then restarts the stream and the device logs in.
    async fn pair_device_sign(&self, n: usize, node: &Node) -> Vec<Reply> {
        let signed = node
            .get_optional_child("pair-device-sign")
            .and_then(|s| s.get_optional_child("device-identity"))
            .and_then(bytes)
            .map(<[u8]>::to_vec);
        let found = {
            let mut state = self.state();
            let noise = match state.conns.get(n - 1).map(|c| c.who.clone()) {
                Some(Who::Registering(noise)) => Some(noise),
                _ => None,
            };
            let mut found = None;
            for (phone, account) in state.accounts.iter_mut() {
                for (device, companion) in account.companions.iter_mut() {
                    if Some(companion.noise) == noise && companion.signed_identity.is_none() {
                        found = Some((
                            phone.clone(),
                            *device,
                            companion.keys.clone(),
                            account.phone.clone(),
                        ));
                    }
                }
            }
            found
        };
        let (Some(signed), Some((phone, device, keys, primary))) = (signed, found) else {
            self.problem(format!(
                "connection {n}: a pair-device-sign that matches no pairing"
            ));
            return vec![Reply::End(Ending::StreamError(401))];
        };
        let account_key: [u8; 32] = primary
            .identity()
            .public_key
            .public_key_bytes()
            .try_into()
            .unwrap_or_default();
        let valid = validate_adv_with_identity_key(&signed, &keys.identity, Some(&account_key));
        if valid != AdvValidation::Valid {
            self.problem(format!(
                "connection {n}: the device signature of {phone}:{device} is {valid:?}"
            ));
            return vec![Reply::End(Ending::StreamError(401))];
        }
        // The primary phone shares the app-state key with its new device, as phones do
        // right after linking; it waits for the device's first login.
        let companion_jid = Jid::pn_device(&phone, device);
        let share = match self.key_share(&primary, &companion_jid, &keys).await {
            Ok(share) => Some(share),
            Err(why) => {
                self.problem(format!("the key share for {companion_jid}: {why}"));
                None
            }
        };
        {
            let mut state = self.state();
            if let Some(companion) = state
                .accounts
                .get_mut(&phone)
                .and_then(|a| a.companions.get_mut(&device))
            {
                companion.signed_identity = Some(signed);
                companion.offline.extend(share);
            }
        }
        self.bump();
        // WhatsApp restarts the stream a network round trip later. whatsapp-rust 0.7.0
        // marks the disconnect as expected only after it sent pair-device-sign; a 515
        // that overtakes that mark (on a multi-threaded runtime) makes it drop its next
        // login once and come back over IK. Waiting like a real server keeps to one
        // login.
        tokio::time::sleep(RESTART_AFTER_PAIRING).await;
        vec![Reply::End(Ending::StreamError(515))]
    }

    async fn key_share(&self, primary: &Peer, to: &Jid, keys: &DeviceKeys) -> Fallible<Node> {
        use wa::message as m;
        use whatsapp_rust::buffa::MessageField;
        let mut key_id = [0u8; 6];
        key_id[..4].copy_from_slice(&now().to_be_bytes()[4..]);
        let key_data: [u8; 32] = rand10::random();
        let key = m::AppStateSyncKey {
            key_id: MessageField::some(m::AppStateSyncKeyId {
                key_id: Some(key_id.to_vec()),
            }),
            key_data: MessageField::some(m::AppStateSyncKeyData {
                key_data: Some(key_data.to_vec()),
                fingerprint: MessageField::some(m::AppStateSyncKeyFingerprint {
                    raw_id: Some(1),
                    current_index: Some(0),
                    device_indexes: vec![0],
                }),
                timestamp: Some(i64::try_from(now()).unwrap_or(0) * 1000),
            }),
        };
        let share = wa::Message {
            protocol_message: MessageField::some(m::ProtocolMessage {
                r#type: Some(m::protocol_message::Type::APP_STATE_SYNC_KEY_SHARE),
                app_state_sync_key_share: MessageField::some(m::AppStateSyncKeyShare {
                    keys: vec![key],
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        if !primary.has_session(to).await {
            primary.install(to, &keys.bundle(to.device, None)?).await?;
        }
        let (enc_type, ciphertext) = primary.encrypt(to, &share).await?;
        Ok(message_stanza(
            &primary.jid(),
            &new_id(),
            "text",
            primary.name(),
            enc_type,
            ciphertext,
        ))
    }

    /// The account's phone unlinks `device`: it is removed, and its connection ends.
    pub(crate) fn unlink(&self, phone: &str, device: u16) -> Fallible<()> {
        let conn = {
            let mut state = self.state();
            let companion = state
                .accounts
                .get_mut(phone)
                .and_then(|a| a.companions.get_mut(&device))
                .filter(|c| !c.removed)
                .ok_or_else(|| format!("{phone}:{device} is not a linked device"))?;
            companion.removed = true;
            companion.active = false;
            let conn = companion.conn.take();
            state.removed.push(Jid::pn_device(phone, device));
            conn
        };
        self.bump();
        if let Some(n) = conn {
            self.command(n, Command::End(Ending::DeviceRemoved));
        }
        Ok(())
    }

    fn remove_companion(&self, n: usize, id: &str) -> Node {
        if let Some((phone, device)) = self.device_of(n) {
            let mut state = self.state();
            if let Some(companion) = state
                .accounts
                .get_mut(&phone)
                .and_then(|a| a.companions.get_mut(&device))
            {
                companion.removed = true;
            }
            state.removed.push(Jid::pn_device(&phone, device));
        }
        self.bump();
        result(id).build()
    }

    /// The device left passive mode: deliver what waited for it, then say the offline
    /// queue is empty.
    fn go_active(&self, n: usize, id: &str) -> Vec<Reply> {
        let mut replies = vec![Reply::Send(result(id).build())];
        let mut count = 0;
        if let Some((phone, device)) = self.device_of(n) {
            let mut state = self.state();
            if let Some(companion) = state
                .accounts
                .get_mut(&phone)
                .and_then(|a| a.companions.get_mut(&device))
            {
                companion.active = true;
                for mut stanza in std::mem::take(&mut companion.offline) {
                    stanza.attrs.insert("offline", "1");
                    if stanza.tag == "message" {
                        companion
                            .unacked
                            .push((attr(&stanza, "id").unwrap_or_default(), stanza.clone()));
                    }
                    replies.push(Reply::Send(stanza));
                    count += 1;
                }
            }
        }
        self.bump();
        replies.push(Reply::Send(
            NodeBuilder::new("ib")
                .attr("from", SERVER)
                .children([NodeBuilder::new("offline")
                    .attr("count", count.to_string())
                    .build()])
                .build(),
        ));
        replies
    }

    fn with_companion<T>(&self, n: usize, f: impl FnOnce(&mut Companion) -> T) -> Option<T> {
        let (phone, device) = self.device_of(n)?;
        let mut state = self.state();
        let companion = state
            .accounts
            .get_mut(&phone)?
            .companions
            .get_mut(&device)?;
        Some(f(companion))
    }

    fn upload_prekeys(&self, n: usize, id: &str, node: &Node) -> Node {
        let parsed = (|| -> Option<DeviceKeys> {
            let registration_id = be_u32(bytes(node.get_optional_child("registration")?)?)?;
            let identity = bytes(node.get_optional_child("identity")?)?
                .try_into()
                .ok()?;
            let skey = node.get_optional_child("skey")?;
            let (signed_id, signed_public, signed_signature) = signed_prekey(skey)?;
            let one_time = node
                .get_optional_child("list")
                .and_then(|l| l.children())
                .unwrap_or_default()
                .iter()
                .filter_map(|key| {
                    let id = be_u32(bytes(key.get_optional_child("id")?)?)?;
                    let value = bytes(key.get_optional_child("value")?)?.try_into().ok()?;
                    Some((id, value))
                })
                .collect();
            Some(DeviceKeys {
                registration_id,
                identity,
                signed_id,
                signed_public,
                signed_signature,
                one_time,
            })
        })();
        let Some(keys) = parsed else {
            return error(id, 400, "bad-request");
        };
        let stored = self.with_companion(n, |companion| {
            if companion.keys.identity != keys.identity {
                return false;
            }
            let DeviceKeys {
                registration_id,
                signed_id,
                signed_public,
                signed_signature,
                one_time,
                ..
            } = keys;
            companion.keys.registration_id = registration_id;
            companion.keys.signed_id = signed_id;
            companion.keys.signed_public = signed_public;
            companion.keys.signed_signature = signed_signature;
            companion.keys.one_time.extend(one_time);
            true
        });
        self.bump();
        match stored {
            Some(true) => result(id).build(),
            Some(false) => error(id, 406, "identity-mismatch"),
            None => error(id, 401, "not-authorized"),
        }
    }

    fn rotate(&self, n: usize, id: &str, rotate: Option<&Node>) -> Node {
        let Some((signed_id, signed_public, signed_signature)) = rotate
            .and_then(|r| r.get_optional_child("skey"))
            .and_then(signed_prekey)
        else {
            return error(id, 400, "bad-request");
        };
        let stored = self.with_companion(n, |companion| {
            companion.keys.signed_id = signed_id;
            companion.keys.signed_public = signed_public;
            companion.keys.signed_signature = signed_signature;
        });
        match stored {
            Some(()) => result(id).build(),
            None => error(id, 401, "not-authorized"),
        }
    }

    /// The server's copy of the device's bundle, with wacore's hash over it, so the
    /// client can check the server holds what it uploaded.
    fn digest(&self, n: usize, id: &str) -> Node {
        let digest = self.with_companion(n, |companion| {
            let keys = &companion.keys;
            let publics: Vec<&[u8]> = keys.one_time.iter().map(|(_, k)| &k[..]).collect();
            let hash = compute_key_bundle_digest(
                &keys.identity,
                &keys.signed_public,
                &keys.signed_signature,
                &publics,
            );
            let ids = keys.one_time.iter().map(|(id, _)| {
                NodeBuilder::new("id")
                    .bytes(id.to_be_bytes()[1..].to_vec())
                    .build()
            });
            NodeBuilder::new("digest")
                .children([
                    NodeBuilder::new("registration")
                        .bytes(keys.registration_id.to_be_bytes().to_vec())
                        .build(),
                    NodeBuilder::new("type").bytes(vec![5]).build(),
                    NodeBuilder::new("identity")
                        .bytes(keys.identity.to_vec())
                        .build(),
                    NodeBuilder::new("skey")
                        .children([
                            NodeBuilder::new("id")
                                .bytes(keys.signed_id.to_be_bytes()[1..].to_vec())
                                .build(),
                            NodeBuilder::new("value")
                                .bytes(keys.signed_public.to_vec())
                                .build(),
                            NodeBuilder::new("signature")
                                .bytes(keys.signed_signature.clone())
                                .build(),
                        ])
                        .build(),
                    NodeBuilder::new("list").children(ids).build(),
                    NodeBuilder::new("hash").bytes(hash).build(),
                ])
                .build()
        });
        match digest {
            Some(digest) => result(id).children([digest]).build(),
            None => error(id, 401, "not-authorized"),
        }
    }

    fn prekey_count(&self, n: usize, id: &str) -> Node {
        let count = self
            .with_companion(n, |companion| companion.keys.one_time.len())
            .unwrap_or(0);
        result(id)
            .children([NodeBuilder::new("count")
                .attr("value", count.to_string())
                .build()])
            .build()
    }

    /// Key bundles for the devices named in `<key><user jid/>…</key>`.
    fn prekey_fetch(&self, id: &str, key: Option<&Node>) -> Node {
        let jids: Vec<Jid> = key
            .and_then(|k| k.children())
            .unwrap_or_default()
            .iter()
            .filter_map(|user| attr(user, "jid")?.parse::<Jid>().ok())
            .collect();
        let users = jids.into_iter().map(|jid| match self.bundle_node(&jid) {
            Ok(node) => node,
            Err(code) => NodeBuilder::new("user")
                .attr("jid", jid)
                .children([NodeBuilder::new("error")
                    .attr("code", code.to_string())
                    .attr("text", "item-not-found")
                    .build()])
                .build(),
        });
        result(id)
            .children([NodeBuilder::new("list").children(users).build()])
            .build()
    }

    /// One device's bundle: a phone's own keys, or a companion's uploaded keys (using
    /// up one one-time pre-key) with its signed identity.
    fn bundle_node(&self, jid: &Jid) -> Result<Node, u16> {
        if jid.device == 0 {
            let peer = self.peer(jid).ok_or(404u16)?;
            let bundle = peer.bundle().map_err(|_| 500u16)?;
            return PreKeyBundleUserNode::from_bundle(jid.clone(), &bundle, None)
                .map(ProtocolNode::into_node)
                .map_err(|_| 500);
        }
        let mut state = self.state();
        let account = state
            .accounts
            .values_mut()
            .find(|a| a.pn().user == jid.user || a.lid == jid.user)
            .ok_or(404u16)?;
        let companion = account
            .companions
            .get_mut(&jid.device)
            .filter(|c| !c.removed)
            .ok_or(404u16)?;
        let signed_identity = companion.signed_identity.clone().ok_or(404u16)?;
        let bundle = companion.keys.take_bundle(jid.device).map_err(|_| 500u16)?;
        PreKeyBundleUserNode::from_bundle(jid.clone(), &bundle, Some(signed_identity))
            .map(ProtocolNode::into_node)
            .map_err(|_| 500)
    }

    /// The phone (device 0) behind an address: a user's or an account's primary.
    pub(crate) fn peer(&self, jid: &Jid) -> Option<Peer> {
        let state = self.state();
        if jid.server == Server::Lid {
            return state
                .accounts
                .values()
                .find(|a| a.lid == jid.user)
                .map(|a| a.phone.clone());
        }
        state.users.get(jid.user.as_str()).cloned().or_else(|| {
            state
                .accounts
                .get(jid.user.as_str())
                .map(|a| a.phone.clone())
        })
    }

    fn usync(&self, id: &str, usync: &Node) -> Node {
        let protocols: Vec<String> = usync
            .get_optional_child("query")
            .and_then(|q| q.children())
            .unwrap_or_default()
            .iter()
            .map(|p| p.tag.to_string())
            .collect();
        let users: Vec<Node> = usync
            .get_optional_child("list")
            .and_then(|l| l.children())
            .unwrap_or_default()
            .iter()
            .filter_map(|user| {
                let jid = match attr(user, "jid").and_then(|j| j.parse::<Jid>().ok()) {
                    Some(jid) => jid.to_non_ad(),
                    None => {
                        let number = user.get_optional_child("contact").and_then(text)?;
                        Jid::pn(number.trim_start_matches('+'))
                    }
                };
                Some(self.usync_user(&jid, &protocols))
            })
            .collect();
        let mut reply = NodeBuilder::new("usync");
        for key in ["sid", "mode", "context", "index", "last"] {
            if let Some(value) = attr(usync, key) {
                reply = reply.attr(key, value);
            }
        }
        result(id)
            .children([reply
                .children([NodeBuilder::new("list").children(users).build()])
                .build()])
            .build()
    }

    fn usync_user(&self, jid: &Jid, protocols: &[String]) -> Node {
        let state = self.state();
        let account = state
            .accounts
            .values()
            .find(|a| a.pn().user == jid.user || a.lid == jid.user);
        let user = state.users.get(jid.user.as_str());
        let registered = account.is_some() || user.is_some();
        let mut children = Vec::new();
        for protocol in protocols {
            match protocol.as_str() {
                "status" => children.push(
                    match account
                        .and_then(|a| state.profiles.get(a.pn().user.as_str()))
                        .and_then(|p| p.about.clone())
                    {
                        Some(about) => NodeBuilder::new("status").string_content(about).build(),
                        None => NodeBuilder::new("status").build(),
                    },
                ),
                "contact" => children.push(
                    NodeBuilder::new("contact")
                        .attr("type", if registered { "in" } else { "out" })
                        .build(),
                ),
                // Only the accounts have a LID: the users stay on phone numbers.
                "lid" => children.push(match account {
                    Some(a) => NodeBuilder::new("lid")
                        .attr("val", Jid::lid(&a.lid))
                        .build(),
                    None => NodeBuilder::new("lid").build(),
                }),
                "devices" => {
                    let mut devices = vec![NodeBuilder::new("device").attr("id", "0").build()];
                    let mut list = Vec::new();
                    if let Some(account) = account {
                        for (device, _) in account.active() {
                            devices.push(
                                NodeBuilder::new("device")
                                    .attr("id", device.to_string())
                                    .attr("key-index", device.to_string())
                                    .build(),
                            );
                        }
                        list.push(key_index_list(account));
                    }
                    if !registered {
                        devices.clear();
                    }
                    let mut nodes = vec![
                        NodeBuilder::new("device-list")
                            .attr("hash", format!("2:fake{}", devices.len()))
                            .children(devices)
                            .build(),
                    ];
                    nodes.extend(list.into_iter().flatten());
                    children.push(NodeBuilder::new("devices").children(nodes).build());
                }
                _ => {}
            }
        }
        NodeBuilder::new("user")
            .attr("jid", jid.clone())
            .children(children)
            .build()
    }

    /// A `<message>` from a device: acknowledged, then each copy goes to its phone.
    async fn message(&self, n: usize, node: &Node) -> Vec<Reply> {
        let id = attr(node, "id").unwrap_or_default();
        let to = attr(node, "to").unwrap_or_default();
        let mut replies = vec![Reply::Send(
            NodeBuilder::new("ack")
                .attr("class", "message")
                .attr("id", id.clone())
                .attr("from", to.clone())
                .attr("t", now().to_string())
                .build(),
        )];
        let Some((phone, device)) = self.device_of(n) else {
            self.problem(format!("connection {n}: a message before login"));
            return replies;
        };
        let sender = Jid::pn_device(&phone, device);
        if let Ok(group) = to.parse::<Jid>()
            && group.server == Server::Group
        {
            self.group_message(node, &sender, &group).await;
            return replies;
        }
        let mut copies: Vec<(Jid, &Node)> = Vec::new();
        if let Some(participants) = node.get_optional_child("participants") {
            for to in participants.get_children_by_tag("to") {
                if let (Some(jid), Some(enc)) = (
                    attr(to, "jid").and_then(|j| j.parse::<Jid>().ok()),
                    to.get_optional_child("enc"),
                ) {
                    copies.push((jid, enc));
                }
            }
        } else if let (Ok(jid), Some(enc)) = (to.parse::<Jid>(), node.get_optional_child("enc")) {
            copies.push((jid, enc));
        }
        let mut keyed = Vec::new();
        for (recipient, enc) in copies {
            if recipient.device != 0 {
                self.forward(node, &sender, &recipient, enc);
                continue;
            }
            let Some(peer) = self.peer(&recipient) else {
                self.problem(format!("{id}: no phone for {recipient}"));
                continue;
            };
            let enc_type = attr(enc, "type").unwrap_or_default();
            let version = attr(enc, "v").and_then(|v| v.parse().ok()).unwrap_or(2);
            let ciphertext = bytes(enc).unwrap_or_default();
            match peer
                .receive(&sender, &id, &enc_type, version, ciphertext)
                .await
            {
                Ok(_) => {
                    // A user's phone confirms delivery; an account's own phone does
                    // not answer its own devices' copies.
                    if peer.phone() != phone {
                        replies.push(Reply::Send(receipt_stanza(&peer.jid(), &[&id], None)));
                    }
                    keyed.push(peer);
                }
                Err(why) => self.problem(why),
            }
        }
        // A sender-key message (a group's, a status post's): the phones that got the
        // sender key with their copy read it with that key.
        let group_message = node
            .get_children_by_tag("enc")
            .find(|enc| attr(enc, "type").as_deref() == Some("skmsg"));
        if let (Some(enc), Ok(group)) = (group_message, to.parse::<Jid>()) {
            let version = attr(enc, "v").and_then(|v| v.parse().ok()).unwrap_or(2);
            let ciphertext = bytes(enc).unwrap_or_default();
            for peer in keyed {
                if let Err(why) = peer
                    .receive_sender_key_message(&group, &sender, &id, version, ciphertext)
                    .await
                {
                    self.problem(why);
                }
            }
        }
        self.bump();
        replies
    }

    /// The copy of a message for another linked device (of another account, or of the
    /// sender's own), delivered to it as the server would: from the sending device.
    fn forward(&self, message: &Node, sender: &Jid, recipient: &Jid, enc: &Node) {
        let target = {
            let state = self.state();
            state
                .account_of(recipient)
                .map(|(phone, _)| phone.to_owned())
        };
        let Some(phone) = target else {
            self.problem(format!("no linked device {recipient}"));
            return;
        };
        if phone == sender.user && recipient.device == sender.device {
            return;
        }
        let mut stanza = NodeBuilder::new("message")
            .attr("from", sender.clone())
            .attr("id", attr(message, "id").unwrap_or_default())
            .attr("t", now().to_string())
            .attr(
                "type",
                attr(message, "type").unwrap_or_else(|| "text".into()),
            );
        if phone == sender.user {
            // A copy of the device's own message: the chat it went to.
            if let Some(to) = attr(message, "to") {
                stanza = stanza.attr("recipient", to);
            }
        }
        let mut children = vec![enc.clone()];
        children.extend(message.get_optional_child("device-identity").cloned());
        if let Err(why) = self.deliver(&phone, recipient.device, stanza.children(children).build())
        {
            self.problem(why);
        }
    }

    /// A `<receipt>` from a device: acknowledged, and handed to the phone it is for.
    fn receipt(&self, n: usize, node: &Node) -> Vec<Reply> {
        let id = attr(node, "id").unwrap_or_default();
        let to = attr(node, "to").unwrap_or_default();
        let kind = attr(node, "type");
        let mut ack = NodeBuilder::new("ack")
            .attr("class", "receipt")
            .attr("id", id.clone())
            .attr("from", to.clone());
        if let Some(kind) = &kind {
            ack = ack.attr("type", kind.clone());
        }
        let replies = vec![Reply::Send(ack.build())];
        if kind.as_deref() == Some("retry") {
            self.problem(format!(
                "connection {n} asked to retry {id}: it could not decrypt it"
            ));
            return replies;
        }
        let mut ids = vec![id];
        if let Some(list) = node.get_optional_child("list") {
            ids.extend(
                list.get_children_by_tag("item")
                    .filter_map(|item| attr(item, "id")),
            );
        }
        if let (Ok(to), Some((phone, device))) = (to.parse::<Jid>(), self.device_of(n))
            && let Some(peer) = self.peer(&to)
            && peer.phone() != phone
        {
            // The account's other linked devices see it too.
            let ids_ref: Vec<&str> = ids.iter().map(String::as_str).collect();
            let stanza = receipt_stanza(&Jid::pn(&phone), &ids_ref, kind.as_deref());
            for device in self.companions_of(&peer.phone()).unwrap_or_default() {
                if let Err(why) = self.deliver(&peer.phone(), device, stanza.clone()) {
                    self.problem(why);
                }
            }
            peer.keep_receipt(ReceivedReceipt {
                ids,
                kind,
                from: Jid::pn_device(&phone, device),
            });
        }
        self.bump();
        replies
    }

    /// Delivers a stanza to a device now, or at its next login.
    pub(crate) fn deliver(&self, phone: &str, device: u16, stanza: Node) -> Fallible<()> {
        let mut state = self.state();
        let conn = {
            let companion = state
                .accounts
                .get(phone)
                .and_then(|a| a.companions.get(&device))
                .ok_or_else(|| format!("{phone}:{device} is not a device"))?;
            companion.conn
        };
        let sent = match conn.and_then(|n| state.conns.get(n - 1)) {
            Some(conn) if conn.open => conn.tx.send(Command::Send(stanza.clone())).is_ok(),
            _ => false,
        };
        if let Some(companion) = state
            .accounts
            .get_mut(phone)
            .and_then(|a| a.companions.get_mut(&device))
        {
            if !sent {
                companion.offline.push(stanza);
            } else if stanza.tag == "message" {
                companion
                    .unacked
                    .push((attr(&stanza, "id").unwrap_or_default(), stanza));
            }
        }
        Ok(())
    }

    /// The linked devices of `phone`'s account.
    pub(crate) fn companions_of(&self, phone: &str) -> Fallible<Vec<u16>> {
        let state = self.state();
        let account = state
            .accounts
            .get(phone)
            .ok_or_else(|| format!("{phone} has no linked device here"))?;
        Ok(account.active().map(|(d, _)| *d).collect())
    }

    pub(crate) async fn send_from_peer(
        &self,
        peer: &Peer,
        to: &str,
        message: &wa::Message,
    ) -> Fallible<String> {
        let id = new_id();
        let kind = if message.conversation.is_some() || message.extended_text_message.is_set() {
            "text"
        } else {
            "media"
        };
        for device in self.companions_of(to)? {
            let (enc_type, ciphertext) = self.pairwise(peer, to, device, message).await?;
            let stanza = message_stanza(&peer.jid(), &id, kind, peer.name(), enc_type, ciphertext);
            self.deliver(to, device, stanza)?;
        }
        self.bump();
        Ok(id)
    }

    /// `message` encrypted by `peer` for linked device `device` of account `phone`,
    /// starting a session from the device's keys when there is none.
    pub(crate) async fn pairwise(
        &self,
        peer: &Peer,
        phone: &str,
        device: u16,
        message: &wa::Message,
    ) -> Fallible<(&'static str, Vec<u8>)> {
        let target = Jid::pn_device(phone, device);
        if !peer.has_session(&target).await {
            let bundle = {
                let mut state = self.state();
                let companion = state
                    .accounts
                    .get_mut(phone)
                    .and_then(|a| a.companions.get_mut(&device))
                    .ok_or("the device vanished")?;
                companion.keys.take_bundle(device)?
            };
            peer.install(&target, &bundle).await?;
        }
        peer.encrypt(&target, message).await
    }

    /// An account's own phone wrote `message` to `to`: its linked devices get the copy
    /// WhatsApp fans out to a sender's other devices, a `DeviceSentMessage` naming the
    /// chat, from the phone's address with the chat as `recipient`. Returns the id.
    pub(crate) async fn send_from_own_phone(
        &self,
        phone: &Peer,
        to: &Jid,
        message: &wa::Message,
    ) -> Fallible<String> {
        let id = new_id();
        let own = phone.phone();
        let wrapped = wa::Message {
            device_sent_message: whatsapp_rust::buffa::MessageField::some(
                wa::message::DeviceSentMessage {
                    destination_jid: Some(to.to_string()),
                    message: whatsapp_rust::buffa::MessageField::some(message.clone()),
                    phash: None,
                },
            ),
            ..Default::default()
        };
        for device in self.companions_of(&own)? {
            let (enc_type, ciphertext) = self.pairwise(phone, &own, device, &wrapped).await?;
            let mut stanza = message_stanza(
                &phone.jid(),
                &id,
                "text",
                phone.name(),
                enc_type,
                ciphertext,
            );
            stanza.attrs.insert("recipient", to.to_string());
            self.deliver(&own, device, stanza)?;
        }
        self.bump();
        Ok(id)
    }

    /// `peer` could not decrypt message `id` from the account `to`: a retry receipt
    /// (count 1, with the peer's registration id) to every linked device.
    pub(crate) fn retry_from_peer(&self, peer: &Peer, to: &str, id: &str) -> Fallible<()> {
        let registration = peer
            .client()
            .persistence_manager()
            .get_device_snapshot()
            .registration_id;
        for device in self.companions_of(to)? {
            let stanza = NodeBuilder::new("receipt")
                .attr("from", peer.jid())
                .attr("id", id.to_owned())
                .attr("type", "retry")
                .attr("t", now().to_string())
                .children([
                    NodeBuilder::new("retry")
                        .attr("count", "1")
                        .attr("id", id.to_owned())
                        .attr("t", now().to_string())
                        .attr("v", "1")
                        .build(),
                    NodeBuilder::new("registration")
                        .bytes(registration.to_be_bytes().to_vec())
                        .build(),
                ])
                .build();
            self.deliver(to, device, stanza)?;
        }
        Ok(())
    }

    pub(crate) fn receipt_from_peer(
        &self,
        peer: &Peer,
        to: &str,
        ids: &[&str],
        read: bool,
    ) -> Fallible<()> {
        for device in self.companions_of(to)? {
            let stanza = receipt_stanza(&peer.jid(), ids, read.then_some("read"));
            self.deliver(to, device, stanza)?;
        }
        Ok(())
    }

    pub(crate) fn unacked(&self, phone: &str, device: u16) -> Vec<String> {
        self.state()
            .accounts
            .get(phone)
            .and_then(|a| a.companions.get(&device))
            .map(|c| c.unacked.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn online(&self, phone: &str) -> bool {
        self.state()
            .accounts
            .get(phone)
            .is_some_and(|a| a.companions.values().any(|c| c.active))
    }

    pub(crate) fn registered(&self, phone: &str, device: u16) -> bool {
        self.state()
            .accounts
            .get(phone)
            .and_then(|a| a.companions.get(&device))
            .is_some_and(|c| c.signed_identity.is_some())
    }
}

impl DeviceKeys {
    /// The bundle a peer starts a session from, using up a one-time pre-key when one is
    /// left (WhatsApp hands each out once).
    fn take_bundle(&mut self, device: u16) -> Fallible<PreKeyBundle> {
        let pre_key = self.one_time.pop_front();
        self.bundle(device, pre_key)
    }

    fn bundle(&self, device: u16, pre_key: Option<(u32, [u8; 32])>) -> Fallible<PreKeyBundle> {
        let pre_key = match pre_key {
            Some((id, public)) => Some((
                id.into(),
                PublicKey::from_djb_public_key_bytes(&public).map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        PreKeyBundle::new(
            self.registration_id,
            u32::from(device).into(),
            pre_key,
            self.signed_id.into(),
            PublicKey::from_djb_public_key_bytes(&self.signed_public).map_err(|e| e.to_string())?,
            self.signed_signature.clone(),
            IdentityKey::new(
                PublicKey::from_djb_public_key_bytes(&self.identity).map_err(|e| e.to_string())?,
            ),
        )
        .map_err(|e| e.to_string())
    }
}

fn registration_keys(
    reg: &wa::client_payload::DevicePairingRegistrationData,
) -> Fallible<DeviceKeys> {
    let registration_id = reg
        .e_regid
        .as_deref()
        .and_then(be_u32)
        .ok_or("a registration without a registration id")?;
    let identity = reg
        .e_ident
        .as_deref()
        .and_then(|i| i.try_into().ok())
        .ok_or("a registration without an identity key")?;
    let signed_id = reg
        .e_skey_id
        .as_deref()
        .and_then(be_u32)
        .ok_or("a registration without a signed pre-key id")?;
    let signed_public = reg
        .e_skey_val
        .as_deref()
        .and_then(|k| k.try_into().ok())
        .ok_or("a registration without a signed pre-key")?;
    let signed_signature = reg
        .e_skey_sig
        .clone()
        .ok_or("a registration without a signed pre-key signature")?;
    Ok(DeviceKeys {
        registration_id,
        identity,
        signed_id,
        signed_public,
        signed_signature,
        one_time: VecDeque::new(),
    })
}

/// A big-endian number of up to four bytes (ids travel in 3 bytes, registration ids in 4).
fn be_u32(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 4 {
        return None;
    }
    Some(bytes.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)))
}

fn signed_prekey(skey: &Node) -> Option<(u32, [u8; 32], Vec<u8>)> {
    let id = be_u32(bytes(skey.get_optional_child("id")?)?)?;
    let value = bytes(skey.get_optional_child("value")?)?.try_into().ok()?;
    let signature = bytes(skey.get_optional_child("signature")?)?.to_vec();
    Some((id, value, signature))
}

/// The account's signed list of valid device key indexes.
fn key_index_list(account: &Account) -> Option<Node> {
    let valid: Vec<u32> = account.active().map(|(d, _)| u32::from(*d)).collect();
    let details = wa::ADVKeyIndexList {
        raw_id: Some(account.raw_id),
        timestamp: Some(now()),
        current_index: valid.iter().copied().max(),
        valid_indexes: valid,
        ..Default::default()
    }
    .encode_to_vec();
    let signature = account
        .phone
        .identity()
        .private_key
        .calculate_signature(&[&[6u8, 2][..], &details].concat(), &mut rand10::rng())
        .ok()?;
    let signed = wa::ADVSignedKeyIndexList {
        details: Some(details),
        account_signature: Some(signature.to_vec()),
        ..Default::default()
    }
    .encode_to_vec();
    Some(
        NodeBuilder::new("key-index-list")
            .attr("ts", now().to_string())
            .bytes(signed)
            .build(),
    )
}

fn privacy(id: &str) -> Node {
    let categories = [
        ("last", "all"),
        ("online", "all"),
        ("profile", "all"),
        ("status", "all"),
        ("groupadd", "all"),
        ("readreceipts", "all"),
        ("calladd", "all"),
        ("messages", "all"),
    ]
    .into_iter()
    .map(|(name, value)| {
        NodeBuilder::new("category")
            .attr("name", name)
            .attr("value", value)
            .build()
    });
    result(id)
        .children([NodeBuilder::new("privacy").children(categories).build()])
        .build()
}

/// A token for each `<token jid t type/>` asked for.
fn tokens(id: &str, asked: Option<&Node>) -> Node {
    let tokens = asked
        .and_then(|t| t.children())
        .unwrap_or_default()
        .iter()
        .map(|token| {
            let mut issued = NodeBuilder::new("token");
            for key in ["jid", "t", "type"] {
                if let Some(value) = attr(token, key) {
                    issued = issued.attr(key, value);
                }
            }
            let secret: [u8; 16] = rand10::random();
            issued.bytes(secret.to_vec()).build()
        });
    result(id)
        .children([NodeBuilder::new("tokens").children(tokens).build()])
        .build()
}

/// Every app-state collection is empty here: answered with no snapshot and no patches.
fn app_state(id: &str, sync: Option<&Node>) -> Node {
    let collections = sync
        .and_then(|s| s.children())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| attr(c, "name"))
        .map(|name| {
            NodeBuilder::new("collection")
                .attr("name", name)
                .attr("version", "0")
                .build()
        });
    result(id)
        .children([NodeBuilder::new("sync").children(collections).build()])
        .build()
}

pub(crate) fn message_stanza(
    from: &Jid,
    id: &str,
    kind: &str,
    name: &str,
    enc_type: &str,
    ciphertext: Vec<u8>,
) -> Node {
    NodeBuilder::new("message")
        .attr("from", from.clone())
        .attr("id", id.to_owned())
        .attr("t", now().to_string())
        .attr("type", kind.to_owned())
        .attr("notify", name.to_owned())
        .children([NodeBuilder::new("enc")
            .attr("v", "2")
            .attr("type", enc_type.to_owned())
            .bytes(ciphertext)
            .build()])
        .build()
}

fn receipt_stanza(from: &Jid, ids: &[&str], kind: Option<&str>) -> Node {
    let (first, rest) = match ids.split_first() {
        Some((first, rest)) => (*first, rest),
        None => ("", &[][..]),
    };
    let mut receipt = NodeBuilder::new("receipt")
        .attr("from", from.clone())
        .attr("id", first.to_owned())
        .attr("t", now().to_string());
    if let Some(kind) = kind {
        receipt = receipt.attr("type", kind.to_owned());
    }
    if !rest.is_empty() {
        receipt = receipt.children([NodeBuilder::new("list")
            .children(rest.iter().map(|id| {
                NodeBuilder::new("item")
                    .attr("id", (*id).to_owned())
                    .build()
            }))
            .build()]);
    }
    receipt.build()
}

/// A message id in the style of WhatsApp's phones.
pub(crate) fn new_id() -> String {
    let bytes: [u8; 10] = rand10::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    format!("3EB0{hex}")
}
