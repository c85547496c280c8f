//! [`AppState`]: what every handler reaches. Cheap to clone: one shared [`Services`].

use std::ops::Deref;
use std::sync::Arc;

use wagate_actors::event_hub::EventHub;
use wagate_actors::instance::InstancesHandle;
use wagate_actors::stats::StatsHandle;
use wagate_actors::store::DynStorage;
use wagate_actors::webhook_queue::WebhookQueueHandle;

use crate::config::Config;
use crate::gateway::accounts::Accounts;
use crate::gateway::contacts::ContactBook;
use crate::gateway::instances::InstanceAdmin;
use crate::gateway::messaging::Messenger;
use crate::gateway::storage::StorageSwitch;
use crate::storage::switchable::SwitchableStorage;

/// What every handler can reach, shared: axum clones the state for every extractor and
/// middleware of every request, so a clone is one reference count, not one per service
/// (the JWT keys and validation rules among them are not handles).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services behind [`AppState`].
pub struct Services {
    pub config: Arc<Config>,
    /// The storage every part of the server uses: `db`, as the seam's type.
    pub storage: DynStorage,
    /// The same storage as `storage`, with the provider switch (`/api/db/switch`).
    pub db: Arc<SwitchableStorage>,
    pub accounts: Accounts,
    /// Creating, changing and deleting instances.
    pub instance_admin: InstanceAdmin,
    /// Sending through the instances.
    pub messenger: Messenger,
    /// Adding, importing and saving contacts.
    pub contacts: ContactBook,
    /// The live switch of the storage provider.
    pub storage_switch: StorageSwitch,
    /// The instance actors, through their supervisor.
    pub instances: InstancesHandle,
    /// Events of every instance: persisted, then broadcast to live streams.
    pub events: EventHub,
    /// Media files under `DATA_DIR/uploads`.
    pub media: crate::media::MediaStore,
    /// HTTP client for user-supplied media URLs (guarded against private networks).
    pub media_client: reqwest::Client,
    /// The durable webhook queue.
    pub webhooks: WebhookQueueHandle,
    /// Usage counters and limits.
    pub stats: StatsHandle,
    /// The WABA operator desk: its chat actors, account settings and Graph API client.
    pub waba: crate::gateway::waba::Waba,
    /// Login throttling and per-user rate limits.
    pub limits: crate::throttle::Limits,
    /// The metrics served by `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Cluster mode: leases, the node registry and forwarding; None on a single server.
    pub cluster: Option<crate::cluster::Cluster>,
}
