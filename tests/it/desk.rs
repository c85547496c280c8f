//! The operator desk's panel (`/desk`): how its files are served.

use reqwest::Method;
use serde_json::json;

use crate::common::{Auth, Backend, read};
use crate::waba::desk_on;

#[tokio::test]
async fn the_panel_is_served_under_the_strict_content_security_policy() {
    let d = desk_on(Backend::Sqlite).await;
    for (path, content_type, needle) in [
        (
            "/desk",
            "text/html; charset=utf-8",
            r#"<script src="/desk/app.js" defer></script>"#,
        ),
        (
            "/desk/app.js",
            "text/javascript; charset=utf-8",
            "'use strict';",
        ),
        ("/desk/style.css", "text/css; charset=utf-8", ":root {"),
    ] {
        let resp = d
            .server
            .request(Method::GET, path, &Auth::None)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200, "{path}");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("content-type"), content_type, "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        if path == "/desk" {
            let csp = header("content-security-policy");
            for directive in [
                "default-src 'none'",
                "script-src 'self'",
                "connect-src 'self'",
            ] {
                assert!(csp.contains(directive), "CSP {csp:?} lacks {directive}");
            }
            assert!(!csp.contains("unsafe-inline"), "{csp}");
        }
        let body = resp.text().await.expect("body");
        assert!(body.contains(needle), "{path}");
    }
    let (status, body) = read(
        d.server
            .request(Method::GET, "/desk/%2e%2e%2fCargo.toml", &Auth::None)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = read(
        d.server
            .request(Method::GET, "/desk/nope.js", &Auth::None)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (404, json!("not_found")));
}
