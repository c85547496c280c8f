//! The use cases of the gateway: what the API does, whatever the transport. Handlers
//! parse and authorize, call one function here and map its error; nothing here knows
//! HTTP.
//!
//! - [`accounts`]: users, credentials, API keys and tokens.
//! - [`instances`]: creating, changing and deleting instances.
//! - [`messaging`]: sending texts and media through an instance.
//! - [`contacts`]: adding, importing and saving contacts.
//! - [`storage`]: switching the storage provider live.
//! - [`waba`]: the WABA operator desk — settings with sealed secrets, Meta's
//!   notifications, the operators' chats and sends.

pub mod accounts;
pub mod contacts;
pub mod instances;
pub mod messaging;
pub mod storage;
pub mod waba;
