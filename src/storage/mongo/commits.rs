//! [`CommitQueue`]: group commit on MongoDB for the messages and receipts the instance
//! actors pipeline
//! ([`record_message_then`](wagate_actors::store::MessageStore::record_message_then),
//! [`advance_message_status_then`](wagate_actors::store::MessageStore::advance_message_status_then)).
//!
//! Each message is its document, its event and maybe its contact, written in one
//! transaction. One at a time, that is a transaction per message, and the actors of many
//! instances queue for the server with a few round trips apiece. Here one task drains a
//! bounded queue of them and writes what has gathered in one transaction:
//!
//! - the batch in one transaction, in queue order: each run of messages in one ordered
//!   `insertMany`, then their contacts (one upsert each: the driver has no batched
//!   find-and-modify); each receipt's status move (it may be for a message queued just
//!   before it); then every event in one `insertMany`, and the commit. A batch of sends
//!   is three round trips instead of three per send;
//! - when the batch fails for good (one bad row, say a duplicate message, aborts the whole
//!   transaction), each of its writes runs again on its own, in order, in a transaction of
//!   its own: a failing write fails its own caller only and leaves nothing of itself
//!   behind;
//! - every caller is told after the commit, in queue order, so "stored before announced"
//!   holds and the writes of one instance are told in the order made;
//! - the event hub's own events (`append_event`) queue here too, so that events are
//!   stored and announced in the order their ids were made, as the webhook queue's
//!   cursor needs, whichever task made them.
//!
//! A deployment without transactions (a standalone server) has no queue: each message is
//! written on its own there, by its instance, as `record_message` does.
//!
//! Under no load a batch is one write: a lone caller waits for no one.

use mongodb::bson::Document;
use tokio::sync::mpsc;
use wagate_actors::domain::{Contact, InstanceEvent};
use wagate_actors::error::StoreError;
use wagate_actors::store::{Committed, StoreResult};

use super::tx::{TxError, in_session, in_transaction};
use super::{EVENTS, MESSAGES, MongoStorage, event_doc, is_duplicate_key};
use crate::storage::StatusChange;

/// Writes waiting for the task, past which callers wait to enqueue (back-pressure).
const QUEUE: usize = 4096;
/// Most messages in one transaction: bounds how long the first of them waits for the last,
/// and keeps a batch's documents well under the server's 16 MB message size.
const BATCH: usize = 128;

/// A message to write, as documents.
pub(super) struct Write {
    pub message: Document,
    pub contact: Option<Contact>,
    pub event: Document,
}

/// A queued write and whom to tell.
pub(super) enum Job {
    /// A message, batched with the messages queued next to it.
    Record { write: Box<Write>, done: Committed },
    /// A receipt's status: on its own, after the messages queued before it (it may be
    /// one of theirs).
    Status {
        change: StatusChange,
        done: Committed<Option<InstanceEvent>>,
    },
    /// An event of its own (the event hub's): after the writes queued before it, so that
    /// events are stored, and announced, in the order of their ids.
    Event { event: Document, done: Committed },
}

impl Job {
    fn fail(self, err: StoreError) {
        match self {
            Job::Record { done, .. } | Job::Event { done, .. } => done(Err(err)),
            Job::Status { done, .. } => done(Err(err)),
        }
    }
}

/// The queue's sending end. Cheap to clone.
#[derive(Clone, Debug)]
pub(super) struct CommitQueue {
    jobs: mpsc::Sender<Job>,
}

impl CommitQueue {
    /// Starts the task writing through `storage`, which must not hold this queue: the task
    /// ends when the last handle of the queue is dropped.
    pub(super) fn start(storage: MongoStorage) -> CommitQueue {
        debug_assert!(
            storage.commits.is_none(),
            "the task would keep its own queue open"
        );
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(drain(rx, storage));
        CommitQueue { jobs }
    }

    /// Queues `job`; tells it at once when the task is gone.
    pub(super) async fn enqueue(&self, job: Job) {
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job).await {
            job.fail(StoreError::Unavailable(
                "the database's writer has stopped".into(),
            ));
        }
    }
}

async fn drain(mut rx: mpsc::Receiver<Job>, storage: MongoStorage) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        storage.commit(std::mem::take(&mut batch)).await;
    }
}

impl MongoStorage {
    /// Writes `batch` in one transaction and tells each of its callers, in order. When a
    /// row of it fails (a duplicate message, say), writes each of its jobs on its own;
    /// when the database does (unreachable, or closed), fails every job with that error
    /// at once rather than trying each against it.
    async fn commit(&self, batch: Vec<Job>) {
        let (ops, dones): (Vec<Op>, Vec<Done>) = batch.into_iter().map(Job::split).unzip();
        let outcomes = match self.write_batch(&ops).await {
            Ok(Some(outcomes)) => outcomes,
            Err(err @ StoreError::Unavailable(_)) => {
                let outcomes = ops.iter().map(|_| Err(err.clone())).collect();
                return tell(dones, outcomes);
            }
            failed => {
                if let Err(err) = failed
                    && ops.len() > 1
                {
                    tracing::debug!(%err, size = ops.len(), "a batch failed; writing its jobs one by one");
                }
                let mut outcomes = Vec::with_capacity(ops.len());
                for op in &ops {
                    outcomes.push(match op {
                        Op::Record(w) => self
                            .record_docs(&w.message, w.contact.as_ref(), &w.event)
                            .await
                            .map(|()| None),
                        Op::Event(event) => self.insert_event_doc(event).await.map(|()| None),
                        Op::Status(change) => self.advance(change).await,
                    });
                }
                return tell(dones, outcomes);
            }
        };
        tell(dones, outcomes.into_iter().map(Ok).collect());
    }

    /// The whole batch in one transaction, in order, tried again while the server calls
    /// its failure transient: each run of messages in one ordered `insertMany` and their
    /// contacts, each status move, then every event in one `insertMany`. Returns the
    /// status moves' events (None for the messages, and for a move that changed nothing).
    /// None when the deployment turned out to have no transactions (nothing written).
    async fn write_batch(&self, ops: &[Op]) -> StoreResult<Option<Vec<Option<InstanceEvent>>>> {
        let (messages, events) = (self.coll(MESSAGES)?, self.coll(EVENTS)?);
        in_transaction!(&self.client, |session| async {
            let Some(session) = session else {
                return Ok(None);
            };
            let mut outcomes = Vec::with_capacity(ops.len());
            let mut stored = Vec::with_capacity(ops.len());
            let mut rest = ops;
            while let Some(op) = rest.first() {
                match op {
                    Op::Record(_) => {
                        let run: Vec<&Write> = rest
                            .iter()
                            .map_while(|op| match op {
                                Op::Record(w) => Some(&**w),
                                Op::Status(_) | Op::Event(_) => None,
                            })
                            .collect();
                        in_session!(
                            Some(&mut *session),
                            messages.insert_many(run.iter().map(|w| &w.message))
                        )?;
                        for contact in run.iter().filter_map(|w| w.contact.as_ref()) {
                            match self.upsert_contact_once(contact, Some(&mut *session)).await {
                                // Created meanwhile by another writer: the batch again.
                                Err(TxError::Mongo(e)) if is_duplicate_key(&e) => {
                                    return Err(TxError::ContactRace);
                                }
                                other => {
                                    other?;
                                }
                            }
                        }
                        stored.extend(run.iter().map(|w| w.event.clone()));
                        outcomes.extend(run.iter().map(|_| None));
                        rest = &rest[run.len()..];
                    }
                    Op::Event(event) => {
                        stored.push(event.clone());
                        outcomes.push(None);
                        rest = &rest[1..];
                    }
                    Op::Status(change) => {
                        let event = self.advance_in(change, Some(&mut *session)).await?;
                        if let Some(event) = &event {
                            stored.push(event_doc(event)?);
                        }
                        outcomes.push(event);
                        rest = &rest[1..];
                    }
                }
            }
            if !stored.is_empty() {
                in_session!(Some(session), events.insert_many(&stored))?;
            }
            Ok(Some(outcomes))
        }
        .await)
        .await
    }
}

/// What a batch writes, without whom to tell (which is not `Sync`).
enum Op {
    Record(Box<Write>),
    Status(StatusChange),
    Event(Document),
}

/// Whom to tell how a job ended.
enum Done {
    Record(Committed),
    Status(Committed<Option<InstanceEvent>>),
}

impl Job {
    fn split(self) -> (Op, Done) {
        match self {
            Job::Record { write, done } => (Op::Record(write), Done::Record(done)),
            Job::Status { change, done } => (Op::Status(change), Done::Status(done)),
            Job::Event { event, done } => (Op::Event(event), Done::Record(done)),
        }
    }
}

/// Tells each job of a batch its outcome, in order.
fn tell(dones: Vec<Done>, outcomes: Vec<StoreResult<Option<InstanceEvent>>>) {
    for (done, outcome) in dones.into_iter().zip(outcomes) {
        match done {
            Done::Record(done) => done(outcome.map(drop)),
            Done::Status(done) => done(outcome),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use tokio::sync::oneshot;
    use wagate_actors::domain::{
        ContactQuery, EventQuery, InstanceEvent, Message, MessageStatus, StatusReport, new_id,
    };
    use wagate_actors::store::{ContactStore, EventStore, MessageStore, Storage};

    use super::*;
    use crate::storage::fixtures::{event, message};

    /// The MongoDB test server's database of its own for one test.
    async fn storage() -> MongoStorage {
        let base = std::env::var("WAGATE_TEST_MONGODB_URL").unwrap_or_else(|_| {
            panic!(
                "WAGATE_TEST_MONGODB_URL is not set: run ./scripts/test, which starts the \
                 MongoDB test server"
            )
        });
        let url = format!("{}/wagate_test_{}", base.trim_end_matches('/'), new_id());
        MongoStorage::connect(&url).await.expect("connect")
    }

    fn contact(push_name: &str) -> Contact {
        let now = Utc::now();
        Contact {
            id: new_id(),
            instance_id: "i".into(),
            remote_jid: "79001234567@s.whatsapp.net".into(),
            number: "79001234567".into(),
            name: None,
            push_name: Some(push_name.into()),
            is_group: false,
            profile_picture: None,
            about: None,
            last_activity: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// A write of `m` with `e` (and `c`) and where its outcome is told.
    fn job(
        m: &Message,
        c: Option<Contact>,
        e: &InstanceEvent,
    ) -> (Job, oneshot::Receiver<StoreResult<()>>) {
        let (tx, rx) = oneshot::channel();
        let job = Job::Record {
            write: Box::new(Write::of(m, c.as_ref(), e).expect("documents")),
            done: Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        };
        (job, rx)
    }

    /// An event queued on its own, and where its outcome is told.
    fn event_job(e: &InstanceEvent) -> (Job, oneshot::Receiver<StoreResult<()>>) {
        let (tx, rx) = oneshot::channel();
        let event = crate::storage::mongo::event_doc(e).expect("event");
        let done = Box::new(move |outcome| {
            let _ = tx.send(outcome);
        });
        (Job::Event { event, done }, rx)
    }

    /// A receipt moving `wa_id` to `status`, and where its outcome is told.
    fn receipt(
        wa_id: &str,
        status: MessageStatus,
    ) -> (Job, oneshot::Receiver<StoreResult<Option<InstanceEvent>>>) {
        let (tx, rx) = oneshot::channel();
        let change = StatusChange::new("i", wa_id, status, Utc::now(), &StatusReport::new(None));
        let done = Box::new(move |outcome| {
            let _ = tx.send(outcome);
        });
        (Job::Status { change, done }, rx)
    }

    async fn event_ids(storage: &MongoStorage) -> Vec<String> {
        let query = EventQuery {
            limit: 100,
            ..EventQuery::default()
        };
        let (events, _) = storage.list_events("i", &query).await.expect("events");
        let mut ids: Vec<String> = events.into_iter().map(|e| e.id).collect();
        ids.sort();
        ids
    }

    /// The test server is a replica set (of one node): its storage queues, so the
    /// storage suites run the batches.
    #[tokio::test]
    async fn a_replica_set_gets_the_queue() {
        let storage = storage().await;
        assert!(storage.commits.is_some());
        storage.close().await;
    }

    /// A batch is stored whole, its contacts upserted in order (the last name wins), and
    /// each caller told `Ok` once it is committed.
    #[tokio::test]
    async fn a_batch_is_stored_with_its_contacts_and_events() {
        let storage = storage().await;
        let (a, b, c) = (event(), event(), event());
        let (ja, ra) = job(&message("A"), Some(contact("Ann")), &a);
        let (jb, rb) = job(&message("B"), None, &b);
        let (jc, rc) = job(&message("C"), Some(contact("Bob")), &c);
        storage.commit(vec![ja, jb, jc]).await;
        for rx in [ra, rb, rc] {
            assert_eq!(rx.await.expect("told"), Ok(()));
        }
        let mut expected = vec![a.id, b.id, c.id];
        expected.sort();
        assert_eq!(event_ids(&storage).await, expected);
        let query = ContactQuery {
            limit: 10,
            ..ContactQuery::default()
        };
        let contacts = storage.list_contacts("i", &query).await.expect("contacts");
        assert_eq!(contacts.total, 1, "one contact, upserted twice");
        assert_eq!(contacts.items[0].push_name.as_deref(), Some("Bob"));
        storage.close().await;
    }

    /// Receipts in a batch move the messages queued before them in the same batch, in
    /// order, and their events are stored with them; one for an unknown message or a
    /// move backwards changes nothing.
    #[tokio::test]
    async fn receipts_in_a_batch_follow_the_messages_before_them() {
        let storage = storage().await;
        let a = event();
        let (ja, ra) = job(&message("A"), None, &a);
        let (jr, rr) = receipt("A", MessageStatus::Read);
        let (jl, rl) = receipt("A", MessageStatus::Delivered);
        let (ju, ru) = receipt("UNKNOWN", MessageStatus::Read);
        storage.commit(vec![ja, jr, jl, ju]).await;
        assert_eq!(ra.await.expect("told"), Ok(()));
        let read = rr.await.expect("told").expect("stored").expect("moved");
        assert_eq!(rl.await.expect("told"), Ok(None), "no move backwards");
        assert_eq!(ru.await.expect("told"), Ok(None), "no such message");
        let stored = storage.message_by_id("i", "A").await.expect("read");
        assert_eq!(stored.map(|m| m.status), Some(MessageStatus::Read));
        let mut expected = vec![a.id, read.id];
        expected.sort();
        assert_eq!(event_ids(&storage).await, expected);
        storage.close().await;
    }

    /// A duplicate message in a batch fails alone, with a conflict, and leaves nothing of
    /// itself behind (its event is not stored); the messages before and after it are
    /// stored, once each, with their events. So does an event whose id is taken, beside
    /// one that is not.
    #[tokio::test]
    async fn a_failing_message_fails_only_itself() {
        let storage = storage().await;
        let taken = event();
        storage
            .record_message(&message("TAKEN"), None, &taken)
            .await
            .expect("first");
        let (before, dup, after, own) = (event(), event(), event(), event());
        let (ja, ra) = job(&message("A"), None, &before);
        let (jd, rd) = job(&message("TAKEN"), Some(contact("Dup")), &dup);
        let (jb, rb) = job(&message("B"), None, &after);
        // An event of its own, and one whose id is taken.
        let (je, re) = event_job(&own);
        let (jt, rt) = event_job(&taken);
        storage.commit(vec![ja, jd, jb, je, jt]).await;
        assert_eq!(ra.await.expect("told"), Ok(()));
        assert_eq!(rb.await.expect("told"), Ok(()));
        assert_eq!(re.await.expect("told"), Ok(()));
        let told = rt.await.expect("told");
        assert!(matches!(told, Err(StoreError::Conflict(_))), "{told:?}");
        let told = rd.await.expect("told");
        assert!(matches!(told, Err(StoreError::Conflict(_))), "{told:?}");
        for wa_id in ["A", "B", "TAKEN"] {
            let stored = storage.message_by_id("i", wa_id).await.expect("read");
            assert!(stored.is_some(), "{wa_id} stored");
        }
        let mut expected = vec![taken.id, before.id, after.id, own.id];
        expected.sort();
        assert_eq!(
            event_ids(&storage).await,
            expected,
            "the duplicate's event is not stored"
        );
        let query = ContactQuery {
            limit: 10,
            ..ContactQuery::default()
        };
        let contacts = storage.list_contacts("i", &query).await.expect("contacts");
        assert_eq!(contacts.total, 0, "nor its contact");
        storage.close().await;
    }
}
