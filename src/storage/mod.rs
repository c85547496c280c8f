//! Storage backends behind the domain's storage seam ([`wagate_actors::storage`]).
//!
//! - [`sqlite`]: the embedded default, sqlx over one SQLite file in WAL mode;
//! - [`mongo`]: MongoDB through the official driver, for deployments that share one
//!   database between machines.

pub mod mongo;
pub mod sqlite;

use chrono::{DateTime, Utc};
use wagate_actors::error::StoreError;

/// Unix milliseconds → UTC instant; out-of-range values are corrupt data.
pub(crate) fn from_millis(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} out of range")))
}
