//! whatsapp-rust's HTTP seam (the version lookup and media transfers) over reqwest.
//!
//! The library's own client (ureq) is blocking and runs each request on a runtime thread;
//! this one is async, shares one connection pool between all sessions, and bounds how
//! long a stalled media server can hold a request.

use std::time::Duration;

use whatsapp_rust::anyhow;
use whatsapp_rust::async_trait;
use whatsapp_rust::http::{HttpClient, HttpRequest, HttpResponse};

/// How long to wait for a media server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a transfer may go without receiving a byte.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// An async HTTP client for whatsapp-rust.
#[derive(Clone, Debug)]
pub struct ReqwestHttpClient {
    client: reqwest::Client,
}

impl Default for ReqwestHttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl ReqwestHttpClient {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .unwrap_or_default();
        ReqwestHttpClient { client }
    }
}

#[async_trait]
impl HttpClient for ReqwestHttpClient {
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| anyhow::anyhow!("unsupported HTTP method {}", request.method))?;
        let mut builder = self.client.request(method, &request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let response = builder.send().await?;
        let status_code = response.status().as_u16();
        let body = response.bytes().await?.to_vec();
        Ok(HttpResponse { status_code, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP exchange on a loopback socket: returns what the client sent.
    async fn serve_once(
        listener: tokio::net::TcpListener,
        status: &'static str,
        body: &'static [u8],
    ) -> String {
        let (mut socket, _) = listener.accept().await.expect("a connection");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.read(&mut buf).await.expect("read");
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())
                            .flatten()
                    })
                    .unwrap_or(0);
                if request.len() >= end + 4 + length || n == 0 {
                    break;
                }
            }
        }
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        socket.write_all(head.as_bytes()).await.expect("write");
        socket.write_all(body).await.expect("write");
        String::from_utf8_lossy(&request).into_owned()
    }

    #[tokio::test]
    async fn posts_the_body_and_headers_and_returns_status_and_body() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve_once(listener, "200 OK", b"{\"ok\":true}"));
        let response = ReqwestHttpClient::new()
            .execute(
                HttpRequest::post(format!("http://{addr}/mms/image/tok?auth=a"))
                    .with_header("Origin", "https://web.whatsapp.com")
                    .with_body(b"encrypted".to_vec()),
            )
            .await
            .expect("a response");
        assert_eq!(response.status_code, 200);
        assert_eq!(response.body, b"{\"ok\":true}");
        let seen = server.await.expect("served");
        assert!(
            seen.starts_with("POST /mms/image/tok?auth=a HTTP/1.1"),
            "{seen}"
        );
        assert!(
            seen.to_ascii_lowercase()
                .contains("origin: https://web.whatsapp.com")
        );
        assert!(seen.ends_with("encrypted"), "{seen}");
    }

    #[tokio::test]
    async fn an_error_status_is_a_response_not_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve_once(listener, "404 Not Found", b""));
        let response = ReqwestHttpClient::new()
            .execute(HttpRequest::get(format!("http://{addr}/v/gone")))
            .await
            .expect("a response");
        assert_eq!(response.status_code, 404);
        server.await.expect("served");
    }
}
