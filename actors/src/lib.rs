//! The actor runtime and domain of the gateway. No HTTP and no database driver here:
//! the server crate drives these types through typed handles and implements the
//! storage seam.
//!
//! # Layout
//! - [`domain`]: users, instances, activity and events — the nouns of the API.
//! - [`error`]: [`error::StoreError`] and [`error::DomainError`], the boundary errors.
//! - [`media_store`]: media files under `DATA_DIR/uploads`.
//! - [`messaging`]: messages, chats and contacts, and their storage traits.
//! - [`phone`]: phone number normalisation.
//! - [`storage`]: the storage seam, small async traits every backend implements.
//! - [`backoff`]: [`backoff::Backoff`], restart delays with jitter inside a budget (pure, no clock).
//! - [`engine`]: the engine seam ([`engine::Engine`], [`engine::EngineEvent`]) and the
//!   engines this build ships: [`engine::sandbox`] is the simulated WhatsApp network,
//!   [`engine::wacore`] the real one (whatsapp-rust).
//! - [`events`]: [`events::EventHub`], events persisted then broadcast per instance.
//! - [`instance`]: [`instance::InstanceActor`] (one per WhatsApp instance), its
//!   supervisor with restarts and backoff, the typed handles and the status board.
//! - `root`: the `RootSupervisor` at the top of the tree; it respawns the instance
//!   supervisor if it dies (instances restored from storage, handles kept working).
//! - [`runtime`]: [`runtime::start_runtime`], the one call that starts it all (the root,
//!   which spawns the rest), and [`runtime::Runtime::shutdown`], which stops it in order.
//! - [`stats`]: the `StatsCounter` actor, daily usage buckets, limits, the clock.
//! - [`webhook`]: durable, signed, ordered webhook delivery (queue and workers).
//! - [`waba`]: the WABA operator desk — accounts, chats, messages, the 24-hour rule, its
//!   storage trait, the Graph API seam, the `OperatorDesk` and one `OperatorChatActor` per chat.
//! - `testing` (tests, or the `testing` feature): an in-memory storage.

pub mod backoff;
pub mod domain;
pub mod engine;
pub mod error;
pub mod events;
pub mod instance;
pub mod media_store;
pub mod messaging;
pub mod phone;
mod root;
pub mod runtime;
pub mod stats;
pub mod storage;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod waba;
pub mod webhook;
