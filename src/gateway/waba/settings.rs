//! An account's WABA settings: stored with their secrets sealed under the server's key,
//! opened for the sends and webhook checks that need them.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use wagate_actors::domain::waba::{GraphCredentials, WabaAccount};
use wagate_actors::error::StoreError;

use super::{Waba, WabaError};

/// The plain settings of an account.
#[derive(Debug, Clone, PartialEq)]
pub struct WabaSettings {
    pub access_token: String,
    pub phone_number_id: String,
    pub business_account_id: String,
    pub app_secret: String,
    pub verify_token: String,
}

/// Settings as given: every field is required the first time; later, an omitted one
/// keeps its stored value.
#[derive(Debug, Clone, Default)]
pub struct SettingsInput {
    pub access_token: Option<String>,
    pub phone_number_id: Option<String>,
    pub business_account_id: Option<String>,
    pub app_secret: Option<String>,
    pub verify_token: Option<String>,
}

/// An account's settings, opened, and when they were last set.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSettings {
    pub settings: WabaSettings,
    pub updated_at: DateTime<Utc>,
}

/// SHA-256 (hex) of a verify token: how Meta's verification request finds its account.
pub(super) fn verify_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A secret as it may be shown: its last four characters when it is long enough for
/// that to give nothing away, else only stars.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() >= 12 {
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("****{tail}")
    } else {
        "****".to_owned()
    }
}

/// The given value (trimmed), else the stored one; `Missing(name)` when neither is
/// non-empty.
fn pick(
    given: Option<String>,
    stored: Option<&String>,
    name: &'static str,
) -> Result<String, WabaError> {
    let value = given
        .map(|v| v.trim().to_owned())
        .or_else(|| stored.cloned())
        .unwrap_or_default();
    if value.is_empty() {
        Err(WabaError::Missing(name))
    } else {
        Ok(value)
    }
}

impl Waba {
    /// Stores the owner's settings, secrets sealed, completing `input` from the stored
    /// ones; answers them as storage holds them afterwards.
    ///
    /// Fails with `Missing` for a field given neither now nor before, `PhoneNumberInUse`
    /// when another account has the phone number id.
    pub async fn put_settings(
        &self,
        owner_id: &str,
        input: SettingsInput,
    ) -> Result<Option<StoredSettings>, WabaError> {
        let current = self.settings(owner_id).await?.map(|s| s.settings);
        let c = current.as_ref();
        let s = WabaSettings {
            access_token: pick(
                input.access_token,
                c.map(|s| &s.access_token),
                "accessToken",
            )?,
            phone_number_id: pick(
                input.phone_number_id,
                c.map(|s| &s.phone_number_id),
                "phoneNumberId",
            )?,
            business_account_id: pick(
                input.business_account_id,
                c.map(|s| &s.business_account_id),
                "businessAccountId",
            )?,
            app_secret: pick(input.app_secret, c.map(|s| &s.app_secret), "appSecret")?,
            verify_token: pick(
                input.verify_token,
                c.map(|s| &s.verify_token),
                "verifyToken",
            )?,
        };
        let account = WabaAccount {
            owner_id: owner_id.to_owned(),
            phone_number_id: s.phone_number_id.clone(),
            business_account_id: s.business_account_id.clone(),
            access_token: self.vault.seal(&s.access_token),
            app_secret: self.vault.seal(&s.app_secret),
            verify_token: self.vault.seal(&s.verify_token),
            verify_token_hash: verify_token_hash(&s.verify_token),
            updated_at: Utc::now(),
        };
        self.storage
            .put_waba_account(&account)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => WabaError::PhoneNumberInUse,
                other => other.into(),
            })?;
        self.settings(owner_id).await
    }

    /// The owner's settings, opened; None when not configured.
    pub async fn settings(&self, owner_id: &str) -> Result<Option<StoredSettings>, WabaError> {
        match self.storage.waba_account(owner_id).await? {
            Some(account) => Ok(Some(StoredSettings {
                settings: self.open(&account)?,
                updated_at: account.updated_at,
            })),
            None => Ok(None),
        }
    }

    /// Opens an account's sealed secrets. Fails with `Sealed` when they were sealed under
    /// another server key.
    pub(super) fn open(&self, a: &WabaAccount) -> Result<WabaSettings, WabaError> {
        let open = |sealed: &str, what: &str| {
            self.vault.open(sealed).ok_or_else(|| {
                WabaError::Sealed(format!(
                    "the WABA {what} of {} cannot be opened with this server's key",
                    a.owner_id
                ))
            })
        };
        Ok(WabaSettings {
            access_token: open(&a.access_token, "access token")?,
            phone_number_id: a.phone_number_id.clone(),
            business_account_id: a.business_account_id.clone(),
            app_secret: open(&a.app_secret, "app secret")?,
            verify_token: open(&a.verify_token, "verify token")?,
        })
    }

    /// What a send for the owner's chats uses; `NotConfigured` without settings.
    pub(super) async fn credentials(&self, owner_id: &str) -> Result<GraphCredentials, WabaError> {
        let Some(StoredSettings { settings, .. }) = self.settings(owner_id).await? else {
            return Err(WabaError::NotConfigured);
        };
        if settings.access_token.is_empty() || settings.phone_number_id.is_empty() {
            return Err(WabaError::NotConfigured);
        }
        Ok(GraphCredentials {
            phone_number_id: settings.phone_number_id,
            access_token: settings.access_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_at_most_four_characters() {
        assert_eq!(mask("EAAG1234567890abcd"), "****abcd");
        assert_eq!(mask("short"), "****");
        assert_eq!(mask(""), "****");
    }

    #[test]
    fn omitted_fields_keep_their_stored_value() {
        let stored = "kept".to_owned();
        assert_eq!(
            pick(None, Some(&stored), "appSecret").ok().as_deref(),
            Some("kept")
        );
        assert_eq!(
            pick(Some("  new ".into()), Some(&stored), "appSecret")
                .ok()
                .as_deref(),
            Some("new")
        );
        assert!(matches!(
            pick(Some("  ".into()), Some(&stored), "appSecret"),
            Err(WabaError::Missing("appSecret"))
        ));
        assert!(matches!(
            pick(None, None, "verifyToken"),
            Err(WabaError::Missing("verifyToken"))
        ));
    }
}
