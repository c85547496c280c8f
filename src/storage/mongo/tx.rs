//! Multi-document transactions: a write and the event that reports it, together.
//!
//! Transactions need a replica set (the test server is a single-node one). On a
//! standalone server the writes of a [`Tx`] run once, in order, without one: a crash
//! between them keeps the first and loses the rest.

use mongodb::error::{
    Error as MongoError, ErrorKind, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT,
};
use mongodb::{Client, ClientSession};
use wagate_actors::error::StoreError;
use wagate_actors::store::StoreResult;

use super::map_err;

/// How often a transaction the server failed as transient (a write conflict) is tried.
pub(super) const TRANSACTION_ATTEMPTS: u32 = 5;

/// Runs a driver action inside the transaction of `$session` (an
/// `Option<&mut ClientSession>`) when there is one.
macro_rules! in_session {
    ($session:expr, $action:expr) => {
        match $session {
            Some(session) => $action.session(session).await,
            None => $action.await,
        }
    };
}
pub(super) use in_session;

/// Runs `$writes` as one transaction of `$client` (see [`Tx`]), again (the whole
/// expression, re-evaluated) while the server calls its failure transient; a future of
/// its `StoreResult`. `$writes` awaits its
/// writes through `$session` (an `Option<&mut ClientSession>`, None where the deployment
/// has no transactions: pass it on with [`in_session!`]) and gives a `Result<_, TxError>`:
///
/// ```ignore
/// in_transaction!(&self.client, |session| async {
///     in_session!(session, events.insert_one(&event))?;
///     Ok(())
/// }
/// .await)
/// .await
/// ```
macro_rules! in_transaction {
    ($client:expr, |$session:ident| $writes:expr) => {
        async {
            let mut tx = $crate::storage::mongo::tx::Tx::start($client).await?;
            loop {
                #[allow(unused_mut)]
                let mut $session = tx.attempt().await?;
                let written = $writes;
                if let Some(done) = tx.end(written).await {
                    break done;
                }
            }
        }
    };
}
pub(super) use in_transaction;

/// One logical write, tried as a transaction until it commits or fails for good (see
/// [`in_transaction!`]).
pub(super) struct Tx {
    session: ClientSession,
    /// Cleared when the deployment turns out to have no transactions.
    transactions: bool,
    attempts: u32,
}

impl Tx {
    pub(super) async fn start(client: &Client) -> StoreResult<Tx> {
        Ok(Tx {
            session: client.start_session().await.map_err(map_err)?,
            transactions: true,
            attempts: 0,
        })
    }

    /// Begins an attempt: the session its writes go in, or None where the deployment
    /// has no transactions (they run on their own then).
    pub(super) async fn attempt(&mut self) -> StoreResult<Option<&mut ClientSession>> {
        self.attempts += 1;
        if !self.transactions {
            return Ok(None);
        }
        match self.session.start_transaction().await {
            Ok(()) => Ok(Some(&mut self.session)),
            Err(e) if matches!(*e.kind, ErrorKind::Transaction { .. }) => {
                self.transactions = false;
                Ok(None)
            }
            Err(e) => Err(map_err(e)),
        }
    }

    /// Ends an attempt with what its writes did: commits them, or aborts them on an
    /// error. Returns the outcome, or None when the server called the failure transient
    /// and the writes are to run again (in a new [`attempt`](Self::attempt)).
    pub(super) async fn end<T>(&mut self, written: Result<T, TxError>) -> Option<StoreResult<T>> {
        if !self.transactions {
            return Some(written.map_err(StoreError::from));
        }
        let outcome = match written {
            Ok(value) => commit(&mut self.session)
                .await
                .map(|()| value)
                .map_err(TxError::Mongo),
            Err(e) => {
                // Fails only when the transaction is already gone, aborted either way.
                let _ = self.session.abort_transaction().await;
                Err(e)
            }
        };
        let transient = match &outcome {
            Ok(_) | Err(TxError::Store(_)) => false,
            Err(TxError::Mongo(e)) => e.contains_label(TRANSIENT_TRANSACTION_ERROR),
            Err(TxError::ContactRace) => true,
        };
        if transient && self.attempts < TRANSACTION_ATTEMPTS {
            return None;
        }
        Some(outcome.map_err(StoreError::from))
    }
}

/// Commits, retrying while the server cannot tell whether the commit happened (a commit
/// is idempotent).
pub(super) async fn commit(session: &mut ClientSession) -> Result<(), MongoError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match session.commit_transaction().await {
            Err(e)
                if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                    && attempt < TRANSACTION_ATTEMPTS => {}
            other => return other,
        }
    }
}

/// A failure inside a transaction: the driver's, whose labels say whether to retry, or
/// one of ours.
pub(super) enum TxError {
    Mongo(MongoError),
    Store(StoreError),
    /// A contact the transaction creates was created meanwhile by another writer.
    ContactRace,
}

impl From<MongoError> for TxError {
    fn from(e: MongoError) -> Self {
        TxError::Mongo(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Store(e)
    }
}

impl From<TxError> for StoreError {
    fn from(e: TxError) -> Self {
        match e {
            TxError::Mongo(e) => map_err(e),
            TxError::Store(e) => e,
            TxError::ContactRace => {
                StoreError::Unavailable("a contact kept being created concurrently".into())
            }
        }
    }
}
