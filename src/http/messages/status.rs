//! Status posts: a text or an image the account's contacts see for a day.

use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;

use super::send::Sent;
use crate::gateway::messaging::{StatusContent, check_caption};
use crate::http::access::SendingInstance;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::AppJson;
use crate::http::openapi::{NO_INSTANCE, NOT_CONNECTED, OVER_LIMIT};
use crate::http::state::AppState;

/// The background of a text status when none is given (WhatsApp's green).
const DEFAULT_BACKGROUND: u32 = 0xFF1E_6E4F;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct PostStatus {
    /// A text status: not blank, at most 700 characters. Give `text` or `imageUrl`.
    #[schema(
        example = "Open until 8 pm today",
        pattern = r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]",
        max_length = 700
    )]
    text: Option<String>,
    /// A text status's background, `#RRGGBB` (default `#1E6E4F`).
    #[schema(example = "#1E6E4F", pattern = r"^#[0-9A-Fa-f]{6}$")]
    background_color: Option<String>,
    /// An image status: where the server downloads the image from (http or https);
    /// 502 `media_fetch_failed` when it cannot.
    image_url: Option<String>,
    /// The image's caption, at most 4096 characters.
    #[schema(max_length = 4096)]
    caption: Option<String>,
    /// Phone numbers of the people who see it (at most 1024); absent or empty: every
    /// contact the session knows.
    #[serde(default)]
    #[schema(schema_with = crate::http::openapi::phone_list_schema)]
    recipients: Vec<String>,
}

/// Posts a status (`status@broadcast`): a text on a coloured background, or an image,
/// seen by `recipients` or by every contact. It counts as a sent message (limits and
/// statistics), is stored in history under the chat `status@broadcast`, and reported by
/// `message_sent`.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/status",
    tag = "messages",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = PostStatus,
    responses(
        (status = 200, description = "Posted", body = Sent),
        (status = 400, description = "Neither or both of `text` and `imageUrl`, a blank or too long text, a bad colour or recipient, or a file that is not an image (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 413, description = "The image is over the upload limit", body = ErrorBody),
        (status = 422, description = "No recipients given and the account has no contacts (`no_audience`)", body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
        (status = 502, description = "The image cannot be downloaded (`media_fetch_failed`)", body = ErrorBody),
    )
)]
pub(super) async fn post_status(
    State(state): State<AppState>,
    SendingInstance { instance, .. }: SendingInstance,
    AppJson(body): AppJson<PostStatus>,
) -> ApiResult<AppJson<Sent>> {
    let content = match (body.text, body.image_url) {
        (Some(text), None) => {
            if body.caption.is_some() {
                return Err(ApiError::validation("caption goes with imageUrl, not text"));
            }
            StatusContent::Text {
                text,
                background_argb: background(body.background_color.as_deref())?,
            }
        }
        (None, Some(url)) => {
            if body.background_color.is_some() {
                return Err(ApiError::validation(
                    "backgroundColor goes with text, not imageUrl",
                ));
            }
            StatusContent::Image {
                url,
                caption: check_caption(body.caption)?,
            }
        }
        _ => return Err(ApiError::validation("give either text or imageUrl")),
    };
    let sent = state
        .messenger
        .post_status(&instance.id, content, &body.recipients)
        .await?;
    // Never paced: the post went, and the answer is its id.
    let (_, answer) = Sent::answer(sent);
    Ok(answer)
}

/// `#RRGGBB` as WhatsApp's opaque `0xAARRGGBB`; the default when absent.
fn background(color: Option<&str>) -> ApiResult<u32> {
    let Some(color) = color else {
        return Ok(DEFAULT_BACKGROUND);
    };
    color
        .strip_prefix('#')
        .filter(|hex| hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .map(|rgb| 0xFF00_0000 | rgb)
        .ok_or_else(|| ApiError::validation("backgroundColor: #RRGGBB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_become_opaque_argb() {
        assert_eq!(background(None).ok(), Some(DEFAULT_BACKGROUND));
        assert_eq!(background(Some("#0a0B0c")).ok(), Some(0xFF0A_0B0C));
        for bad in ["0A0B0C", "#0A0B0", "#0A0B0CD", "#GGGGGG", "#+A0B0C"] {
            assert!(background(Some(bad)).is_err(), "{bad}");
        }
    }
}
