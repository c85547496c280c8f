//! Webhooks: durable, signed, ordered delivery of instance events to the URL each
//! instance configures.
//!
//! - this file: the request format (envelope, headers, signature), which events an
//!   instance wants, the retry schedule, and the two seams the queue drives — the
//!   durable [`Outbox`] and the [`WebhookTransport`].
//! - [`queue`]: the `WebhookQueue` actor: events into the outbox, catch-up after a
//!   crash or a restart, one worker per instance with pending jobs.
//! - [`delivery`]: the `DeliveryWorker` actor: one instance's jobs, in order, with
//!   retries.

mod delivery;
mod queue;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::{
    Event, EventKind, Instance, InstanceEvent, MessageStatus, Page, WebhookSettings,
};
use crate::error::StoreError;
use crate::store::DynStorage;

pub use crate::domain::event::PauseReason;
pub use queue::{ReplayScope, WebhookQueueHandle};
pub(crate) use queue::{spawn, vacate};

/// How long a failing outbox waits before the queue or a worker tries again.
const OUTBOX_RETRY: Duration = Duration::from_secs(1);

/// Counts the changes of instances' webhook settings in storage, all instances together.
/// A worker reads it before it reads its instance, and again after it has read the jobs
/// it is about to attempt: when the count moved in between, a change may be newer than
/// its copy (and older than a job), and it reads the instance again. One count for all
/// instances: a change makes every worker read its instance once more, and changes are
/// rare beside deliveries.
#[derive(Clone, Default)]
struct SettingsEpoch(Arc<AtomicU64>);

impl SettingsEpoch {
    fn current(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// After a change is stored, before anything queues a job because of it.
    fn advance(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// What the queue needs.
#[derive(Clone)]
pub struct WebhookConfig {
    pub storage: DynStorage,
    pub outbox: Arc<dyn Outbox>,
    pub transport: Arc<dyn WebhookTransport>,
    /// Randomise retry delays (±20 %). Off only in tests that check exact schedules.
    pub jitter: bool,
    /// Told the outcome of every attempt as it is recorded (metrics); None where nobody
    /// listens.
    pub on_result: Option<DeliveryObserver>,
    /// Cluster mode: whether this node holds an instance's lease. The outbox is shared by
    /// every node; this queue catches up on and delivers only the instances it holds a
    /// lease on, and takes an instance's queue over when the lease manager adopts it.
    /// None: one node, every instance.
    pub leases: Option<Holds>,
    /// An instance whose every delivery attempt has failed for this long has its
    /// delivery paused; None: never.
    pub auto_pause_after: Option<Duration>,
    /// Publishes an event the queue raises itself (`webhook_paused`): stored, handed to
    /// the live streams and back to the queue, in its turn among the instance's own
    /// events (the event hub's `raise`). None: only stored (no hub listens).
    pub raise: Option<Raiser>,
}

/// See [`WebhookConfig::leases`].
pub type Holds = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// See [`WebhookConfig::raise`].
pub type Raiser = Arc<
    dyn Fn(String, Event) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>
        + Send
        + Sync,
>;

/// Called with the record of every delivery attempt and the instance it was for (None
/// when the instance is gone): metrics, and the `webhookSent` usage count.
pub type DeliveryObserver = Arc<dyn Fn(&DeliveryRecord, Option<&Instance>) + Send + Sync>;

/// What waits in the outbox for one instance (metrics, dashboards).
#[derive(Debug, Clone, PartialEq)]
pub struct Backlog {
    pub instance_id: String,
    /// Jobs waiting for delivery.
    pub pending: u64,
    /// When the job at the head of the queue (the next to go in strict order) was first
    /// queued.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Dead letters: deliveries given up, until retried or replayed.
    pub failed: u64,
}

/// Longest wait between two attempts, whatever the settings say.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// Delivery records kept per instance for `/webhook/deliveries`; older ones are dropped.
pub const DELIVERY_RECORDS_KEPT: usize = 1000;

/// One pending delivery: an event's exact request body, waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookJob {
    /// Position in the instance's queue (assigned by the outbox, increasing).
    pub seq: u64,
    pub instance_id: String,
    pub event_id: String,
    pub event: String,
    /// The JSON envelope, byte for byte what every attempt sends (and signs).
    pub body: Vec<u8>,
    /// Attempts made so far.
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    /// After a failed attempt: the next one is not made before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeliveryStatus {
    Delivered,
    /// Failed; another attempt is scheduled.
    Retrying,
    /// Failed for the last time (or could not be attempted): given up.
    Failed,
}

/// What `/webhook/deliveries` lists: one entry per attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub event_id: String,
    pub event: String,
    pub attempt: u32,
    pub status: DeliveryStatus,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub created_at: DateTime<Utc>,
}

/// A delivery given up (its attempts ran out, or it could not be attempted): its job,
/// kept with the last attempt's outcome until it is retried, replayed or its instance
/// deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// `attempts` counts every attempt made; a retry is attempt `attempts + 1`.
    pub job: WebhookJob,
    /// The receiver's HTTP status on the last attempt, when it answered.
    pub http_status: Option<u16>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    pub failed_at: DateTime<Utc>,
}

/// The durable outbox: pending jobs per instance in FIFO order, the last event each
/// instance's queue has seen, the instance's dead letters, and the recent delivery
/// records. Every write that the
/// delivery guarantee depends on is durable (survives a process crash) when it returns.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Appends the jobs in order (their `seq`s are assigned here) and moves each listed
    /// instance's cursor to the event given with it, atomically, in one write. Durable
    /// when it returns if it appended a job (one flush for the whole batch); a batch of
    /// cursor moves alone need not be: losing one only means re-checking those events
    /// after a crash.
    async fn push_many(
        &self,
        jobs: Vec<WebhookJob>,
        cursors: Vec<(String, String)>,
    ) -> Result<Vec<WebhookJob>, StoreError>;
    /// Appends one job and moves its instance's cursor to its event, atomically and
    /// durably.
    async fn push(&self, job: WebhookJob) -> Result<WebhookJob, StoreError> {
        let cursor = (job.instance_id.clone(), job.event_id.clone());
        let mut pushed = self.push_many(vec![job], vec![cursor]).await?;
        pushed
            .pop()
            .ok_or_else(|| StoreError::Corrupt("webhook outbox: a push returned no job".into()))
    }
    /// The last event id the queue has handled for the instance.
    async fn cursor(&self, instance_id: &str) -> Result<Option<String>, StoreError>;
    /// The oldest pending job of the instance.
    async fn head(&self, instance_id: &str) -> Result<Option<WebhookJob>, StoreError>;
    /// The instance's `limit` oldest pending jobs, oldest first.
    async fn pending(&self, instance_id: &str, limit: usize)
    -> Result<Vec<WebhookJob>, StoreError>;
    /// Stores a job's new attempt count.
    async fn update(&self, job: &WebhookJob) -> Result<(), StoreError>;
    /// Removes a finished job. Need not be durable when it returns: a removal a crash
    /// undoes delivers the job again, which at-least-once delivery allows.
    async fn remove(&self, job: &WebhookJob) -> Result<(), StoreError>;
    /// Moves a job given up from the queue to the instance's dead letters, atomically and
    /// durably.
    async fn bury(&self, dead: DeadLetter) -> Result<(), StoreError>;
    /// The instance's dead letters, oldest first.
    async fn dead_letters(&self, instance_id: &str) -> Result<Vec<DeadLetter>, StoreError>;
    /// Moves the dead letter of `event_id` back to the end of the instance's queue (its
    /// attempt count kept), atomically and durably; None when there is none. The cursor
    /// stays: the event was handled before.
    async fn revive(
        &self,
        instance_id: &str,
        event_id: &str,
    ) -> Result<Option<WebhookJob>, StoreError>;
    /// Appends a job for an event handled before (a replay), durably, without moving the
    /// cursor.
    async fn requeue(&self, job: WebhookJob) -> Result<WebhookJob, StoreError>;
    /// Every instance with at least one pending job.
    async fn pending_instances(&self) -> Result<Vec<String>, StoreError>;
    /// Number of pending jobs, all instances together.
    async fn depth(&self) -> Result<u64, StoreError>;
    /// Every instance with pending jobs or dead letters, with how many of each.
    async fn backlog(&self) -> Result<Vec<Backlog>, StoreError>;
    /// Appends a delivery record, keeping the newest [`DELIVERY_RECORDS_KEPT`]. Need not
    /// be durable when it returns: records may be kept in memory and written in batches
    /// (a crash can lose the newest ones).
    async fn record(&self, instance_id: &str, record: DeliveryRecord) -> Result<(), StoreError>;
    /// Newest first.
    async fn deliveries(
        &self,
        instance_id: &str,
        limit: u32,
        skip: u64,
    ) -> Result<Page<DeliveryRecord>, StoreError>;
    /// Forgets everything of a deleted instance.
    async fn purge(&self, instance_id: &str) -> Result<(), StoreError>;
    /// The id before which stored events were not this outbox's to deliver: an outbox
    /// that replaced another (a cluster's shared outbox, after the nodes' own) does not
    /// deliver history the earlier one handled. A catch-up of an instance without a
    /// cursor starts here. None: every stored event is this outbox's.
    fn origin(&self) -> Option<&str> {
        None
    }
    /// This node takes over the instance's queue from another (cluster mode): the jobs it
    /// queues from now on go after those already queued, whatever the nodes' clocks say.
    /// An outbox only one node uses has nothing to do.
    async fn adopt(&self, instance_id: &str) -> Result<(), StoreError> {
        let _ = instance_id;
        Ok(())
    }
}

/// One HTTP request of a delivery attempt.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Sends webhook requests. The implementation keeps connections alive, applies the
/// per-request timeout and the private-network guard.
#[async_trait]
pub trait WebhookTransport: Send + Sync {
    /// The HTTP status of the answer, or why there was none.
    async fn post(&self, request: WebhookRequest) -> Result<u16, String>;
}

/// The request body: the spec's envelope plus the event's id.
pub fn envelope(event: &InstanceEvent) -> Vec<u8> {
    event.webhook_body()
}

/// Lowercase hex HMAC-SHA256 of `body` with `secret`: the `X-Webhook-Signature`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    hex_lower(&mac.finalize().into_bytes())
}

fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// The headers of one attempt: ours first, then the instance's custom headers (which
/// may not replace ours). `X-Webhook-Signature` is the signature with the secret; while a
/// rotation's overlap lasts, it is followed by `,` and the signature with the replaced
/// secret.
pub fn headers(
    instance: &Instance,
    job: &WebhookJob,
    attempt: u32,
    now: DateTime<Utc>,
) -> Vec<(String, String)> {
    let mut h = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("X-Webhook-Id".to_owned(), job.event_id.clone()),
        (
            "X-Webhook-Timestamp".to_owned(),
            now.timestamp().to_string(),
        ),
        ("X-Webhook-Attempt".to_owned(), attempt.to_string()),
        ("X-Webhook-Event".to_owned(), job.event.clone()),
    ];
    if let Some(secret) = instance.webhook.secret.as_deref().filter(|s| !s.is_empty()) {
        let mut signature = sign(secret, &job.body);
        if let Some(previous) = previous_secret(&instance.webhook, now) {
            signature.push(',');
            signature.push_str(&sign(previous, &job.body));
        }
        h.push(("X-Webhook-Signature".to_owned(), signature));
    }
    for (name, value) in &instance.webhook.headers {
        if !h.iter().any(|(ours, _)| ours.eq_ignore_ascii_case(name)) {
            h.push((name.clone(), value.clone()));
        }
    }
    h
}

/// The secret a rotation replaced, while its overlap lasts at `now`.
fn previous_secret(w: &WebhookSettings, now: DateTime<Utc>) -> Option<&str> {
    let until = w.previous_secret_until?;
    w.previous_secret
        .as_deref()
        .filter(|s| !s.is_empty() && now < until)
}

/// The URL an instance delivers to, when webhooks are enabled and one is set.
pub fn target_url(instance: &Instance) -> Option<&str> {
    instance
        .webhook_url
        .as_deref()
        .filter(|u| instance.webhook_enabled && !u.is_empty())
}

/// Whether the instance's settings ask for this event. `webhook_test` is always sent
/// when a URL is set, enabled or not: it exists to check the endpoint.
pub fn wants(instance: &Instance, event: &InstanceEvent) -> bool {
    if event.kind() == EventKind::WebhookTest {
        return instance
            .webhook_url
            .as_deref()
            .is_some_and(|u| !u.is_empty());
    }
    if target_url(instance).is_none() {
        return false;
    }
    let w = &instance.webhook;
    match &event.event {
        Event::MessageReceived(_) => w.notify_received,
        Event::MessageSent(_) => w.notify_sent,
        // The account's own reactions follow its sent messages, others' its received ones.
        Event::MessageReaction(r) if r.from_me => w.notify_sent,
        Event::MessageReaction(_) => w.notify_received,
        // Edits and deletions follow the messages they change.
        Event::MessageEdited(e) if e.from_me => w.notify_sent,
        Event::MessageEdited(_) => w.notify_received,
        Event::MessageRevoked(r) if r.from_me => w.notify_sent,
        Event::MessageRevoked(_) => w.notify_received,
        Event::PollVote(v) if v.from_me => w.notify_sent,
        Event::PollVote(_) => w.notify_received,
        Event::PresenceUpdate(_) => w.notify_presence,
        Event::MessageStatus(change) => match change.status {
            MessageStatus::Delivered => w.notify_delivery,
            MessageStatus::Read => w.notify_read,
            _ => w.notify_delivery || w.notify_read,
        },
        _ => true,
    }
}

/// The wait before attempt `attempt + 1` after `attempt` failed: `interval · 2^(attempt-1)`,
/// times `jitter` (0.8 to 1.2 in production), capped at [`MAX_RETRY_DELAY`].
pub fn retry_delay(interval_ms: u64, attempt: u32, jitter: f64) -> Duration {
    let factor = 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
    let ms = (interval_ms as f64 * factor * jitter).max(0.0);
    Duration::from_millis(ms as u64).min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::domain::{EngineKind, InstanceStatus, WebhookSettings};

    /// An event of `kind` read from its wire `data`, as storage gives them back.
    fn ev(kind: &str, data: serde_json::Value) -> InstanceEvent {
        let kind: EventKind = kind.parse().expect("kind");
        InstanceEvent::new("i1", Event::from_data(kind, data).expect("data fits"))
    }

    fn instance(settings: WebhookSettings) -> Instance {
        Instance {
            id: "i1".into(),
            user_id: "u1".into(),
            name: "n".into(),
            description: None,
            engine: EngineKind::Sandbox,
            status: InstanceStatus::Connected,
            phone: None,
            webhook_url: Some("https://example.com/hook".into()),
            webhook_enabled: true,
            webhook: settings,
            limits: None,
            last_activity: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn envelope_is_the_whole_event() {
        let e = ev("connected", json!({"phone": "1", "pushName": "Ann"}));
        let body = envelope(&e);
        let parsed: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let expected = json!({
            "id": e.id,
            "event": "connected",
            "data": {"instanceId": "i1", "phone": "1", "pushName": "Ann"},
            "timestamp": e.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        assert_eq!(parsed, expected);
        assert!(body.starts_with(b"{\"id\":"), "the spec's field order");
    }

    #[test]
    fn envelope_has_id_event_data_timestamp() {
        let e = ev("connected", json!({"phone": "1"}));
        let v: serde_json::Value = serde_json::from_slice(&envelope(&e)).expect("json");
        assert_eq!(v["id"], e.id.as_str());
        assert_eq!(v["event"], "connected");
        assert_eq!(v["data"]["instanceId"], "i1");
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn presence_goes_out_only_with_notify_presence() {
        let typing = ev(
            "presence_update",
            json!({"remoteJid": "1@s.whatsapp.net", "presence": "composing"}),
        );
        assert!(!wants(&instance(WebhookSettings::default()), &typing));
        let on = instance(WebhookSettings {
            notify_presence: true,
            notify_received: false,
            notify_sent: false,
            ..WebhookSettings::default()
        });
        assert!(wants(&on, &typing));
    }

    #[test]
    fn notify_flags_filter_events() {
        let i = instance(WebhookSettings {
            notify_received: true,
            notify_sent: false,
            notify_delivery: true,
            notify_read: false,
            ..WebhookSettings::default()
        });
        assert!(wants(
            &i,
            &ev(
                "message_received",
                json!({"messageId": "m", "status": "delivered"})
            )
        ));
        assert!(!wants(
            &i,
            &ev("message_sent", json!({"messageId": "m", "status": "sent"}))
        ));
        assert!(wants(
            &i,
            &ev(
                "message_status",
                json!({"messageId": "m", "status": "delivered"})
            )
        ));
        assert!(!wants(
            &i,
            &ev(
                "message_status",
                json!({"messageId": "m", "status": "read"})
            )
        ));
        assert!(wants(&i, &ev("connected", json!({}))));
        let mut off = i.clone();
        off.webhook_enabled = false;
        assert!(!wants(&off, &ev("connected", json!({}))));
        assert!(
            wants(&off, &ev("webhook_test", json!({}))),
            "tests go out while disabled"
        );
    }

    #[test]
    fn custom_headers_cannot_replace_ours() {
        let mut settings = WebhookSettings {
            secret: Some("s".into()),
            ..WebhookSettings::default()
        };
        settings.headers = BTreeMap::from([
            ("X-Webhook-Id".to_string(), "forged".to_string()),
            ("X-Tenant".to_string(), "42".to_string()),
        ]);
        let i = instance(settings);
        let job = WebhookJob {
            seq: 1,
            instance_id: "i1".into(),
            event_id: "e1".into(),
            event: "connected".into(),
            body: b"{}".to_vec(),
            attempts: 0,
            created_at: Utc::now(),
            not_before: None,
        };
        let h = headers(&i, &job, 2, Utc::now());
        let get = |n: &str| {
            h.iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("X-Webhook-Id"), ["e1"]);
        assert_eq!(get("X-Webhook-Attempt"), ["2"]);
        assert_eq!(get("X-Tenant"), ["42"]);
        assert_eq!(get("X-Webhook-Signature"), [sign("s", b"{}")]);
    }

    #[test]
    fn a_rotated_secret_signs_beside_the_new_one_until_its_overlap_ends() {
        let now = Utc::now();
        let mut settings = WebhookSettings {
            secret: Some("new".into()),
            previous_secret: Some("old".into()),
            previous_secret_until: Some(now + chrono::Duration::minutes(5)),
            ..WebhookSettings::default()
        };
        let job = WebhookJob {
            seq: 1,
            instance_id: "i1".into(),
            event_id: "e1".into(),
            event: "connected".into(),
            body: b"{}".to_vec(),
            attempts: 0,
            created_at: now,
            not_before: None,
        };
        let signature = |settings: &WebhookSettings, at| {
            headers(&instance(settings.clone()), &job, 1, at)
                .into_iter()
                .find(|(k, _)| k == "X-Webhook-Signature")
                .map(|(_, v)| v)
        };
        let both = format!("{},{}", sign("new", b"{}"), sign("old", b"{}"));
        assert_eq!(signature(&settings, now), Some(both));
        let after = now + chrono::Duration::minutes(6);
        assert_eq!(signature(&settings, after), Some(sign("new", b"{}")));
        settings.secret = None;
        assert_eq!(signature(&settings, now), None, "no secret, no signature");
    }

    #[test]
    fn retry_delays_grow_and_cap() {
        assert_eq!(retry_delay(1000, 1, 1.0), Duration::from_secs(1));
        assert_eq!(retry_delay(1000, 2, 1.0), Duration::from_secs(2));
        assert_eq!(retry_delay(1000, 3, 1.0), Duration::from_secs(4));
        assert_eq!(retry_delay(1000, 3, 0.8), Duration::from_millis(3200));
        assert_eq!(retry_delay(60_000, 20, 1.2), MAX_RETRY_DELAY);
    }
}
