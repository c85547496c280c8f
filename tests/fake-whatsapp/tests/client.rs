//! The unmodified whatsapp-rust client against the fake: pairing, logging in again,
//! messages and receipts both ways, number checks, logout and media. Every test ends by
//! checking that the client asked nothing the fake does not know and that nothing went
//! wrong on the fake's side, so a slow test never hides behind a library timeout.

use std::sync::Arc;
use std::time::Duration;

use fake_whatsapp::{FakeWhatsApp, Pattern, UnixTransports};
use tokio::sync::mpsc;
use whatsapp_rust::bot::{Bot, BotHandle, EventDelivery};
use whatsapp_rust::http::{HttpClient, HttpRequest, HttpResponse};
use whatsapp_rust::store::traits::Backend;
use whatsapp_rust::transport::TransportFactory;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::types::presence::ReceiptType;
use whatsapp_rust::wacore::store::InMemoryBackend;
use whatsapp_rust::wacore::xml::DisplayableNode;
use whatsapp_rust::{Client, Jid, TokioRuntime, anyhow, async_trait};

/// The account the tests link their device to.
const ACCOUNT: &str = "79001234567";
/// Long enough for a slow machine, short enough that a library timeout (20 s and more)
/// fails the test instead of passing slowly.
const WITHIN: Duration = Duration::from_secs(8);

/// One running client on its own store.
struct Device {
    backend: Arc<dyn Backend>,
    client: Arc<Client>,
    handle: Option<BotHandle>,
    events: mpsc::UnboundedReceiver<Arc<Event>>,
}

async fn start(fake: &FakeWhatsApp, backend: Arc<dyn Backend>) -> Device {
    start_over(fake, backend, fake.clone()).await
}

/// [`start`], the client's connections made by `transports`.
async fn start_over(
    fake: &FakeWhatsApp,
    backend: Arc<dyn Backend>,
    transports: impl TransportFactory + 'static,
) -> Device {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (tx, events) = mpsc::unbounded_channel();
    let bot = Bot::builder()
        .with_backend_arc(backend.clone())
        .with_transport_factory(transports)
        .with_http_client(Http(fake.http_client(Arc::new(Reqwest::default()))))
        .with_runtime(TokioRuntime)
        .with_version((2, 3000, 1_027_934_701))
        .with_event_delivery(EventDelivery::Ordered { capacity: 256 })
        .on_event(move |event, _client| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
            }
        })
        .build()
        .await
        .expect("the bot");
    let client = bot.client();
    Device {
        backend,
        client,
        handle: Some(bot.spawn()),
        events,
    }
}

impl Device {
    /// Waits for the first event `pick` accepts; earlier ones are dropped.
    async fn wait<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WITHIN;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} within {WITHIN:?}"))
                .expect("the client stopped");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    }

    async fn stop(mut self) -> Arc<dyn Backend> {
        self.client.disconnect().await;
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(WITHIN, handle)
                .await
                .expect("the client stops");
        }
        self.backend
    }
}

/// A device linked to [`ACCOUNT`] by QR code, connected.
async fn linked(fake: &FakeWhatsApp) -> Device {
    linked_to(fake, ACCOUNT).await
}

/// A device linked to account `phone` by QR code, connected.
async fn linked_to(fake: &FakeWhatsApp, phone: &str) -> Device {
    let mut device = start(fake, Arc::new(InMemoryBackend::new())).await;
    let qr = device
        .wait("a QR code", |e| match e {
            Event::PairingQrCode(qr) => Some(qr.code.clone()),
            _ => None,
        })
        .await;
    fake.scan(&qr, phone).await.expect("the phone scans");
    device
        .wait("Connected", |e| {
            matches!(e, Event::Connected(_)).then_some(())
        })
        .await;
    device
}

/// The first message in `device`'s events with id `id`: its text and sender.
async fn message_with_id(device: &mut Device, id: &str) -> (Option<String>, Jid) {
    device
        .wait(&format!("message {id}"), |e| match e {
            Event::Messages(batch) => batch.messages.iter().find_map(|m| {
                (m.info.id == id).then(|| {
                    let text = m.message.conversation.clone().or_else(|| {
                        m.message
                            .extended_text_message
                            .as_option()
                            .and_then(|t| t.text.clone())
                    });
                    (text, m.info.source.sender.clone())
                })
            }),
            _ => None,
        })
        .await
}

/// The fake saw nothing it does not know, and nothing went wrong on its side.
fn clean(fake: &FakeWhatsApp) {
    let unknown: Vec<String> = fake
        .unknown_iq_stanzas()
        .iter()
        .map(|iq| DisplayableNode(iq).to_string())
        .collect();
    assert_eq!(fake.unknown_iqs(), 0, "unknown IQs: {unknown:#?}");
    assert!(fake.problems().is_empty(), "{:#?}", fake.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_scan_links_the_device_and_it_connects() {
    let fake = FakeWhatsApp::new();
    let mut device = start(&fake, Arc::new(InMemoryBackend::new())).await;
    let qr = device
        .wait("a QR code", |e| match e {
            Event::PairingQrCode(qr) => Some(qr.code.clone()),
            _ => None,
        })
        .await;
    assert!(
        qr.starts_with(&format!("{},", FakeWhatsApp::first_ref(1))),
        "{qr}"
    );
    fake.scan(&qr, ACCOUNT).await.expect("the phone scans");
    let paired = device
        .wait("PairSuccess", |e| match e {
            Event::PairSuccess(p) => Some(p.id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(paired.user, ACCOUNT);
    assert!(paired.device >= 1, "{paired}");
    device
        .wait("Connected", |e| {
            matches!(e, Event::Connected(_)).then_some(())
        })
        .await;
    assert!(fake.is_linked(ACCOUNT, paired.device));
    assert_eq!(
        device.client.pn().map(|j| j.user.to_string()).as_deref(),
        Some(ACCOUNT)
    );
    // The pairing connection, then the login after the stream restart, and no other.
    assert_eq!(fake.handshakes(), [Some(Pattern::Xx), Some(Pattern::Xx)]);
    assert!(fake.online(ACCOUNT));
    // What the client does in the background after `Connected` is known to the fake too.
    for (xmlns, child) in [
        ("encrypt", "registration"),
        ("encrypt", "digest"),
        ("abt", "props"),
        ("privacy", "privacy"),
        ("usync", "usync"),
    ] {
        fake.wait_until(WITHIN, &format!("<iq xmlns={xmlns}><{child}>"), |f| {
            f.stanzas()
                .iter()
                .any(|s| s.is_iq(xmlns, child))
                .then_some(())
        })
        .await
        .expect("the post-login queries");
    }
    fake.wait_until(WITHIN, "the sync of the regular collections", |f| {
        f.stanzas()
            .iter()
            .filter(|s| s.is_iq("w:sync:app:state", "sync"))
            .nth(1)
            .map(|_| ())
    })
    .await
    .expect("the regular collections");
    clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_device_logs_in_again_over_ik_without_a_qr() {
    let fake = FakeWhatsApp::new();
    let device = linked(&fake).await;
    let before = fake.connections();
    let backend = device.stop().await;

    let mut again = start(&fake, backend).await;
    again
        .wait("Connected", |e| match e {
            Event::PairingQrCode(_) => panic!("a linked device shows no QR code"),
            Event::Connected(_) => Some(()),
            _ => None,
        })
        .await;
    assert_eq!(fake.connections(), before + 1);
    assert_eq!(fake.handshakes().last(), Some(&Some(Pattern::Ik)));
    clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_unix_socket_a_device_links_and_logs_in_again_over_ik() {
    let fake = FakeWhatsApp::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let path =
        std::env::temp_dir().join(format!("fake-whatsapp-{}-{nanos}.sock", std::process::id()));
    fake.serve_unix(&path).expect("the socket");
    let transports = UnixTransports::new(&path);

    let mut device = start_over(&fake, Arc::new(InMemoryBackend::new()), transports.clone()).await;
    let qr = device
        .wait("a QR code", |e| match e {
            Event::PairingQrCode(qr) => Some(qr.code.clone()),
            _ => None,
        })
        .await;
    fake.scan(&qr, ACCOUNT).await.expect("the phone scans");
    device
        .wait("Connected", |e| {
            matches!(e, Event::Connected(_)).then_some(())
        })
        .await;
    let backend = device.stop().await;

    // The IK answer and the first stanza leave the fake back to back: the client must
    // still get them as two messages.
    let mut again = start_over(&fake, backend, transports).await;
    again
        .wait("Connected", |e| match e {
            Event::PairingQrCode(_) => panic!("a linked device shows no QR code"),
            Event::Connected(_) => Some(()),
            _ => None,
        })
        .await;
    assert_eq!(
        fake.handshakes(),
        [Some(Pattern::Xx), Some(Pattern::Xx), Some(Pattern::Ik)]
    );
    again.stop().await;
    let _ = std::fs::remove_file(&path);
    clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_reaches_the_peer_with_its_id() {
    let fake = FakeWhatsApp::new();
    let device = linked(&fake).await;
    let bob = fake.user("79005550001", "Bob").await.expect("Bob");

    let sent = device
        .client
        .send_text(bob.jid(), "Hello, Bob".to_owned())
        .await
        .expect("sent");
    let got = bob.next_message(WITHIN).await.expect("Bob gets it");
    assert_eq!(got.text.as_deref(), Some("Hello, Bob"));
    assert_eq!(got.id, sent.message_id.to_string());
    assert_eq!(got.from.user, ACCOUNT);

    // A second message rides the same session.
    let sent = device
        .client
        .send_text(bob.jid(), "Still there?".to_owned())
        .await
        .expect("sent");
    let got = bob.next_message(WITHIN).await.expect("Bob gets it");
    assert_eq!(got.text.as_deref(), Some("Still there?"));
    assert_eq!(got.id, sent.message_id.to_string());
    // Until Bob answers, the client keeps announcing the session (Signal's rule).
    assert_eq!(got.enc_type, "pkmsg");
    clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_message_reaches_the_client() {
    let fake = FakeWhatsApp::new();
    let mut device = linked(&fake).await;
    let bob = fake.user("79005550002", "Bob").await.expect("Bob");

    let id = bob.send_text(ACCOUNT, "Hi from Bob").await.expect("sent");
    let (text, sender) = device
        .wait("Bob's message", |e| match e {
            Event::Messages(batch) => batch.messages.iter().find_map(|m| {
                (m.info.id == id)
                    .then(|| (m.message.conversation.clone(), m.info.source.sender.clone()))
            }),
            _ => None,
        })
        .await;
    assert_eq!(text.as_deref(), Some("Hi from Bob"));
    assert_eq!(sender.user, "79005550002");

    // And back the other way on the same session.
    device
        .client
        .send_text(bob.jid(), "Hi Bob".to_owned())
        .await
        .expect("sent");
    let got = bob.next_message(WITHIN).await.expect("Bob gets it");
    assert_eq!(got.text.as_deref(), Some("Hi Bob"));
    assert_eq!(got.enc_type, "msg");
    clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_linked_accounts_talk_to_each_other() {
    let fake = FakeWhatsApp::new();
    let mut alice = linked_to(&fake, ACCOUNT).await;
    let mut carol = linked_to(&fake, "79007654321").await;
    let carol_jid = carol.client.pn().expect("linked").to_non_ad();
    let alice_jid = alice.client.pn().expect("linked").to_non_ad();

    let sent = alice
        .client
        .send_text(carol_jid.clone(), "Hi Carol".to_owned())
        .await
        .expect("sent");
    let (text, sender) = message_with_id(&mut carol, &sent.message_id.to_string()).await;
    assert_eq!(text.as_deref(), Some("Hi Carol"));
    assert_eq!(sender.user, ACCOUNT);
    // Her phone got its copy too.
    let phone = fake.phone("79007654321").await.expect("her phone");
    let copy = phone.next_message(WITHIN).await.expect("the phone's copy");
    assert_eq!(copy.id, sent.message_id.to_string());

    let sent = carol
        .client
        .send_text(alice_jid, "Hi Alice".to_owned())
        .await
        .expect("sent");
    let (text, sender) = message_with_id(&mut alice, &sent.message_id.to_string()).await;
    assert_eq!(text.as_deref(), Some("Hi Alice"));
    assert_eq!(sender.user, "79007654321");
    clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_travel_both_ways() {
    let fake = FakeWhatsApp::new();
    let mut device = linked(&fake).await;
    let bob = fake.user("79005550003", "Bob").await.expect("Bob");

    // The client's message: Bob's phone confirms delivery, then Bob reads it.
    let sent = device
        .client
        .send_text(bob.jid(), "Read me".to_owned())
        .await
        .expect("sent");
    let id = sent.message_id.to_string();
    bob.next_message(WITHIN).await.expect("Bob gets it");
    let receipt_for = |kind: ReceiptType, id: String| {
        move |e: &Event| match e {
            Event::Receipt(r) if r.r#type == kind && r.message_ids.contains(&id) => Some(()),
            _ => None,
        }
    };
    device
        .wait(
            "a delivery receipt",
            receipt_for(ReceiptType::Delivered, id.clone()),
        )
        .await;
    bob.send_receipt(ACCOUNT, &[&id], true).await.expect("read");
    device
        .wait("a read receipt", receipt_for(ReceiptType::Read, id.clone()))
        .await;

    // Bob's message: the client confirms delivery by itself, and reading it on request.
    let id = bob.send_text(ACCOUNT, "Did you see?").await.expect("sent");
    let delivered = bob.next_receipt(WITHIN).await.expect("a receipt");
    assert_eq!(delivered.ids, std::slice::from_ref(&id));
    assert!(delivered.is_delivery(), "{delivered:?}");
    device
        .client
        .mark_as_read(&bob.jid(), None, &[id.as_str()])
        .await
        .expect("marked read");
    let read = bob.next_receipt(WITHIN).await.expect("a receipt");
    assert_eq!(read.ids, [id]);
    assert_eq!(read.kind.as_deref(), Some("read"));
    clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_on_whatsapp_knows_the_users() {
    let fake = FakeWhatsApp::new();
    let device = linked(&fake).await;
    let bob = fake.user("79005550004", "Bob").await.expect("Bob");
    let nobody = Jid::pn("79990000000");

    let found = device
        .client
        .contacts()
        .is_on_whatsapp(&[bob.jid(), nobody.clone()])
        .await
        .expect("an answer");
    let registered = |jid: &Jid| {
        found
            .iter()
            .find(|r| r.jid.user == jid.user)
            .map(|r| r.is_registered)
    };
    assert_eq!(registered(&bob.jid()), Some(true), "{found:?}");
    assert_eq!(registered(&nobody), Some(false), "{found:?}");
    clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_unlinks_the_device_for_good() {
    let fake = FakeWhatsApp::new();
    let device = linked(&fake).await;
    let own = device.client.pn().expect("linked");
    device.client.logout().await;
    fake.wait_until(WITHIN, "remove-companion-device", |f| {
        f.removed_devices().contains(&own).then_some(())
    })
    .await
    .expect("the fake saw the logout");
    let backend = device.stop().await;

    // The same keys are refused from now on.
    let mut again = start(&fake, backend).await;
    again
        .wait("LoggedOut", |e| {
            matches!(e, Event::LoggedOut(_)).then_some(())
        })
        .await;
    clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_round_trips_both_ways() {
    let fake = FakeWhatsApp::new();
    let mut device = linked(&fake).await;
    let bob = fake.user("79005550005", "Bob").await.expect("Bob");
    let picture: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();

    // Client to Bob: upload, send, Bob downloads and decrypts.
    let upload = device
        .client
        .upload(
            picture.clone(),
            whatsapp_rust::wacore::download::MediaType::Image,
            Default::default(),
        )
        .await
        .expect("uploaded");
    let message = whatsapp_rust::media::image_message(
        upload,
        whatsapp_rust::media::ImageOptions {
            caption: Some("A picture".into()),
            mimetype: Some("image/png".into()),
            ..Default::default()
        },
    );
    device
        .client
        .send_message(bob.jid(), message)
        .await
        .expect("sent");
    let got = bob.next_message(WITHIN).await.expect("Bob gets it");
    assert_eq!(got.text.as_deref(), Some("A picture"));
    assert_eq!(bob.download(&got.message).expect("downloaded"), picture);

    // Bob to the client: the client downloads through its HTTP client.
    let reply: Vec<u8> = picture.iter().rev().copied().collect();
    let id = bob
        .send_image(ACCOUNT, &reply, "image/jpeg", Some("Back to you"))
        .await
        .expect("sent");
    let image = device
        .wait("Bob's image", |e| match e {
            Event::Messages(batch) => batch.messages.iter().find_map(|m| {
                (m.info.id == id)
                    .then(|| m.message.image_message.as_option().cloned())
                    .flatten()
            }),
            _ => None,
        })
        .await;
    assert_eq!(image.caption.as_deref(), Some("Back to you"));
    let bytes = device.client.download(&image).await.expect("downloaded");
    assert_eq!(bytes, reply);
    clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_iq_is_answered_and_counted() {
    let fake = FakeWhatsApp::new();
    let device = linked(&fake).await;
    assert_eq!(fake.unknown_iqs(), 0);
    let answer = device
        .client
        .send_iq(whatsapp_rust::request::InfoQuery::get(
            "fake:nothing",
            Jid::new("", whatsapp_rust::Server::Pn),
            Some(whatsapp_rust::wacore_binary::node::NodeContent::Nodes(
                vec![whatsapp_rust::NodeBuilder::new("nothing").build()],
            )),
        ))
        .await;
    let err = answer.expect_err("the fake does not know it");
    assert!(err.to_string().contains("501"), "{err}");
    assert_eq!(fake.unknown_iqs(), 1);
    assert!(fake.problems().is_empty(), "{:#?}", fake.problems());
}

/// Hands the bot builder a shared HTTP client.
struct Http(Arc<dyn HttpClient>);

#[async_trait]
impl HttpClient for Http {
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        self.0.execute(request).await
    }
}

/// A plain async HTTP client for the tests' devices.
#[derive(Default)]
struct Reqwest(reqwest::Client);

#[async_trait]
impl HttpClient for Reqwest {
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())?;
        let mut builder = self.0.request(method, &request.url);
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
