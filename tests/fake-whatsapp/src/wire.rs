//! The byte level of a connection: WhatsApp's 3-byte-length-prefixed frames, and small
//! builders for the stanzas the server sends most.

use tokio::sync::mpsc;
use whatsapp_rust::NodeBuilder;
use whatsapp_rust::async_channel;
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::transport::TransportEvent;
use whatsapp_rust::wacore_binary::node::Node;

/// Errors inside the fake are plain text: they end a connection and are reported.
pub(crate) type Fallible<T> = Result<T, String>;

/// Splits the byte stream into frames.
#[derive(Default)]
pub(crate) struct Frames(Vec<u8>);

impl Frames {
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    pub(crate) fn next(&mut self) -> Option<Vec<u8>> {
        if self.0.len() < 3 {
            return None;
        }
        let len =
            (usize::from(self.0[0]) << 16) | (usize::from(self.0[1]) << 8) | usize::from(self.0[2]);
        if self.0.len() < 3 + len {
            return None;
        }
        let frame = self.0[3..3 + len].to_vec();
        self.0.drain(..3 + len);
        Some(frame)
    }

    /// The next whole frame, reading from the client as needed.
    pub(crate) async fn next_from(
        &mut self,
        from_client: &mut mpsc::UnboundedReceiver<Bytes>,
    ) -> Fallible<Vec<u8>> {
        loop {
            if let Some(frame) = self.next() {
                return Ok(frame);
            }
            let bytes = from_client
                .recv()
                .await
                .ok_or("the client closed the connection")?;
            self.feed(&bytes);
        }
    }
}

pub(crate) fn frame(payload: &[u8]) -> Fallible<Bytes> {
    whatsapp_rust::wacore::framing::encode_frame(payload, None)
        .map(Bytes::from)
        .map_err(|e| format!("framing: {e}"))
}

/// The server's own address, as it signs its stanzas.
pub(crate) const SERVER: &str = "s.whatsapp.net";

/// `<iq type="result" id=…>`, to be completed with children.
pub(crate) fn result(id: &str) -> NodeBuilder {
    NodeBuilder::new("iq")
        .attr("from", SERVER)
        .attr("type", "result")
        .attr("id", id.to_owned())
}

/// `<iq type="error" id=…><error code=… text=…/></iq>`.
pub(crate) fn error(id: &str, code: u16, text: &str) -> Node {
    NodeBuilder::new("iq")
        .attr("from", SERVER)
        .attr("type", "error")
        .attr("id", id.to_owned())
        .children([NodeBuilder::new("error")
            .attr("code", code.to_string())
            .attr("text", text.to_owned())
            .build()])
        .build()
}

/// Seconds since the epoch, as stanzas carry time.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A stanza's attribute as text, if present.
pub(crate) fn attr(node: &Node, key: &str) -> Option<String> {
    node.attrs.get(key).map(|v| v.as_str().into_owned())
}

/// A stanza's byte content, if any.
pub(crate) fn bytes(node: &Node) -> Option<&[u8]> {
    match &node.content {
        Some(whatsapp_rust::wacore_binary::node::NodeContent::Bytes(b)) => Some(b),
        _ => None,
    }
}

/// What the client's transport receives: the server's bytes and the socket's fate.
#[derive(Clone)]
pub(crate) struct ToClient(pub(crate) async_channel::Sender<TransportEvent>);

impl ToClient {
    pub(crate) async fn data(&self, bytes: Bytes) -> Fallible<()> {
        self.event(TransportEvent::DataReceived(bytes)).await
    }

    pub(crate) async fn event(&self, event: TransportEvent) -> Fallible<()> {
        self.0
            .send(event)
            .await
            .map_err(|_| "the client went away".to_owned())
    }
}

/// A stanza's text content (`<contact>+123</contact>`), whichever way it was encoded.
pub(crate) fn text(node: &Node) -> Option<String> {
    match &node.content {
        Some(whatsapp_rust::wacore_binary::node::NodeContent::Bytes(b)) => {
            String::from_utf8(b.clone()).ok()
        }
        Some(whatsapp_rust::wacore_binary::node::NodeContent::String(s)) => Some(s.to_string()),
        _ => None,
    }
}
