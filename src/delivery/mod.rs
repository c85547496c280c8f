//! Delivering webhooks: the webhook queue's two seams (`wagate_actors::webhook_queue`),
//! implemented.
//!
//! - [`outbox`]: the durable outbox on sled, under `DATA_DIR/webhooks`;
//! - [`transport`]: the HTTP transport on reqwest, with the private-network guard.
//!
//! The API resource of an instance's deliveries is [`crate::http::webhooks`].

pub mod outbox;
pub mod transport;

pub use outbox::SledOutbox;
pub use transport::HttpTransport;
