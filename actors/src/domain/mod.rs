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
pub use event::{Event, EventKind, EventQuery, InstanceEvent, Presence, StatusReport};
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

/// The greatest id this process handed out or was told of ([`raise_id_floor`]).
static ID_FLOOR: std::sync::Mutex<u128> = std::sync::Mutex::new(0);

/// A new time-ordered identifier (UUID v7): ids sort by creation time, which keeps
/// "newest first" listings and resumable streams cheap on every backend.
///
/// Ids strictly increase within the process and stay above every id passed to
/// [`raise_id_floor`], even when this machine's clock is behind the one that made it.
pub fn new_id() -> String {
    let fresh = uuid::Uuid::now_v7().as_u128();
    let mut floor = ID_FLOOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let id = if fresh > *floor {
        fresh
    } else {
        floor.saturating_add(1)
    };
    *floor = id;
    uuid::Uuid::from_u128(id).simple().to_string()
}

/// Makes every later [`new_id`] sort after `seen`, an id made elsewhere (another node
/// whose clock may run ahead). Anything but a UUID is ignored.
pub fn raise_id_floor(seen: &str) {
    let Ok(seen) = uuid::Uuid::try_parse(seen) else {
        return;
    };
    let mut floor = ID_FLOOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *floor = (*floor).max(seen.as_u128());
}

/// A page of results plus the total number of matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_strictly_increase_and_pass_a_raised_floor() {
        let mut last = new_id();
        for _ in 0..1000 {
            let next = new_id();
            assert!(next > last, "{next} after {last}");
            last = next;
        }
        // An id made an hour ahead (a node with a fast clock): later ids sort after it.
        let ahead_ms = (chrono::Utc::now().timestamp_millis() + 3_600_000) as u64;
        let ahead = uuid::Builder::from_unix_timestamp_millis(ahead_ms, &[0xff; 10])
            .into_uuid()
            .simple()
            .to_string();
        assert!(new_id() < ahead);
        raise_id_floor(&ahead);
        raise_id_floor("not an id");
        let next = new_id();
        assert!(next > ahead, "{next} after {ahead}");
        assert_eq!(next.len(), 32);
        assert!(new_id() > next);
    }
}
