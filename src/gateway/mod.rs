//! The use cases of the gateway: what the API does, whatever the transport. Handlers
//! parse and authorize, call one function here and map its error; nothing here knows
//! HTTP.
//!
//! - [`accounts`]: users, credentials, API keys and tokens.
//! - [`storage`]: switching the storage provider live.

pub mod accounts;
pub mod storage;
