//! Errors below the router answer `{error, code}` too.
//!
//! - [`json_errors`]: a response layer that turns any error answer without a JSON body
//!   (a rejection of a framework extractor, a limit of a layer) into one, keeping the
//!   status and its headers.
//! - [`JsonErrorListener`]: the TCP listener the server accepts on. hyper answers a
//!   request it cannot parse — a URI over its 64 KiB limit (414), headers over its
//!   buffer (431), a malformed request line (400) — itself, with an empty body, before
//!   any layer runs. The connections of this listener replace exactly those canned
//!   answers (a status line and headers without `content-type`, with an empty body,
//!   written alone) with the same status and a JSON body; everything else passes
//!   through untouched.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::connect_info::Connected;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::http::error::ApiError;

/// Bodies of error answers read to keep their message (longer ones are cut).
const MESSAGE_BYTES: usize = 4096;

/// The machine code of an error status no handler chose one for.
fn code_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        408 => "request_timeout",
        411 => "length_required",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "validation_error",
        429 => "rate_limited",
        431 => "headers_too_large",
        503 => "unavailable",
        504 => "timeout",
        s if s >= 500 => "internal_error",
        _ => "bad_request",
    }
}

/// What an error status means when its answer said nothing.
fn message_of(status: StatusCode) -> String {
    match status.as_u16() {
        400 => "malformed HTTP request".to_owned(),
        414 => "the request URI is longer than the server accepts".to_owned(),
        431 => "the request headers are larger than the server accepts".to_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase(),
    }
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim_start().to_ascii_lowercase();
            v.starts_with("application/json") || v.starts_with("application/problem+json")
        })
}

/// Gives every error answer (4xx, 5xx) without a JSON body the `{error, code}` shape,
/// with the text it had as the message. Status and headers stay.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MESSAGE_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        message_of(status)
    } else {
        text
    };
    let json = ApiError::new(status, code_of(status), message).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let (_, body) = json.into_parts();
    Response::from_parts(parts, body)
}

/// The peer of a connection (the login throttle counts per address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, JsonErrorListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, JsonErrorListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// A TCP listener whose connections answer hyper's own parse errors in JSON.
pub struct JsonErrorListener(pub TcpListener);

impl Listener for JsonErrorListener {
    type Io = JsonErrorIo<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = Listener::accept(&mut self.0).await;
        (JsonErrorIo::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection that rewrites hyper's bodiless parse-error answers (see the module).
pub struct JsonErrorIo<T> {
    inner: T,
    /// A replacement answer still to be written, from `pending_at` on.
    pending: Vec<u8>,
    pending_at: usize,
}

impl<T> JsonErrorIo<T> {
    pub fn new(inner: T) -> Self {
        JsonErrorIo {
            inner,
            pending: Vec::new(),
            pending_at: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonErrorIo<T> {
    /// Writes what is left of a replacement answer.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending_at < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.pending_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending_at += n;
        }
        self.pending.clear();
        self.pending_at = 0;
        Poll::Ready(Ok(()))
    }
}

/// The JSON answer replacing `head` when it is one of hyper's canned parse-error
/// answers: a 400, 414 or 431 status line and headers, nothing after them, no
/// `content-type`, and no body (`content-length: 0` or none).
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ")?;
    let status: u16 = rest.get(..3)?.parse().ok()?;
    if !matches!(status, 400 | 414 | 431) {
        return None;
    }
    let headers = text.strip_suffix("\r\n\r\n")?;
    if headers.contains("\r\n\r\n") {
        return None;
    }
    let lower = headers.to_ascii_lowercase();
    let empty = lower
        .split("\r\n")
        .filter_map(|line| line.strip_prefix("content-length:"))
        .all(|v| v.trim() == "0");
    if lower.contains("\r\ncontent-type:") || lower.contains("\r\ntransfer-encoding:") || !empty {
        return None;
    }
    let status = StatusCode::from_u16(status).ok()?;
    let body =
        serde_json::json!({"error": message_of(status), "code": code_of(status)}).to_string();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-content-type-options: nosniff\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    for line in headers.split("\r\n").skip(1) {
        if line.to_ascii_lowercase().starts_with("date:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrorIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrorIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.drain(cx))?;
        if let Some(answer) = replacement(buf) {
            this.pending = answer;
            this.pending_at = 0;
            // Taken whole; what the socket does not take now goes at the next write,
            // flush or shutdown.
            if let Poll::Ready(Err(e)) = this.drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then hands each answer's head to one `poll_write`, where a
    // canned one can be recognised whole.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canned_bodiless_parse_errors_are_replaced() {
        let canned = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 10:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(replacement(canned).expect("replaced")).expect("utf8");
        assert!(
            answer.starts_with("HTTP/1.1 414 URI Too Long\r\n"),
            "{answer}"
        );
        assert!(answer.contains("\r\ndate: Wed, 02 Dec 2026 10:00:00 GMT\r\n"));
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(json["code"], "uri_too_long");
        assert!(replacement(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n").is_some());

        // Answers of the application pass: they have a type, a body, or another status.
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"{\"partial\": \"body\"}",
        ] {
            assert_eq!(replacement(other), None, "{}", String::from_utf8_lossy(other));
        }
    }
}
