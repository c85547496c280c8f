//! The webhook outbox of a cluster, in the shared MongoDB: every node queues the events
//! of the instances it owns here, so the node that takes an instance over (after a
//! failover, a hand-over or a rolling restart) delivers what its previous owner left
//! queued, in order, instead of stranding it on a dead node's disk.
//!
//! Collections:
//! - `webhook_jobs`: pending jobs `{_id, instance, seq, eventId, event, body, attempts,
//!   createdAt, notBefore}`, read in `seq` order per instance. A job queued for an event
//!   has the `_id` `"<instance>/<event>"`: queueing the same event twice (a crash between
//!   the jobs and the cursor move, or two owners racing over a hand-over) stores one job.
//!   A retry or a replay queues a fresh job of an event handled before, with the `seq`
//!   appended to its `_id`.
//! - `webhook_cursors`: `{_id: instance, event}`, the last event the queue has handled;
//!   it only moves forward (`$max`: event ids sort by time, and a new owner's ids sort
//!   after its predecessor's). `{_id: "$origin", event}` is an id made when the first
//!   node opened the outbox: the stored events before it were the nodes' own outboxes'
//!   to deliver (a cluster upgraded from them), so an instance without a cursor is
//!   caught up from there, not from its first event.
//! - `webhook_dead`: dead letters `{_id: "<instance>/<seq>", …the job, httpStatus, error,
//!   failedAt}`.
//! - `webhook_deliveries`: delivery records, trimmed to the newest
//!   [`DELIVERY_RECORDS_KEPT`] per instance.
//!
//! Every write uses majority write concern: a job acknowledged survives the loss of the
//! primary. Without transactions, multi-document moves are ordered so that a crash
//! between their writes leaves a duplicate (delivered again, which at-least-once
//! delivery allows), never a loss: jobs before the cursor, a dead letter before the job's
//! removal, a revived job before the dead letter's removal.
//!
//! `seq` is a hybrid clock per node (microseconds since the epoch, bumped past the last
//! one given out), raised past an instance's queued jobs when the node adopts it
//! ([`Outbox::adopt`]), so the new owner's jobs queue after its predecessor's whatever
//! the two clocks say.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{Binary, Bson, Document, doc, spec::BinarySubtype};
use mongodb::options::{CollectionOptions, IndexOptions, WriteConcern};
use mongodb::{Collection, Database, IndexModel};
use wagate_actors::domain::{Page, new_id};
use wagate_actors::error::{StoreError, StoreResult};
use wagate_actors::webhook_queue::{
    Backlog, DELIVERY_RECORDS_KEPT, DeadLetter, DeliveryRecord, DeliveryStatus, Outbox, WebhookJob,
};

use super::{Fields, clamp_i64, collect, corrupt, date, is_duplicate_key, map_err};

const JOBS: &str = "webhook_jobs";
const CURSORS: &str = "webhook_cursors";
const DEAD: &str = "webhook_dead";
const DELIVERIES: &str = "webhook_deliveries";
/// The `_id` of the origin in `webhook_cursors` (no instance id starts with `$`).
const ORIGIN: &str = "$origin";

/// Delivery records are trimmed to the kept number every this many inserts per instance
/// (by this node).
const TRIM_EVERY: u32 = 50;

/// The shared outbox. Cheap to share (driver handles inside).
pub struct MongoOutbox {
    db: Database,
    /// The last `seq` given out by this node.
    clock: AtomicU64,
    /// Record inserts per instance since the last trim.
    since_trim: Mutex<HashMap<String, u32>>,
    /// See the module's `$origin`.
    origin: String,
}

impl MongoOutbox {
    /// The outbox in `db`; creates its indexes (idempotently).
    ///
    /// Fails with `Unavailable` when the database cannot be reached.
    pub async fn open(db: Database) -> StoreResult<MongoOutbox> {
        let mut outbox = MongoOutbox {
            db,
            clock: AtomicU64::new(0),
            since_trim: Mutex::new(HashMap::new()),
            origin: String::new(),
        };
        // The first node to open the outbox sets the origin; the others read it.
        let origin = doc! {"_id": ORIGIN, "event": new_id()};
        outbox.insert_new(CURSORS, vec![origin]).await?;
        outbox.origin = outbox
            .cursor(ORIGIN)
            .await?
            .ok_or_else(|| corrupt("the webhook outbox has no origin"))?;
        for (name, index) in [
            (JOBS, "webhook_jobs_by_instance"),
            (DEAD, "webhook_dead_by_instance"),
            (DELIVERIES, "webhook_deliveries_by_instance"),
        ] {
            outbox
                .coll(name)
                .create_index(
                    IndexModel::builder()
                        .keys(doc! {"instance": 1, "seq": 1})
                        .options(IndexOptions::builder().name(index.to_owned()).build())
                        .build(),
                )
                .await
                .map_err(map_err)?;
        }
        Ok(outbox)
    }

    fn coll(&self, name: &str) -> Collection<Document> {
        self.db.collection_with_options(
            name,
            CollectionOptions::builder()
                .write_concern(WriteConcern::majority())
                .build(),
        )
    }

    /// The first of `n` consecutive `seq`s, each after every one given out before.
    fn next_seqs(&self, n: u64) -> u64 {
        let now = u64::try_from(Utc::now().timestamp_micros()).unwrap_or(0);
        let mut last = self.clock.load(Ordering::SeqCst);
        loop {
            let first = now.max(last + 1);
            match self.clock.compare_exchange(
                last,
                first + n.max(1) - 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return first,
                Err(seen) => last = seen,
            }
        }
    }

    /// Inserts `docs`, leaving out those whose `_id` is stored already.
    async fn insert_new(&self, name: &str, docs: Vec<Document>) -> StoreResult<()> {
        if docs.is_empty() {
            return Ok(());
        }
        match self.coll(name).insert_many(docs).ordered(false).await {
            Ok(_) => Ok(()),
            Err(e) if only_duplicates(&e) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn trim_records(&self, instance_id: &str) -> StoreResult<()> {
        let due = {
            let mut counts = self
                .since_trim
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = counts.entry(instance_id.to_owned()).or_insert(0);
            *n += 1;
            let due = *n >= TRIM_EVERY;
            if due {
                *n = 0;
            }
            due
        };
        if !due {
            return Ok(());
        }
        let deliveries = self.coll(DELIVERIES);
        let oldest_kept = deliveries
            .find_one(doc! {"instance": instance_id})
            .sort(doc! {"seq": -1})
            .skip(DELIVERY_RECORDS_KEPT as u64 - 1)
            .await
            .map_err(map_err)?;
        if let Some(oldest_kept) = oldest_kept {
            let seq = oldest_kept.get_i64("seq").map_err(corrupt)?;
            deliveries
                .delete_many(doc! {"instance": instance_id, "seq": {"$lt": seq}})
                .await
                .map_err(map_err)?;
        }
        Ok(())
    }

    async fn jobs(&self, filter: Document, limit: i64) -> StoreResult<Vec<WebhookJob>> {
        let found = self
            .coll(JOBS)
            .find(filter)
            .sort(doc! {"seq": 1})
            .limit(limit)
            .await
            .map_err(map_err)?;
        collect(found, job_from_doc).await
    }
}

/// Whether every error of a failed unordered insert is a duplicate key (the rest went in).
fn only_duplicates(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::InsertMany(m) => {
            m.write_concern_error.is_none()
                && m.write_errors
                    .as_ref()
                    .is_some_and(|errors| errors.iter().all(|w| w.code == super::DUPLICATE_KEY))
        }
        _ => is_duplicate_key(e),
    }
}

fn seq_bson(seq: u64) -> Bson {
    Bson::Int64(clamp_i64(seq))
}

fn job_doc(id: String, job: &WebhookJob) -> Document {
    doc! {
        "_id": id,
        "instance": &job.instance_id,
        "seq": seq_bson(job.seq),
        "eventId": &job.event_id,
        "event": &job.event,
        "body": Binary { subtype: BinarySubtype::Generic, bytes: job.body.clone() },
        "attempts": i64::from(job.attempts),
        "createdAt": date(job.created_at),
        "notBefore": job.not_before.map(date),
    }
}

fn job_from_doc(d: &Document) -> StoreResult<WebhookJob> {
    let f = Fields(d);
    let body = match d.get("body") {
        Some(Bson::Binary(b)) => b.bytes.clone(),
        _ => return Err(corrupt("a webhook job without its body")),
    };
    let number = |key: &str| {
        f.opt_i64(key)?
            .ok_or_else(|| corrupt(format!("a webhook job without {key}")))
    };
    Ok(WebhookJob {
        seq: u64::try_from(number("seq")?).map_err(corrupt)?,
        instance_id: f.string("instance")?,
        event_id: f.string("eventId")?,
        event: f.string("event")?,
        body,
        attempts: u32::try_from(number("attempts")?).map_err(corrupt)?,
        created_at: f.time("createdAt")?,
        not_before: f.opt_time("notBefore")?,
    })
}

/// A job's own `_id`: the event's for a first queueing, with its `seq` for a later one.
fn first_id(job: &WebhookJob) -> String {
    format!("{}/{}", job.instance_id, job.event_id)
}

fn again_id(job: &WebhookJob) -> String {
    format!("{}/{}/{}", job.instance_id, job.event_id, job.seq)
}

fn job_filter(job: &WebhookJob) -> Document {
    doc! {"instance": &job.instance_id, "seq": seq_bson(job.seq), "eventId": &job.event_id}
}

fn dead_from_doc(d: &Document) -> StoreResult<DeadLetter> {
    let f = Fields(d);
    Ok(DeadLetter {
        job: job_from_doc(d)?,
        http_status: f
            .opt_i64("httpStatus")?
            .map(u16::try_from)
            .transpose()
            .map_err(corrupt)?,
        error: f.opt_string("error")?,
        failed_at: f.time("failedAt")?,
    })
}

fn status_str(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Retrying => "retrying",
        DeliveryStatus::Failed => "failed",
    }
}

fn record_from_doc(d: &Document) -> StoreResult<DeliveryRecord> {
    let f = Fields(d);
    let status = match f.string("status")?.as_str() {
        "delivered" => DeliveryStatus::Delivered,
        "retrying" => DeliveryStatus::Retrying,
        "failed" => DeliveryStatus::Failed,
        other => return Err(corrupt(format!("unknown delivery status {other}"))),
    };
    Ok(DeliveryRecord {
        event_id: f.string("eventId")?,
        event: f.string("event")?,
        attempt: u32::try_from(f.opt_i64("attempt")?.unwrap_or(0)).map_err(corrupt)?,
        status,
        http_status: f
            .opt_i64("httpStatus")?
            .map(u16::try_from)
            .transpose()
            .map_err(corrupt)?,
        error: f.opt_string("error")?,
        duration_ms: u64::try_from(f.opt_i64("durationMs")?.unwrap_or(0)).map_err(corrupt)?,
        created_at: f.time("createdAt")?,
    })
}

/// One instance's row of a `$group` by instance: its count of `field`, and its oldest
/// `createdAt` when the group kept one.
struct Group {
    instance_id: String,
    count: u64,
    oldest: Option<DateTime<Utc>>,
}

fn groups(docs: &[Document], field: &str) -> StoreResult<Vec<Group>> {
    docs.iter()
        .map(|d| {
            let f = Fields(d);
            Ok(Group {
                instance_id: f.string("_id")?,
                count: u64::try_from(f.opt_i64(field)?.unwrap_or(0)).map_err(corrupt)?,
                oldest: f.opt_time("oldest")?,
            })
        })
        .collect()
}

#[async_trait]
impl Outbox for MongoOutbox {
    async fn push_many(
        &self,
        mut jobs: Vec<WebhookJob>,
        cursors: Vec<(String, String)>,
    ) -> Result<Vec<WebhookJob>, StoreError> {
        let first = self.next_seqs(jobs.len() as u64);
        for (job, seq) in jobs.iter_mut().zip(first..) {
            job.seq = seq;
        }
        let docs = jobs.iter().map(|j| job_doc(first_id(j), j)).collect();
        self.insert_new(JOBS, docs).await?;
        // After the jobs: a crash in between queues these events again (one job each).
        let coll = self.coll(CURSORS);
        for (instance_id, event_id) in cursors {
            coll.update_one(
                doc! {"_id": &instance_id},
                doc! {"$max": {"event": &event_id}},
            )
            .upsert(true)
            .await
            .map_err(map_err)?;
        }
        Ok(jobs)
    }

    async fn cursor(&self, instance_id: &str) -> Result<Option<String>, StoreError> {
        let found = self
            .coll(CURSORS)
            .find_one(doc! {"_id": instance_id})
            .await
            .map_err(map_err)?;
        found.map(|d| Fields(&d).string("event")).transpose()
    }

    async fn head(&self, instance_id: &str) -> Result<Option<WebhookJob>, StoreError> {
        Ok(self.jobs(doc! {"instance": instance_id}, 1).await?.pop())
    }

    async fn pending(
        &self,
        instance_id: &str,
        limit: usize,
    ) -> Result<Vec<WebhookJob>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.jobs(doc! {"instance": instance_id}, limit).await
    }

    async fn update(&self, job: &WebhookJob) -> Result<(), StoreError> {
        self.coll(JOBS)
            .update_one(
                job_filter(job),
                doc! {"$set": {
                    "attempts": i64::from(job.attempts),
                    "notBefore": job.not_before.map(date),
                }},
            )
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn remove(&self, job: &WebhookJob) -> Result<(), StoreError> {
        self.coll(JOBS)
            .delete_one(job_filter(job))
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn bury(&self, dead: DeadLetter) -> Result<(), StoreError> {
        let job = &dead.job;
        let mut d = job_doc(format!("{}/{}", job.instance_id, job.seq), job);
        d.insert("httpStatus", dead.http_status.map(i32::from));
        d.insert("error", dead.error.clone());
        d.insert("failedAt", date(dead.failed_at));
        // The dead letter first: a crash in between leaves the job queued (delivered
        // again), not lost.
        self.insert_new(DEAD, vec![d]).await?;
        self.remove(job).await
    }

    async fn dead_letters(&self, instance_id: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let found = self
            .coll(DEAD)
            .find(doc! {"instance": instance_id})
            .sort(doc! {"seq": 1})
            .await
            .map_err(map_err)?;
        collect(found, dead_from_doc).await
    }

    async fn revive(
        &self,
        instance_id: &str,
        event_id: &str,
    ) -> Result<Option<WebhookJob>, StoreError> {
        let dead = self
            .coll(DEAD)
            .find_one(doc! {"instance": instance_id, "eventId": event_id})
            .sort(doc! {"seq": 1})
            .await
            .map_err(map_err)?;
        let Some(dead) = dead else {
            return Ok(None);
        };
        let dead_id = Fields(&dead).string("_id")?;
        let mut job = job_from_doc(&dead)?;
        job.seq = self.next_seqs(1);
        self.insert_new(JOBS, vec![job_doc(again_id(&job), &job)])
            .await?;
        self.coll(DEAD)
            .delete_one(doc! {"_id": dead_id})
            .await
            .map_err(map_err)?;
        Ok(Some(job))
    }

    async fn requeue(&self, mut job: WebhookJob) -> Result<WebhookJob, StoreError> {
        job.seq = self.next_seqs(1);
        self.insert_new(JOBS, vec![job_doc(again_id(&job), &job)])
            .await?;
        Ok(job)
    }

    async fn pending_instances(&self) -> Result<Vec<String>, StoreError> {
        let docs: Vec<Document> = self
            .coll(JOBS)
            .aggregate([doc! {"$group": {"_id": "$instance"}}])
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        let mut ids = docs
            .iter()
            .map(|d| Fields(d).string("_id"))
            .collect::<StoreResult<Vec<_>>>()?;
        ids.sort();
        Ok(ids)
    }

    async fn depth(&self) -> Result<u64, StoreError> {
        self.coll(JOBS)
            .count_documents(doc! {})
            .await
            .map_err(map_err)
    }

    async fn backlog(&self) -> Result<Vec<Backlog>, StoreError> {
        let pending: Vec<Document> = self
            .coll(JOBS)
            .aggregate([
                doc! {"$sort": {"instance": 1, "seq": 1}},
                doc! {"$group": {
                    "_id": "$instance",
                    "pending": {"$sum": 1},
                    "oldest": {"$first": "$createdAt"},
                }},
            ])
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        let failed: Vec<Document> = self
            .coll(DEAD)
            .aggregate([doc! {"$group": {"_id": "$instance", "failed": {"$sum": 1}}}])
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        let mut by_instance: BTreeMap<String, Backlog> = BTreeMap::new();
        fn entry(map: &mut BTreeMap<String, Backlog>, id: String) -> &mut Backlog {
            map.entry(id.clone()).or_insert(Backlog {
                instance_id: id,
                pending: 0,
                oldest_pending: None,
                failed: 0,
            })
        }
        for g in groups(&pending, "pending")? {
            let b = entry(&mut by_instance, g.instance_id);
            b.pending = g.count;
            b.oldest_pending = g.oldest;
        }
        for g in groups(&failed, "failed")? {
            entry(&mut by_instance, g.instance_id).failed = g.count;
        }
        Ok(by_instance.into_values().collect())
    }

    async fn record(&self, instance_id: &str, record: DeliveryRecord) -> Result<(), StoreError> {
        let seq = self.next_seqs(1);
        self.coll(DELIVERIES)
            .insert_one(doc! {
                "instance": instance_id,
                "seq": seq_bson(seq),
                "eventId": &record.event_id,
                "event": &record.event,
                "attempt": i64::from(record.attempt),
                "status": status_str(record.status),
                "httpStatus": record.http_status.map(i32::from),
                "error": record.error,
                "durationMs": clamp_i64(record.duration_ms),
                "createdAt": date(record.created_at),
            })
            .await
            .map_err(map_err)?;
        self.trim_records(instance_id).await
    }

    async fn deliveries(
        &self,
        instance_id: &str,
        limit: u32,
        skip: u64,
    ) -> Result<Page<DeliveryRecord>, StoreError> {
        super::find_page(
            &self.coll(DELIVERIES),
            doc! {"instance": instance_id},
            doc! {"seq": -1},
            limit,
            skip,
            record_from_doc,
        )
        .await
    }

    async fn purge(&self, instance_id: &str) -> Result<(), StoreError> {
        for name in [JOBS, DEAD, DELIVERIES] {
            self.coll(name)
                .delete_many(doc! {"instance": instance_id})
                .await
                .map_err(map_err)?;
        }
        self.coll(CURSORS)
            .delete_one(doc! {"_id": instance_id})
            .await
            .map_err(map_err)?;
        Ok(())
    }

    fn origin(&self) -> Option<&str> {
        Some(&self.origin)
    }

    async fn adopt(&self, instance_id: &str) -> Result<(), StoreError> {
        let last = self
            .coll(JOBS)
            .find_one(doc! {"instance": instance_id})
            .sort(doc! {"seq": -1})
            .await
            .map_err(map_err)?;
        if let Some(last) = last {
            let seq = Fields(&last)
                .opt_i64("seq")?
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(0);
            self.clock.fetch_max(seq, Ordering::SeqCst);
        }
        Ok(())
    }
}
