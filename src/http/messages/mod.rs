//! Messages, by concern:
//! - [`send`]: sending texts, files by URL and uploaded files (through the use cases of
//!   [`crate::gateway::messaging`]);
//! - [`typed`]: locations, contact cards and polls;
//! - [`change`]: editing and deleting a sent message;
//! - [`status`]: status posts;
//! - [`presence`]: online/offline, typing, and following a contact's presence;
//! - [`history`]: chat history, chats, marking read and media download.

mod change;
mod history;
mod presence;
mod send;
mod status;
mod typed;

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
        .routes(routes!(typed::send_location))
        .routes(routes!(typed::send_contact))
        .routes(routes!(typed::send_poll))
        .routes(routes!(status::post_status))
        .routes(routes!(send::react))
        .routes(routes!(change::edit, change::delete))
        .routes(routes!(presence::set_presence))
        .routes(routes!(presence::typing))
        .routes(routes!(presence::subscribe))
        .routes(routes!(history::chats))
        .routes(routes!(history::history))
        .routes(routes!(history::mark_read))
        .routes(routes!(history::download_media))
}
