//! The WABA operator desk: operators answer customers through Meta's WhatsApp Business
//! Cloud API. This module holds its actors; the Graph
//! API client and the HTTP edge live in the server crate and reach it through
//! [`GraphApi`] and [`OperatorDeskHandle`].
//!
//! The desk's nouns (accounts, chats, messages, the 24-hour rule) are in
//! [`crate::domain::waba`], its storage trait in [`crate::store::WabaStore`].
//!
//! - this file: the [`GraphApi`] seam, the errors of a send and the live feed's events;
//! - `feed.rs`: [`DeskFeed`], the live feed, numbered and kept for a while so a client
//!   that reconnects resumes where it left off;
//! - `chat.rs`: [`OperatorChatActor`], one per chat: serializes the chat's sends, inbound
//!   messages and status updates, and tracks its 24-hour window;
//! - `supervisor.rs`: [`OperatorDesk`], the supervisor of the chat actors, and
//!   [`OperatorDeskHandle`], its typed face (plus the live event feed).

mod chat;
mod feed;
mod supervisor;

use async_trait::async_trait;

pub use chat::OperatorChatActor;
pub use feed::{DeskFeed, EventId, FeedEntry, Subscription};
pub use supervisor::OperatorDeskHandle;
pub(crate) use supervisor::{DeskArgs, spawn, vacate};

use crate::domain::waba::{GraphCredentials, WabaChat, WabaContent, WabaMessage, WabaTemplate};
use crate::error::DomainError;

/// Events buffered for slow live subscribers before they lag (they then catch up from
/// what the feed keeps).
pub const EVENT_CAPACITY: usize = 256;

/// One event of the live feed (`/api/waba/operator/events`).
#[derive(Debug, Clone, PartialEq)]
pub enum WabaEvent {
    /// A new message, inbound or sent, as stored.
    Message(WabaMessage),
    /// A message's status moved forward: the message after the change.
    Status(WabaMessage),
    /// A chat's assignee changed: the chat after the change.
    Assignment(WabaChat),
    /// Where fetching a message's file stands changed: the message after the change.
    Media(WabaMessage),
}

impl WabaEvent {
    /// The event's `type` on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            WabaEvent::Message(_) => "message",
            WabaEvent::Status(_) => "status",
            WabaEvent::Assignment(_) => "assignment",
            WabaEvent::Media(_) => "media",
        }
    }

    /// The account the event belongs to (who may see it).
    pub fn owner_id(&self) -> &str {
        match self {
            WabaEvent::Message(m) | WabaEvent::Status(m) | WabaEvent::Media(m) => &m.owner_id,
            WabaEvent::Assignment(c) => &c.owner_id,
        }
    }

    pub fn chat_id(&self) -> i64 {
        match self {
            WabaEvent::Message(m) | WabaEvent::Status(m) | WabaEvent::Media(m) => m.chat_id,
            WabaEvent::Assignment(c) => c.id,
        }
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
    /// A file over the desk's size limit.
    #[error("{0}")]
    TooLarge(String),
}

impl GraphError {
    /// Meta's error code, when Meta gave one.
    pub fn code(&self) -> Option<i64> {
        match self {
            GraphError::ReEngagement(_) => Some(131047),
            GraphError::Throttled(_) => Some(130429),
            GraphError::BadToken(_) => Some(190),
            GraphError::Rejected { code, .. } => Some(*code),
            GraphError::Unavailable(_) | GraphError::TooLarge(_) => None,
        }
    }

    /// Whether trying again later may succeed: Meta unreachable, 5xx, throughput.
    pub fn is_transient(&self) -> bool {
        matches!(self, GraphError::Unavailable(_) | GraphError::Throttled(_))
    }
}

/// A file to upload to Meta.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaUpload {
    pub bytes: Vec<u8>,
    pub mime_type: String,
    pub file_name: Option<String>,
}

/// A file downloaded from Meta.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaDownload {
    pub bytes: Vec<u8>,
    /// The type Meta gave for it.
    pub mime_type: Option<String>,
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

    /// Tells Meta the customer's message `whatsapp_message_id` (and so every earlier one)
    /// was read: the customer sees blue ticks.
    async fn mark_read(
        &self,
        credentials: &GraphCredentials,
        whatsapp_message_id: &str,
    ) -> Result<(), GraphError>;

    /// Uploads `file` to `/{phoneNumberId}/media` and returns its media id, which a
    /// send then names instead of a link.
    async fn upload_media(
        &self,
        _credentials: &GraphCredentials,
        _file: &MediaUpload,
    ) -> Result<String, GraphError> {
        Err(GraphError::Unavailable(
            "this Graph API client cannot upload media".into(),
        ))
    }

    /// Downloads the file Meta keeps as `media_id` (an inbound attachment): its URL
    /// first, then the bytes, both with the account's token, within the client's size
    /// limit (`TooLarge`) and timeout (`Unavailable`). An unknown id is `Rejected`.
    async fn download_media(
        &self,
        _credentials: &GraphCredentials,
        _media_id: &str,
    ) -> Result<MediaDownload, GraphError> {
        Err(GraphError::Unavailable(
            "this Graph API client cannot download media".into(),
        ))
    }

    /// The templates of the business account `business_account_id` whose status is
    /// `APPROVED` (`/{business_account_id}/message_templates`, every page of it).
    async fn approved_templates(
        &self,
        _credentials: &GraphCredentials,
        _business_account_id: &str,
    ) -> Result<Vec<WabaTemplate>, GraphError> {
        Err(GraphError::Unavailable(
            "this Graph API client cannot list templates".into(),
        ))
    }
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
