//! The server side of the WABA operator desk: account settings with sealed secrets, the
//! Graph API client and Meta's webhook notifications. The desk's actors and domain live
//! in `wagate_actors::desk`; the routes in [`crate::http::waba`].
//!
//! - this file: [`Waba`], what the handlers reach (settings, credentials, the desk);
//! - [`graph`]: [`graph::GraphClient`], Meta's Cloud API over HTTP;
//! - [`webhook`]: the signature check and the notification payload.

pub mod graph;
pub mod webhook;

use chrono::Utc;
use sha2::{Digest, Sha256};
use wagate_actors::desk::OperatorDeskHandle;
use wagate_actors::domain::waba::{GraphCredentials, WabaAccount};
use wagate_actors::store::DynStorage;

use crate::crypto::KeyVault;
use wagate_actors::error::StoreError;

/// The plain settings of an account, as `PUT /api/waba/settings` takes them.
#[derive(Debug, Clone, PartialEq)]
pub struct WabaSettings {
    pub access_token: String,
    pub phone_number_id: String,
    pub business_account_id: String,
    pub app_secret: String,
    pub verify_token: String,
}

/// The desk and its settings. Cheap to clone.
#[derive(Clone)]
pub struct Waba {
    pub storage: DynStorage,
    pub desk: OperatorDeskHandle,
    /// Seals the account secrets at rest.
    vault: KeyVault,
}

/// Why the desk's settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WabaError {
    /// The account has no settings (or no token and phone number id).
    #[error(
        "WABA is not configured for this account: set accessToken, phoneNumberId, appSecret and verifyToken with PUT /api/waba/settings"
    )]
    NotConfigured,
    #[error("this phoneNumberId is already configured for another account")]
    PhoneNumberInUse,
    /// Secrets sealed under another server key; the detail is for the log.
    #[error("{0}")]
    Sealed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// SHA-256 (hex) of a verify token: how Meta's verification request finds its account.
pub fn verify_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A secret as `GET /api/waba/settings` shows it: its last four characters when it is
/// long enough for that to give nothing away, else only stars.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() >= 12 {
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("****{tail}")
    } else {
        "****".to_owned()
    }
}

impl Waba {
    pub fn new(storage: DynStorage, desk: OperatorDeskHandle, vault: KeyVault) -> Self {
        Waba {
            storage,
            desk,
            vault,
        }
    }

    /// Stores the owner's settings, secrets sealed. Fails with 409 when another account
    /// uses the phone number id.
    pub async fn put_settings(&self, owner_id: &str, s: &WabaSettings) -> Result<(), WabaError> {
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
            })
    }

    /// The owner's settings, opened; None when not configured.
    pub async fn settings(
        &self,
        owner_id: &str,
    ) -> Result<Option<(WabaSettings, WabaAccount)>, WabaError> {
        match self.storage.waba_account(owner_id).await? {
            Some(account) => Ok(Some((self.open(&account)?, account))),
            None => Ok(None),
        }
    }

    /// Opens an account's sealed secrets. Fails (500) when they were sealed under another
    /// server key.
    pub fn open(&self, a: &WabaAccount) -> Result<WabaSettings, WabaError> {
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

    /// What a send for the owner's chats uses; `waba_not_configured` (500) without
    /// settings.
    pub async fn credentials(&self, owner_id: &str) -> Result<GraphCredentials, WabaError> {
        let Some((settings, _)) = self.settings(owner_id).await? else {
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
}
