//! An account's approved message templates, read from Meta and kept for a short while:
//! a panel asks for them each time the 24-hour window of a chat is closed, and Meta's
//! list changes only when someone edits templates in its dashboard.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use wagate_actors::domain::Clock;
use wagate_actors::domain::waba::{GraphCredentials, WabaTemplate};

use super::{StoredSettings, Waba, WabaError};

/// The default of `waba_templates_ttl_ms`: how long a fetched list is served.
pub const TEMPLATES_TTL: Duration = Duration::from_secs(300);

/// An account's approved templates and when Meta listed them.
#[derive(Debug, Clone, PartialEq)]
pub struct Templates {
    pub templates: Arc<Vec<WabaTemplate>>,
    pub fetched_at: DateTime<Utc>,
}

/// One account's list, and the settings it was read with: new settings (another
/// business account, another token) make it stale at once.
struct Cached {
    business_account_id: String,
    settings_updated_at: DateTime<Utc>,
    templates: Templates,
}

/// The lists read from Meta, by account owner. Cheap to clone.
#[derive(Clone)]
pub(super) struct TemplateCache {
    ttl: Duration,
    /// The server's clock (tests move it instead of waiting out the TTL).
    clock: Arc<dyn Clock>,
    /// A std mutex: held only to look up or replace an entry, never across a call to
    /// Meta. Two requests that miss at once both ask Meta; the later answer stays.
    entries: Arc<Mutex<HashMap<String, Cached>>>,
}

impl TemplateCache {
    pub(super) fn new(ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        TemplateCache {
            ttl,
            clock,
            entries: Arc::default(),
        }
    }

    /// The owner's list, if read with these settings less than the TTL ago.
    fn fresh(&self, owner_id: &str, settings: &StoredSettings) -> Option<Templates> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cached = entries.get(owner_id)?;
        let age = self.clock.now() - cached.templates.fetched_at;
        let young = age >= chrono::Duration::zero() && age.to_std().is_ok_and(|age| age < self.ttl);
        (young
            && cached.business_account_id == settings.settings.business_account_id
            && cached.settings_updated_at == settings.updated_at)
            .then(|| cached.templates.clone())
    }

    fn keep(&self, owner_id: &str, settings: &StoredSettings, templates: Templates) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                owner_id.to_owned(),
                Cached {
                    business_account_id: settings.settings.business_account_id.clone(),
                    settings_updated_at: settings.updated_at,
                    templates,
                },
            );
    }
}

impl Waba {
    /// The approved templates of `owner_id`'s business account, sorted by name and
    /// language: from the cache while it is younger than its TTL (and the settings did
    /// not change), else from Meta. A failure is not cached.
    ///
    /// Fails with `NotConfigured` when the account has no settings, `Graph` when Meta
    /// refused or could not be reached.
    pub async fn templates(&self, owner_id: &str) -> Result<Templates, WabaError> {
        let Some(stored) = self.settings(owner_id).await? else {
            return Err(WabaError::NotConfigured);
        };
        let s = &stored.settings;
        if s.business_account_id.is_empty() || s.access_token.is_empty() {
            return Err(WabaError::NotConfigured);
        }
        if let Some(templates) = self.templates.fresh(owner_id, &stored) {
            return Ok(templates);
        }
        let credentials = GraphCredentials {
            phone_number_id: s.phone_number_id.clone(),
            access_token: s.access_token.clone(),
        };
        let mut list = self
            .graph
            .approved_templates(&credentials, &s.business_account_id)
            .await
            .map_err(WabaError::Graph)?;
        list.sort_by(|a, b| (&a.name, &a.language).cmp(&(&b.name, &b.language)));
        let templates = Templates {
            templates: Arc::new(list),
            fetched_at: self.templates.clock.now(),
        };
        self.templates.keep(owner_id, &stored, templates.clone());
        Ok(templates)
    }
}
