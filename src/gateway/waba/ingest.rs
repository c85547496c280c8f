//! Meta's side of the desk: the webhook subscription check and the notifications it
//! then sends (inbound messages, status updates of ours).
//!
//! Each change of a notification is routed by `metadata.phone_number_id` to its account
//! and processed only when the notification is signed with that account's app secret.
//! Unknown phone numbers are ignored (Meta would retry anything refused for days).
//! Attachments are fetched from Meta in the background once their message is stored
//! (see `media.rs`), so Meta's webhook is answered without waiting for a download.
//! Processing is idempotent — message ids are unique, statuses only move forward — so
//! Meta's retries are harmless.

use std::collections::HashMap;

use chrono::Utc;
use wagate_actors::domain::MessageStatus;
use wagate_actors::domain::waba::WabaMessage;

use super::settings::verify_token_hash;
use super::{Waba, WabaError};
use crate::waba::meta_webhook::{Notification, meta_time, signature_valid};

/// What a notification changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    /// New inbound messages stored.
    pub messages: u64,
    /// Status changes applied.
    pub statuses: u64,
}

impl Waba {
    /// Meta's subscription check: `mode` must be `subscribe` and `token` the verify token
    /// of some account, else `UnknownVerifyToken`.
    pub async fn verify_subscription(
        &self,
        mode: Option<&str>,
        token: &str,
    ) -> Result<(), WabaError> {
        if mode != Some("subscribe") || token.is_empty() {
            return Err(WabaError::UnknownVerifyToken);
        }
        let Some(account) = self
            .storage
            .waba_account_by_verify_token_hash(&verify_token_hash(token))
            .await?
        else {
            return Err(WabaError::UnknownVerifyToken);
        };
        // The hash found it; the sealed token confirms it (a hash collision is not a match).
        let settings = self.open(&account)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            settings.verify_token.as_bytes(),
            token.as_bytes(),
        )) {
            return Err(WabaError::UnknownVerifyToken);
        }
        Ok(())
    }

    /// Applies a notification whose raw body is `body` and whose `X-Hub-Signature-256` is
    /// `signature`: stores its inbound messages (opening chats as needed) and moves its
    /// statuses forward, through each chat's actor.
    ///
    /// Fails with `BadSignature`, before changing anything, when a known account named in
    /// it did not sign it.
    pub async fn ingest(
        &self,
        notification: &Notification,
        body: &[u8],
        signature: &str,
    ) -> Result<Ingested, WabaError> {
        let accounts = self.signed_accounts(notification, body, signature).await?;
        let now = Utc::now();
        let mut done = Ingested::default();
        for change in notification.entry.iter().flat_map(|e| &e.changes) {
            let value = &change.value;
            let Some(Some(owner)) = value
                .metadata
                .as_ref()
                .and_then(|m| accounts.get(&m.phone_number_id))
            else {
                continue;
            };
            for m in &value.messages {
                let chat = self
                    .storage
                    .waba_chat_for_customer(owner, &m.from, value.name_of(&m.from), now)
                    .await?;
                let message = WabaMessage {
                    id: 0,
                    chat_id: chat.id,
                    owner_id: owner.clone(),
                    whatsapp_message_id: m.id.clone(),
                    from_me: false,
                    message_type: m.message_type(),
                    content: m.content(),
                    media_url: None,
                    media: m.media(),
                    error: None,
                    status: MessageStatus::Received,
                    is_read_by_operator: false,
                    sender_user_id: None,
                    timestamp: meta_time(m.timestamp.as_deref(), now),
                    status_updated_at: None,
                };
                if let Some(stored) = self.desk.inbound(&chat, message).await? {
                    done.messages += 1;
                    self.fetch_in_background(stored);
                }
            }
            for s in &value.statuses {
                let Some(status) = s.status() else {
                    continue;
                };
                let Some(chat) = self.storage.find_waba_chat(owner, &s.recipient_id).await? else {
                    continue;
                };
                let at = meta_time(s.timestamp.as_deref(), now);
                if self
                    .desk
                    .status(&chat, &s.id, status, at, s.failure())
                    .await?
                    .is_some()
                {
                    done.statuses += 1;
                }
            }
        }
        Ok(done)
    }

    /// The owner of each phone number id the notification names (None: no such account),
    /// once every known account is checked to have signed it.
    async fn signed_accounts(
        &self,
        notification: &Notification,
        body: &[u8],
        signature: &str,
    ) -> Result<HashMap<String, Option<String>>, WabaError> {
        let mut accounts: HashMap<String, Option<String>> = HashMap::new();
        for change in notification.entry.iter().flat_map(|e| &e.changes) {
            let Some(meta) = &change.value.metadata else {
                continue;
            };
            if accounts.contains_key(&meta.phone_number_id) {
                continue;
            }
            let owner = match self
                .storage
                .waba_account_by_phone_number_id(&meta.phone_number_id)
                .await?
            {
                Some(account) => {
                    let settings = self.open(&account)?;
                    if !signature_valid(&settings.app_secret, body, signature) {
                        return Err(WabaError::BadSignature);
                    }
                    Some(account.owner_id)
                }
                None => {
                    tracing::info!(phone_number_id = %meta.phone_number_id, "WABA notification for an unknown phone number id: ignored");
                    None
                }
            };
            accounts.insert(meta.phone_number_id.clone(), owner);
        }
        Ok(accounts)
    }
}
