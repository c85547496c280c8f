//! The server binary's start: settings from a `.env` file in its working directory, and
//! where and how it logs.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::common::{ADMIN_EMAIL, Auth, JWT_SECRET, call_at, eventually};

/// The binary started in `dir` (its working directory) with only the test defaults and
/// `env` in its environment; its stdout and stderr are collected line by line.
struct Started {
    child: tokio::process::Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The tasks reading the two pipes; they end when the process closes them.
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Started {
    fn spawn(dir: &Path, env: &[(&str, &str)]) -> Started {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"));
        cmd.env_clear()
            .current_dir(dir)
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("DATA_DIR", dir.join("data"))
            .env("JWT_SECRET", JWT_SECRET)
            .env("WA_ENGINE", "sandbox")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the server binary");
        let mut readers = Vec::new();
        let mut collect = |pipe: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            if let Some(pipe) = pipe {
                let lines = lines.clone();
                readers.push(tokio::spawn(async move {
                    let mut reader = tokio::io::BufReader::new(pipe).lines();
                    while let Ok(Some(line)) = reader.next_line().await {
                        lines.lock().expect("lines").push(line);
                    }
                }));
            }
            lines
        };
        let stdout = collect(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = collect(child.stderr.take().map(|p| Box::new(p) as _));
        Started {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn stdout(&self) -> Vec<String> {
        self.stdout.lock().expect("stdout").clone()
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr").clone()
    }

    /// The base URL, from the `listening` line of the log (JSON or text).
    async fn base_url(&self) -> String {
        let address = eventually(60, "the server to listen", || async {
            self.stdout().iter().find_map(|line| {
                if let Ok(v) = serde_json::from_str::<Value>(line) {
                    return (v["message"] == "listening")
                        .then(|| v["address"].as_str().map(str::to_owned))
                        .flatten();
                }
                if !line.contains("listening") {
                    return None;
                }
                line.split_whitespace()
                    .find_map(|word| word.strip_prefix("address="))
                    .map(str::to_owned)
            })
        })
        .await;
        format!("http://{address}")
    }

    /// Waits for the process to stop by itself, and for what it wrote to be read: its
    /// last lines may still be in the pipes when it exits.
    async fn exit_status(&mut self) -> std::process::ExitStatus {
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the server stops by itself")
            .expect("wait");
        for reader in self.readers.drain(..) {
            tokio::time::timeout(Duration::from_secs(60), reader)
                .await
                .expect("the pipes close with the server")
                .expect("the pipe reader");
        }
        status
    }
}

async fn login(base: &str, password: &str) -> (u16, Value) {
    let client = reqwest::Client::new();
    call_at(
        &client,
        base,
        Method::POST,
        "/api/auth/login",
        &Auth::None,
        Some(json!({"email": ADMIN_EMAIL, "password": password})),
    )
    .await
}

/// `.env` in the working directory is read; a real environment variable wins over it;
/// the start log names the file.
#[tokio::test]
async fn settings_come_from_dotenv_below_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join(".env"),
        "# settings of this test\n\
         ADMIN_PASSWORD=from-dotenv-123\n\
         ADMIN_FIRST_NAME=FromFile\n\
         ADMIN_LAST_NAME=\"Env User\"  # quoted, with a comment\n\
         export LOG_FORMAT=json\n\
         COMPOSE_PROJECT_NAME=ignored\n",
    )
    .expect("write .env");
    let server = Started::spawn(dir.path(), &[("ADMIN_FIRST_NAME", "FromEnvironment")]);
    let base = server.base_url().await;

    let (status, body) = login(&base, "from-dotenv-123").await;
    assert_eq!(status, 200, "the admin password of .env: {body}");
    assert_eq!(
        body["user"]["firstName"], "FromEnvironment",
        "the environment wins over .env"
    );
    assert_eq!(body["user"]["lastName"], "Env User");
    let (status, _) = login(&base, "admin123").await;
    assert_eq!(status, 401, "the default password is not the admin's");

    let env_file = std::fs::canonicalize(dir.path().join(".env")).expect("path");
    let read = server
        .stdout()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|v| v["message"] == "settings read from a .env file")
        .unwrap_or_else(|| panic!("no log line names the .env file: {:?}", server.stdout()));
    let logged = std::fs::canonicalize(read["file"].as_str().expect("file")).expect("path");
    assert_eq!(logged, env_file, "{read}");
}

/// A `.env` line that is not a setting stops the start: a non-zero exit and a message
/// naming the line (but not its text, which may be a secret).
#[tokio::test]
async fn a_malformed_dotenv_line_stops_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join(".env"),
        "ADMIN_PASSWORD=from-dotenv-123\n\nJWT_SECRET=two secret words\n",
    )
    .expect("write .env");
    let mut server = Started::spawn(dir.path(), &[]);
    let status = server.exit_status().await;
    assert!(!status.success(), "{status}");
    assert_eq!(status.code(), Some(2), "{status}");
    let stderr = server.stderr().join("\n");
    assert!(
        stderr.contains(".env") && stderr.contains("line 3"),
        "the message names the file and the line: {stderr}"
    );
    assert!(!stderr.contains("secret words"), "{stderr}");
    assert!(
        !server.stdout().iter().any(|l| l.contains("listening")),
        "it never listened"
    );
}

/// With `LOG_DIR` the log also goes to a daily file; neither the file nor stdout (a pipe
/// here) carries ANSI escape codes, even in the coloured-by-default text format.
#[tokio::test]
async fn log_files_and_pipes_get_no_colour() {
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = dir.path().join("logs");
    let logs_var = logs.display().to_string();
    let server = Started::spawn(
        dir.path(),
        &[
            ("LOG_DIR", &logs_var),
            ("LOG_FORMAT", "text"),
            ("RUST_LOG", "info"),
        ],
    );
    let base = server.base_url().await;
    let (status, _) = call_at(
        &reqwest::Client::new(),
        &base,
        Method::GET,
        "/healthz",
        &Auth::None,
        None,
    )
    .await;
    assert_eq!(status, 200);

    let (name, text) = eventually(20, "a log file with the start in it", || async {
        let entry = std::fs::read_dir(&logs).ok()?.flatten().next()?;
        let text = std::fs::read_to_string(entry.path()).ok()?;
        text.contains("listening")
            .then(|| (entry.file_name().to_string_lossy().into_owned(), text))
    })
    .await;
    let date = name
        .strip_prefix("wagate.")
        .and_then(|n| n.strip_suffix(".log"))
        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    assert!(date.is_some(), "a daily file wagate.YYYY-MM-DD.log: {name}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escape codes in the log file:\n{text}"
    );
    assert!(
        text.contains("logging to daily files too"),
        "the start log says where files go:\n{text}"
    );

    let stdout = server.stdout();
    assert!(
        stdout.iter().any(|l| l.contains("listening")),
        "stdout still gets the log: {stdout:?}"
    );
    assert!(
        stdout.iter().all(|l| !l.contains('\u{1b}')),
        "ANSI escape codes on a piped stdout: {stdout:?}"
    );
}
