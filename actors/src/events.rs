//! The event hub: every instance event is stored, then broadcast to live subscribers
//! (the SSE stream, later the webhook queue).
//!
//! Storage is the source of truth and the broadcast is only a doorbell. A subscriber
//! that falls behind gets `RecvError::Lagged` from its receiver; the SSE edge then
//! resumes from storage (`list_events` with `after_id` = the last id it sent). Because
//! an event is persisted before it is broadcast, whatever a subscriber missed live is
//! already in storage when it looks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;

use crate::domain::InstanceEvent;
use crate::error::StoreError;
use crate::storage::DynStorage;

/// Events buffered per instance for slow subscribers before they lag.
pub const CHANNEL_CAPACITY: usize = 256;

/// Cheap to clone: every clone publishes into the same channels.
#[derive(Clone)]
pub struct EventHub {
    shared: Arc<HubShared>,
}

/// Where every published event goes after it is stored (the webhook queue).
pub type Forwarder = Arc<dyn Fn(&InstanceEvent) + Send + Sync>;

struct HubShared {
    storage: DynStorage,
    /// Set once at start, before any instance runs.
    forwarder: std::sync::OnceLock<Forwarder>,
    /// One channel per instance, created on first subscription. A std mutex: held only
    /// for a map lookup, never across an await.
    channels: Mutex<HashMap<String, broadcast::Sender<InstanceEvent>>>,
}

impl EventHub {
    pub fn new(storage: DynStorage) -> Self {
        EventHub {
            shared: Arc::new(HubShared {
                storage,
                forwarder: std::sync::OnceLock::new(),
                channels: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Stores `event`, then hands it to the live subscribers of its instance.
    ///
    /// Fails when storage does; the event is still broadcast then, so live streams do not
    /// go quiet during a storage outage (it will be missing from `/events`).
    pub async fn publish(&self, event: InstanceEvent) -> Result<(), StoreError> {
        let stored = self.shared.storage.append_event(&event).await;
        if let Some(forward) = self.shared.forwarder.get() {
            forward(&event);
        }
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
        stored
    }

    /// Sends every event published from now on to `forward` too (once stored). Only the
    /// first call takes effect: there is one webhook queue per process.
    pub fn set_forwarder(&self, forward: Forwarder) {
        if self.shared.forwarder.set(forward).is_err() {
            tracing::warn!("the event forwarder was already set");
        }
    }

    /// Live events of one instance from now on. Earlier ones are in storage.
    pub fn subscribe(&self, instance_id: &str) -> broadcast::Receiver<InstanceEvent> {
        self.channels()
            .entry(instance_id.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
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

    use serde_json::json;

    use super::*;
    use crate::domain::EventQuery;
    use crate::storage::EventStore;
    use crate::testing::MemoryStorage;

    #[tokio::test]
    async fn persists_then_broadcasts() {
        let storage = Arc::new(MemoryStorage::default());
        let hub = EventHub::new(storage.clone());
        let mut rx = hub.subscribe("a");
        let mut other = hub.subscribe("b");
        hub.publish(InstanceEvent::new("a", "connected", json!({"phone": "1"})))
            .await
            .expect("publish");
        let got = rx.recv().await.expect("event");
        assert_eq!(got.kind, "connected");
        assert_eq!(got.data["instanceId"], "a");
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
        let hub = EventHub::new(Arc::new(MemoryStorage::default()));
        drop(hub.subscribe("a"));
        hub.publish(InstanceEvent::new("a", "x", json!({})))
            .await
            .expect("publish");
        assert!(hub.channels().is_empty());
        let mut rx = hub.subscribe("a");
        hub.forget("a");
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
    }
}
