//! Load harness: the real server in-process (sandbox engine, SQLite in a temporary
//! directory, no rate limit), each scenario against a baseline measured in the same run.
//!
//! | id | what | baseline | target |
//! |----|------|----------|--------|
//! | S1 | send-text over HTTP: max throughput, then p99 at 80 % of it | a bare axum JSON echo route; the physical limit (the echo plus the send's rows group-committed) | ≥ 0.5× the echo, ≥ 0.8× the limit, ≤ 3× p99 |
//! | S1M | S1's send-text with MongoDB storage (SecantusDB, the MongoDB-wire test server) | the raw driver inserting the same two documents (message, event) per send | report |
//! | S2 | webhook fan-out end to end: inbound over HTTP → stored → HMAC-signed webhook at a local keep-alive receiver (open throughout) | pre-signed POSTs of as many webhooks, same client stack, one client per instance | ≥ 0.8×, none lost |
//! | S3 | inbound ingest: sandbox inbound over HTTP → persisted → event | the physical limit (the echo plus the message's rows group-committed); raw batched sqlx inserts of the same rows (context) | ≥ 0.8× the limit |
//! | S4 | chat history (50 messages) among 1,000,000 stored messages, p99 | the same queries through sqlx (p99) + echo p99 | ≤ 2× |
//! | S5 | marginal RSS per idle connected instance at 10,000; whole process | — | ≤ 64 KiB; ≤ 1 GiB |
//! | S6 | restart storm: 1,000 sessions crash at once | first backoff window + 2 s | all connected in time, supervisor alive, no webhook lost |
//! | S7 | real (`wacore`) sessions linked against the fake WhatsApp (in a process of its own), grown in steps: sessions reached, marginal RSS, file descriptors and threads per connected session, idle CPU, send throughput; time to pair all, and to log all back in after a restart | the sandbox engine's same figures | ≥ 5,000 sessions, ≤ 600 KiB per session |
//!
//! | S8 | cluster failover: SIGKILL of a node holding 1,000 sandbox instances, until the other node runs them all; instances moved per second | the lease TTL | first lease taken ≤ TTL + one scan |
//!
//! S1, S2 and S3 run their phases interleaved (baseline, product, baseline…) in 3 rounds
//! and report the median ratio with its spread. S2 is end to end: each round's inbound
//! messages go in over HTTP while the receiver is open, timed until the last webhook
//! arrives.
//!
//! Run: `cargo bench --bench load`. Each scenario runs in a child process of its own (the
//! bench binary again, with `--scenario Sx`), so memory figures and failures stay apart.
//!
//! Environment:
//! - `WAGATE_BENCH_QUICK=1`: smaller sizes (100k messages, 1,000 instances, shorter phases);
//! - `WAGATE_BENCH_ONLY=S1,S4`: run only these scenarios;
//! - `WAGATE_BENCH_SWEEP=1,4,32,256`: S1 and S3 run at each of these instance counts
//!   (the instances added as the count grows, baselines and product interleaved at every
//!   count) and report one row per count against the physical limit, in place of their
//!   usual rows; S1 then skips its p99 phase;
//! - `WAGATE_BENCH_OUT=path`: where the JSON goes (default
//!   `<target dir>/bench-results/load.json`, with a Markdown table beside it);
//! - `WAGATE_BENCH_SECS`, `WAGATE_BENCH_WEBHOOKS`, `WAGATE_BENCH_MESSAGES`,
//!   `WAGATE_BENCH_INSTANCES`, `WAGATE_BENCH_STORM`: override the phase length (s), S2's
//!   webhooks per round, S4's stored messages, S5's instances and S6's crashing sessions;
//!   `WAGATE_BENCH_SESSIONS`: S7's real sessions (at most; default 5,000),
//!   `WAGATE_BENCH_SESSIONS_STEP`: how many S7 adds per step (default 250),
//!   `WAGATE_BENCH_MEM_FLOOR_MIB`: S7 stops growing when less memory is free (default
//!   6144); `WAGATE_BENCH_S8_INSTANCES`, `WAGATE_BENCH_S8_TTL_MS`: S8's instances
//!   (default 1,000) and lease TTL (default 20 s); S1M and S8 need `WAGATE_TEST_SECANTUSD`.
//!
//! Traffic goes to 127.0.0.1 only. Every loop is bounded in count and in time.

use std::alloc::GlobalAlloc;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{QueryBuilder, Sqlite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use wagate::storage::sqlite::SqliteStorage;
use wagate_actors::domain::{EventKind, InstanceEvent, Message, MessageStatus};
use wagate_actors::store::{MessageStore, Storage};
use wagate_actors::webhook_queue::{envelope, sign};

#[path = "load/fake.rs"]
mod fake;
#[path = "load/s1m.rs"]
mod s1m;
#[path = "load/s8.rs"]
mod s8;

type Res<T> = Result<T, String>;

/// Adds what was being done to an error.
trait Ctx<T> {
    fn ctx(self, what: &str) -> Res<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// A `/metrics` text as name+labels → value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

const ROWS_MARK: &str = "WAGATE_BENCH_ROWS ";
const JWT_SECRET: &str = "load-harness-secret-0123456789abcdef0123";
const WEBHOOK_SECRET: &str = "load-harness-webhook-secret";
const SCENARIOS: [&str; 9] = ["S1", "S1M", "S2", "S3", "S4", "S5", "S6", "S7", "S8"];

/// One line of the results table.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    scenario: String,
    metric: String,
    figure: f64,
    unit: String,
    /// What the baseline is, and its value (same unit), when there is one.
    baseline_name: String,
    baseline: Option<f64>,
    ratio: Option<f64>,
    target: String,
    met: bool,
    notes: String,
}

impl Row {
    #[allow(clippy::too_many_arguments)]
    fn new(
        scenario: &str,
        metric: &str,
        figure: f64,
        unit: &str,
        baseline_name: &str,
        baseline: Option<f64>,
        target: &str,
        met: bool,
    ) -> Row {
        let ratio = baseline.filter(|b| *b > 0.0).map(|b| figure / b);
        Row {
            scenario: scenario.into(),
            metric: metric.into(),
            figure,
            unit: unit.into(),
            baseline_name: baseline_name.into(),
            baseline,
            ratio,
            target: target.into(),
            met,
            notes: String::new(),
        }
    }

    /// The ratio as the median of interleaved rounds rather than of the median figures.
    fn median_ratio(mut self, ratio: f64) -> Row {
        self.ratio = Some(ratio);
        self
    }

    fn note(mut self, notes: impl Into<String>) -> Row {
        self.notes = notes.into();
        self
    }
}

/// Sizes of every scenario; smaller with `WAGATE_BENCH_QUICK=1`.
#[derive(Debug, Clone)]
struct Sizes {
    quick: bool,
    /// Length of each throughput or latency phase.
    phase: Duration,
    /// Concurrent keep-alive clients of the throughput phases.
    workers: usize,
    s1_instances: usize,
    s2_instances: usize,
    s2_events: usize,
    s3_instances: usize,
    s3_messages: usize,
    s4_messages: usize,
    s4_queries: usize,
    s5_instances: usize,
    s5_warmup: usize,
    s6_instances: usize,
    s7_sessions: usize,
    /// Sessions S7 adds per step (the first step is its warm-up).
    s7_step: usize,
    /// S7 stops growing when less memory than this is free (MiB).
    s7_mem_floor_mib: u64,
    /// Instance counts S1 and S3 sweep over, ascending (`WAGATE_BENCH_SWEEP`); empty:
    /// no sweep, each runs at its own count.
    sweep: Vec<usize>,
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

impl Sizes {
    fn from_env() -> Sizes {
        let quick = std::env::var("WAGATE_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
        let mut s = if quick {
            Sizes {
                quick,
                phase: Duration::from_secs(3),
                workers: 32,
                s1_instances: 4,
                s2_instances: 16,
                s2_events: 2_000,
                s3_instances: 8,
                s3_messages: 3_000,
                s4_messages: 100_000,
                s4_queries: 500,
                s5_instances: 1_000,
                s5_warmup: 100,
                s6_instances: 300,
                s7_sessions: 100,
                s7_step: 25,
                s7_mem_floor_mib: 6144,
                sweep: Vec::new(),
            }
        } else {
            Sizes {
                quick,
                phase: Duration::from_secs(10),
                workers: 32,
                s1_instances: 4,
                s2_instances: 16,
                s2_events: 20_000,
                s3_instances: 8,
                s3_messages: 20_000,
                s4_messages: 1_000_000,
                s4_queries: 2_000,
                s5_instances: 10_000,
                s5_warmup: 100,
                s6_instances: 1_000,
                s7_sessions: 5_000,
                s7_step: 250,
                s7_mem_floor_mib: 6144,
                sweep: Vec::new(),
            }
        };
        if let Some(v) = env_num("WAGATE_BENCH_SECS") {
            s.phase = Duration::from_secs(v.clamp(1, 600));
        }
        if let Some(v) = env_num("WAGATE_BENCH_MESSAGES") {
            s.s4_messages = (v as usize).clamp(10_000, 10_000_000);
        }
        if let Some(v) = env_num("WAGATE_BENCH_INSTANCES") {
            s.s5_instances = (v as usize).clamp(s.s5_warmup + 100, 100_000);
        }
        if let Some(v) = env_num("WAGATE_BENCH_WEBHOOKS") {
            s.s2_events = (v as usize).clamp(100, 1_000_000);
        }
        if let Some(v) = env_num("WAGATE_BENCH_SESSIONS") {
            s.s7_sessions = (v as usize).clamp(20, 100_000);
        }
        if let Some(v) = env_num("WAGATE_BENCH_SESSIONS_STEP") {
            s.s7_step = (v as usize).clamp(10, 10_000);
        }
        if let Some(v) = env_num("WAGATE_BENCH_MEM_FLOOR_MIB") {
            s.s7_mem_floor_mib = v;
        }
        if let Some(v) = env_num("WAGATE_BENCH_STORM") {
            s.s6_instances = (v as usize).clamp(10, 100_000);
        }
        if let Ok(list) = std::env::var("WAGATE_BENCH_SWEEP") {
            s.sweep = sweep_counts(&list);
        }
        s
    }
}

/// The instance counts of `WAGATE_BENCH_SWEEP` (`1,4,32,256`): ascending, each once,
/// within 1..=10,000; what does not parse is left out, and said.
fn sweep_counts(list: &str) -> Vec<usize> {
    let mut counts: Vec<usize> = list
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .filter_map(|v| match v.parse::<usize>() {
            Ok(n) => Some(n.clamp(1, 10_000)),
            Err(_) => {
                eprintln!("WAGATE_BENCH_SWEEP: {v:?} is not an instance count; left out");
                None
            }
        })
        .collect();
    counts.sort_unstable();
    counts.dedup();
    counts
}

// ───────────────────────────── measurement helpers ─────────────────────────────

type Op = Arc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

fn op<F, Fut>(f: F) -> Op
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    Arc::new(move |i| Box::pin(f(i)))
}

/// Outcome of a load phase: successes, failures, wall time, latencies of successes (µs).
#[derive(Debug, Default)]
struct Load {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile of the latencies, in milliseconds.
    fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let n = self.latencies_us.len();
        let idx = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        self.latencies_us[idx] as f64 / 1000.0
    }
}

/// `workers` clients, each running `op` back to back until `max_ops` ran in all or
/// `duration` passed.
async fn closed_loop(op: Op, workers: usize, duration: Duration, max_ops: u64) -> Load {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let op = op.clone();
        let next = next.clone();
        set.spawn(async move {
            let mut load = Load::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max_ops || Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                if op(i).await {
                    load.ok += 1;
                    load.latencies_us.push(t.elapsed().as_micros() as u64);
                } else {
                    load.errors += 1;
                }
            }
            load
        });
    }
    let mut all = Load::default();
    while let Some(done) = set.join_next().await {
        if let Ok(mut l) = done {
            all.ok += l.ok;
            all.errors += l.errors;
            all.latencies_us.append(&mut l.latencies_us);
        }
    }
    all.elapsed = start.elapsed();
    all
}

/// Paced clients: `workers` keep-alive clients share `rate` requests per second, each
/// starting its requests on a fixed schedule (catching up without pause when an answer
/// came late), for `duration`. Latency is measured from the moment a request starts.
async fn paced(op: Op, rate: f64, duration: Duration, workers: usize) -> Load {
    let start = tokio::time::Instant::now();
    let per_worker = Duration::from_secs_f64(workers as f64 / rate.max(1.0));
    let total = (rate * duration.as_secs_f64()).max(1.0) as u64;
    let hard_stop = start + duration * 2;
    let mut set = JoinSet::new();
    for w in 0..workers {
        let op = op.clone();
        set.spawn(async move {
            let mut load = Load::default();
            // Workers start spread over one interval, not all at once.
            let offset = per_worker.mul_f64(w as f64 / workers as f64);
            let mut k = 0u64;
            loop {
                let i = k * workers as u64 + w as u64;
                if i >= total {
                    break;
                }
                let at = start + offset + per_worker.mul_f64(k as f64);
                tokio::time::sleep_until(at).await;
                if tokio::time::Instant::now() >= hard_stop {
                    break;
                }
                let t = Instant::now();
                if op(i).await {
                    load.ok += 1;
                    load.latencies_us.push(t.elapsed().as_micros() as u64);
                } else {
                    load.errors += 1;
                }
                k += 1;
            }
            load
        });
    }
    let mut all = Load::default();
    while let Some(done) = set.join_next().await {
        if let Ok(mut l) = done {
            all.ok += l.ok;
            all.errors += l.errors;
            all.latencies_us.append(&mut l.latencies_us);
        }
    }
    all.elapsed = start.elapsed();
    all
}

/// Polls `check` every `every` until it returns Some, or fails after `limit`.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, every: Duration, mut check: F) -> Res<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Res<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        tokio::time::sleep(every).await;
    }
}

/// Resident set size of this process, in bytes (`VmRSS` of /proc/self/status).
fn rss_bytes() -> Res<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ctx("read /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no VmRSS in /proc/self/status".to_owned())
}

/// Runs `f(i)` for i in 0..n with at most `concurrency` at once; fails on the first error.
async fn for_each_concurrent<T, F, Fut>(n: usize, concurrency: usize, f: F) -> Res<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Res<T>> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut set = JoinSet::new();
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await.ctx("semaphore")?;
        let fut = f(i);
        set.spawn(async move {
            let r = fut.await;
            drop(permit);
            (i, r)
        });
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(done) = set.join_next().await {
        let (i, r) = done.ctx("task")?;
        out[i] = Some(r?);
    }
    Ok(out.into_iter().flatten().collect())
}

// ───────────────────────────── servers ─────────────────────────────

/// The wagate server, running in this process.
struct Server {
    base: String,
    key: String,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), wagate::app::StartError>>>,
}

fn http_client(pool: usize) -> Res<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .timeout(Duration::from_secs(60))
        .build()
        .ctx("HTTP client")
}

impl Server {
    /// Starts the server on 127.0.0.1 with DATA_DIR `dir`, the bench defaults plus
    /// `extra`, and logs in as the admin.
    async fn start(dir: &Path, extra: &[(&str, String)]) -> Res<Server> {
        Self::start_seamed(dir, extra, None).await
    }

    /// [`Server::start`], with real (`wacore`) sessions reaching `whatsapp`.
    async fn start_seamed(
        dir: &Path,
        extra: &[(&str, String)],
        whatsapp: Option<Arc<dyn wagate_actors::engine::wacore::TransportFactory>>,
    ) -> Res<Server> {
        let mut all: Vec<(&str, String)> = vec![
            ("data_dir", dir.display().to_string()),
            ("jwt_secret", JWT_SECRET.to_owned()),
            ("wa_engine", "sandbox".to_owned()),
            ("rate_limit_per_minute", "0".to_owned()),
            ("allow_private_network_urls", "true".to_owned()),
            ("sandbox_autopair_ms", "50".to_owned()),
            ("login_max_failures", "0".to_owned()),
        ];
        all.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        let config = wagate::config::Config::from_overrides(all).ctx("config")?;
        let listener = TcpListener::bind("127.0.0.1:0").await.ctx("bind")?;
        let addr = listener.local_addr().ctx("address")?;
        let (tx, rx) = oneshot::channel::<()>();
        // No media in S7: the sessions' HTTP client stays the production one.
        let seams = wagate::app::Seams {
            wacore_transport: whatsapp,
            ..wagate::app::Seams::default()
        };
        let handle = tokio::spawn(wagate::app::run_with(
            config,
            listener,
            async move {
                let _ = rx.await;
            },
            seams,
        ));
        let client = http_client(256)?;
        let base = format!("http://{addr}");
        let login: Value = client
            .post(format!("{base}/api/auth/login"))
            .json(&json!({"email": "admin@example.com", "password": "admin123"}))
            .send()
            .await
            .ctx("login")?
            .json()
            .await
            .ctx("login body")?;
        let key = login["user"]["apiKey"]
            .as_str()
            .ok_or_else(|| format!("no API key in the login answer: {login}"))?
            .to_owned();
        Ok(Server {
            base,
            key,
            client,
            shutdown: Some(tx),
            handle: Some(handle),
        })
    }

    /// Graceful stop; waits for it.
    async fn stop(mut self) -> Res<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(120), h)
                .await
                .ctx("server stop in time")?
                .ctx("server task")?
                .ctx("server exit")?;
        }
        Ok(())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Res<(u16, Value)> {
        let resp = rb
            .header("x-api-key", &self.key)
            .send()
            .await
            .ctx("request")?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.ctx("body")?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn get(&self, path: &str) -> Res<(u16, Value)> {
        self.send(self.client.get(self.url(path))).await
    }

    async fn post(&self, path: &str, body: &Value) -> Res<(u16, Value)> {
        self.send(self.client.post(self.url(path)).json(body)).await
    }

    /// Creates a sandbox instance (autopaired by the configuration); returns its id.
    async fn create_instance(&self, name: &str, webhook: Option<&str>) -> Res<String> {
        let mut body = json!({"name": name, "engine": "sandbox"});
        if let Some(url) = webhook {
            body["webhookUrl"] = json!(url);
            body["webhookEnabled"] = json!(true);
            body["webhookSecret"] = json!(WEBHOOK_SECRET);
            body["maxRetries"] = json!(10);
            body["retryInterval"] = json!(1000);
        }
        let (status, answer) = self.post("/api/instances", &body).await?;
        if status != 201 {
            return Err(format!("create instance: {status} {answer}"));
        }
        answer["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no id in {answer}"))
    }

    /// `/metrics`, as name+labels → value.
    async fn metrics(&self) -> Res<HashMap<String, f64>> {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .ctx("metrics")?
            .text()
            .await
            .ctx("metrics body")?;
        Ok(parse_metrics(&text))
    }

    async fn connected_count(&self) -> Res<u64> {
        let m = self.metrics().await?;
        Ok(m.get("wagate_instances{status=\"connected\"}")
            .copied()
            .unwrap_or(0.0) as u64)
    }

    async fn queue_depth(&self) -> Res<u64> {
        let m = self.metrics().await?;
        Ok(m.get("wagate_webhook_queue_depth").copied().unwrap_or(0.0) as u64)
    }

    async fn wait_connected(&self, n: usize, limit: Duration) -> Res<()> {
        wait_for(
            &format!("{n} connected instances"),
            limit,
            Duration::from_millis(50),
            || async { Ok((self.connected_count().await? >= n as u64).then_some(())) },
        )
        .await
    }

    async fn wait_queue_empty(&self, limit: Duration) -> Res<()> {
        wait_for(
            "an empty webhook queue",
            limit,
            Duration::from_millis(50),
            || async { Ok((self.queue_depth().await? == 0).then_some(())) },
        )
        .await
    }

    /// Messages stored in one chat (the history's `pagination.total`).
    async fn chat_total(&self, instance: &str, chat: &str) -> Res<u64> {
        let (status, body) = self
            .get(&format!(
                "/api/instances/{instance}/chats/{chat}/messages?limit=1"
            ))
            .await?;
        if status != 200 {
            return Err(format!("history: {status} {body}"));
        }
        body["pagination"]["total"]
            .as_u64()
            .ok_or_else(|| format!("no total in {body}"))
    }

    /// Creates `n` instances, `concurrency` at a time.
    async fn create_instances(
        self: &Arc<Self>,
        prefix: &str,
        n: usize,
        concurrency: usize,
        webhook: Option<String>,
    ) -> Res<Vec<String>> {
        let prefix = prefix.to_owned();
        for_each_concurrent(n, concurrency, |i| {
            let srv = self.clone();
            let name = format!("{prefix}-{i}");
            let webhook = webhook.clone();
            async move { srv.create_instance(&name, webhook.as_deref()).await }
        })
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A bare axum server with one JSON echo route: the HTTP baseline.
async fn start_echo() -> Res<String> {
    let app =
        axum::Router::new().route("/echo", post(|Json(v): Json<Value>| async move { Json(v) }));
    let listener = TcpListener::bind("127.0.0.1:0").await.ctx("bind echo")?;
    let addr = listener.local_addr().ctx("echo address")?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/echo"))
}

/// The physical limit of a stored message over HTTP: the echo route, plus the rows the
/// server stores for it handed to the same kind of group-commit writer (the storage's
/// own, through `record_message`) on a database file of its own, opened as the server
/// opens its own, the commit awaited before the answer. No authentication, no instance
/// actor, no engine, no event hub.
///
/// - `POST /send/{instance}` `{phone, message}`: a send's rows, its message and
///   `message_sent` event;
/// - `POST /inbound/{instance}` `{from, body, pushName}`: an inbound message's, its
///   message, the sender's contact and `message_received` event.
async fn start_limit(path: &Path) -> Res<(String, SqliteStorage)> {
    let storage = SqliteStorage::open(path)
        .await
        .ctx("open the limit's database")?;
    let app = axum::Router::new()
        .route("/send/{instance}", post(limit_send))
        .route("/inbound/{instance}", post(limit_inbound))
        .with_state(storage.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.ctx("bind limit")?;
    let addr = listener.local_addr().ctx("limit address")?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), storage))
}

/// A text message row as the instance actor builds it.
fn text_message(instance: &str, chat: &str, text: &str, from_me: bool) -> Message {
    let now = chrono::Utc::now();
    Message {
        id: wagate_actors::domain::new_id(),
        instance_id: instance.to_owned(),
        message_id: format!("3EB0{}", uuid::Uuid::new_v4().simple()).to_uppercase(),
        remote_jid: chat.to_owned(),
        from_me,
        message_type: "text".into(),
        content: Some(text.to_owned()),
        has_media: false,
        media_url: None,
        caption: None,
        mime_type: None,
        file_name: None,
        media_path: None,
        media_size: None,
        status: if from_me {
            MessageStatus::Sent
        } else {
            MessageStatus::Received
        },
        push_name: None,
        metadata: json!({ "timestamp": now.timestamp() }),
        timestamp: now,
        created_at: now,
        updated_at: now,
        status_updated_at: from_me.then_some(now),
        quoted_message_id: None,
        mentions: Vec::new(),
        reactions: Vec::new(),
        edited_at: None,
        revoked: false,
        typed: Default::default(),
        message_secret: None,
    }
}

async fn limit_send(
    State(storage): State<SqliteStorage>,
    axum::extract::Path(instance): axum::extract::Path<String>,
    Json(v): Json<Value>,
) -> Result<Json<Value>, StatusCode> {
    let chat = format!("{}@s.whatsapp.net", v["phone"].as_str().unwrap_or_default());
    let m = text_message(
        &instance,
        &chat,
        v["message"].as_str().unwrap_or_default(),
        true,
    );
    let event = event_of(
        EventKind::MessageSent,
        &instance,
        json!({"messageId": m.message_id, "to": chat, "body": m.content, "type": "text",
            "timestamp": m.timestamp.timestamp(), "hasMedia": false, "fromMe": true, "status": "sent"}),
    );
    storage
        .record_message(&m, None, &event)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(Json(json!({"messageId": m.message_id, "status": "sent"})))
}

async fn limit_inbound(
    State(storage): State<SqliteStorage>,
    axum::extract::Path(instance): axum::extract::Path<String>,
    Json(v): Json<Value>,
) -> Result<Json<Value>, StatusCode> {
    let from = format!("{}@s.whatsapp.net", v["from"].as_str().unwrap_or_default());
    let push_name = v["pushName"].as_str().map(str::to_owned);
    let mut m = text_message(
        &instance,
        &from,
        v["body"].as_str().unwrap_or_default(),
        false,
    );
    m.push_name = push_name.clone();
    let contact = wagate_actors::domain::Contact {
        push_name,
        last_activity: Some(m.timestamp),
        ..wagate_actors::domain::Contact::new(&instance, &from, m.created_at)
    };
    let event = event_of(
        EventKind::MessageReceived,
        &instance,
        json!({"messageId": m.message_id, "from": from, "remoteJid": from, "sender": from,
            "body": m.content, "type": "conversation", "fromMe": false,
            "timestamp": m.timestamp.timestamp(), "hasMedia": false, "pushName": m.push_name,
            "status": "received", "metadata": m.metadata}),
    );
    storage
        .record_message(&m, Some(&contact), &event)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(Json(json!({"messageId": m.message_id})))
}

/// Median and spread (lowest, highest) of some ratios.
fn median_spread(mut ratios: Vec<f64>) -> (f64, f64, f64) {
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let median = if n % 2 == 1 {
        ratios[n / 2]
    } else {
        (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0
    };
    (median, ratios[0], ratios[n - 1])
}

/// What the webhook receiver saw.
#[derive(Default)]
struct Received {
    /// Every delivery, duplicates included.
    deliveries: u64,
    /// Distinct `X-Webhook-Id`s.
    ids: HashSet<String>,
    /// `data.messageId` of `message_received` events.
    message_ids: HashSet<String>,
    /// (instance id, event, envelope timestamp) of every distinct event.
    events: HashSet<(String, String, String)>,
    bad_signatures: u64,
}

/// A keep-alive webhook receiver that checks signatures.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Received>>,
}

#[derive(Clone)]
struct ReceiverState {
    seen: Arc<Mutex<Received>>,
}

async fn receive(State(s): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let signed = header("x-webhook-signature") == sign(WEBHOOK_SECRET, &body);
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut seen = s
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    seen.deliveries += 1;
    if !signed {
        seen.bad_signatures += 1;
    }
    seen.ids.insert(header("x-webhook-id"));
    let kind = v["event"].as_str().unwrap_or_default().to_owned();
    if kind == "message_received"
        && let Some(m) = v["data"]["messageId"].as_str()
    {
        seen.message_ids.insert(m.to_owned());
    }
    seen.events.insert((
        v["data"]["instanceId"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        kind,
        v["timestamp"].as_str().unwrap_or_default().to_owned(),
    ));
    StatusCode::OK
}

impl Receiver {
    async fn start() -> Res<Receiver> {
        let seen = Arc::new(Mutex::new(Received::default()));
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(ReceiverState { seen: seen.clone() });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .ctx("bind receiver")?;
        let addr = listener.local_addr().ctx("receiver address")?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver {
            url: format!("http://{addr}/hook"),
            seen,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Received) -> T) -> T {
        f(&mut self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

// ───────────────────────────── scenarios ─────────────────────────────

fn send_text_op(srv: &Arc<Server>, instances: &[String], counter: Arc<AtomicU64>) -> Op {
    let client = srv.client.clone();
    let key = srv.key.clone();
    let urls: Arc<Vec<String>> = Arc::new(
        instances
            .iter()
            .map(|id| srv.url(&format!("/api/whatsapp/{id}/send")))
            .collect(),
    );
    op(move |i| {
        let client = client.clone();
        let key = key.clone();
        let urls = urls.clone();
        let counter = counter.clone();
        async move {
            let url = &urls[i as usize % urls.len()];
            let body = json!({"phone": "79001234567", "message": format!("benchmark message {i}")});
            match client
                .post(url)
                .header("x-api-key", key)
                .json(&body)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => {
                    let ok = r.bytes().await.is_ok();
                    if ok {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    ok
                }
                _ => false,
            }
        }
    })
}

/// S1's body posted to `urls` in turn: the echo's one URL, or the limit's one per
/// instance.
fn echo_op(client: reqwest::Client, urls: Vec<String>) -> Op {
    let urls = Arc::new(urls);
    op(move |i| {
        let client = client.clone();
        let urls = urls.clone();
        async move {
            let url = &urls[i as usize % urls.len()];
            let body = json!({"phone": "79001234567", "message": format!("benchmark message {i}")});
            match client.post(url).json(&body).send().await {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            }
        }
    })
}

/// Rounds of S1's and S3's interleaved phases: each ratio is the median over them.
const ROUNDS: usize = 3;

/// Max throughputs of S1's interleaved phases (echo, limit, send-text), one per round.
struct S1Rounds {
    echo: Vec<f64>,
    limit: Vec<f64>,
    send: Vec<f64>,
    /// Failed sends and limit calls.
    errors: u64,
}

impl S1Rounds {
    /// Send-text over the echo and over the limit: median and spread of the rounds' ratios.
    fn ratios(&self) -> ((f64, f64, f64), (f64, f64, f64)) {
        let over =
            |base: &[f64]| median_spread(self.send.iter().zip(base).map(|(s, b)| s / b).collect());
        (over(&self.echo), over(&self.limit))
    }
}

/// [`ROUNDS`] rounds of echo, limit, send-text, `w` keep-alive clients, `phase` each.
async fn s1_rounds(label: &str, ops: [&Op; 3], w: usize, phase: Duration) -> S1Rounds {
    let [echo_op, limit_op, send_op] = ops;
    let cap = 10_000_000;
    let mut r = S1Rounds {
        echo: Vec::new(),
        limit: Vec::new(),
        send: Vec::new(),
        errors: 0,
    };
    for round in 1..=ROUNDS {
        let echo = closed_loop(echo_op.clone(), w, phase, cap).await;
        let limit = closed_loop(limit_op.clone(), w, phase, cap).await;
        let send = closed_loop(send_op.clone(), w, phase, cap).await;
        println!(
            "{label} round {round}: echo {:.0}/s ({} errors), limit {:.0}/s ({} errors), send-text {:.0}/s ({} errors)",
            echo.rate(),
            echo.errors,
            limit.rate(),
            limit.errors,
            send.rate(),
            send.errors
        );
        r.errors += send.errors + limit.errors;
        r.echo.push(echo.rate());
        r.limit.push(limit.rate());
        r.send.push(send.rate());
    }
    r
}

/// A ratio's median and spread over the rounds, for a row's notes.
fn spread((median, low, high): (f64, f64, f64)) -> String {
    format!("median of {ROUNDS} interleaved rounds {median:.3}× (spread {low:.3}–{high:.3}×)")
}

/// Messages stored in `chat` over the instances `ids`.
async fn stored_in(srv: &Server, ids: &[String], chat: &str) -> Res<u64> {
    let mut total = 0;
    for id in ids {
        total += srv.chat_total(id, chat).await?;
    }
    Ok(total)
}

async fn s1(sizes: &Sizes) -> Res<Vec<Row>> {
    let dir = tempfile::tempdir().ctx("temp dir")?;
    let echo = start_echo().await?;
    let (limit, limit_storage) = start_limit(&dir.path().join("limit.db")).await?;
    let srv = Arc::new(Server::start(dir.path(), &[]).await?);
    let client = http_client(sizes.workers * 2)?;
    let echo_op = echo_op(client.clone(), vec![echo]);
    // The limit's route takes the echo's body, and stores it under the same instances
    // as the sends (their rows spread over the same keys).
    let limit_op = |ids: &[String]| {
        let urls = ids.iter().map(|id| format!("{limit}/send/{id}")).collect();
        crate::echo_op(client.clone(), urls)
    };
    let rows = if sizes.sweep.is_empty() {
        s1_one(sizes, &srv, &echo_op, &limit_op).await
    } else {
        s1_sweep(sizes, &srv, &echo_op, &limit_op).await
    };
    Arc::into_inner(srv)
        .ok_or("server still shared")?
        .stop()
        .await?;
    limit_storage.close().await;
    rows
}

/// Builds the limit's op for these instances.
type LimitOp<'a> = &'a dyn Fn(&[String]) -> Op;

/// S1 at its own instance count: max throughput against the echo and the limit, then
/// p99 at 80 % of the max.
async fn s1_one(
    sizes: &Sizes,
    srv: &Arc<Server>,
    echo_op: &Op,
    limit_op: LimitOp<'_>,
) -> Res<Vec<Row>> {
    let ids = srv
        .create_instances("s1", sizes.s1_instances, 4, None)
        .await?;
    srv.wait_connected(ids.len(), Duration::from_secs(60))
        .await?;
    let sent = Arc::new(AtomicU64::new(0));
    let send_op = send_text_op(srv, &ids, sent.clone());
    let limit_op = &limit_op(&ids);
    let w = sizes.workers;
    let cap = 10_000_000;
    println!("S1: warm-up");
    closed_loop(echo_op.clone(), w, Duration::from_secs(1), cap).await;
    closed_loop(limit_op.clone(), w, Duration::from_secs(1), cap).await;
    closed_loop(send_op.clone(), w, Duration::from_secs(1), cap).await;
    println!(
        "S1: max throughput with {w} keep-alive clients, {:?} each, {ROUNDS} rounds of echo, limit, send-text",
        sizes.phase
    );
    let rounds = s1_rounds("S1", [echo_op, limit_op, &send_op], w, sizes.phase).await;
    let mut errors = rounds.errors;
    let (to_echo, to_limit) = rounds.ratios();
    let (send_rate, echo_rate, limit_rate) = (
        median_spread(rounds.send).0,
        median_spread(rounds.echo).0,
        median_spread(rounds.limit).0,
    );
    let (echo_80, send_80) = (echo_rate * 0.8, send_rate * 0.8);
    println!("S1: paced at 80 %: echo {echo_80:.0}/s, send-text {send_80:.0}/s");
    let mut echo_paced = paced(echo_op.clone(), echo_80, sizes.phase, w).await;
    let mut send_paced = paced(send_op, send_80, sizes.phase, w).await;
    // The limit at send-text's own pace: what the commit alone costs at that rate.
    let mut limit_paced = paced(limit_op.clone(), send_80, sizes.phase, w).await;
    // Every accepted send is stored.
    let stored = stored_in(srv, &ids, "79001234567").await?;
    let accepted = sent.load(Ordering::Relaxed);
    let persisted = stored == accepted;
    let (send_p99, echo_p99) = (send_paced.quantile_ms(0.99), echo_paced.quantile_ms(0.99));
    let (send_p50, echo_p50) = (send_paced.quantile_ms(0.5), echo_paced.quantile_ms(0.5));
    let (limit_p99, limit_p50) = (limit_paced.quantile_ms(0.99), limit_paced.quantile_ms(0.5));
    errors += send_paced.errors;
    Ok(vec![
        Row::new(
            "S1",
            "send-text throughput",
            send_rate,
            "req/s",
            "axum JSON echo",
            Some(echo_rate),
            "≥ 0.5×",
            to_echo.0 >= 0.5 && persisted && errors == 0,
        )
        .median_ratio(to_echo.0)
        .note(format!(
            "{}; {w} keep-alive clients, {} instances; {accepted} sends accepted, {stored} stored, {errors} errors",
            spread(to_echo),
            ids.len()
        )),
        Row::new(
            "S1",
            "send-text throughput",
            send_rate,
            "req/s",
            "physical limit: echo + the send's rows group-committed",
            Some(limit_rate),
            "≥ 0.8×",
            to_limit.0 >= 0.8 && persisted && errors == 0,
        )
        .median_ratio(to_limit.0)
        .note(format!(
            "{}; the limit: an axum route storing a send's message and message_sent event through the storage's own group-commit writer (record_message), a database file of its own, the commit awaited",
            spread(to_limit)
        )),
        Row::new(
            "S1",
            "send-text p99 at 80 % of max",
            send_p99,
            "ms",
            "echo p99 at 80 % of its max",
            Some(echo_p99),
            "≤ 3×",
            send_p99 / echo_p99 <= 3.0 && send_paced.errors == 0,
        )
        .note(format!(
            "{w} paced clients at {send_80:.0}/s (achieved {:.0}/s) vs echo at {echo_80:.0}/s (achieved {:.0}/s); p50 {send_p50:.2} vs {echo_p50:.2} ms",
            send_paced.rate(),
            echo_paced.rate()
        )),
        Row::new(
            "S1",
            "send-text p99 at 80 % of max",
            send_p99,
            "ms",
            "limit p99 at the same pace",
            Some(limit_p99),
            "context",
            true,
        )
        .note(format!(
            "the limit paced at {send_80:.0}/s (achieved {:.0}/s, {} errors); its p50 {limit_p50:.2} ms",
            limit_paced.rate(),
            limit_paced.errors
        )),
    ])
}

/// S1's max throughput at each instance count of the sweep, the instances added as the
/// count grows, the echo, limit and send-text phases interleaved at every count; one row
/// per count, against the limit. No p99 phase.
async fn s1_sweep(
    sizes: &Sizes,
    srv: &Arc<Server>,
    echo_op: &Op,
    limit_op: LimitOp<'_>,
) -> Res<Vec<Row>> {
    let w = sizes.workers;
    let warm_up = Duration::from_secs(1);
    let cap = 10_000_000;
    println!("S1: warm-up");
    closed_loop(echo_op.clone(), w, warm_up, cap).await;
    let sent = Arc::new(AtomicU64::new(0));
    let mut ids = Vec::new();
    let mut runs = Vec::new();
    for &n in &sizes.sweep {
        let more = srv
            .create_instances(&format!("s1-{n}"), n - ids.len(), 8, None)
            .await?;
        ids.extend(more);
        srv.wait_connected(n, Duration::from_secs(300)).await?;
        let send_op = send_text_op(srv, &ids, sent.clone());
        let limit_op = limit_op(&ids);
        closed_loop(limit_op.clone(), w, warm_up, cap).await;
        closed_loop(send_op.clone(), w, warm_up, cap).await;
        println!(
            "S1 sweep: {n} instances, {w} keep-alive clients, {:?} phases",
            sizes.phase
        );
        let label = format!("S1 ×{n}");
        runs.push((
            n,
            s1_rounds(&label, [echo_op, &limit_op, &send_op], w, sizes.phase).await,
        ));
    }
    // Every accepted send is stored.
    let stored = stored_in(srv, &ids, "79001234567").await?;
    let accepted = sent.load(Ordering::Relaxed);
    let persisted = stored == accepted;
    Ok(runs
        .into_iter()
        .map(|(n, rounds)| {
            let (to_echo, to_limit) = rounds.ratios();
            Row::new(
                "S1",
                &format!("send-text throughput, {n} instances"),
                median_spread(rounds.send).0,
                "req/s",
                "physical limit: echo + the send's rows group-committed",
                Some(median_spread(rounds.limit).0),
                "≥ 0.8×",
                to_limit.0 >= 0.8 && persisted && rounds.errors == 0,
            )
            .median_ratio(to_limit.0)
            .note(format!(
                "sweep; {}; to the echo ({:.0}/s) {:.3}×; {w} keep-alive clients; {} errors; over the sweep {accepted} sends accepted, {stored} stored",
                spread(to_limit),
                median_spread(rounds.echo).0,
                to_echo.0,
                rounds.errors
            ))
        })
        .collect())
}

/// S2's product phase: `m` inbound messages over HTTP, from the first call until the
/// receiver (open throughout) has every one's `message_received` webhook. Returns the
/// elapsed time, the part of it the inbound calls took, and how many answered messages'
/// webhooks never arrived.
async fn s2_round(
    srv: &Arc<Server>,
    ids: &Arc<Vec<String>>,
    receiver: &Receiver,
    m: usize,
    workers: usize,
    round: usize,
) -> Res<(Duration, Duration, usize)> {
    let expected: Arc<Mutex<HashSet<String>>> = Arc::default();
    let inbound = {
        let srv = srv.clone();
        let ids = ids.clone();
        let expected = expected.clone();
        op(move |i| {
            let srv = srv.clone();
            let ids = ids.clone();
            let expected = expected.clone();
            async move {
                let id = &ids[i as usize % ids.len()];
                let body = json!({"from": "79005550001", "body": format!("inbound {round}-{i}"), "pushName": "Load"});
                match srv
                    .post(&format!("/api/sandbox/instances/{id}/inbound"), &body)
                    .await
                {
                    Ok((200, v)) => match v["messageId"].as_str() {
                        Some(mid) => {
                            expected
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .insert(mid.to_owned());
                            true
                        }
                        None => false,
                    },
                    _ => false,
                }
            }
        })
    };
    let t0 = Instant::now();
    let queued = closed_loop(inbound, workers, Duration::from_secs(600), m as u64).await;
    if queued.errors > 0 {
        return Err(format!("{} inbound calls failed", queued.errors));
    }
    let filled = t0.elapsed();
    let expected: HashSet<String> = std::mem::take(
        &mut expected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let all_in = wait_for(
        "every webhook at the receiver",
        Duration::from_secs(300),
        Duration::from_millis(2),
        || async {
            Ok(receiver
                .with(|r| expected.iter().all(|e| r.message_ids.contains(e)))
                .then_some(()))
        },
    )
    .await;
    let elapsed = t0.elapsed();
    let lost = receiver.with(|r| {
        expected
            .iter()
            .filter(|e| !r.message_ids.contains(*e))
            .count()
    });
    if let Err(err) = all_in {
        println!("S2 round {round}: {err}; {lost} of {m} webhooks missing");
    }
    Ok((elapsed, filled, lost))
}

/// S2's baseline phase: `m` pre-signed POSTs of the same envelopes from `k` keep-alive
/// clients of the same client stack to the same receiver.
async fn s2_raw(receiver: &Receiver, ids: &[String], m: usize, k: usize) -> Res<Load> {
    let client =
        wagate::outbound::guarded_client(true, Duration::from_secs(300)).ctx("webhook client")?;
    let bodies: Arc<Vec<(String, Vec<u8>, String)>> = Arc::new(
        (0..m)
            .map(|i| {
                let event = received_event(
                    &ids[i % ids.len()],
                    json!({"messageId": format!("RAW{i:016}"), "from": "79005550001@s.whatsapp.net",
                        "body": format!("inbound {i}"), "type": "conversation", "fromMe": false,
                        "timestamp": 1_700_000_000, "hasMedia": false, "pushName": "Load",
                        "status": "received"}),
                );
                let body = envelope(&event);
                let signature = sign(WEBHOOK_SECRET, &body);
                (event.id, body, signature)
            })
            .collect(),
    );
    let raw = {
        let url = receiver.url.clone();
        op(move |i| {
            let client = client.clone();
            let bodies = bodies.clone();
            let url = url.clone();
            async move {
                let (id, body, signature) = &bodies[i as usize];
                let sent = client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .header("X-Webhook-Id", id)
                    .header("X-Webhook-Timestamp", "1700000000")
                    .header("X-Webhook-Attempt", "1")
                    .header("X-Webhook-Event", "message_received")
                    .header("X-Webhook-Signature", signature)
                    .body(body.clone())
                    .send()
                    .await;
                matches!(sent, Ok(r) if r.status().is_success())
            }
        })
    };
    Ok(closed_loop(raw, k, Duration::from_secs(600), m as u64).await)
}

async fn s2(sizes: &Sizes) -> Res<Vec<Row>> {
    let dir = tempfile::tempdir().ctx("temp dir")?;
    let receiver = Receiver::start().await?;
    let srv = Arc::new(Server::start(dir.path(), &[]).await?);
    let k = sizes.s2_instances;
    let m = sizes.s2_events;
    let w = sizes.workers;
    let ids = srv
        .create_instances("s2", k, 8, Some(receiver.url.clone()))
        .await?;
    srv.wait_connected(k, Duration::from_secs(60)).await?;
    srv.wait_queue_empty(Duration::from_secs(60)).await?;
    let ids = Arc::new(ids);
    println!(
        "S2: {k} instances connected; {ROUNDS} rounds of {m} webhooks end to end (inbound over HTTP with {w} clients, stored, delivered; the receiver open throughout), then {m} pre-signed POSTs from {k} clients"
    );
    // Warm-up of both paths.
    s2_round(&srv, &ids, &receiver, 200.min(m), w, 0).await?;
    s2_raw(&receiver, &ids, 200.min(m), k).await?;
    let bad_before = receiver.with(|r| r.bad_signatures);
    let (mut product, mut raw, mut lost, mut raw_errors) = (Vec::new(), Vec::new(), 0, 0);
    let mut fill_share = Vec::new();
    for round in 1..=ROUNDS {
        let (elapsed, filled, missing) = s2_round(&srv, &ids, &receiver, m, w, round).await?;
        let baseline = s2_raw(&receiver, &ids, m, k).await?;
        let rate = m as f64 / elapsed.as_secs_f64();
        println!(
            "S2 round {round}: end to end {rate:.0}/s ({elapsed:?}, of which the inbound calls {filled:?}; {missing} missing), raw loop {:.0}/s ({} errors)",
            baseline.rate(),
            baseline.errors
        );
        lost += missing;
        raw_errors += baseline.errors;
        fill_share.push(filled.as_secs_f64() / elapsed.as_secs_f64());
        product.push(rate);
        raw.push(baseline.rate());
    }
    let ratio = median_spread(product.iter().zip(&raw).map(|(p, r)| p / r).collect());
    let (rate, raw_rate) = (median_spread(product).0, median_spread(raw).0);
    let fill_share = median_spread(fill_share).0;
    let (bad_sigs, deliveries, distinct) =
        receiver.with(|r| (r.bad_signatures - bad_before, r.deliveries, r.ids.len()));
    let rows = vec![
        Row::new(
            "S2",
            "webhooks delivered, end to end",
            rate,
            "webhooks/s",
            "pre-signed POST loop (reqwest)",
            Some(raw_rate),
            "≥ 0.8×",
            ratio.0 >= 0.8 && lost == 0,
        )
        .median_ratio(ratio.0)
        .note(format!(
            "median of {ROUNDS} interleaved rounds {:.3}× (spread {:.3}–{:.3}×); each round {m} message_received webhooks of {k} instances timed from the first inbound call ({w} clients) to the last webhook at the receiver, open throughout; the raw loop runs {k} clients; raw loop errors {raw_errors}; the inbound calls took {:.0} % of a round (median), the rest is the last webhooks' delivery",
            ratio.0,
            ratio.1,
            ratio.2,
            fill_share * 100.0
        )),
        Row::new(
            "S2",
            "webhooks lost",
            lost as f64,
            "webhooks",
            "",
            None,
            "0",
            lost == 0 && bad_sigs == 0,
        )
        .note(format!(
            "{deliveries} deliveries, {distinct} distinct ids (duplicates allowed: at least once); bad signatures {bad_sigs}"
        )),
    ];
    Arc::into_inner(srv)
        .ok_or("server still shared")?
        .stop()
        .await?;
    Ok(rows)
}

const INSERT_MESSAGE: &str = "INSERT INTO messages (id, instance_id, message_id, remote_jid, from_me, message_type, content, has_media,
    media_url, caption, mime_type, file_name, media_path, media_size, status, push_name,
    metadata, ts, created_at, updated_at, status_updated_at, read_by_me)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

const UPSERT_CONTACT: &str = "INSERT INTO contacts (id, instance_id, remote_jid, number, name, push_name, is_group, profile_picture,
    about, last_activity, created_at, updated_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (instance_id, remote_jid) DO UPDATE SET
        push_name = COALESCE(excluded.push_name, contacts.push_name),
        last_activity = MAX(COALESCE(excluded.last_activity, 0), COALESCE(contacts.last_activity, 0)),
        updated_at = excluded.updated_at";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The baseline of S3: the rows one inbound message stores (message, contact, event),
/// written straight through sqlx in transactions of `batch` messages.
async fn raw_ingest(path: &Path, instances: &[String], n: usize, batch: usize) -> Res<Duration> {
    let storage = SqliteStorage::open(path)
        .await
        .ctx("open the baseline database")?;
    let pool = storage.pool().clone();
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let mut tx = pool.begin().await.ctx("begin")?;
        for j in i..(i + batch).min(n) {
            let instance = &instances[j % instances.len()];
            let ts = now_ms();
            let message_id = format!("3EB0{j:018X}");
            let metadata = json!({"pushName": "Load", "timestamp": ts / 1000, "sender": "79005550001@s.whatsapp.net"});
            sqlx::query(INSERT_MESSAGE)
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(instance)
                .bind(&message_id)
                .bind("79005550001@s.whatsapp.net")
                .bind(false)
                .bind("text")
                .bind(format!("inbound {j}"))
                .bind(false)
                .bind(None::<String>)
                .bind(None::<String>)
                .bind(None::<String>)
                .bind(None::<String>)
                .bind(None::<String>)
                .bind(None::<i64>)
                .bind("received")
                .bind("Load")
                .bind(metadata.to_string())
                .bind(ts)
                .bind(ts)
                .bind(ts)
                .bind(None::<i64>)
                .bind(false)
                .execute(&mut *tx)
                .await
                .ctx("insert message")?;
            sqlx::query(UPSERT_CONTACT)
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(instance)
                .bind("79005550001@s.whatsapp.net")
                .bind("79005550001")
                .bind(None::<String>)
                .bind("Load")
                .bind(false)
                .bind(None::<String>)
                .bind(None::<String>)
                .bind(ts)
                .bind(ts)
                .bind(ts)
                .execute(&mut *tx)
                .await
                .ctx("upsert contact")?;
            let event = received_event(
                instance,
                json!({"messageId": message_id, "from": "79005550001@s.whatsapp.net", "body": format!("inbound {j}"),
                    "type": "conversation", "fromMe": false, "timestamp": ts / 1000, "hasMedia": false,
                    "pushName": "Load", "status": "received", "metadata": metadata}),
            );
            sqlx::query(
                "INSERT INTO events (id, instance_id, kind, ts, data) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&event.id)
            .bind(&event.instance_id)
            .bind(event.kind().as_str())
            .bind(event.timestamp.timestamp_millis())
            .bind(event.data_json().to_string())
            .execute(&mut *tx)
            .await
            .ctx("insert event")?;
        }
        tx.commit().await.ctx("commit")?;
        i += batch;
    }
    let elapsed = start.elapsed();
    pool.close().await;
    Ok(elapsed)
}

fn inbound_op(srv: &Arc<Server>, ids: &Arc<Vec<String>>) -> Op {
    let srv = srv.clone();
    let ids = ids.clone();
    op(move |i| {
        let srv = srv.clone();
        let ids = ids.clone();
        async move {
            let id = &ids[i as usize % ids.len()];
            let body =
                json!({"from": "79005550001", "body": format!("inbound {i}"), "pushName": "Load"});
            match srv
                .post(&format!("/api/sandbox/instances/{id}/inbound"), &body)
                .await
            {
                Ok((200, _)) => true,
                other => {
                    eprintln!("S3: an inbound call failed: {other:?}");
                    false
                }
            }
        }
    })
}

fn limit_inbound_op(client: reqwest::Client, base: &str, ids: &Arc<Vec<String>>) -> Op {
    let urls: Arc<Vec<String>> = Arc::new(
        ids.iter()
            .map(|id| format!("{base}/inbound/{id}"))
            .collect(),
    );
    op(move |i| {
        let client = client.clone();
        let urls = urls.clone();
        async move {
            let url = &urls[i as usize % urls.len()];
            let body =
                json!({"from": "79005550001", "body": format!("inbound {i}"), "pushName": "Load"});
            match client.post(url).json(&body).send().await {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            }
        }
    })
}

/// S3's figures of one instance count, one per round: the HTTP ingest, the limit and the
/// raw inserts (msg/s), and how long the HTTP phase took to be accepted/stored.
struct S3Rounds {
    rates: Vec<f64>,
    limits: Vec<f64>,
    raws: Vec<f64>,
    times: Vec<String>,
}

impl S3Rounds {
    /// The HTTP ingest over the limit and over the raw inserts: median and spread.
    fn ratios(&self) -> ((f64, f64, f64), (f64, f64, f64)) {
        let over =
            |base: &[f64]| median_spread(self.rates.iter().zip(base).map(|(r, b)| r / b).collect());
        (over(&self.limits), over(&self.raws))
    }
}

/// Messages per transaction of S3's raw inserts.
const RAW_BATCH: usize = 100;

/// `m` calls of `op` from `workers` clients, each answered 2xx, or which failed.
async fn s3_calls(op: &Op, workers: usize, m: usize, what: &str) -> Res<Load> {
    let run = closed_loop(op.clone(), workers, Duration::from_secs(600), m as u64).await;
    if run.errors > 0 {
        return Err(format!("{} {what} calls failed", run.errors));
    }
    Ok(run)
}

/// S3's three phases, run in a different order each round.
#[derive(Debug, Clone, Copy)]
enum S3Phase {
    Limit,
    Http,
    Raw,
}

impl S3Phase {
    const ORDER: [S3Phase; 3] = [S3Phase::Limit, S3Phase::Http, S3Phase::Raw];

    /// Round 1: limit, HTTP, raw; round 2: HTTP, raw, limit; round 3: raw, limit, HTTP.
    fn rotated(round: usize) -> [S3Phase; 3] {
        let mut order = Self::ORDER;
        order.rotate_left((round - 1) % Self::ORDER.len());
        order
    }

    fn name(self) -> &'static str {
        match self {
            S3Phase::Limit => "limit",
            S3Phase::Http => "HTTP",
            S3Phase::Raw => "raw",
        }
    }
}

/// [`ROUNDS`] rounds of `m` inbound messages into the instances `ids`: through the limit
/// at `limit`, over HTTP (timed until all are stored), and raw into files of their own
/// in `dir`.
async fn s3_rounds(
    sizes: &Sizes,
    srv: &Arc<Server>,
    ids: &Arc<Vec<String>>,
    limit: &str,
    dir: &Path,
) -> Res<S3Rounds> {
    let (k, m) = (ids.len(), sizes.s3_messages);
    let inbound = inbound_op(srv, ids);
    let limit_op = limit_inbound_op(http_client(sizes.workers * 2)?, limit, ids);
    let before = stored_in(srv, ids, "79005550001").await?;
    let mut r = S3Rounds {
        rates: Vec::new(),
        limits: Vec::new(),
        raws: Vec::new(),
        times: Vec::new(),
    };
    for round in 1..=ROUNDS {
        // Each round starts with another phase: the one after the raw inserts (which write
        // a file of their own) may meet the disk still writing that file back.
        let order = S3Phase::rotated(round);
        println!(
            "S3 round {round}: {m} inbound messages into {k} instances: {}",
            order.map(S3Phase::name).join(", ")
        );
        let (mut limit_rate, mut rate, mut raw_rate) = (0.0, 0.0, 0.0);
        let (mut accepted_in, mut ingested_in) = (Duration::ZERO, Duration::ZERO);
        for phase in order {
            match phase {
                S3Phase::Limit => {
                    limit_rate = s3_calls(&limit_op, sizes.workers, m, "limit").await?.rate();
                }
                S3Phase::Http => {
                    let start = Instant::now();
                    s3_calls(&inbound, sizes.workers, m, "inbound").await?;
                    accepted_in = start.elapsed();
                    // An inbound message is answered once committed: all should be stored
                    // already.
                    wait_for(
                        "every inbound message stored",
                        Duration::from_secs(600),
                        Duration::from_millis(20),
                        || async {
                            let total = stored_in(srv, ids, "79005550001").await?;
                            Ok((total >= before + (m * round) as u64).then_some(()))
                        },
                    )
                    .await?;
                    ingested_in = start.elapsed();
                    rate = m as f64 / ingested_in.as_secs_f64();
                }
                S3Phase::Raw => {
                    let raw = raw_ingest(
                        &dir.join(format!("baseline-{k}-{round}.db")),
                        ids,
                        m,
                        RAW_BATCH,
                    )
                    .await?;
                    raw_rate = m as f64 / raw.as_secs_f64();
                }
            }
        }
        println!(
            "S3 round {round}: limit {limit_rate:.0}/s, HTTP {rate:.0}/s (accepted in {accepted_in:?}, stored in {ingested_in:?}), raw {raw_rate:.0}/s"
        );
        r.times.push(format!("{accepted_in:.1?}/{ingested_in:.1?}"));
        r.rates.push(rate);
        r.limits.push(limit_rate);
        r.raws.push(raw_rate);
    }
    Ok(r)
}

async fn s3(sizes: &Sizes) -> Res<Vec<Row>> {
    let dir = tempfile::tempdir().ctx("temp dir")?;
    let (limit, limit_storage) = start_limit(&dir.path().join("limit.db")).await?;
    let srv = Arc::new(Server::start(dir.path(), &[]).await?);
    let m = sizes.s3_messages;
    // The sweep's counts, or S3's own.
    let counts = if sizes.sweep.is_empty() {
        vec![sizes.s3_instances]
    } else {
        sizes.sweep.clone()
    };
    let mut ids = Vec::new();
    let mut runs = Vec::new();
    for &k in &counts {
        let prefix = if sizes.sweep.is_empty() {
            "s3".to_owned()
        } else {
            format!("s3-{k}")
        };
        ids.extend(
            srv.create_instances(&prefix, k - ids.len(), 8, None)
                .await?,
        );
        srv.wait_connected(k, Duration::from_secs(300)).await?;
        let these = Arc::new(ids.clone());
        runs.push((k, s3_rounds(sizes, &srv, &these, &limit, dir.path()).await?));
    }
    Arc::into_inner(srv)
        .ok_or("server still shared")?
        .stop()
        .await?;
    limit_storage.close().await;
    // Each stored message also produced its event.
    let storage = SqliteStorage::open(&dir.path().join("whatsapp-api.db"))
        .await
        .ctx("reopen the server's database")?;
    let events: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE kind = 'message_received'")
            .fetch_one(storage.pool())
            .await
            .ctx("count events")?;
    storage.pool().close().await;
    let expected = m * ROUNDS * runs.len();
    let all_events = events as usize == expected;
    let w = sizes.workers;
    if !sizes.sweep.is_empty() {
        return Ok(runs
            .into_iter()
            .map(|(k, r)| {
                let (to_limit, to_raw) = r.ratios();
                Row::new(
                    "S3",
                    &format!("inbound ingest (HTTP → stored → event), {k} instances"),
                    median_spread(r.rates).0,
                    "msg/s",
                    "physical limit: echo + the message's rows group-committed",
                    Some(median_spread(r.limits).0),
                    "≥ 0.8×",
                    to_limit.0 >= 0.8 && all_events,
                )
                .median_ratio(to_limit.0)
                .note(format!(
                    "sweep; {}; to the raw batched inserts ({:.0}/s) {:.3}×; {w} clients, {m} per round, accepted/stored in {}; over the sweep {events} message_received events stored of {expected}",
                    spread(to_limit),
                    median_spread(r.raws).0,
                    to_raw.0,
                    r.times.join(", ")
                ))
            })
            .collect());
    }
    let (k, r) = runs.pop().ok_or("S3 ran at no instance count")?;
    let (to_limit, to_raw) = r.ratios();
    let rate = median_spread(r.rates).0;
    Ok(vec![
        Row::new(
            "S3",
            "inbound ingest (HTTP → stored → event)",
            rate,
            "msg/s",
            "physical limit: echo + the message's rows group-committed",
            Some(median_spread(r.limits).0),
            "≥ 0.8×",
            to_limit.0 >= 0.8 && all_events,
        )
        .median_ratio(to_limit.0)
        .note(format!(
            "{}; driven over HTTP (POST /api/sandbox/instances/{{id}}/inbound, {w} clients, {k} instances), {m} per round, accepted/stored in {}; {events} message_received events stored of {expected}; the limit: an axum route storing the message, contact and event through the storage's own group-commit writer, its own file",
            spread(to_limit),
            r.times.join(", "),
        )),
        Row::new(
            "S3",
            "inbound ingest (HTTP → stored → event)",
            rate,
            "msg/s",
            "raw batched sqlx inserts",
            Some(median_spread(r.raws).0),
            "context",
            all_events,
        )
        .median_ratio(to_raw.0)
        .note(format!(
            "{}; baseline = message + contact upsert + event per message, {RAW_BATCH} messages per transaction, same schema and pragmas, separate file, no HTTP",
            spread(to_raw)
        )),
    ])
}

/// Bulk-loads `n` messages of one instance into `chats` chats, straight into the file.
async fn bulk_load(db: &Path, instance: &str, n: usize, chats: usize) -> Res<Duration> {
    let storage = SqliteStorage::open(db)
        .await
        .ctx("open the server's database")?;
    let pool = storage.pool().clone();
    let start = Instant::now();
    let base_ts = now_ms() - n as i64 * 1000;
    const PER_STATEMENT: usize = 500;
    const PER_TX: usize = 20_000;
    let mut i = 0;
    while i < n {
        let mut tx = pool.begin().await.ctx("begin")?;
        let tx_end = (i + PER_TX).min(n);
        while i < tx_end {
            let end = (i + PER_STATEMENT).min(tx_end);
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO messages (id, instance_id, message_id, remote_jid, from_me, message_type, content, has_media, status, push_name, metadata, ts, created_at, updated_at, read_by_me) ",
            );
            qb.push_values(i..end, |mut b, j| {
                let ts = base_ts + j as i64 * 1000;
                let from_me = j % 2 == 0;
                b.push_bind(format!("{:08x}-0000-7000-8000-{j:012x}", j / 1000))
                    .push_bind(instance.to_owned())
                    .push_bind(format!("3EB0{j:018X}"))
                    .push_bind(chat_jid(j % chats))
                    .push_bind(from_me)
                    .push_bind("text")
                    .push_bind(format!(
                        "stored message number {j}, with a little text to look real"
                    ))
                    .push_bind(false)
                    .push_bind(if from_me { "sent" } else { "received" })
                    .push_bind((!from_me).then_some("Load"))
                    .push_bind(format!("{{\"timestamp\":{}}}", ts / 1000))
                    .push_bind(ts)
                    .push_bind(ts)
                    .push_bind(ts)
                    .push_bind(true);
            });
            qb.build().execute(&mut *tx).await.ctx("bulk insert")?;
            i = end;
        }
        tx.commit().await.ctx("commit")?;
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .ctx("checkpoint")?;
    let elapsed = start.elapsed();
    pool.close().await;
    Ok(elapsed)
}

fn chat_jid(c: usize) -> String {
    format!("7901{c:07}@s.whatsapp.net")
}

async fn s4(sizes: &Sizes) -> Res<Vec<Row>> {
    let dir = tempfile::tempdir().ctx("temp dir")?;
    let n = sizes.s4_messages;
    let chats = (n / 10_000).max(1);
    let q = sizes.s4_queries;
    // A first start creates the schema, the admin and the instance.
    let srv = Server::start(dir.path(), &[]).await?;
    let instance = srv.create_instance("s4", None).await?;
    srv.stop().await?;
    let db = dir.path().join("whatsapp-api.db");
    println!("S4: bulk-loading {n} messages in {chats} chats");
    let loaded_in = bulk_load(&db, &instance, n, chats).await?;
    println!("S4: loaded in {loaded_in:?}; {q} queries through sqlx");

    // Baseline 1: the history's two queries, straight through sqlx, one at a time.
    let storage = SqliteStorage::open(&db)
        .await
        .ctx("open for the baseline")?;
    let pool = storage.pool().clone();
    let mut direct = Load::default();
    let start = Instant::now();
    for i in 0..q + q / 10 {
        let jid = chat_jid(i % chats);
        let t = Instant::now();
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE instance_id = ? AND remote_jid = ?",
        )
        .bind(&instance)
        .bind(&jid)
        .fetch_one(&pool)
        .await
        .ctx("count")?;
        let rows = sqlx::query(
            "SELECT * FROM messages WHERE instance_id = ? AND remote_jid = ? ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?",
        )
        .bind(&instance)
        .bind(&jid)
        .bind(50i64)
        .bind(0i64)
        .fetch_all(&pool)
        .await
        .ctx("page")?;
        // The first tenth warms the cache and is not counted.
        if i >= q / 10 {
            direct.ok += 1;
            direct.latencies_us.push(t.elapsed().as_micros() as u64);
        }
        if rows.len() != 50 || total < 50 {
            return Err(format!("direct query found {} rows of {total}", rows.len()));
        }
        if start.elapsed() > Duration::from_secs(300) {
            break;
        }
    }
    let checked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
        .fetch_one(&pool)
        .await
        .ctx("count all")?;
    pool.close().await;

    // Baseline 2: the echo's p99, one client, one request at a time.
    let echo = start_echo().await?;
    let echo_op = echo_op(http_client(4)?, vec![echo]);
    closed_loop(echo_op.clone(), 1, Duration::from_secs(1), (q / 10) as u64).await;
    let mut echo_seq = closed_loop(echo_op, 1, Duration::from_secs(300), q as u64).await;

    // The server, one client, one request at a time.
    let srv = Arc::new(Server::start(dir.path(), &[]).await?);
    let history = {
        let srv = srv.clone();
        let instance = instance.clone();
        op(move |i| {
            let srv = srv.clone();
            let instance = instance.clone();
            async move {
                let chat = chat_jid(i as usize % chats);
                match srv
                    .get(&format!(
                        "/api/instances/{instance}/chats/{chat}/messages?limit=50"
                    ))
                    .await
                {
                    Ok((200, v)) => v["messages"].as_array().is_some_and(|m| m.len() == 50),
                    _ => false,
                }
            }
        })
    };
    closed_loop(history.clone(), 1, Duration::from_secs(5), (q / 10) as u64).await;
    let mut served = closed_loop(history, 1, Duration::from_secs(300), q as u64).await;
    Arc::into_inner(srv)
        .ok_or("server still shared")?
        .stop()
        .await?;
    let (p99, direct_p99, echo_p99) = (
        served.quantile_ms(0.99),
        direct.quantile_ms(0.99),
        echo_seq.quantile_ms(0.99),
    );
    let baseline = direct_p99 + echo_p99;
    let (p50, direct_p50, echo_p50) = (
        served.quantile_ms(0.5),
        direct.quantile_ms(0.5),
        echo_seq.quantile_ms(0.5),
    );
    Ok(vec![
        Row::new(
            "S4",
            "chat history p99 (50 of 1M-scale store)",
            p99,
            "ms",
            "sqlx p99 + echo p99",
            Some(baseline),
            "≤ 2×",
            p99 / baseline <= 2.0 && served.errors == 0,
        )
        .note(format!(
            "{checked} messages stored ({chats} chats × {} each), loaded in {loaded_in:.1?}; {} queries one at a time; p50 {:.2} ms (sqlx p50 {:.2}, echo p50 {:.2}); sqlx p99 {direct_p99:.2} ms, echo p99 {echo_p99:.2} ms; {} errors",
            n / chats,
            served.ok,
            p50,
            direct_p50,
            echo_p50,
            served.errors
        )),
    ])
}

async fn s5(sizes: &Sizes) -> Res<Vec<Row>> {
    let dir = tempfile::tempdir().ctx("temp dir")?;
    let srv = Arc::new(Server::start(dir.path(), &[]).await?);
    let n = sizes.s5_instances;
    let warm = sizes.s5_warmup;
    let started = Instant::now();
    srv.create_instances("warm", warm, 16, None).await?;
    srv.wait_connected(warm, Duration::from_secs(120)).await?;
    // Idle: let timers and buffers settle before reading the resident size.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_warm = reading()?;
    let rss_warm = at_warm.rss;
    println!(
        "S5: {warm} instances, RSS {:.1} MiB; creating {} more",
        rss_warm as f64 / 1048576.0,
        n - warm
    );
    srv.create_instances("idle", n - warm, 32, None).await?;
    srv.wait_connected(n, Duration::from_secs(1200)).await?;
    let created_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at_n = reading()?;
    let rss = at_n.rss;
    let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / (n - warm) as f64 / 1024.0;
    let marginal = per(rss_warm, rss);
    let total_mib = rss as f64 / 1048576.0;
    println!("S5: {n} instances connected in {created_in:?}; RSS {total_mib:.1} MiB");
    println!(
        "S5: per instance: RSS {marginal:.1} KiB, Rust heap {:.1} KiB, SQLite {:.1} KiB",
        per(at_warm.heap, at_n.heap),
        per(at_warm.sqlite, at_n.sqlite)
    );
    Arc::into_inner(srv)
        .ok_or("server still shared")?
        .stop()
        .await?;
    Ok(vec![
        Row::new(
            "S5",
            &format!("marginal RSS per idle connected instance ({n})"),
            marginal,
            "KiB",
            "",
            None,
            "≤ 64 KiB",
            marginal <= 64.0,
        )
        .note(format!(
            "(RSS at {n} − RSS at {warm}) / {}; {n} created over HTTP (32 at a time) and autopaired in {created_in:.1?}",
            n - warm
        )),
        Row::new(
            "S5",
            &format!("whole process RSS with {n} instances"),
            total_mib,
            "MiB",
            "",
            None,
            "≤ 1024 MiB",
            total_mib <= 1024.0,
        )
        .note("VmRSS of the process: server, load client and runtime together"),
    ])
}

/// Open file descriptors and threads of this process.
fn fds_and_threads() -> Res<(u64, u64)> {
    let fds = std::fs::read_dir("/proc/self/fd")
        .ctx("read /proc/self/fd")?
        .count() as u64;
    let status = std::fs::read_to_string("/proc/self/status").ctx("read /proc/self/status")?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or("no Threads in /proc/self/status")?;
    Ok((fds, threads))
}

/// Open files an S7 session holds (its socket, its session store's files), and the
/// headroom kept for everything else in the process.
const S7_FDS_PER_SESSION: u64 = 4;
const FD_HEADROOM: u64 = 1_024;

/// Open files a process running `sessions` S7 sessions needs.
fn files_needed(sessions: usize) -> u64 {
    sessions as u64 * S7_FDS_PER_SESSION + FD_HEADROOM
}

/// Raises this process's limit of open files (the sessions' sockets and session files),
/// never the user's shell: the hard limit up to `need` (bounded by the kernel's
/// `fs.nr_open`) where the process may (root, `CAP_SYS_RESOURCE`), else only the soft
/// limit up to the hard one. Returns the soft limit got.
fn raise_file_limit(need: u64) -> Res<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err("getrlimit failed".into());
        }
    }
    if limit.rlim_max != libc::RLIM_INFINITY && limit.rlim_max < need {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(limit.rlim_max);
        let raised = libc::rlimit {
            rlim_cur: need.min(nr_open),
            rlim_max: need.min(nr_open),
        };
        // SAFETY: as above; refused (EPERM) without the privilege, leaving the limit as is.
        if raised.rlim_max > limit.rlim_max
            && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0
        {
            return Ok(raised.rlim_cur);
        }
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err("setrlimit failed".into());
        }
    }
    Ok(limit.rlim_cur)
}

/// Live bytes of Rust heap in this process: the server's allocator, counted, so S5 and S7
/// can split an instance's or a session's resident size into Rust heap, SQLite's own
/// allocations (its page caches; SQLite allocates through C's `malloc`, not through this)
/// and the rest.
///
/// Counting is on only in S5's and S7's processes ([`COUNTING`]), which measure memory,
/// not speed: a counter every thread adds to on every allocation is a contended cache
/// line, which cost the request path about a tenth of its CPU in S1's profile, an
/// overhead the server binary does not have.
struct CountingAlloc;

static HEAP_BYTES: AtomicU64 = AtomicU64::new(0);
/// Set once, before the scenario starts. Frees of memory allocated before it may take
/// the counter below zero for a moment; the atomics wrap, so it is right again once what
/// is counted outweighs them, long before the first reading.
static COUNTING: AtomicBool = AtomicBool::new(false);

/// The allocator the server binary runs on (`wagate::Allocator`), so that the figures
/// are the binary's.
const INNER: wagate::Allocator = wagate::Allocator;

// SAFETY: every call goes to the server's allocator unchanged; the counter only adds and
// subtracts the sizes it was given.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { INNER.alloc(layout) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            HEAP_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { INNER.alloc_zeroed(layout) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            HEAP_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { INNER.dealloc(ptr, layout) };
        if COUNTING.load(Ordering::Relaxed) {
            HEAP_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { INNER.realloc(ptr, layout, new) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            HEAP_BYTES.fetch_add(new as u64, Ordering::Relaxed);
            HEAP_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

unsafe extern "C" {
    /// Bytes SQLite holds through its own allocator (the bundled SQLite every store of
    /// this process links).
    fn sqlite3_memory_used() -> i64;
}

/// One look at this process's footprint.
#[derive(Debug, Clone, Copy)]
struct Reading {
    rss: u64,
    heap: u64,
    sqlite: u64,
    fds: u64,
    threads: u64,
}

fn reading() -> Res<Reading> {
    let (fds, threads) = fds_and_threads()?;
    // SAFETY: a read of SQLite's memory statistics; no argument, no pointer.
    let sqlite = unsafe { sqlite3_memory_used() };
    Ok(Reading {
        rss: rss_bytes()?,
        heap: HEAP_BYTES.load(Ordering::Relaxed),
        sqlite: u64::try_from(sqlite).unwrap_or(0),
        fds,
        threads,
    })
}

/// Memory the kernel could still give out (`MemAvailable`), in MiB.
fn available_mib() -> Res<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ctx("read /proc/meminfo")?;
    info.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib / 1024)
        .ok_or_else(|| "no MemAvailable in /proc/meminfo".to_owned())
}

/// What one engine's sessions cost: per-session RSS (and its Rust heap and SQLite
/// parts), descriptors and threads between the warm-up step and the sessions reached,
/// and the time to connect those.
struct Footprint {
    warm: usize,
    reached: usize,
    rss_kib: f64,
    heap_kib: f64,
    sqlite_kib: f64,
    fds: f64,
    threads: f64,
    connect: Duration,
    /// Why growth stopped before the sessions asked for, if it did.
    stopped: Option<String>,
    /// Descriptors open before the first step.
    first_fds: u64,
}

/// How S7 grows: sessions asked for, per step, and the free memory to keep.
struct Growth {
    sessions: usize,
    step: usize,
    floor_mib: u64,
    file_limit: u64,
}

/// Grows to `growth.sessions` in steps: `grow(from, count)` creates and connects
/// sessions `from..from + count`. The first step is the warm-up the figures start from.
/// Stops early, saying why, when free memory is under the floor or the next step would
/// not fit in the file limit.
async fn grow_in_steps<F, Fut>(label: &str, growth: &Growth, mut grow: F) -> Res<Footprint>
where
    F: FnMut(usize, usize) -> Fut,
    Fut: Future<Output = Res<()>>,
{
    let n = growth.sessions;
    let warm = growth.step.min(n / 2).max(1);
    let first_fds = fds_and_threads()?.0;
    grow(0, warm).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = reading()?;
    let mut reached = warm;
    let mut connect = Duration::ZERO;
    let mut stopped = None;
    while reached < n {
        let count = growth.step.min(n - reached);
        let free = available_mib()?;
        if free < growth.floor_mib {
            stopped = Some(format!(
                "free memory {free} MiB under the floor of {} MiB",
                growth.floor_mib
            ));
            break;
        }
        let now = reading()?;
        // Descriptors per session so far, with a margin; the whole process's at first.
        let per = (now.fds as f64 / reached as f64).max(1.0) * 1.25;
        if now.fds as f64 + count as f64 * per + 64.0 > growth.file_limit as f64 {
            stopped = Some(format!(
                "{} more sessions would not fit in the file limit {} ({} open)",
                count, growth.file_limit, now.fds
            ));
            break;
        }
        let started = Instant::now();
        grow(reached, count).await?;
        let took = started.elapsed();
        connect += took;
        reached += count;
        let r = reading()?;
        println!(
            "S7: {label} {reached} sessions in {took:.1?}: RSS {} MiB (Rust heap {}, SQLite {}), \
             {} fds, {} threads; {free} MiB free before the step",
            r.rss >> 20,
            r.heap >> 20,
            r.sqlite >> 20,
            r.fds,
            r.threads
        );
    }
    if let Some(why) = &stopped {
        println!("S7: {label} stopped at {reached} sessions: {why}");
    }
    if reached <= warm {
        return Err(format!(
            "{label}: no session past the warm-up's {warm}: {stopped:?}"
        ));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let last = reading()?;
    let extra = (reached - warm) as f64;
    let kib = |a: u64, b: u64| b.saturating_sub(a) as f64 / extra / 1024.0;
    Ok(Footprint {
        warm,
        reached,
        rss_kib: kib(first.rss, last.rss),
        heap_kib: kib(first.heap, last.heap),
        sqlite_kib: kib(first.sqlite, last.sqlite),
        fds: last.fds.saturating_sub(first.fds) as f64 / extra,
        threads: last.threads.saturating_sub(first.threads) as f64 / extra,
        connect,
        stopped,
        first_fds,
    })
}

impl Server {
    /// Creates real instances `from..from + count`, each linked by its own fake phone
    /// scanning its QR code, 32 at a time; waits until `from + count` are connected.
    /// Returns the new instances' ids.
    async fn link_wacore(
        self: &Arc<Self>,
        whatsapp: &Arc<fake::FakeProcess>,
        from: usize,
        count: usize,
    ) -> Res<Vec<String>> {
        let ids = for_each_concurrent(count, 32, |i| {
            let srv = self.clone();
            let whatsapp = whatsapp.clone();
            async move {
                let i = from + i;
                let (status, body) = srv
                    .post(
                        "/api/instances",
                        &json!({"name": format!("real-{i}"), "engine": "wacore"}),
                    )
                    .await?;
                if status != 201 {
                    return Err(format!("create: {status} {body}"));
                }
                let id = body["id"].as_str().ok_or("no id")?.to_owned();
                let qr = wait_for(
                    "a QR code",
                    Duration::from_secs(120),
                    Duration::from_millis(20),
                    || async {
                        let (_, body) = srv.get(&format!("/api/instances/{id}/qr")).await?;
                        Ok(body["qrCode"].as_str().map(str::to_owned))
                    },
                )
                .await?;
                whatsapp.scan(&qr, &format!("7900{i:07}")).await?;
                // Linked, or refused: a session that does not get there fails the run
                // loudly, with what the fake saw, instead of waiting out the limit.
                let status = wait_for(
                    "the session linked",
                    Duration::from_secs(120),
                    Duration::from_millis(20),
                    || async {
                        let (_, body) = srv.get(&format!("/api/instances/{id}/status")).await?;
                        Ok(body["status"]
                            .as_str()
                            .filter(|s| matches!(*s, "connected" | "logged_out" | "failed"))
                            .map(str::to_owned))
                    },
                )
                .await?;
                if status != "connected" {
                    let problems = whatsapp.health().await.map(|h| h.problems);
                    return Err(format!(
                        "real-{i} ended {status} while linking; the fake's problems: {problems:?}"
                    ));
                }
                Ok(id)
            }
        })
        .await?;
        self.wait_connected(from + count, Duration::from_secs(1200))
            .await?;
        Ok(ids)
    }
}

/// CPU time this process has used so far (user + system), from /proc/self/stat.
fn cpu_time() -> Res<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ctx("read /proc/self/stat")?;
    // The command name (field 2) may hold spaces; the fields after it start at 3.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("no command name in /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |field: usize| -> Res<u64> {
        fields
            .get(field - 3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no field {field} in /proc/self/stat"))
    };
    // utime and stime, in clock ticks.
    let used = ticks(14)? + ticks(15)?;
    // SAFETY: sysconf reads a system constant and touches no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz)
        .ok()
        .filter(|hz| *hz > 0)
        .ok_or("no clock tick rate")?;
    Ok(Duration::from_micros(used * 1_000_000 / hz))
}

/// The CPU this process uses while `sessions` sit idle for `window`: µs of CPU time per
/// second of wall time, per session.
async fn idle_cpu(sessions: usize, window: Duration) -> Res<f64> {
    let cpu0 = cpu_time()?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let used = cpu_time()?.saturating_sub(cpu0);
    Ok(used.as_secs_f64() * 1e6 / started.elapsed().as_secs_f64() / sessions as f64)
}

/// A send the API did not take.
struct Refused {
    /// Which send (k of the round).
    k: usize,
    why: String,
}

/// Sends `per` texts from each instance of `ids` through the API, 32 requests at a
/// time, the k-th send from instance `k % ids.len()` to `to(k % ids.len())`. Returns
/// the sends answered other than 200 (all of them are made).
async fn send_round(
    srv: &Arc<Server>,
    ids: &Arc<Vec<String>>,
    per: usize,
    to: impl Fn(usize) -> String,
) -> Res<Vec<Refused>> {
    let n = ids.len();
    let answers = for_each_concurrent(n * per, 32, |k| {
        let srv = srv.clone();
        let id = ids[k % n].clone();
        let phone = to(k % n);
        async move {
            let answer = srv
                .post(
                    &format!("/api/whatsapp/{id}/send"),
                    &json!({"phone": phone, "message": format!("load text {k}")}),
                )
                .await;
            Ok(match answer {
                Ok((200, _)) => None,
                Ok((status, body)) => Some(Refused {
                    k,
                    why: format!("send from {id}: {status} {body}"),
                }),
                Err(e) => Some(Refused {
                    k,
                    why: format!("send from {id}: {e}"),
                }),
            })
        }
    })
    .await?;
    let refused: Vec<Refused> = answers.into_iter().flatten().collect();
    for r in refused.iter().take(5) {
        println!("S7: refused: {}", r.why);
    }
    Ok(refused)
}

/// Texts each S7 session sends in the timed send round.
const S7_TEXTS_PER_SESSION: usize = 3;
/// Fake users the S7 sessions send to.
const S7_PEERS: usize = 8;

fn s7_peer(j: usize) -> String {
    format!("7901{j:07}")
}

/// Has every peer j decrypt `expected(j)` messages, waiting up to 2 minutes for each;
/// the instant the last one was seen.
async fn decrypted(
    whatsapp: &Arc<fake::FakeProcess>,
    expected: impl Fn(usize) -> usize,
) -> Res<Instant> {
    let mut set = JoinSet::new();
    for j in 0..S7_PEERS {
        let whatsapp = whatsapp.clone();
        let count = expected(j);
        set.spawn(async move {
            whatsapp
                .decrypted(&s7_peer(j), count, Duration::from_secs(120))
                .await?;
            Ok::<_, String>(Instant::now())
        });
    }
    let mut last = Instant::now();
    while let Some(done) = set.join_next().await {
        last = last.max(done.ctx("peer task")??);
    }
    Ok(last)
}

/// Sends `per` texts from every session to its peer (session i to peer i % S7_PEERS)
/// and waits until the peers decrypted every one the API took. Returns the time to the
/// last one decrypted and the refused sends.
async fn send_and_decrypt(
    srv: &Arc<Server>,
    whatsapp: &Arc<fake::FakeProcess>,
    ids: &Arc<Vec<String>>,
    per: usize,
) -> Res<(Duration, Vec<Refused>)> {
    let n = ids.len();
    let started = Instant::now();
    let refused = send_round(srv, ids, per, |i| s7_peer(i % S7_PEERS)).await?;
    // Only once the round is over is it known which peers miss which texts.
    let mut expected = [0usize; S7_PEERS];
    for k in 0..n * per {
        expected[(k % n) % S7_PEERS] += 1;
    }
    for r in &refused {
        expected[(r.k % n) % S7_PEERS] -= 1;
    }
    let last = decrypted(whatsapp, |j| expected[j]).await?;
    Ok((last.duration_since(started), refused))
}

/// Gives memory freed by an earlier phase back to the system, so it does not make the
/// next phase's growth look cheaper than it is: mimalloc's (Rust's heap) and the C
/// allocator's (SQLite's).
fn trim_heap() {
    // SAFETY: mi_collect only frees pages mimalloc holds and no allocation uses.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the C allocator to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn s7(sizes: &Sizes) -> Res<Vec<Row>> {
    let file_limit = raise_file_limit(files_needed(sizes.s7_sessions))?;
    let growth = Growth {
        sessions: sizes.s7_sessions,
        step: sizes.s7_step,
        floor_mib: sizes.s7_mem_floor_mib,
        file_limit,
    };
    let idle_window = sizes.phase;
    println!(
        "S7: up to {} sessions, {} per step, keeping {} MiB free; file limit {file_limit}",
        growth.sessions, growth.step, growth.floor_mib
    );

    // The baseline: sandbox sessions, autopaired, in a server of their own.
    let (sandbox, sandbox_cpu, sandbox_sends) = {
        let dir = tempfile::tempdir().ctx("temp dir")?;
        let srv = Arc::new(Server::start(dir.path(), &[]).await?);
        let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
        let made = grow_in_steps("sandbox", &growth, |from, count| {
            let srv = srv.clone();
            let ids = ids.clone();
            async move {
                let made = srv
                    .create_instances(&format!("sandbox-{from}"), count, 32, None)
                    .await?;
                ids.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(made);
                srv.wait_connected(from + count, Duration::from_secs(600))
                    .await
            }
        })
        .await?;
        let cpu = idle_cpu(made.reached, idle_window).await?;
        let ids = Arc::new(std::mem::take(
            &mut *ids
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ));
        let started = Instant::now();
        let refused =
            send_round(&srv, &ids, S7_TEXTS_PER_SESSION, |_| "79001234567".into()).await?;
        if !refused.is_empty() {
            return Err(format!("{} sandbox sends refused", refused.len()));
        }
        let sends = (ids.len() * S7_TEXTS_PER_SESSION) as f64 / started.elapsed().as_secs_f64();
        Arc::into_inner(srv)
            .ok_or("server still shared")?
            .stop()
            .await?;
        (made, cpu, sends)
    };
    println!(
        "S7: sandbox {:.0} KiB (Rust heap {:.0}), {:.2} fds, {:.3} threads, \
         {sandbox_cpu:.1} µs CPU/s per session; {sandbox_sends:.0} sends/s",
        sandbox.rss_kib, sandbox.heap_kib, sandbox.fds, sandbox.threads
    );
    trim_heap();

    // WhatsApp, in a process of its own: what this process holds is the gateway's.
    let whatsapp = Arc::new(fake::FakeProcess::start()?);
    let dir = tempfile::tempdir().ctx("temp dir")?;
    let version = [("wacore_client_version", "2.3000.1027934701".to_owned())];
    let srv =
        Arc::new(Server::start_seamed(dir.path(), &version, Some(whatsapp.transports())).await?);
    let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let real = grow_in_steps("wacore", &growth, |from, count| {
        let srv = srv.clone();
        let whatsapp = whatsapp.clone();
        let ids = ids.clone();
        async move {
            let made = srv.link_wacore(&whatsapp, from, count).await?;
            ids.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend(made);
            Ok(())
        }
    })
    .await?;
    let n = real.reached;
    let paired = n - real.warm;
    println!(
        "S7: wacore {:.0} KiB (Rust heap {:.0}, SQLite {:.0}), {:.2} fds, {:.3} threads per \
         session; {paired} paired in {:?}",
        real.rss_kib, real.heap_kib, real.sqlite_kib, real.fds, real.threads, real.connect
    );
    let real_cpu = idle_cpu(n, idle_window).await?;
    println!("S7: wacore {real_cpu:.1} µs CPU/s per idle session over {idle_window:?}");

    // Sends spread over the sessions, each to one of a few fake users. A first round
    // (untimed) starts every session's Signal session with its peer (key bundle fetch,
    // `pkmsg`); the timed round is then what a session sends day to day.
    let ids = Arc::new(std::mem::take(
        &mut *ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    ));
    for j in 0..S7_PEERS {
        whatsapp.user(&s7_peer(j), &format!("Peer {j}")).await?;
    }
    let (first, refused_first) = send_and_decrypt(&srv, &whatsapp, &ids, 1).await?;
    println!(
        "S7: first texts (Signal sessions started) in {first:.1?}, {} refused",
        refused_first.len()
    );
    let (took, refused) = send_and_decrypt(&srv, &whatsapp, &ids, S7_TEXTS_PER_SESSION).await?;
    let delivered = n * S7_TEXTS_PER_SESSION - refused.len();
    let real_sends = delivered as f64 / took.as_secs_f64();
    println!(
        "S7: wacore {real_sends:.0} texts/s decrypted by the peers ({delivered} in {took:.1?}, \
         {} refused)",
        refused.len()
    );
    Arc::into_inner(srv)
        .ok_or("server still shared")?
        .stop()
        .await?;
    // The restarted server needs the stopped sessions' descriptors back (near the file
    // limit, it cannot even accept a connection otherwise): wait for them, boundedly.
    let stopped_at = Instant::now();
    let released = wait_for(
        "the stopped sessions' descriptors",
        Duration::from_secs(180),
        Duration::from_millis(500),
        || async {
            let (fds, _) = fds_and_threads()?;
            Ok((fds < real.first_fds + 200).then_some(fds))
        },
    )
    .await;
    match &released {
        Ok(fds) => println!(
            "S7: {fds} descriptors open {:.1?} after the stop",
            stopped_at.elapsed()
        ),
        Err(e) => println!("S7: {e} ({} open)", fds_and_threads()?.0),
    }

    // Restart on the same DATA_DIR: every session logs back in with its keys.
    // A restart that fails is reported in its row; the other figures stand.
    let started = Instant::now();
    let reconnect = async {
        let srv = Server::start_seamed(dir.path(), &version, Some(whatsapp.transports())).await?;
        let connected = srv.wait_connected(n, Duration::from_secs(1200)).await;
        let took = started.elapsed();
        srv.stop().await?;
        connected.map(|()| took)
    }
    .await;
    match &reconnect {
        Ok(took) => println!("S7: {n} sessions logged back in after a restart in {took:?}"),
        Err(e) => println!("S7: the restart failed: {e}"),
    }
    let health = whatsapp.health().await?;
    println!(
        "S7: the fake: {} connections, RSS {} MiB, {} unknown IQs, problems {:?}",
        health.connections,
        health.rss_kib >> 10,
        health.unknown_iqs,
        health.problems.iter().take(5).collect::<Vec<_>>()
    );

    let reach = match &real.stopped {
        Some(why) => format!("{n} of {} asked for ({why})", growth.sessions),
        None => format!("{n}"),
    };
    let per_session = format!(
        "{paired} sessions past the first {} (file limit {file_limit}); sandbox: {} past {}",
        real.warm,
        sandbox.reached - sandbox.warm,
        sandbox.warm
    );
    let refusals = if refused.is_empty() && refused_first.is_empty() {
        "none refused".to_owned()
    } else {
        format!(
            "{} + {} refused: {}",
            refused_first.len(),
            refused.len(),
            refused_first
                .iter()
                .chain(&refused)
                .next()
                .map_or("", |r| r.why.as_str())
        )
    };
    Ok(vec![
        Row::new(
            "S7",
            "wacore sessions connected at once",
            n as f64,
            "sessions",
            "",
            None,
            "≥ 5000",
            n >= 5000,
        )
        .note(reach),
        Row::new(
            "S7",
            &format!("marginal RSS per connected wacore session ({n})"),
            real.rss_kib,
            "KiB",
            "sandbox session",
            Some(sandbox.rss_kib),
            "≤ 600 KiB",
            real.rss_kib <= 600.0,
        )
        .note(format!(
            "{per_session}; of it Rust heap {:.0} KiB, SQLite {:.0} KiB; WhatsApp runs in \
             another process",
            real.heap_kib, real.sqlite_kib
        )),
        Row::new(
            "S7",
            "file descriptors per wacore session",
            real.fds,
            "fds",
            "sandbox session",
            Some(sandbox.fds),
            "—",
            true,
        )
        .note(per_session.clone()),
        Row::new(
            "S7",
            "threads per wacore session",
            real.threads,
            "threads",
            "sandbox session",
            Some(sandbox.threads),
            "—",
            true,
        )
        .note(per_session),
        Row::new(
            "S7",
            &format!("CPU per idle wacore session ({n})"),
            real_cpu,
            "µs CPU/s",
            "sandbox session",
            Some(sandbox_cpu),
            "—",
            true,
        )
        .note(format!(
            "the gateway process's CPU time (/proc/self/stat) over {idle_window:?} idle, \
             per session"
        )),
        Row::new(
            "S7",
            &format!("send throughput spread over {n} wacore sessions"),
            real_sends,
            "texts/s",
            "sandbox sends",
            Some(sandbox_sends),
            "—",
            true,
        )
        .note(format!(
            "{S7_TEXTS_PER_SESSION} texts per session to {S7_PEERS} fake users, 32 \
             requests at a time, timed to the last one a peer decrypted; sessions \
             already started; {refusals}"
        )),
        Row::new(
            "S7",
            &format!("time to pair {paired} wacore sessions (QR scanned by a fake phone)"),
            real.connect.as_secs_f64(),
            "s",
            "sandbox autopair",
            Some(sandbox.connect.as_secs_f64()),
            "—",
            true,
        )
        .note(format!(
            "created over HTTP 32 at a time, {} per step; each QR read from /qr and scanned",
            growth.step
        )),
        Row::new(
            "S7",
            &format!("time to log {n} wacore sessions back in after a restart"),
            reconnect.as_ref().map_or(f64::NAN, Duration::as_secs_f64),
            "s",
            "",
            None,
            "—",
            reconnect.is_ok(),
        )
        .note(match &reconnect {
            Ok(_) => "from the server start to all connected (IK handshakes)".to_owned(),
            Err(e) => format!("failed: {e}"),
        }),
    ])
}

fn parse_ts(ts: &str) -> Option<SystemTime> {
    let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
    let ms = u64::try_from(t.timestamp_millis()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

async fn s6(sizes: &Sizes) -> Res<Vec<Row>> {
    let dir = tempfile::tempdir().ctx("temp dir")?;
    let receiver = Receiver::start().await?;
    let base_ms: u64 = 500;
    let srv = Arc::new(
        Server::start(
            dir.path(),
            &[
                ("restart_backoff_base_ms", base_ms.to_string()),
                ("restart_backoff_max_ms", "30000".into()),
            ],
        )
        .await?,
    );
    let n = sizes.s6_instances;
    let ids = Arc::new(
        srv.create_instances("storm", n, 32, Some(receiver.url.clone()))
            .await?,
    );
    srv.wait_connected(n, Duration::from_secs(600)).await?;
    srv.wait_queue_empty(Duration::from_secs(300)).await?;
    println!("S6: {n} instances connected; crashing them all");
    let crash_at = SystemTime::now();
    let crash_started = Instant::now();
    let concurrency = 128;
    let fired = for_each_concurrent(n, concurrency, |i| {
        let srv = srv.clone();
        let id = ids[i].clone();
        async move {
            let (status, body) = srv
                .post(
                    &format!("/api/sandbox/instances/{id}/fault"),
                    &json!({"kind": "crash"}),
                )
                .await?;
            if status != 200 {
                return Err(format!("crash {id}: {status} {body}"));
            }
            Ok(Instant::now())
        }
    })
    .await?;
    let fired_in = fired
        .iter()
        .max()
        .map_or(Duration::ZERO, |t| t.duration_since(crash_started));
    // The board says all are connected again…
    let seen_connected = wait_for(
        "every instance connected again",
        Duration::from_secs(120),
        Duration::from_millis(20),
        || async {
            let m = srv.metrics().await?;
            let connected = m
                .get("wagate_instances{status=\"connected\"}")
                .copied()
                .unwrap_or(0.0) as usize;
            let restarts = m
                .get("wagate_supervisor_restarts_total")
                .copied()
                .unwrap_or(0.0) as usize;
            Ok((connected >= n && restarts >= n).then(|| crash_started.elapsed()))
        },
    )
    .await?;
    // …and each instance's `connected` event after the crash says when it came back.
    let crash_iso = chrono::DateTime::<chrono::Utc>::from(crash_at)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let back_at: Vec<SystemTime> = wait_for(
        "a connected webhook of every instance",
        Duration::from_secs(300),
        Duration::from_millis(50),
        || async {
            Ok(receiver.with(|r| {
                let mut latest: HashMap<&str, SystemTime> = HashMap::new();
                for (instance, kind, ts) in &r.events {
                    if kind == "connected"
                        && let Some(t) = parse_ts(ts).filter(|t| *t >= crash_at)
                    {
                        let e = latest.entry(instance.as_str()).or_insert(t);
                        *e = (*e).min(t);
                    }
                }
                (latest.len() >= n).then(|| latest.into_values().collect())
            }))
        },
    )
    .await?;
    let storm = back_at
        .iter()
        .filter_map(|t| t.duration_since(crash_at).ok())
        .max()
        .unwrap_or_default();
    let window = Duration::from_millis(base_ms * 12 / 10) + Duration::from_secs(2);
    // The supervisor is alive: it starts and connects one more instance.
    let alive = async {
        srv.create_instance("after-storm", None).await?;
        srv.wait_connected(n + 1, Duration::from_secs(30)).await
    }
    .await
    .is_ok();
    let restarts = srv
        .metrics()
        .await?
        .get("wagate_supervisor_restarts_total")
        .copied()
        .unwrap_or(0.0);
    // No webhook lost: every event stored since the crash reached the receiver.
    srv.wait_queue_empty(Duration::from_secs(300)).await?;
    let stored: Vec<Vec<(String, String, String)>> = for_each_concurrent(n, 32, |i| {
        let srv = srv.clone();
        let id = ids[i].clone();
        let since = crash_iso.clone();
        async move {
            let (status, body) = srv
                .get(&format!(
                    "/api/instances/{id}/events?since={since}&limit=1000"
                ))
                .await?;
            if status != 200 {
                return Err(format!("events: {status} {body}"));
            }
            Ok(body["events"]
                .as_array()
                .map(|events| {
                    events
                        .iter()
                        .map(|e| {
                            (
                                id.clone(),
                                e["type"].as_str().unwrap_or_default().to_owned(),
                                e["timestamp"].as_str().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default())
        }
    })
    .await?;
    let stored: Vec<(String, String, String)> = stored.into_iter().flatten().collect();
    let lost = receiver.with(|r| stored.iter().filter(|e| !r.events.contains(*e)).count());
    let bad = receiver.with(|r| r.bad_signatures);
    Arc::into_inner(srv)
        .ok_or("server still shared")?
        .stop()
        .await?;
    let limit = window.as_secs_f64();
    Ok(vec![
        Row::new(
            "S6",
            &format!("restart storm: {n} crashed → all connected"),
            storm.as_secs_f64(),
            "s",
            "first backoff window (base × 1.2) + 2 s",
            Some(limit),
            "≤ 1× (in time)",
            storm <= window && alive,
        )
        .note(format!(
            "from the first crash request to the last `connected` event; the {n} crash requests took {fired_in:.2?} ({concurrency} at a time); status board all connected {seen_connected:.2?} after the first crash; supervisor restarts {restarts}; supervisor alive afterwards: {alive}"
        )),
        Row::new(
            "S6",
            "webhooks lost in the storm",
            lost as f64,
            "webhooks",
            "",
            None,
            "0",
            lost == 0 && bad == 0,
        )
        .note(format!(
            "{} events stored since the crash, each checked at the receiver; bad signatures {bad}",
            stored.len()
        )),
    ])
}

// ───────────────────────────── driver ─────────────────────────────

fn run_scenario(name: &str, sizes: &Sizes) -> Res<Vec<Row>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .ctx("tokio runtime")?;
    let limit = if sizes.quick {
        Duration::from_secs(900)
    } else {
        Duration::from_secs(3600)
    };
    rt.block_on(async {
        let run = async {
            match name {
                "S1" => s1(sizes).await,
                "S2" => s2(sizes).await,
                "S3" => s3(sizes).await,
                "S4" => s4(sizes).await,
                "S5" => s5(sizes).await,
                "S6" => s6(sizes).await,
                "S7" => s7(sizes).await,
                "S8" => s8::s8(sizes).await,
                "S1M" => s1m::s1m(sizes).await,
                other => Err(format!("no scenario {other}")),
            }
        };
        tokio::time::timeout(limit, run)
            .await
            .map_err(|_| format!("{name} did not finish within {limit:?}"))?
    })
}

/// Runs one scenario in a child process and collects its rows.
fn run_child(name: &str, limit: Duration) -> Vec<Row> {
    let failed = |why: String| {
        vec![
            Row::new(
                name,
                "scenario failed",
                f64::NAN,
                "",
                "",
                None,
                "runs",
                false,
            )
            .note(why),
        ]
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return failed(format!("cannot find the bench binary: {e}")),
    };
    let mut child = match std::process::Command::new(exe)
        .args(["--scenario", name])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot start the scenario process: {e}")),
    };
    let Some(stdout) = child.stdout.take() else {
        return failed("no stdout".into());
    };
    let child = Arc::new(Mutex::new(child));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let child = child.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while !done.load(Ordering::Relaxed) {
                if Instant::now() >= deadline {
                    if let Ok(mut c) = child.lock() {
                        let _ = c.kill();
                    }
                    return true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            false
        })
    };
    let mut rows = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        match line.strip_prefix(ROWS_MARK) {
            Some(json) => rows = serde_json::from_str::<Vec<Row>>(json).ok(),
            None => println!("  {line}"),
        }
    }
    done.store(true, Ordering::Relaxed);
    let killed = watchdog.join().unwrap_or(false);
    let status = child.lock().ok().and_then(|mut c| c.wait().ok());
    match rows {
        Some(rows) => rows,
        None if killed => failed(format!("killed after {limit:?}")),
        None => failed(format!("the scenario process ended with {status:?}")),
    }
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0,
        "cpu": model,
        "rustc": rustc,
        "loadavg_at_start": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | metric | figure | baseline | ratio | target | met? |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let baseline = match r.baseline {
            Some(b) => format!("{} {} ({})", fmt_num(b), r.unit, r.baseline_name),
            None => "—".into(),
        };
        let ratio = r.ratio.map_or("—".into(), |x| format!("{x:.2}×"));
        out.push_str(&format!(
            "| {} | {} | {} {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.metric,
            fmt_num(r.figure),
            r.unit,
            baseline,
            ratio,
            r.target,
            if r.met { "yes" } else { "**no**" }
        ));
    }
    out
}

fn output_path() -> PathBuf {
    if let Ok(p) = std::env::var("WAGATE_BENCH_OUT")
        && !p.is_empty()
    {
        return PathBuf::from(p);
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .unwrap_or(tmp)
        .join("bench-results")
        .join("load.json")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == fake::FLAG) {
        let dir = args.get(i + 1).map(PathBuf::from).unwrap_or_default();
        if let Err(e) = fake::serve(&dir) {
            eprintln!("fake WhatsApp failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    let sizes = Sizes::from_env();
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        let name = args.get(i + 1).cloned().unwrap_or_default();
        COUNTING.store(name == "S5" || name == "S7", Ordering::Relaxed);
        // RUST_LOG=… shows the server's log (and whatsapp-rust's) on stderr.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .try_init();
        }
        match run_scenario(&name, &sizes) {
            Ok(rows) => {
                println!(
                    "{ROWS_MARK}{}",
                    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into())
                );
            }
            Err(e) => {
                eprintln!("{name} failed: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let only: Option<Vec<String>> = std::env::var("WAGATE_BENCH_ONLY").ok().map(|v| {
        v.split(',')
            .map(|s| s.trim().to_uppercase())
            .filter(|s| !s.is_empty())
            .collect()
    });
    let selected: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|s| only.as_ref().is_none_or(|o| o.iter().any(|x| x == s)))
        .collect();
    let machine = machine();
    println!(
        "wagate load harness ({} sizes): {}",
        if sizes.quick { "quick" } else { "full" },
        machine
    );
    let started = chrono::Utc::now();
    let limit = if sizes.quick {
        Duration::from_secs(1000)
    } else {
        Duration::from_secs(3700)
    };
    let mut rows = Vec::new();
    for s in &selected {
        println!("── {s} ──");
        let t = Instant::now();
        let got = run_child(s, limit);
        println!("── {s} done in {:.1?} ──", t.elapsed());
        rows.extend(got);
    }
    println!();
    println!(
        "{:<4} {:<42} {:>12} {:<10} {:>12} {:>7} {:<16} met",
        "id", "metric", "figure", "unit", "baseline", "ratio", "target"
    );
    for r in &rows {
        println!(
            "{:<4} {:<42} {:>12} {:<10} {:>12} {:>7} {:<16} {}",
            r.scenario,
            r.metric,
            fmt_num(r.figure),
            r.unit,
            r.baseline.map_or("—".into(), fmt_num),
            r.ratio.map_or("—".into(), |x| format!("{x:.2}×")),
            r.target,
            if r.met { "yes" } else { "NO" }
        );
        if !r.notes.is_empty() {
            println!("     {}", r.notes);
        }
    }
    let out = output_path();
    let report = json!({
        "started_at": started.to_rfc3339(),
        "sizes": if sizes.quick { "quick" } else { "full" },
        "machine": machine,
        "rows": rows,
    });
    let written = out
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| {
            std::fs::write(
                &out,
                serde_json::to_string_pretty(&report).unwrap_or_default(),
            )
        })
        .and_then(|_| std::fs::write(out.with_extension("md"), markdown(&rows)));
    match written {
        Ok(()) => println!(
            "\nresults: {} (and {})",
            out.display(),
            out.with_extension("md").display()
        ),
        Err(e) => eprintln!("cannot write {}: {e}", out.display()),
    }
}

/// A `message_received` event of `instance` from its wire `data`.
fn received_event(instance: &str, data: serde_json::Value) -> InstanceEvent {
    event_of(EventKind::MessageReceived, instance, data)
}

/// An event of `kind` of `instance` from its wire `data`.
fn event_of(kind: EventKind, instance: &str, data: serde_json::Value) -> InstanceEvent {
    let event = wagate_actors::domain::Event::from_data(kind, data)
        .unwrap_or_else(|e| panic!("a {} payload: {e}", kind.as_str()));
    InstanceEvent::new(instance, event)
}
