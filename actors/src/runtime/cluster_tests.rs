//! Cluster mode end to end (the lease manager under the root supervisor): two runtimes ("nodes") on one in-memory storage and one
//! in-memory lease store whose clock is the system's, each node able to lose the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use crate::cluster::{
    ClusterSettings, ClusterView, KeyBatch, KeyRecord, LeaseBoard, LeaseRecord, LeaseStore,
    NodeRecord, SessionVault, VaultError,
};
use crate::domain::{EngineKind, Instance};
use crate::engine::{Engines, SandboxConfig, SandboxNetwork};
use crate::error::{StoreError, StoreResult};
use crate::runtime::{ClusterParts, Runtime, RuntimeConfig, start_runtime};
use crate::store::InstanceStore;
use crate::store::{apply_key_batch, key_records};
use crate::testing::MemoryStorage;

const PATIENCE: Duration = Duration::from_secs(20);

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Nodes, leases and sessions, shared by every node.
#[derive(Default)]
struct Shared {
    nodes: HashMap<String, (String, i64, i64)>,
    leases: HashMap<String, LeaseRecord>,
    sessions: HashMap<String, BTreeMap<String, Vec<u8>>>,
    keys: HashMap<String, BTreeMap<(String, String), Vec<u8>>>,
    /// When set, an instance's lease is given only once that many acquires wait at
    /// the same time: acquires asked one after another never get one.
    acquire_gate: Option<Arc<Gate>>,
}

/// Opens (for good) once `need` callers wait in [`Gate::pass`] together; a caller that
/// gives up waiting no longer counts.
struct Gate {
    need: usize,
    waiting: Mutex<(usize, bool)>,
    opened: tokio::sync::Notify,
}

impl Gate {
    fn new(need: usize) -> Self {
        Gate {
            need,
            waiting: Mutex::new((0, false)),
            opened: tokio::sync::Notify::new(),
        }
    }

    async fn pass(&self) {
        struct Leaving<'a>(&'a Gate);
        impl Drop for Leaving<'_> {
            fn drop(&mut self) {
                self.0.waiting.lock().expect("gate").0 -= 1;
            }
        }
        let _leaving = {
            let mut waiting = self.waiting.lock().expect("gate");
            waiting.0 += 1;
            if waiting.0 >= self.need {
                waiting.1 = true;
                self.opened.notify_waiters();
            }
            Leaving(self)
        };
        loop {
            let opened = self.opened.notified();
            if self.waiting.lock().expect("gate").1 {
                return;
            }
            opened.await;
        }
    }
}

/// One node's way to the shared store: `cut` makes every call fail, as a partition would.
#[derive(Clone)]
struct MemLeases {
    shared: Arc<Mutex<Shared>>,
    cut: Arc<AtomicBool>,
    board: LeaseBoard,
}

impl MemLeases {
    /// Whether this node holds `instance_id`'s lease at the epoch its board has.
    fn holds(&self, s: &Shared, instance_id: &str) -> bool {
        let mine = self.board.epoch(instance_id);
        s.leases.get(instance_id).is_some_and(|l| {
            l.owner == self.board.node_id() && Some(l.epoch) == mine && l.expires_at_ms > now_ms()
        })
    }

    fn reach(&self) -> StoreResult<std::sync::MutexGuard<'_, Shared>> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("cut off".into()));
        }
        Ok(self.shared.lock().expect("shared"))
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).expect("ms")
}

#[async_trait]
impl LeaseStore for MemLeases {
    async fn renew(&self, node: &ClusterSettings) -> StoreResult<Vec<(String, u64)>> {
        let mut s = self.reach()?;
        let now = now_ms();
        let ttl = ms(node.lease_ttl);
        s.nodes
            .insert(node.node_id.clone(), (node.url.clone(), now, now + ttl));
        let mut owned = Vec::new();
        for lease in s.leases.values_mut() {
            if lease.owner == node.node_id && lease.expires_at_ms > now {
                lease.expires_at_ms = now + ttl;
                owned.push((lease.instance_id.clone(), lease.epoch));
            }
        }
        Ok(owned)
    }

    async fn view(&self) -> StoreResult<ClusterView> {
        let s = self.reach()?;
        let now = now_ms();
        Ok(ClusterView {
            now_ms: now,
            nodes: s
                .nodes
                .iter()
                .filter(|(_, (_, _, exp))| *exp > now)
                .map(|(id, (url, hb, exp))| NodeRecord {
                    node_id: id.clone(),
                    url: url.clone(),
                    last_heartbeat_ms: *hb,
                    expires_at_ms: *exp,
                })
                .collect(),
            leases: s.leases.values().cloned().collect(),
        })
    }

    async fn acquire(&self, instance_id: &str, node: &ClusterSettings) -> StoreResult<Option<u64>> {
        let gate = self.reach()?.acquire_gate.clone();
        if let Some(gate) = gate
            && instance_id != crate::cluster::DESK_LEASE
        {
            gate.pass().await;
        }
        let mut s = self.reach()?;
        let now = now_ms();
        let lease = s
            .leases
            .entry(instance_id.to_owned())
            .or_insert_with(|| LeaseRecord {
                instance_id: instance_id.to_owned(),
                owner: String::new(),
                epoch: 0,
                expires_at_ms: 0,
            });
        if lease.expires_at_ms > now {
            return Ok(None);
        }
        lease.owner = node.node_id.clone();
        lease.epoch += 1;
        lease.expires_at_ms = now + ms(node.lease_ttl);
        Ok(Some(lease.epoch))
    }

    async fn release(&self, node: &str, leases: &[(String, u64)]) -> StoreResult<()> {
        let mut s = self.reach()?;
        for (id, epoch) in leases {
            if let Some(lease) = s.leases.get_mut(id)
                && lease.owner == node
                && lease.epoch == *epoch
            {
                lease.expires_at_ms = 0;
            }
        }
        Ok(())
    }

    async fn delete(&self, instance_id: &str) -> StoreResult<()> {
        self.reach()?.leases.remove(instance_id);
        Ok(())
    }

    async fn leave(&self, node: &str) -> StoreResult<()> {
        self.reach()?.nodes.remove(node);
        Ok(())
    }
}

#[async_trait]
impl SessionVault for MemLeases {
    async fn load(&self, instance_id: &str) -> StoreResult<BTreeMap<String, Vec<u8>>> {
        Ok(self
            .reach()?
            .sessions
            .get(instance_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn save(
        &self,
        instance_id: &str,
        files: BTreeMap<String, Vec<u8>>,
    ) -> Result<(), VaultError> {
        let mut s = self.reach()?;
        if !self.holds(&s, instance_id) {
            self.board.count_fenced_write();
            return Err(VaultError::Fenced);
        }
        s.sessions.insert(instance_id.to_owned(), files);
        Ok(())
    }

    async fn load_keys(&self, instance_id: &str) -> StoreResult<Vec<KeyRecord>> {
        Ok(key_records(self.reach()?.keys.get(instance_id)))
    }

    async fn write_keys(&self, instance_id: &str, batch: KeyBatch) -> Result<(), VaultError> {
        let mut s = self.reach()?;
        if !self.holds(&s, instance_id) {
            self.board.count_fenced_write();
            return Err(VaultError::Fenced);
        }
        apply_key_batch(s.keys.entry(instance_id.to_owned()).or_default(), batch);
        Ok(())
    }
}

struct Node {
    runtime: Runtime,
    leases: MemLeases,
    _dir: tempfile::TempDir,
}

fn settings(id: &str) -> ClusterSettings {
    ClusterSettings {
        node_id: id.to_owned(),
        url: format!("http://{id}"),
        lease_ttl: Duration::from_millis(900),
        renew_every: Duration::from_millis(150),
        scan_every: Duration::from_millis(100),
    }
}

async fn node(id: &str, storage: Arc<MemoryStorage>, shared: Arc<Mutex<Shared>>) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let engines = Arc::new(Engines::new(
        SandboxNetwork::new(SandboxConfig::default()),
        Default::default(),
    ));
    let board = LeaseBoard::new(id);
    let leases = MemLeases {
        shared,
        cut: Arc::new(AtomicBool::new(false)),
        board: board.clone(),
    };
    let config = RuntimeConfig {
        cluster: Some(ClusterParts {
            settings: settings(id),
            store: Arc::new(leases.clone()),
            vault: Arc::new(leases.clone()),
            board,
            media: Arc::new(crate::media_store::MemoryMedia::default()),
        }),
        ..RuntimeConfig::new(storage, engines, dir.path().to_owned())
    };
    let runtime = start_runtime(config).await.expect("runtime");
    Node {
        runtime,
        leases,
        _dir: dir,
    }
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(PATIENCE, async {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        while !check() {
            tick.tick().await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

/// Leases spread the instances over both nodes, each run by exactly one; a node cut off
/// from the store stops its instances itself, before its leases expire, and the other
/// node takes them over with a higher epoch; a write of the stale node is refused and
/// counted.
#[tokio::test]
async fn a_node_cut_off_fences_itself_and_the_other_takes_over() {
    let storage = Arc::new(MemoryStorage::default());
    let shared = Arc::new(Mutex::new(Shared::default()));
    let ids: Vec<String> = (0..6).map(|i| format!("inst-{i}")).collect();
    for id in &ids {
        let instance = Instance::new(id, "owner", id, EngineKind::Sandbox, Utc::now());
        storage.create_instance(&instance).await.expect("create");
    }
    let a = node("a", storage.clone(), shared.clone()).await;
    let b = node("b", storage.clone(), shared.clone()).await;
    let runs = |n: &Node, id: &str| n.runtime.instances.runs(id);

    until(
        "every instance runs on exactly one node, both nodes busy",
        || {
            ids.iter().all(|id| runs(&a, id) != runs(&b, id))
                && ids.iter().any(|id| runs(&a, id))
                && ids.iter().any(|id| runs(&b, id))
        },
    )
    .await;
    let before: HashMap<String, (String, u64)> = {
        let s = shared.lock().expect("shared");
        s.leases
            .values()
            .map(|l| (l.instance_id.clone(), (l.owner.clone(), l.epoch)))
            .collect()
    };
    let on_a: Vec<String> = ids.iter().filter(|id| runs(&a, id)).cloned().collect();
    for id in &on_a {
        assert_eq!(a.leases.board.epoch(id), Some(before[id].1));
    }

    a.leases.cut.store(true, Ordering::SeqCst);
    // Until `a` has stopped everything, none of its instances may run on `b`, and none of
    // its leases may have expired on the store.
    until("a to stop its instances", || {
        let expired_while_running = {
            let s = shared.lock().expect("shared");
            on_a.iter().any(|id| {
                runs(&a, id)
                    && s.leases
                        .get(id)
                        .is_some_and(|l| l.expires_at_ms <= now_ms())
            })
        };
        assert!(!expired_while_running, "a ran an instance past its lease");
        for id in &on_a {
            assert!(!(runs(&a, id) && runs(&b, id)), "{id} runs on both nodes");
        }
        on_a.iter().all(|id| !runs(&a, id))
    })
    .await;
    assert!(a.leases.board.is_empty());
    assert_eq!(
        a.leases
            .board
            .counters()
            .self_fenced
            .load(Ordering::Relaxed),
        1
    );

    until("b to run every instance", || {
        ids.iter().all(|id| runs(&b, id))
    })
    .await;
    for id in &on_a {
        let epoch = b.leases.board.epoch(id).expect("b holds it");
        assert!(epoch > before[id].1, "{id}: the epoch grows");
    }
    // The stale node's session write is refused and counted.
    let refused = a.leases.save(&on_a[0], BTreeMap::new()).await;
    assert!(matches!(
        refused,
        Err(VaultError::Store(_)) | Err(VaultError::Fenced)
    ));
    a.leases.cut.store(false, Ordering::SeqCst);
    let refused = a.leases.save(&on_a[0], BTreeMap::new()).await;
    assert_eq!(refused, Err(VaultError::Fenced));
    assert!(
        a.leases
            .board
            .counters()
            .fenced_writes
            .load(Ordering::Relaxed)
            >= 1
    );

    // Healed: ownership does not flap back while b holds a fair share.
    until("a to take a share again", || {
        ids.iter().any(|id| runs(&a, id))
    })
    .await;
    until("the two nodes balanced", || {
        let on_a = ids.iter().filter(|id| runs(&a, id)).count();
        ids.iter().all(|id| runs(&a, id) != runs(&b, id)) && on_a == 3
    })
    .await;
    b.runtime.shutdown().await;
    a.runtime.shutdown().await;
}

/// A lease the store gave a node whose answer never reached it (the acquire timed out on
/// the node's side but committed): the node does not keep it alive with nothing running;
/// it releases it and the instance runs.
#[tokio::test]
async fn a_lease_taken_without_an_answer_does_not_strand_its_instance() {
    let storage = Arc::new(MemoryStorage::default());
    let shared = Arc::new(Mutex::new(Shared::default()));
    let instance = Instance::new("stray", "owner", "stray", EngineKind::Sandbox, Utc::now());
    storage.create_instance(&instance).await.expect("create");
    shared.lock().expect("shared").leases.insert(
        "stray".to_owned(),
        LeaseRecord {
            instance_id: "stray".to_owned(),
            owner: "a".to_owned(),
            epoch: 1,
            expires_at_ms: now_ms() + 60_000,
        },
    );
    let a = node("a", storage.clone(), shared.clone()).await;
    until("a runs the instance of the stray lease", || {
        a.runtime.instances.runs("stray")
    })
    .await;
    let epoch = shared.lock().expect("shared").leases["stray"].epoch;
    assert_eq!(epoch, 2, "released, then taken again under a new epoch");
    a.runtime.shutdown().await;
}

/// A node asks for the free leases it wants together, not one after another: the
/// takeover of a dead node's instances costs a few round trips, not one per instance.
#[tokio::test]
async fn a_scan_asks_for_its_leases_at_once() {
    let storage = Arc::new(MemoryStorage::default());
    let ids: Vec<String> = (0..6).map(|i| format!("inst-{i}")).collect();
    for id in &ids {
        let instance = Instance::new(id, "owner", id, EngineKind::Sandbox, Utc::now());
        storage.create_instance(&instance).await.expect("create");
    }
    let shared = Arc::new(Mutex::new(Shared {
        acquire_gate: Some(Arc::new(Gate::new(ids.len()))),
        ..Shared::default()
    }));
    let a = node("a", storage.clone(), shared.clone()).await;
    until("a runs every instance", || {
        ids.iter().all(|id| a.runtime.instances.runs(id))
    })
    .await;
    a.runtime.shutdown().await;
}

/// A clean shutdown releases every lease at once, so the other node takes the instances
/// over without waiting for them to expire.
#[tokio::test]
async fn a_shutdown_releases_the_leases() {
    let storage = Arc::new(MemoryStorage::default());
    let shared = Arc::new(Mutex::new(Shared::default()));
    let ids: Vec<String> = (0..4).map(|i| format!("inst-{i}")).collect();
    for id in &ids {
        let instance = Instance::new(id, "owner", id, EngineKind::Sandbox, Utc::now());
        storage.create_instance(&instance).await.expect("create");
    }
    let a = node("a", storage.clone(), shared.clone()).await;
    until("a runs every instance", || {
        ids.iter().all(|id| a.runtime.instances.runs(id))
    })
    .await;
    // The desk's lease too, when a has taken it by now.
    let desk = u64::from(a.leases.board.holds_desk());
    a.runtime.shutdown().await;
    {
        let s = shared.lock().expect("shared");
        assert!(!s.nodes.contains_key("a"), "a left the registry");
        for id in &ids {
            assert_eq!(s.leases[id].expires_at_ms, 0, "{id} released");
        }
    }
    assert_eq!(
        a.leases.board.counters().released.load(Ordering::Relaxed),
        4 + desk
    );
}
