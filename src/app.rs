//! Wiring: [`run`] opens storage, prepares secrets, starts the actor runtime and serves
//! HTTP until the injected `shutdown` future completes, then stops everything in order.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use wagate_actors::backoff::BackoffConfig;
use wagate_actors::cluster::{ClusterSettings, LeaseBoard};
use wagate_actors::domain::{Clock, SystemClock};
use wagate_actors::engine::wacore::{HttpClient, TransportFactory};
use wagate_actors::engine::{Engines, SandboxConfig, SandboxNetwork, WacoreSettings};
use wagate_actors::media_store::SharedMedia;
use wagate_actors::runtime::{
    ClusterParts, DeskParts, Runtime, RuntimeConfig, WebhookParts, start_runtime,
};
use wagate_actors::store::DynStorage;
use wagate_actors::webhook_queue::Outbox;

use crate::config::Config;
use crate::crypto::{self, JwtKeys, KeyVault};
use crate::gateway::accounts::Accounts;
use crate::gateway::contacts::ContactBook;
use crate::gateway::instances::InstanceAdmin;
use crate::gateway::messaging::Messenger;
use crate::gateway::storage::StorageSwitch;
use crate::http::state::{AppState, Services};
use crate::storage::mongo::cluster::MongoCluster;
use crate::storage::mongo::media::MongoMedia;
use crate::storage::mongo::outbox::MongoOutbox;
use crate::storage::provider;
use crate::storage::switchable::SwitchableStorage;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot prepare DATA_DIR {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Storage(String),
    #[error("secret key: {0}")]
    SecretKey(std::io::Error),
    #[error("{0}")]
    Other(String),
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
}

/// Opens the configured storage provider behind a [`SwitchableStorage`], so it can be
/// switched while the server runs.
///
/// Fails when the provider cannot be opened (file, server or `DATABASE_URL` missing).
pub async fn open_storage(config: &Config) -> Result<Arc<SwitchableStorage>, StartError> {
    let backend = provider::open(config, config.database_provider)
        .await
        .map_err(|e| StartError::Storage(e.to_string()))?;
    Ok(Arc::new(SwitchableStorage::new(backend)))
}

/// Applies the provider a live switch recorded in `DATA_DIR/storage-provider.json`: it
/// overrides `DATABASE_PROVIDER`, since the data was moved there. The URLs still come
/// from the configuration.
///
/// Fails when the file exists but is unreadable or names no known provider.
fn apply_recorded_provider(config: &mut Config) -> Result<(), StartError> {
    if let Some(recorded) = provider::read_choice(&config.data_dir).map_err(StartError::Storage)? {
        tracing::info!(
            provider = recorded.as_str(),
            configured = config.database_provider.as_str(),
            file = %config.data_dir.join(provider::CHOICE_FILE).display(),
            "using the database provider recorded by the last switch (it overrides DATABASE_PROVIDER)"
        );
        config.database_provider = recorded;
    }
    Ok(())
}

/// The [`Seams`] the actor runtime takes.
struct ActorSeams {
    clock: Arc<dyn Clock>,
    wacore_transport: Option<Arc<dyn TransportFactory>>,
    wacore_http: Option<Arc<dyn HttpClient>>,
    wrap_outbox: Option<OutboxWrapper>,
}

/// Starts the actor runtime: the webhook queue (which first catches up on events a
/// crash kept from it), the stats counter, the operator desk and the instance
/// supervisor, all under the root supervisor.
async fn start_actors(
    config: &Config,
    storage: DynStorage,
    metrics: &crate::metrics::Metrics,
    seams: ActorSeams,
    cluster: Option<(ClusterParts, Arc<dyn Outbox>)>,
    graph: Arc<crate::waba::graph::GraphClient>,
) -> Result<Runtime, StartError> {
    let ActorSeams {
        clock,
        wacore_transport,
        wacore_http,
        wrap_outbox,
    } = seams;
    // One node: the outbox on this node's disk. A cluster: the one its nodes share.
    let (cluster, outbox) = match cluster {
        Some((parts, shared)) => (Some(parts), shared),
        None => {
            let local: Arc<dyn Outbox> = Arc::new(
                crate::delivery::SledOutbox::open(&config.data_dir.join("webhooks"))
                    .map_err(|e| StartError::Storage(e.to_string()))?,
            );
            (None, local)
        }
    };
    let outbox = match wrap_outbox {
        Some(wrap) => wrap(outbox),
        None => outbox,
    };
    let transport = crate::delivery::HttpTransport::new(
        config.allow_private_network_urls,
        config.webhook_timeout,
    )
    .map_err(|e| StartError::Other(format!("cannot build the webhook HTTP client: {e}")))?;
    // A call into a chat actor may wait behind a send that uses the client's whole budget.
    let chat_timeout = config.actor_call_timeout + graph.max_send_duration();
    let network = SandboxNetwork::new(SandboxConfig {
        autopair: config.sandbox_autopair,
        ..SandboxConfig::default()
    });
    let engines = Arc::new(Engines::new(
        network,
        WacoreSettings {
            version: config.wacore_client_version,
            ws_url: config.wacore_ws_url.clone(),
            transport: wacore_transport,
            http: wacore_http,
            shutdown_timeout: config.wacore_shutdown_timeout,
            connect_wait: config.actor_call_timeout,
        },
    ));
    let runtime = RuntimeConfig {
        call_timeout: config.actor_call_timeout,
        backoff: BackoffConfig {
            base: config.restart_backoff_base,
            max: config.restart_backoff_max,
            budget: config.restart_budget,
            window: config.restart_window,
        },
        clock,
        stats_flush_every: config.stats_flush_interval,
        webhooks: Some(WebhookParts {
            outbox,
            transport: Arc::new(transport),
            jitter: true,
            auto_pause_after: config.webhook_auto_pause,
            on_result: Some({
                let metrics = metrics.clone();
                Arc::new(move |record, instance| {
                    metrics.observe_delivery(record, instance.map(|i| i.id.as_str()))
                })
            }),
        }),
        desk: Some(DeskParts {
            graph,
            chat_timeout,
            chat_idle: config.waba_chat_idle,
            event_retention: config.waba_event_retention,
        }),
        on_event: Some({
            let metrics = metrics.clone();
            Arc::new(move |kind| metrics.observe_event(kind))
        }),
        cluster,
        ..RuntimeConfig::new(storage, engines, config.data_dir.clone())
    };
    start_runtime(runtime)
        .await
        .map_err(|e| StartError::Other(format!("cannot start the actor runtime: {e}")))
}

/// Cluster mode: connects to the shared database's cluster collections and checks that
/// this node may join (a replica set, the same secrets as the live nodes); opens the
/// webhook outbox and the media store the nodes share.
///
/// Fails with a message saying what to fix.
async fn join_cluster(
    config: &Config,
    vault_key: &[u8],
    jwt_secret: &[u8],
) -> Result<Option<(ClusterParts, MongoCluster, Arc<dyn Outbox>)>, StartError> {
    let Some(cluster) = &config.cluster else {
        return Ok(None);
    };
    let board = LeaseBoard::new(&cluster.node_id);
    let fingerprint =
        crate::cluster::fingerprint(jwt_secret, vault_key, cluster.secret.0.as_bytes());
    let store = MongoCluster::connect(&config.database_url.0, board.clone(), fingerprint)
        .await
        .map_err(|e| StartError::Storage(e.to_string()))?;
    store
        .check_join(&cluster.node_id)
        .await
        .map_err(|e| StartError::Other(format!("cannot join the cluster: {e}")))?;
    let outbox: Arc<dyn Outbox> = Arc::new(
        MongoOutbox::open(store.database().clone())
            .await
            .map_err(|e| StartError::Storage(e.to_string()))?,
    );
    let media: Arc<dyn SharedMedia> = Arc::new(
        MongoMedia::open(store.database().clone())
            .await
            .map_err(|e| StartError::Storage(e.to_string()))?,
    );
    tracing::info!(
        node = %cluster.node_id,
        url = %cluster.advertise_url,
        lease_ttl_ms = cluster.lease_ttl.as_millis() as u64,
        "joining the cluster"
    );
    let parts = ClusterParts {
        settings: ClusterSettings {
            node_id: cluster.node_id.clone(),
            url: cluster.advertise_url.clone(),
            lease_ttl: cluster.lease_ttl,
            renew_every: cluster.renew_every,
            scan_every: cluster.scan_every,
        },
        store: Arc::new(store.clone()),
        vault: Arc::new(store.clone()),
        board,
        media,
    };
    Ok(Some((parts, store, outbox)))
}

/// Runs the server on `listener` until `shutdown` completes, on the system clock.
///
/// Fails when the data directory, storage or secret key cannot be prepared, or the HTTP
/// server fails.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    run_with(config, listener, shutdown, Seams::default()).await
}

/// Shown the actor runtime once it runs.
pub type RuntimeObserver = Arc<dyn Fn(&Runtime) + Send + Sync>;

/// Wraps the webhook outbox the server opened (fault tests make it refuse writes).
pub type OutboxWrapper = Arc<dyn Fn(Arc<dyn Outbox>) -> Arc<dyn Outbox> + Send + Sync>;

/// What [`run_with`] lets a caller replace: the edges of the world tests cannot reach or
/// must control.
#[derive(Clone)]
pub struct Seams {
    /// The clock of statistics days and limit periods.
    pub clock: Arc<dyn Clock>,
    /// How real (`wacore`) sessions open connections; `None` is a WebSocket to WhatsApp
    /// (or to `WACORE_WS_URL`).
    pub wacore_transport: Option<Arc<dyn TransportFactory>>,
    /// How real sessions make HTTP calls (media); `None` is the shared reqwest client.
    pub wacore_http: Option<Arc<dyn HttpClient>>,
    /// Shown the actor runtime once it runs (fault tests kill its actors).
    pub on_runtime: Option<RuntimeObserver>,
    /// Wraps the durable webhook outbox; `None` uses it as opened.
    pub wrap_outbox: Option<OutboxWrapper>,
}

impl Default for Seams {
    fn default() -> Self {
        Seams {
            clock: Arc::new(SystemClock),
            wacore_transport: None,
            wacore_http: None,
            on_runtime: None,
            wrap_outbox: None,
        }
    }
}

/// [`run`] with an injected clock (statistics days, limit periods): tests move time
/// instead of waiting for it.
pub async fn run_with_clock(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    clock: Arc<dyn Clock>,
) -> Result<(), StartError> {
    let seams = Seams {
        clock,
        ..Seams::default()
    };
    run_with(config, listener, shutdown, seams).await
}

/// [`run`] with its [`Seams`] replaced.
pub async fn run_with(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    seams: Seams,
) -> Result<(), StartError> {
    let Seams {
        clock,
        wacore_transport,
        wacore_http,
        on_runtime,
        wrap_outbox,
    } = seams;
    let actor_seams = ActorSeams {
        clock: clock.clone(),
        wacore_transport,
        wacore_http,
        wrap_outbox,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let mut config = config;
    apply_recorded_provider(&mut config)?;
    let db = open_storage(&config).await?;
    let metrics = crate::metrics::Metrics::new();
    {
        let metrics = metrics.clone();
        db.set_observer(Arc::new(move |operation, elapsed| {
            metrics.observe_storage(operation, elapsed)
        }));
    }
    let storage: DynStorage = db.clone();
    let vault = match config.secret_key {
        Some(key) => KeyVault::new(key),
        None => KeyVault::load_or_create(&config.data_dir.join("secret.key"))
            .map_err(StartError::SecretKey)?,
    };
    let jwt_secret = if config.jwt_secret.0.is_empty() {
        tracing::warn!(
            "JWT_SECRET is not set: using a random secret, so tokens stop working after a restart. \
             Set JWT_SECRET (32+ characters) for anything but a local trial."
        );
        crypto::random_secret()
    } else {
        if config.jwt_secret.0.len() < 32 {
            tracing::warn!("JWT_SECRET is shorter than 32 characters: use a longer random secret");
        }
        config.jwt_secret.0.as_bytes().to_vec()
    };
    let cluster =
        join_cluster(&config, &config.secret_key.unwrap_or_default(), &jwt_secret).await?;
    if cluster.is_some() {
        // Before any instance can start here: what was deleted while this node was away.
        match storage.instance_ids().await {
            Ok(ids) => {
                let stored = ids.into_iter().collect();
                let gone = crate::cluster::sweep_local(&config.data_dir, &stored).await;
                if gone > 0 {
                    tracing::info!(
                        instances = gone,
                        "removed the local copies of deleted instances"
                    );
                }
            }
            Err(err) => tracing::warn!(%err, "cannot list the instances; local copies kept"),
        }
    }
    let waba_vault = vault.clone();
    let accounts = Accounts::new(
        storage.clone(),
        vault,
        JwtKeys::new(&jwt_secret, config.jwt_expiration),
    );
    if accounts
        .ensure_admin(
            &config.admin_email,
            &config.admin_password.0,
            &config.admin_first_name,
            &config.admin_last_name,
        )
        .await
        .map_err(|e| StartError::Other(format!("cannot create the admin user: {}", e)))?
    {
        tracing::info!(email = %config.admin_email, "admin user created");
    }

    let graph = Arc::new(
        crate::waba::graph::GraphClient::new(&config.waba_graph_base_url, &config.waba_api_version)
            .map_err(|e| StartError::Other(format!("cannot build the Graph API client: {e}")))?
            .with_media_limits(config.waba_media_timeout, config.waba_media_max_bytes),
    );
    let runtime = start_actors(
        &config,
        storage.clone(),
        &metrics,
        actor_seams,
        cluster
            .as_ref()
            .map(|(parts, _, outbox)| (parts.clone(), outbox.clone())),
        graph.clone(),
    )
    .await?;
    if let Some(observe) = &on_runtime {
        observe(&runtime);
    }
    // In a cluster, live streams on this node carry the events every node stores.
    let feed = cluster.as_ref().map(|(_, store, _)| {
        let (data_dir, instances) = (config.data_dir.clone(), runtime.instances.clone());
        // Another node deleted an instance: this node's copies of it go too (stopped
        // first, should it still run it here before its lease manager notices).
        let on_deleted = Arc::new(move |id: &str| {
            let (data_dir, instances, id) = (data_dir.clone(), instances.clone(), id.to_owned());
            tokio::spawn(async move {
                if instances.runs(&id) {
                    let _ = instances.release(&id).await;
                }
                crate::cluster::forget_local(&data_dir, &id).await;
            });
        });
        crate::storage::mongo::feed::spawn(
            store.database().clone(),
            runtime.events.clone(),
            on_deleted,
        )
    });
    // A cluster's nodes also keep every file in the shared database: the node that takes
    // an instance over reads the files its previous owner stored.
    let shared_media = cluster.as_ref().map(|(parts, _, _)| parts.media.clone());
    let cluster = match (cluster, &runtime.leases, &config.cluster) {
        (Some((parts, store, _)), Some(leases), Some(cluster_config)) => {
            metrics.observe_leases(parts.board.clone());
            // Instances start as this node takes their leases, not all at once.
            Some(crate::cluster::Cluster {
                config: Arc::new(cluster_config.clone()),
                store,
                board: parts.board,
                leases: leases.clone(),
                client: reqwest::Client::builder()
                    .connect_timeout(std::time::Duration::from_secs(2))
                    .build()
                    .map_err(|e| StartError::Other(format!("cannot build the HTTP client: {e}")))?,
                // The owner's own bound on a call (an engine start may take two).
                forward_timeout: config.actor_call_timeout * 3,
                owners: crate::cluster::OwnerCache::default(),
            })
        }
        _ => {
            let restored = runtime
                .instances
                .restore_all()
                .await
                .map_err(|e| StartError::Other(format!("cannot restore instances: {e}")))?;
            tracing::info!(instances = restored, "instances restored");
            None
        }
    };
    let desk = runtime
        .desk
        .clone()
        .ok_or_else(|| StartError::Other("the operator desk did not start".into()))?;
    let media = crate::media::MediaStore::new(&config.data_dir).with_shared(shared_media);
    let waba = crate::gateway::waba::Waba::new(
        storage.clone(),
        desk,
        graph,
        waba_vault,
        config.allow_private_network_urls,
        media.clone(),
        config.waba_media_retry,
    )
    .with_template_cache(config.waba_templates_ttl, clock);

    let media_client = crate::outbound::guarded_client(
        config.allow_private_network_urls,
        crate::media::FETCH_TIMEOUT,
    )
    .map_err(|e| StartError::Other(format!("cannot build the HTTP client: {e}")))?;
    let config = Arc::new(config);
    let state = AppState::new(Services {
        storage: storage.clone(),
        db: db.clone(),
        accounts,
        instance_admin: {
            let admin = InstanceAdmin::new(
                storage.clone(),
                runtime.instances.clone(),
                runtime.events.clone(),
                runtime.webhooks.clone(),
                media.clone(),
                config.wa_engine,
                config.allow_private_network_urls,
            );
            match &cluster {
                Some(cluster) => admin.placed_by(cluster.leases.clone()),
                None => admin,
            }
        },
        messenger: Messenger::new(
            runtime.instances.clone(),
            media.clone(),
            media_client.clone(),
            config.allow_private_network_urls,
            config.max_upload_bytes as u64,
        ),
        contacts: ContactBook::new(storage.clone(), runtime.instances.clone()),
        storage_switch: StorageSwitch::new(db, config.clone(), runtime.stats.clone()),
        instances: runtime.instances.clone(),
        events: runtime.events.clone(),
        webhooks: runtime.webhooks.clone(),
        stats: runtime.stats.clone(),
        waba: waba.clone(),
        metrics,
        limits: crate::throttle::Limits::new(&config),
        media,
        media_client,
        cluster,
        config,
    });
    let app = crate::http::router(state.clone());
    let local = listener.local_addr().map_err(StartError::Serve)?;
    tracing::info!(address = %local, storage = storage.provider(), "listening");
    // The peer address feeds the login throttle (`ConnectInfo`).
    let app = app.into_make_service_with_connect_info::<crate::http::wire::Peer>();
    // hyper's own answers to unparsable requests (a URI over 64 KiB, …) come out as JSON.
    let listener = crate::http::wire::JsonErrorListener(listener);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    if let Some(feed) = feed {
        feed.abort();
    }
    tracing::info!("HTTP stopped; stopping instances");
    runtime.shutdown().await;
    storage.close().await;
    tracing::info!("shutdown complete");
    served.map_err(StartError::Serve)
}
