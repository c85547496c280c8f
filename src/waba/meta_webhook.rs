//! Meta's webhook notifications: the `X-Hub-Signature-256` check on the raw body and the
//! parts of the payload the desk uses (inbound `messages`, `statuses`).
//!
//! Only what is read is declared; everything else Meta sends is ignored, so new fields
//! and new kinds of changes never make a notification fail.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use wagate_actors::domain::MessageStatus;
use wagate_actors::domain::waba::{SendFailure, WabaMedia};

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `app_secret`.
/// Constant-time in the comparison.
pub fn signature_valid(app_secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The notification envelope: `{"object": "whatsapp_business_account", "entry": [...]}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = MetaNotification)]
pub struct Notification {
    #[serde(default)]
    pub entry: Vec<Entry>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = MetaEntry)]
pub struct Entry {
    #[serde(default)]
    pub changes: Vec<Change>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = MetaChange)]
pub struct Change {
    #[serde(default)]
    pub value: ChangeValue,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = MetaChangeValue)]
pub struct ChangeValue {
    pub metadata: Option<Metadata>,
    #[serde(default)]
    pub contacts: Vec<ContactIn>,
    #[serde(default)]
    pub messages: Vec<InboundMessage>,
    #[serde(default)]
    pub statuses: Vec<StatusUpdate>,
}

impl ChangeValue {
    /// The profile name Meta sent for the customer `wa_id`.
    pub fn name_of(&self, wa_id: &str) -> Option<&str> {
        self.contacts
            .iter()
            .find(|c| c.wa_id.as_deref() == Some(wa_id))
            .and_then(|c| c.profile.as_ref())
            .and_then(|p| p.name.as_deref())
            .filter(|n| !n.is_empty())
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = MetaMetadata)]
pub struct Metadata {
    pub phone_number_id: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = MetaContact)]
pub struct ContactIn {
    pub wa_id: Option<String>,
    pub profile: Option<Profile>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = MetaProfile)]
pub struct Profile {
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = MetaMessage)]
pub struct InboundMessage {
    pub id: String,
    pub from: String,
    /// Unix seconds, as a string.
    pub timestamp: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: String,
    pub text: Option<TextBody>,
    pub image: Option<MediaBody>,
    pub video: Option<MediaBody>,
    pub audio: Option<MediaBody>,
    pub document: Option<MediaBody>,
    pub sticker: Option<MediaBody>,
    pub button: Option<ButtonBody>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = MetaText)]
pub struct TextBody {
    pub body: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = MetaMedia)]
pub struct MediaBody {
    /// Meta's media id: what the file is fetched by.
    pub id: Option<String>,
    pub mime_type: Option<String>,
    pub caption: Option<String>,
    pub filename: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = MetaButton)]
pub struct ButtonBody {
    pub text: Option<String>,
}

impl InboundMessage {
    /// The text to show: the body, a media caption or file name, a button's text.
    pub fn content(&self) -> Option<String> {
        if let Some(t) = &self.text {
            return t.body.clone();
        }
        for media in [
            &self.image,
            &self.video,
            &self.audio,
            &self.document,
            &self.sticker,
        ]
        .into_iter()
        .flatten()
        {
            if let Some(c) = media.caption.clone().or_else(|| media.filename.clone()) {
                return Some(c);
            }
        }
        self.button.as_ref().and_then(|b| b.text.clone())
    }

    /// The attachment of an image, video, audio, document or sticker message that names
    /// a media id, as a file to fetch.
    pub fn media(&self) -> Option<WabaMedia> {
        let body = match self.kind.as_str() {
            "image" => &self.image,
            "video" => &self.video,
            "audio" => &self.audio,
            "document" => &self.document,
            "sticker" => &self.sticker,
            _ => return None,
        };
        let body = body.as_ref()?;
        let id = body
            .id
            .as_deref()
            .map(str::trim)
            .filter(|i| !i.is_empty())?;
        Some(WabaMedia::pending(
            id.to_owned(),
            body.mime_type.clone(),
            body.filename.clone(),
        ))
    }

    pub fn message_type(&self) -> String {
        if self.kind.is_empty() {
            "unknown".to_owned()
        } else {
            self.kind.clone()
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = MetaStatus)]
pub struct StatusUpdate {
    /// The `wamid` of our message.
    pub id: String,
    pub status: String,
    pub timestamp: Option<String>,
    pub recipient_id: String,
    /// Why a `failed` message was not delivered.
    #[serde(default)]
    pub errors: Vec<StatusErrorBody>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = MetaStatusError)]
pub struct StatusErrorBody {
    pub code: Option<i64>,
    pub title: Option<String>,
    pub message: Option<String>,
}

impl StatusUpdate {
    /// Meta's first error, as the desk keeps it (its code and title).
    pub fn failure(&self) -> Option<SendFailure> {
        let e = self.errors.first()?;
        Some(SendFailure {
            code: e.code,
            title: e
                .title
                .clone()
                .or_else(|| e.message.clone())
                .unwrap_or_else(|| "Meta did not deliver the message".into()),
        })
    }

    /// The status as the desk knows it; None for ones it does not track (`deleted`, …).
    /// Meta names `sent`, `delivered`, `read` and `failed` as the desk does; `pending`
    /// and `received` are never statuses of a sent message.
    pub fn status(&self) -> Option<MessageStatus> {
        self.status
            .parse()
            .ok()
            .filter(|s| !matches!(s, MessageStatus::Pending | MessageStatus::Received))
    }
}

/// Meta's unix-seconds string as an instant; `now` when absent or malformed.
pub fn meta_time(ts: Option<&str>, now: DateTime<Utc>) -> DateTime<Utc> {
    ts.and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_on_the_raw_body() {
        let body = br#"{"entry":[]}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").expect("key");
        mac.update(body);
        let header = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(signature_valid("secret", body, &header));
        assert!(!signature_valid("other", body, &header));
        assert!(!signature_valid("secret", br#"{"entry": []}"#, &header));
        assert!(!signature_valid("secret", body, "sha1=abc"));
        assert!(!signature_valid("secret", body, "sha256=zz"));
    }

    #[test]
    fn only_the_statuses_of_a_sent_message_are_read() {
        let update = |status: &str| StatusUpdate {
            id: "wamid.1".into(),
            status: status.into(),
            timestamp: None,
            recipient_id: "79001234567".into(),
            errors: Vec::new(),
        };
        assert_eq!(update("sent").status(), Some(MessageStatus::Sent));
        assert_eq!(update("delivered").status(), Some(MessageStatus::Delivered));
        assert_eq!(update("read").status(), Some(MessageStatus::Read));
        assert_eq!(update("failed").status(), Some(MessageStatus::Failed));
        for other in ["deleted", "pending", "received", "", "READ"] {
            assert_eq!(update(other).status(), None, "{other}");
        }
    }

    #[test]
    fn payload_parts() {
        let v: Notification = serde_json::from_value(serde_json::json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "1555", "phone_number_id": "PN"},
                "contacts": [{"profile": {"name": "Ann"}, "wa_id": "79001234567"}],
                "messages": [{"from": "79001234567", "id": "wamid.1", "timestamp": "1700000000",
                              "type": "image", "image": {"id": "m1", "caption": "look"}}]
            }}]}]
        }))
        .expect("parse");
        let value = &v.entry[0].changes[0].value;
        assert_eq!(value.name_of("79001234567"), Some("Ann"));
        assert_eq!(value.messages[0].content().as_deref(), Some("look"));
        let media = value.messages[0].media().expect("an attachment");
        assert_eq!(media.media_id, "m1");
        assert_eq!(
            meta_time(value.messages[0].timestamp.as_deref(), Utc::now()).timestamp(),
            1_700_000_000
        );
    }
}
