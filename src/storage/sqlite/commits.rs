//! [`CommitQueue`]: group commit for the writes every message makes.
//!
//! A send, an inbound message, a receipt, an event: each is a small write, and each used to
//! be a transaction of its own on the one write connection, so concurrent instances queued
//! for that connection and paid a `BEGIN … COMMIT` (and the WAL pages it rewrites) apiece.
//! Here one task drains a bounded queue of such writes and commits what has gathered in one
//! transaction:
//!
//! - `BEGIN IMMEDIATE`, then per write `SAVEPOINT`, the write, `RELEASE` (or `ROLLBACK TO`
//!   when it failed: one bad row, say a duplicate message, fails its own caller only and
//!   leaves nothing of itself behind), then `COMMIT`;
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

use futures::future::BoxFuture;
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use wagate_actors::error::StoreError;
use wagate_actors::store::StoreResult;

use super::map_err;

/// Writes waiting for the task, past which callers wait to enqueue (back-pressure).
const QUEUE: usize = 4096;
/// Most writes in one transaction: bounds how long the first of them waits for the last.
const BATCH: usize = 256;

/// Tells one caller how its write ended, given how the batch's commit ended.
type Answer = Box<dyn FnOnce(StoreResult<()>) + Send>;

/// One queued write. Given the batch's connection it runs and says whether it succeeded;
/// given none (the batch failed before its turn) it does not run. Either way it hands back
/// the answer to send once the batch's fate is known.
type Job = Box<
    dyn for<'c> FnOnce(Option<&'c mut SqliteConnection>) -> BoxFuture<'c, (bool, Answer)> + Send,
>;

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

    /// Runs `write` in the next batch and answers once that batch is committed: with what
    /// `write` returned, or the commit's error. Whatever `write` changed is undone when it
    /// fails, and only that.
    ///
    /// Fails with `write`'s own error, or the batch's when its transaction failed
    /// (`Unavailable` when the database is, or the queue's task is gone).
    pub(crate) async fn submit<T, F>(&self, write: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>>
            + Send
            + 'static,
    {
        let (tx, rx) = oneshot::channel();
        // The caller may have given up waiting: nothing to tell then.
        self.enqueue(write, move |answer| {
            let _ = tx.send(answer);
        })
        .await;
        rx.await.map_err(|_| stopped())?
    }

    /// [`submit`](Self::submit) without waiting for the commit: returns once `write` is
    /// queued, and `done` gets the answer `submit` would have, on the queue's task once
    /// the batch is committed (in queue order), or at once when the task is gone.
    pub(crate) async fn enqueue<T, F>(
        &self,
        write: F,
        done: impl FnOnce(StoreResult<T>) + Send + 'static,
    ) where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>>
            + Send
            + 'static,
    {
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job(write, done)).await {
            let (_, answer) = job(None).await;
            answer(Err(stopped()));
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the database's writer has stopped".into())
}

/// A job running `write`, whose answer goes to `done`.
fn job<T, F>(write: F, done: impl FnOnce(StoreResult<T>) + Send + 'static) -> Job
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
{
    Box::new(move |conn| {
        Box::pin(async move {
            let result = match conn {
                Some(conn) => Some(write(conn).await),
                None => None,
            };
            let ok = matches!(result, Some(Ok(_)));
            let answer: Answer = Box::new(move |committed| {
                done(match result {
                    // Its own error first: it says more than the batch's would.
                    Some(result) => result.and_then(|value| committed.map(|()| value)),
                    None => Err(committed.err().unwrap_or_else(stopped)),
                })
            });
            (ok, answer)
        })
    })
}

async fn drain(mut rx: mpsc::Receiver<Job>, writer: SqlitePool) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        commit(&writer, std::mem::take(&mut batch)).await;
    }
}

/// Runs one batch in one transaction, then answers every job in it.
pub(super) async fn commit(writer: &SqlitePool, batch: Vec<Job>) {
    let mut answers = Vec::with_capacity(batch.len());
    let committed = run(writer, batch, &mut answers).await;
    for answer in answers {
        answer(committed.clone());
    }
}

/// Runs the jobs of `batch` (each in a savepoint of one `BEGIN IMMEDIATE` transaction)
/// and commits; pushes each job's answer. A job that fails is rolled back to its
/// savepoint; a failure of the transaction itself fails the batch.
async fn run(writer: &SqlitePool, batch: Vec<Job>, answers: &mut Vec<Answer>) -> StoreResult<()> {
    let mut jobs = batch.into_iter();
    let outcome = async {
        let mut conn = writer.acquire().await.map_err(map_err)?;
        // IMMEDIATE: the write lock is taken at BEGIN, never upgraded (and refused busy)
        // halfway. Dropped without a commit, sqlx's transaction rolls back.
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
        for job in jobs.by_ref() {
            let mut savepoint = match Connection::begin(&mut *tx).await {
                Ok(savepoint) => savepoint,
                Err(err) => {
                    answers.push(job(None).await.1);
                    return Err(map_err(err));
                }
            };
            let (ok, answer) = job(Some(&mut *savepoint)).await;
            answers.push(answer);
            if ok {
                savepoint.commit().await.map_err(map_err)?;
            } else {
                savepoint.rollback().await.map_err(map_err)?;
            }
        }
        tx.commit().await.map_err(map_err)
    }
    .await;
    if outcome.is_err() {
        for job in jobs {
            answers.push(job(None).await.1);
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use wagate_actors::domain::event::Connected;
    use wagate_actors::domain::{Event, EventQuery, InstanceEvent, Message, MessageStatus};
    use wagate_actors::store::{EventStore, MessageStore, Storage};

    use super::*;
    use crate::storage::sqlite::{SqliteStorage, insert_event, messaging::insert_message_row};

    fn message(wa_id: &str) -> Message {
        let now = Utc::now();
        Message {
            id: wagate_actors::domain::new_id(),
            instance_id: "i".into(),
            message_id: wa_id.into(),
            remote_jid: "79001234567@s.whatsapp.net".into(),
            from_me: true,
            message_type: "text".into(),
            content: Some(wa_id.into()),
            has_media: false,
            media_url: None,
            caption: None,
            mime_type: None,
            file_name: None,
            media_path: None,
            media_size: None,
            status: MessageStatus::Sent,
            push_name: None,
            metadata: serde_json::json!({}),
            timestamp: now,
            created_at: now,
            updated_at: now,
            status_updated_at: None,
            quoted_message_id: None,
            mentions: Vec::new(),
            reactions: Vec::new(),
            edited_at: None,
            revoked: false,
            typed: Default::default(),
            message_secret: None,
        }
    }

    fn event() -> InstanceEvent {
        InstanceEvent::new(
            "i",
            Event::Connected(Connected {
                phone: "1".into(),
                push_name: None,
            }),
        )
    }

    /// A send's write: its message, then its event.
    fn send(m: Message, e: InstanceEvent) -> (Job, oneshot::Receiver<StoreResult<()>>) {
        let (tx, rx) = oneshot::channel();
        let job = job(
            move |conn| {
                Box::pin(async move {
                    insert_message_row(&mut *conn, &m, false).await?;
                    insert_event(conn, &e).await
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
    /// writes before and after it are committed.
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
