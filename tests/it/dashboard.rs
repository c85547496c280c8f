//! The web dashboard: how its files are served, and the page itself driven end to end in
//! headless Chromium over the Chrome DevTools Protocol.
//!
//! The browser is `$WAGATE_TEST_CHROMIUM` (default: `chromium` on PATH; `./scripts/test`
//! installs Debian's package). Without it the browser test fails and says so: it never
//! skips. Screenshots of each step are kept under `<target dir>/test-artifacts/dashboard/`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{ADMIN_EMAIL, ADMIN_PASSWORD, Auth, TestServer, read};
use crate::receiver::Receiver;

// ---------------------------------------------------------------------------------------
// Static serving

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{} has no {name} header", resp.url()))
}

#[tokio::test]
async fn the_root_and_the_trailing_slash_redirect_to_the_dashboard() {
    let srv = TestServer::start().await;
    let client = no_redirects();
    for path in ["/", "/dashboard/"] {
        let resp = client.get(srv.url(path)).send().await.expect("request");
        assert_eq!(resp.status(), 307, "{path}");
        assert_eq!(header(&resp, "location"), "/dashboard", "{path}");
    }
}

#[tokio::test]
async fn the_page_is_html_with_a_strict_content_security_policy() {
    let srv = TestServer::start().await;
    let resp = no_redirects()
        .get(srv.url("/dashboard"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&resp, "cache-control"), "no-cache");
    let csp = header(&resp, "content-security-policy").to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "CSP {csp:?} lacks {directive}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert_eq!(header(&resp, "x-frame-options"), "DENY");
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    assert_eq!(header(&resp, "referrer-policy"), "no-referrer");
    let html = resp.text().await.expect("body");
    assert!(html.contains(r#"<script src="/dashboard/app.js" defer></script>"#));
    assert!(html.contains(r#"href="/dashboard/style.css""#));

    // HEAD works too; other methods are refused in the API's error shape.
    let head = no_redirects()
        .head(srv.url("/dashboard"))
        .send()
        .await
        .expect("request");
    assert_eq!(head.status(), 200);
    let (status, body) = srv
        .call(Method::POST, "/dashboard", &Auth::None, None)
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (405, json!("method_not_allowed"))
    );
}

#[tokio::test]
async fn scripts_styles_and_the_icon_are_served_with_their_types() {
    let srv = TestServer::start().await;
    for (path, content_type, needle) in [
        (
            "/dashboard/app.js",
            "text/javascript; charset=utf-8",
            "'use strict';",
        ),
        ("/dashboard/style.css", "text/css; charset=utf-8", ":root {"),
        ("/dashboard/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let resp = srv
            .request(Method::GET, path, &Auth::None)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(header(&resp, "content-type"), content_type, "{path}");
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&resp, "x-frame-options"), "DENY", "{path}");
        assert_eq!(header(&resp, "cache-control"), "no-cache", "{path}");
        let body = resp.text().await.expect("body");
        assert!(body.contains(needle), "{path}");
    }
}

#[tokio::test]
async fn unknown_dashboard_files_are_404_and_nothing_outside_is_reachable() {
    let srv = TestServer::start().await;
    for path in [
        "/dashboard/nope.js",
        "/dashboard/index.html.bak",
        "/dashboard/%2e%2e%2fCargo.toml",
        "/dashboard/..%2f..%2fCargo.toml",
        "/dashboard/app.js/x",
        "/dashboard/APP.JS",
    ] {
        let resp = srv
            .request(Method::GET, path, &Auth::None)
            .send()
            .await
            .expect("request");
        assert_eq!(
            resp.headers()
                .get("x-content-type-options")
                .map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{path}"
        );
        let (status, body) = read(resp).await;
        assert_eq!(
            (status, body["code"].clone()),
            (404, json!("not_found")),
            "{path}: {body}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Headless Chromium over the DevTools protocol

/// The environment variable naming the Chromium binary; `./scripts/test` sets it.
const CHROMIUM_VAR: &str = "WAGATE_TEST_CHROMIUM";
/// How long the browser may take to open its DevTools endpoint.
const BROWSER_START: Duration = Duration::from_secs(60);
/// How long one DevTools command may take.
const CDP_CALL: Duration = Duration::from_secs(30);
/// How long the page may take to reach each awaited state.
const UI_DEADLINE: Duration = Duration::from_secs(20);
const UI_POLL: Duration = Duration::from_millis(50);
/// Lines of the browser's stderr kept for failure messages.
const STDERR_LINES: usize = 200;

/// Where the screenshots go: `<target dir>/test-artifacts/dashboard/`.
fn artifacts_dir() -> PathBuf {
    artifacts_named("dashboard")
}

/// Where the screenshots of the browser test `name` go: `<target dir>/test-artifacts/<name>/`.
pub(crate) fn artifacts_named(name: &str) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .unwrap_or(tmp)
        .join("test-artifacts")
        .join(name)
}

/// A headless Chromium with its own temporary profile. Dropping it kills the browser
/// and every process it started (its process group), also when the test fails.
pub(crate) struct Browser {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    ws_url: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub(crate) async fn launch() -> Browser {
        let exe = std::env::var(CHROMIUM_VAR).unwrap_or_else(|_| "chromium".to_owned());
        let profile = tempfile::tempdir().expect("temp dir");
        let mut cmd = std::process::Command::new(&exe);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-port=0",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start Chromium ({CHROMIUM_VAR}={exe:?}): {e}. The dashboard test needs \
                 headless Chromium: run ./scripts/test, which installs it (Debian package \
                 `chromium`), or set {CHROMIUM_VAR} to a Chromium binary"
            )
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("stderr");
        let (tx, rx) = oneshot::channel::<String>();
        let lines = stderr.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(url.trim().to_owned());
                }
                let mut kept = lines.lock().expect("lock");
                if kept.len() == STDERR_LINES {
                    kept.remove(0);
                }
                kept.push(line);
            }
        });
        let mut browser = Browser {
            child,
            stderr,
            ws_url: String::new(),
            _profile: profile,
        };
        browser.ws_url = match tokio::time::timeout(BROWSER_START, rx).await {
            Ok(Ok(url)) => url,
            Ok(Err(_)) => panic!(
                "Chromium exited before opening its DevTools endpoint; its stderr:\n{}",
                browser.stderr_tail()
            ),
            Err(_) => panic!(
                "Chromium did not open its DevTools endpoint within {BROWSER_START:?}; its stderr:\n{}",
                browser.stderr_tail()
            ),
        };
        browser
    }

    fn stderr_tail(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    /// A new tab, attached over one DevTools connection.
    pub(crate) async fn new_page(&self, artifacts: PathBuf) -> Page {
        let cdp = Arc::new(Cdp::connect(&self.ws_url).await);
        let target = cdp
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = cdp
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        let session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        let page = Page {
            cdp,
            session,
            artifacts,
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({})).await;
        }
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium's renderer and helper processes share its process group.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Replies = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// One DevTools WebSocket connection: commands with ids, answers matched by id, and
/// every event kept for later checks.
struct Cdp {
    out: mpsc::UnboundedSender<String>,
    replies: Replies,
    events: Arc<Mutex<Vec<Value>>>,
    next_id: AtomicU64,
}

impl Cdp {
    async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to Chromium's DevTools at {url}: {e}"));
        let (mut sink, mut stream) = ws.split();
        let (out, mut queue) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(text) = queue.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
        });
        let replies: Replies = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (r, e) = (replies.clone(), events.clone());
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                match v["id"].as_u64() {
                    Some(id) => {
                        if let Some(tx) = r.lock().expect("lock").remove(&id) {
                            let _ = tx.send(v);
                        }
                    }
                    None => e.lock().expect("lock").push(v),
                }
            }
            // The browser went away: waiting callers fail at once.
            r.lock().expect("lock").clear();
        });
        Cdp {
            out,
            replies,
            events,
            next_id: AtomicU64::new(1),
        }
    }

    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_call(session, method, params)
            .await
            .unwrap_or_else(|err| panic!("DevTools command {method} failed: {err}"))
    }

    /// A command whose failure the caller handles (the answer's `error`).
    async fn try_call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.replies.lock().expect("lock").insert(id, tx);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.out
            .send(msg.to_string())
            .expect("the DevTools connection is open");
        let answer = tokio::time::timeout(CDP_CALL, rx)
            .await
            .unwrap_or_else(|_| panic!("DevTools command {method} got no answer in {CDP_CALL:?}"))
            .unwrap_or_else(|_| panic!("the browser closed the connection during {method}"));
        match answer.get("error") {
            Some(err) => Err(err.clone()),
            None => Ok(answer["result"].clone()),
        }
    }
}

/// One tab of the browser.
pub(crate) struct Page {
    cdp: Arc<Cdp>,
    session: String,
    artifacts: PathBuf,
}

/// A CSS selector as a JavaScript string literal.
pub(crate) fn js(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

fn truthy(v: &Value) -> bool {
    !matches!(v, Value::Null | Value::Bool(false))
        && v.as_str() != Some("")
        && v.as_f64() != Some(0.0)
}

impl Page {
    pub(crate) async fn call(&self, method: &str, params: Value) -> Value {
        self.cdp.call(Some(&self.session), method, params).await
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its JSON value.
    pub(crate) async fn eval(&self, expr: &str) -> Value {
        self.try_eval(expr)
            .await
            .unwrap_or_else(|err| panic!("evaluating {expr} failed: {err}"))
    }

    /// [`Page::eval`] that reports an exception (or a page in the middle of loading) as
    /// an error.
    async fn try_eval(&self, expr: &str) -> Result<Value, Value> {
        let r = self
            .cdp
            .try_call(
                Some(&self.session),
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        match r.get("exceptionDetails") {
            Some(ex) => Err(ex["exception"]["description"].clone()),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    pub(crate) async fn goto(&self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url})).await;
        assert!(r.get("errorText").is_none(), "navigating to {url}: {r}");
    }

    /// Polls `expr` until it is truthy and returns its value (an exception counts as not
    /// yet: the page may still be loading); after [`UI_DEADLINE`] takes a screenshot and
    /// fails with what the page shows.
    pub(crate) async fn wait_for(&self, what: &str, expr: &str) -> Value {
        let deadline = tokio::time::Instant::now() + UI_DEADLINE;
        loop {
            let last = match self.try_eval(expr).await {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => v,
                Err(e) => e,
            };
            if tokio::time::Instant::now() >= deadline {
                let shot = self.screenshot("timeout").await;
                let text = self
                    .eval("document.body ? document.body.innerText.slice(0, 3000) : ''")
                    .await;
                panic!(
                    "timed out after {UI_DEADLINE:?} waiting for {what} ({expr}; last: {last}).\nScreenshot: {}\nLocation: {}\nPage text:\n{}\nBrowser errors: {:#?}",
                    shot.display(),
                    self.eval("location.href").await,
                    text.as_str().unwrap_or_default(),
                    self.errors()
                );
            }
            tokio::time::sleep(UI_POLL).await;
        }
    }

    /// Clicks the middle of the element like a user: real mouse events at its position,
    /// so an element that is hidden, covered or disabled is not clicked.
    pub(crate) async fn click(&self, selector: &str) {
        let point = self
            .wait_for(
                &format!("{selector} to be clickable"),
                &format!(
                    "(() => {{ const el = document.querySelector({s}); if (!el || el.disabled) return null; \
                     el.scrollIntoView({{block: 'center'}}); const r = el.getBoundingClientRect(); \
                     if (r.width === 0 || r.height === 0) return null; \
                     const x = r.x + r.width / 2, y = r.y + r.height / 2; \
                     const hit = document.elementFromPoint(x, y); \
                     return hit && (hit === el || el.contains(hit)) ? {{x, y}} : null; }})()",
                    s = js(selector)
                ),
            )
            .await;
        let (x, y) = (point["x"].clone(), point["y"].clone());
        for (kind, button) in [
            ("mouseMoved", "none"),
            ("mousePressed", "left"),
            ("mouseReleased", "left"),
        ] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": button, "clickCount": 1}),
            )
            .await;
        }
    }

    /// Replaces the field's content by typing `text` into it.
    pub(crate) async fn fill(&self, selector: &str, text: &str) {
        self.wait_for(
            &format!("{selector} to be editable"),
            &format!(
                "(() => {{ const el = document.querySelector({s}); if (!el || el.disabled) return false; \
                 el.focus(); el.select(); return document.activeElement === el; }})()",
                s = js(selector)
            ),
        )
        .await;
        self.call("Input.insertText", json!({"text": text})).await;
        let now = self
            .eval(&format!("document.querySelector({}).value", js(selector)))
            .await;
        assert_eq!(now, json!(text), "typing into {selector}");
    }

    pub(crate) async fn text_of(&self, selector: &str) -> String {
        self.eval(&format!(
            "(document.querySelector({}) || {{}}).textContent || ''",
            js(selector)
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    pub(crate) async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine as _;
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        std::fs::create_dir_all(&self.artifacts).expect("artifacts dir");
        let path = self.artifacts.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// What went wrong in the page so far: uncaught exceptions, console errors, and
    /// error log entries (Content-Security-Policy violations among them).
    pub(crate) fn errors(&self) -> Vec<String> {
        let events = self.cdp.events.lock().expect("lock");
        events
            .iter()
            .filter_map(|e| {
                let p = &e["params"];
                match e["method"].as_str()? {
                    "Runtime.exceptionThrown" => {
                        Some(format!("exception: {}", p["exceptionDetails"]))
                    }
                    "Runtime.consoleAPICalled" if p["type"] == "error" => {
                        Some(format!("console.error: {}", p["args"]))
                    }
                    "Log.entryAdded" if p["entry"]["level"] == "error" => Some(format!(
                        "log ({}): {} {}",
                        p["entry"]["source"].as_str().unwrap_or_default(),
                        p["entry"]["text"].as_str().unwrap_or_default(),
                        p["entry"]["url"].as_str().unwrap_or_default()
                    )),
                    _ => None,
                }
            })
            .collect()
    }
}

/// The first message of the browser test's chat (+44 7700 900123) that `matches`, as
/// the history API answers it.
async fn stored(
    srv: &TestServer,
    admin: &Auth,
    id: &str,
    matches: impl Fn(&Value) -> bool,
) -> Value {
    let (status, history) = srv
        .get(
            &format!("/api/instances/{id}/chats/447700900123/messages"),
            admin,
        )
        .await;
    assert_eq!(status, 200, "{history}");
    history["messages"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| matches(m)))
        .unwrap_or_else(|| panic!("no such message in {history}"))
        .clone()
}

/// The whole path of a user through the dashboard, in a real browser: sign in, create a
/// sandbox instance with a webhook, see its QR code, scan it with the sandbox phone, watch
/// it connect, send a message and see it (and a reply arriving live) in the history, then
/// the usage chart, the webhook deliveries and signing out.
#[tokio::test]
async fn a_user_pairs_an_instance_and_chats_in_the_browser() {
    let srv = TestServer::start().await;
    let hook = Receiver::start().await;
    let artifacts = artifacts_dir();
    let _ = std::fs::remove_dir_all(&artifacts);
    let browser = Browser::launch().await;
    let page = browser.new_page(artifacts.clone()).await;
    println!("dashboard screenshots: {}", artifacts.display());

    // `/` leads to the sign-in form.
    page.goto(&srv.url("/")).await;
    page.wait_for(
        "the sign-in form",
        "location.pathname === '/dashboard' && !document.querySelector('#login-view').hidden",
    )
    .await;
    page.screenshot("01-sign-in").await;

    // A wrong password is refused on the page.
    page.fill("#login-email", ADMIN_EMAIL).await;
    page.fill("#login-password", "not-the-password").await;
    page.click("#login-submit").await;
    page.wait_for(
        "the sign-in error",
        "!document.querySelector('#login-error').hidden",
    )
    .await;
    assert_eq!(
        page.text_of("#login-error").await,
        "Wrong email or password."
    );

    page.fill("#login-password", ADMIN_PASSWORD).await;
    page.click("#login-submit").await;
    page.wait_for(
        "the signed-in dashboard",
        "!document.querySelector('#app-view').hidden && !!document.querySelector('#new-instance-form')",
    )
    .await;
    let token = page.eval("sessionStorage.getItem('wagate.token')").await;
    let token = token.as_str().expect("the JWT is kept in sessionStorage");
    let (status, me) = srv.get("/api/auth/me", &Auth::Bearer(token.into())).await;
    assert_eq!((status, me["email"].clone()), (200, json!(ADMIN_EMAIL)));
    assert!(page.text_of("#who").await.contains(ADMIN_EMAIL));

    // Create a sandbox instance whose webhooks go to a local receiver.
    assert_eq!(
        page.eval("document.querySelector('#new-instance-engine').value")
            .await,
        json!("sandbox"),
        "the sandbox engine is preselected"
    );
    page.fill("#new-instance-name", "Browser line").await;
    page.fill("#new-instance-webhook", &hook.url()).await;
    page.click("#create-instance").await;
    let hash = page
        .wait_for(
            "the new instance's page",
            "location.hash.startsWith('#/instances/') && location.hash",
        )
        .await;
    let id = hash
        .as_str()
        .and_then(|h| h.strip_prefix("#/instances/"))
        .and_then(|h| h.split('/').next())
        .expect("the instance id in the address")
        .to_owned();
    let admin = srv.admin();
    let (status, created) = srv.get(&format!("/api/instances/{id}"), &admin).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["name"], "Browser line");
    assert_eq!(created["engine"], "sandbox");
    assert_eq!(created["webhookUrl"], json!(hook.url()));

    // Its QR code is shown as an image, and it lists in the sidebar.
    page.wait_for(
        "the QR code image",
        "(() => { const img = document.querySelector('#qr-image'); \
         return !!img && img.src.startsWith('data:image/png;base64,') && img.complete && img.naturalWidth > 0; })()",
    )
    .await;
    page.wait_for(
        "the instance in the sidebar",
        &format!(
            "!!document.querySelector('#instance-list li[data-id={}]')",
            js(&id)
        ),
    )
    .await;
    assert_eq!(page.text_of("#instance-name").await, "Browser line");
    page.screenshot("02-qr-code").await;

    // Scan it with the sandbox phone and watch the status turn connected.
    page.fill("#sandbox-phone", "+1 555 123 4567").await;
    page.click("#sandbox-scan").await;
    page.wait_for(
        "the status to turn connected",
        "document.querySelector('#instance-status').dataset.status === 'connected' && \
         !!document.querySelector('#connected-as')",
    )
    .await;
    assert!(
        page.text_of("#connected-as").await.contains("+15551234567"),
        "{}",
        page.text_of("#connected-as").await
    );
    page.wait_for(
        "the sidebar to show it connected",
        &format!(
            "!!document.querySelector('#instance-list li[data-id={}] .status-connected')",
            js(&id)
        ),
    )
    .await;
    page.wait_for(
        "the connected event in the live log",
        "[...document.querySelectorAll('#event-log .event-type')].some(e => e.textContent === 'connected')",
    )
    .await;
    assert_eq!(srv.status_of(&admin, &id).await, "connected");
    page.screenshot("03-connected").await;

    // Send a message and see it in the history.
    page.click("#tabs a[data-tab=messages]").await;
    page.fill("#send-phone", "+44 7700 900123").await;
    page.fill("#send-text", "Hello from the browser").await;
    page.click("#send-submit").await;
    page.wait_for(
        "the sent message in the history",
        "[...document.querySelectorAll('#history .bubble.out .bubble-text')].some(e => e.textContent === 'Hello from the browser')",
    )
    .await;
    page.wait_for(
        "the chat in the chat list",
        "!!document.querySelector('#chat-list [data-chat=\"447700900123\"]')",
    )
    .await;
    let (status, history) = srv
        .get(
            &format!("/api/instances/{id}/chats/447700900123/messages"),
            &admin,
        )
        .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["messages"][0]["content"], "Hello from the browser");

    // A reply from the simulated contact arrives through the live event stream (only the
    // stream's message_received event redraws the history).
    page.wait_for(
        "the event stream to be open",
        "document.querySelector('#live').classList.contains('on')",
    )
    .await;
    page.click("#simulate-reply").await;
    page.wait_for(
        "the reply in the history",
        "[...document.querySelectorAll('#history .bubble.in .bubble-text')].some(e => e.textContent.startsWith('Thanks, got it!'))",
    )
    .await;
    page.screenshot("04-messages").await;

    // The conversation view: reply to the contact's message from its bubble; the reply
    // shows the message it quotes.
    let message_id = |message: Value| message["messageId"].as_str().expect("an id").to_owned();
    let starts = |text: &'static str| {
        move |m: &Value| m["content"].as_str().is_some_and(|c| c.starts_with(text))
    };
    let theirs = message_id(stored(&srv, &admin, &id, starts("Thanks, got it!")).await);
    let ours = message_id(stored(&srv, &admin, &id, starts("Hello from the browser")).await);
    let bubble = |message_id: &str| format!("#history li[data-message-id={}]", js(message_id));
    page.click(&format!("{} .bubble-reply", bubble(&theirs)))
        .await;
    page.wait_for(
        "the reply banner",
        "!document.querySelector('#reply-banner').hidden && \
         document.querySelector('#reply-quote').textContent.startsWith('Thanks, got it!')",
    )
    .await;
    page.fill("#send-text", "Glad it arrived").await;
    page.click("#send-submit").await;
    page.wait_for(
        "the reply with its quote in the history",
        "[...document.querySelectorAll('#history .bubble.out')].some(b => \
         b.querySelector('.bubble-text').textContent === 'Glad it arrived' && \
         (b.querySelector('.bubble-quote') || {}).textContent?.startsWith('Thanks, got it!'))",
    )
    .await;
    assert!(
        page.eval("document.querySelector('#reply-banner').hidden")
            .await
            == json!(true),
        "the banner closes once the reply is sent"
    );
    let reply = stored(&srv, &admin, &id, |m| m["content"] == "Glad it arrived").await;
    assert_eq!(reply["quotedMessageId"], json!(theirs), "{reply}");
    let reply_id = message_id(reply);

    // React to the contact's message with the emoji button; the reaction shows on it.
    page.click(&format!("{} .bubble-react", bubble(&theirs)))
        .await;
    page.click(&format!(
        "{} .reaction-picker button[data-emoji={}]",
        bubble(&theirs),
        js("👍")
    ))
    .await;
    page.wait_for(
        "the reaction on the message",
        &format!(
            "!!document.querySelector({}) && !document.querySelector({})",
            js(&format!("{} .reaction[data-emoji=\"👍\"]", bubble(&theirs))),
            js(&format!("{} .reaction-picker", bubble(&theirs))),
        ),
    )
    .await;
    let reacted = stored(&srv, &admin, &id, |m| m["messageId"] == json!(theirs)).await;
    assert_eq!(reacted["reactions"][0]["emoji"], "👍", "{reacted}");
    assert_eq!(reacted["reactions"][0]["fromMe"], true, "{reacted}");

    // An edit and a deletion (here through the API) show live in the open history.
    let (status, body) = srv
        .put(
            &format!("/api/whatsapp/{id}/messages/{ours}"),
            &admin,
            json!({"message": "Hello again, edited"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    page.wait_for(
        "the edited text",
        &format!(
            "(() => {{ const b = document.querySelector({}); return !!b && \
             b.querySelector('.bubble-text').textContent === 'Hello again, edited' && \
             b.querySelector('.bubble-meta').textContent.includes('edited'); }})()",
            js(&bubble(&ours))
        ),
    )
    .await;
    let (status, body) = srv
        .delete(
            &format!("/api/whatsapp/{id}/messages/{reply_id}?forEveryone=true"),
            &admin,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    page.wait_for(
        "the deleted reply",
        &format!(
            "(() => {{ const b = document.querySelector({}); return !!b && b.classList.contains('revoked') && \
             b.querySelector('.bubble-text').textContent === 'This message was deleted' && \
             !b.querySelector('.bubble-reply'); }})()",
            js(&bubble(&reply_id))
        ),
    )
    .await;
    page.screenshot("04-conversation").await;

    // Usage: the counters and the daily chart (the send, the reply, the reaction, the
    // edit and the deletion each count as a sent message).
    page.click("#tabs a[data-tab=usage]").await;
    page.wait_for(
        "the usage of the instance",
        "(() => { const v = k => (document.querySelector(`#instance-usage .tile[data-key=${k}] .tile-value`) || {}).textContent; \
         return v('messagesSent') === '5' && v('messagesReceived') === '1' && \
         [...document.querySelectorAll('#instance-usage svg.chart rect.bar.sent')].some(r => r.textContent.endsWith('Sent: 5')) && \
         document.querySelectorAll('#instance-usage svg.chart rect.bar').length === 2 * 7; })()",
    )
    .await;
    page.screenshot("05-usage").await;

    // Webhooks: deliveries to the receiver, and a test delivery from the button.
    page.click("#tabs a[data-tab=webhooks]").await;
    page.wait_for(
        "the connected delivery",
        "[...document.querySelectorAll('#deliveries tr')].some(r => r.cells[1]?.textContent === 'connected' && r.cells[3]?.textContent === 'delivered')",
    )
    .await;
    page.click("#webhook-test").await;
    page.wait_for(
        "the test delivery",
        "[...document.querySelectorAll('#deliveries tr')].some(r => r.cells[1]?.textContent === 'webhook_test' && r.cells[3]?.textContent === 'delivered')",
    )
    .await;
    assert_eq!(hook.of("webhook_test").len(), 1);
    page.wait_for(
        "the empty backlog",
        "(() => { const v = k => document.querySelector(`#webhook-backlog .tile[data-key=${k}] .tile-value`)?.textContent; \
         return v('pending') === '0' && v('failed') === '0' && v('state') === 'running' && document.querySelector('#webhook-replay').disabled; })()",
    )
    .await;

    // A delivery that fails with no retry left shows as failed; the replay button sends
    // it again.
    let (status, body) = srv
        .put(
            &format!("/api/instances/{id}"),
            &admin,
            json!({"maxRetries": 0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    hook.wait_for("the settings change", 20, |r| {
        r.iter()
            .filter(|r| r.json()["event"] == "webhook_updated")
            .count()
            >= 1
    })
    .await;
    hook.fail_first(1);
    page.click("#webhook-test").await;
    page.wait_for(
        "the failed delivery in the backlog",
        "(() => { const failed = document.querySelector('#webhook-backlog .tile[data-key=failed] .tile-value')?.textContent; \
         return failed === '1' && !document.querySelector('#webhook-replay').disabled; })()",
    )
    .await;
    page.screenshot("06-webhook-failed").await;
    page.click("#webhook-replay").await;
    page.wait_for(
        "the replayed delivery",
        "(() => { const failed = document.querySelector('#webhook-backlog .tile[data-key=failed] .tile-value')?.textContent; \
         return failed === '0' && [...document.querySelectorAll('#deliveries tr')].some(r => r.cells[1]?.textContent === 'webhook_test' && r.cells[2]?.textContent === '2' && r.cells[3]?.textContent === 'delivered'); })()",
    )
    .await;
    let tests = hook.of("webhook_test");
    assert_eq!(tests.len(), 3, "delivered, failed, replayed");
    assert_eq!(
        tests[1].header("x-webhook-id"),
        tests[2].header("x-webhook-id")
    );
    page.screenshot("06-webhooks").await;

    // The overview: the usage of all instances.
    page.click(".topbar .brand").await;
    page.wait_for(
        "the overview's usage chart",
        "document.querySelectorAll('#user-usage svg.chart rect.bar').length >= 2",
    )
    .await;
    page.screenshot("07-overview").await;

    // Nothing failed in the page: no exception, no CSP violation, no failed request but
    // the wrong password's 401.
    let errors: Vec<String> = page
        .errors()
        .into_iter()
        .filter(|e| !(e.contains("status of 401") && e.ends_with("/api/auth/login")))
        .collect();
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");

    // Signing out forgets the token.
    page.click("#logout").await;
    page.wait_for(
        "the sign-in form again",
        "!document.querySelector('#login-view').hidden && sessionStorage.getItem('wagate.token') === null",
    )
    .await;
    drop(page);
    drop(browser);
}
