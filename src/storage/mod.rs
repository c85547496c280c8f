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
use wagate_actors::error::StoreError;

/// Unix milliseconds → UTC instant; out-of-range values are corrupt data.
pub(crate) fn from_millis(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} out of range")))
}
