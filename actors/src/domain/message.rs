//! Messages of both directions, their forward-only delivery status, chats and contacts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::address::{is_group_jid, jid_user};
use super::new_id;

/// Delivery state of a message. Outbound messages only move forward through
/// `pending → sent → delivered → read`; `failed` is final. Inbound messages are `received`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MessageStatus {
    Pending,
    Sent,
    Delivered,
    Read,
    Failed,
    Received,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Failed => "failed",
            MessageStatus::Received => "received",
        }
    }

    /// Position on the forward path; a status may only replace one of lower rank.
    fn rank(self) -> u8 {
        match self {
            MessageStatus::Pending => 0,
            MessageStatus::Sent => 1,
            MessageStatus::Delivered => 2,
            MessageStatus::Read => 3,
            MessageStatus::Failed | MessageStatus::Received => 4,
        }
    }

    /// Whether a message in status `self` may move to `next`.
    pub fn can_become(self, next: MessageStatus) -> bool {
        match next {
            MessageStatus::Failed => matches!(self, MessageStatus::Pending | MessageStatus::Sent),
            MessageStatus::Received => false,
            _ => self.rank() < next.rank(),
        }
    }

    /// The statuses `self` may be replaced from: what a conditional update matches on.
    pub fn predecessors(self) -> Vec<MessageStatus> {
        [
            MessageStatus::Pending,
            MessageStatus::Sent,
            MessageStatus::Delivered,
            MessageStatus::Read,
            MessageStatus::Failed,
            MessageStatus::Received,
        ]
        .into_iter()
        .filter(|s| s.can_become(self))
        .collect()
    }
}

impl std::str::FromStr for MessageStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(MessageStatus::Pending),
            "sent" => Ok(MessageStatus::Sent),
            "delivered" => Ok(MessageStatus::Delivered),
            "read" => Ok(MessageStatus::Read),
            "failed" => Ok(MessageStatus::Failed),
            "received" => Ok(MessageStatus::Received),
            other => Err(format!("unknown message status '{other}'")),
        }
    }
}

/// A stored message of either direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Our row id (time-ordered).
    pub id: String,
    pub instance_id: String,
    /// WhatsApp's message id; unique per instance.
    pub message_id: String,
    /// The chat: a person's `…@s.whatsapp.net` or a group's `…@g.us` address.
    pub remote_jid: String,
    pub from_me: bool,
    /// `text`, `image`, `video`, `audio` or `document`.
    pub message_type: String,
    pub content: Option<String>,
    pub has_media: bool,
    /// Where the owner downloads the media from this server (`/api/instances/…/media`).
    pub media_url: Option<String>,
    pub caption: Option<String>,
    pub mime_type: Option<String>,
    pub file_name: Option<String>,
    /// Path of the media file under `DATA_DIR/uploads`, relative to it.
    pub media_path: Option<String>,
    pub media_size: Option<u64>,
    pub status: MessageStatus,
    pub push_name: Option<String>,
    pub metadata: serde_json::Value,
    /// When WhatsApp says the message was sent.
    pub timestamp: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub status_updated_at: Option<DateTime<Utc>>,
    /// The id of the message of this chat it replies to.
    pub quoted_message_id: Option<String>,
    /// The people it mentions (`…@s.whatsapp.net` addresses).
    pub mentions: Vec<String>,
    /// The reactions on it, one per reacting person (the latest wins; none when removed).
    pub reactions: Vec<Reaction>,
    /// When its text was last edited (by the API or by its author on WhatsApp).
    pub edited_at: Option<DateTime<Utc>>,
    /// It was deleted for everyone: its text, caption and media are gone.
    pub revoked: bool,
    /// A location, contact cards or a poll it carries.
    pub typed: Typed,
    /// WhatsApp's per-message secret (a poll's: the key its votes are encrypted
    /// with). Kept, never shown.
    pub message_secret: Option<Vec<u8>>,
}

/// What a message carries besides text and media; at most one of them is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Typed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<ContactCard>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<Poll>,
}

impl Typed {
    pub fn is_empty(&self) -> bool {
        self.location.is_none() && self.contacts.is_empty() && self.poll.is_none()
    }

    /// The history's `messageType` of a message carrying it.
    pub fn message_type(&self) -> Option<&'static str> {
        if self.location.is_some() {
            Some("location")
        } else if !self.contacts.is_empty() {
            Some("contact")
        } else if self.poll.is_some() {
            Some("poll")
        } else {
            None
        }
    }

    /// A line of text standing for it in chat lists and searches.
    pub fn summary(&self) -> Option<String> {
        if let Some(l) = &self.location {
            return Some(
                l.name
                    .clone()
                    .or_else(|| l.address.clone())
                    .unwrap_or_else(|| format!("{}, {}", l.latitude, l.longitude)),
            );
        }
        if !self.contacts.is_empty() {
            let names: Vec<&str> = self.contacts.iter().map(|c| c.name.as_str()).collect();
            return Some(names.join(", "));
        }
        self.poll.as_ref().map(|p| p.question.clone())
    }
}

/// A shared location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Location {
    #[cfg_attr(feature = "openapi", schema(minimum = -90, maximum = 90, example = 55.7558))]
    pub latitude: f64,
    #[cfg_attr(feature = "openapi", schema(minimum = -180, maximum = 180, example = 37.6173))]
    pub longitude: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A contact card (a vCard on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContactCard {
    #[cfg_attr(feature = "openapi", schema(example = "Иван Иванов"))]
    pub name: String,
    /// Phone numbers, digits with an optional leading `+`.
    #[cfg_attr(feature = "openapi", schema(example = json!(["79001234567"])))]
    pub phones: Vec<String>,
}

/// A poll and the votes it got so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Poll {
    pub question: String,
    pub options: Vec<String>,
    /// Voters may choose several options.
    pub multiple_answers: bool,
    /// Each voter's latest choice; an empty choice is a vote taken back.
    #[serde(default)]
    pub votes: Vec<PollVote>,
}

/// One voter's choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PollVote {
    /// Who voted; the account's own address when `fromMe`.
    pub voter: String,
    pub from_me: bool,
    pub options: Vec<String>,
    /// Unix seconds.
    pub timestamp: i64,
}

impl Poll {
    /// Sets one voter's choice (the latest wins); an empty one removes it.
    pub fn apply_vote(&mut self, vote: PollVote) {
        self.votes
            .retain(|v| !(v.voter == vote.voter && v.from_me == vote.from_me));
        if !vote.options.is_empty() {
            self.votes.push(vote);
        }
    }
}

/// How long after sending WhatsApp lets its author edit a message.
pub const EDIT_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

impl Message {
    /// Takes a new text: the content of a text message, the caption of a media one.
    pub fn edit(&mut self, text: String, at: DateTime<Utc>) {
        if self.has_media {
            self.caption = Some(text);
        } else {
            self.content = Some(text);
        }
        self.edited_at = Some(at);
        self.updated_at = at;
    }

    /// Deleted for everyone: nothing of what it said is kept (the media file is the
    /// caller's to remove, from `media_path` before this call).
    pub fn revoke(&mut self, at: DateTime<Utc>) {
        self.revoked = true;
        self.content = None;
        self.caption = None;
        self.has_media = false;
        self.media_url = None;
        self.media_path = None;
        self.media_size = None;
        self.updated_at = at;
    }
}

/// One person's reaction to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reaction {
    /// Who reacted: a person's address, or the account's own when `fromMe`.
    pub sender: String,
    pub from_me: bool,
    #[cfg_attr(feature = "openapi", schema(example = "👍"))]
    pub emoji: String,
    /// Unix seconds.
    pub timestamp: i64,
}

/// Sets one person's reaction among `reactions` (an empty emoji removes it); the
/// others stay.
pub fn apply_reaction(reactions: &mut Vec<Reaction>, reaction: Reaction) {
    reactions.retain(|r| !(r.sender == reaction.sender && r.from_me == reaction.from_me));
    if !reaction.emoji.is_empty() {
        reactions.push(reaction);
    }
}

/// Filters of a chat's history.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub limit: u32,
    pub skip: u64,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// One chat with its latest message.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatSummary {
    pub remote_jid: String,
    pub last_message: Message,
    /// Inbound messages not yet marked read.
    pub unread_count: u64,
    pub message_count: u64,
}

/// A contact of an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub id: String,
    pub instance_id: String,
    pub remote_jid: String,
    pub number: String,
    pub name: Option<String>,
    pub push_name: Option<String>,
    pub is_group: bool,
    pub profile_picture: Option<String>,
    pub about: Option<String>,
    pub last_activity: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where the owner downloads a message's media from the API (the `mediaUrl` of the
/// contract).
pub fn media_url(instance_id: &str, message_id: &str) -> String {
    format!("/api/instances/{instance_id}/messages/{message_id}/media")
}

impl Contact {
    /// A contact of `instance_id` at `jid` that knows nothing but its address: the
    /// number and whether it is a group come from the address, every other field is
    /// empty (an upsert keeps what is stored for empty fields). Fill what is known
    /// with struct update syntax.
    pub fn new(instance_id: &str, jid: &str, now: DateTime<Utc>) -> Contact {
        Contact {
            id: new_id(),
            instance_id: instance_id.to_owned(),
            remote_jid: jid.to_owned(),
            number: jid_user(jid).to_owned(),
            name: None,
            push_name: None,
            is_group: is_group_jid(jid),
            profile_picture: None,
            about: None,
            last_activity: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The name to show: the saved name, else the push name, else the number.
    pub fn display_name(&self) -> &str {
        self.name
            .as_deref()
            .or(self.push_name.as_deref())
            .unwrap_or(&self.number)
    }
}

/// Filters of the stored contacts.
#[derive(Debug, Clone, Default)]
pub struct ContactQuery {
    pub limit: u32,
    pub skip: u64,
    /// Case-insensitive substring of the name, push name or number.
    pub search: Option<String>,
    pub only_groups: bool,
}

/// WhatsApp's grouping of an attachment by its MIME type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Document,
}

impl MediaKind {
    /// `image/*`, `video/*` and `audio/*` by their type; anything else is a document.
    pub fn of_mime(mime: &str) -> MediaKind {
        match mime.split('/').next().unwrap_or_default().trim() {
            "image" => MediaKind::Image,
            "video" => MediaKind::Video,
            "audio" => MediaKind::Audio,
            _ => MediaKind::Document,
        }
    }

    /// The message type the history shows (`image`, `video`, `audio`, `document`).
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Document => "document",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MessageStatus::*;
    use super::*;

    #[test]
    fn statuses_only_move_forward() {
        assert!(Pending.can_become(Sent));
        assert!(Sent.can_become(Delivered));
        assert!(
            Sent.can_become(Read),
            "a read receipt may arrive before the delivery one"
        );
        assert!(Delivered.can_become(Read));
        assert!(!Read.can_become(Delivered));
        assert!(!Delivered.can_become(Sent));
        assert!(!Read.can_become(Read));
        assert!(Sent.can_become(Failed));
        assert!(!Delivered.can_become(Failed));
        assert!(!Failed.can_become(Sent));
        assert!(!Received.can_become(Read));
        assert_eq!(Read.predecessors(), vec![Pending, Sent, Delivered]);
    }

    #[test]
    fn a_reaction_replaces_the_same_persons_and_an_empty_one_removes_it() {
        let r = |sender: &str, from_me, emoji: &str| Reaction {
            sender: sender.into(),
            from_me,
            emoji: emoji.into(),
            timestamp: 1,
        };
        let mut reactions = Vec::new();
        let mut apply = |reaction| {
            apply_reaction(&mut reactions, reaction);
            reactions.clone()
        };
        assert_eq!(apply(r("a", false, "👍")), vec![r("a", false, "👍")]);
        assert_eq!(
            apply(r("me", true, "❤")),
            vec![r("a", false, "👍"), r("me", true, "❤")]
        );
        assert_eq!(
            apply(r("a", false, "😂")),
            vec![r("me", true, "❤"), r("a", false, "😂")]
        );
        assert_eq!(apply(r("me", true, "")), vec![r("a", false, "😂")]);
    }

    #[test]
    fn media_kinds_by_mime() {
        assert_eq!(MediaKind::of_mime("image/jpeg"), MediaKind::Image);
        assert_eq!(MediaKind::of_mime("video/mp4"), MediaKind::Video);
        assert_eq!(
            MediaKind::of_mime("audio/ogg; codecs=opus"),
            MediaKind::Audio
        );
        assert_eq!(MediaKind::of_mime("application/pdf"), MediaKind::Document);
        assert_eq!(MediaKind::of_mime(""), MediaKind::Document);
    }

    #[test]
    fn a_contact_knows_its_number_and_kind_from_its_address() {
        let now = Utc::now();
        let c = Contact::new("i", "79001234567@s.whatsapp.net", now);
        assert_eq!(c.number, "79001234567");
        assert!(!c.is_group);
        assert_eq!(c.display_name(), "79001234567");
        let c = Contact {
            push_name: Some("Ann".into()),
            ..Contact::new("i", "123-456@g.us", now)
        };
        assert!(c.is_group);
        assert_eq!(c.display_name(), "Ann");
    }
}
