//! The integration tests: one binary, every test against a real server on an ephemeral
//! port with its own temporary data directory, so they run in parallel.

#[macro_use]
mod common;

mod auth;
mod calls;
mod chats;
mod cluster;
mod cluster_desk;
mod cluster_faults;
mod cluster_feed;
mod cluster_keys;
mod cluster_media;
mod cluster_webhooks;
mod dashboard;
mod db;
mod desk;
mod edits;
mod errors;
mod examples;
mod faults;
mod groups;
mod instances;
mod layout;
mod messaging;
mod metrics;
mod openapi;
mod outbox_fault;
mod pacing;
mod pair;
mod presence;
mod profile;
mod properties;
mod receiver;
mod replies;
mod security;
mod startup;
mod stats;
mod status;
mod storage_suite;
mod supervision;
mod typed;
mod users;
mod waba;
mod waba_failures;
mod waba_media;
mod waba_templates;
mod wacore;
mod webhook_catchup;
mod webhook_ops;
mod webhook_ordering;
mod webhook_pause;
mod webhook_property;
mod webhooks;
