//! Instance events: what happened to an instance, as `/events`, the SSE stream and the
//! webhooks carry it. This file is the one home of that contract.
//!
//! Producers build a typed [`Event`]; its serialisation (`data`, camelCase, with the
//! `instanceId` every event carries) is the wire form, byte for byte the same in all
//! three places:
//! - the webhook body: `{"id", "event": <kind>, "data", "timestamp"}` ([`InstanceEvent::webhook_body`]);
//! - an element of `/events` and of the SSE stream: `{"type": <kind>, "timestamp", "data"}`
//!   ([`InstanceEvent::element`]).
//!
//! Storage keeps the kind and the `data` object; [`InstanceEvent::from_stored`] reads them
//! back into the typed form.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};

use super::instance::LimitPeriod;
use super::message::{Message, MessageStatus, Typed};
use super::new_id;

/// The kinds of events, by their wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    QrReceived,
    Connected,
    Disconnected,
    MessageReceived,
    MessageSent,
    MessageStatus,
    MessageReaction,
    MessageEdited,
    MessageRevoked,
    PollVote,
    PresenceUpdate,
    GroupUpdate,
    CallReceived,
    ChatUpdate,
    LabelUpdate,
    LimitExceeded,
    WebhookUpdated,
    WebhookTest,
    WebhookPaused,
}

impl EventKind {
    pub const ALL: [EventKind; 19] = [
        EventKind::QrReceived,
        EventKind::Connected,
        EventKind::Disconnected,
        EventKind::MessageReceived,
        EventKind::MessageSent,
        EventKind::MessageStatus,
        EventKind::MessageReaction,
        EventKind::MessageEdited,
        EventKind::MessageRevoked,
        EventKind::PollVote,
        EventKind::PresenceUpdate,
        EventKind::GroupUpdate,
        EventKind::CallReceived,
        EventKind::ChatUpdate,
        EventKind::LabelUpdate,
        EventKind::LimitExceeded,
        EventKind::WebhookUpdated,
        EventKind::WebhookTest,
        EventKind::WebhookPaused,
    ];

    /// The wire name (`message_received`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::QrReceived => "qr_received",
            EventKind::Connected => "connected",
            EventKind::Disconnected => "disconnected",
            EventKind::MessageReceived => "message_received",
            EventKind::MessageSent => "message_sent",
            EventKind::MessageStatus => "message_status",
            EventKind::MessageReaction => "message_reaction",
            EventKind::MessageEdited => "message_edited",
            EventKind::MessageRevoked => "message_revoked",
            EventKind::PollVote => "poll_vote",
            EventKind::PresenceUpdate => "presence_update",
            EventKind::GroupUpdate => "group_update",
            EventKind::CallReceived => "call_received",
            EventKind::ChatUpdate => "chat_update",
            EventKind::LabelUpdate => "label_update",
            EventKind::LimitExceeded => "limit_exceeded",
            EventKind::WebhookUpdated => "webhook_updated",
            EventKind::WebhookTest => "webhook_test",
            EventKind::WebhookPaused => "webhook_paused",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown event type '{s}'"))
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What happened, with what the contract says about it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A QR code to scan (they rotate; `attempt` counts them within one pairing).
    QrReceived(QrReceived),
    /// The session is linked and online.
    Connected(Connected),
    /// The connection closed; `willReconnect` says whether it comes back by itself.
    Disconnected(Disconnected),
    MessageReceived(Box<MessageReceived>),
    MessageSent(Box<MessageSent>),
    /// A sent message moved forward (`delivered`, `read`).
    MessageStatus(MessageStatusChanged),
    /// Someone (or the account) reacted to a stored message, or took the reaction back.
    MessageReaction(MessageReaction),
    /// A stored message's text was edited, by the account or by its author.
    MessageEdited(MessageEdited),
    /// A message was deleted: for everyone (by the account or its author), or only
    /// from this account's history.
    MessageRevoked(MessageRevoked),
    /// Someone (or the account) voted in a poll, or took the vote back.
    PollVote(PollVoted),
    /// A contact came online or went offline, or is typing or recording in a chat
    /// (only with `notifyPresence`).
    PresenceUpdate(PresenceUpdate),
    /// A group the account is in changed: members, roles, subject, description,
    /// settings; or the account created, joined or left one.
    GroupUpdate(GroupUpdated),
    /// Someone called the account (voice or video); `rejected` when the instance's
    /// `rejectCalls` turned it down.
    CallReceived(CallReceived),
    /// A chat was archived, pinned, muted or labelled (or the reverse), through the API
    /// or on another of the account's devices: the chat as it is now.
    ChatUpdate(ChatUpdated),
    /// A label was created, changed or deleted (on another of the account's devices, or
    /// through the API).
    LabelUpdate(LabelUpdated),
    /// A usage limit was reached (once per instance and period).
    LimitExceeded(LimitExceeded),
    WebhookUpdated(WebhookUpdated),
    /// A delivery asked for to check the endpoint.
    WebhookTest(WebhookTest),
    /// Delivery to the instance's webhook was paused (by a request, or because the
    /// endpoint kept failing).
    WebhookPaused(WebhookPaused),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QrReceived {
    pub qr_code: String,
    #[serde(default)]
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connected {
    /// The linked phone number (digits).
    #[serde(default)]
    pub phone: String,
    #[serde(default)]
    pub push_name: Option<String>,
}

/// The `reason` of a disconnection the user or the phone asked for (the contract's word).
pub const LOGOUT_REASON: &str = "logout";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disconnected {
    /// Why: [`LOGOUT_REASON`] after a logout, else what the engine reported.
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub will_reconnect: bool,
}

/// The attachment fields of a message event; present when `hasMedia` is true.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFields {
    /// Where the owner downloads the file from this server.
    #[serde(default)]
    pub media_url: Option<String>,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub caption: Option<String>,
}

impl MediaFields {
    /// The attachment fields of `message`'s events; None for a text message.
    pub fn of(message: &Message) -> Option<MediaFields> {
        message.has_media.then(|| MediaFields {
            media_url: message.media_url.clone(),
            mime_type: message.mime_type.clone(),
            file_name: message.file_name.clone(),
            caption: message.caption.clone(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageReceived {
    /// WhatsApp's id of the message.
    pub message_id: String,
    /// The chat (the contract's name for it).
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub remote_jid: String,
    /// Who wrote it: the chat itself outside groups; the phone form when known.
    #[serde(default)]
    pub sender: String,
    #[serde(default)]
    pub from_me: bool,
    #[serde(default)]
    pub body: Option<String>,
    /// `conversation` for text, else the media kind.
    #[serde(rename = "type", default)]
    pub message_type: String,
    /// Unix seconds, as WhatsApp stamped the message.
    #[serde(default)]
    pub timestamp: i64,
    #[serde(default)]
    pub has_media: bool,
    #[serde(default)]
    pub push_name: Option<String>,
    #[serde(default)]
    pub is_group: bool,
    pub status: MessageStatus,
    /// Engine details (push name, timestamp, sender).
    #[serde(default)]
    pub metadata: serde_json::Value,
    #[serde(flatten, default)]
    pub media: Option<MediaFields>,
    #[serde(flatten, default)]
    pub reply: ReplyFields,
    /// A location, contact cards or a poll.
    #[serde(flatten, default)]
    pub typed: Typed,
}

/// What a message refers to: the message it replies to and the people it mentions;
/// absent from the payload when it has neither.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplyFields {
    /// The id of the message of the same chat it replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quoted_message_id: Option<String>,
    /// The people it mentions (`…@s.whatsapp.net`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
}

impl ReplyFields {
    pub fn of(message: &Message) -> ReplyFields {
        ReplyFields {
            quoted_message_id: message.quoted_message_id.clone(),
            mentions: message.mentions.clone(),
        }
    }
}

/// A reaction to a stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageReaction {
    /// The id of the message reacted to.
    pub message_id: String,
    /// The chat.
    #[serde(default)]
    pub remote_jid: String,
    /// Who reacted; the account's own address when `fromMe`.
    #[serde(default)]
    pub sender: String,
    /// The account reacted (through the API or from its phone).
    #[serde(default)]
    pub from_me: bool,
    /// Empty when the reaction was taken back.
    #[serde(default)]
    pub emoji: String,
    /// Unix seconds.
    #[serde(default)]
    pub timestamp: i64,
}

/// A message's new text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageEdited {
    /// The id of the message edited.
    pub message_id: String,
    /// The chat.
    pub remote_jid: String,
    /// Who edited it (its author); the account's own address when `fromMe`.
    #[serde(default)]
    pub sender: String,
    #[serde(default)]
    pub from_me: bool,
    /// The new text (a media message's new caption).
    #[serde(default)]
    pub message: String,
    /// Unix seconds.
    #[serde(default)]
    pub timestamp: i64,
}

/// A deleted message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageRevoked {
    /// The id of the message deleted.
    pub message_id: String,
    /// The chat.
    pub remote_jid: String,
    /// Who deleted it; the account's own address when `fromMe`.
    #[serde(default)]
    pub sender: String,
    #[serde(default)]
    pub from_me: bool,
    /// Deleted for everyone in the chat; false when only removed from this account's
    /// history.
    #[serde(default = "yes")]
    pub for_everyone: bool,
    /// Unix seconds.
    #[serde(default)]
    pub timestamp: i64,
}

/// A vote in a poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollVoted {
    /// The id of the poll's message.
    pub message_id: String,
    /// The chat.
    pub remote_jid: String,
    /// Who voted; the account's own address when `fromMe`.
    #[serde(default)]
    pub voter: String,
    #[serde(default)]
    pub from_me: bool,
    /// The options chosen, by name; empty when the vote was taken back.
    #[serde(default)]
    pub options: Vec<String>,
    /// Unix seconds.
    #[serde(default)]
    pub timestamp: i64,
}

/// What changed in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GroupAction {
    /// The group was created (with `participants` and `subject`).
    Create,
    /// `participants` joined or were added.
    Add,
    /// `participants` left or were removed.
    Remove,
    /// `participants` became admins.
    Promote,
    /// `participants` are admins no more.
    Demote,
    /// A new `subject`.
    Subject,
    /// A new `description` (absent: removed).
    Description,
    /// `announce` or `locked` changed.
    Settings,
}

/// A change of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupUpdated {
    /// The group (`…@g.us`).
    pub remote_jid: String,
    /// Who made the change, when WhatsApp says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub action: GroupAction,
    /// The members concerned (`add`, `remove`, `promote`, `demote`, `create`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub participants: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Only admins send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<bool>,
    /// Only admins change the group's info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
    /// Unix seconds.
    #[serde(default)]
    pub timestamp: i64,
}

/// Whether someone is online, or what they are doing in a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Presence {
    /// Online.
    Available,
    /// Offline.
    Unavailable,
    /// Typing in the chat.
    Composing,
    /// Recording a voice message in the chat.
    Recording,
    /// Stopped typing or recording.
    Paused,
}

impl Presence {
    /// Whether this is something done in one chat (typing, recording, pausing) rather
    /// than being online or offline.
    pub fn is_chat_state(self) -> bool {
        matches!(
            self,
            Presence::Composing | Presence::Recording | Presence::Paused
        )
    }
}

/// An incoming call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallReceived {
    /// The caller (the phone form when known).
    pub remote_jid: String,
    /// WhatsApp's id of the call.
    pub call_id: String,
    #[serde(default)]
    pub video: bool,
    /// A group call.
    #[serde(default)]
    pub is_group: bool,
    /// Turned down by the instance's `rejectCalls`.
    #[serde(default)]
    pub rejected: bool,
    /// Unix seconds.
    #[serde(default)]
    pub timestamp: i64,
}

/// A chat's settings after a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatUpdated {
    pub remote_jid: String,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub pinned: bool,
    #[serde(default)]
    pub muted: bool,
    /// When the mute ends (ISO 8601); null when not muted or muted until unmuted.
    #[serde(default)]
    pub muted_until: Option<String>,
    /// The ids of the labels on the chat.
    #[serde(default)]
    pub labels: Vec<String>,
    /// The change was made on another of the account's devices (the phone).
    #[serde(default)]
    pub from_phone: bool,
}

/// A label after a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelUpdated {
    pub label_id: String,
    /// Absent when deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<i32>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub from_phone: bool,
}

/// A contact's presence or chat state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceUpdate {
    /// The chat: the contact for presence and one-to-one typing, the group for typing
    /// in a group.
    pub remote_jid: String,
    /// Whose presence it is.
    #[serde(default)]
    pub sender: String,
    pub presence: Presence,
    /// With `unavailable`, when WhatsApp says they were last online (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<i64>,
    /// Unix seconds.
    #[serde(default)]
    pub timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageSent {
    pub message_id: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub body: Option<String>,
    /// `text`, or the media kind.
    #[serde(rename = "type", default)]
    pub message_type: String,
    #[serde(default)]
    pub timestamp: i64,
    #[serde(default)]
    pub has_media: bool,
    #[serde(default = "yes")]
    pub from_me: bool,
    pub status: MessageStatus,
    #[serde(flatten, default)]
    pub media: Option<MediaFields>,
    #[serde(flatten, default)]
    pub reply: ReplyFields,
    /// A location, contact cards or a poll.
    #[serde(flatten, default)]
    pub typed: Typed,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageStatusChanged {
    pub message_id: String,
    pub status: MessageStatus,
    /// The chat the receipt came from.
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub remote_jid: String,
    #[serde(default)]
    pub from_me: bool,
}

impl MessageStatusChanged {
    /// The change `message` (as stored after it) went through: reported by `from` (the
    /// chat a receipt came from), or by the message's own chat when None.
    pub fn of(message: &Message, from: Option<&str>) -> Self {
        MessageStatusChanged {
            message_id: message.message_id.clone(),
            status: message.status,
            from: from.unwrap_or(&message.remote_jid).to_owned(),
            remote_jid: message.remote_jid.clone(),
            from_me: message.from_me,
        }
    }
}

/// The `message_status` event a status change is to be reported by, made when the change
/// is queued: its id and time then follow the order events are stored in, which the
/// webhook queue's cursor and the event stream's resumes rely on (an id made when the
/// write runs could come after those of writes queued behind it). What it says comes
/// from the message as the change left it ([`StatusReport::event`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    pub id: String,
    pub timestamp: DateTime<Utc>,
    /// Who reported the change (the chat a receipt came from); the message's own chat
    /// when None.
    pub from: Option<String>,
}

impl StatusReport {
    /// A report made now.
    pub fn new(from: Option<&str>) -> Self {
        StatusReport {
            id: new_id(),
            timestamp: Utc::now(),
            from: from.map(str::to_owned),
        }
    }

    /// The event reporting the change `message` (as stored after it) went through.
    pub fn event(&self, message: &Message) -> InstanceEvent {
        InstanceEvent {
            id: self.id.clone(),
            instance_id: message.instance_id.clone(),
            timestamp: self.timestamp,
            event: Event::MessageStatus(MessageStatusChanged::of(message, self.from.as_deref())),
        }
    }
}

/// Usage at the moment a limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitUsage {
    #[serde(default)]
    pub messages_sent: u64,
    #[serde(default)]
    pub api_calls: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitExceeded {
    /// `maxMessagesSent`, `maxApiCalls`.
    #[serde(default)]
    pub exceeded_limits: Vec<String>,
    #[serde(default)]
    pub usage: LimitUsage,
    pub period: LimitPeriod,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookUpdated {
    /// When the settings changed (ISO 8601), as the contract shows.
    #[serde(default)]
    pub timestamp: String,
    #[serde(default)]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub webhook_enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookTest {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub webhook_url: String,
}

/// Why webhook delivery was paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// `POST /api/instances/{id}/webhook/pause`.
    Manual,
    /// Every attempt failed for longer than the server's `WEBHOOK_AUTO_PAUSE_MS`.
    Failing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPaused {
    pub reason: PauseReason,
    /// With `failing`: when the current run of failed attempts began (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::QrReceived(_) => EventKind::QrReceived,
            Event::Connected(_) => EventKind::Connected,
            Event::Disconnected(_) => EventKind::Disconnected,
            Event::MessageReceived(_) => EventKind::MessageReceived,
            Event::MessageSent(_) => EventKind::MessageSent,
            Event::MessageStatus(_) => EventKind::MessageStatus,
            Event::MessageReaction(_) => EventKind::MessageReaction,
            Event::MessageEdited(_) => EventKind::MessageEdited,
            Event::MessageRevoked(_) => EventKind::MessageRevoked,
            Event::PollVote(_) => EventKind::PollVote,
            Event::PresenceUpdate(_) => EventKind::PresenceUpdate,
            Event::GroupUpdate(_) => EventKind::GroupUpdate,
            Event::CallReceived(_) => EventKind::CallReceived,
            Event::ChatUpdate(_) => EventKind::ChatUpdate,
            Event::LabelUpdate(_) => EventKind::LabelUpdate,
            Event::LimitExceeded(_) => EventKind::LimitExceeded,
            Event::WebhookUpdated(_) => EventKind::WebhookUpdated,
            Event::WebhookTest(_) => EventKind::WebhookTest,
            Event::WebhookPaused(_) => EventKind::WebhookPaused,
        }
    }

    /// Reads a stored `data` object back as the event of `kind`. Fields a payload does
    /// not name (the `instanceId`) are ignored; fields it names but `data` lacks take
    /// their defaults.
    ///
    /// Fails when `data` does not fit the kind's payload.
    pub fn from_data(kind: EventKind, data: serde_json::Value) -> Result<Event, String> {
        use serde_json::from_value as read;
        let fit = |e: serde_json::Error| format!("{kind} event data: {e}");
        Ok(match kind {
            EventKind::QrReceived => Event::QrReceived(read(data).map_err(fit)?),
            EventKind::Connected => Event::Connected(read(data).map_err(fit)?),
            EventKind::Disconnected => Event::Disconnected(read(data).map_err(fit)?),
            EventKind::MessageReceived => {
                let mut m: MessageReceived = read(data).map_err(fit)?;
                if !m.has_media {
                    m.media = None;
                }
                Event::MessageReceived(Box::new(m))
            }
            EventKind::MessageSent => {
                let mut m: MessageSent = read(data).map_err(fit)?;
                if !m.has_media {
                    m.media = None;
                }
                Event::MessageSent(Box::new(m))
            }
            EventKind::MessageStatus => Event::MessageStatus(read(data).map_err(fit)?),
            EventKind::MessageReaction => Event::MessageReaction(read(data).map_err(fit)?),
            EventKind::MessageEdited => Event::MessageEdited(read(data).map_err(fit)?),
            EventKind::MessageRevoked => Event::MessageRevoked(read(data).map_err(fit)?),
            EventKind::PollVote => Event::PollVote(read(data).map_err(fit)?),
            EventKind::PresenceUpdate => Event::PresenceUpdate(read(data).map_err(fit)?),
            EventKind::GroupUpdate => Event::GroupUpdate(read(data).map_err(fit)?),
            EventKind::CallReceived => Event::CallReceived(read(data).map_err(fit)?),
            EventKind::ChatUpdate => Event::ChatUpdate(read(data).map_err(fit)?),
            EventKind::LabelUpdate => Event::LabelUpdate(read(data).map_err(fit)?),
            EventKind::LimitExceeded => Event::LimitExceeded(read(data).map_err(fit)?),
            EventKind::WebhookUpdated => Event::WebhookUpdated(read(data).map_err(fit)?),
            EventKind::WebhookTest => Event::WebhookTest(read(data).map_err(fit)?),
            EventKind::WebhookPaused => Event::WebhookPaused(read(data).map_err(fit)?),
        })
    }
}

/// An event of one instance. `id` is time-ordered, so "after this id" is a resumable
/// cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceEvent {
    pub id: String,
    pub instance_id: String,
    pub timestamp: DateTime<Utc>,
    pub event: Event,
}

impl InstanceEvent {
    /// A new event of `instance_id`, now.
    pub fn new(instance_id: &str, event: Event) -> Self {
        InstanceEvent {
            id: new_id(),
            instance_id: instance_id.to_owned(),
            timestamp: Utc::now(),
            event,
        }
    }

    /// An event as storage kept it: its `kind` column and its `data` object.
    ///
    /// Fails when the kind is unknown or the data does not fit it.
    pub fn from_stored(
        id: String,
        instance_id: String,
        kind: &str,
        timestamp: DateTime<Utc>,
        data: serde_json::Value,
    ) -> Result<Self, String> {
        let kind: EventKind = kind.parse()?;
        Ok(InstanceEvent {
            id,
            instance_id,
            timestamp,
            event: Event::from_data(kind, data)?,
        })
    }

    pub fn kind(&self) -> EventKind {
        self.event.kind()
    }

    /// The `data` object: the payload and `instanceId`. Serialise it (as JSON or BSON)
    /// to store or send it.
    pub fn data(&self) -> EventData<'_> {
        EventData { event: self }
    }

    /// The `data` object as a JSON value.
    pub fn data_json(&self) -> serde_json::Value {
        // A payload of strings, numbers and JSON values always serialises.
        serde_json::to_value(self.data()).unwrap_or_default()
    }

    /// The timestamp as the wire shows it: ISO 8601, milliseconds, `Z`.
    pub fn wire_timestamp(&self) -> String {
        self.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// The webhook request body: `{"id", "event", "data", "timestamp"}`, the contract's
    /// envelope plus the event's id (also sent as `X-Webhook-Id`).
    pub fn webhook_body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            id: &'a str,
            event: EventKind,
            data: EventData<'a>,
            timestamp: String,
        }
        let body = Envelope {
            id: &self.id,
            event: self.kind(),
            data: self.data(),
            timestamp: self.wire_timestamp(),
        };
        // Serialising strings, numbers and JSON values into memory cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// An element of `/events` and of the SSE stream: `{"type", "timestamp", "data"}`.
    pub fn element(&self) -> EventElement<'_> {
        EventElement {
            kind: self.kind(),
            timestamp: self.wire_timestamp(),
            data: self.data(),
        }
    }
}

/// `{"type", "timestamp", "data"}`: an event as `/events` and the SSE stream show it.
#[derive(Debug, Serialize)]
pub struct EventElement<'a> {
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub timestamp: String,
    pub data: EventData<'a>,
}

/// The `data` of an event: its payload's fields and `instanceId`.
#[derive(Debug, Clone, Copy)]
pub struct EventData<'a> {
    event: &'a InstanceEvent,
}

impl Serialize for EventData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// The payload's fields beside `instanceId`.
        fn with<S: Serializer, P: Serialize>(
            s: S,
            instance_id: &str,
            payload: &P,
        ) -> Result<S::Ok, S::Error> {
            #[derive(Serialize)]
            struct With<'a, P: Serialize> {
                #[serde(rename = "instanceId")]
                instance_id: &'a str,
                #[serde(flatten)]
                payload: &'a P,
            }
            With {
                instance_id,
                payload,
            }
            .serialize(s)
        }
        let id = self.event.instance_id.as_str();
        match &self.event.event {
            Event::QrReceived(p) => with(s, id, p),
            Event::Connected(p) => with(s, id, p),
            Event::Disconnected(p) => with(s, id, p),
            Event::MessageReceived(p) => with(s, id, p.as_ref()),
            Event::MessageSent(p) => with(s, id, p.as_ref()),
            Event::MessageStatus(p) => with(s, id, p),
            Event::MessageReaction(p) => with(s, id, p),
            Event::MessageEdited(p) => with(s, id, p),
            Event::MessageRevoked(p) => with(s, id, p),
            Event::PollVote(p) => with(s, id, p),
            Event::PresenceUpdate(p) => with(s, id, p),
            Event::GroupUpdate(p) => with(s, id, p),
            Event::CallReceived(p) => with(s, id, p),
            Event::ChatUpdate(p) => with(s, id, p),
            Event::LabelUpdate(p) => with(s, id, p),
            Event::LimitExceeded(p) => with(s, id, p),
            Event::WebhookUpdated(p) => with(s, id, p),
            Event::WebhookTest(p) => with(s, id, p),
            Event::WebhookPaused(p) => with(s, id, p),
        }
    }
}

/// Filters of `GET /api/instances/{id}/events`.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only events strictly after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only events strictly after this event id (SSE resume).
    pub after_id: Option<String>,
    /// Only these kinds (wire names); empty: every kind.
    pub types: Vec<String>,
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::Poll;

    fn received() -> Event {
        Event::MessageReceived(Box::new(MessageReceived {
            message_id: "m1".into(),
            from: "79001234567@s.whatsapp.net".into(),
            remote_jid: "79001234567@s.whatsapp.net".into(),
            sender: "79001234567@s.whatsapp.net".into(),
            from_me: false,
            body: Some("Привет".into()),
            message_type: "conversation".into(),
            timestamp: 1_672_531_200,
            has_media: false,
            push_name: Some("Иван".into()),
            is_group: false,
            status: MessageStatus::Received,
            metadata: json!({"pushName": "Иван", "timestamp": 1_672_531_200}),
            media: None,
            reply: ReplyFields::default(),
            typed: Typed::default(),
        }))
    }

    #[test]
    fn kinds_round_trip_by_name() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
        }
        assert!("nope".parse::<EventKind>().is_err());
    }

    #[test]
    fn data_is_the_payload_with_the_instance_id() {
        let e = InstanceEvent::new("i1", received());
        let data = e.data_json();
        assert_eq!(data["instanceId"], "i1");
        assert_eq!(data["messageId"], "m1");
        assert_eq!(data["type"], "conversation");
        assert_eq!(data["status"], "received");
        assert_eq!(data["fromMe"], false);
        assert!(
            data.get("mediaUrl").is_none(),
            "no media fields without media"
        );
    }

    #[test]
    fn the_webhook_body_is_the_contract_envelope() {
        let e = InstanceEvent::new(
            "i1",
            Event::Disconnected(Disconnected {
                reason: LOGOUT_REASON.into(),
                will_reconnect: false,
            }),
        );
        let body = e.webhook_body();
        assert!(body.starts_with(b"{\"id\":"), "the id first");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            v,
            json!({
                "id": e.id,
                "event": "disconnected",
                "data": {"instanceId": "i1", "reason": "logout", "willReconnect": false},
                "timestamp": e.wire_timestamp(),
            })
        );
        assert!(e.wire_timestamp().ends_with('Z'));
        let element = serde_json::to_value(e.element()).expect("json");
        assert_eq!(element["type"], "disconnected");
        assert_eq!(element["data"], v["data"]);
    }

    #[test]
    fn stored_events_read_back_typed() {
        let with_media = Event::MessageSent(Box::new(MessageSent {
            message_id: "m2".into(),
            to: "1@s.whatsapp.net".into(),
            body: Some("cap".into()),
            message_type: "image".into(),
            timestamp: 5,
            has_media: true,
            from_me: true,
            status: MessageStatus::Sent,
            media: Some(MediaFields {
                media_url: Some("/x".into()),
                mime_type: Some("image/png".into()),
                file_name: None,
                caption: Some("cap".into()),
            }),
            reply: ReplyFields {
                quoted_message_id: Some("m1".into()),
                mentions: vec!["2@s.whatsapp.net".into()],
            },
            typed: Typed {
                poll: Some(Poll {
                    question: "Lunch?".into(),
                    options: vec!["yes".into(), "no".into()],
                    multiple_answers: false,
                    votes: Vec::new(),
                }),
                ..Typed::default()
            },
        }));
        let reaction = Event::MessageReaction(MessageReaction {
            message_id: "m1".into(),
            remote_jid: "1@s.whatsapp.net".into(),
            sender: "1@s.whatsapp.net".into(),
            from_me: false,
            emoji: "👍".into(),
            timestamp: 6,
        });
        let data = InstanceEvent::new("i1", with_media.clone()).data_json();
        assert_eq!(data["quotedMessageId"], "m1", "{data}");
        assert_eq!(data["mentions"], json!(["2@s.whatsapp.net"]), "{data}");
        let plain = InstanceEvent::new("i1", received()).data_json();
        assert!(
            plain.get("quotedMessageId").is_none() && plain.get("mentions").is_none(),
            "a message without a quote or mentions keeps its old shape: {plain}"
        );
        let edited = Event::MessageEdited(MessageEdited {
            message_id: "m1".into(),
            remote_jid: "1@s.whatsapp.net".into(),
            sender: "1@s.whatsapp.net".into(),
            from_me: false,
            message: "fixed".into(),
            timestamp: 7,
        });
        let revoked = Event::MessageRevoked(MessageRevoked {
            message_id: "m1".into(),
            remote_jid: "1@s.whatsapp.net".into(),
            sender: "1@s.whatsapp.net".into(),
            from_me: false,
            for_everyone: true,
            timestamp: 8,
        });
        for event in [received(), with_media, reaction, edited, revoked] {
            let e = InstanceEvent::new("i1", event);
            let back = InstanceEvent::from_stored(
                e.id.clone(),
                e.instance_id.clone(),
                e.kind().as_str(),
                e.timestamp,
                e.data_json(),
            )
            .expect("read back");
            assert_eq!(back, e);
            assert_eq!(back.webhook_body(), e.webhook_body());
        }
        assert!(
            InstanceEvent::from_stored("x".into(), "i".into(), "bogus", Utc::now(), json!({}))
                .is_err()
        );
        assert!(
            InstanceEvent::from_stored(
                "x".into(),
                "i".into(),
                "message_status",
                Utc::now(),
                json!({"status": 3})
            )
            .is_err()
        );
    }
}
