//! The actor runtime and domain of the gateway. No HTTP and no database driver here:
//! the server crate drives these types through typed handles and implements the
//! storage seam.
//!
//! # Layout
//! - [`domain`]: the nouns — accounts, instances, addresses (phones and JIDs), messages
//!   and contacts, usage periods, the typed [`domain::Event`] (its serialisation is the
//!   webhook and SSE contract) and the WABA desk's chats with the 24-hour rule. Pure:
//!   no actors, no I/O.
//! - [`store`]: the storage seam, small async traits every backend implements.
//! - [`error`]: [`error::StoreError`], [`error::StoreResult`] and [`error::DomainError`].
//! - [`handle`]: what every typed handle is made of ([`handle::ActorSlot`], one call with
//!   a timeout).
//! - [`backoff`]: restart delays with jitter inside a budget (pure, no clock).
//! - [`engine`]: the engine seam ([`engine::Engine`], [`engine::EngineEvent`]) and the
//!   engines: [`engine::sandbox`] simulates WhatsApp, [`engine::wacore`] is the real one
//!   (whatsapp-rust).
//! - [`event_hub`]: events stored, queued for their webhook, then broadcast per instance.
//! - [`instance`]: one [`instance::InstanceActor`] per WhatsApp instance, their
//!   supervisor with restarts and backoff, the typed handles and the status board.
//! - [`stats`]: the `StatsCounter` actor: usage counts, limits, one `limit_exceeded` per
//!   period.
//! - [`webhook_queue`]: durable, signed, ordered webhook delivery (the queue actor and
//!   one delivery worker per instance).
//! - [`desk`]: the WABA operator desk — the Graph API seam, the `OperatorDesk` and one
//!   `OperatorChatActor` per chat.
//! - [`media_store`]: media files under `DATA_DIR/uploads`, plus the shared backend of
//!   cluster mode.
//! - `root`: the `RootSupervisor` at the top of the tree; it supervises the instance
//!   supervisor, the webhook queue, the stats counter and the operator desk, and
//!   respawns whichever dies with its state taken back from storage.
//! - [`runtime`]: [`runtime::start_runtime`], the one call that starts the tree in order,
//!   and [`runtime::Runtime::shutdown`], which stops it in the reverse order.
//! - `testing` (tests, or the `testing` feature): an in-memory storage.

pub mod backoff;
pub mod cluster;
pub mod desk;
pub mod domain;
pub mod engine;
pub mod error;
pub mod event_hub;
pub mod handle;
pub mod instance;
pub mod media_store;
mod root;
pub mod runtime;
pub mod stats;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod webhook_queue;
