//! One connection, from the server's side: the handshake, then sealed stanzas both ways
//! until either end closes it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use whatsapp_rust::NodeBuilder;
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::transport::{DisconnectReason, Transport, TransportEvent};
use whatsapp_rust::wacore::handshake::NoiseCipher;
use whatsapp_rust::wacore_binary::marshal::{marshal, unmarshal_ref};
use whatsapp_rust::wacore_binary::node::Node;
use whatsapp_rust::wacore_binary::util::unpack;
use whatsapp_rust::{anyhow, async_trait};

use crate::Ending;
use crate::handshake;
use crate::server::{Command, Inner, Reply};
use crate::wire::{Fallible, Frames, ToClient, frame};

/// The client's end of the socket: what it writes goes to the server task.
pub(crate) struct ClientSide {
    pub(crate) to_server: Mutex<Option<mpsc::UnboundedSender<Bytes>>>,
}

#[async_trait]
impl Transport for ClientSide {
    async fn send(&self, data: Bytes) -> Result<(), anyhow::Error> {
        let to_server = self
            .to_server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        to_server
            .ok_or_else(|| anyhow::anyhow!("the connection is closed"))?
            .send(data)
            .map_err(|_| anyhow::anyhow!("the fake WhatsApp closed the connection"))
    }

    async fn disconnect(&self) {
        self.to_server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

/// The server's writing half: seals stanzas with the transport cipher.
struct Sealer {
    cipher: NoiseCipher,
    written: u32,
    to_client: ToClient,
}

impl Sealer {
    async fn send(&mut self, node: &Node) -> Fallible<()> {
        let plain = marshal(node).map_err(|e| e.to_string())?;
        let sealed = self
            .cipher
            .encrypt_with_counter(self.written, &plain)
            .map_err(|e| e.to_string())?;
        self.written += 1;
        self.to_client.data(frame(&sealed)?).await
    }

    /// Ends the stream the way WhatsApp does, then waits for the client to hang up.
    async fn end(
        &mut self,
        ending: Ending,
        from_client: &mut mpsc::UnboundedReceiver<Bytes>,
    ) -> Fallible<()> {
        let stanza = match ending {
            Ending::StreamError(code) => NodeBuilder::new("stream:error")
                .attr("code", code.to_string())
                .build(),
            Ending::Replaced => NodeBuilder::new("stream:error")
                .children([NodeBuilder::new("conflict")
                    .attr("type", "replaced")
                    .build()])
                .build(),
            Ending::DeviceRemoved => NodeBuilder::new("stream:error")
                .attr("code", "401")
                .children([NodeBuilder::new("conflict")
                    .attr("type", "device_removed")
                    .build()])
                .build(),
            Ending::Drop => {
                return self
                    .to_client
                    .event(TransportEvent::Disconnected(DisconnectReason::ReadError(
                        "simulated network loss".into(),
                    )))
                    .await;
            }
        };
        self.send(&stanza).await?;
        // WhatsApp closes the socket after a stream error.
        tokio::time::timeout(Duration::from_secs(5), async {
            while from_client.recv().await.is_some() {}
        })
        .await
        .ok();
        Ok(())
    }
}

/// Serves connection `n` until it closes.
pub(crate) async fn serve(
    inner: Arc<Inner>,
    n: usize,
    mut from_client: mpsc::UnboundedReceiver<Bytes>,
    to_client: ToClient,
    mut commands: mpsc::UnboundedReceiver<Command>,
) -> Fallible<()> {
    let outcome = run(&inner, n, &mut from_client, to_client, &mut commands).await;
    inner.closed(n);
    outcome
}

async fn run(
    inner: &Inner,
    n: usize,
    from_client: &mut mpsc::UnboundedReceiver<Bytes>,
    to_client: ToClient,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Fallible<()> {
    to_client.event(TransportEvent::Connected).await?;
    let mut frames = Frames::default();
    let established = handshake::respond(&inner.keys, &mut frames, from_client, &to_client).await?;
    let opening = inner.open(n, &established);
    let read_cipher = established.read;
    let mut out = Sealer {
        cipher: established.write,
        written: 0,
        to_client,
    };
    for reply in opening {
        match reply {
            Reply::Send(node) => out.send(&node).await?,
            Reply::End(ending) => return out.end(ending, from_client).await,
        }
    }

    let mut read = 0u32;
    loop {
        while let Some(mut sealed) = frames.next() {
            read_cipher
                .decrypt_in_place_with_counter(read, &mut sealed)
                .map_err(|e| e.to_string())?;
            read += 1;
            let raw = unpack(&sealed).map_err(|e| e.to_string())?;
            let node = unmarshal_ref(&raw).map_err(|e| e.to_string())?.to_owned();
            for reply in inner.handle(n, node).await {
                match reply {
                    Reply::Send(node) => out.send(&node).await?,
                    Reply::End(ending) => return out.end(ending, from_client).await,
                }
            }
        }
        tokio::select! {
            bytes = from_client.recv() => match bytes {
                Some(bytes) => frames.feed(&bytes),
                None => return Ok(()),
            },
            command = commands.recv() => match command {
                Some(Command::Send(node)) => out.send(&node).await?,
                Some(Command::End(ending)) => return out.end(ending, from_client).await,
                None => return Ok(()),
            },
        }
    }
}
