//! WhatsApp's media servers, on a loopback HTTP port: uploads keep the encrypted blob
//! under a direct path, downloads hand it back. The bytes are never decrypted here; the
//! client and the peers do that with the media keys inside their messages.
//!
//! The client builds `https://<host>/…` URLs from the `media_conn` answer. The HTTP client
//! from [`crate::FakeWhatsApp::http_client`] sends those for [`crate::MEDIA_HOST`] to this
//! server over plain HTTP and everything else to the client it wraps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes as Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use whatsapp_rust::http::{HttpClient, HttpRequest, HttpResponse};
use whatsapp_rust::{anyhow, async_trait};

use crate::server::MEDIA_HOST;

#[derive(Clone, Default)]
pub(crate) struct Blobs(Arc<Mutex<HashMap<String, Vec<u8>>>>);

impl Blobs {
    pub(crate) fn get(&self, direct_path: &str) -> Option<Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(direct_path)
            .cloned()
    }

    pub(crate) fn put(&self, direct_path: String, blob: Vec<u8>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(direct_path, blob);
    }

    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The running media server: its address and the blobs it holds.
pub(crate) struct MediaServer {
    pub(crate) base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MediaServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MediaServer {
    /// Listens on a free loopback port. Needs a Tokio runtime.
    pub(crate) fn start(blobs: Blobs) -> std::io::Result<MediaServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = Router::new()
            .route("/mms/{kind}/{token}", post(upload))
            .route("/v/fake/{name}", get(download))
            .with_state(blobs.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(MediaServer {
            base: format!("http://{addr}"),
            task,
        })
    }
}

async fn upload(
    State(blobs): State<Blobs>,
    Path((_kind, token)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Response {
    let name: String = token
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let direct_path = format!("/v/fake/{name}");
    let url = format!("https://{MEDIA_HOST}{direct_path}");
    if query.contains_key("resume") {
        // Nothing is ever half uploaded here.
        return (StatusCode::NOT_FOUND, "").into_response();
    }
    blobs.put(direct_path.clone(), body.to_vec());
    axum::Json(serde_json::json!({ "url": url, "direct_path": direct_path })).into_response()
}

async fn download(State(blobs): State<Blobs>, Path(name): Path<String>) -> Response {
    match blobs.get(&format!("/v/fake/{name}")) {
        Some(blob) => (StatusCode::OK, blob).into_response(),
        None => (StatusCode::NOT_FOUND, "").into_response(),
    }
}

/// Sends requests for the fake media host to the loopback media server.
pub(crate) struct MediaRoute {
    pub(crate) base: String,
    pub(crate) inner: Arc<dyn HttpClient>,
}

#[async_trait]
impl HttpClient for MediaRoute {
    async fn execute(&self, mut request: HttpRequest) -> anyhow::Result<HttpResponse> {
        let prefix = format!("https://{MEDIA_HOST}");
        if let Some(rest) = request.url.strip_prefix(&prefix) {
            request.url = format!("{}{rest}", self.base);
        }
        self.inner.execute(request).await
    }
}
