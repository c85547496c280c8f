//! WhatsApp's side of a connection, in process: a [`TransportFactory`] whose transports
//! lead to a responder that performs the server half of the real Noise XX handshake with
//! the unmodified whatsapp-rust client, then asks it to pair (QR refs), answers its pings
//! and pair-code requests, and on the test's command ends the stream the way WhatsApp's
//! servers do (stream errors, `<conflict>`, a dropped socket).
//!
//! The client checks the server's certificate chain; the responder's is zero-signed, which
//! only the `danger-skip-cert-chain-verify` feature accepts. This crate enables it and is
//! only ever a dev-dependency, so the shipped binary never has it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use whatsapp_rust::NodeBuilder;
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::transport::{DisconnectReason, Transport, TransportEvent, TransportFactory};
use whatsapp_rust::wacore::handshake::{NoiseCipher, NoiseHandshake};
use whatsapp_rust::wacore::libsignal::protocol::KeyPair;
use whatsapp_rust::wacore_binary::consts::{NOISE_PATTERN_XX, WA_CONN_HEADER};
use whatsapp_rust::wacore_binary::marshal::{marshal, unmarshal_ref};
use whatsapp_rust::wacore_binary::node::Node;
use whatsapp_rust::wacore_binary::util::unpack;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{anyhow, async_channel, async_trait, buffa::Message as _};

/// How WhatsApp ends a connection, on the test's command.
#[derive(Debug, Clone, Copy)]
pub enum Ending {
    /// `<stream:error code="…">`: 401 unlinks the device, 515 restarts the stream.
    StreamError(u16),
    /// `<stream:error><conflict type="replaced"/>`: another client took the session.
    Replaced,
    /// The socket drops without a word.
    Drop,
}

/// A pair-code request the responder received.
#[derive(Debug, Clone, PartialEq)]
pub struct PairCodeRequest {
    /// The `jid` the client asked to link (`<phone>@s.whatsapp.net`).
    pub jid: String,
}

#[derive(Default)]
struct Shared {
    /// One command channel per connection the client opened, in order.
    connections: Mutex<Vec<mpsc::UnboundedSender<Ending>>>,
    pair_requests: Mutex<Vec<PairCodeRequest>>,
}

/// The fake WhatsApp. Cloning shares it.
#[derive(Clone)]
pub struct FakeWhatsApp {
    shared: Arc<Shared>,
    opened: watch::Sender<usize>,
}

impl Default for FakeWhatsApp {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeWhatsApp {
    pub fn new() -> Self {
        FakeWhatsApp {
            shared: Arc::default(),
            opened: watch::channel(0).0,
        }
    }

    /// The transport factory to give the gateway.
    pub fn factory(&self) -> Arc<dyn TransportFactory> {
        Arc::new(self.clone())
    }

    /// How many connections the client opened so far.
    pub fn connections(&self) -> usize {
        *self.opened.borrow()
    }

    /// Ends connection `n` (1-based) the way `ending` says.
    pub fn end(&self, n: usize, ending: Ending) {
        let connections = self.shared.connections.lock().expect("lock");
        let tx = connections
            .get(n - 1)
            .unwrap_or_else(|| panic!("connection {n} was never opened"));
        tx.send(ending).expect("the connection is gone");
    }

    pub fn pair_requests(&self) -> Vec<PairCodeRequest> {
        self.shared.pair_requests.lock().expect("lock").clone()
    }

    /// The QR ref the responder hands out as the first of connection `n`.
    pub fn first_ref(n: usize) -> String {
        format!("REF-{n}-1")
    }
}

struct ClientSide {
    to_server: mpsc::UnboundedSender<Bytes>,
}

#[async_trait]
impl Transport for ClientSide {
    async fn send(&self, data: Bytes) -> Result<(), anyhow::Error> {
        self.to_server
            .send(data)
            .map_err(|_| anyhow::anyhow!("the fake WhatsApp closed the connection"))
    }

    async fn disconnect(&self) {}
}

#[async_trait]
impl TransportFactory for FakeWhatsApp {
    async fn create_transport(
        &self,
    ) -> Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>), anyhow::Error> {
        let (to_server, from_client) = mpsc::unbounded_channel();
        let (events, to_client) = async_channel::unbounded();
        let (commands, ending) = mpsc::unbounded_channel();
        let n = {
            let mut connections = self.shared.connections.lock().expect("lock");
            connections.push(commands);
            connections.len()
        };
        let shared = self.shared.clone();
        tokio::spawn(async move {
            if let Err(err) = respond(n, from_client, events, ending, shared).await {
                eprintln!("fake WhatsApp, connection {n}: {err}");
            }
        });
        self.opened.send_replace(n);
        Ok((Arc::new(ClientSide { to_server }), to_client))
    }
}

/// Splits the byte stream into WhatsApp's 3-byte-length-prefixed frames.
#[derive(Default)]
struct Frames(Vec<u8>);

impl Frames {
    fn feed(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    fn next(&mut self) -> Option<Vec<u8>> {
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
}

async fn next_frame(
    frames: &mut Frames,
    from_client: &mut mpsc::UnboundedReceiver<Bytes>,
) -> Result<Vec<u8>, String> {
    loop {
        if let Some(frame) = frames.next() {
            return Ok(frame);
        }
        let bytes = from_client
            .recv()
            .await
            .ok_or("the client closed the connection")?;
        frames.feed(&bytes);
    }
}

fn frame(payload: &[u8]) -> Result<Bytes, String> {
    whatsapp_rust::wacore::framing::encode_frame(payload, None)
        .map(Bytes::from)
        .map_err(|e| format!("framing: {e}"))
}

type Fallible<T> = Result<T, String>;

/// The server's half of one connection.
async fn respond(
    n: usize,
    mut from_client: mpsc::UnboundedReceiver<Bytes>,
    events: async_channel::Sender<TransportEvent>,
    mut ending: mpsc::UnboundedReceiver<Ending>,
    shared: Arc<Shared>,
) -> Fallible<()> {
    let send = |event| {
        let events = events.clone();
        async move {
            events
                .send(event)
                .await
                .map_err(|_| "the client went away".to_owned())
        }
    };
    send(TransportEvent::Connected).await?;
    let mut frames = Frames::default();
    // ClientHello, after the 4-byte connection header.
    let first = from_client.recv().await.ok_or("no client hello")?;
    frames.feed(first.strip_prefix(&WA_CONN_HEADER[..]).unwrap_or(&first));
    let hello =
        wa::HandshakeMessage::decode_from_slice(&next_frame(&mut frames, &mut from_client).await?)
            .map_err(|e| format!("client hello: {e}"))?;
    let client_ephemeral: [u8; 32] = hello
        .client_hello
        .into_option()
        .and_then(|h| h.ephemeral)
        .and_then(|e| e.try_into().ok())
        .ok_or("client hello without an ephemeral key")?;

    // ServerHello: e, ee, s, es, and the certificate chain.
    let (static_key, ephemeral) = {
        let mut rng = rand10::rng();
        (KeyPair::generate(&mut rng), KeyPair::generate(&mut rng))
    };
    let static_pub: [u8; 32] = key_bytes(&static_key)?;
    let ephemeral_pub: [u8; 32] = key_bytes(&ephemeral)?;
    let mut noise =
        NoiseHandshake::new(NOISE_PATTERN_XX, &WA_CONN_HEADER).map_err(|e| e.to_string())?;
    noise.authenticate(&client_ephemeral);
    noise.authenticate(&ephemeral_pub);
    noise
        .mix_shared_secret(ephemeral.private_key.serialize(), &client_ephemeral)
        .map_err(|e| e.to_string())?;
    let sealed_static = noise.encrypt(&static_pub).map_err(|e| e.to_string())?;
    noise
        .mix_shared_secret(static_key.private_key.serialize(), &client_ephemeral)
        .map_err(|e| e.to_string())?;
    let certificate = wacore_noise::test_util::build_cert_chain_bytes(&static_pub);
    let sealed_certificate = noise.encrypt(&certificate).map_err(|e| e.to_string())?;
    let server_hello = wa::HandshakeMessage {
        server_hello: whatsapp_rust::buffa::MessageField::some(
            wa::handshake_message::ServerHello {
                ephemeral: Some(ephemeral_pub.to_vec()),
                r#static: Some(sealed_static),
                payload: Some(sealed_certificate),
                ..Default::default()
            },
        ),
        ..Default::default()
    };
    send(TransportEvent::DataReceived(frame(
        &server_hello.encode_to_vec(),
    )?))
    .await?;

    // ClientFinish: the client's static key and its login payload.
    let finish =
        wa::HandshakeMessage::decode_from_slice(&next_frame(&mut frames, &mut from_client).await?)
            .map_err(|e| format!("client finish: {e}"))?
            .client_finish
            .into_option()
            .ok_or("no client finish")?;
    let client_static: [u8; 32] = noise
        .decrypt(
            &finish
                .r#static
                .ok_or("client finish without a static key")?,
        )
        .map_err(|e| e.to_string())?
        .try_into()
        .map_err(|_| "the client's static key is not 32 bytes")?;
    noise
        .mix_shared_secret(ephemeral.private_key.serialize(), &client_static)
        .map_err(|e| e.to_string())?;
    noise
        .decrypt(&finish.payload.ok_or("client finish without a payload")?)
        .map_err(|e| e.to_string())?;
    let (read_cipher, write_cipher): (NoiseCipher, NoiseCipher) =
        noise.finish().map_err(|e| e.to_string())?;
    let mut written = 0u32;
    let mut seal = |node: Node| -> Fallible<Bytes> {
        let plain = marshal(&node).map_err(|e| e.to_string())?;
        let sealed = write_cipher
            .encrypt_with_counter(written, &plain)
            .map_err(|e| e.to_string())?;
        written += 1;
        frame(&sealed)
    };

    // An unpaired device is asked to show QR codes.
    let refs = (1..=3).map(|i| {
        NodeBuilder::new("ref")
            .bytes(format!("REF-{n}-{i}").into_bytes())
            .build()
    });
    let pair_device = NodeBuilder::new("iq")
        .attr("from", "s.whatsapp.net")
        .attr("type", "set")
        .attr("id", format!("pair-{n}"))
        .attr("xmlns", "md")
        .children([NodeBuilder::new("pair-device").children(refs).build()])
        .build();
    send(TransportEvent::DataReceived(seal(pair_device)?)).await?;

    let mut read = 0u32;
    loop {
        while let Some(mut sealed) = frames.next() {
            read_cipher
                .decrypt_in_place_with_counter(read, &mut sealed)
                .map_err(|e| e.to_string())?;
            read += 1;
            let raw = unpack(&sealed).map_err(|e| e.to_string())?;
            let node = unmarshal_ref(&raw).map_err(|e| e.to_string())?;
            if node.tag != "iq" {
                continue;
            }
            let id = node
                .attrs()
                .optional_string("id")
                .map(|s| s.to_string())
                .unwrap_or_default();
            let kind = node.attrs().optional_string("type").map(|s| s.to_string());
            let xmlns = node.attrs().optional_string("xmlns").map(|s| s.to_string());
            let answer = match (kind.as_deref(), xmlns.as_deref()) {
                // Keepalive ping.
                (Some("get"), Some("w:p")) => Some(result(&id).build()),
                // Pair by phone code, stage one: hand back a pairing ref.
                (Some("set"), Some("md")) => {
                    match node.get_optional_child_by_tag(&["link_code_companion_reg"]) {
                        Some(reg) => {
                            let jid = reg
                                .attrs()
                                .optional_string("jid")
                                .map(|s| s.to_string())
                                .unwrap_or_default();
                            shared
                                .pair_requests
                                .lock()
                                .map_err(|_| "poisoned")?
                                .push(PairCodeRequest { jid });
                            Some(
                                result(&id)
                                    .children([NodeBuilder::new("link_code_companion_reg")
                                        .children([NodeBuilder::new("link_code_pairing_ref")
                                            .bytes(format!("PAIR-REF-{n}").into_bytes())
                                            .build()])
                                        .build()])
                                    .build(),
                            )
                        }
                        None => None,
                    }
                }
                _ => None,
            };
            if let Some(answer) = answer {
                send(TransportEvent::DataReceived(seal(answer)?)).await?;
            }
        }
        tokio::select! {
            bytes = from_client.recv() => match bytes {
                Some(bytes) => frames.feed(&bytes),
                None => return Ok(()),
            },
            command = ending.recv() => {
                let stanza = match command {
                    Some(Ending::StreamError(code)) => NodeBuilder::new("stream:error").attr("code", code.to_string()).build(),
                    Some(Ending::Replaced) => NodeBuilder::new("stream:error")
                        .children([NodeBuilder::new("conflict").attr("type", "replaced").build()])
                        .build(),
                    Some(Ending::Drop) => {
                        send(TransportEvent::Disconnected(DisconnectReason::ReadError(
                            "simulated network loss".into(),
                        )))
                        .await?;
                        return Ok(());
                    }
                    None => return Ok(()),
                };
                send(TransportEvent::DataReceived(seal(stanza)?)).await?;
                // WhatsApp closes the socket after a stream error.
                tokio::time::timeout(Duration::from_secs(5), async {
                    while from_client.recv().await.is_some() {}
                })
                .await
                .ok();
                return Ok(());
            }
        }
    }
}

fn result(id: &str) -> NodeBuilder {
    NodeBuilder::new("iq")
        .attr("from", "s.whatsapp.net")
        .attr("type", "result")
        .attr("id", id.to_owned())
}

fn key_bytes(key: &KeyPair) -> Fallible<[u8; 32]> {
    key.public_key
        .public_key_bytes()
        .try_into()
        .map_err(|_| "a public key is not 32 bytes".to_owned())
}
