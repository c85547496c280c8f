//! [`CommitQueue`]: group commit for the writes every message makes.
//!
//! A send, an inbound message, a receipt, an event: each is a small write, and each used to
//! be a transaction of its own on the one write connection, so concurrent instances queued
//! for that connection and paid a `BEGIN … COMMIT` (and the WAL pages it rewrites) apiece.
//! Here one task drains a bounded queue of such writes and commits what has gathered in one
//! transaction:
//!
//! - `BEGIN IMMEDIATE`, every write, `COMMIT`: each statement is a round trip to the
//!   connection's worker thread, so a batch asks for no more of them than its writes need;
//! - when a write fails (one bad row, say a duplicate message), the batch is rolled back
//!   and run again with a `SAVEPOINT` around each write, rolled back to (`ROLLBACK TO`) for
//!   the ones that fail: a failing write fails its own caller only and leaves nothing of
//!   itself behind, and the others commit. Writes are therefore re-runnable: each is a
//!   function of the connection and of state it only reads;
//! - writes of one query each ([`Plain`]: a message with its event, and its sender's
//!   contact for an inbound one, whose returned row gets its follow-up) queued
//!   one after another with the same SQL run as one multi-statement query, up to
//!   [`MERGE`] of them: one round trip instead of one each. The worker thread's wait for
//!   the next statement was half of its time under load (BENCHMARKS.md, "S1: what bounds
//!   it"). When such a query fails, the batch is run again as above, each write alone;
//! - every caller is answered after the `COMMIT`, in queue order: a write answered `Ok` is
//!   committed, so the "stored before announced" rule of the event hub holds, and writes of
//!   one instance (whose actor awaits each) commit and are answered in the order made;
//! - a failed `BEGIN` or `COMMIT` fails every write of the batch with that error.
//!
//! The task takes the write connection from the writer pool for each batch and gives it
//! back after, so the writes that do not come through here (accounts, instances, imports)
//! take their turn on the same connection between batches, without busy waits.
//!
//! Under no load a batch is one write: a lone caller waits for no one.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use futures::future::BoxFuture;
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use wagate_actors::error::StoreError;
use wagate_actors::store::StoreResult;

use super::map_err;
use super::sql::Plain;

/// Writes waiting for the task, past which callers wait to enqueue (back-pressure).
const QUEUE: usize = 4096;
/// Most writes in one transaction: bounds how long the first of them waits for the last.
const BATCH: usize = 256;
/// Most [`Plain`] writes run as one query. Runs are split into powers of two up to this,
/// so each SQL is joined at most five ways, each prepared once and cached.
const MERGE: usize = 16;

/// One queued write: run once, or twice when its batch is replayed, then answered once.
type Job = Box<dyn Write>;

/// What the task does with a queued write.
trait Write: Send {
    /// Runs the write on the batch's connection, keeping its outcome for the answer; says
    /// whether it succeeded.
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, bool>;

    /// Tells the caller how its write ended, given how its batch's commit ended.
    fn answer(self: Box<Self>, committed: StoreResult<()>);

    /// Its one query, when it may run joined with its neighbours of the same SQL.
    fn plain(&self) -> Option<&Plain> {
        None
    }

    /// It ran, joined with its neighbours, and succeeded.
    fn ran_joined(&mut self) {}
}

/// A queued [`Plain`] write.
struct PlainJob<D> {
    write: Plain,
    done: D,
    outcome: Option<StoreResult<()>>,
}

impl<D: FnOnce(StoreResult<()>) + Send> Write for PlainJob<D> {
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let outcome = self.write.run(conn).await;
            let ok = outcome.is_ok();
            self.outcome = Some(outcome);
            ok
        })
    }

    fn answer(self: Box<Self>, committed: StoreResult<()>) {
        (self.done)(match self.outcome {
            Some(outcome) => outcome.and(committed),
            None => Err(committed.err().unwrap_or_else(stopped)),
        })
    }

    fn plain(&self) -> Option<&Plain> {
        Some(&self.write)
    }

    fn ran_joined(&mut self) {
        self.outcome = Some(Ok(()));
    }
}

/// A write as callers give it: a function of the connection and of `state`.
struct Queued<S, T, F, D> {
    state: S,
    write: F,
    done: D,
    /// The last run's outcome; `None` until it ran.
    outcome: Option<StoreResult<T>>,
}

impl<S, T, F, D> Write for Queued<S, T, F, D>
where
    S: Send + Sync,
    T: Send,
    F: for<'c> Fn(&'c mut SqliteConnection, &'c S) -> BoxFuture<'c, StoreResult<T>> + Send,
    D: FnOnce(StoreResult<T>) + Send,
{
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let outcome = (self.write)(conn, &self.state).await;
            let ok = outcome.is_ok();
            self.outcome = Some(outcome);
            ok
        })
    }

    fn answer(self: Box<Self>, committed: StoreResult<()>) {
        (self.done)(match self.outcome {
            // Its own error first: it says more than the batch's would.
            Some(outcome) => outcome.and_then(|value| committed.map(|()| value)),
            None => Err(committed.err().unwrap_or_else(stopped)),
        })
    }
}

/// Cheap to clone: every clone enqueues for the same task.
#[derive(Clone, Debug)]
pub(crate) struct CommitQueue {
    jobs: mpsc::Sender<Job>,
}

impl CommitQueue {
    /// Starts the task committing through `writer` (the pool of the one write connection).
    /// It ends when the last clone of the queue is dropped.
    pub(crate) fn start(writer: SqlitePool) -> CommitQueue {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(drain(rx, writer));
        CommitQueue { jobs }
    }

    /// Runs `write` (given `state`) in the next batch and answers once that batch is
    /// committed: with what `write` returned, or the commit's error. Whatever `write`
    /// changed is undone when it fails, and only that. `write` may run twice (see the
    /// module's notes): it must not change anything but the database.
    ///
    /// Fails with `write`'s own error, or the batch's when its transaction failed
    /// (`Unavailable` when the database is, or the queue's task is gone).
    pub(crate) async fn submit<S, T, F>(&self, state: S, write: F) -> StoreResult<T>
    where
        S: Send + Sync + 'static,
        T: Send + 'static,
        F: for<'c> Fn(&'c mut SqliteConnection, &'c S) -> BoxFuture<'c, StoreResult<T>>
            + Send
            + 'static,
    {
        let (tx, rx) = oneshot::channel();
        // The caller may have given up waiting: nothing to tell then.
        self.enqueue(state, write, move |answer| {
            let _ = tx.send(answer);
        })
        .await;
        rx.await.map_err(|_| stopped())?
    }

    /// [`submit`](Self::submit) without waiting for the commit: returns once `write` is
    /// queued, and `done` gets the answer `submit` would have, on the queue's task once
    /// the batch is committed (in queue order), or at once when the task is gone.
    pub(crate) async fn enqueue<S, T, F>(
        &self,
        state: S,
        write: F,
        done: impl FnOnce(StoreResult<T>) + Send + 'static,
    ) where
        S: Send + Sync + 'static,
        T: Send + 'static,
        F: for<'c> Fn(&'c mut SqliteConnection, &'c S) -> BoxFuture<'c, StoreResult<T>>
            + Send
            + 'static,
    {
        self.push(queued(state, write, done)).await;
    }

    /// [`enqueue`](Self::enqueue) for a [`Plain`] write, which may run joined with the
    /// plain writes of the same SQL queued next to it.
    pub(super) async fn enqueue_plain(
        &self,
        write: Plain,
        done: impl FnOnce(StoreResult<()>) + Send + 'static,
    ) {
        self.push(Box::new(PlainJob {
            write,
            done,
            outcome: None,
        }))
        .await;
    }

    /// [`submit`](Self::submit) for a [`Plain`] write (see
    /// [`enqueue_plain`](Self::enqueue_plain)).
    pub(super) async fn submit_plain(&self, write: Plain) -> StoreResult<()> {
        let (tx, rx) = oneshot::channel();
        self.enqueue_plain(write, move |answer| {
            // The caller may have given up waiting: nothing to tell then.
            let _ = tx.send(answer);
        })
        .await;
        rx.await.map_err(|_| stopped())?
    }

    async fn push(&self, job: Job) {
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job).await {
            job.answer(Err(stopped()));
        }
    }
}

/// The job that runs `write` on `state` and answers `done`.
fn queued<S, T, F>(state: S, write: F, done: impl FnOnce(StoreResult<T>) + Send + 'static) -> Job
where
    S: Send + Sync + 'static,
    T: Send + 'static,
    F: for<'c> Fn(&'c mut SqliteConnection, &'c S) -> BoxFuture<'c, StoreResult<T>>
        + Send
        + 'static,
{
    Box::new(Queued {
        state,
        write,
        done,
        outcome: None,
    })
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the database's writer has stopped".into())
}

async fn drain(mut rx: mpsc::Receiver<Job>, writer: SqlitePool) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        commit(&writer, std::mem::take(&mut batch)).await;
    }
}

/// Runs one batch in one transaction, then answers every job in it.
async fn commit(writer: &SqlitePool, mut batch: Vec<Job>) {
    let committed = run(writer, &mut batch).await;
    for job in batch {
        job.answer(committed.clone());
    }
}

/// Runs the jobs of `batch` in one `BEGIN IMMEDIATE` transaction and commits. When one
/// fails, rolls back and runs them again, each in a savepoint.
async fn run(writer: &SqlitePool, batch: &mut [Job]) -> StoreResult<()> {
    let mut conn = writer.acquire().await.map_err(map_err)?;
    if all_or_nothing(&mut conn, batch).await? {
        return Ok(());
    }
    one_by_one(&mut conn, batch).await
}

/// IMMEDIATE: the write lock is taken at BEGIN, never upgraded (and refused busy) halfway.
const BEGIN: &str = "BEGIN IMMEDIATE";

/// Runs every job, then commits; at the first that fails, rolls all back instead and
/// answers `false`.
async fn all_or_nothing(conn: &mut SqliteConnection, batch: &mut [Job]) -> StoreResult<bool> {
    let mut tx = conn.begin_with(BEGIN).await.map_err(map_err)?;
    let mut rest = batch;
    while !rest.is_empty() {
        let joined = joinable(rest);
        let (now, later) = rest.split_at_mut(joined.max(1));
        let ran = if joined > 1 {
            run_joined(&mut tx, now).await
        } else {
            now[0].run(&mut tx).await
        };
        if !ran {
            tx.rollback().await.map_err(map_err)?;
            return Ok(false);
        }
        rest = later;
    }
    tx.commit().await.map_err(map_err)?;
    Ok(true)
}

/// How many of the first writes of `jobs` run as one query: the plain writes of the
/// first one's SQL that follow one another, [`MERGE`] at most, rounded down to a power
/// of two. 0 or 1: the first runs alone.
fn joinable(jobs: &[Job]) -> usize {
    let Some(sql) = jobs.first().and_then(|job| job.plain()).map(Plain::sql) else {
        return 0;
    };
    let run = jobs
        .iter()
        .take(MERGE)
        .take_while(|job| job.plain().is_some_and(|p| p.sql() == sql))
        .count();
    if run == 0 { 0 } else { 1 << run.ilog2() }
}

/// Runs the plain writes of `jobs` (all of one SQL) as one query, then the follow-up of
/// each on the row it returned; whether all succeeded.
async fn run_joined(conn: &mut SqliteConnection, jobs: &mut [Job]) -> bool {
    let plains: Vec<&Plain> = jobs.iter().filter_map(|job| job.plain()).collect();
    let Some(first) = plains.first() else {
        return true;
    };
    let mut query = sqlx::query(joined_sql(first.sql(), plains.len()));
    for plain in &plains {
        query = match plain.rebind(query) {
            Ok(query) => query,
            // Run alone, each write says what is wrong with it.
            Err(_) => return false,
        };
    }
    match first.follow_up() {
        None => {
            if query.execute(&mut *conn).await.is_err() {
                return false;
            }
        }
        Some(then) => {
            let Ok(rows) = query.fetch_all(&mut *conn).await else {
                return false;
            };
            // One row per write, in order (see `Plain::then`).
            if rows.len() != plains.len() {
                return false;
            }
            for row in &rows {
                if then(&mut *conn, row).await.is_err() {
                    return false;
                }
            }
        }
    }
    for job in jobs {
        job.ran_joined();
    }
    true
}

/// `sql` `times` over, as one query. Made once for each SQL and count (a few of each:
/// see [`joinable`]) and kept, so that sqlx prepares each once and caches it.
fn joined_sql(sql: &'static str, times: usize) -> &'static str {
    static JOINED: OnceLock<Mutex<HashMap<(&'static str, usize), &'static str>>> = OnceLock::new();
    let mut joined = JOINED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    joined
        .entry((sql, times))
        .or_insert_with(|| Box::leak(sql.repeat(times).into_boxed_str()))
}

/// Runs each job in a savepoint of one transaction, rolled back to when the job fails, and
/// commits what succeeded.
async fn one_by_one(conn: &mut SqliteConnection, batch: &mut [Job]) -> StoreResult<()> {
    // Dropped without a commit (an error below), sqlx's transaction rolls back.
    let mut tx = conn.begin_with(BEGIN).await.map_err(map_err)?;
    for job in batch.iter_mut() {
        let mut savepoint = Connection::begin(&mut *tx).await.map_err(map_err)?;
        if job.run(&mut savepoint).await {
            savepoint.commit().await.map_err(map_err)?;
        } else {
            savepoint.rollback().await.map_err(map_err)?;
        }
    }
    tx.commit().await.map_err(map_err)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use wagate_actors::domain::{EventQuery, InstanceEvent, Message, MessageStatus, StatusReport};
    use wagate_actors::store::{EventStore, MessageStore, Storage};

    use super::*;
    use crate::storage::fixtures::{event, message};
    use crate::storage::sqlite::messaging::{insert_message_row, record_write};
    use crate::storage::sqlite::{SqliteStorage, insert_event};

    /// A send's write: its event, then its message (a duplicate fails after the event is
    /// written, so the event must be undone with it).
    fn send(m: Message, e: InstanceEvent) -> (Job, oneshot::Receiver<StoreResult<()>>) {
        let (tx, rx) = oneshot::channel();
        let job = queued(
            (m, e),
            |conn, (m, e)| {
                Box::pin(async move {
                    insert_event(&mut *conn, e).await?;
                    insert_message_row(conn, m, false).await
                })
            },
            move |answer| {
                let _ = tx.send(answer);
            },
        );
        (job, rx)
    }

    /// Three writes in one batch, the middle one a duplicate message: it alone fails, with
    /// the constraint it broke, and leaves nothing behind (its event is not stored); the
    /// writes before and after it are committed, once each (the batch is replayed).
    #[tokio::test]
    async fn a_failing_write_fails_only_itself() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = SqliteStorage::open(&dir.path().join("db.sqlite"))
            .await
            .expect("open");
        let taken = event();
        storage
            .record_message(&message("TAKEN"), None, &taken)
            .await
            .expect("first");

        let (before, after, dup_event) = (event(), event(), event());
        let (a, a_rx) = send(message("A"), before.clone());
        let (dup, dup_rx) = send(message("TAKEN"), dup_event.clone());
        let (b, b_rx) = send(message("B"), after.clone());
        commit(storage.writer(), vec![a, dup, b]).await;

        assert_eq!(a_rx.await.expect("answered"), Ok(()));
        assert_eq!(b_rx.await.expect("answered"), Ok(()));
        match dup_rx.await.expect("answered") {
            Err(StoreError::Conflict(why)) => {
                assert!(why.contains("messages.message_id"), "a clear error: {why}")
            }
            other => panic!("the duplicate answered {other:?}"),
        }
        for wa_id in ["A", "B", "TAKEN"] {
            assert!(
                storage
                    .message_by_id("i", wa_id)
                    .await
                    .expect("read")
                    .is_some(),
                "{wa_id} stored"
            );
        }
        let (events, _) = storage
            .list_events(
                "i",
                &EventQuery {
                    limit: 10,
                    ..EventQuery::default()
                },
            )
            .await
            .expect("events");
        let mut ids: Vec<String> = events.into_iter().map(|e| e.id).collect();
        ids.sort();
        let mut expected = vec![taken.id, before.id, after.id];
        expected.sort();
        assert_eq!(ids, expected, "the duplicate's event is not stored");
        storage.close().await;
    }

    /// A plain send's write, as `record_message_then` queues it.
    fn plain_send(m: Message, e: InstanceEvent) -> (Job, oneshot::Receiver<StoreResult<()>>) {
        let (tx, rx) = oneshot::channel();
        let write = record_write(&m, None, &e).expect("bound");
        let job: Job = Box::new(PlainJob {
            write,
            done: move |answer| {
                let _ = tx.send(answer);
            },
            outcome: None,
        });
        (job, rx)
    }

    /// Plain writes of one SQL run joined in powers of two, up to `MERGE`; anything else
    /// runs alone.
    #[test]
    fn runs_of_plain_writes_are_joined_in_powers_of_two() {
        let plain = |n: usize| -> Vec<Job> {
            (0..n)
                .map(|i| plain_send(message(&format!("P{i}")), event()).0)
                .collect()
        };
        for (n, joined) in [
            (1, 1),
            (2, 2),
            (3, 2),
            (7, 4),
            (8, 8),
            (15, 8),
            (16, 16),
            (40, 16),
        ] {
            assert_eq!(joinable(&plain(n)), joined, "{n} plain writes");
        }
        let other = send(message("O"), event()).0;
        assert_eq!(joinable(&[other]), 0, "a write that is not plain");
        let mut mixed = plain(3);
        mixed.insert(2, send(message("O2"), event()).0);
        assert_eq!(
            joinable(&mixed),
            2,
            "up to the first write that is not plain"
        );
        assert_eq!(joinable(&[]), 0);
        assert_eq!(joined_sql("SELECT 1;", 3), "SELECT 1;SELECT 1;SELECT 1;");
    }

    /// Eleven plain sends in one batch (joined 8 + 2, then one alone) are each stored
    /// once, with their events; when one of them is a duplicate, the batch runs again
    /// write by write, and it alone fails.
    #[tokio::test]
    async fn joined_plain_writes_store_each_once_and_fail_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = SqliteStorage::open(&dir.path().join("db.sqlite"))
            .await
            .expect("open");
        let count = |storage: &SqliteStorage| {
            let writer = storage.writer().clone();
            async move {
                let n: (i64, i64) = sqlx::query_as(
                    "SELECT (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM events)",
                )
                .fetch_one(&writer)
                .await
                .expect("count");
                n
            }
        };
        let (mut jobs, answers): (Vec<Job>, Vec<_>) = (0..11)
            .map(|i| plain_send(message(&format!("J{i}")), event()))
            .unzip();
        // All in the first run: joined, nothing replayed.
        let mut conn = storage.writer().acquire().await.expect("connection");
        assert_eq!(all_or_nothing(&mut conn, &mut jobs).await, Ok(true));
        drop(conn);
        for job in jobs {
            job.answer(Ok(()));
        }
        for answer in answers {
            assert_eq!(answer.await.expect("answered"), Ok(()));
        }
        assert_eq!(count(&storage).await, (11, 11));
        for i in 0..11 {
            let stored = storage
                .message_by_id("i", &format!("J{i}"))
                .await
                .expect("read");
            assert!(stored.is_some(), "J{i} stored");
        }

        let (jobs, answers): (Vec<Job>, Vec<_>) = (0..8)
            .map(|i| {
                let id = if i == 5 {
                    "J3".to_owned()
                } else {
                    format!("K{i}")
                };
                plain_send(message(&id), event())
            })
            .unzip();
        commit(storage.writer(), jobs).await;
        for (i, answer) in answers.into_iter().enumerate() {
            let answer = answer.await.expect("answered");
            if i == 5 {
                assert!(matches!(answer, Err(StoreError::Conflict(_))), "{answer:?}");
            } else {
                assert_eq!(answer, Ok(()), "K{i}");
            }
        }
        assert_eq!(count(&storage).await, (18, 18), "seven more, once each");
        storage.close().await;
    }

    /// Inbound messages with their senders' contacts run joined too: each contact's row
    /// comes back from the joined query, and a merge that changed a name rewrites its
    /// search text.
    #[tokio::test]
    async fn joined_inbound_writes_keep_their_contacts_searchable() {
        use wagate_actors::domain::{Contact, ContactQuery};
        use wagate_actors::store::ContactStore;

        let dir = tempfile::tempdir().expect("temp dir");
        let storage = SqliteStorage::open(&dir.path().join("db.sqlite"))
            .await
            .expect("open");
        let now = Utc::now();
        let inbound = |wa_id: &str, jid: &str, push_name: &str| {
            let (tx, rx) = oneshot::channel();
            let m = Message {
                from_me: false,
                remote_jid: jid.into(),
                ..message(wa_id)
            };
            let contact = Contact {
                push_name: Some(push_name.into()),
                ..Contact::new("i", jid, now)
            };
            let job: Job = Box::new(PlainJob {
                write: record_write(&m, Some(&contact), &event()).expect("bound"),
                done: move |answer| {
                    let _ = tx.send(answer);
                },
                outcome: None,
            });
            (job, rx)
        };
        let (ann, bob) = ("79005550001@s.whatsapp.net", "79005550002@s.whatsapp.net");
        let (mut jobs, answers): (Vec<Job>, Vec<_>) = [
            inbound("I1", ann, "Ann"),
            inbound("I2", bob, "Bob"),
            inbound("I3", ann, "Annabel"),
            inbound("I4", bob, "Bob"),
        ]
        .into_iter()
        .unzip();
        assert_eq!(joinable(&jobs), 4);
        let mut conn = storage.writer().acquire().await.expect("connection");
        assert_eq!(all_or_nothing(&mut conn, &mut jobs).await, Ok(true));
        drop(conn);
        for job in jobs {
            job.answer(Ok(()));
        }
        for answer in answers {
            assert_eq!(answer.await.expect("answered"), Ok(()));
        }
        let search = |text: &str| ContactQuery {
            limit: 10,
            search: Some(text.into()),
            ..ContactQuery::default()
        };
        let found = storage
            .list_contacts("i", &search("annabel"))
            .await
            .expect("list");
        assert_eq!(found.total, 1, "the merged name is searchable");
        assert_eq!(found.items[0].push_name.as_deref(), Some("Annabel"));
        let all = storage.list_contacts("i", &search("")).await.expect("list");
        assert_eq!(all.total, 2, "one contact per sender");
        storage.close().await;
    }

    /// A status change whose event cannot be stored is not stored either: a receipt is
    /// never kept without the `message_status` event (and webhook) reporting it.
    #[tokio::test]
    async fn a_status_moves_only_with_its_event() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = SqliteStorage::open(&dir.path().join("db.sqlite"))
            .await
            .expect("open");
        storage
            .record_message(&message("A"), None, &event())
            .await
            .expect("stored");
        sqlx::query(
            "CREATE TRIGGER refuse_status BEFORE INSERT ON events
             WHEN NEW.kind = 'message_status' BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .execute(storage.writer())
        .await
        .expect("trigger");
        let refused = storage
            .advance_message_status(
                "i",
                "A",
                MessageStatus::Delivered,
                Utc::now(),
                &StatusReport::new(None),
            )
            .await;
        assert!(
            refused.is_err(),
            "the event's failure is the write's: {refused:?}"
        );
        async fn status(storage: &SqliteStorage) -> Option<MessageStatus> {
            let stored = storage.message_by_id("i", "A").await.expect("read");
            stored.map(|m| m.status)
        }
        assert_eq!(status(&storage).await, Some(MessageStatus::Sent));

        sqlx::query("DROP TRIGGER refuse_status")
            .execute(storage.writer())
            .await
            .expect("drop");
        let stored = storage
            .advance_message_status(
                "i",
                "A",
                MessageStatus::Delivered,
                Utc::now(),
                &StatusReport::new(None),
            )
            .await
            .expect("advance")
            .expect("moved");
        assert_eq!(status(&storage).await, Some(MessageStatus::Delivered));
        let (events, _) = storage
            .list_events(
                "i",
                &EventQuery {
                    types: vec!["message_status".into()],
                    limit: 10,
                    ..EventQuery::default()
                },
            )
            .await
            .expect("events");
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, vec![stored.id.as_str()], "stored with the change");
        storage.close().await;
    }

    /// A batch whose transaction cannot begin fails every write in it with that error.
    #[tokio::test]
    async fn a_batch_that_cannot_begin_fails_every_write() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = SqliteStorage::open(&dir.path().join("db.sqlite"))
            .await
            .expect("open");
        storage.writer().close().await;
        let (a, a_rx) = send(message("A"), event());
        let (b, b_rx) = send(message("B"), event());
        commit(storage.writer(), vec![a, b]).await;
        for rx in [a_rx, b_rx] {
            assert!(
                matches!(rx.await.expect("answered"), Err(StoreError::Unavailable(_))),
                "failed with the batch's error"
            );
        }
        storage.close().await;
    }
}
