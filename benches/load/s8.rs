//! S8: cluster failover. A node holding every sandbox instance is killed (SIGKILL); the
//! figures are how long until another node runs all of them again, and how many it takes
//! over per second, against the lease TTL (a lease must expire before it can move).
//!
//! Two `wagate` processes in cluster mode on one SecantusDB (the MongoDB-wire test server:
//! `WAGATE_TEST_SECANTUSD` names it, as the test command sets it). The production lease
//! timings apply unless `WAGATE_BENCH_S8_TTL_MS` sets another TTL (renewal TTL / 4, scan
//! 2 s).

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{
    Ctx, Res, Row, Sizes, env_num, for_each_concurrent, http_client, parse_metrics, wait_for,
};

const CLUSTER_SECRET: &str = "load-harness-cluster-secret-0123456789abcdef";
const SECRET_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const ADMIN_PASSWORD: &str = "load-harness-admin";

fn free_port() -> Res<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .ctx("a free port")
}

/// A child process killed when dropped.
pub(super) struct Child(tokio::process::Child);

/// Starts SecantusDB (the MongoDB-wire test server `WAGATE_TEST_SECANTUSD` names), in
/// memory, on a free port; `scenario` names who needs it in the error.
pub(super) fn start_secantus(scenario: &str) -> Res<(Child, u16)> {
    let secantusd = std::env::var("WAGATE_TEST_SECANTUSD").map_err(|_| {
        format!(
            "{scenario} needs the MongoDB test server: set WAGATE_TEST_SECANTUSD (./scripts/test installs it)"
        )
    })?;
    let port = free_port()?;
    let child = tokio::process::Command::new(&secantusd)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--storage-path", ":memory:", "--log-level", "WARNING"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ctx("start SecantusDB")?;
    Ok((Child(child), port))
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

struct Node {
    base: String,
    process: Child,
    _data: tempfile::TempDir,
}

async fn start_node(id: &str, database: &str, ttl_ms: u64) -> Res<Node> {
    let data = tempfile::tempdir().ctx("tempdir")?;
    let port = free_port()?;
    let process = tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
        .env_clear()
        .current_dir(data.path())
        .envs([
            ("HOST", "127.0.0.1".to_owned()),
            ("PORT", port.to_string()),
            ("DATA_DIR", data.path().display().to_string()),
            ("JWT_SECRET", super::JWT_SECRET.to_owned()),
            ("SECRET_KEY", SECRET_KEY.to_owned()),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
            ("WA_ENGINE", "sandbox".to_owned()),
            ("DATABASE_PROVIDER", "mongodb".to_owned()),
            ("DATABASE_URL", database.to_owned()),
            ("CLUSTER_MODE", "mongodb".to_owned()),
            ("NODE_ID", id.to_owned()),
            ("NODE_ADVERTISE_URL", format!("http://127.0.0.1:{port}")),
            ("CLUSTER_SECRET", CLUSTER_SECRET.to_owned()),
            ("CLUSTER_LEASE_TTL_MS", ttl_ms.to_string()),
            ("CLUSTER_LEASE_RENEW_MS", (ttl_ms / 4).to_string()),
            ("CLUSTER_SCAN_MS", "2000".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
            // The bench polls every instance's status: no per-user rate limit.
            ("RATE_LIMIT_PER_MINUTE", "0".to_owned()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .ctx("start wagate")?;
    let base = format!("http://127.0.0.1:{port}");
    let client = http_client(4)?;
    wait_for(
        &format!("node {id} to answer"),
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            Ok(client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
                .then_some(()))
        },
    )
    .await?;
    Ok(Node {
        base,
        process: Child(process),
        _data: data,
    })
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> Res<(u16, Value)> {
    let mut rb = client.request(method, &url).bearer_auth(token);
    if let Some(body) = body {
        rb = rb.json(&body);
    }
    let resp = rb.send().await.ctx(&url)?;
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// Instances each live node holds, as `via` lists them.
async fn held(client: &reqwest::Client, via: &str, token: &str) -> Res<Vec<(String, u64)>> {
    let (status, body) = call(
        client,
        reqwest::Method::GET,
        format!("{via}/api/cluster/nodes"),
        token,
        None,
    )
    .await?;
    if status != 200 {
        return Err(format!("/api/cluster/nodes answered {status}: {body}"));
    }
    Ok(body["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    (
                        n["nodeId"].as_str().unwrap_or_default().to_owned(),
                        n["instances"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// How many instances `node` runs connected, by its `/metrics` (no database read).
async fn connected_on(client: &reqwest::Client, node: &str) -> Res<usize> {
    let text = client
        .get(format!("{node}/metrics"))
        .send()
        .await
        .ctx("metrics")?
        .text()
        .await
        .ctx("metrics body")?;
    let connected = parse_metrics(&text)
        .get("wagate_instances{status=\"connected\"}")
        .copied()
        .unwrap_or(0.0);
    Ok(connected as usize)
}

/// `(status, node)` of every instance, asked of `via` (answered by each owner).
async fn statuses(
    client: &reqwest::Client,
    via: &str,
    token: &str,
    ids: &[String],
) -> Res<Vec<Option<(String, String)>>> {
    let client = client.clone();
    let via = via.to_owned();
    let token = token.to_owned();
    let ids = ids.to_vec();
    for_each_concurrent(ids.len(), 32, move |i| {
        let (client, via, token, id) = (client.clone(), via.clone(), token.clone(), ids[i].clone());
        async move {
            let (status, body) = call(
                &client,
                reqwest::Method::GET,
                format!("{via}/api/instances/{id}/status"),
                &token,
                None,
            )
            .await?;
            Ok((status == 200).then(|| {
                (
                    body["status"].as_str().unwrap_or_default().to_owned(),
                    body["node"].as_str().unwrap_or_default().to_owned(),
                )
            }))
        }
    })
    .await
}

pub(super) async fn s8(sizes: &Sizes) -> Res<Vec<Row>> {
    let n = if sizes.quick { 200 } else { 1_000 };
    let n = env_num("WAGATE_BENCH_S8_INSTANCES").map_or(n, |v| (v as usize).clamp(10, 100_000));
    let ttl_ms = env_num("WAGATE_BENCH_S8_TTL_MS").map_or(20_000, |v| v.clamp(2_000, 600_000));
    let (_mongo, mongo_port) = start_secantus("S8")?;
    let database = format!("mongodb://127.0.0.1:{mongo_port}/wagate_s8");
    let victim = start_node("n1", &database, ttl_ms).await?;
    let client = http_client(64)?;
    let login = client
        .post(format!("{}/api/auth/login", victim.base))
        .json(&json!({"email": "admin@example.com", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .ctx("login")?
        .json::<Value>()
        .await
        .ctx("login answer")?;
    let token = login["token"]
        .as_str()
        .ok_or_else(|| format!("no token in {login}"))?
        .to_owned();

    println!("S8: creating and pairing {n} sandbox instances on n1");
    let created = {
        let (client, base, token) = (client.clone(), victim.base.clone(), token.clone());
        for_each_concurrent(n, 16, move |i| {
            let (client, base, token) = (client.clone(), base.clone(), token.clone());
            async move {
                let (status, body) = call(
                    &client,
                    reqwest::Method::POST,
                    format!("{base}/api/instances"),
                    &token,
                    Some(json!({"name": format!("s8-{i}"), "engine": "sandbox"})),
                )
                .await?;
                if status != 201 {
                    return Err(format!("create answered {status}: {body}"));
                }
                let id = body["id"].as_str().unwrap_or_default().to_owned();
                // Scanned once its owner runs it (a QR code exists).
                wait_for(
                    "a QR code",
                    Duration::from_secs(120),
                    Duration::from_millis(250),
                    || async {
                        let (status, _) = call(
                            &client,
                            reqwest::Method::GET,
                            format!("{base}/api/instances/{id}/qr"),
                            &token,
                            None,
                        )
                        .await?;
                        Ok((status == 200).then_some(()))
                    },
                )
                .await?;
                let (status, body) = call(
                    &client,
                    reqwest::Method::POST,
                    format!("{base}/api/sandbox/instances/{id}/scan"),
                    &token,
                    Some(json!({"phone": format!("7918{i:07}")})),
                )
                .await?;
                if status != 200 {
                    return Err(format!("scan answered {status}: {body}"));
                }
                Ok(id)
            }
        })
        .await?
    };
    wait_for(
        "every instance connected on n1",
        Duration::from_secs(600),
        Duration::from_millis(500),
        || async {
            let all = statuses(&client, &victim.base, &token, &created).await?;
            Ok(all
                .iter()
                .all(|s| {
                    s.as_ref()
                        .is_some_and(|(s, node)| s == "connected" && node == "n1")
                })
                .then_some(()))
        },
    )
    .await?;

    let heir = start_node("n2", &database, ttl_ms).await?;
    wait_for(
        "n2 in the registry",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { Ok((held(&client, &heir.base, &token).await?.len() == 2).then_some(())) },
    )
    .await?;
    println!("S8: {n} instances paired, n2 up; killing n1");

    // n2 may already hold a few: n1 hands over one per scan above its share.
    let before = held(&client, &heir.base, &token)
        .await?
        .into_iter()
        .find(|(id, _)| id == "n2")
        .map_or(0, |(_, count)| count);
    let Node { mut process, .. } = victim;
    let killed = Instant::now();
    process.0.start_kill().ctx("kill n1")?;
    let _ = process.0.wait().await;
    let limit = Duration::from_millis(ttl_ms) * 3 + Duration::from_secs(600);
    let first_taken: std::cell::Cell<Option<Duration>> = std::cell::Cell::new(None);
    let all_taken = wait_for(
        "n2 holding every lease",
        limit,
        Duration::from_millis(100),
        || async {
            let on_n2 = held(&client, &heir.base, &token)
                .await?
                .into_iter()
                .find(|(id, _)| id == "n2")
                .map_or(0, |(_, count)| count);
            if on_n2 > before && first_taken.get().is_none() {
                first_taken.set(Some(killed.elapsed()));
            }
            Ok((on_n2 as usize >= n).then(|| killed.elapsed()))
        },
    )
    .await?;
    let all_connected = wait_for(
        "every instance connected on n2",
        limit,
        Duration::from_millis(500),
        || async {
            // Asking every instance's status is n requests of the database: only once
            // n2 itself counts them all connected, so the bench does not load it.
            if connected_on(&client, &heir.base).await? < n {
                return Ok(None);
            }
            let all = statuses(&client, &heir.base, &token, &created).await?;
            Ok(all
                .iter()
                .all(|s| {
                    s.as_ref()
                        .is_some_and(|(s, node)| s == "connected" && node == "n2")
                })
                .then(|| killed.elapsed()))
        },
    )
    .await?;
    let first = first_taken.get().unwrap_or(all_taken);
    let moving = all_connected.saturating_sub(first).as_secs_f64().max(0.001);
    let ttl = ttl_ms as f64 / 1000.0;
    println!(
        "S8: first lease taken after {:.1} s, all after {:.1} s, all connected after {:.1} s (TTL {ttl:.0} s)",
        first.as_secs_f64(),
        all_taken.as_secs_f64(),
        all_connected.as_secs_f64()
    );
    let failover = all_connected.as_secs_f64();
    Ok(vec![
        Row::new(
            "S8",
            &format!(
                "failover: SIGKILL of the node holding {n} instances → all connected on the other"
            ),
            failover,
            "s",
            "lease TTL",
            Some(ttl),
            "first lease taken ≤ TTL + one scan (2 s)",
            first.as_secs_f64() <= ttl + 2.0,
        )
        .note(format!(
            "first lease taken after {:.1} s, every lease after {:.1} s; {before} had moved to n2 before the kill (rebalancing)",
            first.as_secs_f64(),
            all_taken.as_secs_f64()
        )),
        Row::new(
            "S8",
            "instances moved per second (first lease taken → all connected)",
            n as f64 / moving,
            "instances/s",
            "",
            None,
            "report",
            true,
        ),
    ])
}
