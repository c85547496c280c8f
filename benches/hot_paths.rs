//! Criterion micro-benchmarks of hot paths, each against a baseline measured in the same
//! run, with the ratio printed at the end:
//!
//! - webhook signature (HMAC-SHA256 of an envelope) against a bare SHA-256 of it;
//! - envelope serialisation against `serde_json` of the event data alone;
//! - a whole webhook request body (envelope + signature) against the same baseline;
//! - API key lookup digest against copying the key;
//! - an actor round trip (`InstanceHandle::status` into a running sandbox instance)
//!   against a tokio oneshot round trip through a spawned task.
//!
//! Run: `cargo bench --bench hot_paths` (filters work as usual: `-- signature`).
//! Criterion bounds every measurement in time (warm-up 1 s, measurement 3 s).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use criterion::{Criterion, criterion_group};
use serde_json::json;
use sha2::{Digest, Sha256};
use wagate_actors::backoff::BackoffConfig;
use wagate_actors::domain::{EngineKind, Event, EventKind, Instance, InstanceEvent, new_id};
use wagate_actors::engine::{Engines, SandboxConfig, SandboxNetwork};
use wagate_actors::instance::InstanceHandle;
use wagate_actors::runtime::{Runtime, RuntimeConfig, start_runtime};
use wagate_actors::testing::MemoryStorage;
use wagate_actors::webhook_queue::{envelope, sign};

/// Each pair: (figure, baseline), as `group/function` ids.
const PAIRS: &[(&str, &str, &str)] = &[
    (
        "webhook signature",
        "webhook/hmac_sha256_sign",
        "webhook/sha256_only",
    ),
    (
        "envelope serialisation",
        "webhook/envelope",
        "webhook/serde_json_data",
    ),
    (
        "webhook body + signature",
        "webhook/envelope_and_sign",
        "webhook/serde_json_data",
    ),
    (
        "API key lookup digest",
        "auth/api_key_hash",
        "auth/copy_key",
    ),
    (
        "actor round trip",
        "actor/instance_status_call",
        "actor/tokio_oneshot_round_trip",
    ),
];

fn sample_event() -> InstanceEvent {
    let data = json!({
        "messageId": "3EB0A51DF72BEEC3B1359A", "from": "79001234567@s.whatsapp.net",
        "body": "Привет! Как дела?", "type": "conversation", "timestamp": 1_672_531_200,
        "hasMedia": false, "pushName": "Иван", "status": "received",
    });
    let event = Event::from_data(EventKind::MessageReceived, data)
        .unwrap_or_else(|e| panic!("a message_received payload: {e}"));
    InstanceEvent::new("01a2b3c4d5e6f708", event)
}

fn webhook(c: &mut Criterion) {
    let event = sample_event();
    let body = envelope(&event);
    let secret = "webhook-secret-key";
    let mut g = c.benchmark_group("webhook");
    g.bench_function("hmac_sha256_sign", |b| {
        b.iter(|| sign(black_box(secret), black_box(&body)))
    });
    g.bench_function("sha256_only", |b| {
        b.iter(|| Sha256::digest(black_box(&body)))
    });
    g.bench_function("envelope", |b| b.iter(|| envelope(black_box(&event))));
    g.bench_function("serde_json_data", |b| {
        b.iter(|| serde_json::to_vec(black_box(&event.data())).unwrap_or_default())
    });
    g.bench_function("envelope_and_sign", |b| {
        b.iter(|| {
            let body = envelope(black_box(&event));
            sign(secret, &body)
        })
    });
    g.finish();
}

fn auth(c: &mut Criterion) {
    let key = "wag_pwn59lNcgRg_LZtDwB5ZjVfmfeQ6i9OuenKvVaxxwCg";
    let mut g = c.benchmark_group("auth");
    g.bench_function("api_key_hash", |b| {
        b.iter(|| wagate::crypto::api_key_hash(black_box(key)))
    });
    g.bench_function("copy_key", |b| b.iter(|| black_box(key).to_owned()));
    g.finish();
}

/// A running sandbox instance on in-memory storage, and the runtime it lives in.
async fn running_instance(dir: &Path) -> (Runtime, InstanceHandle) {
    let storage = Arc::new(MemoryStorage::default());
    let engines = Arc::new(Engines::new(
        SandboxNetwork::new(SandboxConfig::default()),
        Default::default(),
    ));
    let config = RuntimeConfig {
        call_timeout: Duration::from_secs(5),
        backoff: BackoffConfig::default(),
        ..RuntimeConfig::new(storage, engines, dir.to_path_buf())
    };
    let runtime = start_runtime(config).await.expect("actor runtime");
    let instance = Instance::new(&new_id(), "bench", "bench", EngineKind::Sandbox, Utc::now());
    let handle = runtime
        .instances
        .start(instance, false)
        .await
        .expect("instance");
    (runtime, handle)
}

fn actor(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let (runtime, handle) = rt.block_on(running_instance(dir.path()));
    let mut g = c.benchmark_group("actor");
    g.bench_function("instance_status_call", |b| {
        b.to_async(&rt)
            .iter(|| async { handle.status().await.expect("status") })
    });
    // The same shape without an actor: a request through a channel to a task that
    // answers on a oneshot.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<u64>>(64);
    rt.spawn(async move {
        while let Some(reply) = rx.recv().await {
            let _ = reply.send(1);
        }
    });
    g.bench_function("tokio_oneshot_round_trip", |b| {
        b.to_async(&rt).iter(|| async {
            let (reply, answer) = tokio::sync::oneshot::channel();
            tx.send(reply).await.expect("send");
            answer.await.expect("answer")
        })
    });
    g.finish();
    rt.block_on(runtime.shutdown());
}

/// Where criterion keeps its estimates (next to the load harness's results).
fn output_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("criterion")
}

/// The mean of a finished benchmark, in ns, from criterion's estimates file.
fn mean_ns(id: &str) -> Option<f64> {
    let path = output_dir().join(id).join("new").join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn print_ratios() {
    println!(
        "\n{:<28} {:>12} {:>12} {:>8}",
        "hot path", "figure", "baseline", "ratio"
    );
    for (name, figure, baseline) in PAIRS {
        match (mean_ns(figure), mean_ns(baseline)) {
            (Some(f), Some(b)) => println!(
                "{name:<28} {f:>9.0} ns {b:>9.0} ns {:>7.2}×   ({figure} vs {baseline})",
                f / b
            ),
            _ => println!("{name:<28} (not run in this invocation)"),
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .output_directory(&output_dir())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = webhook, auth, actor
}

fn main() {
    benches();
    Criterion::default()
        .output_directory(&output_dir())
        .configure_from_args()
        .final_summary();
    print_ratios();
}
