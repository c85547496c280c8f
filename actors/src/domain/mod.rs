//! The nouns of the gateway, free of actors, storage and HTTP: accounts, instances,
//! messages and contacts, WhatsApp addresses, usage periods, the WABA desk's chats, and
//! the typed [`Event`] whose one serialisation is the webhook and SSE contract.
//!
//! Field names follow the API contract; serde renames to camelCase happen where a type
//! *is* wire format (events, usage), otherwise at the HTTP edge, so storage backends
//! are free to choose their own column names.
//!
//! - [`account`]: users and roles.
//! - [`instance`]: instances, their webhook settings, limits and activity log.
//! - [`message`]: messages of both directions, their forward-only status, chats,
//!   contacts (one constructor).
//! - [`address`]: phone numbers and WhatsApp addresses (JIDs), parsed once.
//! - [`usage`]: usage counters, limit periods and the clock.
//! - [`event`]: the typed instance events and their wire form.
//! - [`group`]: WhatsApp groups, their members and the operations on them.
//! - [`chat`]: how the account keeps its chats (archived, pinned, muted) and its labels.
//! - [`profile`]: the account's profile, contacts' pictures and the blocklist.
//! - [`waba`]: the operator desk's accounts, chats and messages, and the 24-hour rule.

pub mod account;
pub mod address;
pub mod chat;
pub mod event;
pub mod group;
pub mod instance;
pub mod message;
pub mod profile;
pub mod usage;
pub mod waba;

pub use account::{Role, User};
pub use address::{Jid, normalize_phone};
pub use chat::{ChatAnswer, ChatChange, ChatOp, ChatSettings, Label, LabelSpec, Mute};
pub use event::{Event, EventKind, EventQuery, InstanceEvent, Presence};
pub use group::{
    Group, GroupAnswer, GroupMember, GroupOp, GroupPatch, GroupRole, ParticipantAction,
    ParticipantOutcome,
};
pub use instance::{
    ActivityEntry, ActivityQuery, EngineKind, Instance, InstanceStatus, LimitPeriod, Limits,
    WebhookOrdering, WebhookSettings,
};
pub use message::{
    ChatSummary, Contact, ContactCard, ContactQuery, HistoryQuery, Location, MediaKind, Message,
    MessageStatus, Poll, PollVote, Reaction, Typed, apply_reaction,
};
pub use profile::{Profile, ProfileAnswer, ProfileOp, ProfilePatch, ProfilePicture};
pub use usage::{Clock, ManualClock, SystemClock, Usage, UsageFilter, UsageKey};

/// A new time-ordered identifier (UUID v7): ids sort by creation time, which keeps
/// "newest first" listings and resumable streams cheap on every backend.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A page of results plus the total number of matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}
