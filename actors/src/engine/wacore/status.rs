//! Status posts on the real engine: whatsapp-rust's `status()` feature, which encrypts
//! the post once with a sender key for `status@broadcast` and hands that key to every
//! device of the audience.

use whatsapp_rust::features::StatusSendOptions;
use whatsapp_rust::upload::UploadOptions;
use whatsapp_rust::wacore::download::MediaType;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, Jid};

use super::mapping::{parse_address, upload_kind};
use super::{send_error, sent_message};
use crate::engine::{EngineError, OutboundContent, SentMessage, StatusPost};

/// Posts `content` (a text, or an image) as a status seen by `post.audience`.
pub(super) async fn post(
    client: &Client,
    content: &OutboundContent,
    post: &StatusPost,
) -> Result<SentMessage, EngineError> {
    let audience = post
        .audience
        .iter()
        .map(|a| parse_address(a).map(|jid| jid.to_non_ad()))
        .collect::<Result<Vec<_>, _>>()?;
    learn_lids(client, &audience).await?;
    let message = match content {
        OutboundContent::Text(text) => text_post(text, post.background_argb),
        OutboundContent::Media {
            bytes,
            mime_type,
            caption,
            ..
        } if matches!(upload_kind(mime_type), MediaType::Image) => {
            let upload = client
                .upload(bytes.to_vec(), MediaType::Image, UploadOptions::default())
                .await
                .map_err(|e| {
                    EngineError::Unavailable(format!("the upload to WhatsApp failed: {e}"))
                })?;
            whatsapp_rust::media::image_message(
                upload,
                whatsapp_rust::media::ImageOptions {
                    caption: caption.clone(),
                    mimetype: Some(mime_type.clone()),
                    ..Default::default()
                },
            )
        }
        _ => {
            return Err(EngineError::InvalidInput(
                "a status is a text or an image".into(),
            ));
        }
    };
    let sent = client
        .status()
        .send_raw(message, &audience, StatusSendOptions::default())
        .await
        .map_err(send_error)?;
    Ok(sent_message(&sent))
}

/// Makes sure the session knows the LID of every number of `audience`: WhatsApp
/// addresses status posts by LID, and the library only looks them up in what the
/// session has learnt. Asking whether the unknown ones are on WhatsApp teaches them.
async fn learn_lids(client: &Client, audience: &[Jid]) -> Result<(), EngineError> {
    let mut unknown = Vec::new();
    for jid in audience.iter().filter(|j| j.is_pn()) {
        if !matches!(client.get_lid_pn_entry(jid).await, Ok(Some(_))) {
            unknown.push(jid.clone());
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    client
        .contacts()
        .is_on_whatsapp(&unknown)
        .await
        .map(|_| ())
        .map_err(|e| {
            EngineError::Unavailable(format!("WhatsApp did not look the audience up: {e}"))
        })
}

/// A text status as WhatsApp's apps write one: the text on a coloured background.
fn text_post(text: &str, background_argb: u32) -> wa::Message {
    wa::Message {
        extended_text_message: whatsapp_rust::buffa::MessageField::some(
            wa::message::ExtendedTextMessage {
                text: Some(text.to_owned()),
                background_argb: Some(background_argb),
                font: Some(wa::message::extended_text_message::FontType::SYSTEM),
                ..Default::default()
            },
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_post_carries_its_background() {
        let message = text_post("Open today", 0xFF1E_6E4F);
        let text = message.extended_text_message.as_option().expect("text");
        assert_eq!(text.text.as_deref(), Some("Open today"));
        assert_eq!(text.background_argb, Some(0xFF1E_6E4F));
    }
}
