//! Instances: one WhatsApp connection each, its settings, limits and activity log.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::new_id;

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

/// Whether an instance's webhooks keep the order of its events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum WebhookOrdering {
    /// In the order of the events: a delivery that fails holds back every later one of
    /// its instance until it succeeds or its retries run out (with the defaults, about
    /// 7 minutes; with `maxRetries` 20 and the delay capped at an hour, most of a day).
    #[default]
    Strict,
    /// Each delivery on its own: a failing one waits for its retry while later ones go
    /// out; the receiver may see events out of order (each carries its `timestamp`).
    Unordered,
}

impl WebhookOrdering {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOrdering::Strict => "strict",
            WebhookOrdering::Unordered => "unordered",
        }
    }
}

impl FromStr for WebhookOrdering {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(WebhookOrdering::Strict),
            "unordered" => Ok(WebhookOrdering::Unordered),
            other => Err(format!(
                "unknown webhookOrdering '{other}' (expected strict or unordered)"
            )),
        }
    }
}

/// Per-instance webhook delivery settings (the spec's `webhookSettings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookSettings {
    pub notify_received: bool,
    pub notify_sent: bool,
    pub notify_delivery: bool,
    pub notify_read: bool,
    /// `presence_update` events (contacts online, typing): off by default, as they are
    /// many and not part of any history.
    #[serde(default)]
    pub notify_presence: bool,
    /// Incoming calls are rejected (`call_received` says so). Kept with the webhook
    /// settings: the instance's one settings document.
    #[serde(default)]
    pub reject_calls: bool,
    /// Sent to a caller whose call was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_calls_message: Option<String>,
    /// Outbound messages per minute (`sendRate`): sends wait in the instance's durable
    /// queue and go out at this pace, with jitter. None: sent at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_rate: Option<u32>,
    pub max_retries: u32,
    pub retry_interval_ms: u64,
    pub secret: Option<String>,
    pub headers: BTreeMap<String, String>,
    /// The secret replaced last, still signing deliveries beside `secret` until
    /// `previous_secret_until` (a rotation with overlap).
    #[serde(default)]
    pub previous_secret: Option<String>,
    #[serde(default)]
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// Delivery is paused: events keep being queued, nothing is sent until a resume.
    #[serde(default)]
    pub paused: bool,
    /// The last resume: failed attempts before it do not count towards an automatic
    /// pause.
    #[serde(default)]
    pub resumed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ordering: WebhookOrdering,
}

impl Default for WebhookSettings {
    /// The defaults the spec's examples show.
    fn default() -> Self {
        WebhookSettings {
            notify_received: true,
            notify_sent: true,
            notify_delivery: false,
            notify_read: false,
            notify_presence: false,
            reject_calls: false,
            reject_calls_message: None,
            send_rate: None,
            max_retries: 3,
            retry_interval_ms: 60_000,
            secret: None,
            headers: BTreeMap::new(),
            previous_secret: None,
            previous_secret_until: None,
            paused: false,
            resumed_at: None,
            ordering: WebhookOrdering::Strict,
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

impl Instance {
    /// A new instance `id` of `user_id` as it starts: connecting, not linked to a phone,
    /// without description or limits, webhooks off with the default settings. Fill
    /// what is known with struct update syntax.
    pub fn new(
        id: &str,
        user_id: &str,
        name: &str,
        engine: EngineKind,
        now: DateTime<Utc>,
    ) -> Instance {
        Instance {
            id: id.to_owned(),
            user_id: user_id.to_owned(),
            name: name.to_owned(),
            description: None,
            engine,
            status: InstanceStatus::Connecting,
            phone: None,
            webhook_url: None,
            webhook_enabled: false,
            webhook: WebhookSettings::default(),
            limits: None,
            last_activity: None,
            created_at: now,
            updated_at: now,
        }
    }
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

/// The activity log of the runtime itself (restarts of its long-lived actors) is kept
/// under this instance id, beside the logs of the instances.
pub const SYSTEM_ACTIVITY: &str = "system";

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
