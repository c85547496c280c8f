//! [`MongoCommits`]: group commit of the messages MongoDB stores, the counterpart of
//! SQLite's commit queue.
//!
//! Every send and inbound message stores a message, maybe its contact, and its event in
//! one transaction: five round trips or more each (start, three writes, commit). Here
//! one task drains a bounded queue of such records and stores what has gathered as one
//! transaction: the messages with one `insertMany`, the contacts one upsert each, the
//! events with one `insertMany`, one commit. Every caller is answered after the commit,
//! in queue order, so "stored before announced" holds and one instance's records commit
//! in the order it made them.
//!
//! When the batch's transaction fails (one message a duplicate, a contact raced by
//! another writer, a write conflict) nothing of it was written; its records are then
//! stored one transaction each, in order, and each caller gets its own record's outcome:
//! one bad record fails only its caller. A deployment without transactions (a standalone
//! server) stores them one by one as before.
//!
//! Under no load a batch is one record: a lone caller waits for no one.

use mongodb::bson::Document;
use tokio::sync::{mpsc, oneshot};
use wagate_actors::domain::Contact;
use wagate_actors::error::StoreError;
use wagate_actors::store::{Committed, StoreResult};

use super::MongoStorage;

/// Records waiting for the task, past which callers wait to enqueue (back-pressure).
const QUEUE: usize = 4096;
/// Most records in one transaction.
const BATCH: usize = 128;

/// One message with what is recorded beside it, as documents.
pub(super) struct Record {
    pub(super) message: Document,
    pub(super) contact: Option<Contact>,
    pub(super) event: Document,
}

struct Job {
    record: Record,
    done: Committed,
}

/// Cheap to clone: every clone enqueues for the same task.
#[derive(Clone, Debug)]
pub(super) struct MongoCommits {
    jobs: mpsc::Sender<Job>,
}

impl MongoCommits {
    /// Starts the task storing through `store` (a storage without a queue of its own). It
    /// ends when the last clone of the queue is dropped.
    pub(super) fn start(store: MongoStorage) -> MongoCommits {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(drain(rx, store));
        MongoCommits { jobs }
    }

    /// Queues the record; `done` gets its outcome once its batch is stored (or failed).
    pub(super) async fn enqueue(&self, record: Record, done: Committed) {
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(Job { record, done }).await {
            (job.done)(Err(stopped()));
        }
    }

    /// Stores the record in the next batch and returns its outcome.
    pub(super) async fn submit(&self, record: Record) -> StoreResult<()> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(
            record,
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        )
        .await;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the database's writer has stopped".into())
}

async fn drain(mut rx: mpsc::Receiver<Job>, store: MongoStorage) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        commit(&store, std::mem::take(&mut batch)).await;
    }
}

/// Stores one batch, then answers every job in it, in order.
async fn commit(store: &MongoStorage, batch: Vec<Job>) {
    if batch.len() > 1 {
        let records: Vec<&Record> = batch.iter().map(|j| &j.record).collect();
        match store.record_batch(&records).await {
            Ok(true) => {
                for job in batch {
                    (job.done)(Ok(()));
                }
                return;
            }
            // No transactions here, or the batch failed as a whole (nothing of it was
            // written): each record on its own.
            Ok(false) => {}
            Err(err) => {
                tracing::debug!(records = batch.len(), err = %StoreError::from(err),
                    "a batch of messages failed; storing them one by one");
            }
        }
    }
    for job in batch {
        let Record {
            message,
            contact,
            event,
        } = &job.record;
        let outcome = store.record_docs(message, contact.as_ref(), event).await;
        (job.done)(outcome);
    }
}
