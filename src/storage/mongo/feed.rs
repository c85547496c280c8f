//! The live event feed of a cluster node: the events every node stores reach this
//! node's SSE streams, so a stream opened on any node carries its instance's events
//! whichever node owns the instance, and goes on when the owner changes.
//!
//! A change stream on the database (inserts into `events`, deletions from `instances`)
//! rings the event hub for each event stored, and closes an instance's streams when the
//! instance is deleted; the hub hands an event to the instance's subscribers on this
//! node, if any (the owner's own events reach them twice, directly and through the feed:
//! a stream skips an id it has sent). When the change stream cannot be opened or fails, the feed polls storage for
//! the instances somebody listens to here (and whether they still exist), every
//! [`POLL_EVERY`], and tries the change stream again after [`STREAM_RETRY`]; each time the change stream (re)opens it polls
//! once, for what was stored while it was down.
//!
//! Each deletion the change stream reports is also told to the node (its `on_deleted`),
//! which removes its own copies of the instance (`crate::cluster::forget_local`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{Document, doc};
use mongodb::change_stream::event::OperationType;
use mongodb::{Collection, Database};
use wagate_actors::domain::InstanceEvent;
use wagate_actors::event_hub::EventHub;
use wagate_actors::store::StoreResult;

use super::{EVENTS, INSTANCES, event_from_doc, map_err};

/// How often the fallback polls storage.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long the fallback polls before it tries the change stream again.
pub const STREAM_RETRY: Duration = Duration::from_secs(30);
/// Events one poll reads per instance.
const POLL_BATCH: i64 = 500;

/// Told the id of every instance the change stream saw deleted.
pub type OnDeleted = Arc<dyn Fn(&str) + Send + Sync>;

/// Runs the feed until the task is aborted.
pub fn spawn(db: Database, hub: EventHub, on_deleted: OnDeleted) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut feed = Feed::new(&db, hub).on_deleted(on_deleted);
        loop {
            match feed.follow().await {
                Ok(()) => tracing::warn!("the event change stream ended; polling meanwhile"),
                Err(err) => {
                    tracing::warn!(%err, "the event change stream failed; polling meanwhile")
                }
            }
            let until = tokio::time::Instant::now() + STREAM_RETRY;
            while tokio::time::Instant::now() < until {
                if let Err(err) = feed.poll().await {
                    tracing::debug!(%err, "cannot poll the events");
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
        }
    })
}

/// The feed's state: what it has rung so far.
pub struct Feed {
    db: Database,
    events: Collection<Document>,
    instances: Collection<Document>,
    hub: EventHub,
    /// Instance id → the last event id rung for it.
    seen: HashMap<String, String>,
    on_deleted: Option<OnDeleted>,
}

impl Feed {
    pub fn new(db: &Database, hub: EventHub) -> Feed {
        Feed {
            db: db.clone(),
            events: db.collection(EVENTS),
            instances: db.collection(INSTANCES),
            hub,
            seen: HashMap::new(),
            on_deleted: None,
        }
    }

    /// Tells `on_deleted` of every deletion the change stream reports.
    pub fn on_deleted(mut self, on_deleted: OnDeleted) -> Feed {
        self.on_deleted = Some(on_deleted);
        self
    }

    /// Rings the hub for every event inserted from now on, until the change stream ends
    /// or fails.
    async fn follow(&mut self) -> StoreResult<()> {
        let mut stream = self
            .db
            .watch()
            .pipeline([doc! {"$match": {"$or": [
                {"operationType": "insert", "ns.coll": EVENTS},
                {"operationType": "delete", "ns.coll": INSTANCES},
            ]}}])
            .await
            .map_err(map_err)?;
        tracing::debug!("following the event change stream");
        // What was stored while the change stream was down.
        self.poll().await?;
        while let Some(change) = stream.next().await {
            let change = change.map_err(map_err)?;
            if change.operation_type == OperationType::Delete {
                let deleted = change
                    .document_key
                    .as_ref()
                    .and_then(|key| key.get_str("_id").ok());
                if let Some(id) = deleted {
                    self.hub.forget(id);
                    if let Some(on_deleted) = &self.on_deleted {
                        on_deleted(id);
                    }
                }
                continue;
            }
            if change.operation_type != OperationType::Insert {
                continue;
            }
            let Some(document) = change.full_document else {
                continue;
            };
            match event_from_doc(&document) {
                Ok(event) => self.ring(event),
                Err(err) => tracing::warn!(%err, "an event the feed cannot read"),
            }
        }
        Ok(())
    }

    fn ring(&mut self, event: InstanceEvent) {
        let newer = self
            .seen
            .get(&event.instance_id)
            .is_none_or(|last| event.id > *last);
        if newer {
            self.seen
                .insert(event.instance_id.clone(), event.id.clone());
        }
        self.hub.ring(event);
    }

    /// Rings the hub for what was stored, since the last event rung, for each instance
    /// somebody listens to here; closes the streams of those deleted. An instance not
    /// seen before starts from its newest event: its streams read what came before from
    /// storage.
    ///
    /// Fails when storage does.
    pub async fn poll(&mut self) -> StoreResult<()> {
        let listened = self.hub.listened();
        self.seen.retain(|id, _| listened.contains(id));
        for instance in listened {
            let exists = self
                .instances
                .find_one(doc! {"_id": &instance})
                .projection(doc! {"_id": 1})
                .await
                .map_err(map_err)?
                .is_some();
            if !exists {
                self.hub.forget(&instance);
                self.seen.remove(&instance);
                continue;
            }
            let Some(after) = self.seen.get(&instance).cloned() else {
                let newest = self
                    .events
                    .find_one(doc! {"instanceId": &instance})
                    .sort(doc! {"_id": -1})
                    .await
                    .map_err(map_err)?;
                let newest = newest
                    .and_then(|d| d.get_str("_id").ok().map(str::to_owned))
                    .unwrap_or_default();
                self.seen.insert(instance, newest);
                continue;
            };
            let docs: Vec<Document> = self
                .events
                .find(doc! {"instanceId": &instance, "_id": {"$gt": &after}})
                .sort(doc! {"_id": 1})
                .limit(POLL_BATCH)
                .await
                .map_err(map_err)?
                .try_collect()
                .await
                .map_err(map_err)?;
            for document in docs {
                match event_from_doc(&document) {
                    Ok(event) => self.ring(event),
                    Err(err) => tracing::warn!(%err, "an event the feed cannot read"),
                }
            }
        }
        Ok(())
    }
}
