//! Cluster faults beyond a single crash: a node cut from MongoDB (through a TCP proxy the
//! test can cut), and every node restarted in turn under traffic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::cluster::{
    Cluster, Leases, listing, metric, moved_off, owners, paired, status_via, try_owners,
};
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
    let auth = cluster.admin_when_all_live().await;
    let instances = paired(&cluster, &auth, 4, "cut").await;
    let before = eventually(30, "n2 owning some instances", || async {
        let before = try_owners(cluster.node("n1"), &auth, &instances).await?;
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
        try_owners(cluster.node("n1"), &auth, &instances).await
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

/// Sends through whichever node is in `bases` (round robin), as a client behind a load
/// balancer would: a 503 (the instance is moving) or a node that went away is tried
/// again on the next node. Returns the messages answered 200, per instance.
async fn traffic(
    bases: Arc<Mutex<Vec<String>>>,
    token: String,
    instances: Vec<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> HashMap<String, Vec<String>> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client");
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    let mut turn = 0usize;
    for n in 0.. {
        if *stop.borrow() {
            break;
        }
        let id = &instances[n % instances.len()];
        let message = format!("rolling {n}");
        loop {
            turn += 1;
            let base = {
                let bases = bases.lock().expect("bases");
                bases[turn % bases.len()].clone()
            };
            let answer = client
                .post(format!("{base}/api/whatsapp/{id}/send"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"phone": "79170000999", "message": message}))
                .send()
                .await;
            match answer.map(|r| r.status().as_u16()) {
                Ok(200) => {
                    sent.entry(id.clone()).or_default().push(message);
                    break;
                }
                // Moving (503), not connected yet on its new node (409), a node
                // shutting down or too slow (transport error, 504): the next node.
                Ok(409 | 503 | 504) | Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Ok(other) => panic!("send {message} to {id} via {base}: {other}"),
            }
        }
    }
    sent
}

/// Three nodes restarted one after the other (SIGTERM, then a new process with the same
/// id and a fresh DATA_DIR) while a client sends through all of them: every send answered
/// 200 is in the history, and every instance is connected at the end with the phone it was
/// paired with, so nobody had to scan a QR code again.
#[tokio::test]
async fn a_rolling_restart_under_traffic_loses_nothing() {
    let mut cluster = Cluster::start(3, Leases::Short).await;
    let auth = cluster.admin_when_all_live().await;
    let Auth::Bearer(token) = &auth else {
        unreachable!("the admin signs in with a token")
    };
    let instances = paired(&cluster, &auth, 6, "roll").await;
    let bases = Arc::new(Mutex::new(
        cluster
            .live()
            .iter()
            .map(|n| n.server.base.clone())
            .collect::<Vec<_>>(),
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sending = tokio::spawn(traffic(
        bases.clone(),
        token.clone(),
        instances.iter().map(|(id, _)| id.clone()).collect(),
        stopped,
    ));

    for id in ["n1", "n2", "n3"] {
        let before = eventually(30, "an owner for every instance", || async {
            try_owners(cluster.node("n1"), &auth, &instances).await
        })
        .await;
        let leaving = cluster.take(id);
        // The balancer stops sending to it; requests already under way finish.
        bases
            .lock()
            .expect("bases")
            .retain(|b| *b != leaving.server.base);
        leaving.server.terminate().await;
        let back = cluster.spawn(id, &[]).await;
        bases.lock().expect("bases").push(back.server.base.clone());
        cluster.nodes.push(Some(back));
        let via = cluster
            .live()
            .into_iter()
            .find(|n| n.id != id)
            .expect("another node");
        moved_off_or_back(via, &auth, &instances, &before, id).await;
    }
    stop.send(true).expect("stop the traffic");
    let sent = sending.await.expect("the traffic task");
    println!(
        "sends answered 200 during the rolling restart: {}",
        sent.values().map(Vec::len).sum::<usize>()
    );
    assert!(
        sent.values().map(Vec::len).sum::<usize>() >= instances.len(),
        "some traffic went through: {sent:?}"
    );

    let via = cluster.node("n1");
    for (id, phone) in &instances {
        // A node that came back takes its share gradually: an instance may still be
        // moving to it.
        let (.., stored_phone) = eventually(60, &format!("{id} connected"), || async {
            status_via(via, &auth, id)
                .await
                .filter(|(status, ..)| status == "connected")
        })
        .await;
        assert_eq!(stored_phone, phone.as_str(), "{id} kept its session");
        let (code, body) = via
            .call(
                reqwest::Method::GET,
                &format!("/api/instances/{id}/chats/79170000999/messages?limit=1000"),
                &auth,
                None,
            )
            .await;
        assert_eq!(code, 200, "{body}");
        let stored: Vec<&str> = body["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["content"].as_str())
            .collect();
        for message in sent.get(id).into_iter().flatten() {
            assert!(
                stored.contains(&message.as_str()),
                "{id}: {message} was answered 200 but is not stored"
            );
        }
    }
}

/// Waits until every instance is connected with its phone again, on any node, after
/// `restarted` went away and came back; the instances it held have a newer lease.
async fn moved_off_or_back(
    via: &crate::cluster::Node,
    auth: &Auth,
    instances: &[(String, String)],
    before: &HashMap<String, (String, u64)>,
    restarted: &str,
) {
    eventually(
        60,
        &format!("every instance connected after {restarted} restarted"),
        || async {
            for (id, phone) in instances {
                let (status, node, epoch, stored_phone) = status_via(via, auth, id).await?;
                if status != "connected" {
                    return None;
                }
                if before[id].0 == restarted && epoch <= before[id].1 {
                    // Still the lease of the process that left ({node}): not taken over yet.
                    let _ = node;
                    return None;
                }
                assert_eq!(stored_phone, phone.as_str(), "{id} kept its session");
            }
            Some(())
        },
    )
    .await;
}
