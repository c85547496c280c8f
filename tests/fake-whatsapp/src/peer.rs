//! The phones on the other end: WhatsApp users built on the library's own Signal code.
//!
//! Each peer is an unconnected whatsapp-rust [`Client`] on wacore's in-memory store: its
//! keys are a real device's keys, it decrypts what the client under test sends with
//! `signal().decrypt_message` and encrypts to it with `signal().encrypt_message`. The fake
//! server carries the stanzas; the peer never opens a connection of its own.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{Mutex as AsyncMutex, mpsc};
use whatsapp_rust::bot::Bot;
use whatsapp_rust::buffa::MessageField;
use whatsapp_rust::http::{HttpClient, HttpRequest, HttpResponse};
use whatsapp_rust::store::commands::DeviceCommand;
use whatsapp_rust::transport::{Transport, TransportEvent, TransportFactory};
use whatsapp_rust::wacore::download::{DownloadUtils, MediaType};
use whatsapp_rust::wacore::libsignal::protocol::{IdentityKey, PreKeyBundle};
use whatsapp_rust::wacore::message_processing::EncType;
use whatsapp_rust::wacore::messages::MessageUtils;
use whatsapp_rust::wacore::poll;
use whatsapp_rust::wacore::store::InMemoryBackend;
use whatsapp_rust::wacore_binary::node::Node;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, Jid, TokioRuntime, anyhow, async_channel, async_trait};

use crate::server::Inner;
use crate::wire::{Fallible, attr, bytes};

/// A message a peer decrypted.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    /// The stanza id: the id the sender's API returned.
    pub id: String,
    /// The device that sent it, as the server named it.
    pub from: Jid,
    /// The group it was written in, if any.
    pub group: Option<Jid>,
    /// `pkmsg` (a new session), `msg`, or `skmsg` (a group's or a status post's
    /// sender-key message).
    pub enc_type: String,
    /// The conversation text, or a caption, when the message has one.
    pub text: Option<String>,
    /// The whole decrypted message.
    pub message: wa::Message,
}

/// A receipt a peer received for messages it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedReceipt {
    /// The message ids it covers.
    pub ids: Vec<String>,
    /// `None` for a delivery receipt, else the receipt's type (`read`, `played`, …).
    pub kind: Option<String>,
    /// Who sent the receipt.
    pub from: Jid,
}

impl ReceivedReceipt {
    /// A delivery receipt: no type, or `inactive`, which is how a device that has not
    /// announced itself available (whatsapp-rust before its first presence) confirms
    /// delivery.
    pub fn is_delivery(&self) -> bool {
        matches!(self.kind.as_deref(), None | Some("inactive"))
    }
}

/// A presence or chat state a peer saw: someone online or offline, or typing to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPresence {
    /// Whose it is (phone-number form).
    pub from: Jid,
    /// `available`, `unavailable`, `composing`, `recording` or `paused`.
    pub state: String,
}

/// One WhatsApp user's phone (device 0). Cloning shares it.
#[derive(Clone)]
pub struct Peer {
    pub(crate) inner: Arc<PeerInner>,
}

pub(crate) struct PeerInner {
    pub(crate) jid: Jid,
    pub(crate) name: String,
    pub(crate) client: Arc<Client>,
    server: Weak<Inner>,
    messages_tx: mpsc::UnboundedSender<ReceivedMessage>,
    messages: AsyncMutex<mpsc::UnboundedReceiver<ReceivedMessage>>,
    receipts_tx: mpsc::UnboundedSender<ReceivedReceipt>,
    receipts: AsyncMutex<mpsc::UnboundedReceiver<ReceivedReceipt>>,
    presences_tx: mpsc::UnboundedSender<ReceivedPresence>,
    presences: AsyncMutex<mpsc::UnboundedReceiver<ReceivedPresence>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("jid", &self.inner.jid.to_string())
            .field("name", &self.inner.name)
            .finish()
    }
}

impl Peer {
    pub(crate) async fn create(phone: &str, name: &str, server: Weak<Inner>) -> Fallible<Peer> {
        let bot = Bot::builder()
            .with_backend(InMemoryBackend::new())
            .with_transport_factory(Offline)
            .with_http_client(Offline)
            .with_runtime(TokioRuntime)
            .build()
            .await
            .map_err(|e| format!("cannot build the peer {phone}: {e}"))?;
        let client = bot.client();
        let jid = Jid::pn(phone);
        let pm = client.persistence_manager();
        pm.process_command(DeviceCommand::SetId(Some(jid.clone())))
            .await;
        pm.process_command(DeviceCommand::SetPushName(name.to_owned()))
            .await;
        let (messages_tx, messages) = mpsc::unbounded_channel();
        let (receipts_tx, receipts) = mpsc::unbounded_channel();
        let (presences_tx, presences) = mpsc::unbounded_channel();
        Ok(Peer {
            inner: Arc::new(PeerInner {
                jid,
                name: name.to_owned(),
                client,
                server,
                messages_tx,
                messages: AsyncMutex::new(messages),
                receipts_tx,
                receipts: AsyncMutex::new(receipts),
                presences_tx,
                presences: AsyncMutex::new(presences),
            }),
        })
    }

    /// The user's address in phone-number form (`<phone>@s.whatsapp.net`).
    pub fn jid(&self) -> Jid {
        self.inner.jid.clone()
    }

    /// The phone number.
    pub fn phone(&self) -> String {
        self.inner.jid.user.to_string()
    }

    /// The name other users see.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The library client holding this phone's keys (to download media, say).
    pub fn client(&self) -> Arc<Client> {
        self.inner.client.clone()
    }

    /// The next message this phone decrypted, waiting up to `within`.
    pub async fn next_message(&self, within: Duration) -> Result<ReceivedMessage, String> {
        let mut messages = self.inner.messages.lock().await;
        tokio::time::timeout(within, messages.recv())
            .await
            .map_err(|_| format!("{} received no message within {within:?}", self.inner.jid))?
            .ok_or_else(|| "the fake WhatsApp is gone".to_owned())
    }

    /// The next receipt for this phone's messages, waiting up to `within`.
    pub async fn next_receipt(&self, within: Duration) -> Result<ReceivedReceipt, String> {
        let mut receipts = self.inner.receipts.lock().await;
        tokio::time::timeout(within, receipts.recv())
            .await
            .map_err(|_| format!("{} received no receipt within {within:?}", self.inner.jid))?
            .ok_or_else(|| "the fake WhatsApp is gone".to_owned())
    }

    /// The next presence or chat state this phone saw, waiting up to `within`.
    pub async fn next_presence(&self, within: Duration) -> Result<ReceivedPresence, String> {
        let mut presences = self.inner.presences.lock().await;
        tokio::time::timeout(within, presences.recv())
            .await
            .map_err(|_| format!("{} saw no presence within {within:?}", self.inner.jid))?
            .ok_or_else(|| "the fake WhatsApp is gone".to_owned())
    }

    /// Comes online (`true`) or goes offline: whoever follows this phone's presence
    /// hears of it.
    pub fn set_presence(&self, available: bool) -> Result<(), String> {
        self.server()?.presence_from_user(&self.phone(), available);
        Ok(())
    }

    /// Shows the account `to` that this phone is typing (`composing`), recording
    /// (`recording`) or neither (`paused`).
    pub fn typing(&self, to: &str, state: &str) -> Result<(), String> {
        self.server()?.chatstate_from_user(self, to, state)
    }

    /// Calls the account `to` (a video call with `video`); returns the call's id.
    pub fn call(&self, to: &str, video: bool) -> Result<String, String> {
        self.server()?.call_from_user(self, to, video)
    }

    /// Follows `phone`'s presence (its announcements reach [`Peer::next_presence`]).
    pub fn subscribe_presence(&self, phone: &str) -> Result<(), String> {
        self.server()?.subscribe(&self.phone(), phone);
        Ok(())
    }

    /// Sends a text to the account `to` (its linked devices); returns the message id.
    pub async fn send_text(&self, to: &str, text: &str) -> Result<String, String> {
        let message = wa::Message {
            conversation: Some(text.to_owned()),
            ..Default::default()
        };
        self.send_message(to, &message).await
    }

    /// Writes `text` in `group` (the accounts among its members get it); returns the
    /// message id.
    pub async fn send_group_text(&self, group: &Jid, text: &str) -> Result<String, String> {
        let message = wa::Message {
            conversation: Some(text.to_owned()),
            ..Default::default()
        };
        self.server()?
            .send_group_from_peer(self, group, &message)
            .await
    }

    /// Sends any message to the account `to`; returns the message id.
    pub async fn send_message(&self, to: &str, message: &wa::Message) -> Result<String, String> {
        let server = self.server()?;
        server.send_from_peer(self, to, message).await
    }

    /// Votes in `poll`, a poll the account `to` sent this peer: the chosen options'
    /// hashes sealed with the poll's secret under the creator's and this voter's
    /// addresses, with the library's own poll crypto, as a WhatsApp client does.
    pub async fn vote(
        &self,
        to: &str,
        poll: &ReceivedMessage,
        options: &[&str],
    ) -> Result<String, String> {
        let secret = poll
            .message
            .message_context_info
            .as_option()
            .and_then(|c| c.message_secret.clone())
            .ok_or("the poll carries no secret")?;
        let hashes: Vec<Vec<u8>> = options
            .iter()
            .map(|o| poll::compute_option_hash(o).to_vec())
            .collect();
        let creator = format!("{to}@s.whatsapp.net");
        let voter = format!("{}@s.whatsapp.net", self.phone());
        let (payload, iv) =
            poll::encrypt_poll_vote_with_secret(&hashes, &secret, &poll.id, &creator, &voter)
                .map_err(|e| format!("cannot seal the vote: {e}"))?;
        let message = wa::Message {
            poll_update_message: MessageField::some(wa::message::PollUpdateMessage {
                poll_creation_message_key: MessageField::some(wa::MessageKey {
                    remote_jid: Some(creator),
                    from_me: Some(false),
                    id: Some(poll.id.clone()),
                    participant: None,
                }),
                vote: MessageField::some(wa::message::PollEncValue {
                    enc_payload: Some(payload),
                    enc_iv: Some(iv.to_vec()),
                }),
                sender_timestamp_ms: Some(chrono_millis()),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.send_message(to, &message).await
    }

    /// For an account's own phone: writes `text` to the user `to` from the phone itself;
    /// the account's linked devices see it as their own outgoing message. (The user's
    /// phone is not part of this: the fan-out to the sender's devices is.)
    pub async fn send_text_from_phone(&self, to: &str, text: &str) -> Result<String, String> {
        let server = self.server()?;
        let message = wa::Message {
            conversation: Some(text.to_owned()),
            ..Default::default()
        };
        server
            .send_from_own_phone(self, &Jid::pn(to), &message)
            .await
    }

    /// Tells the account `to` that this phone got (`read == false`) or read the messages.
    pub async fn send_receipt(&self, to: &str, ids: &[&str], read: bool) -> Result<(), String> {
        let server = self.server()?;
        server.receipt_from_peer(self, to, ids, read)
    }

    /// Tells the account `to` that this phone could not decrypt message `id` (a retry
    /// receipt): the sender is expected to send it again.
    pub async fn send_retry_receipt(&self, to: &str, id: &str) -> Result<(), String> {
        let server = self.server()?;
        server.retry_from_peer(self, to, id)
    }

    /// Sends an image to the account `to`: encrypted with a fresh media key, uploaded to
    /// the fake's media server, announced in an image message. Returns the message id.
    pub async fn send_image(
        &self,
        to: &str,
        image: &[u8],
        mimetype: &str,
        caption: Option<&str>,
    ) -> Result<String, String> {
        let server = self.server()?;
        let encrypted = whatsapp_rust::wacore::upload::encrypt_media(image, MediaType::Image)
            .map_err(|e| format!("encrypting the image: {e}"))?;
        let direct_path = format!("/v/fake/{}", crate::server::new_id());
        server
            .blobs
            .put(direct_path.clone(), encrypted.data_to_upload);
        let message = wa::Message {
            image_message: whatsapp_rust::buffa::MessageField::some(wa::message::ImageMessage {
                url: Some(format!("https://{}{direct_path}", crate::MEDIA_HOST)),
                direct_path: Some(direct_path),
                mimetype: Some(mimetype.to_owned()),
                caption: caption.map(str::to_owned),
                media_key: Some(encrypted.media_key.to_vec()),
                file_sha256: Some(encrypted.file_sha256.to_vec()),
                file_enc_sha256: Some(encrypted.file_enc_sha256.to_vec()),
                file_length: Some(image.len() as u64),
                media_key_timestamp: Some(crate::wire::now() as i64),
                ..Default::default()
            }),
            ..Default::default()
        };
        server.send_from_peer(self, to, &message).await
    }

    /// The plaintext of the attachment of `message` (image, video, audio, document or
    /// sticker), fetched from the fake's media server and decrypted with its media key.
    pub fn download(&self, message: &wa::Message) -> Result<Vec<u8>, String> {
        let server = self.server()?;
        let (direct_path, media_key, file_sha256, kind) =
            attachment(message).ok_or_else(|| "the message has no attachment".to_owned())?;
        let blob = server
            .blobs
            .get(&direct_path)
            .ok_or_else(|| format!("the media server has nothing at {direct_path}"))?;
        let plain = DownloadUtils::verify_and_decrypt(&blob, &media_key, kind)
            .map_err(|e| format!("decrypting {direct_path}: {e}"))?;
        DownloadUtils::validate_plaintext_sha256(&plain, &file_sha256)
            .map_err(|e| format!("{direct_path}: {e}"))?;
        Ok(plain)
    }

    fn server(&self) -> Result<Arc<Inner>, String> {
        self.inner
            .server
            .upgrade()
            .ok_or_else(|| "the fake WhatsApp is gone".to_owned())
    }

    /// This phone's key bundle, as the server hands it out (no one-time pre-key).
    pub(crate) fn bundle(&self) -> Fallible<PreKeyBundle> {
        let device = self
            .inner
            .client
            .persistence_manager()
            .get_device_snapshot();
        PreKeyBundle::new(
            device.registration_id,
            0u32.into(),
            None,
            device.signed_pre_key_id.into(),
            device.signed_pre_key.public_key,
            device.signed_pre_key_signature.to_vec(),
            IdentityKey::new(device.identity_key.public_key),
        )
        .map_err(|e| format!("the bundle of {}: {e}", self.inner.jid))
    }

    /// The identity key pair: for the account's primary phone, the account's key.
    pub(crate) fn identity(&self) -> whatsapp_rust::wacore::libsignal::protocol::KeyPair {
        self.inner
            .client
            .persistence_manager()
            .get_device_snapshot()
            .identity_key
            .clone()
    }

    /// Decrypts what `from` sent this phone under stanza `id`, and keeps it for
    /// [`Peer::next_message`].
    pub(crate) async fn receive(
        &self,
        from: &Jid,
        id: &str,
        enc_type: &str,
        version: u8,
        ciphertext: &[u8],
    ) -> Fallible<ReceivedMessage> {
        let kind = EncType::from_wire(enc_type)
            .ok_or_else(|| format!("unknown encryption type {enc_type}"))?;
        let padded = self
            .inner
            .client
            .signal()
            .decrypt_message(from, kind, ciphertext)
            .await
            .map_err(|e| format!("{} cannot decrypt {id} from {from}: {e}", self.inner.jid))?;
        let message = whatsapp_rust::wacore::messages::decode_plaintext(&padded, version)
            .map_err(|e| format!("{} cannot decode {id}: {e}", self.inner.jid))?;
        let message = whatsapp_rust::wacore::messages::unwrap_device_sent(message);
        // A sender key comes with its copy: kept, as a phone does, to read the group's
        // (or the status post's) sender-key message.
        if let Some(key) = message.sender_key_distribution_message.as_option()
            && let (Some(group), Some(distribution)) = (
                key.group_id.as_deref(),
                key.axolotl_sender_key_distribution_message.as_deref(),
            )
        {
            let group: Jid = group
                .parse()
                .map_err(|e| format!("{} got a sender key for {group}: {e}", self.inner.jid))?;
            self.inner
                .client
                .signal()
                .process_sender_key_distribution(&group, from, distribution)
                .await
                .map_err(|e| {
                    format!(
                        "{} cannot keep the sender key of {from}: {e}",
                        self.inner.jid
                    )
                })?;
        }
        Ok(self.keep(id, from, enc_type, message))
    }

    /// Decrypts a sender-key message to `group` (a status post's `status@broadcast`)
    /// from `from` with the key its pairwise copy carried.
    pub(crate) async fn receive_sender_key_message(
        &self,
        group: &Jid,
        from: &Jid,
        id: &str,
        version: u8,
        ciphertext: &[u8],
    ) -> Fallible<ReceivedMessage> {
        let padded = self
            .inner
            .client
            .signal()
            .decrypt_group_message(group, from, ciphertext)
            .await
            .map_err(|e| {
                format!(
                    "{} cannot decrypt {id} to {group} from {from}: {e}",
                    self.inner.jid
                )
            })?;
        let message = whatsapp_rust::wacore::messages::decode_plaintext(&padded, version)
            .map_err(|e| format!("{} cannot decode {id}: {e}", self.inner.jid))?;
        Ok(self.keep(id, from, "skmsg", message))
    }

    /// Hands a decrypted message to whoever waits for this phone's messages.
    fn keep(&self, id: &str, from: &Jid, enc_type: &str, message: wa::Message) -> ReceivedMessage {
        let received = ReceivedMessage {
            id: id.to_owned(),
            from: from.clone(),
            group: None,
            enc_type: enc_type.to_owned(),
            text: text_of(&message),
            message,
        };
        let _ = self.inner.messages_tx.send(received.clone());
        received
    }

    /// Takes in what `from` wrote to `group`: first the sender key it sent this phone
    /// (`key`, a pairwise `enc` carrying a `SenderKeyDistributionMessage`), if any, then
    /// the message itself (`skmsg`), kept for [`Peer::next_message`].
    pub(crate) async fn receive_group(
        &self,
        group: &Jid,
        from: &Jid,
        id: &str,
        key: Option<&Node>,
        skmsg: &Node,
    ) -> Fallible<()> {
        let who = &self.inner.jid;
        let signal = self.inner.client.signal();
        if let Some(enc) = key {
            let kind = attr(enc, "type").unwrap_or_default();
            let kind = EncType::from_wire(&kind)
                .ok_or_else(|| format!("unknown encryption type {kind}"))?;
            let padded = signal
                .decrypt_message(from, kind, bytes(enc).unwrap_or_default())
                .await
                .map_err(|e| format!("{who} cannot decrypt the sender key of {id}: {e}"))?;
            let message = whatsapp_rust::wacore::messages::decode_plaintext(&padded, version(enc))
                .map_err(|e| format!("{who} cannot decode the sender key of {id}: {e}"))?;
            let distribution = message
                .sender_key_distribution_message
                .as_option()
                .and_then(|d| d.axolotl_sender_key_distribution_message.clone())
                .ok_or_else(|| format!("{id}: what {from} sent {who} carries no sender key"))?;
            signal
                .process_sender_key_distribution(group, from, &distribution)
                .await
                .map_err(|e| format!("{who} cannot take the sender key of {from}: {e}"))?;
        }
        let padded = signal
            .decrypt_group_message(group, from, bytes(skmsg).unwrap_or_default())
            .await
            .map_err(|e| format!("{who} cannot decrypt {id} in {group}: {e}"))?;
        let message = whatsapp_rust::wacore::messages::decode_plaintext(&padded, version(skmsg))
            .map_err(|e| format!("{who} cannot decode {id}: {e}"))?;
        let _ = self.inner.messages_tx.send(ReceivedMessage {
            id: id.to_owned(),
            from: from.clone(),
            group: Some(group.clone()),
            enc_type: "skmsg".to_owned(),
            text: text_of(&message),
            message,
        });
        Ok(())
    }

    /// `message` sealed with this phone's sender key for `group`: the key's current
    /// distribution message (so that a member without it can read this message) and
    /// the skmsg.
    pub(crate) async fn encrypt_for_group(
        &self,
        group: &Jid,
        message: &wa::Message,
    ) -> Fallible<(Vec<u8>, Vec<u8>)> {
        let who = &self.inner.jid;
        let signal = self.inner.client.signal();
        // Taken before the encryption, the distribution names the step the message
        // uses.
        let distribution = signal
            .sender_key_distribution(group, who)
            .await
            .map_err(|e| format!("{who} has no sender key for {group}: {e}"))?;
        let (_, skmsg) = signal
            .encrypt_group_message(group, &MessageUtils::encode_and_pad(message))
            .await
            .map_err(|e| format!("{who} cannot encrypt for {group}: {e}"))?;
        Ok((distribution, skmsg))
    }

    pub(crate) fn keep_presence(&self, presence: ReceivedPresence) {
        let _ = self.inner.presences_tx.send(presence);
    }

    pub(crate) fn keep_receipt(&self, receipt: ReceivedReceipt) {
        let _ = self.inner.receipts_tx.send(receipt);
    }

    pub(crate) async fn has_session(&self, with: &Jid) -> bool {
        matches!(
            self.inner.client.signal().session_info(with).await,
            Ok(Some(_))
        )
    }

    pub(crate) async fn install(&self, with: &Jid, bundle: &PreKeyBundle) -> Fallible<()> {
        self.inner
            .client
            .signal()
            .install_prekey_bundle(with, bundle)
            .await
            .map(|_| ())
            .map_err(|e| format!("{} cannot start a session with {with}: {e}", self.inner.jid))
    }

    /// Encrypts `message` for device `to`; returns the `enc` type and the ciphertext.
    pub(crate) async fn encrypt(
        &self,
        to: &Jid,
        message: &wa::Message,
    ) -> Fallible<(&'static str, Vec<u8>)> {
        let plaintext = MessageUtils::encode_and_pad(message);
        let (kind, ciphertext) = self
            .inner
            .client
            .signal()
            .encrypt_message(to, &plaintext)
            .await
            .map_err(|e| format!("{} cannot encrypt for {to}: {e}", self.inner.jid))?;
        let kind = match kind {
            EncType::PreKeyMessage => "pkmsg",
            _ => "msg",
        };
        Ok((kind, ciphertext))
    }
}

/// An `enc`'s padding version (`v`), 2 unless it says otherwise.
fn version(enc: &Node) -> u8 {
    attr(enc, "v").and_then(|v| v.parse().ok()).unwrap_or(2)
}

/// The text a person would read: the conversation, an extended text, or a caption.
pub(crate) fn text_of(message: &wa::Message) -> Option<String> {
    if let Some(text) = &message.conversation {
        return Some(text.clone());
    }
    if let Some(ext) = message.extended_text_message.as_option() {
        return ext.text.clone();
    }
    if let Some(image) = message.image_message.as_option() {
        return image.caption.clone();
    }
    if let Some(video) = message.video_message.as_option() {
        return video.caption.clone();
    }
    if let Some(document) = message.document_message.as_option() {
        return document.caption.clone();
    }
    None
}

/// Where an attachment is, its key, its plaintext hash and its kind.
fn attachment(message: &wa::Message) -> Option<(String, Vec<u8>, Vec<u8>, MediaType)> {
    macro_rules! media {
        ($field:ident, $kind:expr) => {
            if let Some(m) = message.$field.as_option() {
                return Some((
                    m.direct_path.clone()?,
                    m.media_key.clone()?,
                    m.file_sha256.clone()?,
                    $kind,
                ));
            }
        };
    }
    media!(image_message, MediaType::Image);
    media!(video_message, MediaType::Video);
    media!(audio_message, MediaType::Audio);
    media!(document_message, MediaType::Document);
    media!(sticker_message, MediaType::Sticker);
    None
}

/// The network seams of a peer's client: it never connects.
struct Offline;

#[async_trait]
impl TransportFactory for Offline {
    async fn create_transport(
        &self,
    ) -> Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>), anyhow::Error> {
        Err(anyhow::anyhow!("a fake phone does not connect"))
    }
}

#[async_trait]
impl HttpClient for Offline {
    async fn execute(&self, _request: HttpRequest) -> anyhow::Result<HttpResponse> {
        Err(anyhow::anyhow!("a fake phone does not fetch"))
    }
}

/// Now, in milliseconds since the epoch.
fn chrono_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
