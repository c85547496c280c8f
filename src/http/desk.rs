//! The operator desk's panel: static HTML, CSS and JavaScript from `assets/desk/`,
//! compiled into the binary, served like the dashboard (and under the same strict
//! Content-Security-Policy). It is a client of the WABA operator API: it signs in with
//! `POST /api/auth/login` (sharing the dashboard's `sessionStorage` keys), lists the
//! chats, follows `/api/waba/operator/events`, and sends through `/api/waba/operator/send`.

use axum::response::{IntoResponse, Redirect, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::dashboard::{Asset, TAG, serve};
use crate::http::error::ApiError;
use crate::http::extract::AppPath;
use crate::http::state::AppState;

/// Where the panel lives.
pub const DESK_PATH: &str = "/desk";

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../assets/desk/index.html"),
};

/// The files served under `/desk/`, by name.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/desk/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/desk/style.css"),
    },
];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(desk_index))
        .routes(routes!(desk_index_slash))
        .routes(routes!(desk_asset))
}

/// The operator desk: the chat panel of the WABA operator API (it logs in and calls this
/// API from the browser).
#[utoipa::path(
    get,
    path = "/desk",
    tag = TAG,
    security(()),
    responses((status = 200, description = "The operator desk", content_type = "text/html", body = String))
)]
async fn desk_index() -> Response {
    serve(&INDEX)
}

/// Redirects to the operator desk.
#[utoipa::path(
    get,
    path = "/desk/",
    tag = TAG,
    security(()),
    responses((status = 307, description = "To `/desk`"))
)]
async fn desk_index_slash() -> Redirect {
    Redirect::temporary(DESK_PATH)
}

/// A script or style sheet of the operator desk.
#[utoipa::path(
    get,
    path = "/desk/{file}",
    tag = TAG,
    security(()),
    params(("file" = String, Path, description = "`app.js` or `style.css`")),
    responses(
        (status = 200, description = "The file", body = String),
        (status = 404, description = "No such file", body = crate::http::error::ErrorBody)
    )
)]
async fn desk_asset(AppPath(file): AppPath<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => serve(a),
        None => ApiError::not_found(format!("no desk file named {file}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::{ASSETS, INDEX};

    fn text(body: &[u8]) -> &str {
        std::str::from_utf8(body).expect("desk files are UTF-8")
    }

    #[test]
    fn the_page_references_every_served_file() {
        let html = text(INDEX.body);
        for a in ASSETS {
            assert!(
                html.contains(&format!("/desk/{}", a.name)),
                "index.html does not use {}",
                a.name
            );
        }
    }

    /// Nothing is loaded from other origins and nothing runs or styles inline, so the
    /// page works under the strict Content-Security-Policy.
    #[test]
    fn the_files_fit_the_content_security_policy() {
        for a in std::iter::once(&INDEX).chain(ASSETS) {
            let t = text(a.body);
            assert!(
                !t.contains("http://") && !t.contains("https://"),
                "{} refers to another origin",
                a.name
            );
            assert!(!t.contains("<script>"), "{}: inline script", a.name);
            assert!(!t.contains("<style"), "{}: inline style sheet", a.name);
            assert!(!t.contains(" style=\""), "{}: inline style", a.name);
            assert!(!t.contains("javascript:"), "{}: javascript: URL", a.name);
            assert!(!t.contains("innerHTML"), "{}: HTML from strings", a.name);
        }
    }
}
