//! Messages, by concern:
//! - [`send`]: sending texts, files by URL and uploaded files (through the use cases of
//!   [`crate::gateway::messaging`]);
//! - [`history`]: chat history, chats, marking read and media download.

mod history;
mod send;

pub(crate) use history::content_disposition;

use axum::extract::DefaultBodyLimit;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::state::AppState;

pub fn router(max_upload: usize) -> OpenApiRouter<AppState> {
    let (schemas, paths, upload) = routes!(send::send_file);
    // Multipart overhead on top of the file itself.
    let upload = upload.layer(DefaultBodyLimit::max(max_upload.saturating_add(64 * 1024)));
    OpenApiRouter::new()
        .routes(routes!(send::send_text))
        .routes(routes!(send::send_media))
        .routes((schemas, paths, upload))
        .routes(routes!(send::react))
        .routes(routes!(history::chats))
        .routes(routes!(history::history))
        .routes(routes!(history::mark_read))
        .routes(routes!(history::download_media))
}
