//! Wrappers around whatsapp-rust's network seams that remember why the last connection
//! attempt failed. The library retries on its own and only logs the cause; the engine's
//! watchdog reports it to the user with the attempt count.

use std::sync::{Arc, Mutex};

use whatsapp_rust::anyhow;
use whatsapp_rust::async_channel::Receiver;
use whatsapp_rust::async_trait;
use whatsapp_rust::http::{HttpClient, HttpRequest, HttpResponse};
use whatsapp_rust::transport::{Transport, TransportEvent, TransportFactory};

/// The last reason a connection attempt failed, until someone reports it.
#[derive(Default)]
pub struct Reasons {
    last: Mutex<Option<String>>,
}

/// Error texts can carry whole server answers: keep what is stored and shown short.
const MAX_REASON_CHARS: usize = 300;

impl Reasons {
    pub fn set(&self, reason: String) {
        let reason = if reason.chars().count() > MAX_REASON_CHARS {
            let mut short: String = reason.chars().take(MAX_REASON_CHARS).collect();
            short.push('…');
            short
        } else {
            reason
        };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    pub fn take(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A transport factory that records why a connection could not be opened.
pub struct ObservedTransports {
    inner: Arc<dyn TransportFactory>,
    reasons: Arc<Reasons>,
}

impl ObservedTransports {
    pub fn new(inner: Arc<dyn TransportFactory>, reasons: Arc<Reasons>) -> Self {
        ObservedTransports { inner, reasons }
    }
}

#[async_trait]
impl TransportFactory for ObservedTransports {
    async fn create_transport(
        &self,
    ) -> Result<(Arc<dyn Transport>, Receiver<TransportEvent>), anyhow::Error> {
        self.inner.create_transport().await.inspect_err(|err| {
            self.reasons
                .set(format!("cannot connect to WhatsApp: {err:#}"))
        })
    }
}

/// An HTTP client (version lookup, media) that records failures to reach WhatsApp.
pub struct ObservedHttp {
    inner: Arc<dyn HttpClient>,
    reasons: Arc<Reasons>,
}

impl ObservedHttp {
    pub fn new(inner: Arc<dyn HttpClient>, reasons: Arc<Reasons>) -> Self {
        ObservedHttp { inner, reasons }
    }
}

#[async_trait]
impl HttpClient for ObservedHttp {
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        let host = host_of(&request.url).to_owned();
        self.inner
            .execute(request)
            .await
            .inspect_err(|err| self.reasons.set(format!("cannot reach {host}: {err:#}")))
    }

    fn supports_streaming(&self) -> bool {
        self.inner.supports_streaming()
    }

    fn execute_streaming(
        &self,
        request: HttpRequest,
    ) -> anyhow::Result<whatsapp_rust::wacore::net::StreamingHttpResponse> {
        self.inner.execute_streaming(request)
    }

    fn supports_upload_streaming(&self) -> bool {
        self.inner.supports_upload_streaming()
    }

    fn execute_upload(
        &self,
        request: HttpRequest,
        body: whatsapp_rust::wacore::net::UploadBody,
        content_length: u64,
    ) -> anyhow::Result<HttpResponse> {
        self.inner.execute_upload(request, body, content_length)
    }
}

/// The host of a URL, for error texts (never the path or query: they carry tokens).
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_taken_once_and_kept_short() {
        let reasons = Reasons::default();
        assert_eq!(reasons.take(), None);
        reasons.set("x".repeat(1000));
        let taken = reasons.take().expect("a reason");
        assert_eq!(taken.chars().count(), MAX_REASON_CHARS + 1);
        assert_eq!(reasons.take(), None);
    }

    #[test]
    fn only_the_host_of_a_url_is_shown() {
        assert_eq!(
            host_of("https://mmg.whatsapp.net/v/t62/abc?auth=secret"),
            "mmg.whatsapp.net"
        );
        assert_eq!(host_of("web.whatsapp.com"), "web.whatsapp.com");
    }
}
