//! The event hub: every instance event is stored, then handed to the webhook queue and
//! broadcast to live subscribers (the SSE streams).
//!
//! Storage is the source of truth and the broadcast is only a doorbell. A subscriber
//! that falls behind gets `RecvError::Lagged` from its receiver; the SSE edge then
//! resumes from storage (`list_events` with `after_id` = the last id it sent). Because
//! an event is persisted before it is broadcast, whatever a subscriber missed live is
//! already in storage when it looks.
//!
//! An instance's events must be stored and announced in the order of their ids: a live
//! stream skips an event whose id is not past the last it sent, and the webhook queue's
//! cursor takes ids to come in order. The instance actor mints, stores and announces its
//! own events one after another; an event raised elsewhere (the stats counter's
//! `limit_exceeded`, the webhook queue's `webhook_paused`) is [raised](EventHub::raise)
//! through the running actor, so that it takes its turn behind the actor's queued writes
//! instead of racing them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::sync::broadcast;

use crate::domain::{Event, EventKind, InstanceEvent};
use crate::error::StoreError;
use crate::store::DynStorage;
use crate::webhook_queue::WebhookQueueHandle;

/// Events buffered per instance for slow subscribers before they lag.
pub const CHANNEL_CAPACITY: usize = 256;

/// Cheap to clone: every clone publishes into the same channels.
#[derive(Clone)]
pub struct EventHub {
    shared: Arc<HubShared>,
}

/// Told the kind of every published event (metrics).
pub type EventObserver = Arc<dyn Fn(EventKind) + Send + Sync>;

/// Hands a copy of an event to the running actor of its instance, which publishes it in
/// its turn; false when the instance has no running actor here.
pub type Relay = Arc<dyn Fn(&str, &Event) -> bool + Send + Sync>;

struct HubShared {
    storage: DynStorage,
    /// Every stored event is queued for its webhook here (the queue decides whether the
    /// instance wants it). The handle follows the queue across restarts.
    webhooks: WebhookQueueHandle,
    observer: Option<EventObserver>,
    /// One channel per instance, created on first subscription. A std mutex: held only
    /// for a map lookup, never across an await.
    channels: Mutex<HashMap<String, broadcast::Sender<InstanceEvent>>>,
    /// Set once the instance actors exist (see [`EventHub::relay_through`]).
    relay: OnceLock<Relay>,
}

impl EventHub {
    /// A hub storing into `storage` and queueing every stored event on `webhooks`.
    pub fn new(
        storage: DynStorage,
        webhooks: WebhookQueueHandle,
        observer: Option<EventObserver>,
    ) -> Self {
        EventHub {
            shared: Arc::new(HubShared {
                storage,
                webhooks,
                observer,
                channels: Mutex::new(HashMap::new()),
                relay: OnceLock::new(),
            }),
        }
    }

    /// Stores `event`, then queues it for its webhook and hands it to the live
    /// subscribers of its instance.
    ///
    /// Fails when storage does; the event is still broadcast then, so live streams do not
    /// go quiet during a storage outage (it will be missing from `/events`), and queued
    /// for the webhook, whose outbox is a store of its own.
    pub async fn publish(&self, event: InstanceEvent) -> Result<(), StoreError> {
        let stored = self.shared.storage.append_event(&event).await;
        self.announce(event);
        stored
    }

    /// From now on, [`raise`](Self::raise) goes through `relay`. Set once; a second call
    /// changes nothing.
    pub fn relay_through(&self, relay: Relay) {
        let _ = self.shared.relay.set(relay);
    }

    /// Publishes an event of `instance_id` raised outside its actor. With a running
    /// actor, the actor publishes it once its queued writes are committed, so the event's
    /// id comes after theirs and it is stored and announced after them; this returns
    /// once it is handed over (a storage failure is logged by the actor). Without one,
    /// nothing of that instance is being written: the event is published here.
    pub async fn raise(&self, instance_id: &str, event: Event) -> Result<(), StoreError> {
        if let Some(relay) = self.shared.relay.get()
            && relay(instance_id, &event)
        {
            return Ok(());
        }
        self.publish(InstanceEvent::new(instance_id, event)).await
    }

    /// Queues an event stored already (with the write it belongs to, in one transaction)
    /// for its webhook and hands it to the live subscribers of its instance.
    pub fn announce(&self, event: InstanceEvent) {
        if let Some(observe) = &self.shared.observer {
            observe(event.kind());
        }
        self.shared.webhooks.forward(event.clone());
        self.ring(event);
    }

    /// Hands an event stored already to the live subscribers of its instance, and only
    /// to them: in a cluster, the events other nodes store reach this node's streams
    /// this way (their webhooks are the owner's).
    pub fn ring(&self, event: InstanceEvent) {
        let sender = {
            let mut channels = self.channels();
            match channels.get(&event.instance_id) {
                // Nobody listens any more: drop the channel instead of keeping it forever.
                Some(sender) if sender.receiver_count() == 0 => {
                    channels.remove(&event.instance_id);
                    None
                }
                Some(sender) => Some(sender.clone()),
                None => None,
            }
        };
        if let Some(sender) = sender {
            // Fails only when every receiver left meanwhile: nothing to do.
            let _ = sender.send(event);
        }
    }

    /// Live events of one instance from now on. Earlier ones are in storage.
    pub fn subscribe(&self, instance_id: &str) -> broadcast::Receiver<InstanceEvent> {
        self.channels()
            .entry(instance_id.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// The instances somebody listens to here.
    pub fn listened(&self) -> Vec<String> {
        self.channels()
            .iter()
            .filter(|(_, sender)| sender.receiver_count() > 0)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Closes the channel of a removed instance: its subscribers see the stream end.
    pub fn forget(&self, instance_id: &str) {
        self.channels().remove(instance_id);
    }

    fn channels(&self) -> MutexGuard<'_, HashMap<String, broadcast::Sender<InstanceEvent>>> {
        self.shared
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::event::Connected;
    use crate::domain::{Event, EventQuery};
    use crate::store::EventStore;
    use crate::testing::MemoryStorage;

    fn connected(instance: &str) -> InstanceEvent {
        InstanceEvent::new(
            instance,
            Event::Connected(Connected {
                phone: "1".into(),
                push_name: None,
            }),
        )
    }

    fn hub(storage: Arc<MemoryStorage>) -> EventHub {
        EventHub::new(storage, WebhookQueueHandle::detached(), None)
    }

    #[tokio::test]
    async fn persists_then_broadcasts() {
        let storage = Arc::new(MemoryStorage::default());
        let hub = hub(storage.clone());
        let mut rx = hub.subscribe("a");
        let mut other = hub.subscribe("b");
        hub.publish(connected("a")).await.expect("publish");
        let got = rx.recv().await.expect("event");
        assert_eq!(got.kind(), EventKind::Connected);
        assert_eq!(got.data_json()["instanceId"], "a");
        assert!(other.try_recv().is_err());
        let (stored, _) = storage
            .list_events(
                "a",
                &EventQuery {
                    limit: 10,
                    ..EventQuery::default()
                },
            )
            .await
            .expect("list");
        assert_eq!(stored, vec![got]);
    }

    #[tokio::test]
    async fn drops_channels_nobody_listens_to() {
        let hub = hub(Arc::new(MemoryStorage::default()));
        drop(hub.subscribe("a"));
        hub.publish(connected("a")).await.expect("publish");
        assert!(hub.channels().is_empty());
        let mut rx = hub.subscribe("a");
        hub.forget("a");
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
    }
}
