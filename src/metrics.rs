//! The server's metrics, served by `GET /metrics` in the Prometheus (OpenMetrics) text
//! format. One [`Metrics`] per server; it is fed by the HTTP layer ([`track_http`]), the
//! event hub's forwarder (messages), the webhook queue (delivery outcomes) and the storage
//! (call durations), and reads the rest at scrape time (instances by status, queue depth,
//! supervisor restarts).
//!
//! Label values are bounded: routes are the router's templates (`/api/instances/{instanceId}`),
//! never raw paths, so no request's id ever becomes a label. The webhook metrics per
//! instance are labelled with the instance's id: instances are created by their owners,
//! and a deleted instance's backlog series disappear at the next scrape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use wagate_actors::cluster::LeaseBoard;
use wagate_actors::domain::EventKind;
use wagate_actors::instance::StatusBoard;
use wagate_actors::webhook_queue::{Backlog, DeliveryRecord, DeliveryStatus};

/// The `route` label of requests no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceResultLabels {
    instance: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of the server. Cheap to clone: one shared registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    instances: Family<StatusLabels, Gauge>,
    messages: Family<DirectionLabels, Counter>,
    webhook_deliveries: Family<ResultLabels, Counter>,
    webhook_queue_depth: Gauge,
    instance_deliveries: Family<InstanceResultLabels, Counter>,
    instance_delivery_duration: HistogramFamily<InstanceLabels>,
    instance_pending: Family<InstanceLabels, Gauge>,
    instance_oldest_pending: Family<InstanceLabels, Gauge>,
    instance_failed: Family<InstanceLabels, Gauge>,
    send_queue: Family<InstanceLabels, Gauge>,
    waba_chat_actors: Gauge,
    restarts: Arc<RestartsCollector>,
    storage_duration: HistogramFamily<OperationLabels>,
    leases: Arc<LeasesCollector>,
}

/// Cluster mode: this node's leases and what its lease manager counted, labelled with
/// the node's id; nothing outside cluster mode.
#[derive(Debug, Default)]
struct LeasesCollector {
    board: OnceLock<LeaseBoard>,
}

impl Collector for LeasesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(board) = self.board.get() else {
            return Ok(());
        };
        let labels = [("node", board.node_id())];
        let held = ConstGauge::new(i64::try_from(board.instances()).unwrap_or(i64::MAX));
        let mut metric = encoder.encode_descriptor(
            "wagate_cluster_leases",
            "Instance leases this node holds",
            None,
            held.metric_type(),
        )?;
        held.encode(metric.encode_family(&labels)?)?;
        let counters = board.counters();
        for (name, help, value) in [
            (
                "wagate_cluster_renewals",
                "Lease renewals the database confirmed",
                &counters.renewals,
            ),
            (
                "wagate_cluster_leases_acquired",
                "Instance leases this node took",
                &counters.acquired,
            ),
            (
                "wagate_cluster_leases_lost",
                "Instance leases this node found taken by another node at a renewal",
                &counters.lost,
            ),
            (
                "wagate_cluster_leases_released",
                "Instance leases this node handed over (rebalancing, shutdown)",
                &counters.released,
            ),
            (
                "wagate_cluster_self_fenced",
                "Times this node stopped its instances because it could not renew in time",
                &counters.self_fenced,
            ),
            (
                "wagate_fenced_writes",
                "Session writes refused because this node no longer held the lease",
                &counters.fenced_writes,
            ),
        ] {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            let mut metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// `wagate_supervisor_restarts_total`: read from the status board at scrape time.
#[derive(Debug, Default)]
struct RestartsCollector {
    total: AtomicU64,
}

impl Collector for RestartsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(self.total.load(Ordering::Relaxed));
        let metric = encoder.encode_descriptor(
            "wagate_supervisor_restarts",
            "Instance restarts scheduled by the supervisor after a failure",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~8 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "wagate_http_requests",
            "HTTP requests by method, route template and status",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "wagate_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            http_duration.clone(),
        );
        let instances = Family::<StatusLabels, Gauge>::default();
        registry.register("wagate_instances", "Instances by status", instances.clone());
        let messages = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "wagate_messages",
            "WhatsApp messages by direction (in: received, out: sent)",
            messages.clone(),
        );
        let webhook_deliveries = Family::<ResultLabels, Counter>::default();
        registry.register(
            "wagate_webhook_deliveries",
            "Webhook delivery attempts by result (delivered, retrying, failed)",
            webhook_deliveries.clone(),
        );
        let webhook_queue_depth = Gauge::default();
        registry.register(
            "wagate_webhook_queue_depth",
            "Webhook jobs waiting for delivery",
            webhook_queue_depth.clone(),
        );
        let instance_deliveries = Family::<InstanceResultLabels, Counter>::default();
        registry.register(
            "wagate_webhook_instance_deliveries",
            "Webhook delivery attempts of each instance by result (delivered, retrying, failed)",
            instance_deliveries.clone(),
        );
        let instance_delivery_duration: HistogramFamily<InstanceLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "wagate_webhook_delivery_duration_seconds",
            "Webhook delivery attempt latency (request to answer) of each instance",
            instance_delivery_duration.clone(),
        );
        let instance_pending = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "wagate_webhook_instance_queue_depth",
            "Webhook jobs of each instance waiting for delivery",
            instance_pending.clone(),
        );
        let send_queue = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "wagate_send_queue_depth",
            "Paced sends (sendRate) of each instance waiting in its queue",
            send_queue.clone(),
        );
        let instance_oldest_pending = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "wagate_webhook_instance_oldest_pending_seconds",
            "Age of the webhook job at the head of each instance's queue",
            instance_oldest_pending.clone(),
        );
        let instance_failed = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "wagate_webhook_instance_failed",
            "Failed webhook deliveries (dead letters) of each instance, until retried or replayed",
            instance_failed.clone(),
        );
        let waba_chat_actors = Gauge::default();
        registry.register(
            "wagate_waba_chat_actors",
            "Operator desk chat actors running (idle ones stop)",
            waba_chat_actors.clone(),
        );
        let restarts = Arc::new(RestartsCollector::default());
        registry.register_collector(Box::new(restarts.clone()));
        let storage_duration: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "wagate_storage_operation_duration_seconds",
            "Storage call latency by operation",
            storage_duration.clone(),
        );
        let leases = Arc::new(LeasesCollector::default());
        registry.register_collector(Box::new(leases.clone()));
        // Every label value known in advance is present from the start, at zero.
        for direction in ["in", "out"] {
            messages
                .get_or_create(&DirectionLabels { direction })
                .inc_by(0);
        }
        for result in ["delivered", "retrying", "failed"] {
            webhook_deliveries
                .get_or_create(&ResultLabels { result })
                .inc_by(0);
        }
        Metrics {
            inner: Arc::new(Inner {
                registry,
                http_requests,
                http_duration,
                instances,
                messages,
                webhook_deliveries,
                webhook_queue_depth,
                instance_deliveries,
                instance_delivery_duration,
                instance_pending,
                send_queue,
                instance_oldest_pending,
                instance_failed,
                waba_chat_actors,
                restarts,
                storage_duration,
                leases,
            }),
        }
    }

    /// Cluster mode: exports the leases of `board` (once; later calls change nothing).
    pub fn observe_leases(&self, board: LeaseBoard) {
        let _ = self.inner.leases.board.set(board);
    }

    /// Counts one HTTP request.
    pub fn observe_request(&self, method: &Method, route: &str, status: u16, elapsed: Duration) {
        let method = method_label(method);
        self.inner
            .http_requests
            .get_or_create(&RequestLabels {
                method,
                route: route.to_owned(),
                status,
            })
            .inc();
        self.inner
            .http_duration
            .get_or_create(&RouteLabels {
                method,
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts the messages among published events.
    pub fn observe_event(&self, kind: EventKind) {
        let direction = match kind {
            EventKind::MessageReceived => "in",
            EventKind::MessageSent => "out",
            _ => return,
        };
        self.inner
            .messages
            .get_or_create(&DirectionLabels { direction })
            .inc();
    }

    /// Counts one webhook delivery attempt, in all and for its instance (when it still
    /// exists), with its latency.
    pub fn observe_delivery(&self, record: &DeliveryRecord, instance_id: Option<&str>) {
        let result = match record.status {
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Failed => "failed",
        };
        self.inner
            .webhook_deliveries
            .get_or_create(&ResultLabels { result })
            .inc();
        let Some(instance) = instance_id else { return };
        self.inner
            .instance_deliveries
            .get_or_create(&InstanceResultLabels {
                instance: instance.to_owned(),
                result,
            })
            .inc();
        self.inner
            .instance_delivery_duration
            .get_or_create(&InstanceLabels {
                instance: instance.to_owned(),
            })
            .observe(record.duration_ms as f64 / 1000.0);
    }

    /// Records the duration of one storage call.
    pub fn observe_storage(&self, operation: &'static str, elapsed: Duration) {
        self.inner
            .storage_duration
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// The exposition, after reading the values sampled at scrape time: the status board
    /// (instances, restarts), the webhook queue depth and each instance's backlog (None
    /// when they cannot be read: the last values stay) and the running chat actors of
    /// the operator desk.
    pub fn render(
        &self,
        board: &StatusBoard,
        queue_depth: Option<u64>,
        backlog: Option<&[Backlog]>,
        chat_actors: usize,
    ) -> String {
        if let Some(backlog) = backlog {
            let inner = &self.inner;
            // Only instances with something waiting have series.
            inner.instance_pending.clear();
            inner.instance_oldest_pending.clear();
            inner.instance_failed.clear();
            let now = chrono::Utc::now();
            for b in backlog {
                let labels = InstanceLabels {
                    instance: b.instance_id.clone(),
                };
                let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                inner
                    .instance_pending
                    .get_or_create(&labels)
                    .set(count(b.pending));
                inner
                    .instance_failed
                    .get_or_create(&labels)
                    .set(count(b.failed));
                if let Some(oldest) = b.oldest_pending {
                    let age = (now - oldest).num_seconds().max(0);
                    inner
                        .instance_oldest_pending
                        .get_or_create(&labels)
                        .set(age);
                }
            }
        }
        self.inner
            .waba_chat_actors
            .set(i64::try_from(chat_actors).unwrap_or(i64::MAX));
        // Only instances with sends waiting have series.
        self.inner.send_queue.clear();
        for (instance, queued) in board.queues() {
            self.inner
                .send_queue
                .get_or_create(&InstanceLabels { instance })
                .set(i64::try_from(queued).unwrap_or(i64::MAX));
        }
        for (status, count) in board.counts_by_status() {
            self.inner
                .instances
                .get_or_create(&StatusLabels { status })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        if let Some(depth) = queue_depth {
            self.inner
                .webhook_queue_depth
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        self.inner
            .restarts
            .total
            .store(board.restarts(), Ordering::Relaxed);
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
        {
            // Writing to a String cannot fail; keep what was written if it somehow did.
            tracing::warn!(%err, "cannot encode the metrics");
        }
        out
    }
}

/// The `method` label: the standard methods by name, anything else as `other`, so a
/// client cannot create label values at will.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware counting every request by its matched route template and status.
pub async fn track_http(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let response = next.run(req).await;
    metrics.observe_request(
        &method,
        route.as_deref().unwrap_or(UNMATCHED_ROUTE),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
