//! Switching the storage provider live: open the other provider, copy every record into
//! it while writes are held, record the choice so it survives a restart, then swap. Any
//! failure leaves the old provider in use.

use std::sync::Arc;

use wagate_actors::stats::StatsHandle;
use wagate_actors::store::RecordCounts;

use crate::config::Config;
use crate::storage::copy::CopyError;
use crate::storage::provider::{self, OpenError};
use crate::storage::switchable::{SwitchError, SwitchableStorage};

/// Why a switch did not happen; the old provider (`current`) is still in use.
#[derive(Debug, thiserror::Error)]
pub enum ProviderSwitchError {
    /// Every node of a cluster must use the same database: none switches on its own.
    #[error("the database cannot be switched in cluster mode: every node shares DATABASE_URL")]
    ClusterMode,
    #[error("provider must be sqlite or mongodb, not '{0}'")]
    UnknownProvider(String),
    #[error("{0} is already the active database provider")]
    AlreadyActive(&'static str),
    #[error("DATABASE_URL is not configured: set it to use mongodb")]
    NotConfigured,
    /// The target cannot be opened or reached.
    #[error("{cause}; still on {current}")]
    Unreachable {
        current: &'static str,
        cause: OpenError,
    },
    /// A database stopped answering during the copy.
    #[error("switch failed, still on {current}: copy failed: {cause}")]
    CopyUnavailable {
        current: &'static str,
        cause: CopyError,
    },
    /// A record would not copy.
    #[error("switch failed, still on {current}: copy failed: {cause}")]
    CopyFailed {
        current: &'static str,
        cause: CopyError,
    },
    /// The choice could not be recorded.
    #[error("switch failed, still on {current}: {why}")]
    NotRecorded { current: &'static str, why: String },
}

/// A switch that happened.
#[derive(Debug)]
pub struct Switched {
    /// The provider now in use.
    pub provider: &'static str,
    /// Records of each kind now in the new provider (equal to the old one's).
    pub copied: RecordCounts,
}

/// The storage switch over the switchable storage, the configuration and the stats
/// counter (whose pending counts are flushed before the copy). Cheap to clone.
#[derive(Clone)]
pub struct StorageSwitch {
    db: Arc<SwitchableStorage>,
    config: Arc<Config>,
    stats: StatsHandle,
}

impl StorageSwitch {
    pub fn new(db: Arc<SwitchableStorage>, config: Arc<Config>, stats: StatsHandle) -> Self {
        StorageSwitch { db, config, stats }
    }

    /// Switches to the provider named `requested` (`sqlite` or `mongodb`).
    ///
    /// Opens the target before holding any write, then copies everything into it,
    /// records the choice in `DATA_DIR/storage-provider.json` and swaps.
    pub async fn switch(&self, requested: &str) -> Result<Switched, ProviderSwitchError> {
        if self.config.cluster.is_some() {
            return Err(ProviderSwitchError::ClusterMode);
        }
        let target = provider::parse(requested)
            .ok_or_else(|| ProviderSwitchError::UnknownProvider(requested.to_owned()))?;
        let current = self.db.active().provider();
        if current == target.as_str() {
            return Err(ProviderSwitchError::AlreadyActive(current));
        }
        let backend = provider::open(&self.config, target)
            .await
            .map_err(|e| match e {
                OpenError::NotConfigured => ProviderSwitchError::NotConfigured,
                OpenError::Store { .. } => {
                    tracing::warn!(error = %e, "database switch: the target cannot be opened");
                    ProviderSwitchError::Unreachable { current, cause: e }
                }
            })?;
        // Usage still counted in memory goes to the old provider now and is copied with
        // the rest (it would reach the new one after the switch anyway; this keeps the
        // copy report current).
        if let Err(e) = self.stats.flush().await {
            tracing::warn!(error = %e, "database switch: statistics not flushed before the copy");
        }
        let data_dir = self.config.data_dir.clone();
        let copied = self
            .db
            .switch_to(backend, move || {
                provider::write_choice(&data_dir, target).map_err(|e| {
                    format!(
                        "cannot record the choice in {}: {e}",
                        data_dir.join(provider::CHOICE_FILE).display()
                    )
                })
            })
            .await
            .map_err(|e| match e {
                SwitchError::AlreadyActive(p) => ProviderSwitchError::AlreadyActive(p),
                SwitchError::Copy(cause) if cause.is_unavailable() => {
                    ProviderSwitchError::CopyUnavailable { current, cause }
                }
                SwitchError::Copy(cause) => ProviderSwitchError::CopyFailed { current, cause },
                SwitchError::Commit(why) => ProviderSwitchError::NotRecorded { current, why },
            })?;
        Ok(Switched {
            provider: target.as_str(),
            copied,
        })
    }
}
