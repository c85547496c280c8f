//! Domain types shared by the actors, the storage seam and the HTTP edge.
//!
//! Field names follow the API contract; serde renames to camelCase happen at the HTTP
//! edge, not here, so storage backends are free to choose their own column names.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A new time-ordered identifier (UUID v7): ids sort by creation time, which keeps
/// "newest first" listings and resumable streams cheap on every backend.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Roles of the contract: `admin` sees everything, `user` owns instances, `operator`
/// answers WABA chats for the user named by its `owner_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    Admin,
    User,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Operator => "operator",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            "operator" => Ok(Role::Operator),
            other => Err(format!(
                "unknown role '{other}' (expected admin, user or operator)"
            )),
        }
    }
}

/// An account. Secrets are stored only in derived form: `password_hash` is an argon2 PHC
/// string, `api_key_hash` is the lookup digest of the API key and `api_key_sealed` the key
/// encrypted under the server's secret key (so login can hand it back, as the spec shows).
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub first_name: String,
    pub last_name: String,
    pub role: Role,
    pub owner_id: Option<String>,
    pub active: bool,
    pub api_key_hash: String,
    pub api_key_sealed: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which WhatsApp implementation drives an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EngineKind {
    /// The real WhatsApp Web multi-device protocol.
    Wacore,
    /// The built-in simulated WhatsApp network.
    Sandbox,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Wacore => "wacore",
            EngineKind::Sandbox => "sandbox",
        }
    }
}

impl FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "wacore" => Ok(EngineKind::Wacore),
            "sandbox" => Ok(EngineKind::Sandbox),
            other => Err(format!(
                "unknown engine '{other}' (expected wacore or sandbox)"
            )),
        }
    }
}

/// Connection status of an instance, exactly the names of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum InstanceStatus {
    Connecting,
    Qr,
    Connected,
    Disconnected,
    Reconnecting,
    LoggedOut,
    Failed,
}

impl InstanceStatus {
    pub const ALL: [InstanceStatus; 7] = [
        InstanceStatus::Connecting,
        InstanceStatus::Qr,
        InstanceStatus::Connected,
        InstanceStatus::Disconnected,
        InstanceStatus::Reconnecting,
        InstanceStatus::LoggedOut,
        InstanceStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Connecting => "connecting",
            InstanceStatus::Qr => "qr",
            InstanceStatus::Connected => "connected",
            InstanceStatus::Disconnected => "disconnected",
            InstanceStatus::Reconnecting => "reconnecting",
            InstanceStatus::LoggedOut => "logged_out",
            InstanceStatus::Failed => "failed",
        }
    }

    /// Whether a session in this status should be started again when the server starts.
    /// A logged-out device needs a new scan and a failed one a manual reconnect.
    pub fn restores_on_start(self) -> bool {
        !matches!(self, InstanceStatus::LoggedOut | InstanceStatus::Failed)
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InstanceStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InstanceStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown instance status '{s}'"))
    }
}

/// Per-instance webhook delivery settings (the spec's `webhookSettings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookSettings {
    pub notify_received: bool,
    pub notify_sent: bool,
    pub notify_delivery: bool,
    pub notify_read: bool,
    pub max_retries: u32,
    pub retry_interval_ms: u64,
    pub secret: Option<String>,
    pub headers: BTreeMap<String, String>,
}

impl Default for WebhookSettings {
    /// The defaults the spec's examples show.
    fn default() -> Self {
        WebhookSettings {
            notify_received: true,
            notify_sent: true,
            notify_delivery: false,
            notify_read: false,
            max_retries: 3,
            retry_interval_ms: 60_000,
            secret: None,
            headers: BTreeMap::new(),
        }
    }
}

/// The period a usage limit counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LimitPeriod {
    Day,
    Month,
}

/// Optional per-instance usage limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub max_messages_sent: Option<u64>,
    pub max_api_calls: Option<u64>,
    pub period: LimitPeriod,
}

/// A WhatsApp connection owned by a user.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub description: Option<String>,
    pub engine: EngineKind,
    pub status: InstanceStatus,
    /// The phone number the session is linked to, once paired.
    pub phone: Option<String>,
    pub webhook_url: Option<String>,
    pub webhook_enabled: bool,
    pub webhook: WebhookSettings,
    pub limits: Option<Limits>,
    pub last_activity: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One entry of an instance's activity log.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityEntry {
    pub id: String,
    pub instance_id: String,
    pub action: String,
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl ActivityEntry {
    pub fn new(instance_id: &str, action: &str, details: serde_json::Value) -> Self {
        ActivityEntry {
            id: new_id(),
            instance_id: instance_id.to_owned(),
            action: action.to_owned(),
            details,
            created_at: Utc::now(),
        }
    }
}

/// Filters of `GET /api/instances/{id}/activity`.
#[derive(Debug, Clone, Default)]
pub struct ActivityQuery {
    pub limit: u32,
    pub skip: u64,
    pub actions: Vec<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// An event of an instance: what `/events`, the SSE stream and the webhooks carry.
/// `id` is time-ordered, so "after this id" is a resumable cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceEvent {
    pub id: String,
    pub instance_id: String,
    pub kind: String,
    pub timestamp: DateTime<Utc>,
    pub data: serde_json::Value,
}

impl InstanceEvent {
    /// A new event; `data` gets the `instanceId` field every event carries.
    pub fn new(instance_id: &str, kind: &str, mut data: serde_json::Value) -> Self {
        if let Some(obj) = data.as_object_mut() {
            obj.insert(
                "instanceId".into(),
                serde_json::Value::String(instance_id.to_owned()),
            );
        }
        InstanceEvent {
            id: new_id(),
            instance_id: instance_id.to_owned(),
            kind: kind.to_owned(),
            timestamp: Utc::now(),
            data,
        }
    }
}

/// Filters of `GET /api/instances/{id}/events`.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only events strictly after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only events strictly after this event id (SSE resume).
    pub after_id: Option<String>,
    pub types: Vec<String>,
    pub limit: u32,
}

/// A page of results plus the total number of matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}
