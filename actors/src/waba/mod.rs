//! The WABA operator desk: operators answer customers through Meta's WhatsApp Business
//! Cloud API. This module holds its domain, its storage trait and its actors; the Graph
//! API client and the HTTP edge live in the server crate and reach it through
//! [`GraphApi`] and [`OperatorDeskHandle`].
//!
//! - this file: accounts (per owner), chats, messages, the 24-hour rule, [`WabaStore`],
//!   the [`GraphApi`] seam and the errors of a send;
//! - `chat.rs`: [`OperatorChatActor`], one per chat: serializes the chat's sends, inbound
//!   messages and status updates, and tracks its 24-hour window;
//! - `desk.rs`: [`OperatorDesk`], the supervisor of the chat actors, and
//!   [`OperatorDeskHandle`], its typed face (plus the live event feed).

mod chat;
mod desk;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

pub use chat::OperatorChatActor;
pub use desk::{OperatorDesk, OperatorDeskHandle, WabaEvent, WabaEventKind, start_operator_desk};

use crate::domain::Page;
use crate::error::DomainError;
use crate::messaging::MessageStatus;
use crate::storage::StoreResult;

/// WhatsApp's customer-service window: free-form messages may be sent this long after
/// the customer's last message; outside it only approved templates.
pub const CUSTOMER_WINDOW: Duration = Duration::hours(24);

/// When the chat's customer-service window closes; None when the customer never wrote.
pub fn window_expires_at(last_customer_message_at: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    last_customer_message_at.map(|t| t + CUSTOMER_WINDOW)
}

/// Whether a free-form message may be sent at `now`.
pub fn window_open(last_customer_message_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    window_expires_at(last_customer_message_at).is_some_and(|end| now < end)
}

/// The WABA account of one owner (a user or admin; operators work for an owner).
///
/// The secret fields are opaque to storage: the server crate seals them under its secret
/// key before storing them and opens them after reading.
#[derive(Debug, Clone, PartialEq)]
pub struct WabaAccount {
    pub owner_id: String,
    /// Meta's id of the business phone number: the routing key of Meta's webhooks.
    /// Unique across owners.
    pub phone_number_id: String,
    pub business_account_id: String,
    pub access_token: String,
    pub app_secret: String,
    pub verify_token: String,
    /// SHA-256 (hex) of the plain verify token: how Meta's verification request finds
    /// the account without the token being stored in the clear.
    pub verify_token_hash: String,
    pub updated_at: DateTime<Utc>,
}

/// A conversation with one customer of one owner.
#[derive(Debug, Clone, PartialEq)]
pub struct WabaChat {
    /// Numeric, as the spec's `chatId: number`.
    pub id: i64,
    pub owner_id: String,
    /// The customer's WhatsApp id (digits of the phone number, as Meta sends `wa_id`).
    pub customer_phone: String,
    pub customer_name: Option<String>,
    /// Meta's timestamp of the newest inbound message: the start of the 24-hour window.
    pub last_customer_message_at: Option<DateTime<Utc>>,
    /// The newest message of either direction (chat lists sort by it).
    pub last_message_at: Option<DateTime<Utc>>,
    pub assigned_operator_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A message of a WABA chat, in either direction.
#[derive(Debug, Clone, PartialEq)]
pub struct WabaMessage {
    /// Numeric, assigned by storage at insert.
    pub id: i64,
    pub chat_id: i64,
    pub owner_id: String,
    /// Meta's id (`wamid.…`); unique.
    pub whatsapp_message_id: String,
    pub from_me: bool,
    /// `text`, `image`, `document`, `template` (outbound); inbound also `audio`, `video`,
    /// `sticker`, `location`, … as Meta names them.
    pub message_type: String,
    pub content: Option<String>,
    pub media_url: Option<String>,
    /// Outbound: `sent → delivered → read` (or `failed`), forward only; inbound `received`.
    pub status: MessageStatus,
    /// Inbound messages an operator has read in the desk.
    pub is_read_by_operator: bool,
    /// The operator or user who sent it (outbound).
    pub sender_user_id: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub status_updated_at: Option<DateTime<Utc>>,
}

/// A chat as the chat list shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct WabaChatSummary {
    pub chat: WabaChat,
    pub last_message: Option<WabaMessage>,
    /// Inbound messages no operator has read yet.
    pub unread_count: u64,
}

/// Storage of the operator desk. Implemented by every backend beside the traits of
/// [`crate::storage`]; every method fails with `Unavailable` when the backend cannot be
/// reached.
#[async_trait]
pub trait WabaStore: Send + Sync {
    /// Inserts or replaces the account of `account.owner_id`. Fails with `Conflict` when
    /// another owner already has this `phone_number_id`.
    async fn put_waba_account(&self, account: &WabaAccount) -> StoreResult<()>;
    async fn waba_account(&self, owner_id: &str) -> StoreResult<Option<WabaAccount>>;
    async fn waba_account_by_phone_number_id(
        &self,
        phone_number_id: &str,
    ) -> StoreResult<Option<WabaAccount>>;
    async fn waba_account_by_verify_token_hash(
        &self,
        hash: &str,
    ) -> StoreResult<Option<WabaAccount>>;
    /// The chat of (owner, customer), created when missing (`at` becomes its
    /// `created_at`). A given `customer_name` replaces the stored one.
    async fn waba_chat_for_customer(
        &self,
        owner_id: &str,
        customer_phone: &str,
        customer_name: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<WabaChat>;
    async fn waba_chat(&self, id: i64) -> StoreResult<Option<WabaChat>>;
    /// The chat of (owner, customer), without creating it.
    async fn find_waba_chat(
        &self,
        owner_id: &str,
        customer_phone: &str,
    ) -> StoreResult<Option<WabaChat>>;
    /// Chats of one owner (or of everybody when None), newest activity first.
    async fn list_waba_chats(
        &self,
        owner_id: Option<&str>,
        limit: u32,
        skip: u64,
    ) -> StoreResult<Page<WabaChatSummary>>;
    /// Stores a message under a new numeric id (`message.id` is ignored) and returns it.
    /// Moves the chat's `last_message_at` (and, for inbound messages,
    /// `last_customer_message_at`) forward to the message's timestamp, never back.
    /// Fails with `Conflict` when the `whatsapp_message_id` is already stored.
    async fn insert_waba_message(&self, message: &WabaMessage) -> StoreResult<WabaMessage>;
    async fn waba_message(&self, id: i64) -> StoreResult<Option<WabaMessage>>;
    /// Moves the status of the chat's message forward only
    /// ([`MessageStatus::can_become`]), atomically. Returns the updated message, or None
    /// when the chat has no such message or the move would go backwards.
    async fn advance_waba_message_status(
        &self,
        chat_id: i64,
        whatsapp_message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<WabaMessage>>;
    /// Messages of one chat, newest first.
    async fn waba_chat_messages(
        &self,
        chat_id: i64,
        limit: u32,
        skip: u64,
    ) -> StoreResult<Page<WabaMessage>>;
    /// Marks the chat's unread inbound messages read by the operator; returns how many.
    async fn mark_waba_chat_read(&self, chat_id: i64) -> StoreResult<u64>;
}

/// What an operator sends.
#[derive(Debug, Clone, PartialEq)]
pub enum WabaContent {
    Text {
        body: String,
    },
    Image {
        link: String,
        caption: Option<String>,
    },
    Document {
        link: String,
        caption: Option<String>,
        filename: Option<String>,
    },
    /// An approved template: the only kind allowed outside the 24-hour window.
    Template {
        name: String,
        language: String,
        components: Option<serde_json::Value>,
    },
}

impl WabaContent {
    /// The message type as stored and as Meta names it.
    pub fn kind(&self) -> &'static str {
        match self {
            WabaContent::Text { .. } => "text",
            WabaContent::Image { .. } => "image",
            WabaContent::Document { .. } => "document",
            WabaContent::Template { .. } => "template",
        }
    }

    pub fn media_url(&self) -> Option<&str> {
        match self {
            WabaContent::Image { link, .. } | WabaContent::Document { link, .. } => Some(link),
            _ => None,
        }
    }
}

/// The account credentials one send uses (opened by the server crate).
#[derive(Clone, PartialEq)]
pub struct GraphCredentials {
    pub phone_number_id: String,
    pub access_token: String,
}

impl std::fmt::Debug for GraphCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GraphCredentials {{ phone_number_id: {}, access_token: <redacted> }}",
            self.phone_number_id
        )
    }
}

/// Why Meta's Graph API did not send a message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    /// 131047: more than 24 hours since the customer's last message (Meta's own check).
    #[error("{0}")]
    ReEngagement(String),
    /// 130429 or HTTP 429: the throughput limit; still failing after the retries.
    #[error("{0}")]
    Throttled(String),
    /// 190: the access token is invalid or expired.
    #[error("{0}")]
    BadToken(String),
    /// Any other error Meta answered.
    #[error("Meta error {code}: {message}")]
    Rejected { code: i64, message: String },
    /// Meta could not be reached, or answered 5xx through every retry.
    #[error("{0}")]
    Unavailable(String),
}

/// Meta's Graph API, as the desk uses it. The server crate implements it over HTTP.
#[async_trait]
pub trait GraphApi: Send + Sync {
    /// Sends `content` to `to` (the customer's WhatsApp id) and returns Meta's message id.
    async fn send_message(
        &self,
        credentials: &GraphCredentials,
        to: &str,
        content: &WabaContent,
    ) -> Result<String, GraphError>;
}

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// A non-template message outside the 24-hour window: refused before calling Meta.
    #[error(
        "the customer's last message is older than 24 hours (or there is none): only templates may be sent"
    )]
    OutsideWindow,
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Domain(#[from] DomainError),
}

#[cfg(test)]
mod tests;
