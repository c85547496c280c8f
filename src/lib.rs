//! wagate: a self-hosted multi-instance WhatsApp gateway.
//!
//! # Layout
//! - [`app`]: wiring — [`app::run`] takes a configuration, a listener and a shutdown
//!   future; `main` and the integration tests both call it.
//! - [`config`]: layered configuration (`config/default.toml` → `CONFIG_FILE` → `.env` → env).
//! - [`telemetry`]: tracing setup (`RUST_LOG`, `LOG_FORMAT`, `LOG_DIR`).
//! - [`crypto`]: passwords, API keys, JWTs, sealing secrets at rest.
//! - [`gateway`]: the use cases — accounts, instances, sends within limits, contacts,
//!   the operator desk's ingest and sends, the storage switch — with one error enum per
//!   area. No HTTP types here.
//! - [`storage`]: storage backends implementing the domain's seam (SQLite, MongoDB).
//! - [`delivery`]: webhook delivery — the outbox on sled and the HTTP transport the
//!   webhook queue uses (the API resource is [`http::webhooks`]).
//! - [`http`]: the axum edge: [`http::state::AppState`], the access extractors, the one
//!   error mapping ([`http::error`]), one module per resource; the OpenAPI document
//!   generated from their annotations (`/openapi.json`) and its viewer (`/docs`).
//! - [`media`]: media files — fetched by URL, uploaded, stored under `DATA_DIR/uploads`.
//! - [`throttle`]: in-memory abuse limits — login throttling and per-user rate limits.
//! - [`outbound`]: HTTP to user-supplied URLs, with the private-network guard.
//! - [`metrics`]: the Prometheus metrics served by `GET /metrics`.
//! - [`qr`]: QR codes as PNG images.
//! - [`waba`]: Meta's side of the WABA operator desk — the Graph API client, the webhook
//!   payloads and their signature check (the desk's use cases are [`gateway::waba`]).
//!
//! The actor runtime and the domain types live in the `wagate-actors` crate.

pub mod app;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod delivery;
pub mod gateway;
pub mod http;
pub mod media;
pub mod metrics;
pub mod outbound;
pub mod qr;
pub mod storage;
pub mod telemetry;
pub mod throttle;

/// The process's memory allocator (mimalloc), set by `main` and by the load benchmark:
/// the request path allocates small, short-lived buffers on many threads, which glibc's
/// malloc serves with more locking and more resident memory.
pub use mimalloc::MiMalloc as Allocator;
pub mod waba;
