//! S7's fake WhatsApp in a process of its own, so the scenario process's memory, file
//! descriptors, threads and CPU are the gateway's alone.
//!
//! The bench binary runs again as `<bench> --fake-whatsapp <dir>`: that process serves the
//! fake on the Unix socket `<dir>/whatsapp.sock` (the gateway's sessions reach it through
//! the wacore transport seam) and answers a small control channel on
//! `<dir>/control.sock`: one JSON request per connection, one JSON line back. It lives
//! as long as the bench holds its standard input open.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_whatsapp::{FakeWhatsApp, Peer, UnixTransports};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use wagate_actors::engine::wacore::TransportFactory;

use super::{Ctx, Res};

/// The flag that makes the bench binary the fake WhatsApp.
pub const FLAG: &str = "--fake-whatsapp";
const WHATSAPP_SOCKET: &str = "whatsapp.sock";
const CONTROL_SOCKET: &str = "control.sock";
const READY: &str = "fake-whatsapp ready";

/// What the fake process keeps beside the fake itself: the users made for the bench.
struct Fake {
    whatsapp: FakeWhatsApp,
    users: Mutex<HashMap<String, Peer>>,
}

/// The fake process: `<bench> --fake-whatsapp <dir>`.
pub fn serve(dir: &Path) -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .ctx("tokio runtime")?;
    rt.block_on(async {
        // One connection per session: the gateway's need bounds the fake's.
        let need = super::files_needed(super::Sizes::from_env().s7_sessions);
        let limit = super::raise_file_limit(need)?;
        eprintln!("S7: the fake's file limit {limit}");
        let whatsapp = FakeWhatsApp::new();
        whatsapp
            .serve_unix(&dir.join(WHATSAPP_SOCKET))
            .ctx("the WhatsApp socket")?;
        let control = UnixListener::bind(dir.join(CONTROL_SOCKET)).ctx("the control socket")?;
        let fake = Arc::new(Fake {
            whatsapp,
            users: Mutex::new(HashMap::new()),
        });
        tokio::spawn(async move {
            loop {
                match control.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(answer(fake.clone(), stream));
                    }
                    Err(e) => {
                        eprintln!("fake WhatsApp control: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        println!("{READY}");
        // Until the bench closes our standard input (or dies).
        tokio::task::spawn_blocking(|| {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        })
        .await
        .ctx("standard input")
    })
}

/// Answers one control request.
async fn answer(fake: Arc<Fake>, stream: UnixStream) {
    let (from, mut to) = stream.into_split();
    let mut line = String::new();
    if tokio::io::BufReader::new(from)
        .read_line(&mut line)
        .await
        .is_err()
    {
        return;
    }
    let reply = match serde_json::from_str::<Value>(&line) {
        Ok(request) => match handle(&fake, &request).await {
            Ok(value) => json!({ "ok": value }),
            Err(e) => json!({ "err": e }),
        },
        Err(e) => json!({ "err": format!("not JSON: {e}") }),
    };
    let _ = to.write_all(format!("{reply}\n").as_bytes()).await;
}

fn text<'a>(request: &'a Value, key: &str) -> Res<&'a str> {
    request[key]
        .as_str()
        .ok_or_else(|| format!("no {key} in {request}"))
}

async fn handle(fake: &Fake, request: &Value) -> Res<Value> {
    match text(request, "op")? {
        "scan" => {
            fake.whatsapp
                .scan(text(request, "qr")?, text(request, "phone")?)
                .await?;
            Ok(Value::Null)
        }
        "user" => {
            let phone = text(request, "phone")?;
            let peer = fake.whatsapp.user(phone, text(request, "name")?).await?;
            fake.users
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(phone.to_owned(), peer);
            Ok(Value::Null)
        }
        "decrypted" => {
            let phone = text(request, "phone")?;
            let peer = fake
                .users
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(phone)
                .cloned()
                .ok_or_else(|| format!("no user {phone}"))?;
            let count = request["count"].as_u64().unwrap_or(0);
            let within = Duration::from_millis(request["within_ms"].as_u64().unwrap_or(120_000));
            for got in 0..count {
                peer.next_message(within)
                    .await
                    .map_err(|e| format!("{phone} after {got} of {count} messages: {e}"))?;
            }
            Ok(Value::Null)
        }
        "health" => Ok(json!({
            "unknown_iqs": fake.whatsapp.unknown_iqs(),
            "problems": fake.whatsapp.problems(),
            "connections": fake.whatsapp.connections(),
            "rss_kib": super::rss_bytes().map(|b| b / 1024).unwrap_or(0),
        })),
        other => Err(format!("no operation {other}")),
    }
}

/// What the fake reports about itself.
pub struct Health {
    pub unknown_iqs: u64,
    pub problems: Vec<String>,
    pub connections: u64,
    pub rss_kib: u64,
}

/// The fake process, seen from the bench. Dropping it ends the process.
pub struct FakeProcess {
    child: Child,
    dir: tempfile::TempDir,
    _stdout: BufReader<ChildStdout>,
}

impl FakeProcess {
    /// Starts the fake process and waits until it serves.
    pub fn start() -> Res<FakeProcess> {
        let dir = tempfile::tempdir().ctx("temp dir")?;
        let exe = std::env::current_exe().ctx("the bench binary")?;
        let mut child = Command::new(exe)
            .arg(FLAG)
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .ctx("start the fake WhatsApp")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line).ctx("the fake's first line")?;
        if line.trim() != READY {
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the fake WhatsApp did not start: {line}{rest}"));
        }
        Ok(FakeProcess {
            child,
            dir,
            _stdout: stdout,
        })
    }

    /// The transport factory for the gateway's sessions.
    pub fn transports(&self) -> Arc<dyn TransportFactory> {
        Arc::new(UnixTransports::new(self.dir.path().join(WHATSAPP_SOCKET)))
    }

    fn control(&self) -> PathBuf {
        self.dir.path().join(CONTROL_SOCKET)
    }

    async fn call(&self, request: Value) -> Res<Value> {
        let stream = UnixStream::connect(self.control())
            .await
            .ctx("connect to the fake's control socket")?;
        let (from, mut to) = stream.into_split();
        to.write_all(format!("{request}\n").as_bytes())
            .await
            .ctx("control request")?;
        let mut line = String::new();
        tokio::io::BufReader::new(from)
            .read_line(&mut line)
            .await
            .ctx("control answer")?;
        let mut reply: Value = serde_json::from_str(&line)
            .map_err(|e| format!("control answer {line:?} to {request}: {e}"))?;
        match reply["err"].as_str() {
            Some(e) => Err(format!("the fake: {e}")),
            None => Ok(reply["ok"].take()),
        }
    }

    /// The phone of account `phone` scans `qr` (the account is made on first use).
    pub async fn scan(&self, qr: &str, phone: &str) -> Res<()> {
        self.call(json!({"op": "scan", "qr": qr, "phone": phone}))
            .await
            .map(drop)
    }

    /// A WhatsApp user the sessions can send to.
    pub async fn user(&self, phone: &str, name: &str) -> Res<()> {
        self.call(json!({"op": "user", "phone": phone, "name": name}))
            .await
            .map(drop)
    }

    /// Waits until user `phone` decrypted `count` more messages, up to `within` for each.
    pub async fn decrypted(&self, phone: &str, count: usize, within: Duration) -> Res<()> {
        self.call(json!({
            "op": "decrypted",
            "phone": phone,
            "count": count,
            "within_ms": within.as_millis() as u64,
        }))
        .await
        .map(drop)
    }

    pub async fn health(&self) -> Res<Health> {
        let h = self.call(json!({"op": "health"})).await?;
        Ok(Health {
            unknown_iqs: h["unknown_iqs"].as_u64().unwrap_or(0),
            problems: h["problems"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            connections: h["connections"].as_u64().unwrap_or(0),
            rss_kib: h["rss_kib"].as_u64().unwrap_or(0),
        })
    }
}

impl Drop for FakeProcess {
    fn drop(&mut self) {
        // Closing its standard input ends it; kill it in case it hangs.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
