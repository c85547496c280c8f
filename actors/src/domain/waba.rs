//! The WABA operator desk's nouns: accounts (per owner), chats with customers, their
//! messages, and the 24-hour customer-service window.

use chrono::{DateTime, Duration, Utc};

use super::message::MessageStatus;

/// WhatsApp's customer-service window: free-form messages may be sent this long after
/// the customer's last message; outside it only approved templates.
pub const CUSTOMER_WINDOW: Duration = Duration::hours(24);

/// When the chat's customer-service window closes; None when the customer never wrote.
pub fn window_expires_at(last_customer_message_at: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    last_customer_message_at.map(|t| t + CUSTOMER_WINDOW)
}

/// Whether a free-form message may be sent at `now`.
pub fn window_open(last_customer_message_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    window_expires_at(last_customer_message_at).is_some_and(|end| now < end)
}

/// The WABA account of one owner (a user or admin; operators work for an owner).
///
/// The secret fields are opaque to storage: the server crate seals them under its secret
/// key before storing them and opens them after reading.
#[derive(Debug, Clone, PartialEq)]
pub struct WabaAccount {
    pub owner_id: String,
    /// Meta's id of the business phone number: the routing key of Meta's webhooks.
    /// Unique across owners.
    pub phone_number_id: String,
    pub business_account_id: String,
    pub access_token: String,
    pub app_secret: String,
    pub verify_token: String,
    /// SHA-256 (hex) of the plain verify token: how Meta's verification request finds
    /// the account without the token being stored in the clear.
    pub verify_token_hash: String,
    pub updated_at: DateTime<Utc>,
}

/// A conversation with one customer of one owner.
#[derive(Debug, Clone, PartialEq)]
pub struct WabaChat {
    /// Numeric, as the spec's `chatId: number`.
    pub id: i64,
    pub owner_id: String,
    /// The customer's WhatsApp id (digits of the phone number, as Meta sends `wa_id`).
    pub customer_phone: String,
    pub customer_name: Option<String>,
    /// Meta's timestamp of the newest inbound message: the start of the 24-hour window.
    pub last_customer_message_at: Option<DateTime<Utc>>,
    /// The newest message of either direction (chat lists sort by it).
    pub last_message_at: Option<DateTime<Utc>>,
    pub assigned_operator_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Which chats a chat list keeps, by assignee.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AssignedFilter {
    /// Every chat.
    #[default]
    All,
    /// Chats nobody is assigned to.
    Unassigned,
    /// Chats assigned to this user.
    To(String),
}

impl AssignedFilter {
    /// Whether a chat assigned to `assignee` passes.
    pub fn keeps(&self, assignee: Option<&str>) -> bool {
        match self {
            AssignedFilter::All => true,
            AssignedFilter::Unassigned => assignee.is_none(),
            AssignedFilter::To(id) => assignee == Some(id.as_str()),
        }
    }
}

/// A message of a WABA chat, in either direction.
#[derive(Debug, Clone, PartialEq)]
pub struct WabaMessage {
    /// Numeric, assigned by storage at insert.
    pub id: i64,
    pub chat_id: i64,
    pub owner_id: String,
    /// Meta's id (`wamid.…`); unique.
    pub whatsapp_message_id: String,
    pub from_me: bool,
    /// `text`, `image`, `document`, `template` (outbound); inbound also `audio`, `video`,
    /// `sticker`, `location`, … as Meta names them.
    pub message_type: String,
    pub content: Option<String>,
    pub media_url: Option<String>,
    /// A file kept by the desk: an inbound attachment fetched from Meta, or an uploaded
    /// one sent by id. Served at `/api/waba/operator/media/{id}`.
    pub media: Option<WabaMedia>,
    /// Why Meta did not deliver it (a failed send, or a `failed` status with `errors`).
    pub error: Option<SendFailure>,
    /// Outbound: `pending → sent → delivered → read` (or `failed`), forward only; inbound `received`.
    pub status: MessageStatus,
    /// Inbound messages an operator has read in the desk.
    pub is_read_by_operator: bool,
    /// The operator or user who sent it (outbound).
    pub sender_user_id: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub status_updated_at: Option<DateTime<Utc>>,
}

/// Meta's error for a message it did not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    /// Meta's error code; None when Meta could not be reached.
    pub code: Option<i64>,
    pub title: String,
}

/// Where fetching a message's file from Meta stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaState {
    /// Not fetched yet (a fetch is under way or will be retried).
    Pending,
    /// Kept by the desk; `path` names the file.
    Stored,
    /// Every attempt failed; `error` says why.
    Failed,
}

impl MediaState {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaState::Pending => "pending",
            MediaState::Stored => "stored",
            MediaState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for MediaState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(MediaState::Pending),
            "stored" => Ok(MediaState::Stored),
            "failed" => Ok(MediaState::Failed),
            other => Err(format!("unknown media state '{other}'")),
        }
    }
}

/// The file of a desk message and where fetching it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct WabaMedia {
    /// Meta's media id.
    pub media_id: String,
    pub mime_type: Option<String>,
    pub file_name: Option<String>,
    /// Size in bytes, once stored.
    pub size: Option<u64>,
    /// The file, relative to the media store, once stored.
    pub path: Option<String>,
    pub state: MediaState,
    /// Fetch attempts made so far.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub error: Option<String>,
}

impl WabaMedia {
    /// An inbound attachment Meta named, not fetched yet.
    pub fn pending(media_id: String, mime_type: Option<String>, file_name: Option<String>) -> Self {
        WabaMedia {
            media_id,
            mime_type,
            file_name,
            size: None,
            path: None,
            state: MediaState::Pending,
            attempts: 0,
            error: None,
        }
    }
}

/// A chat as the chat list shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct WabaChatSummary {
    pub chat: WabaChat,
    pub last_message: Option<WabaMessage>,
    /// Inbound messages no operator has read yet.
    pub unread_count: u64,
}

/// What an operator sends.
#[derive(Debug, Clone, PartialEq)]
pub enum WabaContent {
    Text {
        body: String,
    },
    Image {
        link: String,
        caption: Option<String>,
    },
    Document {
        link: String,
        caption: Option<String>,
        filename: Option<String>,
    },
    /// A file uploaded to Meta beforehand, sent by its media id; `kind` is `image`,
    /// `video`, `audio`, `document` or `sticker`.
    Uploaded {
        kind: &'static str,
        media_id: String,
        caption: Option<String>,
        filename: Option<String>,
    },
    /// An approved template: the only kind allowed outside the 24-hour window.
    Template {
        name: String,
        language: String,
        components: Option<serde_json::Value>,
    },
}

impl WabaContent {
    /// The message type as stored and as Meta names it.
    pub fn kind(&self) -> &'static str {
        match self {
            WabaContent::Text { .. } => "text",
            WabaContent::Image { .. } => "image",
            WabaContent::Document { .. } => "document",
            WabaContent::Uploaded { kind, .. } => kind,
            WabaContent::Template { .. } => "template",
        }
    }

    pub fn media_url(&self) -> Option<&str> {
        match self {
            WabaContent::Image { link, .. } | WabaContent::Document { link, .. } => Some(link),
            _ => None,
        }
    }
}

/// The account credentials one send uses (opened by the server crate).
#[derive(Clone, PartialEq)]
pub struct GraphCredentials {
    pub phone_number_id: String,
    pub access_token: String,
}

impl std::fmt::Debug for GraphCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GraphCredentials {{ phone_number_id: {}, access_token: <redacted> }}",
            self.phone_number_id
        )
    }
}

/// A message template of a business account, as Meta lists it: what a `template` send
/// names, and the parameters its `components` must carry.
#[derive(Debug, Clone, PartialEq)]
pub struct WabaTemplate {
    /// Meta's id of the template.
    pub id: Option<String>,
    pub name: String,
    /// The language code a send names (`en_US`).
    pub language: String,
    /// `APPROVED`, `PENDING`, `REJECTED`, …: only approved ones can be sent.
    pub status: String,
    /// `MARKETING`, `UTILITY` or `AUTHENTICATION`.
    pub category: Option<String>,
    /// `POSITIONAL` (`{{1}}`) or `NAMED` (`{{first_name}}`); None: Meta's default,
    /// positional.
    pub parameter_format: Option<String>,
    pub components: Vec<TemplateComponent>,
}

impl WabaTemplate {
    pub fn is_approved(&self) -> bool {
        self.status.eq_ignore_ascii_case("APPROVED")
    }
}

/// One part of a template: `HEADER`, `BODY`, `FOOTER` or `BUTTONS`.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateComponent {
    pub kind: String,
    /// A header's format: `TEXT`, `IMAGE`, `VIDEO`, `DOCUMENT` or `LOCATION`.
    pub format: Option<String>,
    pub text: Option<String>,
    /// The placeholders of `text`, each once, in order of first appearance (`"1"`,
    /// `"2"` or `"first_name"`).
    pub placeholders: Vec<String>,
    /// The buttons of a `BUTTONS` component.
    pub buttons: Vec<TemplateButton>,
}

impl TemplateComponent {
    /// How many parameters this component of a send must carry: one per placeholder of
    /// its text, or one for a media or location header (the image, video, document or
    /// place itself). Buttons carry theirs in components of their own.
    pub fn parameter_count(&self) -> usize {
        match self.format.as_deref() {
            Some(f) if self.kind.eq_ignore_ascii_case("HEADER") && f != "TEXT" => 1,
            _ => self.placeholders.len(),
        }
    }
}

/// A button of a template.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateButton {
    /// `QUICK_REPLY`, `URL`, `PHONE_NUMBER`, `COPY_CODE`, …
    pub kind: String,
    pub text: Option<String>,
    pub url: Option<String>,
    pub phone_number: Option<String>,
    /// The placeholders of a dynamic URL (`https://shop.example/track/{{1}}`).
    pub placeholders: Vec<String>,
}

/// The `{{name}}` placeholders of a template text, each once, in order of first
/// appearance. Whitespace inside the braces is ignored; empty braces are not a
/// placeholder.
pub fn template_placeholders(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim();
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid && !found.iter().any(|f| f == name) {
            found.push(name.to_owned());
        }
        rest = if valid { &after[end + 2..] } else { after };
    }
    found
}

#[cfg(test)]
mod template_tests {
    use super::*;

    #[test]
    fn placeholders_are_found_once_in_order() {
        assert_eq!(
            template_placeholders("Hi {{1}}, order {{2}} is ready. Thanks, {{1}}!"),
            vec!["1", "2"]
        );
        assert_eq!(
            template_placeholders("Hello {{ first_name }}, see {{order_id}}"),
            vec!["first_name", "order_id"]
        );
        assert!(template_placeholders("No parameters {here} {{}} {{ }}").is_empty());
        assert_eq!(template_placeholders("{{{{1}}"), vec!["1"]);
        assert_eq!(template_placeholders("open {{1"), Vec::<String>::new());
    }

    #[test]
    fn media_headers_take_one_parameter() {
        let component = |kind: &str, format: Option<&str>, text: Option<&str>| TemplateComponent {
            kind: kind.into(),
            format: format.map(str::to_owned),
            text: text.map(str::to_owned),
            placeholders: text.map(template_placeholders).unwrap_or_default(),
            buttons: Vec::new(),
        };
        assert_eq!(
            component("HEADER", Some("IMAGE"), None).parameter_count(),
            1
        );
        assert_eq!(
            component("HEADER", Some("TEXT"), Some("Order {{1}}")).parameter_count(),
            1
        );
        assert_eq!(
            component("HEADER", Some("TEXT"), Some("Hi")).parameter_count(),
            0
        );
        assert_eq!(
            component("BODY", None, Some("{{1}} and {{2}}")).parameter_count(),
            2
        );
        assert_eq!(component("FOOTER", None, Some("Bye")).parameter_count(), 0);
    }
}
