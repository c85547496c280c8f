//! The supervision tree end to end: the root supervisor repairs what dies, and shutdown
//! stops everything.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::{ActorCell, ActorStatus};

use crate::backoff::BackoffConfig;
use crate::domain::instance::SYSTEM_ACTIVITY;
use crate::domain::{EngineKind, Instance, InstanceStatus};
use crate::engine::{Engines, SandboxConfig, SandboxControl, SandboxNetwork};
use crate::error::DomainError;
use crate::instance::{InstanceHandle, InstancesHandle, QrAnswer, session_dir};
use crate::runtime::{Runtime, RuntimeConfig, start_runtime};
use crate::store::{InstanceStore, StatsStore};
use crate::testing::MemoryStorage;

/// Longest a condition may take to come true before a test fails.
const PATIENCE: Duration = Duration::from_secs(10);

struct World {
    runtime: Runtime,
    storage: Arc<MemoryStorage>,
    network: SandboxNetwork,
    dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Arc::new(MemoryStorage::default());
    let network = SandboxNetwork::new(SandboxConfig::default());
    let engines = Arc::new(Engines::new(network.clone(), Default::default()));
    let config = RuntimeConfig {
        call_timeout: Duration::from_secs(5),
        backoff: BackoffConfig {
            base: Duration::from_millis(10),
            max: Duration::from_millis(50),
            budget: 5,
            window: Duration::from_secs(60),
        },
        ..RuntimeConfig::new(storage.clone(), engines, dir.path().to_owned())
    };
    let runtime = start_runtime(config).await.expect("runtime");
    World {
        runtime,
        storage,
        network,
        dir,
    }
}

fn instance(id: &str) -> Instance {
    Instance {
        status: InstanceStatus::Disconnected,
        ..Instance::new(id, "u1", id, EngineKind::Sandbox, Utc::now())
    }
}

/// Waits until `check` holds, polling every few milliseconds.
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

impl World {
    fn instances(&self) -> &InstancesHandle {
        &self.runtime.instances
    }

    async fn create(&self, id: &str) -> InstanceHandle {
        let instance = instance(id);
        self.storage
            .create_instance(&instance)
            .await
            .expect("store instance");
        self.instances()
            .start(instance, false)
            .await
            .expect("start")
    }

    fn status(&self, id: &str) -> Option<InstanceStatus> {
        self.runtime.status.get(id).map(|v| v.status)
    }

    fn count(&self, id: &str, action: &str) -> usize {
        self.storage
            .activity_of(id)
            .iter()
            .filter(|e| e.action == action)
            .count()
    }

    async fn scan(&self, handle: &InstanceHandle, phone: &str) {
        let waited = tokio::time::timeout(PATIENCE, async {
            while !matches!(handle.qr().await, Ok(QrAnswer::Code(_))) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        waited.expect("a QR code in time");
        handle
            .sandbox(SandboxControl::Scan {
                phone: phone.into(),
            })
            .await
            .expect("scan");
        until("connected", || {
            self.status(handle.id()) == Some(InstanceStatus::Connected)
        })
        .await;
    }

    fn supervisor(&self) -> ActorCell {
        self.instances().supervisor_cell().expect("a supervisor")
    }
}

/// Kills (or stops) the instance supervisor under two connected instances, a
/// logged-out one and a stored one the server never started, then checks the
/// repair.
async fn supervisor_death_is_repaired(kill: bool) {
    let w = world().await;
    // A clone taken before the restart, like the one in the server's HTTP state.
    let instances = w.instances().clone();
    let a = w.create("a").await;
    let b = w.create("b").await;
    let c = w.create("c").await;
    w.scan(&a, "15550000001").await;
    w.scan(&b, "15550000002").await;
    c.logout().await.expect("logout");
    let mut d = instance("d");
    d.status = InstanceStatus::Connected;
    w.storage.create_instance(&d).await.expect("store d");

    let old = w.supervisor();
    let old_actors = old.get_children();
    assert_eq!(old_actors.len(), 3);
    if kill {
        old.kill();
    } else {
        old.stop(Some("test".into()));
    }

    until("a new supervisor with the instances restored", || {
        instances
            .supervisor_cell()
            .is_some_and(|cell| cell.get_id() != old.get_id())
            && ["a", "b"]
                .iter()
                .all(|id| w.status(id) == Some(InstanceStatus::Connected))
            && ["a", "b", "c"].iter().all(|id| instances.get(id).is_ok())
    })
    .await;
    assert!(instances.is_alive());
    let new = w.supervisor();
    for actor in &old_actors {
        assert_eq!(actor.get_status(), ActorStatus::Stopped, "{actor:?}");
    }

    // Each instance runs exactly once: one actor each under the new supervisor, none
    // of the old ones, and the sandbox network routes each phone to its instance.
    let children = new.get_children();
    assert_eq!(children.len(), 3, "{children:?}");
    assert!(
        children
            .iter()
            .all(|child| old_actors.iter().all(|o| o.get_id() != child.get_id()))
    );
    assert_eq!(w.network.instance_for("15550000001").as_deref(), Some("a"));
    assert_eq!(w.network.instance_for("15550000002").as_deref(), Some("b"));

    // Connected again from the stored session, without a re-scan.
    assert!(
        session_dir(w.dir.path(), "a")
            .join("sandbox-session.json")
            .exists()
    );
    for id in ["a", "b"] {
        assert_eq!(w.count(id, "connected"), 2, "{id}");
        assert_eq!(w.count(id, "qr_received"), 1, "{id}");
        let view = instances
            .get(id)
            .expect("live")
            .status()
            .await
            .expect("status");
        assert!(view.ready, "{id}: {view:?}");
    }
    // Old handles reach the dead actor and say so; new ones work.
    assert!(matches!(a.status().await, Err(DomainError::Unavailable(_))));
    assert_eq!(w.status("c"), Some(InstanceStatus::LoggedOut));
    let c = instances.get("c").expect("parked handle");
    assert_eq!(
        c.status().await.expect("status").status,
        InstanceStatus::LoggedOut
    );
    // Only what the dead supervisor ran comes back.
    assert!(matches!(instances.get("d"), Err(DomainError::NotFound(_))));

    // The handle works through the new supervisor: start, idempotent start, remove.
    instances.start(d, true).await.expect("start d");
    assert!(instances.get("d").is_ok());
    let again = instances
        .start(instance("a"), false)
        .await
        .expect("start a");
    assert!(again.status().await.expect("status").ready);
    assert_eq!(new.get_children().len(), 4);
    instances.remove("b").await.expect("remove b");
    assert!(matches!(instances.get("b"), Err(DomainError::NotFound(_))));
    assert!(!w.network.is_registered("15550000002"));

    // A shutdown is no failure: nothing is respawned.
    w.runtime.shutdown().await;
    assert!(!instances.is_alive());
    assert_eq!(w.runtime.root_cell().get_status(), ActorStatus::Stopped);
    assert_eq!(
        instances.supervisor_cell().map(|cell| cell.get_id()),
        Some(new.get_id())
    );
    assert!(new.get_children().is_empty());
    assert!(!w.network.is_registered("15550000001"));
}

#[tokio::test]
async fn killed_instance_supervisor_is_respawned_and_restores() {
    supervisor_death_is_repaired(true).await;
}

#[tokio::test]
async fn stopped_instance_supervisor_is_respawned_and_restores() {
    supervisor_death_is_repaired(false).await;
}

#[tokio::test]
async fn a_killed_service_is_respawned_and_its_restart_logged() {
    let w = world().await;
    let stats = w.runtime.stats.clone();
    let old = stats.cell().expect("a stats counter");
    old.kill();
    // Counted while no counter runs: they wait for the next one.
    let call = crate::domain::Usage {
        api_calls: 1,
        ..Default::default()
    };
    for _ in 0..3 {
        stats.add("u1", Some("i1"), call);
    }
    until("a new stats counter", || {
        stats
            .cell()
            .is_some_and(|cell| cell.get_id() != old.get_id())
    })
    .await;
    stats.flush().await.expect("the new counter answers");
    let counted = w
        .storage
        .usage(&crate::domain::UsageFilter {
            user_id: Some("u1".into()),
            ..Default::default()
        })
        .await
        .expect("usage");
    assert_eq!(
        counted.iter().map(|(_, u)| u.api_calls).sum::<u64>(),
        3,
        "{counted:?}"
    );
    let restarts = w.storage.activity_of(SYSTEM_ACTIVITY);
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert_eq!(restarts[0].action, "actor_restarted");
    assert_eq!(restarts[0].details["actor"], "stats counter");
    // Stopping on purpose is no death: nothing more is logged.
    w.runtime.shutdown().await;
    assert_eq!(w.storage.activity_of(SYSTEM_ACTIVITY).len(), 1);
    assert!(
        stats
            .cell()
            .is_none_or(|cell| cell.get_status() != ActorStatus::Running)
    );
}

#[tokio::test]
async fn shutdown_stops_the_whole_tree() {
    let w = world().await;
    let a = w.create("a").await;
    w.scan(&a, "15550000001").await;
    let supervisor = w.supervisor();
    let actor = supervisor.get_children().pop().expect("instance actor");
    w.runtime.shutdown().await;
    assert_eq!(actor.get_status(), ActorStatus::Stopped);
    assert_eq!(supervisor.get_status(), ActorStatus::Stopped);
    assert_eq!(w.runtime.root_cell().get_status(), ActorStatus::Stopped);
    assert!(!w.network.is_registered("15550000001"));
    // Stopped on purpose: the session is kept, the stored status too, for the next
    // process to restore.
    assert!(
        session_dir(w.dir.path(), "a")
            .join("sandbox-session.json")
            .exists()
    );
    let stored = w
        .storage
        .instance_by_id("a")
        .await
        .expect("storage")
        .expect("instance");
    assert_eq!(stored.status, InstanceStatus::Connected);
    // A second shutdown is harmless.
    w.runtime.shutdown().await;
}
