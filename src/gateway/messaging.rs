//! Sending messages through an instance: texts, files fetched from a URL and uploaded
//! files. Whether the instance may send at all (its usage limits) is decided before a
//! send is asked for; this module checks the message and prepares the media (fetch,
//! store under uploads), then hands it to the instance's actor.

use wagate_actors::domain::{Jid, Message};
use wagate_actors::engine::OutboundContent;
use wagate_actors::error::DomainError;
use wagate_actors::instance::{InstanceHandle, InstancesHandle};

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
    ) -> Result<Message, SendError> {
        check_text(&text)?;
        Ok(self
            .actors
            .get(instance_id)?
            .send(to.as_str(), OutboundContent::Text(text))
            .await?)
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
    ) -> Result<Message, SendError> {
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
        self.send_file(&handle, instance_id, to, file, file_name, media.caption)
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
    ) -> Result<Message, SendError> {
        let handle = self.actors.get(instance_id)?;
        let file_name = file.file_name.clone();
        self.send_file(&handle, instance_id, to, file, file_name, caption)
            .await
    }

    /// Stores the file under uploads, then hands it to the instance to send; a failed
    /// send removes the stored file again.
    async fn send_file(
        &self,
        handle: &InstanceHandle,
        instance_id: &str,
        to: &Jid,
        file: MediaFile,
        file_name: Option<String>,
        caption: Option<String>,
    ) -> Result<Message, SendError> {
        if file.bytes.is_empty() {
            return Err(SendError::Invalid("the file is empty".into()));
        }
        let path = self
            .media
            .save(instance_id, &file.bytes)
            .await
            .map_err(|e| SendError::Internal(e.to_string()))?;
        let size = file.bytes.len() as u64;
        let content = OutboundContent::Media {
            bytes: file.bytes.into(),
            mime_type: file.mime_type,
            file_name,
            caption,
            path: path.clone(),
            size,
        };
        let result = handle.send(to.as_str(), content).await;
        if result.is_err() {
            self.media.remove_file(&path).await;
        }
        Ok(result?)
    }
}
