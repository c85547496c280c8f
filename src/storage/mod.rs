//! Storage backends behind the domain's storage seam ([`wagate_actors::store`]).
//!
//! - [`sqlite`]: the embedded default, sqlx over one SQLite file in WAL mode;
//! - [`mongo`]: MongoDB through the official driver, for deployments that share one
//!   database between machines.
//! - [`switchable`]: the one storage object the server shares, whose provider a live
//!   switch replaces (writes held during the copy);
//! - [`cache`]: the users every request reads, kept in memory by the switchable storage
//!   and emptied by the writes that change them;
//! - [`copy`]: copying every record from one provider into another, checked by counts;
//! - [`provider`]: opening a provider from the configuration, the persisted choice
//!   (`DATA_DIR/storage-provider.json`) and the masked URL of the status endpoint.

pub mod cache;
pub mod copy;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod mongo;
pub mod provider;
pub mod sqlite;
pub mod switchable;

use chrono::{DateTime, Utc};
use wagate_actors::domain::{MessageStatus, StatusReport};
use wagate_actors::error::StoreError;

/// A status change to store with its `message_status` event, as both backends queue it
/// ([`advance_message_status`](wagate_actors::store::MessageStore::advance_message_status)).
pub(crate) struct StatusChange {
    pub instance_id: String,
    pub message_id: String,
    pub status: MessageStatus,
    pub at: DateTime<Utc>,
    pub report: StatusReport,
}

impl StatusChange {
    pub(crate) fn new(
        instance_id: &str,
        message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>,
        report: &StatusReport,
    ) -> Self {
        StatusChange {
            instance_id: instance_id.to_owned(),
            message_id: message_id.to_owned(),
            status,
            at,
            report: report.clone(),
        }
    }
}

/// Unix milliseconds → UTC instant; out-of-range values are corrupt data.
pub(crate) fn from_millis(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} out of range")))
}
