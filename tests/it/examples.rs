//! The API documents' client examples (`examples/python/spec_client.py`,
//! `examples/node/spec_client.js`) run as child processes against a test server: they
//! create an instance, wait for the sandbox's automatic "scan", send a text and an image,
//! and watch `/events` for a message. Then the API must show what they did.
//!
//! `./scripts/test` installs their dependencies and names them: `WAGATE_TEST_PYTHON` (a
//! Python with `requests` and `qrcode`) and `WAGATE_TEST_NODE_MODULES` (the examples'
//! `node_modules`, from `npm ci`). Without them these tests fail, never skip.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::common::{Auth, TestServer};

const PYTHON_VAR: &str = "WAGATE_TEST_PYTHON";
const NODE_MODULES_VAR: &str = "WAGATE_TEST_NODE_MODULES";
/// The longest an example may run; it is killed after that.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// Where the examples send (as the documents do).
const RECIPIENT: &str = "79001234567";
/// The simulated contact that writes to the example's instance while it watches `/events`.
const WRITER: &str = "79005550177";
const WRITER_TEXT: &str = "Ответ на пример";

#[tokio::test]
async fn python_example_runs_against_the_server() {
    let python = std::env::var(PYTHON_VAR).unwrap_or_else(|_| {
        panic!("{PYTHON_VAR} is not set: run ./scripts/test, which installs the Python example's dependencies (requests, qrcode)")
    });
    let mut cmd = Command::new(&python);
    cmd.arg(repo_file("examples/python/spec_client.py"))
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONUTF8", "1");
    run_example(cmd, "Python", "Тестовое сообщение из Python").await;
}

#[tokio::test]
async fn node_example_runs_against_the_server() {
    let modules = std::env::var(NODE_MODULES_VAR).unwrap_or_else(|_| {
        panic!("{NODE_MODULES_VAR} is not set: run ./scripts/test, which installs the Node.js example's dependencies (npm ci in examples/node)")
    });
    for package in ["axios", "qrcode-terminal"] {
        assert!(
            Path::new(&modules).join(package).is_dir(),
            "{NODE_MODULES_VAR}={modules} has no {package}: run `npm ci` in examples/node (./scripts/test does)"
        );
    }
    let mut cmd = Command::new("node");
    cmd.arg(repo_file("examples/node/spec_client.js"))
        .env("NODE_PATH", &modules);
    run_example(cmd, "Node.js", "Тестовое сообщение из Node.js").await;
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A local server with the PNG the examples send (`/example.png`).
async fn image_server(png: Vec<u8>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/example.png",
        axum::routing::get(move || {
            let png = png.clone();
            async move { ([("content-type", "image/png")], png) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The value after `prefix` on the first line starting with it.
fn after<'a>(lines: &'a [String], prefix: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
}

/// Runs one example against a fresh server, writes to its instance once it has sent its
/// text, and checks the exit code, its output and what the API then shows.
async fn run_example(mut cmd: Command, language: &str, text: &str) {
    let srv = TestServer::start_with(&[("sandbox_autopair_ms", "300")]).await;
    let png = wagate::qr::png("example image").expect("png");
    let images = image_server(png.clone()).await;

    cmd.env("WAGATE_API_KEY", &srv.admin_key)
        .env("WAGATE_BASE_URL", srv.url("/api"))
        .env(
            "WAGATE_EXAMPLE_IMAGE_URL",
            format!("http://{images}/example.png"),
        )
        .env("WAGATE_EXAMPLE_SCAN_TIMEOUT_S", "60")
        // Enough polls, a second apart, to see the message written below; the example
        // stops at the first one.
        .env("WAGATE_EXAMPLE_MONITOR_PASSES", "60")
        .env_remove("WAGATE_EXAMPLE_WEBHOOK_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {language} example ({cmd:?}): {e}"));
    let mut stderr = child.stderr.take().expect("stderr");
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();

    let auth = Auth::Key(srv.admin_key.clone());
    let mut lines: Vec<String> = Vec::new();
    let run = async {
        let mut instance: Option<String> = None;
        while let Some(line) = stdout.next_line().await.expect("the example's output") {
            if let Some(id) = line.strip_prefix("Инстанс создан с ID:") {
                instance = Some(id.trim().to_owned());
            }
            if line.starts_with("Сообщение отправлено, ID:") {
                // A contact writes while the example goes on to watch `/events`.
                let id = instance.as_deref().expect("the instance id came first");
                let (code, body) = srv
                    .post(
                        &format!("/api/sandbox/instances/{id}/inbound"),
                        &auth,
                        json!({"from": WRITER, "body": WRITER_TEXT, "pushName": "Иван"}),
                    )
                    .await;
                assert_eq!(code, 200, "inbound: {body}");
            }
            lines.push(line);
        }
        child.wait().await.expect("wait for the example")
    };
    let outcome = tokio::time::timeout(RUN_LIMIT, run).await;
    let status = match outcome {
        Ok(status) => Some(status),
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    };
    let errors = stderr_task.await.unwrap_or_default();
    let output = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{errors}",
        lines.join("\n")
    );
    let Some(status) = status else {
        panic!("the {language} example ran over {RUN_LIMIT:?} and was killed\n{output}");
    };
    assert!(
        status.success(),
        "the {language} example failed ({status})\n{output}"
    );

    // What it printed.
    let instance = after(&lines, "Инстанс создан с ID:")
        .unwrap_or_else(|| panic!("no instance id printed\n{output}"))
        .to_owned();
    let message = after(&lines, "Сообщение отправлено, ID:")
        .unwrap_or_else(|| panic!("no message id printed\n{output}"))
        .to_owned();
    let image = after(&lines, "Изображение отправлено, ID:")
        .unwrap_or_else(|| panic!("no image id printed\n{output}"))
        .to_owned();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Статус инстанса") && l.contains("connected")),
        "no connected status printed\n{output}"
    );
    let seen = format!("Новое сообщение от {WRITER}@s.whatsapp.net: {WRITER_TEXT}");
    assert!(
        lines.iter().any(|l| l == &seen),
        "the monitor did not print {seen:?}\n{output}"
    );

    // What the API shows.
    let (code, body) = srv.get(&format!("/api/instances/{instance}"), &auth).await;
    assert_eq!(code, 200, "the example's instance: {body}");
    assert_eq!(body["name"], "Тестовый инстанс");
    assert_eq!(srv.status_of(&auth, &instance).await, "connected");
    let (code, body) = srv
        .get(
            &format!("/api/instances/{instance}/chats/{RECIPIENT}/messages?limit=100"),
            &auth,
        )
        .await;
    assert_eq!(code, 200, "history: {body}");
    let history = body["messages"].as_array().cloned().unwrap_or_default();
    let stored = |id: &str| -> Value {
        history
            .iter()
            .find(|m| m["messageId"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("message {id} is not in the history: {body}"))
    };
    let m = stored(&message);
    assert_eq!(m["fromMe"], true, "{m}");
    assert_eq!(m["messageType"], "text", "{m}");
    assert!(m.to_string().contains(text), "the text is stored: {m}");
    let m = stored(&image);
    assert_eq!(m["fromMe"], true, "{m}");
    assert_eq!(m["messageType"], "image", "{m}");
    assert_eq!(m["hasMedia"], true, "{m}");
    assert_eq!(m["mimeType"], "image/png", "{m}");
    let media = m["mediaUrl"].as_str().expect("mediaUrl");
    let resp = srv
        .request(reqwest::Method::GET, media, &auth)
        .send()
        .await
        .expect("media");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.bytes().await.expect("media bytes").to_vec(),
        png,
        "the stored image is the one served"
    );
}
