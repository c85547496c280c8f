//! The chat actors over the in-memory storage and a scripted Graph API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};

use super::*;
use crate::domain::MessageStatus;
use crate::domain::waba::{
    GraphCredentials, WabaContent, WabaMessage, window_expires_at, window_open,
};
use crate::store::WabaStore;
use crate::testing::MemoryStorage;

/// Records every send and answers with numbered wamids.
#[derive(Default)]
struct FakeGraph {
    sent: Mutex<Vec<(String, WabaContent)>>,
}

#[async_trait]
impl GraphApi for FakeGraph {
    async fn send_message(
        &self,
        _credentials: &GraphCredentials,
        to: &str,
        content: &WabaContent,
    ) -> Result<String, GraphError> {
        let mut sent = self.sent.lock().expect("lock");
        sent.push((to.to_owned(), content.clone()));
        Ok(format!("wamid.out{}", sent.len()))
    }

    async fn mark_read(
        &self,
        _credentials: &GraphCredentials,
        _whatsapp_message_id: &str,
    ) -> Result<(), GraphError> {
        Ok(())
    }
}

fn credentials() -> GraphCredentials {
    GraphCredentials {
        phone_number_id: "pn1".into(),
        access_token: "token".into(),
    }
}

fn inbound(wamid: &str, at: chrono::DateTime<Utc>) -> WabaMessage {
    WabaMessage {
        id: 0,
        chat_id: 0,
        owner_id: String::new(),
        whatsapp_message_id: wamid.into(),
        from_me: false,
        message_type: "text".into(),
        content: Some("hello".into()),
        media_url: None,
        media: None,
        error: None,
        status: MessageStatus::Received,
        is_read_by_operator: false,
        sender_user_id: None,
        timestamp: at,
        status_updated_at: None,
    }
}

async fn desk() -> (Arc<MemoryStorage>, Arc<FakeGraph>, OperatorDeskHandle) {
    desk_idle_after(Duration::from_secs(300)).await
}

async fn desk_idle_after(
    idle_after: Duration,
) -> (Arc<MemoryStorage>, Arc<FakeGraph>, OperatorDeskHandle) {
    let store = Arc::new(MemoryStorage::default());
    let graph = Arc::new(FakeGraph::default());
    let desk = OperatorDeskHandle::new(
        Duration::from_secs(5),
        Duration::from_secs(5),
        idle_after,
        100,
    );
    spawn(&desk, desk.args(store.clone(), graph.clone()), None)
        .await
        .expect("desk");
    (store, graph, desk)
}

#[test]
fn the_window_lasts_24_hours_from_the_customers_last_message() {
    let t = Utc
        .with_ymd_and_hms(2025, 1, 1, 12, 0, 0)
        .single()
        .expect("t");
    assert!(!window_open(None, t));
    assert!(window_open(Some(t), t + chrono::Duration::hours(23)));
    assert!(!window_open(Some(t), t + chrono::Duration::hours(24)));
    assert_eq!(
        window_expires_at(Some(t)),
        Some(t + chrono::Duration::hours(24))
    );
}

#[tokio::test]
async fn sends_only_inside_the_window_unless_template() {
    let (store, graph, desk) = desk().await;
    let chat = store
        .waba_chat_for_customer("owner", "79001234567", Some("Ann"), Utc::now())
        .await
        .expect("chat");
    let text = WabaContent::Text { body: "hi".into() };

    // The customer never wrote: refused, and Meta never called.
    let err = desk
        .send(&chat, credentials(), text.clone(), Some("hi".into()), None)
        .await
        .expect_err("no window");
    assert_eq!(err, SendError::OutsideWindow);
    assert!(graph.sent.lock().expect("lock").is_empty());

    // An old message does not open it either.
    let old = Utc::now() - chrono::Duration::hours(30);
    assert!(
        desk.inbound(&chat, inbound("wamid.in1", old))
            .await
            .expect("inbound")
            .is_some()
    );
    let err = desk
        .send(&chat, credentials(), text.clone(), None, None)
        .await
        .expect_err("window closed");
    assert_eq!(err, SendError::OutsideWindow);

    // Templates are allowed outside it.
    let template = WabaContent::Template {
        name: "hello_world".into(),
        language: "en_US".into(),
        components: None,
    };
    let sent = desk
        .send(&chat, credentials(), template, None, Some("u1".into()))
        .await
        .expect("template");
    assert_eq!(sent.message_type, "template");
    assert_eq!(sent.status, MessageStatus::Sent);

    // A fresh message opens it; a retried webhook changes nothing.
    let fresh = inbound("wamid.in2", Utc::now());
    assert!(
        desk.inbound(&chat, fresh.clone())
            .await
            .expect("inbound")
            .is_some()
    );
    assert_eq!(desk.inbound(&chat, fresh).await.expect("again"), None);
    let sent = desk
        .send(&chat, credentials(), text, Some("hi".into()), None)
        .await
        .expect("inside the window");
    assert_eq!(sent.whatsapp_message_id, "wamid.out2");
    assert_eq!(graph.sent.lock().expect("lock")[1].0, "79001234567");
    desk.shutdown().await;
}

#[tokio::test]
async fn statuses_move_forward_only_and_reach_the_live_feed() {
    let (store, _graph, desk) = desk().await;
    let mut feed = desk.subscribe(None).live;
    let chat = store
        .waba_chat_for_customer("owner", "1555", None, Utc::now())
        .await
        .expect("chat");
    desk.inbound(&chat, inbound("wamid.in", Utc::now()))
        .await
        .expect("inbound");
    let sent = desk
        .send(
            &chat,
            credentials(),
            WabaContent::Text { body: "x".into() },
            None,
            None,
        )
        .await
        .expect("send");
    let now = Utc::now();
    let wamid = &sent.whatsapp_message_id;
    let read = desk
        .status(&chat, wamid, MessageStatus::Read, now, None)
        .await
        .expect("read");
    assert_eq!(read.map(|m| m.status), Some(MessageStatus::Read));
    let late = desk
        .status(&chat, wamid, MessageStatus::Delivered, now, None)
        .await
        .expect("late delivered");
    assert_eq!(late, None);
    // The inbound message, the send as `pending`, then `sent`, then `read`.
    let events: Vec<WabaEvent> = (0..4)
        .map(|_| feed.try_recv().expect("event").event)
        .collect();
    let kinds: Vec<&str> = events.iter().map(WabaEvent::kind).collect();
    assert_eq!(kinds, ["message", "message", "status", "status"]);
    let statuses: Vec<MessageStatus> = events[1..]
        .iter()
        .map(|e| match e {
            WabaEvent::Message(m) | WabaEvent::Status(m) => m.status,
            _ => MessageStatus::Received,
        })
        .collect();
    assert_eq!(
        statuses,
        [
            MessageStatus::Pending,
            MessageStatus::Sent,
            MessageStatus::Read
        ]
    );
    assert!(
        feed.try_recv().is_err(),
        "the ignored status is not an event"
    );
    desk.shutdown().await;
}

/// Waits (on the test's clock) until `desk` runs `n` chat actors; false after a minute.
async fn chat_actors_reach(desk: &OperatorDeskHandle, n: usize) -> bool {
    for _ in 0..600 {
        if desk.chat_actors() == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

// The clock is paused: it moves only when every task waits, so no actor idles while the
// chats are being touched, and the idle time passes at once afterwards.
#[tokio::test(start_paused = true)]
async fn idle_chat_actors_stop_and_start_again_on_demand() {
    const CHATS: usize = 10_000;
    let idle = Duration::from_secs(60);
    let (store, _graph, desk) = desk_idle_after(idle).await;
    let mut chats = Vec::with_capacity(CHATS);
    for n in 0..CHATS {
        let chat = store
            .waba_chat_for_customer("owner", &format!("1555{n:06}"), None, Utc::now())
            .await
            .expect("chat");
        // A status for a message the chat does not have: it changes nothing, but the
        // chat's actor has to start to say so.
        let changed = desk
            .status(
                &chat,
                "wamid.unknown",
                MessageStatus::Read,
                Utc::now(),
                None,
            )
            .await
            .expect("status");
        assert_eq!(changed, None);
        chats.push(chat);
    }
    assert_eq!(desk.chat_actors(), CHATS, "one actor per chat touched");

    // A chat touched again after half the idle time outlives the others by that long.
    tokio::time::sleep(idle / 2).await;
    desk.inbound(&chats[0], inbound("wamid.keep", Utc::now()))
        .await
        .expect("inbound")
        .expect("stored");
    assert!(
        chat_actors_reach(&desk, 1).await,
        "the idle actors stopped, the busy one runs: {}",
        desk.chat_actors()
    );
    assert!(
        chat_actors_reach(&desk, 0).await,
        "it stops too once idle: {}",
        desk.chat_actors()
    );

    // A later message reaches a new actor, which starts from storage: the window the
    // first message opened is still open.
    let later = desk
        .inbound(&chats[1], inbound("wamid.later", Utc::now()))
        .await
        .expect("a message to a retired chat")
        .expect("stored");
    assert_eq!(later.chat_id, chats[1].id);
    assert_eq!(desk.chat_actors(), 1);
    let sent = desk
        .send(
            &chats[0],
            credentials(),
            WabaContent::Text { body: "hi".into() },
            None,
            None,
        )
        .await
        .expect("the window survives the actor");
    assert_eq!(sent.chat_id, chats[0].id);
    desk.shutdown().await;
    assert_eq!(desk.chat_actors(), 0);
}
