//! A cluster node cut from MongoDB (through a TCP proxy the test can cut): it stops its
//! instances before their leases can expire, the other node takes them over with their
//! sessions, and once the cut heals ownership settles instead of flapping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, Leases, listing, metric, moved_off, owners, paired, status_via};
use crate::common::{Auth, eventually};

/// A TCP proxy on loopback in front of `upstream`; [`CuttableProxy::cut`] drops every
/// connection through it and refuses new ones until [`CuttableProxy::heal`].
struct CuttableProxy {
    port: u16,
    state: Arc<Mutex<ProxyState>>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    cut: bool,
    links: Vec<JoinHandle<()>>,
}

impl CuttableProxy {
    async fn start(upstream: u16) -> CuttableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut links = shared.lock().expect("proxy state");
                if links.cut {
                    drop(client); // refused: closed at once
                    continue;
                }
                links.links.retain(|l| !l.is_finished());
                links.links.push(tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        CuttableProxy {
            port,
            state,
            accept,
        }
    }

    fn cut(&self) {
        let mut state = self.state.lock().expect("proxy state");
        state.cut = true;
        for link in state.links.drain(..) {
            link.abort();
        }
    }

    fn heal(&self) {
        self.state.lock().expect("proxy state").cut = false;
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The `timestamp`s of the JSON log lines of `log` whose message is `message` (and, when
/// given, whose `instance` field is `instance`).
fn logged_at(log: &str, message: &str, instance: Option<&str>) -> Vec<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| {
            let fields = if v["fields"].is_object() {
                &v["fields"]
            } else {
                v
            };
            fields["message"] == message
                && instance.is_none_or(|i| fields["instance"].as_str() == Some(i))
        })
        .filter_map(|v| v["timestamp"].as_str().map(str::to_owned))
        .collect()
}

/// n2 reaches MongoDB through a proxy that the test cuts. n2 stops its instances (counted
/// as self-fencing) before n1 takes any of their leases, n1 runs them with their sessions,
/// and after the cut heals the two nodes share the instances again with each instance
/// changing hands at most twice (there and back), then staying put.
#[tokio::test]
async fn a_node_cut_from_mongodb_stops_its_instances_before_their_leases_expire() {
    let mut cluster = Cluster::start(0, Leases::Short).await;
    let mongo_port: u16 = cluster
        .url
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the test database's port");
    let proxy = CuttableProxy::start(mongo_port).await;
    // One connection to that one server, not to the replica set's advertised address
    // (which would go around the proxy); short timeouts so the cut shows quickly.
    let through_proxy = format!(
        "mongodb://127.0.0.1:{}/wagate_cluster?directConnection=true&serverSelectionTimeoutMS=1000&connectTimeoutMS=1000",
        proxy.port
    );
    let n1 = cluster.spawn_logged("n1", &[]).await;
    cluster.nodes.push(Some(n1));
    let n2 = cluster
        .spawn_logged("n2", &[("DATABASE_URL", through_proxy.as_str())])
        .await;
    cluster.nodes.push(Some(n2));
    let auth = cluster.node("n1").server.admin().await;
    eventually(20, "two live nodes", || async {
        (listing(cluster.node("n1"), &auth).await.len() == 2).then_some(())
    })
    .await;
    let instances = paired(&cluster, &auth, 4, "cut").await;
    let before = eventually(30, "n2 owning some instances", || async {
        let before = settled_owners(&cluster, &auth, &instances).await?;
        before.values().any(|(n, _)| n == "n2").then_some(before)
    })
    .await;
    let on_n2: Vec<String> = before
        .iter()
        .filter(|(_, (n, _))| n == "n2")
        .map(|(id, _)| id.clone())
        .collect();
    let fenced_before = metric(cluster.node("n2"), "wagate_cluster_self_fenced_total")
        .await
        .unwrap_or(0);

    proxy.cut();
    // n2 (still answering HTTP) notices it cannot renew and stops what it holds.
    eventually(30, "n2 fencing itself", || async {
        let n2 = cluster.node("n2");
        let fenced = metric(n2, "wagate_cluster_self_fenced_total").await?;
        let held = metric(n2, "wagate_cluster_leases").await?;
        (fenced > fenced_before && held == 0).then_some(())
    })
    .await;
    moved_off(cluster.node("n1"), &auth, &instances, &before, "n2").await;
    // n2 stopped them before n1 took their leases (the leases had not expired yet).
    let n1_log = cluster.node("n1").server.log_text();
    let n2_log = cluster.node("n2").server.log_text();
    let fenced_at = logged_at(
        &n2_log,
        "cannot renew the leases in time: stopping every instance before they can expire",
        None,
    );
    let fenced_at = fenced_at.first().expect("n2 logged its fence");
    for id in &on_n2 {
        let taken = logged_at(&n1_log, "lease taken; starting the instance", Some(id));
        let taken = taken.last().expect("n1 logged taking the lease");
        assert!(
            fenced_at < taken,
            "{id}: n2 fenced at {fenced_at}, n1 took it at {taken}"
        );
    }

    // Healed: n2 is a live node again and gets its share back, one move per instance at
    // most; then nothing moves while both nodes renew several times.
    proxy.heal();
    let shared = eventually(60, "the two nodes sharing the instances again", || async {
        let listed = listing(cluster.node("n1"), &auth).await;
        if listed.get("n1") != Some(&2) || listed.get("n2") != Some(&2) {
            return None;
        }
        settled_owners(&cluster, &auth, &instances).await
    })
    .await;
    for (id, (_, epoch)) in &shared {
        let (_, first) = &before[id];
        assert!(
            *epoch <= first + 2,
            "{id} changed hands {} times: {before:?} → {shared:?}",
            epoch - first
        );
    }
    let renewals_then = renewals(&cluster).await;
    eventually(30, "three more renewals on each node", || async {
        let now = renewals(&cluster).await;
        now.iter()
            .all(|(node, n)| *n >= renewals_then.get(node).copied().unwrap_or(0) + 3)
            .then_some(())
    })
    .await;
    let later = owners(cluster.node("n1"), &auth, &instances).await;
    assert_eq!(later, shared, "ownership moved after it had settled");
    for (id, _) in &instances {
        let (status, ..) = status_via(cluster.node("n2"), &auth, id)
            .await
            .expect("owned");
        assert_eq!(status, "connected", "{id}");
    }
}

/// Every instance's owner and lease epoch; None while one of them is moving.
async fn settled_owners(
    cluster: &Cluster,
    auth: &Auth,
    instances: &[(String, String)],
) -> Option<HashMap<String, (String, u64)>> {
    let mut out = HashMap::new();
    for (id, _) in instances {
        let (_, node, epoch, _) = status_via(cluster.node("n1"), auth, id).await?;
        out.insert(id.clone(), (node, epoch));
    }
    Some(out)
}

/// Each node's count of successful lease renewals.
async fn renewals(cluster: &Cluster) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for node in cluster.live() {
        let n = metric(node, "wagate_cluster_renewals_total")
            .await
            .unwrap_or(0);
        out.insert(node.id.clone(), n);
    }
    out
}
