//! The desk's files: inbound attachments fetched from Meta after their message is stored,
//! kept in the media store (`DATA_DIR/uploads/waba-<owner id>/`) and served back to the
//! operators.
//!
//! A fetch runs in the background and is tried [`FETCH_ATTEMPTS`] times when it fails
//! for a passing reason (timeout, network, 5xx, throughput), the delay doubling from the
//! configured one. Every step is stored on the message (`pending` with the attempts and
//! the last error, then `stored` or `failed`) and goes on the live feed as a `media`
//! event, so a missing file is never silently empty. A message still `pending` with no
//! fetch under way (the server stopped meanwhile) is fetched when its file is asked for;
//! a `failed` one when an operator asks for a retry.

use std::path::PathBuf;

use wagate_actors::desk::WabaEvent;
use wagate_actors::domain::waba::{MediaState, WabaMedia, WabaMessage};

use super::{Scope, Waba, WabaError};
use crate::media::detect_mime;

/// Tries of one fetch round, the first included.
pub const FETCH_ATTEMPTS: u32 = 3;

/// A stored file, ready to serve.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub path: PathBuf,
    pub mime_type: String,
    pub file_name: Option<String>,
}

/// Why one attempt failed, and whether another may succeed.
struct Attempt {
    error: String,
    transient: bool,
}

impl Waba {
    /// Starts a fetch round of the message's file in the background, unless one is under
    /// way. Does nothing for a message without a file.
    pub(super) fn fetch_in_background(&self, message: WabaMessage) {
        if message.media.is_none() || !self.fetching.start(message.id) {
            return;
        }
        let waba = self.clone();
        tokio::spawn(async move {
            let id = message.id;
            waba.fetch_round(message).await;
            waba.fetching.finish(id);
        });
    }

    async fn fetch_round(&self, message: WabaMessage) {
        let Some(mut media) = message.media.clone() else {
            return;
        };
        media.state = MediaState::Pending;
        for n in 0..FETCH_ATTEMPTS {
            if n > 0 {
                tokio::time::sleep(self.media_retry * 2u32.pow(n - 1)).await;
            }
            media.attempts = media.attempts.saturating_add(1);
            match self.fetch_once(&message, &media).await {
                Ok(stored) => {
                    media = stored;
                    media.state = MediaState::Stored;
                    media.error = None;
                    self.record_media(message.id, &media).await;
                    return;
                }
                Err(Attempt { error, transient }) => {
                    tracing::warn!(message = message.id, media_id = %media.media_id, attempt = media.attempts,
                        %error, "fetching a WABA file from Meta failed");
                    media.error = Some(error);
                    let last = !transient || n + 1 == FETCH_ATTEMPTS;
                    if last {
                        media.state = MediaState::Failed;
                    }
                    self.record_media(message.id, &media).await;
                    if last {
                        return;
                    }
                }
            }
        }
    }

    /// One try: the account's credentials, the download, the file kept.
    async fn fetch_once(
        &self,
        message: &WabaMessage,
        media: &WabaMedia,
    ) -> Result<WabaMedia, Attempt> {
        let credentials = self
            .credentials(&message.owner_id)
            .await
            .map_err(|e| Attempt {
                transient: matches!(e, WabaError::Store(_) | WabaError::Domain(_)),
                error: e.to_string(),
            })?;
        let download = self
            .graph
            .download_media(&credentials, &media.media_id)
            .await
            .map_err(|e| Attempt {
                transient: e.is_transient(),
                error: e.to_string(),
            })?;
        let mime_type = detect_mime(
            download.mime_type.as_deref().or(media.mime_type.as_deref()),
            &download.bytes,
            media.file_name.as_deref(),
        );
        let path = self
            .media
            .save(&media_dir(&message.owner_id), &download.bytes)
            .await
            .map_err(|e| Attempt {
                transient: true,
                error: format!("the file could not be kept: {e}"),
            })?;
        Ok(WabaMedia {
            mime_type: Some(mime_type),
            size: Some(download.bytes.len() as u64),
            path: Some(path),
            ..media.clone()
        })
    }

    /// Stores where the fetch stands and tells the live feed.
    async fn record_media(&self, message_id: i64, media: &WabaMedia) {
        match self.storage.set_waba_media(message_id, media).await {
            Ok(Some(message)) => self.desk.publish(WabaEvent::Media(message)),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(message = message_id, error = %e, "cannot record a WABA file's fetch")
            }
        }
    }

    /// The stored file of a visible message.
    ///
    /// Fails with `MessageNotFound` for a message the scope does not see, `NoMedia` for
    /// one without a file, `MediaPending` while it is being fetched (one is started when
    /// none is under way), `MediaFailed` with the reason when every attempt failed,
    /// `Store` when the file is on no local disk and the cluster's shared media store
    /// cannot be reached.
    pub async fn media_file(
        &self,
        scope: &Scope,
        message_id: i64,
    ) -> Result<StoredFile, WabaError> {
        let message = self.message(scope, message_id).await?;
        let Some(media) = message.media.clone() else {
            return Err(WabaError::NoMedia(message_id));
        };
        match media.state {
            MediaState::Stored => {
                // In cluster mode a file another node stored is fetched from the shared store.
                let path = match media.path.as_deref() {
                    Some(p) => self.media.local_path(p).await?,
                    None => None,
                };
                match path {
                    Some(path) => Ok(StoredFile {
                        path,
                        mime_type: media
                            .mime_type
                            .unwrap_or_else(|| "application/octet-stream".into()),
                        file_name: media.file_name,
                    }),
                    // The file is gone from disk: fetch it again.
                    _ => {
                        self.fetch_in_background(message);
                        Err(WabaError::MediaPending(message_id))
                    }
                }
            }
            MediaState::Pending => {
                self.fetch_in_background(message);
                Err(WabaError::MediaPending(message_id))
            }
            MediaState::Failed => {
                Err(WabaError::MediaFailed(media.error.unwrap_or_else(|| {
                    "the file could not be fetched from Meta".into()
                })))
            }
        }
    }

    /// Starts a new fetch round of a visible message's file that is not stored; answers
    /// the message as it stands.
    ///
    /// Fails with `MessageNotFound`, or `NoMedia` for a message without a file.
    pub async fn retry_media(
        &self,
        scope: &Scope,
        message_id: i64,
    ) -> Result<WabaMessage, WabaError> {
        let message = self.message(scope, message_id).await?;
        match &message.media {
            None => Err(WabaError::NoMedia(message_id)),
            Some(m) if m.state == MediaState::Stored => Ok(message),
            Some(_) => {
                self.fetch_in_background(message.clone());
                Ok(message)
            }
        }
    }
}

/// The media store directory of an account's desk files.
pub(super) fn media_dir(owner_id: &str) -> String {
    format!("waba-{owner_id}")
}

/// The messages whose file a fetch is under way for. Cheap to clone.
#[derive(Clone, Default)]
pub(super) struct Fetching(std::sync::Arc<std::sync::Mutex<std::collections::HashSet<i64>>>);

impl Fetching {
    /// Claims the message; false when a fetch of it is already under way.
    fn start(&self, id: i64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id)
    }

    fn finish(&self, id: i64) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }
}

/// A file an operator attaches to a send.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub bytes: Vec<u8>,
    /// As detected from the declared type, the content and the name.
    pub mime_type: String,
    pub file_name: Option<String>,
}

/// The types Meta's Cloud API sends, the message kind each becomes, and Meta's size
/// limit for it.
const SENDABLE: &[(&str, &str, u64)] = &[
    ("image/jpeg", "image", 5 * MB),
    ("image/png", "image", 5 * MB),
    ("image/webp", "sticker", 500 * KB),
    ("video/mp4", "video", 16 * MB),
    ("video/3gpp", "video", 16 * MB),
    ("audio/aac", "audio", 16 * MB),
    ("audio/amr", "audio", 16 * MB),
    ("audio/mpeg", "audio", 16 * MB),
    ("audio/mp4", "audio", 16 * MB),
    ("audio/ogg", "audio", 16 * MB),
    ("text/plain", "document", 100 * MB),
    ("text/csv", "document", 100 * MB),
    ("application/pdf", "document", 100 * MB),
    ("application/msword", "document", 100 * MB),
    ("application/vnd.ms-excel", "document", 100 * MB),
    ("application/vnd.ms-powerpoint", "document", 100 * MB),
    (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "document",
        100 * MB,
    ),
    (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "document",
        100 * MB,
    ),
    (
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "document",
        100 * MB,
    ),
];
const KB: u64 = 1024;
const MB: u64 = 1024 * 1024;

/// The message kind of a file of `mime_type` and Meta's limit for it; None for a type
/// Meta does not send.
pub fn sendable(mime_type: &str) -> Option<(&'static str, u64)> {
    SENDABLE
        .iter()
        .find(|(t, _, _)| *t == mime_type)
        .map(|(_, kind, max)| (*kind, *max))
}

impl Waba {
    /// Uploads `file` to Meta (`/{phoneNumberId}/media`) and sends it by its media id to
    /// the customer of a visible chat, `caption` under it; the desk keeps a copy, served
    /// like an inbound file. Answers the stored message.
    ///
    /// Checked before anything reaches Meta: `NotConfigured`, `ChatNotFound`,
    /// `UnsupportedType` for a type Meta does not send, `TooLarge` over Meta's limit for
    /// the kind, `OutsideWindow` when only a template may go. `Graph` when Meta refuses
    /// or fails the upload or the send.
    pub async fn send_upload(
        &self,
        scope: &Scope,
        chat_id: i64,
        file: Attachment,
        caption: Option<String>,
        sender_user_id: String,
    ) -> Result<WabaMessage, WabaError> {
        if let Some(owner) = scope.owner() {
            self.credentials(owner).await?;
        }
        let chat = self.chat(scope, chat_id).await?;
        let Some((kind, max)) = sendable(&file.mime_type) else {
            return Err(WabaError::UnsupportedType(file.mime_type));
        };
        let size = file.bytes.len() as u64;
        if size > max {
            return Err(WabaError::TooLarge(format!(
                "the file is {size} bytes; Meta sends {kind} files of {} up to {max} bytes",
                file.mime_type
            )));
        }
        // The chat actor checks the window again; this spares an upload that cannot go.
        if !wagate_actors::domain::waba::window_open(
            chat.last_customer_message_at,
            chrono::Utc::now(),
        ) {
            return Err(WabaError::OutsideWindow);
        }
        let credentials = self.credentials(&chat.owner_id).await?;
        let upload = wagate_actors::desk::MediaUpload {
            bytes: file.bytes,
            mime_type: file.mime_type.clone(),
            file_name: file.file_name.clone(),
        };
        let media_id = self
            .graph
            .upload_media(&credentials, &upload)
            .await
            .map_err(WabaError::Graph)?;
        // A copy for the operators; the send goes on without one if it cannot be kept.
        let path = match self
            .media
            .save(&media_dir(&chat.owner_id), &upload.bytes)
            .await
        {
            Ok(path) => Some(path),
            Err(e) => {
                tracing::warn!(chat = chat.id, error = %e, "cannot keep a copy of an uploaded file");
                None
            }
        };
        let media = WabaMedia {
            media_id: media_id.clone(),
            mime_type: Some(file.mime_type),
            file_name: file.file_name.clone(),
            size: Some(size),
            state: if path.is_some() {
                MediaState::Stored
            } else {
                MediaState::Failed
            },
            error: path
                .is_none()
                .then(|| "the desk could not keep a copy of the file".to_owned()),
            path,
            attempts: 0,
        };
        let text = caption.clone().or_else(|| file.file_name.clone());
        let content = wagate_actors::domain::waba::WabaContent::Uploaded {
            kind,
            media_id,
            caption,
            filename: file.file_name,
        };
        Ok(self
            .desk
            .send_with_file(
                &chat,
                credentials,
                content,
                text,
                Some(sender_user_id),
                Some(media),
            )
            .await?)
    }
}
