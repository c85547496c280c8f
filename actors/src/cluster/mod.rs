//! Cluster mode: several gateway nodes share one MongoDB replica set, and each instance
//! runs on exactly one of them, the holder of its *lease*.
//!
//! - [`LeaseStore`]: the seam to the shared database (node heartbeats, instance leases
//!   taken on the server's clock, renewed in one update per node). The server implements
//!   it on MongoDB.
//! - [`SessionVault`]: where a session's key material lives so that another node can take
//!   the instance over without a new QR code; every write is fenced by the lease epoch.
//! - [`LeaseBoard`]: the leases this node holds, readable without asking an actor.
//! - [`placement`]: which node should own which free instance (rendezvous hashing with a
//!   load cap), computed the same way on every node.
//! - `manager.rs`: the `LeaseManager` actor that renews, fences itself, acquires and
//!   releases leases, and starts or stops the instance actors accordingly.
//!
//! One lease is not an instance's: [`DESK_LEASE`], held by the node that serves the WABA
//! operator desk. Whichever node finds it free takes it; it is renewed, lost and fenced
//! with the others.

mod manager;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

pub use manager::LeaseManagerHandle;
pub(crate) use manager::{LeaseArgs, spawn, vacate};

pub use crate::store::{KeyBatch, KeyRecord, KeyWrite, SessionVault, VaultError};

use crate::error::StoreResult;

/// The lease of the WABA operator desk: the node holding it serves every `/api/waba`
/// call, so one node at a time runs the desk's chat actors and its live feed and
/// receives Meta's webhooks. Never an instance id (those are UUIDs).
pub const DESK_LEASE: &str = "$desk";

/// Who this node is and how its leases are timed.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    pub node_id: String,
    /// Where the other nodes reach this one (forwarded calls).
    pub url: String,
    /// How long a lease (and a heartbeat) stays valid on the server after its renewal.
    pub lease_ttl: Duration,
    /// How often this node renews its leases and its heartbeat.
    pub renew_every: Duration,
    /// How often this node looks for free instances to take.
    pub scan_every: Duration,
}

impl ClusterSettings {
    /// How long after a renewal was *sent* this node stops its instances if no later
    /// renewal succeeded: one renewal period before the lease can expire on the server,
    /// which leaves that long for the instances to stop.
    pub fn fence_after(&self) -> Duration {
        self.lease_ttl.saturating_sub(self.renew_every)
    }
}

/// A live node, as the registry shows it. Times are the database server's, in ms since
/// the Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub node_id: String,
    pub url: String,
    pub last_heartbeat_ms: i64,
    pub expires_at_ms: i64,
}

/// One instance's lease. `epoch` grows by one at every change of hands: the fencing token.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRecord {
    pub instance_id: String,
    pub owner: String,
    pub epoch: u64,
    pub expires_at_ms: i64,
}

/// Nodes and leases as read at one moment of the server's clock.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterView {
    pub now_ms: i64,
    /// Nodes whose heartbeat has not expired.
    pub nodes: Vec<NodeRecord>,
    /// Every lease, expired or not.
    pub leases: Vec<LeaseRecord>,
}

impl ClusterView {
    /// The unexpired lease of `instance_id`, if any.
    pub fn valid_lease(&self, instance_id: &str) -> Option<&LeaseRecord> {
        self.leases
            .iter()
            .find(|l| l.instance_id == instance_id && l.expires_at_ms > self.now_ms)
    }
}

/// The shared database's side of cluster mode. Every lease time is the database server's
/// clock, never a node's.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Writes this node's heartbeat (valid for `ttl`), renews every unexpired lease it
    /// owns in one update, and returns the leases it still owns: `(instance, epoch)`.
    async fn renew(&self, node: &ClusterSettings) -> StoreResult<Vec<(String, u64)>>;
    /// Live nodes and every lease.
    async fn view(&self) -> StoreResult<ClusterView>;
    /// Takes the lease of `instance_id` for `node` if it is free (never taken, expired or
    /// released), raising its epoch. Returns the new epoch, or None when another node
    /// holds it.
    async fn acquire(&self, instance_id: &str, node: &ClusterSettings) -> StoreResult<Option<u64>>;
    /// Gives leases up at once (expired now), if `node` still holds them at that epoch.
    async fn release(&self, node: &str, leases: &[(String, u64)]) -> StoreResult<()>;
    /// Forgets the lease of a deleted instance.
    async fn delete(&self, instance_id: &str) -> StoreResult<()>;
    /// Removes this node from the registry (clean shutdown).
    async fn leave(&self, node: &str) -> StoreResult<()>;
}

/// The leases this node holds, with their epochs; shared by the lease manager (writer),
/// the session vault (fencing) and the HTTP edge (`/status`, metrics). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LeaseBoard {
    node_id: Arc<String>,
    held: Arc<RwLock<HashMap<String, u64>>>,
    counters: Arc<LeaseCounters>,
}

/// What the lease manager counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct LeaseCounters {
    /// Renewals the database confirmed (every lease and the heartbeat written).
    pub renewals: AtomicU64,
    pub acquired: AtomicU64,
    pub lost: AtomicU64,
    pub released: AtomicU64,
    /// Times this node stopped every instance because it could not renew in time.
    pub self_fenced: AtomicU64,
    /// Session writes refused because the lease had changed hands.
    pub fenced_writes: AtomicU64,
}

impl LeaseBoard {
    pub fn new(node_id: &str) -> Self {
        LeaseBoard {
            node_id: Arc::new(node_id.to_owned()),
            ..LeaseBoard::default()
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The epoch of this node's lease on `instance_id`, if it holds one.
    pub fn epoch(&self, instance_id: &str) -> Option<u64> {
        self.read().get(instance_id).copied()
    }

    /// How many leases this node holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// How many instances' leases this node holds (the desk's left out).
    pub fn instances(&self) -> usize {
        let held = self.read();
        held.len() - usize::from(held.contains_key(DESK_LEASE))
    }

    /// Whether this node serves the operator desk.
    pub fn holds_desk(&self) -> bool {
        self.read().contains_key(DESK_LEASE)
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    pub fn counters(&self) -> &LeaseCounters {
        &self.counters
    }

    /// Records a lease the lease manager just took, and counts it.
    fn took(&self, instance_id: &str, epoch: u64) {
        self.insert(instance_id, epoch);
        self.counters.acquired.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a session write refused by the fence.
    pub fn count_fenced_write(&self) {
        self.counters.fenced_writes.fetch_add(1, Ordering::Relaxed);
    }

    fn held(&self) -> Vec<(String, u64)> {
        self.read().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Records a lease this node took (the lease manager does, once the database gave
    /// it; tests of the fenced stores too).
    pub fn insert(&self, instance_id: &str, epoch: u64) {
        self.held
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(instance_id.to_owned(), epoch);
    }

    fn remove(&self, instance_id: &str) {
        self.held
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(instance_id);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, u64>> {
        self.held.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The rendezvous score of `node` for `instance`: the node with the highest score is the
/// instance's first choice. The same on every node and every build (SHA-256, not the
/// process-seeded std hasher).
pub fn score(node: &str, instance: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(node.as_bytes())
        .chain_update([0u8])
        .chain_update(instance.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// What one node should do after a scan.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Free instances this node should take now.
    pub take: Vec<String>,
    /// Free instances meant for another live node; this node takes them only if they
    /// stay free for a while (that node may be dying).
    pub others: Vec<String>,
    /// One instance this node should give up, being over its share while another node
    /// is under it.
    pub give_up: Option<String>,
}

/// Which free instances `me` should take, computed identically by every node from the
/// same view: instances are spread by rendezvous hashing, each node holding at most
/// `ceil(instances / live nodes)` (so with n nodes that see the same view, loads differ by
/// at most n − 1, and by much less in practice). Instances already validly leased stay where they are (they move
/// little); only a node over its share gives one up, while another is under it.
pub fn placement(me: &str, view: &ClusterView, instances: &[String]) -> Plan {
    let mut live: Vec<&str> = view.nodes.iter().map(|n| n.node_id.as_str()).collect();
    if !live.contains(&me) {
        live.push(me);
    }
    live.sort_unstable();
    live.dedup();
    let cap = instances.len().div_ceil(live.len().max(1));
    let mut load: HashMap<&str, usize> = live.iter().map(|n| (*n, 0)).collect();
    let mut free = Vec::new();
    let mut mine = Vec::new();
    for id in instances {
        match view.valid_lease(id) {
            Some(lease) => {
                if let Some(n) = load.get_mut(lease.owner.as_str()) {
                    *n += 1;
                }
                if lease.owner == me {
                    mine.push(id.as_str());
                }
            }
            None => free.push(id.as_str()),
        }
    }
    free.sort_unstable();
    let mut plan = Plan::default();
    for id in free {
        let mut ranked = live.clone();
        ranked.sort_by_key(|node| std::cmp::Reverse(score(node, id)));
        let target = ranked
            .iter()
            .copied()
            .find(|node| load.get(node).copied().unwrap_or(0) < cap)
            .or_else(|| ranked.first().copied());
        if let Some(target) = target {
            if let Some(n) = load.get_mut(target) {
                *n += 1;
            }
            if target == me {
                plan.take.push(id.to_owned());
            } else {
                plan.others.push(id.to_owned());
            }
        }
    }
    let my_load = load.get(me).copied().unwrap_or(0);
    let someone_under = live
        .iter()
        .any(|n| *n != me && load.get(n).copied().unwrap_or(0) < cap);
    if my_load > cap && someone_under && plan.take.is_empty() {
        // The instance this node likes least goes first.
        plan.give_up = mine
            .iter()
            .min_by_key(|id| score(me, id))
            .map(|id| (*id).to_owned());
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeRecord {
        NodeRecord {
            node_id: id.into(),
            url: format!("http://{id}"),
            last_heartbeat_ms: 0,
            expires_at_ms: 10_000,
        }
    }

    fn view(nodes: &[&str], leases: &[(&str, &str, i64)]) -> ClusterView {
        ClusterView {
            now_ms: 1_000,
            nodes: nodes.iter().map(|n| node(n)).collect(),
            leases: leases
                .iter()
                .map(|(i, o, exp)| LeaseRecord {
                    instance_id: (*i).into(),
                    owner: (*o).into(),
                    epoch: 1,
                    expires_at_ms: *exp,
                })
                .collect(),
        }
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("instance-{i:03}")).collect()
    }

    #[test]
    fn every_free_instance_gets_exactly_one_node_and_loads_are_even() {
        let nodes = ["n1", "n2", "n3"];
        let v = view(&nodes, &[]);
        for count in [1usize, 5, 12, 100] {
            let instances = ids(count);
            let plans: Vec<Plan> = nodes.iter().map(|n| placement(n, &v, &instances)).collect();
            let mut owners: HashMap<&String, usize> = HashMap::new();
            for plan in &plans {
                for id in &plan.take {
                    *owners.entry(id).or_default() += 1;
                }
            }
            assert_eq!(owners.len(), count, "every instance is taken");
            assert!(owners.values().all(|n| *n == 1), "by exactly one node");
            // Nobody above its share, so with three nodes loads differ by at most 2.
            let loads: Vec<usize> = plans.iter().map(|p| p.take.len()).collect();
            let cap = count.div_ceil(3);
            assert!(loads.iter().all(|l| *l <= cap), "{count}: {loads:?}");
            let (min, max) = (loads.iter().min(), loads.iter().max());
            assert!(
                max.zip(min).is_some_and(|(a, b)| a - b <= 2),
                "{count}: {loads:?}"
            );
        }
    }

    #[test]
    fn held_leases_stay_and_a_dead_owners_instances_spread_over_the_survivors() {
        let instances = ids(12);
        // n3 died: its leases expired (at 500 < now 1000), n1 and n2 hold four each.
        let leases: Vec<(&str, &str, i64)> = instances
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let (owner, exp) = match i % 3 {
                    0 => ("n1", 5_000),
                    1 => ("n2", 5_000),
                    _ => ("n3", 500),
                };
                (id.as_str(), owner, exp)
            })
            .collect();
        let v = view(&["n1", "n2"], &leases);
        let p1 = placement("n1", &v, &instances);
        let p2 = placement("n2", &v, &instances);
        let mut taken: Vec<&String> = p1.take.iter().chain(&p2.take).collect();
        taken.sort();
        let orphaned: Vec<&String> = instances.iter().skip(2).step_by(3).collect();
        assert_eq!(taken, orphaned, "only the dead node's instances move");
        assert_eq!(p1.take.len(), 2);
        assert_eq!(p2.take.len(), 2);
        assert_eq!(p1.give_up, None);
    }

    #[test]
    fn an_overloaded_node_gives_one_up_only_while_another_is_under_its_share() {
        let instances = ids(12);
        let leases: Vec<(&str, &str, i64)> = instances
            .iter()
            .map(|id| (id.as_str(), "n1", 5_000))
            .collect();
        let alone = view(&["n1"], &leases);
        assert_eq!(placement("n1", &alone, &instances).give_up, None);
        let joined = view(&["n1", "n2", "n3"], &leases);
        let plan = placement("n1", &joined, &instances);
        assert!(plan.give_up.is_some(), "{plan:?}");
        assert!(plan.take.is_empty());
        // A balanced cluster gives nothing up.
        let balanced: Vec<(&str, &str, i64)> = instances
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), ["n1", "n2", "n3"][i % 3], 5_000))
            .collect();
        let v = view(&["n1", "n2", "n3"], &balanced);
        for n in ["n1", "n2", "n3"] {
            assert_eq!(placement(n, &v, &instances), Plan::default());
        }
    }

    #[test]
    fn scores_are_stable_across_processes() {
        // Fixed values: a change would move every instance of a running cluster at the
        // next rolling restart.
        assert_eq!(score("n1", "a"), score("n1", "a"));
        assert_ne!(score("n1", "a"), score("n2", "a"));
        assert_ne!(score("n1a", ""), score("n1", "a"), "the separator counts");
    }
}
