//! A real server per test: `run()` on 127.0.0.1:0 with a temporary DATA_DIR, plus a small
//! HTTP client speaking JSON.

#![allow(dead_code)]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::outbox_fault::OutboxFault;
use fake_whatsapp::FakeWhatsApp;
use wagate::config::Config;
use wagate_actors::domain::ManualClock;
use wagate_actors::engine::wacore::{HttpClient, ReqwestHttpClient, TransportFactory};

/// The JWT secret every test server signs with, so tests can forge and tamper tokens.
pub const JWT_SECRET: &str = "integration-test-secret-0123456789abcdef";
pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin123";

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Bearer(String),
    Key(String),
}

impl Auth {
    /// Adds these credentials to a request.
    pub fn apply(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => rb,
            Auth::Bearer(t) => rb.bearer_auth(t),
            Auth::Key(k) => rb.header("x-api-key", k),
        }
    }
}

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub dir: TempDir,
    overrides: Vec<(String, String)>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), wagate::app::StartError>>>,
    /// The admin's token and API key, from a real login.
    pub admin_token: String,
    pub admin_key: String,
    /// The server's clock when the test drives time; kept across restarts.
    clock: Option<Arc<ManualClock>>,
    /// How real (`wacore`) sessions reach WhatsApp, when a test plays WhatsApp's side.
    wacore: Option<WacoreSeams>,
    /// The server's actor runtime, for tests that kill its actors.
    runtime: Arc<std::sync::Mutex<Option<wagate_actors::runtime::Runtime>>>,
    /// The switch that makes the webhook outbox refuse writes; kept across restarts.
    outbox_fault: Option<OutboxFault>,
}

/// The transport and HTTP client of real (`wacore`) sessions.
#[derive(Clone)]
struct WacoreSeams {
    transport: Arc<dyn TransportFactory>,
    http: Arc<dyn HttpClient>,
}

/// The environment variable naming the MongoDB test server (`mongodb://host:port`, no
/// database): `./scripts/test` starts the server and sets it.
pub const MONGODB_URL_VAR: &str = "WAGATE_TEST_MONGODB_URL";

/// The database named in a MongoDB `url` (the test server's).
pub async fn mongo_database(url: &str) -> mongodb::Database {
    mongodb::Client::with_uri_str(url)
        .await
        .expect("connect to the test MongoDB")
        .default_database()
        .expect("a database in the URL")
}

/// The URL of a new, empty database on the MongoDB test server: every test gets its own.
///
/// Panics when [`MONGODB_URL_VAR`] is not set: the tests never skip silently.
pub fn fresh_mongodb_url() -> String {
    let base = std::env::var(MONGODB_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{MONGODB_URL_VAR} is not set: run ./scripts/test, which starts the MongoDB test server"
        )
    });
    format!(
        "{}/wagate_test_{}",
        base.trim_end_matches('/'),
        wagate_actors::domain::new_id()
    )
}

/// The storage backend a test server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Mongodb,
}

impl Backend {
    /// The provider name, as `/health` reports it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Mongodb => "mongodb",
        }
    }

    /// The configuration that puts a server on this backend: SQLite is the default (a file
    /// in the test's DATA_DIR); MongoDB gets a fresh database on the test server.
    fn overrides(self) -> Vec<(String, String)> {
        match self {
            Backend::Sqlite => Vec::new(),
            Backend::Mongodb => vec![
                ("database_provider".into(), "mongodb".into()),
                ("database_url".into(), fresh_mongodb_url()),
            ],
        }
    }
}

/// Runs each listed `async fn name(backend: Backend)` once per backend, as the tests
/// `sqlite::name` and `mongodb::name` of the calling module.
macro_rules! backend_tests {
    ($($test:ident),* $(,)?) => {
        backend_tests!(@on sqlite, Sqlite; $($test),*);
        backend_tests!(@on mongodb, Mongodb; $($test),*);
    };
    (@on $module:ident, $backend:ident; $($test:ident),*) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(crate::common::Backend::$backend).await;
                }
            )*
        }
    };
}

impl TestServer {
    /// A server on SQLite with the test defaults.
    pub async fn start() -> TestServer {
        Self::start_on(Backend::Sqlite, &[]).await
    }

    /// A server on SQLite with the test defaults plus `extra` config overrides
    /// (keys as in config/default.toml).
    pub async fn start_with(extra: &[(&str, &str)]) -> TestServer {
        Self::start_on(Backend::Sqlite, extra).await
    }

    /// A server on `backend` with the test defaults plus `extra` config overrides.
    /// A restart keeps the backend and its database.
    pub async fn start_on(backend: Backend, extra: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut overrides = backend.overrides();
        overrides.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self::boot(dir, overrides, None, None, None).await
    }

    /// A server on SQLite whose real (`wacore`) sessions reach `whatsapp`: connections
    /// through its transport, media through the gateway's own HTTP client to its media
    /// server.
    pub async fn start_with_wacore(extra: &[(&str, &str)], whatsapp: &FakeWhatsApp) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let overrides = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let seams = WacoreSeams {
            transport: whatsapp.factory(),
            http: whatsapp.http_client(Arc::new(ReqwestHttpClient::new())),
        };
        Self::boot(dir, overrides, None, Some(seams), None).await
    }

    /// A server on SQLite whose clock the test moves (statistics days, limit periods).
    pub async fn start_with_clock(extra: &[(&str, &str)], clock: Arc<ManualClock>) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let overrides = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::boot(dir, overrides, Some(clock), None, None).await
    }

    /// A server on `backend` whose clock is `clock`.
    pub async fn start_on_with_clock(
        backend: Backend,
        extra: &[(&str, &str)],
        clock: Arc<ManualClock>,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut overrides = backend.overrides();
        overrides.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self::boot(dir, overrides, Some(clock), None, None).await
    }

    /// A server on `backend` whose webhook outbox refuses writes while `fault` says so.
    pub async fn start_with_outbox_fault(
        backend: Backend,
        extra: &[(&str, &str)],
        fault: &OutboxFault,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut overrides = backend.overrides();
        overrides.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self::boot(dir, overrides, None, None, Some(fault.clone())).await
    }

    async fn boot(
        dir: TempDir,
        overrides: Vec<(String, String)>,
        clock: Option<Arc<ManualClock>>,
        wacore: Option<WacoreSeams>,
        outbox_fault: Option<OutboxFault>,
    ) -> TestServer {
        let mut all: Vec<(&str, String)> = vec![
            ("data_dir", dir.path().display().to_string()),
            ("jwt_secret", JWT_SECRET.to_string()),
            ("wa_engine", "sandbox".to_string()),
            ("allow_private_network_urls", "true".to_string()),
            ("restart_backoff_base_ms", "50".to_string()),
            ("restart_backoff_max_ms", "400".to_string()),
            // Load tests (200 instances) outrun any sane per-minute limit; the security
            // tests set their own.
            ("rate_limit_per_minute", "0".to_string()),
        ];
        for (k, v) in &overrides {
            all.push((k.as_str(), v.clone()));
        }
        let config = Config::from_overrides(all).expect("test config");
        // A cluster node names its own URL, so its port is chosen before it starts.
        let port = overrides
            .iter()
            .find(|(k, _)| k == "port")
            .map_or("0", |(_, v)| v.as_str());
        let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let server_clock: Arc<dyn wagate_actors::domain::Clock> = match &clock {
            Some(c) => c.clone(),
            None => Arc::new(wagate_actors::domain::SystemClock),
        };
        let runtime = Arc::new(std::sync::Mutex::new(None));
        let seen = runtime.clone();
        let seams = wagate::app::Seams {
            clock: server_clock,
            wacore_transport: wacore.as_ref().map(|w| w.transport.clone()),
            wacore_http: wacore.as_ref().map(|w| w.http.clone()),
            on_runtime: Some(Arc::new(move |r: &wagate_actors::runtime::Runtime| {
                *seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r.clone());
            })),
            wrap_outbox: outbox_fault.as_ref().map(OutboxFault::wrapper),
        };
        let handle = tokio::spawn(wagate::app::run_with(
            config,
            listener,
            async move {
                let _ = rx.await;
            },
            seams,
        ));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let mut server = TestServer {
            base: format!("http://{addr}"),
            client,
            dir,
            overrides,
            shutdown: Some(tx),
            handle: Some(handle),
            admin_token: String::new(),
            admin_key: String::new(),
            clock,
            wacore,
            runtime,
            outbox_fault,
        };
        let setting =
            |key: &str, default: &str| server.setting(key).unwrap_or_else(|| default.to_owned());
        let login = json!({"email": setting("admin_email", ADMIN_EMAIL), "password": setting("admin_password", ADMIN_PASSWORD)});
        let (status, body) = server
            .call(Method::POST, "/api/auth/login", &Auth::None, Some(login))
            .await;
        assert_eq!(status, 200, "admin login: {body}");
        server.admin_token = body["token"].as_str().expect("token").to_owned();
        server.admin_key = body["user"]["apiKey"].as_str().expect("apiKey").to_owned();
        server
    }

    /// A configuration override this server was started with (keys as in
    /// config/default.toml), such as the MongoDB `database_url` of its backend.
    pub fn setting(&self, key: &str) -> Option<String> {
        self.overrides
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// The server's actor runtime (set once the server started).
    pub fn runtime(&self) -> wagate_actors::runtime::Runtime {
        self.runtime
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .expect("the server started its runtime")
    }

    pub fn admin(&self) -> Auth {
        Auth::Bearer(self.admin_token.clone())
    }

    /// Stops the server gracefully and waits until it has shut down.
    pub async fn stop(mut self) -> TempDir {
        self.shutdown_and_wait().await;
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"))
    }

    async fn shutdown_and_wait(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let result = tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("server shut down in time")
                .expect("server task");
            result.expect("server exited cleanly");
        }
    }

    /// Graceful stop, then a new server on the same DATA_DIR and configuration.
    pub async fn restart(self) -> TestServer {
        self.restart_after(|| {}).await
    }

    /// Graceful stop, `between` (while no server runs), then a new server on the same
    /// DATA_DIR and configuration.
    pub async fn restart_after(self, between: impl FnOnce()) -> TestServer {
        let overrides = self.overrides.clone();
        let clock = self.clock.clone();
        let wacore = self.wacore.clone();
        let outbox_fault = self.outbox_fault.clone();
        let dir = self.stop().await;
        between();
        Self::boot(dir, overrides, clock, wacore, outbox_fault).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn request(&self, method: Method, path: &str, auth: &Auth) -> reqwest::RequestBuilder {
        auth.apply(self.client.request(method, self.url(path)))
    }

    /// Sends a JSON request and returns the status and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self.request(method, path, auth);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request");
        read(resp).await
    }

    pub async fn get(&self, path: &str, auth: &Auth) -> (u16, Value) {
        self.call(Method::GET, path, auth, None).await
    }

    pub async fn post(&self, path: &str, auth: &Auth, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, auth, Some(body)).await
    }

    pub async fn put(&self, path: &str, auth: &Auth, body: Value) -> (u16, Value) {
        self.call(Method::PUT, path, auth, Some(body)).await
    }

    pub async fn delete(&self, path: &str, auth: &Auth) -> (u16, Value) {
        self.call(Method::DELETE, path, auth, None).await
    }

    /// Creates a user through the API and returns (id, api key, token).
    pub async fn new_user(&self, email: &str, role: &str) -> (String, String, String) {
        let (status, body) = self
            .post(
                "/api/users",
                &self.admin(),
                json!({"email": email, "password": "password1", "firstName": "Test", "lastName": "User", "role": role}),
            )
            .await;
        assert_eq!(status, 201, "create user: {body}");
        let id = body["id"].as_str().expect("id").to_owned();
        let key = body["apiKey"].as_str().expect("apiKey").to_owned();
        let (status, login) = self
            .post(
                "/api/auth/login",
                &Auth::None,
                json!({"email": email, "password": "password1"}),
            )
            .await;
        assert_eq!(status, 200, "login: {login}");
        (id, key, login["token"].as_str().expect("token").to_owned())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// One JSON request to the server at `base`.
pub async fn call_at(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    auth: &Auth,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = client.request(method, format!("{base}{path}"));
    rb = auth.apply(rb);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.expect("request");
    read(resp).await
}

/// The server binary as a child process, for tests that kill it (SIGKILL) mid-flight or
/// read what it logs.
pub struct ProcessServer {
    child: tokio::process::Child,
    pub base: String,
    pub client: reqwest::Client,
    /// Every line the server wrote, when started by [`ProcessServer::spawn_logged`].
    logs: Option<Arc<Mutex<Vec<String>>>>,
}

impl ProcessServer {
    /// Starts `wagate` on an ephemeral port with DATA_DIR `data_dir` and the test
    /// defaults plus `env`, and waits until it listens.
    pub async fn spawn(data_dir: &std::path::Path, env: &[(&str, &str)]) -> ProcessServer {
        Self::start(data_dir, env, false).await
    }

    /// [`ProcessServer::spawn`] logging at debug level, keeping every line it writes
    /// for [`ProcessServer::log_text`].
    pub async fn spawn_logged(data_dir: &std::path::Path, env: &[(&str, &str)]) -> ProcessServer {
        Self::start(data_dir, env, true).await
    }

    async fn start(
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
        keep_logs: bool,
    ) -> ProcessServer {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"));
        // The data directory is its working directory too: no `.env` of the checkout
        // is read.
        cmd.env_clear()
            .current_dir(data_dir)
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("DATA_DIR", data_dir)
            .env("JWT_SECRET", JWT_SECRET)
            .env("WA_ENGINE", "sandbox")
            .env("ALLOW_PRIVATE_NETWORK_URLS", "true")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", if keep_logs { "debug" } else { "info" })
            .stdout(std::process::Stdio::piped())
            .stderr(if keep_logs {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::inherit()
            })
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the server binary");
        let logs = keep_logs.then(|| Arc::new(Mutex::new(Vec::new())));
        if let (Some(logs), Some(stderr)) = (&logs, child.stderr.take()) {
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    logs.lock().expect("logs").push(line);
                }
            });
        }
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = oneshot::channel();
        {
            let logs = logs.clone();
            // Reads the address it listens on, then keeps draining its output so it never
            // blocks on a full pipe.
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                let mut tx = Some(tx);
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(v) = serde_json::from_str::<Value>(&line)
                        && v["message"] == "listening"
                        && let (Some(tx), Some(addr)) = (tx.take(), v["address"].as_str())
                    {
                        let _ = tx.send(addr.to_owned());
                    }
                    if let Some(logs) = &logs {
                        logs.lock().expect("logs").push(line);
                    }
                }
            });
        }
        let addr = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("the server listens in time")
            .expect("the server exited before listening");
        ProcessServer {
            child,
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            logs,
        }
    }

    /// What the server has written so far (empty unless started by
    /// [`ProcessServer::spawn_logged`]).
    pub fn log_text(&self) -> String {
        self.logs
            .as_ref()
            .map(|logs| logs.lock().expect("logs").join("\n"))
            .unwrap_or_default()
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the server process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the server runs");
        let sent = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// SIGTERM: the server shuts down cleanly; returns once it has exited.
    pub async fn terminate(mut self) {
        if let Some(pid) = self.child.id() {
            let sent = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(sent.success(), "kill -TERM {pid}");
        }
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the server exits after SIGTERM in time")
            .expect("wait");
    }

    /// SIGKILL: no shutdown code runs.
    pub async fn kill_hard(mut self) {
        self.child.start_kill().expect("kill");
        self.child.wait().await.expect("wait");
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<Value>,
    ) -> (u16, Value) {
        call_at(&self.client, &self.base, method, path, auth, body).await
    }

    pub async fn admin(&self) -> Auth {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/auth/login",
                &Auth::None,
                Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
            )
            .await;
        assert_eq!(status, 200, "login: {body}");
        Auth::Bearer(body["token"].as_str().expect("token").to_owned())
    }
}

/// Reads SSE events (id, parsed data) from a response until `n` have arrived.
pub async fn read_sse(resp: reqwest::Response, n: usize) -> Vec<(String, Value)> {
    let mut events = SseEvents::new(resp);
    let mut out = Vec::new();
    while out.len() < n {
        out.push(events.next().await);
    }
    out
}

/// The SSE events of a response, one at a time.
pub struct SseEvents {
    stream: futures::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buf: String,
}

impl SseEvents {
    pub fn new(resp: reqwest::Response) -> SseEvents {
        SseEvents {
            stream: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next event with data: (id, parsed data). Fails the test when none comes
    /// within 20 s.
    pub async fn next(&mut self) -> (String, Value) {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let mut id = String::new();
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if !data.is_empty() {
                    return (id, serde_json::from_str(&data).expect("event JSON"));
                }
            }
            let chunk = tokio::time::timeout(
                std::time::Duration::from_secs(20),
                futures::StreamExt::next(&mut self.stream),
            )
            .await
            .expect("SSE event in time")
            .expect("stream open")
            .expect("chunk");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// Status and JSON body of a response; every error body must be JSON `{error, code}`.
pub async fn read(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    if status >= 400 {
        assert!(
            body["error"].is_string() && body["code"].is_string(),
            "error {status} without a JSON {{error, code}} body: {body}"
        );
    }
    (status, body)
}

/// Polls `check` every 20 ms until it returns Some, failing the test after `secs` seconds
/// with `what` in the message. For conditions reached asynchronously (an actor restarting,
/// a status changing): the loop waits for the condition itself, never a fixed time.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestServer {
    /// Creates a sandbox instance and returns its id.
    pub async fn new_instance(&self, auth: &Auth, name: &str) -> String {
        let (status, body) = self
            .post(
                "/api/instances",
                auth,
                json!({"name": name, "engine": "sandbox"}),
            )
            .await;
        assert_eq!(status, 201, "create instance: {body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// The instance's current status string.
    pub async fn status_of(&self, auth: &Auth, id: &str) -> String {
        let (code, body) = self.get(&format!("/api/instances/{id}/status"), auth).await;
        assert_eq!(code, 200, "status: {body}");
        body["status"].as_str().expect("status").to_owned()
    }

    /// Waits until the instance reports `status`.
    pub async fn wait_status(&self, auth: &Auth, id: &str, status: &str) {
        eventually(20, &format!("instance {id} to be {status}"), || async {
            (self.status_of(auth, id).await == status).then_some(())
        })
        .await
    }

    /// Waits for a QR code and returns it.
    pub async fn wait_qr(&self, auth: &Auth, id: &str) -> String {
        eventually(20, "a QR code", || async {
            let (code, body) = self.get(&format!("/api/instances/{id}/qr"), auth).await;
            assert!(code == 200 || code == 202, "qr: {code} {body}");
            body["qrCode"].as_str().map(str::to_owned)
        })
        .await
    }

    /// Creates a sandbox instance and pairs it as `phone`.
    pub async fn connected_instance(&self, auth: &Auth, name: &str, phone: &str) -> String {
        let id = self.new_instance(auth, name).await;
        self.wait_qr(auth, &id).await;
        let (code, body) = self
            .post(
                &format!("/api/sandbox/instances/{id}/scan"),
                auth,
                json!({"phone": phone}),
            )
            .await;
        assert_eq!(code, 200, "scan: {body}");
        self.wait_status(auth, &id, "connected").await;
        id
    }

    /// The instance's webhook backlog (`/webhook/status`). Panics, saying `what` and the
    /// dead letters with their last errors, when a delivery was given up.
    pub async fn backlog_nothing_given_up(&self, auth: &Auth, id: &str, what: &str) -> Value {
        let (status, backlog) = self
            .get(&format!("/api/instances/{id}/webhook/status"), auth)
            .await;
        assert_eq!(status, 200, "{backlog}");
        if backlog["failed"] != 0 {
            let (_, dead) = self
                .get(
                    &format!("/api/instances/{id}/webhook/deliveries?status=failed"),
                    auth,
                )
                .await;
            panic!("{what}: nothing is given up: {backlog}; given up: {dead}");
        }
        backlog
    }

    /// The actions of the instance's activity log, oldest first.
    pub async fn actions(&self, auth: &Auth, id: &str) -> Vec<String> {
        let (code, body) = self
            .get(&format!("/api/instances/{id}/activity?limit=1000"), auth)
            .await;
        assert_eq!(code, 200, "activity: {body}");
        let mut actions: Vec<String> = body["logs"]
            .as_array()
            .expect("logs")
            .iter()
            .map(|l| l["action"].as_str().unwrap_or_default().to_owned())
            .collect();
        actions.reverse();
        actions
    }
}

/// The environment variable naming the SecantusDB server binary (`./scripts/test` sets
/// it), for tests that stop and restart a MongoDB server of their own.
pub const SECANTUSD_VAR: &str = "WAGATE_TEST_SECANTUSD";

/// A MongoDB-compatible server (SecantusDB) of one test, with its data in a directory
/// that outlives the process, so it can be killed and started again with its data.
pub struct Mongo {
    child: tokio::process::Child,
    port: u16,
}

impl Mongo {
    /// Starts the server on `port` with its data in `storage` and waits until it answers.
    pub async fn start(storage: &std::path::Path, port: u16) -> Mongo {
        let binary = std::env::var(SECANTUSD_VAR).unwrap_or_else(|_| {
            panic!("{SECANTUSD_VAR} is not set: run ./scripts/test, which installs SecantusDB and sets it")
        });
        let child = tokio::process::Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--storage-path")
            .arg(storage)
            // Committed data survives the SIGKILL below.
            .args(["--sync-on-commit", "--log-level", "WARNING"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let mut mongo = Mongo { child, port };
        let url = format!("mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=500");
        let client = mongodb::Client::with_uri_str(&url).await.expect("client");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ping = client
                .database("admin")
                .run_command(mongodb::bson::doc! {"ping": 1})
                .await;
            if ping.is_ok() {
                return mongo;
            }
            if let Ok(Some(status)) = mongo.child.try_wait() {
                panic!("SecantusDB exited at start ({status})");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "SecantusDB did not answer within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, database: &str) -> String {
        format!("mongodb://127.0.0.1:{}/{database}", self.port)
    }

    /// SIGKILL: the database vanishes mid-conversation.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("kill");
        self.child.wait().await.expect("wait");
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
