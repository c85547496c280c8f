//! The actor runtime and domain of the gateway. No HTTP and no database driver here:
//! the server crate drives these types through typed handles and implements the
//! storage seam.
//!
//! # Layout
//! - [`domain`]: users, instances, activity and events — the nouns of the API.
//! - [`error`]: [`error::StoreError`] and [`error::DomainError`], the boundary errors.
//! - [`messaging`]: messages, chats and contacts, and their storage traits.
//! - [`phone`]: phone number normalisation.
//! - [`storage`]: the storage seam, small async traits every backend implements.

pub mod domain;
pub mod error;
pub mod messaging;
pub mod phone;
pub mod storage;
