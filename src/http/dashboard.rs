//! The web dashboard: static HTML, CSS and JavaScript from `assets/dashboard/`, compiled
//! into the binary. The page is a client of the REST API like any other (it logs in and
//! keeps the JWT in the tab's `sessionStorage`), so it needs no server-side session and no
//! endpoint of its own. Scripts and styles are separate files, never inline, so the strict
//! Content-Security-Policy of [`crate::http::browser`] (`script-src 'self'`) holds.

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::ApiError;
use crate::http::extract::AppPath;
use crate::http::state::AppState;

/// Where the dashboard lives; `/` redirects here.
pub const DASHBOARD_PATH: &str = "/dashboard";

/// One file of the dashboard (or the operator desk), as compiled in.
pub(crate) struct Asset {
    pub(crate) name: &'static str,
    pub(crate) content_type: &'static str,
    pub(crate) body: &'static [u8],
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../assets/dashboard/index.html"),
};

/// The files served under `/dashboard/`, by name.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/dashboard/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/dashboard/style.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/dashboard/favicon.svg"),
    },
];

/// The tag of the dashboard's pages in the OpenAPI document.
pub const TAG: &str = "dashboard";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(root))
        .routes(routes!(index))
        .routes(routes!(index_slash))
        .routes(routes!(asset))
}

/// Redirects to the dashboard.
#[utoipa::path(
    get,
    path = "/",
    tag = TAG,
    security(()),
    responses((status = 307, description = "To `/dashboard`"))
)]
async fn root() -> Redirect {
    to_dashboard()
}

/// Redirects to the dashboard.
#[utoipa::path(
    get,
    path = "/dashboard/",
    tag = TAG,
    security(()),
    responses((status = 307, description = "To `/dashboard`"))
)]
async fn index_slash() -> Redirect {
    to_dashboard()
}

/// A temporary redirect: browsers do not cache it, so `/` stays free for other uses later.
fn to_dashboard() -> Redirect {
    Redirect::temporary(DASHBOARD_PATH)
}

/// The dashboard page (it logs in and calls this API from the browser).
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = TAG,
    security(()),
    responses((status = 200, description = "The dashboard", content_type = "text/html", body = String))
)]
async fn index() -> Response {
    serve(&INDEX)
}

/// A script, style sheet or icon of the dashboard.
#[utoipa::path(
    get,
    path = "/dashboard/{file}",
    tag = TAG,
    security(()),
    params(("file" = String, Path, description = "`app.js`, `style.css` or `favicon.svg`")),
    responses(
        (status = 200, description = "The file", body = String),
        (status = 404, description = "No such file", body = crate::http::error::ErrorBody)
    )
)]
async fn asset(AppPath(file): AppPath<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => serve(a),
        None => ApiError::not_found(format!("no dashboard file named {file}")).into_response(),
    }
}

/// `no-cache`: browsers revalidate, so a new server version's files are used at once.
/// The security headers (and the CSP of the HTML) are added by the router's middleware.
pub(crate) fn serve(asset: &Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::{ASSETS, INDEX};

    fn text(body: &[u8]) -> &str {
        std::str::from_utf8(body).expect("dashboard files are UTF-8")
    }

    #[test]
    fn the_page_references_every_served_file() {
        let html = text(INDEX.body);
        for a in ASSETS {
            assert!(
                html.contains(&format!("/dashboard/{}", a.name)),
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
            // The SVG namespace is a name and example.com a placeholder: neither is loaded.
            let t = text(a.body)
                .replace("http://www.w3.org/2000/svg", "")
                .replace("https://example.com/", "");
            assert!(
                !t.contains("http://") && !t.contains("https://"),
                "{} refers to another origin",
                a.name
            );
            assert!(!t.contains("<script>"), "{}: inline script", a.name);
            assert!(!t.contains("<style"), "{}: inline style sheet", a.name);
            assert!(!t.contains(" style=\""), "{}: inline style", a.name);
            assert!(!t.contains("javascript:"), "{}: javascript: URL", a.name);
        }
    }
}
