//! The webhook queue's durable outbox on sled (an embedded store under
//! `DATA_DIR/webhooks`).
//!
//! Layout of the sled trees (keys are `instance id`, a 0 byte, then a big-endian u64 from
//! sled's id generator, so a prefix scan yields one instance's entries in order):
//! - `jobs`: pending [`WebhookJob`]s, FIFO per instance;
//! - `records`: [`DeliveryRecord`]s, the newest [`DELIVERY_RECORDS_KEPT`] per instance;
//! - `cursors`: instance id → the last event id the queue has handled;
//! - `dead`: [`DeadLetter`]s, jobs given up, by the `seq` they had in `jobs`.
//!
//! A job (and a dead letter) is stored as a format byte, the length of a small JSON head
//! (ids, attempts, times), the head, then the request body as raw bytes. Jobs stored by
//! earlier versions as one JSON document (the body an array of numbers) are still read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use wagate_actors::domain::Page;
use wagate_actors::error::StoreError;
use wagate_actors::webhook_queue::{
    Backlog, DELIVERY_RECORDS_KEPT, DeadLetter, DeliveryRecord, Outbox, WebhookJob,
};

/// Records are trimmed to the kept number every this many inserts per instance.
const TRIM_EVERY: u32 = 64;
/// Delivery records waiting in memory are written once this many have gathered...
const RECORDS_BATCH: usize = 256;
/// ...or once the oldest of them waited this long (checked when the next one comes).
const RECORDS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// The first byte of a job or a dead letter in the current format (a JSON document, the
/// earlier format, starts with `{`).
const FORMAT_RAW_BODY: u8 = 1;

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("webhook outbox: {e}"))
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("webhook outbox: {e}"))
}

fn prefix(instance_id: &str) -> Vec<u8> {
    let mut p = instance_id.as_bytes().to_vec();
    p.push(0);
    p
}

fn key(instance_id: &str, seq: u64) -> Vec<u8> {
    let mut k = prefix(instance_id);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The durable outbox. Cheap to share (sled handles are `Arc`s inside).
pub struct SledOutbox {
    db: sled::Db,
    jobs: sled::Tree,
    records: sled::Tree,
    cursors: sled::Tree,
    dead: sled::Tree,
    /// Pending jobs, counted here because `Tree::len` walks the whole tree.
    depth: AtomicU64,
    /// Record inserts per instance since the last trim.
    since_trim: Mutex<HashMap<String, u32>>,
    /// Flushes asked for so far, each after its caller's writes (see [`SledOutbox::flush`]).
    flushes_asked: AtomicU64,
    /// Every flush asked for up to this number is done.
    flushed_upto: AtomicU64,
    /// One flush at a time; callers that wait for it share the next one.
    flushing: tokio::sync::Mutex<()>,
    /// Flushes done (fsyncs of the outbox), for tests and measurements.
    flushes: AtomicU64,
    /// Delivery records not written yet, oldest first.
    unwritten: Mutex<Unwritten>,
}

/// Delivery records kept in memory until they are written as one batch.
#[derive(Default)]
struct Unwritten {
    records: Vec<(String, u64, DeliveryRecord)>,
    since: Option<std::time::Instant>,
}

impl SledOutbox {
    /// Opens (creating) the outbox in `dir`.
    ///
    /// Fails when the directory cannot be opened as a sled database (for example when
    /// another process holds it).
    pub fn open(dir: &Path) -> Result<SledOutbox, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(unavailable)?;
        let jobs = db.open_tree("jobs").map_err(unavailable)?;
        let records = db.open_tree("records").map_err(unavailable)?;
        let cursors = db.open_tree("cursors").map_err(unavailable)?;
        let dead = db.open_tree("dead").map_err(unavailable)?;
        let depth = AtomicU64::new(jobs.len() as u64);
        Ok(SledOutbox {
            db,
            jobs,
            records,
            cursors,
            dead,
            depth,
            since_trim: Mutex::new(HashMap::new()),
            flushes_asked: AtomicU64::new(0),
            flushed_upto: AtomicU64::new(0),
            flushing: tokio::sync::Mutex::new(()),
            flushes: AtomicU64::new(0),
            unwritten: Mutex::new(Unwritten::default()),
        })
    }

    /// How many flushes (fsyncs) this handle has made.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::SeqCst)
    }

    /// Writes the delivery records kept in memory, as one batch (not flushed: sled writes
    /// it out within its flush interval or with the next flush).
    fn write_records(&self) -> Result<(), StoreError> {
        let records = {
            let mut unwritten = self
                .unwritten
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            unwritten.since = None;
            std::mem::take(&mut unwritten.records)
        };
        if records.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut by_instance: HashMap<&str, u32> = HashMap::new();
        for (instance_id, seq, record) in &records {
            batch.insert(
                key(instance_id, *seq),
                serde_json::to_vec(record).map_err(corrupt)?,
            );
            *by_instance.entry(instance_id).or_insert(0) += 1;
        }
        self.records.apply_batch(batch).map_err(unavailable)?;
        for (instance_id, added) in by_instance {
            self.trim_records(instance_id, added)?;
        }
        Ok(())
    }

    /// Makes every write so far durable (fsync).
    ///
    /// Concurrent callers share flushes (group commit): a caller takes a ticket after its
    /// writes; whoever flushes first records the highest ticket taken before it started,
    /// and every caller whose ticket that covers returns without an fsync of its own.
    /// With many instances delivering at once this turns one fsync per delivery into one
    /// per batch.
    ///
    /// A blocking `flush` on tokio's blocking pool, not sled's `flush_async`: in sled 0.34
    /// concurrent `flush_async` calls can deadlock (every sled IO thread waits in the
    /// flush for a buffer write queued behind them), which stopped all webhook delivery
    /// under load with several instances delivering at once.
    async fn flush(&self) -> Result<(), StoreError> {
        let ticket = self.flushes_asked.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = self.flushing.lock().await;
        if self.flushed_upto.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Every ticket up to here was taken after its writes, so this flush covers them.
        let covers = self.flushes_asked.load(Ordering::SeqCst);
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        self.flushes.fetch_add(1, Ordering::SeqCst);
        self.flushed_upto.fetch_max(covers, Ordering::SeqCst);
        Ok(())
    }

    /// Counts `added` records of the instance; every [`TRIM_EVERY`] drops all but the
    /// newest [`DELIVERY_RECORDS_KEPT`].
    fn trim_records(&self, instance_id: &str, added: u32) -> Result<(), StoreError> {
        let due = {
            let mut counts = self
                .since_trim
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = counts.entry(instance_id.to_owned()).or_insert(0);
            *n += added;
            if *n >= TRIM_EVERY {
                *n = 0;
                true
            } else {
                false
            }
        };
        if !due {
            return Ok(());
        }
        let keys: Vec<sled::IVec> = self
            .records
            .scan_prefix(prefix(instance_id))
            .rev()
            .skip(DELIVERY_RECORDS_KEPT)
            .map(|r| r.map(|(k, _)| k))
            .collect::<Result<_, _>>()
            .map_err(unavailable)?;
        for k in keys {
            self.records.remove(k).map_err(unavailable)?;
        }
        Ok(())
    }
}

impl Drop for SledOutbox {
    fn drop(&mut self) {
        if let Err(err) = self.write_records() {
            tracing::warn!(%err, "cannot write the last webhook delivery records");
        }
    }
}

/// A job without its body: the JSON head of a stored job.
#[derive(Serialize, Deserialize)]
struct JobHead {
    seq: u64,
    instance_id: String,
    event_id: String,
    event: String,
    attempts: u32,
    created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_before: Option<DateTime<Utc>>,
}

/// A dead letter without its job's body.
#[derive(Serialize, Deserialize)]
struct DeadHead {
    job: JobHead,
    http_status: Option<u16>,
    error: Option<String>,
    failed_at: DateTime<Utc>,
}

fn head_of(job: &WebhookJob) -> JobHead {
    JobHead {
        seq: job.seq,
        instance_id: job.instance_id.clone(),
        event_id: job.event_id.clone(),
        event: job.event.clone(),
        attempts: job.attempts,
        created_at: job.created_at,
        not_before: job.not_before,
    }
}

fn job_of(head: JobHead, body: Vec<u8>) -> WebhookJob {
    WebhookJob {
        seq: head.seq,
        instance_id: head.instance_id,
        event_id: head.event_id,
        event: head.event,
        body,
        attempts: head.attempts,
        created_at: head.created_at,
        not_before: head.not_before,
    }
}

/// The format byte, the head's length (u32, big-endian), the head, the body.
fn frame(head: &impl Serialize, body: &[u8]) -> Result<Vec<u8>, StoreError> {
    let head = serde_json::to_vec(head).map_err(corrupt)?;
    let len = u32::try_from(head.len()).map_err(corrupt)?;
    let mut out = Vec::with_capacity(5 + head.len() + body.len());
    out.push(FORMAT_RAW_BODY);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(body);
    Ok(out)
}

/// The head and the body of a framed value; None for a value of the earlier format.
fn unframe<'b, H: Deserialize<'b>>(bytes: &'b [u8]) -> Result<Option<(H, &'b [u8])>, StoreError> {
    let Some((&format, rest)) = bytes.split_first() else {
        return Err(corrupt("an empty entry"));
    };
    if format == b'{' {
        return Ok(None);
    }
    if format != FORMAT_RAW_BODY {
        return Err(corrupt(format!("unknown entry format {format}")));
    }
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("a truncated entry"))?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(corrupt("a truncated entry"));
    }
    let (head, body) = rest.split_at(len);
    Ok(Some((serde_json::from_slice(head).map_err(corrupt)?, body)))
}

fn encode_job(job: &WebhookJob) -> Result<Vec<u8>, StoreError> {
    frame(&head_of(job), &job.body)
}

fn decode_job(bytes: &[u8]) -> Result<WebhookJob, StoreError> {
    match unframe::<JobHead>(bytes)? {
        Some((head, body)) => Ok(job_of(head, body.to_vec())),
        None => serde_json::from_slice(bytes).map_err(corrupt),
    }
}

fn encode_dead(dead: &DeadLetter) -> Result<Vec<u8>, StoreError> {
    let head = DeadHead {
        job: head_of(&dead.job),
        http_status: dead.http_status,
        error: dead.error.clone(),
        failed_at: dead.failed_at,
    };
    frame(&head, &dead.job.body)
}

fn decode_dead(bytes: &[u8]) -> Result<DeadLetter, StoreError> {
    match unframe::<DeadHead>(bytes)? {
        Some((head, body)) => Ok(DeadLetter {
            job: job_of(head.job, body.to_vec()),
            http_status: head.http_status,
            error: head.error,
            failed_at: head.failed_at,
        }),
        None => serde_json::from_slice(bytes).map_err(corrupt),
    }
}

#[async_trait]
impl Outbox for SledOutbox {
    async fn push_many(
        &self,
        mut jobs: Vec<WebhookJob>,
        cursors: Vec<(String, String)>,
    ) -> Result<Vec<WebhookJob>, StoreError> {
        let mut entries = Vec::with_capacity(jobs.len());
        for job in &mut jobs {
            job.seq = self.db.generate_id().map_err(unavailable)?;
            entries.push((key(&job.instance_id, job.seq), encode_job(job)?));
        }
        (&self.jobs, &self.cursors)
            .transaction(|(tx_jobs, tx_cursors)| {
                for (k, v) in &entries {
                    tx_jobs.insert(k.as_slice(), v.as_slice())?;
                }
                for (instance_id, event_id) in &cursors {
                    tx_cursors.insert(instance_id.as_bytes(), event_id.as_bytes())?;
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| unavailable(format!("{e:?}")))?;
        if !jobs.is_empty() {
            self.flush().await?;
            self.depth.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        }
        Ok(jobs)
    }

    async fn cursor(&self, instance_id: &str) -> Result<Option<String>, StoreError> {
        self.cursors
            .get(instance_id.as_bytes())
            .map_err(unavailable)?
            .map(|v| String::from_utf8(v.to_vec()).map_err(corrupt))
            .transpose()
    }

    async fn head(&self, instance_id: &str) -> Result<Option<WebhookJob>, StoreError> {
        match self.jobs.scan_prefix(prefix(instance_id)).next() {
            Some(Ok((_, v))) => decode_job(&v).map(Some),
            Some(Err(e)) => Err(unavailable(e)),
            None => Ok(None),
        }
    }

    async fn pending(
        &self,
        instance_id: &str,
        limit: usize,
    ) -> Result<Vec<WebhookJob>, StoreError> {
        self.jobs
            .scan_prefix(prefix(instance_id))
            .values()
            .take(limit)
            .map(|v| decode_job(&v.map_err(unavailable)?))
            .collect()
    }

    async fn update(&self, job: &WebhookJob) -> Result<(), StoreError> {
        let value = encode_job(job)?;
        self.jobs
            .insert(key(&job.instance_id, job.seq), value)
            .map_err(unavailable)?;
        self.flush().await
    }

    async fn remove(&self, job: &WebhookJob) -> Result<(), StoreError> {
        if self
            .jobs
            .remove(key(&job.instance_id, job.seq))
            .map_err(unavailable)?
            .is_some()
        {
            self.depth.fetch_sub(1, Ordering::Relaxed);
        }
        // No fsync: a removal lost in a crash delivers the job again (at least once), and
        // sled writes it out with the next flush or within its own flush interval.
        Ok(())
    }

    async fn bury(&self, dead: DeadLetter) -> Result<(), StoreError> {
        let job_key = key(&dead.job.instance_id, dead.job.seq);
        let value = encode_dead(&dead)?;
        let removed = (&self.jobs, &self.dead)
            .transaction(|(jobs, buried)| {
                let removed = jobs.remove(job_key.as_slice())?;
                buried.insert(job_key.as_slice(), value.as_slice())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(removed.is_some())
            })
            .map_err(|e| unavailable(format!("{e:?}")))?;
        if removed {
            self.depth.fetch_sub(1, Ordering::Relaxed);
        }
        self.flush().await
    }

    async fn dead_letters(&self, instance_id: &str) -> Result<Vec<DeadLetter>, StoreError> {
        self.dead
            .scan_prefix(prefix(instance_id))
            .values()
            .map(|v| decode_dead(&v.map_err(unavailable)?))
            .collect()
    }

    async fn revive(
        &self,
        instance_id: &str,
        event_id: &str,
    ) -> Result<Option<WebhookJob>, StoreError> {
        let mut found = None;
        for entry in self.dead.scan_prefix(prefix(instance_id)) {
            let (k, v) = entry.map_err(unavailable)?;
            let dead = decode_dead(&v)?;
            if dead.job.event_id == event_id {
                found = Some((k, dead.job));
                break;
            }
        }
        let Some((dead_key, mut job)) = found else {
            return Ok(None);
        };
        job.seq = self.db.generate_id().map_err(unavailable)?;
        let value = encode_job(&job)?;
        let job_key = key(instance_id, job.seq);
        (&self.jobs, &self.dead)
            .transaction(|(jobs, buried)| {
                buried.remove(&dead_key)?;
                jobs.insert(job_key.as_slice(), value.as_slice())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| unavailable(format!("{e:?}")))?;
        self.flush().await?;
        self.depth.fetch_add(1, Ordering::Relaxed);
        Ok(Some(job))
    }

    async fn requeue(&self, mut job: WebhookJob) -> Result<WebhookJob, StoreError> {
        job.seq = self.db.generate_id().map_err(unavailable)?;
        let value = encode_job(&job)?;
        self.jobs
            .insert(key(&job.instance_id, job.seq), value)
            .map_err(unavailable)?;
        self.flush().await?;
        self.depth.fetch_add(1, Ordering::Relaxed);
        Ok(job)
    }

    async fn pending_instances(&self) -> Result<Vec<String>, StoreError> {
        let mut instances = BTreeSet::new();
        for entry in self.jobs.iter().keys() {
            let k = entry.map_err(unavailable)?;
            let end = k.iter().position(|b| *b == 0).unwrap_or(k.len());
            instances.insert(String::from_utf8(k[..end].to_vec()).map_err(corrupt)?);
        }
        Ok(instances.into_iter().collect())
    }

    async fn depth(&self) -> Result<u64, StoreError> {
        Ok(self.depth.load(Ordering::Relaxed))
    }

    async fn backlog(&self) -> Result<Vec<Backlog>, StoreError> {
        fn of<'m>(
            map: &'m mut BTreeMap<String, Backlog>,
            k: &[u8],
        ) -> Result<&'m mut Backlog, StoreError> {
            let end = k.iter().position(|b| *b == 0).unwrap_or(k.len());
            let id = String::from_utf8(k[..end].to_vec()).map_err(corrupt)?;
            Ok(map.entry(id.clone()).or_insert_with(|| Backlog {
                instance_id: id,
                pending: 0,
                oldest_pending: None,
                failed: 0,
            }))
        }
        let mut by_instance = BTreeMap::new();
        for item in self.jobs.iter() {
            let (k, v) = item.map_err(unavailable)?;
            let b = of(&mut by_instance, &k)?;
            if b.pending == 0 {
                // Keys are in queue order: an instance's first job is its head.
                b.oldest_pending = Some(decode_job(&v)?.created_at);
            }
            b.pending += 1;
        }
        for k in self.dead.iter().keys() {
            of(&mut by_instance, &k.map_err(unavailable)?)?.failed += 1;
        }
        Ok(by_instance.into_values().collect())
    }

    async fn record(&self, instance_id: &str, record: DeliveryRecord) -> Result<(), StoreError> {
        let seq = self.db.generate_id().map_err(unavailable)?;
        let due = {
            let mut unwritten = self
                .unwritten
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            unwritten
                .records
                .push((instance_id.to_owned(), seq, record));
            let since = *unwritten.since.get_or_insert_with(std::time::Instant::now);
            unwritten.records.len() >= RECORDS_BATCH || since.elapsed() >= RECORDS_WAIT
        };
        if due {
            self.write_records()?;
        }
        Ok(())
    }

    async fn deliveries(
        &self,
        instance_id: &str,
        limit: u32,
        skip: u64,
    ) -> Result<Page<DeliveryRecord>, StoreError> {
        self.write_records()?;
        let mut total = 0u64;
        let mut items = Vec::new();
        for entry in self.records.scan_prefix(prefix(instance_id)).rev() {
            let (_, v) = entry.map_err(unavailable)?;
            if total >= skip && items.len() < limit as usize {
                items.push(serde_json::from_slice(&v).map_err(corrupt)?);
            }
            total += 1;
        }
        Ok(Page { items, total })
    }

    async fn purge(&self, instance_id: &str) -> Result<(), StoreError> {
        self.write_records()?;
        for tree in [&self.jobs, &self.records, &self.dead] {
            let keys: Vec<sled::IVec> = tree
                .scan_prefix(prefix(instance_id))
                .keys()
                .collect::<Result<_, _>>()
                .map_err(unavailable)?;
            for k in keys {
                if tree.remove(k).map_err(unavailable)?.is_some() && std::ptr::eq(tree, &self.jobs)
                {
                    self.depth.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        self.cursors
            .remove(instance_id.as_bytes())
            .map_err(unavailable)?;
        self.flush().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use wagate_actors::webhook_queue::DeliveryStatus;

    use super::*;

    /// Opens the outbox again once the previous handle's last clone is gone: a blocking
    /// task that answered a call may still be dropping its clone (and sled's lock) when
    /// the caller already moved on.
    async fn reopen(dir: &std::path::Path) -> SledOutbox {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match SledOutbox::open(dir) {
                Ok(outbox) => return outbox,
                Err(err)
                    if err.to_string().contains("could not acquire lock")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(err) => panic!("reopen: {err}"),
            }
        }
    }

    fn job(instance: &str, event: &str) -> WebhookJob {
        WebhookJob {
            seq: 0,
            instance_id: instance.into(),
            event_id: event.into(),
            event: "connected".into(),
            body: b"{}".to_vec(),
            attempts: 0,
            created_at: Utc::now(),
            not_before: None,
        }
    }

    #[tokio::test]
    async fn jobs_are_fifo_per_instance_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let outbox = SledOutbox::open(dir.path()).expect("open");
            for e in ["e1", "e2"] {
                outbox.push(job("a", e)).await.expect("push");
            }
            outbox.push(job("b", "e3")).await.expect("push");
            // "a" is a prefix of "ab": the 0 separator keeps them apart.
            outbox.push(job("ab", "e4")).await.expect("push");
            assert_eq!(outbox.depth().await.expect("depth"), 4);
        }
        let outbox = reopen(dir.path()).await;
        assert_eq!(outbox.depth().await.expect("depth"), 4);
        assert_eq!(
            outbox.pending_instances().await.expect("pending"),
            ["a", "ab", "b"]
        );
        let head = outbox.head("a").await.expect("head").expect("some");
        assert_eq!(head.event_id, "e1");
        assert_eq!(
            outbox.cursor("a").await.expect("cursor").as_deref(),
            Some("e2")
        );
        let mut retried = head.clone();
        retried.attempts = 2;
        outbox.update(&retried).await.expect("update");
        assert_eq!(
            outbox.head("a").await.expect("head").map(|j| j.attempts),
            Some(2)
        );
        outbox.remove(&head).await.expect("remove");
        assert_eq!(
            outbox.head("a").await.expect("head").map(|j| j.event_id),
            Some("e2".into())
        );
        outbox.purge("a").await.expect("purge");
        assert_eq!(outbox.head("a").await.expect("head"), None);
        assert_eq!(
            outbox.head("ab").await.expect("head").map(|j| j.event_id),
            Some("e4".into())
        );
        assert_eq!(outbox.depth().await.expect("depth"), 2);
    }

    /// Many instances flushing at once (sled's own `flush_async` deadlocked here).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_flushes_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = std::sync::Arc::new(SledOutbox::open(dir.path()).expect("open"));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..32 {
            let outbox = outbox.clone();
            tasks.spawn(async move {
                for j in 0..20 {
                    let pushed = outbox
                        .push(job(&format!("i{i}"), &format!("e{j}")))
                        .await
                        .expect("push");
                    outbox.remove(&pushed).await.expect("remove");
                }
            });
        }
        tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(done) = tasks.join_next().await {
                done.expect("task");
            }
        })
        .await
        .expect("every flush completes");
        assert_eq!(outbox.depth().await.expect("depth"), 0);
    }

    #[tokio::test]
    async fn dead_letters_survive_reopening_and_revive_at_the_end_of_the_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let outbox = SledOutbox::open(dir.path()).expect("open");
            let mut given_up = outbox.push(job("a", "e1")).await.expect("push");
            outbox.push(job("a", "e2")).await.expect("push");
            given_up.attempts = 4;
            outbox
                .bury(DeadLetter {
                    job: given_up,
                    http_status: Some(503),
                    error: Some("the receiver answered 503".into()),
                    failed_at: Utc::now(),
                })
                .await
                .expect("bury");
            assert_eq!(outbox.depth().await.expect("depth"), 1);
        }
        let outbox = reopen(dir.path()).await;
        let dead = outbox.dead_letters("a").await.expect("dead");
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].job.event_id.as_str(), dead[0].http_status),
            ("e1", Some(503))
        );
        assert_eq!(outbox.revive("a", "e9").await.expect("revive"), None);
        let revived = outbox
            .revive("a", "e1")
            .await
            .expect("revive")
            .expect("some");
        assert_eq!(revived.attempts, 4, "the next attempt is the fifth");
        assert!(outbox.dead_letters("a").await.expect("dead").is_empty());
        // Behind e2, and the cursor still at the last event handled.
        let head = outbox.head("a").await.expect("head").expect("e2");
        assert_eq!(head.event_id, "e2");
        outbox.remove(&head).await.expect("remove");
        let head = outbox.head("a").await.expect("head").expect("e1");
        assert_eq!(head.event_id, "e1");
        assert_eq!(
            outbox.cursor("a").await.expect("cursor").as_deref(),
            Some("e2")
        );
        let replayed = outbox.requeue(job("a", "e0")).await.expect("requeue");
        assert!(replayed.seq > head.seq);
        assert_eq!(
            outbox.cursor("a").await.expect("cursor").as_deref(),
            Some("e2")
        );
        assert_eq!(outbox.depth().await.expect("depth"), 2);
        outbox.purge("a").await.expect("purge");
        assert!(outbox.dead_letters("a").await.expect("dead").is_empty());
    }

    #[tokio::test]
    async fn a_batch_of_jobs_is_one_flush_and_bodies_are_stored_raw() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = SledOutbox::open(dir.path()).expect("open");
        let jobs: Vec<WebhookJob> = (0..50)
            .map(|i| {
                let mut j = job(if i % 2 == 0 { "a" } else { "b" }, &format!("e{i}"));
                j.body = format!("{{\"n\":{i}}}").into_bytes();
                j
            })
            .collect();
        let before = outbox.flushes();
        let pushed = outbox
            .push_many(
                jobs,
                vec![("a".into(), "e48".into()), ("b".into(), "e49".into())],
            )
            .await
            .expect("push");
        assert_eq!(outbox.flushes() - before, 1, "one flush for the batch");
        assert_eq!(pushed.len(), 50);
        assert!(
            pushed.windows(2).all(|w| w[0].seq < w[1].seq),
            "seqs in order"
        );
        assert_eq!(outbox.depth().await.expect("depth"), 50);
        assert_eq!(
            outbox.cursor("b").await.expect("cursor").as_deref(),
            Some("e49")
        );
        // Cursor moves alone are not flushed.
        outbox
            .push_many(Vec::new(), vec![("c".into(), "e0".into())])
            .await
            .expect("cursors");
        assert_eq!(outbox.flushes() - before, 1);
        let stored = outbox
            .jobs
            .get(key("a", pushed[0].seq))
            .expect("get")
            .expect("stored");
        assert!(
            stored.ends_with(b"{\"n\":0}"),
            "the body is stored as its bytes"
        );
        let head = outbox.head("a").await.expect("head").expect("some");
        assert_eq!(head, pushed[0]);
    }

    /// Jobs and dead letters written by earlier versions (one JSON document, the body an
    /// array of numbers) are still read, delivered and buried.
    #[tokio::test]
    async fn jobs_of_the_earlier_format_are_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut old = job("a", "e1");
        old.seq = 7;
        old.body = br#"{"id":"e1"}"#.to_vec();
        let old_dead = DeadLetter {
            job: WebhookJob {
                seq: 3,
                event_id: "e0".into(),
                ..old.clone()
            },
            http_status: Some(500),
            error: Some("the receiver answered 500".into()),
            failed_at: Utc::now(),
        };
        {
            let outbox = SledOutbox::open(dir.path()).expect("open");
            let legacy = serde_json::to_vec(&old).expect("json");
            assert!(legacy.starts_with(b"{"), "the earlier format");
            outbox.jobs.insert(key("a", 7), legacy).expect("insert");
            outbox
                .dead
                .insert(key("a", 3), serde_json::to_vec(&old_dead).expect("json"))
                .expect("insert");
            outbox.db.flush().expect("flush");
        }
        let outbox = reopen(dir.path()).await;
        assert_eq!(outbox.depth().await.expect("depth"), 1);
        assert_eq!(
            outbox.pending("a", 10).await.expect("pending"),
            [old.clone()]
        );
        assert_eq!(outbox.dead_letters("a").await.expect("dead"), [old_dead]);
        assert_eq!(
            outbox.backlog().await.expect("backlog")[0].oldest_pending,
            Some(old.created_at)
        );
        // A retry stores the job in the current format, the body unchanged.
        let mut retried = old.clone();
        retried.attempts = 1;
        outbox.update(&retried).await.expect("update");
        assert_eq!(outbox.head("a").await.expect("head"), Some(retried.clone()));
        let revived = outbox
            .revive("a", "e0")
            .await
            .expect("revive")
            .expect("some");
        assert_eq!(revived.body, old.body);
    }

    #[tokio::test]
    async fn records_are_newest_first_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = SledOutbox::open(dir.path()).expect("open");
        for attempt in 1..=(DELIVERY_RECORDS_KEPT as u32 + 100) {
            let record = DeliveryRecord {
                event_id: "e".into(),
                event: "connected".into(),
                attempt,
                status: DeliveryStatus::Retrying,
                http_status: Some(500),
                error: None,
                duration_ms: 1,
                created_at: Utc::now(),
            };
            outbox.record("a", record).await.expect("record");
        }
        let page = outbox.deliveries("a", 2, 1).await.expect("page");
        assert!(page.total <= DELIVERY_RECORDS_KEPT as u64 + u64::from(TRIM_EVERY));
        assert!(page.total >= DELIVERY_RECORDS_KEPT as u64);
        let attempts: Vec<u32> = page.items.iter().map(|r| r.attempt).collect();
        let last = DELIVERY_RECORDS_KEPT as u32 + 100;
        assert_eq!(attempts, [last - 1, last - 2]);
    }
}
