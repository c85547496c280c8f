//! The desk's files: an inbound attachment (fetched from Meta) or an uploaded file,
//! served to the operators who see its chat.

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::chats::{WabaMediaView, media_view};
use super::{DeskCaller, numeric};
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppPath};
use crate::http::messages::content_disposition;
use crate::http::openapi::Binary;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(media))
        .routes(routes!(retry_media))
}

/// Types a browser may show in place: raster images (never SVG, which can carry script).
const INLINE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// The file of a desk message, with its content type: what `mediaUrl` points to.
///
/// Images are served `inline` (a panel shows them), anything else as an attachment.
/// While the file is still being fetched from Meta the answer is 503 `media_pending`
/// with `Retry-After` (a fetch is started if none is under way); when every attempt
/// failed, 502 `media_fetch_failed` says why.
#[utoipa::path(
    get,
    path = "/api/waba/operator/media/{messageId}",
    tag = "waba",
    params(("messageId" = i64, Path, description = "The message's numeric id")),
    responses(
        (status = 200, description = "The file, with its own Content-Type", content_type = "*/*", body = Binary),
        (status = 400, description = "Not a number", body = ErrorBody),
        (status = 404, description = "No such message visible to the caller, or no file", body = ErrorBody),
        (status = 502, description = "Fetching the file from Meta failed (`media_fetch_failed`); the message's `media.error` says why", body = ErrorBody),
        (status = 503, description = "The file is still being fetched from Meta (`media_pending`, with `Retry-After`)", body = ErrorBody),
    )
)]
async fn media(
    State(state): State<AppState>,
    desk: DeskCaller,
    AppPath(raw): AppPath<String>,
) -> ApiResult<Response> {
    let id = numeric("messageId", &raw)?;
    let stored = state.waba.media_file(&desk.scope, id).await?;
    let file = tokio::fs::File::open(&stored.path)
        .await
        .map_err(|_| ApiError::not_found("the media file is no longer stored"))?;
    let name = stored
        .file_name
        .clone()
        .unwrap_or_else(|| format!("media-{id}"));
    let mut disposition = content_disposition(&name);
    if INLINE_TYPES.contains(&stored.mime_type.as_str()) {
        disposition = disposition.replacen("attachment", "inline", 1);
    }
    Ok((
        [
            (header::CONTENT_TYPE, stored.mime_type),
            (header::CONTENT_DISPOSITION, disposition),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (header::CACHE_CONTROL, "private, max-age=3600".to_owned()),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    )
        .into_response())
}

/// Fetches a message's file from Meta again (after `media.status` became `failed`).
/// Answers at once; the outcome comes as a `media` event on the live stream.
#[utoipa::path(
    post,
    path = "/api/waba/operator/media/{messageId}/retry",
    tag = "waba",
    params(("messageId" = i64, Path, description = "The message's numeric id")),
    responses(
        (status = 202, description = "A fetch is under way (or the file is already stored): the file's record as it stands", body = WabaMediaView),
        (status = 400, description = "Not a number", body = ErrorBody),
        (status = 404, description = "No such message visible to the caller, or no file", body = ErrorBody),
    )
)]
async fn retry_media(
    State(state): State<AppState>,
    desk: DeskCaller,
    AppPath(raw): AppPath<String>,
) -> ApiResult<(StatusCode, AppJson<WabaMediaView>)> {
    let id = numeric("messageId", &raw)?;
    let message = state.waba.retry_media(&desk.scope, id).await?;
    let media = message
        .media
        .as_ref()
        .map(media_view)
        .ok_or_else(|| ApiError::not_found(format!("message {id} has no media")))?;
    Ok((StatusCode::ACCEPTED, AppJson(media)))
}
