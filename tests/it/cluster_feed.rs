//! The event feed's fallback, polling storage when the change stream is down: the events
//! stored for an instance somebody listens to reach its subscribers, each once, an
//! instance nobody listens to costs nothing, and a deleted instance's streams end.

use std::sync::Arc;

use wagate::storage::mongo::MongoStorage;
use wagate::storage::mongo::feed::Feed;
use wagate_actors::domain::event::Connected;
use wagate_actors::domain::{EngineKind, Event, Instance, InstanceEvent};
use wagate_actors::event_hub::EventHub;
use wagate_actors::store::{EventStore, InstanceStore};
use wagate_actors::webhook_queue::WebhookQueueHandle;

use crate::common::fresh_mongodb_url;

fn connected(instance: &str, phone: &str) -> InstanceEvent {
    InstanceEvent::new(
        instance,
        Event::Connected(Connected {
            phone: phone.into(),
            push_name: None,
        }),
    )
}

#[tokio::test]
async fn polling_rings_each_stored_event_once_and_ends_a_deleted_instances_streams() {
    let storage = Arc::new(
        MongoStorage::connect(&fresh_mongodb_url())
            .await
            .expect("connect"),
    );
    storage
        .create_instance(&Instance::new(
            "i1",
            "u1",
            "i1",
            EngineKind::Sandbox,
            chrono::Utc::now(),
        ))
        .await
        .expect("instance");
    // What another node stored before anybody listened here: the stream reads it from
    // storage, the feed does not ring it.
    storage
        .append_event(&connected("i1", "old"))
        .await
        .expect("append");
    let hub = EventHub::new(storage.clone(), WebhookQueueHandle::detached(), None);
    let mut listening = hub.subscribe("i1");
    let mut feed = Feed::new(storage.database(), hub.clone());
    feed.poll().await.expect("poll");
    assert!(listening.try_recv().is_err(), "nothing new yet");

    let fresh = [connected("i1", "a"), connected("i1", "b")];
    for event in &fresh {
        storage.append_event(event).await.expect("append");
    }
    storage
        .append_event(&connected("i2", "nobody listens"))
        .await
        .expect("append");
    feed.poll().await.expect("poll");
    for event in &fresh {
        let rung = listening.try_recv().expect("rung");
        assert_eq!(rung.id, event.id);
    }
    assert!(listening.try_recv().is_err(), "only i1's new events");
    feed.poll().await.expect("poll");
    assert!(listening.try_recv().is_err(), "each event once");
    assert_eq!(hub.listened(), ["i1"]);

    // Deleted (through another node): its streams here end.
    storage.delete_instance("i1").await.expect("delete");
    feed.poll().await.expect("poll");
    assert!(matches!(
        listening.recv().await,
        Err(tokio::sync::broadcast::error::RecvError::Closed)
    ));
    assert!(hub.listened().is_empty());
}
