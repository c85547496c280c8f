//! Meta's side of the WABA operator desk, as data and HTTP to Meta: the Graph API client
//! and the notifications Meta's webhook sends. What the desk does with them is
//! [`crate::gateway::waba`]; its actors and nouns are in `wagate_actors::desk` and
//! `wagate_actors::domain::waba`.
//!
//! - [`graph`]: [`graph::GraphClient`], Meta's Cloud API over HTTP;
//! - [`meta_webhook`]: the signature check and the notification payload.

pub mod graph;
pub mod meta_webhook;
