//! The webhook queue's HTTP transport on reqwest.

use std::time::Duration;

use async_trait::async_trait;
use wagate_actors::webhook_queue::{WebhookRequest, WebhookTransport};

/// Webhook requests over reqwest: pooled keep-alive connections, a per-request
/// timeout, and the private-network guard unless allowed.
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    /// Fails when the TLS backend cannot be initialised.
    pub fn new(allow_private: bool, timeout: Duration) -> Result<HttpTransport, String> {
        Ok(HttpTransport {
            client: crate::outbound::guarded_client(allow_private, timeout)?,
        })
    }
}

#[async_trait]
impl WebhookTransport for HttpTransport {
    async fn post(&self, request: WebhookRequest) -> Result<u16, String> {
        let mut rb = self.client.post(&request.url).body(request.body);
        for (name, value) in &request.headers {
            rb = rb.header(name, value);
        }
        match rb.send().await {
            Ok(resp) => Ok(resp.status().as_u16()),
            Err(e) => Err(crate::outbound::explain(&e).to_string()),
        }
    }
}
