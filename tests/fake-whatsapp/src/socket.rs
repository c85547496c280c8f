//! The fake over a Unix socket, for a client in another process: the server side
//! ([`FakeWhatsApp::serve_unix`]) accepts connections and relays each to one of its
//! connections; the client side ([`UnixTransports`]) is a transport factory that connects
//! to that socket. Each send and each data event crosses as one length-prefixed message,
//! so the client sees the same events as on the in-process transport (WhatsApp's frames,
//! no WebSocket or TLS around them).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::transport::{DisconnectReason, Transport, TransportEvent, TransportFactory};
use whatsapp_rust::{anyhow, async_channel, async_trait};

use crate::FakeWhatsApp;

/// Largest message either side accepts (a frame is at most 16 MiB).
const MAX_MESSAGE: usize = 1 << 25;

/// The next message on `from`: `Ok(None)` at the end of the stream. Messages keep the
/// boundaries of the transport's sends and events, as a WebSocket's do: the client
/// expects its handshake's answer alone, not run together with the first stanza.
async fn read_message(from: &mut OwnedReadHalf) -> std::io::Result<Option<Bytes>> {
    let mut len = [0u8; 4];
    match from.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("a message of {len} bytes"),
        ));
    }
    let mut message = vec![0u8; len];
    from.read_exact(&mut message).await?;
    Ok(Some(Bytes::from(message)))
}

/// Writes one message (its length, then its bytes).
async fn write_message(to: &mut OwnedWriteHalf, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "message too long"))?;
    let mut message = Vec::with_capacity(4 + bytes.len());
    message.extend_from_slice(&len.to_be_bytes());
    message.extend_from_slice(bytes);
    to.write_all(&message).await
}

impl FakeWhatsApp {
    /// Accepts connections on the Unix socket `path` until the runtime ends, each served
    /// as a connection of this fake. Needs a Tokio runtime.
    pub fn serve_unix(&self, path: &Path) -> std::io::Result<()> {
        let listener = UnixListener::bind(path)?;
        let fake = self.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(relay(fake.clone(), stream));
                    }
                    Err(e) => {
                        eprintln!("fake WhatsApp: accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(())
    }
}

/// One socket ⇄ one in-process connection of `fake`, until either end closes.
async fn relay(fake: FakeWhatsApp, stream: UnixStream) {
    let (transport, events) = match fake.create_transport().await {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("fake WhatsApp: no connection for a socket: {e}");
            return;
        }
    };
    let (mut from_client, mut to_client) = stream.into_split();
    let upstream = async {
        while let Ok(Some(bytes)) = read_message(&mut from_client).await {
            if transport.send(bytes).await.is_err() {
                break;
            }
        }
        transport.disconnect().await;
    };
    let downstream = async {
        while let Ok(event) = events.recv().await {
            match event {
                // The client side reports its own connection.
                TransportEvent::Connected => {}
                TransportEvent::DataReceived(bytes) => {
                    if write_message(&mut to_client, &bytes).await.is_err() {
                        break;
                    }
                }
                TransportEvent::Disconnected(_) => break,
            }
        }
        let _ = to_client.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

/// A transport factory whose connections go to a fake serving on a Unix socket
/// ([`FakeWhatsApp::serve_unix`]), typically in another process.
#[derive(Debug, Clone)]
pub struct UnixTransports {
    path: PathBuf,
}

impl UnixTransports {
    /// The factory for the fake serving on `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        UnixTransports { path: path.into() }
    }
}

/// The client's end of one socket.
struct UnixSide {
    to_server: tokio::sync::Mutex<Option<OwnedWriteHalf>>,
}

#[async_trait]
impl Transport for UnixSide {
    async fn send(&self, data: Bytes) -> Result<(), anyhow::Error> {
        let mut to_server = self.to_server.lock().await;
        let writer = to_server
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("the connection is closed"))?;
        write_message(writer, &data).await?;
        Ok(())
    }

    async fn disconnect(&self) {
        if let Some(mut writer) = self.to_server.lock().await.take() {
            let _ = writer.shutdown().await;
        }
    }
}

#[async_trait]
impl TransportFactory for UnixTransports {
    async fn create_transport(
        &self,
    ) -> Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>), anyhow::Error> {
        let stream = UnixStream::connect(&self.path).await?;
        let (mut from_server, to_server) = stream.into_split();
        let (events, received) = async_channel::unbounded();
        events.try_send(TransportEvent::Connected)?;
        tokio::spawn(async move {
            let ending = loop {
                match read_message(&mut from_server).await {
                    Ok(Some(bytes)) => {
                        if events
                            .send(TransportEvent::DataReceived(bytes))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => break DisconnectReason::StreamEnded,
                    Err(e) => break DisconnectReason::ReadError(e.to_string()),
                }
            };
            let _ = events.send(TransportEvent::Disconnected(ending)).await;
        });
        Ok((
            Arc::new(UnixSide {
                to_server: tokio::sync::Mutex::new(Some(to_server)),
            }),
            received,
        ))
    }
}
