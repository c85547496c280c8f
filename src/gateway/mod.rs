//! The use cases of the gateway: what the API does, whatever the transport. Handlers
//! parse and authorize, call one function here and map its error; nothing here knows
//! HTTP.
//!
//! - [`accounts`]: users, credentials, API keys and tokens.
//! - [`waba`]: the WABA operator desk — settings with sealed secrets, Meta's
//!   notifications, the operators' chats and sends.

pub mod accounts;
pub mod waba;
