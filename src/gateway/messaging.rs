//! Sending messages through an instance: texts, files fetched from a URL and uploaded
//! files. Whether the instance may send at all (its usage limits) is decided before a
//! send is asked for; this module checks the message and prepares the media (fetch,
//! store under uploads), then hands it to the instance's actor.

use wagate_actors::domain::address::jid_for;
use wagate_actors::domain::{Jid, Message, Typed, normalize_phone};
use wagate_actors::engine::{OutboundContent, StatusPost};
use wagate_actors::error::DomainError;
use wagate_actors::instance::{InstanceHandle, InstancesHandle, SendExtras};

use crate::media::{self, MediaFile, MediaStore};
use crate::outbound::OutboundError;

/// Longest accepted text message (WhatsApp's own limit is about 65,000 characters).
pub const MAX_TEXT: usize = 65_536;
/// Longest accepted caption.
pub const MAX_CAPTION: usize = 4096;

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The message breaks its rules (the message names the field).
    #[error("{0}")]
    Invalid(String),
    /// The file at the URL could not be fetched.
    #[error("url: {0}")]
    Fetch(#[from] OutboundError),
    /// The instance refused or failed (not connected, not found, engine error, ...).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// A failure of ours (storing the file); the detail is for the log.
    #[error("{0}")]
    Internal(String),
}

/// A text message: not blank, at most [`MAX_TEXT`] characters.
pub fn check_text(text: &str) -> Result<(), SendError> {
    if text.trim().is_empty() {
        return Err(SendError::Invalid("message must not be empty".into()));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(SendError::Invalid(format!(
            "message must be at most {MAX_TEXT} characters"
        )));
    }
    Ok(())
}

/// Most contact cards in one message, and phones on one card.
pub const MAX_CARDS: usize = 10;
/// Longest poll question, option, contact name, location name or address, in characters.
pub const MAX_LABEL: usize = 255;
/// WhatsApp's bounds on a poll's options.
pub const POLL_OPTIONS: std::ops::RangeInclusive<usize> = 2..=12;

fn check_label(field: &str, value: &str) -> Result<(), SendError> {
    if value.trim().is_empty() {
        return Err(SendError::Invalid(format!("{field} must not be empty")));
    }
    if value.chars().count() > MAX_LABEL {
        return Err(SendError::Invalid(format!(
            "{field} must be at most {MAX_LABEL} characters"
        )));
    }
    Ok(())
}

/// A location, contact cards or a poll, made fit to send: coordinates on the globe,
/// 1 to [`MAX_CARDS`] cards of a name and 1 to [`MAX_CARDS`] valid phones (made
/// digits), a question and 2 to 12 distinct options. Votes are never sent.
pub fn check_typed(mut typed: Typed) -> Result<Typed, SendError> {
    if let Some(l) = &typed.location {
        if !(l.latitude.is_finite() && (-90.0..=90.0).contains(&l.latitude)) {
            return Err(SendError::Invalid(
                "latitude must be between -90 and 90".into(),
            ));
        }
        if !(l.longitude.is_finite() && (-180.0..=180.0).contains(&l.longitude)) {
            return Err(SendError::Invalid(
                "longitude must be between -180 and 180".into(),
            ));
        }
        for (field, value) in [("name", &l.name), ("address", &l.address)] {
            if let Some(v) = value {
                check_label(field, v)?;
            }
        }
    }
    if typed.location.is_none() && typed.poll.is_none() && typed.contacts.is_empty() {
        return Err(SendError::Invalid("contacts must not be empty".into()));
    }
    if typed.contacts.len() > MAX_CARDS {
        return Err(SendError::Invalid(format!(
            "contacts must be at most {MAX_CARDS}"
        )));
    }
    for card in &mut typed.contacts {
        check_label("contacts[].name", &card.name)?;
        if card.phones.is_empty() || card.phones.len() > MAX_CARDS {
            return Err(SendError::Invalid(format!(
                "contacts[].phones must have 1 to {MAX_CARDS} numbers"
            )));
        }
        for phone in &mut card.phones {
            *phone = normalize_phone(phone)
                .map_err(|e| SendError::Invalid(format!("contacts[].phones: {e}")))?;
        }
    }
    if let Some(poll) = &mut typed.poll {
        check_label("question", &poll.question)?;
        if !POLL_OPTIONS.contains(&poll.options.len()) {
            return Err(SendError::Invalid(
                "options must have 2 to 12 entries".into(),
            ));
        }
        for (i, option) in poll.options.iter().enumerate() {
            check_label("options[]", option)?;
            if poll.options[..i].contains(option) {
                return Err(SendError::Invalid(format!(
                    "options must be distinct: {option:?} is there twice"
                )));
            }
        }
        poll.votes.clear();
    }
    Ok(typed)
}

/// A caption: at most [`MAX_CAPTION`] characters; a blank one is none.
pub fn check_caption(caption: Option<String>) -> Result<Option<String>, SendError> {
    match caption {
        Some(c) if c.chars().count() > MAX_CAPTION => Err(SendError::Invalid(format!(
            "caption must be at most {MAX_CAPTION} characters"
        ))),
        Some(c) if c.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// Most people one message may mention.
pub const MAX_MENTIONS: usize = 256;
/// Longest accepted reaction (an emoji with its modifiers and joiners), in characters.
pub const MAX_REACTION: usize = 16;

/// The longest "typing…" a send may ask for (`delay`), in milliseconds: long enough to
/// pass for a person typing a paragraph, short enough for the client's request to wait
/// for it.
pub const MAX_DELAY_MS: u64 = 20_000;

/// What a send may carry besides its content, as the client gave it.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// The WhatsApp id of a stored message of the same chat.
    pub reply_to: Option<String>,
    /// Phone numbers.
    pub mentions: Vec<String>,
    /// Milliseconds of "typing…" before the message goes.
    pub delay_ms: Option<u64>,
    /// The instance's `sendRate` (from its settings): the send is paced.
    pub send_rate: Option<u32>,
}

/// Checks the extras of a send: the mentions must be phone numbers (made addresses),
/// at most [`MAX_MENTIONS`]; a blank `replyTo` is none; the delay at most
/// [`MAX_DELAY_MS`].
pub fn check_extras(extras: Extras) -> Result<SendExtras, SendError> {
    let delay = match extras.delay_ms {
        Some(ms) if ms > MAX_DELAY_MS => {
            return Err(SendError::Invalid(format!(
                "delay must be at most {MAX_DELAY_MS} milliseconds"
            )));
        }
        Some(ms) => Some(std::time::Duration::from_millis(ms)).filter(|d| !d.is_zero()),
        None => None,
    };
    if extras.mentions.len() > MAX_MENTIONS {
        return Err(SendError::Invalid(format!(
            "mentions must name at most {MAX_MENTIONS} people"
        )));
    }
    let mut mentions = Vec::with_capacity(extras.mentions.len());
    for phone in &extras.mentions {
        let digits =
            normalize_phone(phone).map_err(|e| SendError::Invalid(format!("mentions: {e}")))?;
        let jid = jid_for(&digits);
        if !mentions.contains(&jid) {
            mentions.push(jid);
        }
    }
    Ok(SendExtras {
        reply_to: extras
            .reply_to
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty()),
        mentions,
        delay,
        send_rate: extras.send_rate,
        status: None,
    })
}

/// A reaction: empty (take it back) or a short emoji, no whitespace.
pub fn check_reaction(emoji: &str) -> Result<(), SendError> {
    if emoji.chars().count() > MAX_REACTION || emoji.chars().any(char::is_whitespace) {
        return Err(SendError::Invalid(format!(
            "emoji must be one emoji (at most {MAX_REACTION} characters, no spaces) or empty"
        )));
    }
    Ok(())
}

/// Longest status text (WhatsApp's apps stop at 700 characters).
pub const MAX_STATUS_TEXT: usize = 700;
/// Most people a status post may name as its audience.
pub const MAX_AUDIENCE: usize = 1024;

/// What a status shows.
#[derive(Debug, Clone)]
pub enum StatusContent {
    /// A text on a coloured background (`0xAARRGGBB`).
    Text { text: String, background_argb: u32 },
    /// An image the server downloads; a checked caption ([`check_caption`]).
    Image {
        url: String,
        caption: Option<String>,
    },
}

/// The audience of a status post: phone numbers made addresses, at most
/// [`MAX_AUDIENCE`], each once; empty means every contact.
pub fn check_audience(phones: &[String]) -> Result<Vec<String>, SendError> {
    if phones.len() > MAX_AUDIENCE {
        return Err(SendError::Invalid(format!(
            "recipients must name at most {MAX_AUDIENCE} people"
        )));
    }
    let mut audience = Vec::with_capacity(phones.len());
    for phone in phones {
        let digits =
            normalize_phone(phone).map_err(|e| SendError::Invalid(format!("recipients: {e}")))?;
        let jid = jid_for(&digits);
        if !audience.contains(&jid) {
            audience.push(jid);
        }
    }
    Ok(audience)
}

/// A file to send from a URL.
#[derive(Debug, Clone)]
pub struct MediaByUrl {
    pub url: String,
    /// A checked caption ([`check_caption`]).
    pub caption: Option<String>,
    /// The file name the recipient sees; the URL's when absent.
    pub file_name: Option<String>,
}

/// Sends through the instance actors, with media kept under uploads. Cheap to clone.
#[derive(Clone)]
pub struct Messenger {
    actors: InstancesHandle,
    media: MediaStore,
    /// The client for user-supplied URLs (guarded against private networks).
    client: reqwest::Client,
    allow_private_urls: bool,
    max_upload_bytes: u64,
}

impl Messenger {
    pub fn new(
        actors: InstancesHandle,
        media: MediaStore,
        client: reqwest::Client,
        allow_private_urls: bool,
        max_upload_bytes: u64,
    ) -> Self {
        Messenger {
            actors,
            media,
            client,
            allow_private_urls,
            max_upload_bytes,
        }
    }

    /// Sends a text message.
    ///
    /// Fails with `Invalid` for a blank or too long text, `Domain` when the instance
    /// cannot send.
    pub async fn send_text(
        &self,
        instance_id: &str,
        to: &Jid,
        text: String,
        extras: Extras,
    ) -> Result<Message, SendError> {
        check_text(&text)?;
        let extras = check_extras(extras)?;
        Ok(self
            .actors
            .get(instance_id)?
            .send(to.as_str(), OutboundContent::Text(text), extras)
            .await?)
    }

    /// Reacts to a stored message; an empty emoji takes the reaction back.
    ///
    /// Fails with `Invalid` for a malformed emoji, `Domain` for an unknown message or
    /// an instance that cannot send.
    pub async fn react(
        &self,
        instance_id: &str,
        message_id: &str,
        emoji: &str,
    ) -> Result<(), SendError> {
        check_reaction(emoji)?;
        Ok(self
            .actors
            .get(instance_id)?
            .react(message_id, emoji)
            .await?)
    }

    /// Sends a location, contact cards or a poll.
    ///
    /// Fails with `Invalid` when it breaks its rules ([`check_typed`]), `Domain` when
    /// the instance cannot send.
    pub async fn send_typed(
        &self,
        instance_id: &str,
        to: &Jid,
        typed: Typed,
        extras: Extras,
    ) -> Result<Message, SendError> {
        let typed = check_typed(typed)?;
        let extras = check_extras(extras)?;
        Ok(self
            .actors
            .get(instance_id)?
            .send(to.as_str(), OutboundContent::Typed(typed), extras)
            .await?)
    }

    /// Replaces the text of one of our own text messages, within WhatsApp's edit window.
    ///
    /// Fails with `Invalid` for a blank or too long text, `Domain` for an unknown
    /// message, one that cannot be edited, or an instance that cannot send.
    pub async fn edit(
        &self,
        instance_id: &str,
        message_id: &str,
        text: String,
    ) -> Result<Message, SendError> {
        check_text(&text)?;
        Ok(self.actors.get(instance_id)?.edit(message_id, text).await?)
    }

    /// Deletes a stored message for everyone (our own) or from this account's history.
    pub async fn delete(
        &self,
        instance_id: &str,
        message_id: &str,
        for_everyone: bool,
    ) -> Result<(), SendError> {
        Ok(self
            .actors
            .get(instance_id)?
            .delete(message_id, for_everyone)
            .await?)
    }

    /// Posts a status (a text, or an image downloaded from its URL) to `recipients`
    /// (phone numbers), or to every contact the session knows when there are none. It
    /// counts as a sent message.
    ///
    /// Fails with `Invalid` for a blank or too long text, bad recipients or a file that
    /// is not an image, `Fetch` when the image cannot be downloaded, `Domain` when the
    /// instance cannot send (`Refused("no_audience")` without anyone to show it to).
    pub async fn post_status(
        &self,
        instance_id: &str,
        content: StatusContent,
        recipients: &[String],
    ) -> Result<Message, SendError> {
        let audience = check_audience(recipients)?;
        let to = Jid::status_broadcast();
        let extras = |background_argb| SendExtras {
            status: Some(StatusPost {
                audience: audience.clone(),
                background_argb,
            }),
            ..SendExtras::default()
        };
        let handle = self.actors.get(instance_id)?;
        match content {
            StatusContent::Text {
                text,
                background_argb,
            } => {
                check_text(&text)?;
                if text.chars().count() > MAX_STATUS_TEXT {
                    return Err(SendError::Invalid(format!(
                        "text must be at most {MAX_STATUS_TEXT} characters"
                    )));
                }
                let content = OutboundContent::Text(text);
                Ok(handle
                    .send(to.as_str(), content, extras(background_argb))
                    .await?)
            }
            StatusContent::Image { url, caption } => {
                handle.ensure_connected().await?;
                let file = media::fetch(
                    &self.client,
                    &url,
                    self.allow_private_urls,
                    self.max_upload_bytes,
                )
                .await?;
                if !file.mime_type.starts_with("image/") {
                    return Err(SendError::Invalid(format!(
                        "imageUrl: a status shows an image, not {}",
                        file.mime_type
                    )));
                }
                let file_name = file.file_name.clone();
                self.send_file(
                    &handle,
                    instance_id,
                    &to,
                    (file, file_name),
                    caption,
                    extras(0),
                )
                .await
            }
        }
    }

    /// Downloads the file at `media.url` and sends it. Refuses before downloading
    /// anything when the instance is not connected.
    ///
    /// Fails with `Fetch` when the file cannot be downloaded (or is over the upload
    /// limit), `Invalid` for an empty file.
    pub async fn send_from_url(
        &self,
        instance_id: &str,
        to: &Jid,
        media: MediaByUrl,
        extras: Extras,
    ) -> Result<Message, SendError> {
        let extras = check_extras(extras)?;
        let handle = self.actors.get(instance_id)?;
        handle.ensure_connected().await?;
        let file = media::fetch(
            &self.client,
            &media.url,
            self.allow_private_urls,
            self.max_upload_bytes,
        )
        .await?;
        let file_name = media
            .file_name
            .and_then(|n| media::safe_file_name(&n))
            .or(file.file_name.clone());
        self.send_file(
            &handle,
            instance_id,
            to,
            (file, file_name),
            media.caption,
            extras,
        )
        .await
    }

    /// Sends an uploaded file under its own name; `caption` is checked already.
    ///
    /// Fails with `Invalid` for an empty file.
    pub async fn send_upload(
        &self,
        instance_id: &str,
        to: &Jid,
        file: MediaFile,
        caption: Option<String>,
        extras: Extras,
    ) -> Result<Message, SendError> {
        let extras = check_extras(extras)?;
        let handle = self.actors.get(instance_id)?;
        let file_name = file.file_name.clone();
        self.send_file(&handle, instance_id, to, (file, file_name), caption, extras)
            .await
    }

    /// Stores the file under uploads, then hands it to the instance to send; a failed
    /// send removes the stored file again.
    async fn send_file(
        &self,
        handle: &InstanceHandle,
        instance_id: &str,
        to: &Jid,
        (file, file_name): (MediaFile, Option<String>),
        caption: Option<String>,
        extras: SendExtras,
    ) -> Result<Message, SendError> {
        if file.bytes.is_empty() {
            return Err(SendError::Invalid("the file is empty".into()));
        }
        let path =
            self.media.save(instance_id, &file.bytes).await.map_err(
                |e| match media::shared_failure(&e) {
                    // Cluster mode: the shared media store is away (503, retry later).
                    Some(shared) => SendError::Domain(DomainError::Store(shared.clone())),
                    None => SendError::Internal(e.to_string()),
                },
            )?;
        let size = file.bytes.len() as u64;
        let content = OutboundContent::Media {
            bytes: file.bytes.into(),
            mime_type: file.mime_type,
            file_name,
            caption,
            path: path.clone(),
            size,
        };
        let result = handle.send(to.as_str(), content, extras).await;
        if result.is_err() {
            self.media.remove_file(&path).await;
        }
        Ok(result?)
    }
}
