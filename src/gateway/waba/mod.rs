//! The WABA operator desk: operators answer customers through Meta's WhatsApp Business
//! Cloud API. The desk's actors and nouns live in `wagate_actors::desk` and
//! `wagate_actors::domain::waba`; Meta's payloads and the Graph API client in
//! [`crate::waba`].
//!
//! Who sees what is a [`Scope`]: an admin sees every account's chats, a user those of its
//! own account, an operator those of its owner. Another account's chat or message is
//! [`WabaError::ChatNotFound`] / [`WabaError::MessageNotFound`], as if it did not exist.
//!
//! - this file: [`Waba`], its [`WabaError`] and [`Scope`];
//! - `settings.rs`: an account's settings, secrets sealed at rest, and the credentials of
//!   a send;
//! - `ingest.rs`: Meta's notifications — the subscription check, inbound messages and
//!   status updates;
//! - `desk.rs`: the operators' side — chats, histories, sends, marking read, the live
//!   feed;
//! - `media.rs`: the desk's files — inbound ones fetched from Meta, with retries, and
//!   served back;
//! - `templates.rs`: the account's approved templates, read from Meta and cached.

mod desk;
mod ingest;
mod media;
mod settings;
mod templates;

pub use desk::{Marked, ReadReceipt};
pub use ingest::Ingested;
pub use media::{Attachment, FETCH_ATTEMPTS, StoredFile, sendable};
pub use settings::{SettingsInput, StoredSettings, WabaSettings, mask};
pub use templates::{TEMPLATES_TTL, Templates};

use std::sync::Arc;
use std::time::Duration;

use wagate_actors::desk::{GraphApi, GraphError, OperatorDeskHandle, SendError};
use wagate_actors::error::{DomainError, StoreError};
use wagate_actors::store::DynStorage;

use crate::crypto::KeyVault;
use crate::media::MediaStore;
use crate::outbound::OutboundError;

/// Why a WABA operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WabaError {
    /// The account has no (usable) settings.
    #[error(
        "WABA is not configured for this account: set accessToken, phoneNumberId, appSecret and \
         verifyToken with PUT /api/waba/settings"
    )]
    NotConfigured,
    /// A settings field required the first time (its API name).
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("this phoneNumberId is already configured for another account")]
    PhoneNumberInUse,
    /// No such chat, or not one the caller sees.
    #[error("chat {0} not found")]
    ChatNotFound(i64),
    /// No such message, or not one the caller sees.
    #[error("message {0} not found")]
    MessageNotFound(i64),
    /// The chat is assigned to someone else (this user id).
    #[error("the chat is already assigned to {0}; its owner or an admin can reassign it")]
    AssignedToOther(String),
    /// An operator tried an assignment only an owner or admin may make.
    #[error("{0}")]
    NotYourChat(&'static str),
    /// An assignee who is neither the chat's owner nor one of its operators.
    #[error("user {0} is not the owner or an operator of this chat's account")]
    UnknownAssignee(String),
    /// Meta's subscription check named no account's verify token.
    #[error("webhook verification failed: unknown verify token")]
    UnknownVerifyToken,
    /// A notification not signed with its account's app secret.
    #[error(
        "invalid X-Hub-Signature-256: it must be sha256=<hex HMAC-SHA256 of the raw body with the app secret>"
    )]
    BadSignature,
    /// A non-template message outside the 24-hour window, refused before calling Meta.
    #[error(
        "the customer's last message is more than 24 hours old (or the customer never wrote): \
         only an approved template (type \"template\") may be sent"
    )]
    OutsideWindow,
    /// A media URL that is not http(s) or points to a private network (unless
    /// `ALLOW_PRIVATE_NETWORK_URLS`): refused before calling Meta.
    #[error("mediaUrl: {0}")]
    MediaUrl(OutboundError),
    /// An attachment of a type Meta does not send.
    #[error(
        "files of type {0} cannot be sent through WhatsApp: send JPEG or PNG images, MP4 or 3GPP video, AAC, AMR, MP3, MP4 or OGG audio, WebP stickers, or PDF, text and Office documents"
    )]
    UnsupportedType(String),
    /// An attachment over Meta's limit for its kind.
    #[error("{0}")]
    TooLarge(String),
    /// The message has no file.
    #[error("message {0} has no media")]
    NoMedia(i64),
    /// The message's file is still being fetched from Meta.
    #[error("the media of message {0} is still being fetched from Meta; retry shortly")]
    MediaPending(i64),
    /// Every attempt to fetch the file from Meta failed (the last error).
    #[error("the media could not be fetched from Meta: {0}")]
    MediaFailed(String),
    /// Meta did not send the message.
    #[error(transparent)]
    Graph(GraphError),
    /// An account's secrets cannot be opened (sealed under another server key); the
    /// detail is for the log.
    #[error("{0}")]
    Sealed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Domain(#[from] DomainError),
}

impl From<SendError> for WabaError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::OutsideWindow => WabaError::OutsideWindow,
            SendError::Graph(g) => WabaError::Graph(g),
            SendError::Domain(d) => WabaError::Domain(d),
        }
    }
}

/// Whose chats a caller sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every account's (an admin).
    All,
    /// One account's: the caller's own, or an operator's owner's.
    Owner(String),
}

impl Scope {
    pub fn sees(&self, owner_id: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Owner(o) => o == owner_id,
        }
    }

    /// The one account seen; None for every account.
    pub fn owner(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Owner(o) => Some(o),
        }
    }
}

/// The desk, its storage and the key that seals account secrets. Cheap to clone.
#[derive(Clone)]
pub struct Waba {
    storage: DynStorage,
    desk: OperatorDeskHandle,
    /// Meta's Graph API, for what needs no chat actor (read receipts, media).
    graph: Arc<dyn GraphApi>,
    /// Seals the account secrets at rest.
    vault: KeyVault,
    /// `ALLOW_PRIVATE_NETWORK_URLS`: media URLs may point to private networks.
    allow_private_urls: bool,
    /// Where the desk's files are kept.
    media: MediaStore,
    /// The delay before the first retry of a failed media fetch.
    media_retry: Duration,
    /// The fetches under way.
    fetching: media::Fetching,
    /// The approved templates read from Meta, by account.
    templates: templates::TemplateCache,
}

impl Waba {
    pub fn new(
        storage: DynStorage,
        desk: OperatorDeskHandle,
        graph: Arc<dyn GraphApi>,
        vault: KeyVault,
        allow_private_urls: bool,
        media: MediaStore,
        media_retry: Duration,
    ) -> Self {
        Waba {
            storage,
            desk,
            graph,
            vault,
            allow_private_urls,
            media,
            media_retry,
            fetching: media::Fetching::default(),
            templates: templates::TemplateCache::new(
                TEMPLATES_TTL,
                Arc::new(wagate_actors::domain::SystemClock),
            ),
        }
    }

    /// The same desk with template lists kept for `ttl`, aged by `clock`.
    pub fn with_template_cache(
        mut self,
        ttl: Duration,
        clock: Arc<dyn wagate_actors::domain::Clock>,
    ) -> Self {
        self.templates = templates::TemplateCache::new(ttl, clock);
        self
    }
}
