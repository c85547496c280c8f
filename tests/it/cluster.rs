//! Cluster mode with real processes: several `wagate` nodes on loopback sharing one
//! SecantusDB (a MongoDB-wire server presenting itself as a one-member replica set), with
//! two lease profiles: tests that kill, stop or cut a node use a short TTL (4 s, renewal
//! 1 s) so that ownership moves quickly; the others use a steady one (20 s, renewal 2 s)
//! so that a loaded machine, slow to renew, does not make ownership churn while they
//! look at it. Instances are scanned for every 0.5 s in both.
//!
//! Every wait waits for a condition (`eventually`), bounded in time; nothing asserts how
//! long anything took.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::{
    ADMIN_EMAIL, ADMIN_PASSWORD, Auth, Mongo, ProcessServer, eventually, free_port,
};
use crate::dashboard::{Browser, artifacts_named, js};

const CLUSTER_SECRET: &str = "cluster-test-secret-0123456789abcdef";
const SECRET_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// How long a lease lives and how often it is renewed, in ms.
#[derive(Clone, Copy)]
pub(crate) enum Leases {
    /// For tests that kill, stop or cut a node: ownership moves within seconds.
    Short,
    /// For tests where every node stays up: a renewal late under load is no loss.
    Steady,
}

impl Leases {
    fn ttl_and_renewal(self) -> (&'static str, &'static str) {
        match self {
            Leases::Short => ("4000", "1000"),
            Leases::Steady => ("20000", "2000"),
        }
    }
}

/// One SecantusDB and the nodes started on it.
pub(crate) struct Cluster {
    _mongo: Mongo,
    _mongo_dir: TempDir,
    pub(crate) url: String,
    leases: Leases,
    /// Set on every node this cluster starts.
    extra: Vec<(String, String)>,
    pub(crate) nodes: Vec<Option<Node>>,
}

pub(crate) struct Node {
    pub(crate) id: String,
    pub(crate) server: ProcessServer,
    data: TempDir,
}

impl Cluster {
    /// SecantusDB, then `n` nodes one after the other (each creates the admin only if
    /// none exists yet).
    pub(crate) async fn start(n: usize, leases: Leases) -> Cluster {
        Cluster::start_with(n, leases, &[]).await
    }

    /// [`Cluster::start`] with `extra` settings on every node.
    pub(crate) async fn start_with(n: usize, leases: Leases, extra: &[(&str, &str)]) -> Cluster {
        let mongo_dir = tempfile::tempdir().expect("tempdir");
        let mongo = Mongo::start(mongo_dir.path(), free_port()).await;
        let url = mongo.url("wagate_cluster");
        let mut cluster = Cluster {
            _mongo: mongo,
            _mongo_dir: mongo_dir,
            url,
            leases,
            extra: extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            nodes: Vec::new(),
        };
        for i in 1..=n {
            let node = cluster.spawn(&format!("n{i}"), &[]).await;
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    fn env(&self, id: &str, port: u16) -> Vec<(String, String)> {
        let (ttl, renewal) = self.leases.ttl_and_renewal();
        [
            ("DATABASE_PROVIDER", "mongodb".to_owned()),
            ("DATABASE_URL", self.url.clone()),
            ("CLUSTER_MODE", "mongodb".to_owned()),
            ("NODE_ID", id.to_owned()),
            ("PORT", port.to_string()),
            ("NODE_ADVERTISE_URL", format!("http://127.0.0.1:{port}")),
            ("CLUSTER_SECRET", CLUSTER_SECRET.to_owned()),
            ("SECRET_KEY", SECRET_KEY.to_owned()),
            ("CLUSTER_LEASE_TTL_MS", ttl.to_owned()),
            ("CLUSTER_LEASE_RENEW_MS", renewal.to_owned()),
            ("CLUSTER_SCAN_MS", "500".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    pub(crate) async fn spawn(&self, id: &str, extra: &[(&str, &str)]) -> Node {
        let data = tempfile::tempdir().expect("tempdir");
        self.spawn_node(id, extra, false, data).await
    }

    /// [`Cluster::spawn`] keeping the node's log ([`ProcessServer::log_text`]).
    pub(crate) async fn spawn_logged(&self, id: &str, extra: &[(&str, &str)]) -> Node {
        let data = tempfile::tempdir().expect("tempdir");
        self.spawn_node(id, extra, true, data).await
    }

    /// Stops node `id` (SIGTERM); its `DATA_DIR`, to start it again on.
    pub(crate) async fn stop(&mut self, id: &str) -> TempDir {
        let Node { server, data, .. } = self.take(id);
        server.terminate().await;
        data
    }

    /// Starts node `id` again on the `DATA_DIR` it had when [stopped](Self::stop).
    pub(crate) async fn start_again(&mut self, id: &str, data: TempDir) {
        let node = self.spawn_node(id, &[], false, data).await;
        self.nodes.push(Some(node));
    }

    async fn spawn_node(
        &self,
        id: &str,
        extra: &[(&str, &str)],
        logged: bool,
        data: TempDir,
    ) -> Node {
        let port = free_port();
        let mut env = self.env(id, port);
        env.extend(self.extra.iter().cloned());
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let server = if logged {
            ProcessServer::spawn_logged(data.path(), &env).await
        } else {
            ProcessServer::spawn(data.path(), &env).await
        };
        Node {
            id: id.to_owned(),
            server,
            data,
        }
    }

    pub(crate) fn live(&self) -> Vec<&Node> {
        self.nodes.iter().flatten().collect()
    }

    pub(crate) fn node(&self, id: &str) -> &Node {
        self.live()
            .into_iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no live node {id}"))
    }

    pub(crate) fn take(&mut self, id: &str) -> Node {
        self.nodes
            .iter_mut()
            .find(|n| n.as_ref().is_some_and(|n| n.id == id))
            .and_then(Option::take)
            .unwrap_or_else(|| panic!("no live node {id}"))
    }
}

impl Cluster {
    /// Signs the admin in on n1, once n1 lists every node this cluster runs.
    pub(crate) async fn admin_when_all_live(&self) -> Auth {
        let auth = self.node("n1").server.admin().await;
        let n = self.live().len();
        eventually(20, &format!("{n} live nodes"), || async {
            (listing(self.node("n1"), &auth).await.len() == n).then_some(())
        })
        .await;
        auth
    }
}

impl Node {
    /// The node's `DATA_DIR`.
    pub(crate) fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.server.call(method, path, auth, body).await
    }
}

/// The live nodes as `node` lists them: id → instances it owns.
pub(crate) async fn listing(node: &Node, auth: &Auth) -> BTreeMap<String, u64> {
    let (status, body) = node
        .call(Method::GET, "/api/cluster/nodes", auth, None)
        .await;
    assert_eq!(status, 200, "nodes: {body}");
    assert_eq!(body["node"], node.id.as_str());
    body["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            assert!(
                n["url"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
                "{n}"
            );
            assert!(
                n["lastHeartbeat"].as_str().is_some_and(|t| !t.is_empty()),
                "{n}"
            );
            (
                n["nodeId"].as_str().expect("nodeId").to_owned(),
                n["instances"].as_u64().expect("instances"),
            )
        })
        .collect()
}

/// `(status, node, leaseEpoch, phone)` of an instance, asked of `via`; None while it is
/// moving (503).
pub(crate) async fn status_via(
    via: &Node,
    auth: &Auth,
    id: &str,
) -> Option<(String, String, u64, Value)> {
    let (code, body) = via
        .call(
            Method::GET,
            &format!("/api/instances/{id}/status"),
            auth,
            None,
        )
        .await;
    if code == 503 {
        assert_eq!(body["code"], "instance_moving", "{body}");
        return None;
    }
    assert_eq!(code, 200, "status: {body}");
    Some((
        body["status"].as_str()?.to_owned(),
        body["node"].as_str()?.to_owned(),
        body["leaseEpoch"].as_u64()?,
        body["phone"].clone(),
    ))
}

async fn create(via: &Node, auth: &Auth, name: &str) -> String {
    let (status, body) = via
        .call(
            Method::POST,
            "/api/instances",
            auth,
            Some(json!({"name": name, "engine": "sandbox"})),
        )
        .await;
    assert_eq!(status, 201, "create: {body}");
    body["id"].as_str().expect("id").to_owned()
}

/// Waits for a QR code (the instance has an owner that runs it), scans it through `via`
/// (forwarded to the owner) and waits until it is connected.
async fn pair(via: &Node, auth: &Auth, id: &str, phone: &str) {
    eventually(30, &format!("a QR code of {id}"), || async {
        let (s, _) = via
            .call(Method::GET, &format!("/api/instances/{id}/qr"), auth, None)
            .await;
        (s == 200).then_some(())
    })
    .await;
    let (status, body) = via
        .call(
            Method::POST,
            &format!("/api/sandbox/instances/{id}/scan"),
            auth,
            Some(json!({"phone": phone})),
        )
        .await;
    assert_eq!(status, 200, "scan: {body}");
    eventually(30, &format!("{id} connected"), || async {
        status_via(via, auth, id)
            .await
            .filter(|(s, ..)| s == "connected")
    })
    .await;
}

/// Three nodes start; each is ready and lists all three; a node refuses a database
/// switch; a node whose secrets differ from the live nodes' refuses to start, saying so.
#[tokio::test]
async fn three_nodes_start_and_list_each_other() {
    let cluster = Cluster::start(3, Leases::Steady).await;
    let auth = cluster.node("n1").server.admin().await;
    for node in cluster.live() {
        let (status, body) = node.call(Method::GET, "/readyz", &Auth::None, None).await;
        assert_eq!(status, 200, "{}: {body}", node.id);
        let listed = eventually(20, "three live nodes", || async {
            let listed = listing(node, &auth).await;
            (listed.len() == 3).then_some(listed)
        })
        .await;
        assert_eq!(
            listed.keys().cloned().collect::<Vec<_>>(),
            ["n1", "n2", "n3"]
        );
    }
    // Tokens work on every node: the secrets are shared.
    let (status, body) = cluster
        .node("n3")
        .call(Method::GET, "/api/auth/me", &auth, None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = cluster
        .node("n2")
        .call(
            Method::POST,
            "/api/db/switch",
            &auth,
            Some(json!({"provider": "sqlite"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "cluster_mode");

    // A fourth node with another CLUSTER_SECRET exits before listening, naming why.
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"));
    cmd.env_clear()
        .current_dir(data.path())
        .env("HOST", "127.0.0.1")
        .env("DATA_DIR", data.path())
        .env("JWT_SECRET", crate::common::JWT_SECRET)
        .env("LOG_FORMAT", "text")
        .env("NO_COLOR", "1");
    for (k, v) in cluster.env("intruder", port) {
        cmd.env(k, v);
    }
    cmd.env("CLUSTER_SECRET", "another-cluster-secret-0123456789abcdef");
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the refused node exits in time")
        .expect("run the server");
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("secrets") && text.contains("differ"),
        "{text}"
    );
    let listed = listing(cluster.node("n1"), &auth).await;
    assert!(!listed.contains_key("intruder"), "{listed:?}");
}

/// Twelve instances created through the nodes in turn: each gets exactly one owner (every
/// node names the same one), the nodes' loads differ by at most 2, and each node's lease
/// gauge says its own count.
#[tokio::test]
async fn twelve_instances_spread_over_three_nodes() {
    let cluster = Cluster::start(3, Leases::Steady).await;
    let auth = cluster.admin_when_all_live().await;
    let nodes = cluster.live();
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(create(nodes[i % 3], &auth, &format!("spread-{i}")).await);
    }
    let owners = eventually(30, "an owner for every instance", || async {
        let mut owners = HashMap::new();
        for id in &ids {
            let (_, node, epoch, _) = status_via(cluster.node("n1"), &auth, id).await?;
            owners.insert(id.clone(), (node, epoch));
        }
        let listed = listing(cluster.node("n1"), &auth).await;
        (listed.values().sum::<u64>() == 12).then_some(owners)
    })
    .await;
    // Every node names the same owner and epoch (status is answered by the owner).
    for node in cluster.live() {
        for id in &ids {
            let (_, owner, epoch, _) = status_via(node, &auth, id).await.expect("owned");
            assert_eq!(
                (&owner, epoch),
                (&owners[id].0, owners[id].1),
                "{id} via {}",
                node.id
            );
        }
    }
    let listed = listing(cluster.node("n2"), &auth).await;
    let mut counted: BTreeMap<String, u64> = BTreeMap::new();
    for (owner, _) in owners.values() {
        *counted.entry(owner.clone()).or_default() += 1;
    }
    let listed_nonzero: BTreeMap<String, u64> = listed
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(
        listed_nonzero, counted,
        "the listing agrees with the owners"
    );
    let loads: Vec<u64> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| counted.get(*n).copied().unwrap_or(0))
        .collect();
    let (min, max) = (loads.iter().min().copied(), loads.iter().max().copied());
    assert!(
        max.zip(min).is_some_and(|(a, b)| a - b <= 2),
        "loads {loads:?}"
    );
    for node in cluster.live() {
        let resp = node
            .server
            .client
            .get(format!("{}/metrics", node.server.base))
            .send()
            .await
            .expect("metrics");
        let text = resp.text().await.expect("metrics text");
        let line = format!(
            "wagate_cluster_leases{{node=\"{}\"}} {}",
            node.id,
            counted.get(&node.id).copied().unwrap_or(0)
        );
        assert!(text.contains(&line), "{} lacks `{line}`:\n{text}", node.id);
    }
}

/// Opens `id`'s live stream on `node` (resuming after `last`, if given) and checks it
/// was accepted there.
async fn open_stream(node: &Node, auth: &Auth, id: &str, last: Option<&str>) -> reqwest::Response {
    let server = &node.server;
    let url = format!("{}/api/instances/{id}/events/stream", server.base);
    let mut request = auth.apply(server.client.get(url));
    if let Some(last) = last {
        request = request.header("Last-Event-ID", last);
    }
    let stream = request.send().await.expect("stream");
    assert_eq!(stream.status(), 200, "stream on {}", node.id);
    stream
}

/// Reads SSE frames from `resp` until one of type `kind` arrives; returns its data.
async fn sse_until(resp: reqwest::Response, kind: &str) -> Value {
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an SSE event in time")
            .expect("the stream stays open")
            .expect("chunk");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            for line in frame.lines() {
                if let Some(data) = line.strip_prefix("data:")
                    && let Ok(event) = serde_json::from_str::<Value>(data.trim())
                    && event["type"] == kind
                {
                    return event;
                }
            }
        }
    }
}

/// Any node accepts a send for any instance (the call runs on the owner, which the
/// answer names), and a live stream opened on a node that does not own the instance
/// (served there, from the event feed) gets the instance's `message_received`.
#[tokio::test]
async fn any_node_serves_any_instance() {
    let cluster = Cluster::start(3, Leases::Steady).await;
    let auth = cluster.admin_when_all_live().await;
    let id = create(cluster.node("n2"), &auth, "anywhere").await;
    pair(cluster.node("n3"), &auth, &id, "79160000001").await;
    let (_, owner, _, _) = status_via(cluster.node("n1"), &auth, &id)
        .await
        .expect("owner");
    let other = cluster
        .live()
        .into_iter()
        .find(|n| n.id != owner)
        .expect("a node that is not the owner");

    let stream = open_stream(other, &auth, &id, None).await;
    assert_eq!(
        stream.headers()["x-wagate-node"],
        other.id.as_str(),
        "streamed by the node it was opened on"
    );

    for node in cluster.live() {
        let resp = node
            .server
            .client
            .post(format!("{}/api/whatsapp/{id}/send", node.server.base))
            .bearer_auth(match &auth {
                Auth::Bearer(t) => t.clone(),
                _ => unreachable!(),
            })
            .json(&json!({"phone": "79160000002", "message": format!("via {}", node.id)}))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200, "send via {}", node.id);
        assert_eq!(
            resp.headers()["x-wagate-node"],
            owner.as_str(),
            "ran on the owner"
        );
    }
    let history = format!("/api/instances/{id}/chats/79160000002/messages");
    let (status, body) = other.call(Method::GET, &history, &auth, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pagination"]["total"], 3, "{body}");

    let (status, body) = cluster
        .node("n1")
        .call(
            Method::POST,
            &format!("/api/sandbox/instances/{id}/inbound"),
            &auth,
            Some(json!({"from": "79160000003", "body": "hello from afar"})),
        )
        .await;
    assert_eq!(status, 200, "inbound: {body}");
    let event = sse_until(stream, "message_received").await;
    assert_eq!(event["data"]["instanceId"], id.as_str());
}

/// A live stream opened on a node that does not own the instance goes on when the
/// owner is killed: the instance's events from its new owner arrive on it.
#[tokio::test]
async fn a_stream_on_another_node_outlives_the_owner() {
    let mut cluster = Cluster::start(3, Leases::Short).await;
    let auth = cluster.admin_when_all_live().await;
    let instances = paired(&cluster, &auth, 1, "outlive").await;
    let before = owners(cluster.node("n1"), &auth, &instances).await;
    let (id, _) = &instances[0];
    let owner = before[id].0.clone();
    // A stream on each of the two other nodes: one of them does not become the new
    // owner either.
    let mut streams = Vec::new();
    for watcher in cluster.live().into_iter().filter(|n| n.id != owner) {
        let stream = open_stream(watcher, &auth, id, None).await;
        streams.push((watcher.id.clone(), stream));
    }
    cluster.take(&owner).server.kill_hard().await;
    let via = cluster.live()[0];
    moved_off(via, &auth, &instances, &before, &owner).await;
    let (status, body) = via
        .call(
            Method::POST,
            &format!("/api/sandbox/instances/{id}/inbound"),
            &auth,
            Some(json!({"from": "79160000004", "body": "after the owner died"})),
        )
        .await;
    assert_eq!(status, 200, "inbound: {body}");
    for (watcher, stream) in streams {
        let event = sse_until(stream, "message_received").await;
        assert_eq!(
            event["data"]["body"], "after the owner died",
            "on {watcher}: {event}"
        );
    }
}

/// A live stream opened on a node that does not own the instance ends when the instance
/// is deleted, as it does on the owner.
#[tokio::test]
async fn a_stream_on_another_node_ends_when_the_instance_is_deleted() {
    let cluster = Cluster::start(2, Leases::Steady).await;
    let auth = cluster.admin_when_all_live().await;
    let instances = paired(&cluster, &auth, 1, "ends").await;
    let (id, _) = &instances[0];
    let owner = owners(cluster.node("n1"), &auth, &instances).await[id]
        .0
        .clone();
    let watcher = cluster
        .live()
        .into_iter()
        .find(|n| n.id != owner)
        .expect("a node that is not the owner");
    let stream = open_stream(watcher, &auth, id, None).await;
    let (status, body) = watcher
        .call(Method::DELETE, &format!("/api/instances/{id}"), &auth, None)
        .await;
    assert!(status == 200 || status == 204, "delete: {status} {body}");
    // Within the client's own 30 s timeout, which would cut the stream with an error.
    let mut body = stream.bytes_stream();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = body.next().await {
            if let Err(err) = chunk {
                panic!("the stream failed instead of ending: {err}");
            }
        }
    })
    .await
    .expect("the stream ends once the instance is deleted");
}

/// A forged forwarded call is refused: a wrong signature answers 401 `invalid_forward`
/// and does nothing.
#[tokio::test]
async fn a_forwarded_call_needs_a_valid_signature() {
    let cluster = Cluster::start(1, Leases::Steady).await;
    let node = cluster.node("n1");
    let auth = node.server.admin().await;
    let id = create(node, &auth, "forged").await;
    eventually(20, "the instance runs", || async {
        status_via(node, &auth, &id).await.map(|_| ())
    })
    .await;
    let resp = node
        .server
        .client
        .post(format!("{}/api/instances/{id}/logout", node.server.base))
        .bearer_auth(match &auth {
            Auth::Bearer(t) => t.clone(),
            _ => unreachable!(),
        })
        .header("x-wagate-forwarded-by", "n2")
        .header(
            "x-wagate-forwarded-at",
            chrono::Utc::now().timestamp_millis().to_string(),
        )
        .header("x-wagate-signature", "00".repeat(32))
        .send()
        .await
        .expect("forged call");
    let (status, body) = crate::common::read(resp).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "invalid_forward");
}

/// Pairs `count` instances and returns their ids with their phones.
pub(crate) async fn paired(
    cluster: &Cluster,
    auth: &Auth,
    count: usize,
    prefix: &str,
) -> Vec<(String, String)> {
    let nodes = cluster.live();
    let mut out = Vec::new();
    for i in 0..count {
        let id = create(nodes[i % nodes.len()], auth, &format!("{prefix}-{i}")).await;
        out.push((id, format!("79170{i:05}")));
    }
    for (i, (id, phone)) in out.iter().enumerate() {
        pair(nodes[(i + 1) % nodes.len()], auth, id, phone).await;
    }
    out
}

/// Waits until every instance is connected on a node other than `gone`, with a higher
/// lease epoch than `before` and the phone it was paired with: no new QR code was scanned.
pub(crate) async fn moved_off(
    via: &Node,
    auth: &Auth,
    instances: &[(String, String)],
    before: &HashMap<String, (String, u64)>,
    gone: &str,
) {
    eventually(
        40,
        &format!("every instance of {gone} connected elsewhere"),
        || async {
            for (id, phone) in instances {
                let (status, node, epoch, stored_phone) = status_via(via, auth, id).await?;
                if status != "connected" || node == gone {
                    return None;
                }
                if before[id].0 == gone {
                    assert!(
                        epoch > before[id].1,
                        "{id}: the epoch grows at a change of hands"
                    );
                }
                assert_eq!(stored_phone, phone.as_str(), "{id} kept its session");
            }
            Some(())
        },
    )
    .await;
}

/// Every instance's owner and lease epoch, asked of `via`; None while one of them is
/// moving.
pub(crate) async fn try_owners(
    via: &Node,
    auth: &Auth,
    instances: &[(String, String)],
) -> Option<HashMap<String, (String, u64)>> {
    let mut out = HashMap::new();
    for (id, _) in instances {
        let (_, node, epoch, _) = status_via(via, auth, id).await?;
        out.insert(id.clone(), (node, epoch));
    }
    Some(out)
}

/// [`try_owners`] when every instance must have an owner now.
pub(crate) async fn owners(
    via: &Node,
    auth: &Auth,
    instances: &[(String, String)],
) -> HashMap<String, (String, u64)> {
    try_owners(via, auth, instances)
        .await
        .expect("every instance owned")
}

/// Copies the newest stored event of `instance` under an id made an hour from now, as a
/// node whose clock runs ahead would have; returns that id.
async fn plant_event_from_a_fast_clock(url: &str, instance: &str) -> String {
    let db = crate::common::mongo_database(url).await;
    let events = db.collection::<mongodb::bson::Document>("events");
    let mut newest = events
        .find_one(mongodb::bson::doc! {"instanceId": instance})
        .sort(mongodb::bson::doc! {"_id": -1})
        .await
        .expect("read the events")
        .expect("the instance has events");
    let ms = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let ahead = uuid::Builder::from_unix_timestamp_millis(ms as u64, &[7; 10])
        .into_uuid()
        .simple()
        .to_string();
    newest.insert("_id", &ahead);
    events.insert_one(newest).await.expect("plant the event");
    ahead
}

/// kill -9 of a node that owns instances: they are connected on the survivors (bounded
/// wait), with their sessions (same phone, no scan), and accept sends there; their event
/// ids keep increasing across the change of hands, even past an id from a faster clock.
#[tokio::test]
async fn instances_of_a_killed_node_reconnect_on_the_survivors() {
    let mut cluster = Cluster::start(3, Leases::Short).await;
    let auth = cluster.admin_when_all_live().await;
    let instances = paired(&cluster, &auth, 6, "kill").await;
    let before = owners(cluster.node("n1"), &auth, &instances).await;
    let victim = before
        .values()
        .map(|(node, _)| node.clone())
        .find(|n| n != "n1")
        .expect("a node other than n1 owns an instance");
    // One of the victim's instances last stored an event whose id was made by a clock an
    // hour ahead of this machine's.
    let moved = before
        .iter()
        .find(|(_, (node, _))| *node == victim)
        .map(|(id, _)| id.clone())
        .expect("an instance of the victim");
    let ahead = plant_event_from_a_fast_clock(&cluster.url, &moved).await;
    cluster.take(&victim).server.kill_hard().await;

    let survivor = cluster.node("n1");
    moved_off(survivor, &auth, &instances, &before, &victim).await;
    for (id, _) in &instances {
        let (status, body) = survivor
            .call(
                Method::POST,
                &format!("/api/whatsapp/{id}/send"),
                &auth,
                Some(json!({"phone": "79170000999", "message": "after the failover"})),
            )
            .await;
        assert_eq!(status, 200, "send after failover: {body}");
    }
    // The new owner's events sort after it: a stream resumed from it gets the send.
    let resumed = open_stream(survivor, &auth, &moved, Some(&ahead)).await;
    let sent = sse_until(resumed, "message_sent").await;
    assert_eq!(sent["data"]["body"], "after the failover", "{sent}");
    let listed = listing(survivor, &auth).await;
    assert!(!listed.contains_key(&victim), "{listed:?}");
    assert_eq!(listed.values().sum::<u64>(), 6, "{listed:?}");
}

/// SIGTERM of a node: it stops its instances and releases their leases and leaves the
/// registry; the survivors take them over with their sessions.
#[tokio::test]
async fn a_terminated_node_hands_its_instances_over() {
    let mut cluster = Cluster::start(2, Leases::Short).await;
    let auth = cluster.admin_when_all_live().await;
    let instances = paired(&cluster, &auth, 4, "term").await;
    let before = owners(cluster.node("n1"), &auth, &instances).await;
    assert!(
        before.values().any(|(n, _)| n == "n2"),
        "n2 owns some: {before:?}"
    );
    cluster.take("n2").server.terminate().await;
    let survivor = cluster.node("n1");
    // A clean leave: gone from the registry at once, not after a TTL.
    let listed = listing(survivor, &auth).await;
    assert!(!listed.contains_key("n2"), "{listed:?}");
    moved_off(survivor, &auth, &instances, &before, "n2").await;
    let listed = listing(survivor, &auth).await;
    assert_eq!(listed.get("n1"), Some(&4), "{listed:?}");
}

/// This node's counter or gauge `name` from its `/metrics`.
pub(crate) async fn metric(node: &Node, name: &str) -> Option<u64> {
    let text = node
        .server
        .client
        .get(format!("{}/metrics", node.server.base))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("{name}{{node=\"{}\"}} ", node.id);
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// An owner stalled (SIGSTOP) past its TTL: calls for its instances answer 503
/// `instance_moving` instead of hanging, the other node takes them over with their
/// sessions; resumed (SIGCONT), the stale node stops what it ran on its own (counted as
/// self-fencing) and every instance is again answered by exactly one owner.
#[tokio::test]
async fn a_stalled_owner_fences_itself_when_it_resumes() {
    let mut cluster = Cluster::start(0, Leases::Short).await;
    for id in ["n1", "n2"] {
        let node = cluster
            .spawn(id, &[("ACTOR_CALL_TIMEOUT_MS", "1000")])
            .await;
        cluster.nodes.push(Some(node));
    }
    let auth = cluster.admin_when_all_live().await;
    let instances = paired(&cluster, &auth, 4, "stall").await;
    let before = owners(cluster.node("n1"), &auth, &instances).await;
    let (stalled, other) = if before.values().any(|(n, _)| n == "n2") {
        ("n2", "n1")
    } else {
        ("n1", "n2")
    };
    let (on_stalled, _) = before
        .iter()
        .find(|(_, (n, _))| n == stalled)
        .expect("an instance on the stalled node");
    cluster.node(stalled).server.signal("STOP");

    // Asked of the other node while the owner is frozen: 503, never a hang.
    let (code, body) = cluster
        .node(other)
        .call(
            Method::POST,
            &format!("/api/whatsapp/{on_stalled}/send"),
            &auth,
            Some(json!({"phone": "79170000777", "message": "while stalled"})),
        )
        .await;
    // (200 only if the instance has already moved: the TTL is short.)
    assert!(
        code == 200 || (code == 503 && body["code"] == "instance_moving"),
        "{code}: {body}"
    );

    moved_off(cluster.node(other), &auth, &instances, &before, stalled).await;
    cluster.node(stalled).server.signal("CONT");
    let resumed = cluster.node(stalled);
    eventually(20, "the resumed node to count its self-fencing", || async {
        (metric(resumed, "wagate_cluster_self_fenced_total").await == Some(1)).then_some(())
    })
    .await;
    // Every instance has one owner, and both nodes name the same one.
    eventually(20, "both nodes agreeing on every owner", || async {
        for (id, _) in &instances {
            let a = status_via(cluster.node("n1"), &auth, id).await?;
            let b = status_via(cluster.node("n2"), &auth, id).await?;
            if (a.1.as_str(), a.2) != (b.1.as_str(), b.2) || a.0 != "connected" {
                return None;
            }
        }
        Some(())
    })
    .await;
    // No lease is ever held by both (a hand-over in flight may briefly count one less).
    eventually(20, "every lease held once", || async {
        let held = metric(cluster.node("n1"), "wagate_cluster_leases").await?
            + metric(cluster.node("n2"), "wagate_cluster_leases").await?;
        assert!(held <= 4, "{held} leases held for 4 instances");
        (held == 4).then_some(())
    })
    .await;
    cluster.take(stalled).server.kill_hard().await;
}

/// The dashboard, opened on a node, names the node that owns the instance.
#[tokio::test]
async fn the_dashboard_names_the_owner_node() {
    let cluster = Cluster::start(2, Leases::Steady).await;
    let auth = cluster.admin_when_all_live().await;
    let id = create(cluster.node("n1"), &auth, "owned").await;
    let owner = eventually(30, "an owner", || async {
        status_via(cluster.node("n1"), &auth, &id)
            .await
            .map(|(_, node, _, _)| node)
    })
    .await;
    // Opened on the node that does not own it: the page still names the owner.
    let via = cluster
        .live()
        .into_iter()
        .find(|n| n.id != owner)
        .expect("a node that is not the owner");
    let browser = Browser::launch().await;
    let page = browser.new_page(artifacts_named("cluster-dashboard")).await;
    page.goto(&format!("{}/dashboard", via.server.base)).await;
    page.fill("#login-email", ADMIN_EMAIL).await;
    page.fill("#login-password", ADMIN_PASSWORD).await;
    page.click("#login-submit").await;
    page.wait_for(
        "the signed-in dashboard",
        "!document.querySelector('#app-view').hidden",
    )
    .await;
    page.eval(&format!(
        "location.hash = {}",
        js(&format!("#/instances/{id}"))
    ))
    .await;
    page.wait_for(
        "the owner node in the instance's header",
        &format!(
            "(document.querySelector('#instance-sub') || {{}}).textContent?.includes({})",
            js(&format!("on node {owner}"))
        ),
    )
    .await;
    let errors = page.errors();
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");
}
