//! Messages, chats and contacts: the domain of sending and receiving, and its storage
//! traits (implemented by every backend beside the ones in [`crate::storage`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::Page;
use crate::storage::StoreResult;

/// Suffix of WhatsApp addresses of people.
pub const USER_SERVER: &str = "s.whatsapp.net";
/// Suffix of WhatsApp addresses of groups.
pub const GROUP_SERVER: &str = "g.us";

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

/// Filters of the stored contacts.
#[derive(Debug, Clone, Default)]
pub struct ContactQuery {
    pub limit: u32,
    pub skip: u64,
    /// Case-insensitive substring of the name, push name or number.
    pub search: Option<String>,
    pub only_groups: bool,
}

#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Fails with `Conflict` when the instance already has this `message_id`.
    async fn insert_message(&self, message: &Message) -> StoreResult<()>;
    async fn message_by_id(
        &self,
        instance_id: &str,
        message_id: &str,
    ) -> StoreResult<Option<Message>>;
    /// Moves the status forward only (see [`MessageStatus::can_become`]), atomically.
    /// Returns the updated message, or None when the message is unknown or the move
    /// would go backwards.
    async fn advance_message_status(
        &self,
        instance_id: &str,
        message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<Message>>;
    /// Newest first.
    async fn chat_history(
        &self,
        instance_id: &str,
        remote_jid: &str,
        query: &HistoryQuery,
    ) -> StoreResult<Page<Message>>;
    /// Chats ordered by their latest message, newest first.
    async fn list_chats(
        &self,
        instance_id: &str,
        limit: u32,
        skip: u64,
    ) -> StoreResult<Page<ChatSummary>>;
    /// Marks the chat's unread inbound messages read; returns their WhatsApp ids (the
    /// read receipts to send).
    async fn mark_chat_read(&self, instance_id: &str, remote_jid: &str)
    -> StoreResult<Vec<String>>;
}

#[async_trait]
pub trait ContactStore: Send + Sync {
    /// Inserts or updates the contact keyed by (instance, remote_jid). Fields that are
    /// None in `contact` keep their stored value; `created_at` and `id` of an existing
    /// contact are kept. Returns the stored contact.
    async fn upsert_contact(&self, contact: &Contact) -> StoreResult<Contact>;
    async fn list_contacts(
        &self,
        instance_id: &str,
        query: &ContactQuery,
    ) -> StoreResult<Page<Contact>>;
}

/// Builds the WhatsApp address of a phone number or passes a group/user JID through.
pub fn jid_for(target: &str) -> String {
    if target.contains('@') {
        target.to_owned()
    } else {
        format!("{target}@{USER_SERVER}")
    }
}

/// The number part of a JID (`79001234567@s.whatsapp.net` → `79001234567`).
pub fn jid_user(jid: &str) -> &str {
    jid.split('@')
        .next()
        .unwrap_or(jid)
        .split(':')
        .next()
        .unwrap_or(jid)
}

pub fn is_group_jid(jid: &str) -> bool {
    jid.ends_with(&format!("@{GROUP_SERVER}"))
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
    fn jids() {
        assert_eq!(jid_for("79001234567"), "79001234567@s.whatsapp.net");
        assert_eq!(jid_for("123-456@g.us"), "123-456@g.us");
        assert_eq!(jid_user("79001234567:12@s.whatsapp.net"), "79001234567");
        assert!(is_group_jid("123@g.us"));
        assert!(!is_group_jid("123@s.whatsapp.net"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::{USER_SERVER, is_group_jid, jid_for, jid_user};

        proptest! {
            #[test]
            fn jid_helpers_never_panic(input in any::<String>()) {
                let jid = jid_for(&input);
                prop_assert!(jid.contains('@'));
                let user = jid_user(&input);
                prop_assert!(input.starts_with(user), "the user part is a prefix");
                prop_assert!(!user.contains('@') && !user.contains(':'));
                let _ = is_group_jid(&input);
            }

            #[test]
            fn a_number_round_trips_through_its_jid(number in "[0-9]{1,20}") {
                let jid = jid_for(&number);
                prop_assert_eq!(&jid, &format!("{number}@{USER_SERVER}"));
                prop_assert_eq!(jid_user(&jid), number.as_str());
                prop_assert!(!is_group_jid(&jid));
                // A JID passes through unchanged; a device suffix is not the number.
                prop_assert_eq!(jid_for(&jid), jid.clone());
                let device = format!("{number}:7@{USER_SERVER}");
                prop_assert_eq!(jid_user(&device), number.as_str());
            }

            #[test]
            fn group_jids_are_groups(id in "[0-9]{5,20}(-[0-9]{5,12})?") {
                let jid = format!("{id}@g.us");
                prop_assert!(is_group_jid(&jid));
                prop_assert_eq!(jid_for(&jid), jid.clone());
                prop_assert_eq!(jid_user(&jid), id.as_str());
            }
        }
    }
}
