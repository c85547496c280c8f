//! Copying every record of every kind from one storage provider into another, the data
//! half of a live provider switch ([`super::switchable::SwitchableStorage::switch_to`]).
//!
//! **Idempotent by clearing:** the target is emptied first, then filled with exact
//! copies (same ids, timestamps, counters and read marks). A copy that failed halfway
//! leaves a partial target; running it again starts from empty, so it never meets a
//! duplicate and never adds usage counters on top of old ones (buckets end equal, not
//! doubled). Upserting by id would keep the target's stale records that the source has
//! since deleted; clearing makes the target a mirror of the source, which is what a
//! switch needs. The cost: whatever the target held before is replaced.
//!
//! **Checked:** afterwards the number of records of each kind in the target must equal
//! the source's, counted before the copy. The caller holds writes for the duration (the
//! write gate), so the source cannot change underneath.

use thiserror::Error;
use wagate_actors::error::StoreError;
use wagate_actors::store::{RecordCounts, RecordKind, Storage};

/// Records per export page and import batch: large enough that round trips do not
/// dominate, small enough that one batch is a modest transaction (SQLite) or
/// `insertMany` (MongoDB, well under its 48 MB message limit).
pub const COPY_BATCH: u32 = 500;

/// Why a copy failed. The source is never modified by a copy.
#[derive(Debug, Error)]
pub enum CopyError {
    #[error("reading {what} from {provider} failed: {source}")]
    Source {
        what: &'static str,
        provider: &'static str,
        source: StoreError,
    },
    #[error("writing {what} to {provider} failed: {source}")]
    Target {
        what: &'static str,
        provider: &'static str,
        source: StoreError,
    },
    #[error("{kind}: {expected} in the source but {found} in the target after the copy")]
    Mismatch {
        kind: &'static str,
        expected: u64,
        found: u64,
    },
}

impl CopyError {
    /// Whether the failure is a database that stopped answering (rather than data
    /// that would not copy).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            CopyError::Source {
                source: StoreError::Unavailable(_),
                ..
            } | CopyError::Target {
                source: StoreError::Unavailable(_),
                ..
            }
        )
    }
}

/// Replaces everything in `to` with a copy of everything in `from` and returns the
/// number of records of each kind now in `to`.
///
/// Fails when either side fails, or when the counts differ afterwards; `from` is left
/// as it was, `to` possibly half-filled (a retry clears it again).
pub async fn copy_all(from: &dyn Storage, to: &dyn Storage) -> Result<RecordCounts, CopyError> {
    let source = |what: &'static str| {
        let provider = from.provider();
        move |source| CopyError::Source {
            what,
            provider,
            source,
        }
    };
    let target = |what: &'static str| {
        let provider = to.provider();
        move |source| CopyError::Target {
            what,
            provider,
            source,
        }
    };
    let expected = from.count_records().await.map_err(source("counts"))?;
    to.clear_all().await.map_err(target("the clearing"))?;
    for kind in RecordKind::ALL {
        let mut after: Option<String> = None;
        loop {
            let page = from
                .export_records(kind, after.as_deref(), COPY_BATCH)
                .await
                .map_err(source(kind.as_str()))?;
            let Some(last) = page.last() else { break };
            after = Some(last.key());
            to.import_records(&page)
                .await
                .map_err(target(kind.as_str()))?;
            if page.len() < COPY_BATCH as usize {
                break;
            }
        }
    }
    let found = to.count_records().await.map_err(target("counts"))?;
    for kind in RecordKind::ALL {
        if found.get(kind) != expected.get(kind) {
            return Err(CopyError::Mismatch {
                kind: kind.as_str(),
                expected: expected.get(kind),
                found: found.get(kind),
            });
        }
    }
    Ok(found)
}
