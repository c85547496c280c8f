//! WhatsApp instances as actors: one [`InstanceActor`] per instance, supervised by the
//! [`InstanceSupervisor`], reached through typed handles.
//!
//! - `actor.rs`: the behaviour of one instance (engine events, status transitions).
//! - `api.rs`: [`InstanceHandle`], the typed face of one instance.
//! - `supervisor.rs`: restarts with backoff, and [`InstancesHandle`] to reach any instance
//!   (it follows the supervisor across a respawn by the `RootSupervisor`).
//! - `status.rs`: [`StatusBoard`], statuses readable without asking an actor.

mod actor;
mod api;
mod pace;
mod status;
mod supervisor;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use actor::{InstanceActor, PresenceAction, QrAnswer, SendExtras};
pub use api::InstanceHandle;
pub use status::{StatusBoard, StatusView};
pub(crate) use supervisor::SupervisorMsg;
pub use supervisor::{InstanceSupervisor, InstancesHandle};

use crate::backoff::BackoffConfig;
use crate::engine::EngineFactory;
use crate::event_hub::EventHub;
use crate::media_store::SharedMedia;
use crate::stats::StatsHandle;
use crate::store::DynStorage;
use crate::store::SessionVault;

/// How long a caller waits for an instance actor by default before answering 504.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What every instance actor and the supervisor share. Cheap to clone.
#[derive(Clone)]
pub struct InstanceDeps {
    pub storage: DynStorage,
    pub events: EventHub,
    pub engines: Arc<dyn EngineFactory>,
    /// Session stores live in `data_dir/instances/<id>/`.
    pub data_dir: PathBuf,
    /// Every call into an actor gives up after this long.
    pub call_timeout: Duration,
    pub backoff: BackoffConfig,
    /// Usage counters (messages sent and received, media).
    pub stats: StatsHandle,
    /// Cluster mode: where sessions are kept so another node can take an instance over
    /// without a new QR code. None: sessions live in the session directory only.
    pub vault: Option<Arc<dyn SessionVault>>,
    /// Cluster mode: where media files are kept so another node can read them. None:
    /// files live under `data_dir/uploads` only.
    pub shared_media: Option<Arc<dyn SharedMedia>>,
}

/// The session directory of an instance: `data_dir/instances/<id>/`.
pub fn session_dir(data_dir: &Path, instance_id: &str) -> PathBuf {
    data_dir.join("instances").join(instance_id)
}
