//! The server half of the Noise handshakes whatsapp-rust speaks, on wacore's own Noise
//! state machine: XX for a device the server does not know yet (and for every first
//! connection of a device), IK for a registered device that cached the server's static key,
//! and XXfallback when an IK attempt names a static key this server does not hold.

use tokio::sync::mpsc;
use whatsapp_rust::buffa::Message as _;
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::wacore::handshake::{NoiseCipher, NoiseHandshake};
use whatsapp_rust::wacore::libsignal::protocol::KeyPair;
use whatsapp_rust::wacore_binary::consts::{
    NOISE_PATTERN_IK, NOISE_PATTERN_XX, NOISE_PATTERN_XXFALLBACK, WA_CONN_HEADER,
};
use whatsapp_rust::waproto::whatsapp as wa;

use crate::wire::{Fallible, Frames, ToClient, frame};

/// The server's long-lived identity: one static key for every connection, so a device
/// that cached it can come back over IK.
pub(crate) struct ServerKeys {
    static_key: KeyPair,
    static_pub: [u8; 32],
    certificate: Vec<u8>,
}

impl ServerKeys {
    pub(crate) fn generate() -> Fallible<Self> {
        let static_key = KeyPair::generate(&mut rand10::rng());
        let static_pub = key_bytes(&static_key)?;
        let certificate = wacore_noise::test_util::build_cert_chain_bytes(&static_pub);
        Ok(ServerKeys {
            static_key,
            static_pub,
            certificate,
        })
    }
}

/// Which handshake the client chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Xx,
    Ik,
    XxFallback,
}

/// A finished handshake: the transport ciphers and what the client said about itself.
pub(crate) struct Established {
    pub(crate) read: NoiseCipher,
    pub(crate) write: NoiseCipher,
    pub(crate) client_static: [u8; 32],
    pub(crate) payload: wa::ClientPayload,
    pub(crate) pattern: Pattern,
}

/// Runs the responder side until both ends hold transport keys.
pub(crate) async fn respond(
    keys: &ServerKeys,
    frames: &mut Frames,
    from_client: &mut mpsc::UnboundedReceiver<Bytes>,
    send: &ToClient,
) -> Fallible<Established> {
    // ClientHello, after the 4-byte connection header.
    let first = from_client.recv().await.ok_or("no client hello")?;
    frames.feed(first.strip_prefix(&WA_CONN_HEADER[..]).unwrap_or(&first));
    let hello = wa::HandshakeMessage::decode_from_slice(&frames.next_from(from_client).await?)
        .map_err(|e| format!("client hello: {e}"))?
        .client_hello
        .into_option()
        .ok_or("no client hello")?;
    let client_ephemeral: [u8; 32] = hello
        .ephemeral
        .and_then(|e| e.try_into().ok())
        .ok_or("client hello without an ephemeral key")?;

    if let (Some(sealed_static), Some(sealed_payload)) = (hello.r#static, hello.payload) {
        match ik(keys, &client_ephemeral, &sealed_static, &sealed_payload)? {
            Some((noise, client_static, payload)) => {
                let server_hello = server_hello(&noise.1, None, noise.2);
                send.data(frame(&server_hello.encode_to_vec())?).await?;
                let (read, write) = noise.0.finish().map_err(|e| e.to_string())?;
                return Ok(Established {
                    read,
                    write,
                    client_static,
                    payload,
                    pattern: Pattern::Ik,
                });
            }
            // The client cached another server's key: WhatsApp answers with XX shapes.
            None => {
                return xx(
                    keys,
                    NOISE_PATTERN_XXFALLBACK,
                    Pattern::XxFallback,
                    client_ephemeral,
                    frames,
                    from_client,
                    send,
                )
                .await;
            }
        }
    }
    xx(
        keys,
        NOISE_PATTERN_XX,
        Pattern::Xx,
        client_ephemeral,
        frames,
        from_client,
        send,
    )
    .await
}

type IkAccepted = (
    (NoiseHandshake, [u8; 32], Vec<u8>),
    [u8; 32],
    wa::ClientPayload,
);

/// IK: `-> e, es, s, ss` (with the login payload) then `<- e, ee, se` (with the
/// certificate). `None` when the client's key material does not decrypt, i.e. it used a
/// static key that is not this server's.
fn ik(
    keys: &ServerKeys,
    client_ephemeral: &[u8; 32],
    sealed_static: &[u8],
    sealed_payload: &[u8],
) -> Fallible<Option<IkAccepted>> {
    let mut noise =
        NoiseHandshake::new(NOISE_PATTERN_IK, &WA_CONN_HEADER).map_err(|e| e.to_string())?;
    noise.authenticate(&keys.static_pub);
    noise.authenticate(client_ephemeral);
    noise
        .mix_shared_secret(keys.static_key.private_key.serialize(), client_ephemeral)
        .map_err(|e| e.to_string())?;
    let Ok(client_static) = noise.decrypt(sealed_static) else {
        return Ok(None);
    };
    let client_static: [u8; 32] = client_static
        .try_into()
        .map_err(|_| "the client's static key is not 32 bytes")?;
    noise
        .mix_shared_secret(keys.static_key.private_key.serialize(), &client_static)
        .map_err(|e| e.to_string())?;
    let Ok(payload) = noise.decrypt(sealed_payload) else {
        return Ok(None);
    };
    let payload = wa::ClientPayload::decode_from_slice(&payload)
        .map_err(|e| format!("client payload: {e}"))?;

    let ephemeral = KeyPair::generate(&mut rand10::rng());
    let ephemeral_pub = key_bytes(&ephemeral)?;
    noise.authenticate(&ephemeral_pub);
    noise
        .mix_shared_secret(ephemeral.private_key.serialize(), client_ephemeral)
        .map_err(|e| e.to_string())?;
    noise
        .mix_shared_secret(ephemeral.private_key.serialize(), &client_static)
        .map_err(|e| e.to_string())?;
    let sealed_certificate = noise
        .encrypt(&keys.certificate)
        .map_err(|e| e.to_string())?;
    Ok(Some((
        (noise, ephemeral_pub, sealed_certificate),
        client_static,
        payload,
    )))
}

/// XX (or XXfallback): `-> e`, `<- e, ee, s, es` (with the certificate), `-> s, se` (with
/// the client's payload).
async fn xx(
    keys: &ServerKeys,
    protocol: &str,
    pattern: Pattern,
    client_ephemeral: [u8; 32],
    frames: &mut Frames,
    from_client: &mut mpsc::UnboundedReceiver<Bytes>,
    send: &ToClient,
) -> Fallible<Established> {
    let ephemeral = KeyPair::generate(&mut rand10::rng());
    let ephemeral_pub = key_bytes(&ephemeral)?;
    let mut noise = NoiseHandshake::new(protocol, &WA_CONN_HEADER).map_err(|e| e.to_string())?;
    noise.authenticate(&client_ephemeral);
    noise.authenticate(&ephemeral_pub);
    noise
        .mix_shared_secret(ephemeral.private_key.serialize(), &client_ephemeral)
        .map_err(|e| e.to_string())?;
    let sealed_static = noise.encrypt(&keys.static_pub).map_err(|e| e.to_string())?;
    noise
        .mix_shared_secret(keys.static_key.private_key.serialize(), &client_ephemeral)
        .map_err(|e| e.to_string())?;
    let sealed_certificate = noise
        .encrypt(&keys.certificate)
        .map_err(|e| e.to_string())?;
    let hello = server_hello(&ephemeral_pub, Some(sealed_static), sealed_certificate);
    send.data(frame(&hello.encode_to_vec())?).await?;

    // ClientFinish: the client's static key and its payload.
    let finish = wa::HandshakeMessage::decode_from_slice(&frames.next_from(from_client).await?)
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
    let payload = noise
        .decrypt(&finish.payload.ok_or("client finish without a payload")?)
        .map_err(|e| e.to_string())?;
    let payload = wa::ClientPayload::decode_from_slice(&payload)
        .map_err(|e| format!("client payload: {e}"))?;
    let (read, write) = noise.finish().map_err(|e| e.to_string())?;
    Ok(Established {
        read,
        write,
        client_static,
        payload,
        pattern,
    })
}

fn server_hello(
    ephemeral: &[u8; 32],
    sealed_static: Option<Vec<u8>>,
    sealed_certificate: Vec<u8>,
) -> wa::HandshakeMessage {
    wa::HandshakeMessage {
        server_hello: whatsapp_rust::buffa::MessageField::some(
            wa::handshake_message::ServerHello {
                ephemeral: Some(ephemeral.to_vec()),
                r#static: sealed_static,
                payload: Some(sealed_certificate),
                ..Default::default()
            },
        ),
        ..Default::default()
    }
}

pub(crate) fn key_bytes(key: &KeyPair) -> Fallible<[u8; 32]> {
    key.public_key
        .public_key_bytes()
        .try_into()
        .map_err(|_| "a public key is not 32 bytes".to_owned())
}
