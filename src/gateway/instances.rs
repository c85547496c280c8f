//! Instances: creating, changing and deleting them. The rules of names, descriptions,
//! webhook URLs and webhook settings live here, and deleting reaches every part that
//! keeps something of an instance (its actor, storage, media files, the webhook queue).

use std::collections::BTreeMap;

use chrono::{SecondsFormat, Utc};
use serde_json::json;
use wagate_actors::cluster::LeaseManagerHandle;
use wagate_actors::domain::event::WebhookUpdated;
use wagate_actors::domain::{
    ActivityEntry, EngineKind, Event, Instance, InstanceEvent, Limits, WebhookOrdering,
    WebhookSettings, new_id,
};
use wagate_actors::error::{DomainError, StoreError};
use wagate_actors::event_hub::EventHub;
use wagate_actors::instance::InstancesHandle;
use wagate_actors::store::DynStorage;
use wagate_actors::webhook_queue::WebhookQueueHandle;

use crate::media::MediaStore;

/// Why an instance operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// A field breaks its rules (the message names it).
    #[error("{0}")]
    Invalid(String),
    /// No instance with this id (any more).
    #[error("instance {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// Longest accepted instance name or description.
const MAX_NAME: usize = 200;
const MAX_DESCRIPTION: usize = 2000;
/// Longest accepted webhook URL.
const MAX_URL: usize = 2048;
/// Custom webhook headers: at most this many, each name and value bounded.
const MAX_HEADERS: usize = 20;
const MAX_HEADER_LEN: usize = 1024;
/// Retries are bounded so a dead receiver cannot keep a delivery alive for days.
const MAX_RETRIES: u32 = 20;
const MIN_RETRY_INTERVAL_MS: u64 = 100;
/// The longest overlap of a secret rotation: 30 days.
const MAX_SECRET_GRACE_SECS: u64 = 30 * 24 * 3600;
const MAX_RETRY_INTERVAL_MS: u64 = 3_600_000;
/// As long as a text message may be.
const MAX_REJECT_CALLS_MESSAGE: usize = 4096;
/// The fastest pace a `sendRate` may set, in messages per minute: ten a second is
/// already far beyond what passes for a person typing.
pub const MAX_SEND_RATE: u32 = 600;

/// Changes to an instance's webhook settings; absent fields stay as they are.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SettingsPatch {
    pub notify_received: Option<bool>,
    pub notify_sent: Option<bool>,
    pub notify_delivery: Option<bool>,
    pub notify_read: Option<bool>,
    pub notify_presence: Option<bool>,
    pub reject_calls: Option<bool>,
    /// An empty string removes it.
    pub reject_calls_message: Option<String>,
    /// Messages per minute; 0 removes the pace.
    pub send_rate: Option<u32>,
    pub max_retries: Option<u32>,
    pub retry_interval_ms: Option<u64>,
    /// An empty string removes the secret.
    pub secret: Option<String>,
    /// With a new `secret`: seconds during which the replaced secret still signs every
    /// delivery beside the new one (0 or absent: none).
    pub secret_grace_secs: Option<u64>,
    /// Replaces the previous set.
    pub headers: Option<BTreeMap<String, String>>,
    pub ordering: Option<WebhookOrdering>,
}

impl SettingsPatch {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        *self == SettingsPatch::default()
    }

    /// This patch with every field `over` gives taking `over`'s value.
    pub fn overlaid(self, over: SettingsPatch) -> SettingsPatch {
        SettingsPatch {
            notify_received: over.notify_received.or(self.notify_received),
            notify_sent: over.notify_sent.or(self.notify_sent),
            notify_delivery: over.notify_delivery.or(self.notify_delivery),
            notify_read: over.notify_read.or(self.notify_read),
            notify_presence: over.notify_presence.or(self.notify_presence),
            reject_calls: over.reject_calls.or(self.reject_calls),
            reject_calls_message: over.reject_calls_message.or(self.reject_calls_message),
            send_rate: over.send_rate.or(self.send_rate),
            max_retries: over.max_retries.or(self.max_retries),
            retry_interval_ms: over.retry_interval_ms.or(self.retry_interval_ms),
            secret: over.secret.or(self.secret),
            secret_grace_secs: over.secret_grace_secs.or(self.secret_grace_secs),
            headers: over.headers.or(self.headers),
            ordering: over.ordering.or(self.ordering),
        }
    }
}

/// What a new instance needs.
#[derive(Debug, Clone)]
pub struct NewInstance {
    pub owner_id: String,
    pub name: String,
    pub description: Option<String>,
    /// The server's default engine when absent.
    pub engine: Option<EngineKind>,
    pub webhook_url: Option<String>,
    /// On by default when a webhook URL is given.
    pub webhook_enabled: Option<bool>,
    pub settings: SettingsPatch,
    pub limits: Option<Limits>,
}

/// Changes to an instance; absent fields stay as they are.
#[derive(Debug, Default, Clone)]
pub struct InstancePatch {
    pub name: Option<String>,
    pub description: Option<String>,
    /// An empty string removes the URL.
    pub webhook_url: Option<String>,
    pub webhook_enabled: Option<bool>,
    pub webhook_settings: Option<SettingsPatch>,
    pub limits: Option<Limits>,
}

/// Instance operations over storage, the instance actors, the event hub, the webhook
/// queue and the media files. Cheap to clone.
#[derive(Clone)]
pub struct InstanceAdmin {
    storage: DynStorage,
    actors: InstancesHandle,
    events: EventHub,
    webhooks: WebhookQueueHandle,
    media: MediaStore,
    default_engine: EngineKind,
    allow_private_urls: bool,
    /// Cluster mode: new instances are placed by the lease managers, not started here.
    placement: Option<LeaseManagerHandle>,
}

pub fn validate_name(name: &str) -> Result<String, InstanceError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > MAX_NAME {
        return Err(InstanceError::Invalid(format!(
            "name must be 1 to {MAX_NAME} characters"
        )));
    }
    Ok(n.to_owned())
}

pub fn validate_description(d: Option<String>) -> Result<Option<String>, InstanceError> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(InstanceError::Invalid(format!(
            "description must be at most {MAX_DESCRIPTION} characters"
        ))),
        Some(d) if d.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// http(s) URLs only, not on private networks unless allowed; empty clears the URL.
pub async fn validate_webhook_url(
    url: Option<String>,
    allow_private: bool,
) -> Result<Option<String>, InstanceError> {
    let invalid = |m: &str| InstanceError::Invalid(m.to_owned());
    let Some(url) = url else { return Ok(None) };
    let url = url.trim().to_owned();
    if url.is_empty() {
        return Ok(None);
    }
    if url.len() > MAX_URL {
        return Err(invalid("webhookUrl must be at most 2048 characters"));
    }
    let parsed = reqwest::Url::parse(&url)
        .map_err(|_| invalid("webhookUrl must be an absolute http(s) URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid("webhookUrl must be an absolute http(s) URL"));
    }
    crate::outbound::check_url_resolving(&parsed, allow_private)
        .await
        .map_err(|e| InstanceError::Invalid(format!("webhookUrl: {e}")))?;
    Ok(Some(url))
}

/// Applies `p` to `w`, refusing out-of-range retries, long secrets and invalid headers.
pub fn apply_settings(w: &mut WebhookSettings, p: SettingsPatch) -> Result<(), InstanceError> {
    if let Some(v) = p.notify_received {
        w.notify_received = v;
    }
    if let Some(v) = p.notify_sent {
        w.notify_sent = v;
    }
    if let Some(v) = p.notify_delivery {
        w.notify_delivery = v;
    }
    if let Some(v) = p.notify_read {
        w.notify_read = v;
    }
    if let Some(v) = p.notify_presence {
        w.notify_presence = v;
    }
    if let Some(v) = p.reject_calls {
        w.reject_calls = v;
    }
    if let Some(v) = p.reject_calls_message {
        if v.chars().count() > MAX_REJECT_CALLS_MESSAGE {
            return Err(InstanceError::Invalid(format!(
                "rejectCallsMessage must be at most {MAX_REJECT_CALLS_MESSAGE} characters"
            )));
        }
        w.reject_calls_message = Some(v).filter(|m| !m.trim().is_empty());
    }
    if let Some(v) = p.send_rate {
        if v > MAX_SEND_RATE {
            return Err(InstanceError::Invalid(format!(
                "sendRate must be at most {MAX_SEND_RATE} messages per minute (0 removes it)"
            )));
        }
        w.send_rate = Some(v).filter(|&r| r > 0);
    }
    if let Some(v) = p.max_retries {
        if v > MAX_RETRIES {
            return Err(InstanceError::Invalid(format!(
                "maxRetries must be at most {MAX_RETRIES}"
            )));
        }
        w.max_retries = v;
    }
    if let Some(v) = p.retry_interval_ms {
        if !(MIN_RETRY_INTERVAL_MS..=MAX_RETRY_INTERVAL_MS).contains(&v) {
            return Err(InstanceError::Invalid(format!(
                "retryInterval must be between {MIN_RETRY_INTERVAL_MS} and {MAX_RETRY_INTERVAL_MS} ms"
            )));
        }
        w.retry_interval_ms = v;
    }
    if let Some(secret) = p.secret {
        if secret.len() > MAX_HEADER_LEN {
            return Err(InstanceError::Invalid(format!(
                "secret must be at most {MAX_HEADER_LEN} characters"
            )));
        }
        let new = (!secret.is_empty()).then_some(secret);
        let grace = p.secret_grace_secs.unwrap_or(0);
        if grace > MAX_SECRET_GRACE_SECS {
            return Err(InstanceError::Invalid(format!(
                "secretGracePeriod must be at most {MAX_SECRET_GRACE_SECS} seconds"
            )));
        }
        if new != w.secret {
            let replaced = std::mem::replace(&mut w.secret, new);
            let overlap = (grace > 0 && replaced.is_some()).then(|| {
                Utc::now() + chrono::Duration::seconds(i64::try_from(grace).unwrap_or(i64::MAX))
            });
            w.previous_secret = overlap.and(replaced);
            w.previous_secret_until = overlap;
        }
    } else if p.secret_grace_secs.is_some() {
        return Err(InstanceError::Invalid(
            "secretGracePeriod comes with a new webhookSecret".into(),
        ));
    }
    if let Some(headers) = p.headers {
        check_headers(&headers)?;
        w.headers = headers;
    }
    if let Some(ordering) = p.ordering {
        w.ordering = ordering;
    }
    Ok(())
}

/// Custom delivery headers: bounded in number and length, valid HTTP names and values.
fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), InstanceError> {
    use reqwest::header::{HeaderName, HeaderValue};
    if headers.len() > MAX_HEADERS {
        return Err(InstanceError::Invalid(format!(
            "headers may hold at most {MAX_HEADERS} entries"
        )));
    }
    for (name, value) in headers {
        let valid_name = !name.is_empty()
            && name.len() <= MAX_HEADER_LEN
            && HeaderName::from_bytes(name.as_bytes()).is_ok();
        if !valid_name {
            return Err(InstanceError::Invalid(format!(
                "headers: '{name}' is not a valid header name"
            )));
        }
        if value.len() > MAX_HEADER_LEN || HeaderValue::from_str(value).is_err() {
            return Err(InstanceError::Invalid(format!(
                "headers: the value of '{name}' is not a valid header value"
            )));
        }
    }
    Ok(())
}

impl InstanceAdmin {
    pub fn new(
        storage: DynStorage,
        actors: InstancesHandle,
        events: EventHub,
        webhooks: WebhookQueueHandle,
        media: MediaStore,
        default_engine: EngineKind,
        allow_private_urls: bool,
    ) -> Self {
        InstanceAdmin {
            storage,
            actors,
            events,
            webhooks,
            media,
            default_engine,
            allow_private_urls,
            placement: None,
        }
    }

    /// Cluster mode: a created instance is started by whichever node takes its lease;
    /// `leases` is asked to look at once.
    pub fn placed_by(mut self, leases: LeaseManagerHandle) -> Self {
        self.placement = Some(leases);
        self
    }

    /// Creates an instance, logs it as `created` and starts connecting it (in cluster
    /// mode, on the node that takes its lease, within a scan).
    ///
    /// Fails with `Invalid` on a field that breaks its rules (the first one, in the
    /// order name, description, webhook URL, webhook settings).
    pub async fn create(&self, new: NewInstance) -> Result<Instance, InstanceError> {
        let name = validate_name(&new.name)?;
        let description = validate_description(new.description)?;
        let webhook_url = validate_webhook_url(new.webhook_url, self.allow_private_urls).await?;
        let mut webhook = WebhookSettings::default();
        apply_settings(&mut webhook, new.settings)?;
        let engine = new.engine.unwrap_or(self.default_engine);
        let instance = Instance {
            description,
            webhook_enabled: new.webhook_enabled.unwrap_or(webhook_url.is_some()),
            webhook_url,
            webhook,
            limits: new.limits,
            ..Instance::new(&new_id(), &new.owner_id, &name, engine, Utc::now())
        };
        self.storage.create_instance(&instance).await?;
        self.storage
            .append_activity(&ActivityEntry::new(
                &instance.id,
                "created",
                json!({"name": instance.name, "engine": instance.engine}),
            ))
            .await?;
        match &self.placement {
            Some(leases) => leases.scan_now(),
            None => {
                self.actors.start(instance.clone(), false).await?;
            }
        }
        Ok(instance)
    }

    /// Applies `patch` to `instance` and stores it; the webhook queue reads the new
    /// settings, the change is logged as `updated`, and a webhook change publishes
    /// `webhook_updated`.
    ///
    /// Fails with `Invalid` on a field that breaks its rules, `NotFound` when the
    /// instance was deleted meanwhile.
    pub async fn update(
        &self,
        mut instance: Instance,
        patch: InstancePatch,
    ) -> Result<Instance, InstanceError> {
        let mut changed: Vec<&str> = Vec::new();
        if let Some(name) = patch.name {
            instance.name = validate_name(&name)?;
            changed.push("name");
        }
        if patch.description.is_some() {
            instance.description = validate_description(patch.description)?;
            changed.push("description");
        }
        let mut webhook_changed = false;
        if patch.webhook_url.is_some() {
            let had_url = instance.webhook_url.is_some();
            instance.webhook_url =
                validate_webhook_url(patch.webhook_url, self.allow_private_urls).await?;
            // As at creation: a first URL switches webhooks on unless the request says otherwise.
            if !had_url && instance.webhook_url.is_some() && patch.webhook_enabled.is_none() {
                instance.webhook_enabled = true;
            }
            changed.push("webhookUrl");
            webhook_changed = true;
        }
        if let Some(enabled) = patch.webhook_enabled {
            instance.webhook_enabled = enabled;
            changed.push("webhookEnabled");
            webhook_changed = true;
        }
        if let Some(settings) = patch.webhook_settings {
            apply_settings(&mut instance.webhook, settings)?;
            changed.push("webhookSettings");
            webhook_changed = true;
        }
        if patch.limits.is_some() {
            instance.limits = patch.limits;
            changed.push("limits");
        }
        instance.updated_at = Utc::now();
        if webhook_changed {
            // The events from before the change are judged by the settings before it.
            self.webhooks.sync().await;
        }
        if !self.storage.update_instance(&instance).await? {
            return Err(InstanceError::NotFound(instance.id));
        }
        // The webhook queue keeps the instance's URL and settings; it reads them again.
        self.webhooks.invalidate(&instance.id);
        self.storage
            .append_activity(&ActivityEntry::new(
                &instance.id,
                "updated",
                json!({"fields": changed}),
            ))
            .await?;
        if webhook_changed {
            self.events
                .publish(InstanceEvent::new(
                    &instance.id,
                    Event::WebhookUpdated(WebhookUpdated {
                        timestamp: instance
                            .updated_at
                            .to_rfc3339_opts(SecondsFormat::Millis, true),
                        webhook_url: instance.webhook_url.clone(),
                        webhook_enabled: instance.webhook_enabled,
                    }),
                ))
                .await?;
        }
        Ok(instance)
    }

    /// Deletes an instance: stops its actor and ends its session, deletes its stored
    /// data and its media files, and drops what the webhook queue holds of it.
    pub async fn delete(&self, instance: &Instance) -> Result<(), InstanceError> {
        self.actors.remove(&instance.id).await?;
        self.storage.delete_instance(&instance.id).await?;
        self.media.remove_instance(&instance.id).await;
        self.webhooks.purge(&instance.id);
        Ok(())
    }
}
