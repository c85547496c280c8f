//! The instance runtime end to end on the sandbox engine and an in-memory storage.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use crate::backoff::BackoffConfig;
use crate::domain::{ContactQuery, EngineKind, EventKind, Instance, InstanceStatus};
use crate::engine::{Engines, FaultKind, SandboxConfig, SandboxControl, SandboxNetwork};
use crate::error::{DomainError, StoreError};
use crate::instance::{InstanceHandle, QrAnswer, session_dir};
use crate::runtime::{Runtime, RuntimeConfig, start_runtime};
use crate::store::{ContactStore, InstanceStore, MessageStore, Storage};
use crate::testing::MemoryStorage;

/// Longest a condition may take to come true before a test fails.
const PATIENCE: Duration = Duration::from_secs(10);

struct World {
    runtime: Runtime,
    storage: Arc<MemoryStorage>,
    dir: tempfile::TempDir,
}

async fn world(sandbox: SandboxConfig, backoff: BackoffConfig) -> World {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Arc::new(MemoryStorage::default());
    let engines = Arc::new(Engines::new(
        SandboxNetwork::new(sandbox),
        Default::default(),
    ));
    let config = RuntimeConfig {
        call_timeout: Duration::from_secs(5),
        backoff,
        ..RuntimeConfig::new(storage.clone(), engines, dir.path().to_owned())
    };
    let runtime = start_runtime(config).await.expect("runtime");
    World {
        runtime,
        storage,
        dir,
    }
}

fn quick_backoff() -> BackoffConfig {
    BackoffConfig {
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
        budget: 5,
        window: Duration::from_secs(60),
    }
}

fn instance(id: &str, engine: EngineKind) -> Instance {
    Instance {
        status: InstanceStatus::Disconnected,
        ..Instance::new(id, "u1", id, engine, Utc::now())
    }
}

impl World {
    async fn create(&self, id: &str, engine: EngineKind) -> InstanceHandle {
        let instance = instance(id, engine);
        self.storage
            .create_instance(&instance)
            .await
            .expect("store instance");
        self.runtime
            .instances
            .start(instance, false)
            .await
            .expect("start")
    }

    fn actions(&self, id: &str) -> Vec<String> {
        self.storage
            .activity_of(id)
            .into_iter()
            .map(|e| e.action)
            .collect()
    }

    fn count(&self, id: &str, action: &str) -> usize {
        self.actions(id).iter().filter(|a| *a == action).count()
    }

    async fn stored_status(&self, id: &str) -> InstanceStatus {
        self.storage
            .instance_by_id(id)
            .await
            .expect("storage")
            .expect("instance")
            .status
    }

    /// Waits until `check` holds, polling every few milliseconds.
    async fn until(&self, what: &str, mut check: impl FnMut(&World) -> bool) {
        let waited = tokio::time::timeout(PATIENCE, async {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            while !check(self) {
                tick.tick().await;
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out waiting for {what}");
    }

    async fn until_status(&self, id: &str, status: InstanceStatus) {
        self.until(&format!("{id} to be {status}"), |w| {
            w.runtime.status.get(id).map(|v| v.status) == Some(status)
        })
        .await;
    }

    /// Asks for the QR code until one is showing.
    async fn qr_code(&self, id: &str) -> String {
        let handle = self.runtime.instances.get(id).expect("handle");
        let waited = tokio::time::timeout(PATIENCE, async {
            loop {
                if let QrAnswer::Code(code) = handle.qr().await.expect("qr") {
                    return code;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        waited.expect("a QR code in time")
    }

    async fn scan(&self, id: &str, phone: &str) {
        self.qr_code(id).await;
        self.runtime
            .instances
            .get(id)
            .expect("handle")
            .sandbox(SandboxControl::Scan {
                phone: phone.into(),
            })
            .await
            .expect("scan");
        self.until_status(id, InstanceStatus::Connected).await;
    }

    async fn crash(&self, id: &str) {
        self.runtime
            .instances
            .get(id)
            .expect("handle")
            .sandbox(SandboxControl::Fault(FaultKind::Crash))
            .await
            .expect("crash fault");
    }
}

#[tokio::test]
async fn lifecycle_qr_scan_logout_qr_again() {
    let w = world(SandboxConfig::default(), quick_backoff()).await;
    let mut events = w.runtime.events.subscribe("a");
    let handle = w.create("a", EngineKind::Sandbox).await;

    let code = w.qr_code("a").await;
    assert!(code.starts_with("2@"));
    let view = handle.status().await.expect("status");
    assert_eq!(view.status, InstanceStatus::Qr);
    assert!(view.has_qr && !view.ready);

    w.scan("a", "+7 900 123-45-67").await;
    let view = handle.status().await.expect("status");
    assert!(view.ready);
    assert_eq!(view.phone.as_deref(), Some("79001234567"));
    assert_eq!(w.stored_status("a").await, InstanceStatus::Connected);
    assert!(matches!(
        handle.qr().await,
        Err(DomainError::Conflict {
            code: "already_connected",
            ..
        })
    ));
    let session = session_dir(w.dir.path(), "a").join("sandbox-session.json");
    assert!(session.exists());

    handle.logout().await.expect("logout");
    assert_eq!(
        w.runtime.status.get("a").map(|v| v.status),
        Some(InstanceStatus::LoggedOut)
    );
    assert_eq!(w.stored_status("a").await, InstanceStatus::LoggedOut);
    assert!(!session.exists());
    assert!(session_dir(w.dir.path(), "a").exists());

    assert_eq!(handle.qr().await, Ok(QrAnswer::Generating));
    w.qr_code("a").await;

    let actions = w.actions("a");
    for action in ["qr_received", "connected", "logged_out"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
    let mut kinds = Vec::new();
    while let Ok(event) = events.try_recv() {
        kinds.push((event.kind().as_str(), event.data_json()));
    }
    assert_eq!(kinds[0].0, "qr_received");
    assert_eq!(kinds[0].1["attempt"], 1);
    assert_eq!(kinds[0].1["instanceId"], "a");
    assert!(kinds.iter().any(|(k, d)| *k == "connected"
        && d["phone"] == "79001234567"
        && d.get("pushName").is_some()));
    assert!(
        kinds
            .iter()
            .any(|(k, d)| *k == "disconnected" && d["reason"] == "logout")
    );
    assert_eq!(
        w.storage.events_of("a").len(),
        kinds.len(),
        "every broadcast event is stored"
    );
    w.runtime.shutdown().await;
}

#[tokio::test]
async fn crash_restarts_with_the_session_kept() {
    let w = world(SandboxConfig::default(), quick_backoff()).await;
    w.create("a", EngineKind::Sandbox).await;
    w.scan("a", "15550000001").await;

    w.crash("a").await;
    w.until("a reconnecting entry", |w| {
        w.count("a", "reconnecting") == 1
    })
    .await;
    w.until("connected again", |w| w.count("a", "connected") == 2)
        .await;
    w.until_status("a", InstanceStatus::Connected).await;

    let activity = w.storage.activity_of("a");
    let reconnecting = activity
        .iter()
        .find(|e| e.action == "reconnecting")
        .expect("reconnecting entry");
    assert_eq!(reconnecting.details["attempt"], 1);
    assert_eq!(reconnecting.details["reason"], "sandbox fault: crash");
    assert!(reconnecting.details["delayMs"].as_u64().is_some());
    let last: Vec<_> = activity.iter().rev().take(2).map(|e| &e.action).collect();
    assert_eq!(last, ["connected", "reconnecting"]);
    assert_eq!(w.count("a", "qr_received"), 1, "no re-scan after a crash");
    assert!(w.runtime.instances.get("a").is_ok());
    w.runtime.shutdown().await;
}

#[tokio::test]
async fn disconnect_fault_reconnects_in_place() {
    let w = world(
        SandboxConfig {
            reconnect_delay: Duration::from_millis(20),
            ..SandboxConfig::default()
        },
        quick_backoff(),
    )
    .await;
    let handle = w.create("a", EngineKind::Sandbox).await;
    w.scan("a", "15550000001").await;
    handle
        .sandbox(SandboxControl::Fault(FaultKind::Disconnect))
        .await
        .expect("fault");
    w.until("connected again", |w| w.count("a", "connected") == 2)
        .await;
    let actions = w.actions("a");
    let tail: Vec<_> = actions.iter().rev().take(3).rev().collect();
    assert_eq!(tail, ["disconnected", "reconnecting", "connected"]);
    w.runtime.shutdown().await;
}

#[tokio::test]
async fn get_during_a_pending_restart_is_unavailable() {
    let w = world(
        SandboxConfig::default(),
        BackoffConfig {
            base: Duration::from_secs(60),
            max: Duration::from_secs(60),
            ..quick_backoff()
        },
    )
    .await;
    w.create("a", EngineKind::Sandbox).await;
    w.scan("a", "15550000001").await;
    w.crash("a").await;
    w.until_status("a", InstanceStatus::Reconnecting).await;
    assert_eq!(
        w.runtime.instances.get("a").map(|h| h.id().to_owned()),
        Err(DomainError::Unavailable("instance is restarting".into()))
    );
    assert!(matches!(
        w.runtime.instances.get("nope"),
        Err(DomainError::NotFound(_))
    ));
    w.until("the stored status", |w| w.count("a", "reconnecting") == 1)
        .await;
    assert_eq!(w.stored_status("a").await, InstanceStatus::Reconnecting);
    w.runtime.shutdown().await;
}

#[tokio::test]
async fn crash_storm_of_200_instances_recovers() {
    const N: usize = 200;
    let w = world(
        SandboxConfig {
            autopair: Some(Duration::from_millis(5)),
            ..SandboxConfig::default()
        },
        quick_backoff(),
    )
    .await;
    let ids: Vec<String> = (0..N).map(|i| format!("storm{i}")).collect();
    for id in &ids {
        w.create(id, EngineKind::Sandbox).await;
    }
    w.until("all connected", |w| {
        w.runtime.status.counts_by_status()["connected"] == N as u64
    })
    .await;

    for id in &ids {
        w.crash(id).await;
    }
    w.until("every instance restarted and connected", |w| {
        ids.iter()
            .all(|id| w.count(id, "reconnecting") == 1 && w.count(id, "connected") == 2)
    })
    .await;
    w.until("all connected again", |w| {
        w.runtime.status.counts_by_status()["connected"] == N as u64
    })
    .await;
    assert!(w.runtime.instances.is_alive());
    for id in &ids {
        let view = w
            .runtime
            .instances
            .get(id)
            .expect("live")
            .status()
            .await
            .expect("status");
        assert!(view.ready);
    }
    w.runtime.shutdown().await;
}

#[tokio::test]
async fn budget_exhaustion_parks_failed_until_reconnect() {
    let w = world(
        SandboxConfig::default(),
        BackoffConfig {
            budget: 2,
            ..quick_backoff()
        },
    )
    .await;
    w.create("a", EngineKind::Sandbox).await;
    w.scan("a", "15550000001").await;
    for round in 1..=2 {
        w.crash("a").await;
        w.until("connected again", |w| {
            w.count("a", "connected") == round + 1
        })
        .await;
        w.until_status("a", InstanceStatus::Connected).await;
    }
    w.crash("a").await;
    w.until_status("a", InstanceStatus::Failed).await;
    w.until("the failed entry", |w| w.count("a", "failed") == 1)
        .await;
    let failed = w
        .storage
        .activity_of("a")
        .into_iter()
        .find(|e| e.action == "failed")
        .expect("failed entry");
    assert_eq!(
        failed.details,
        json!({ "reason": "sandbox fault: crash", "restarts": 2 })
    );
    assert_eq!(w.stored_status("a").await, InstanceStatus::Failed);

    // Parked, not gone: the handle answers, and a reconnect brings it back.
    let handle = w.runtime.instances.get("a").expect("parked handle");
    assert_eq!(
        handle.status().await.expect("status").status,
        InstanceStatus::Failed
    );
    w.runtime
        .instances
        .reconnect(&instance("a", EngineKind::Sandbox))
        .await
        .expect("reconnect");
    w.until_status("a", InstanceStatus::Connected).await;

    // The budget is whole again.
    w.crash("a").await;
    w.until("restarted once more", |w| w.count("a", "connected") == 5)
        .await;
    w.runtime.shutdown().await;
}

#[tokio::test]
async fn remove_deletes_the_session_dir() {
    let w = world(SandboxConfig::default(), quick_backoff()).await;
    w.create("a", EngineKind::Sandbox).await;
    w.scan("a", "15550000001").await;
    let dir = session_dir(w.dir.path(), "a");
    assert!(dir.join("sandbox-session.json").exists());
    w.runtime.instances.remove("a").await.expect("remove");
    assert!(!dir.exists());
    assert!(matches!(
        w.runtime.instances.get("a"),
        Err(DomainError::NotFound(_))
    ));
    assert_eq!(w.runtime.status.get("a"), None);
    w.runtime.shutdown().await;
}

#[tokio::test]
async fn restore_all_reconnects_without_rescan_and_parks_the_rest() {
    let w = world(SandboxConfig::default(), quick_backoff()).await;
    let mut linked = instance("linked", EngineKind::Sandbox);
    linked.status = InstanceStatus::Connected;
    let mut out = instance("out", EngineKind::Sandbox);
    out.status = InstanceStatus::LoggedOut;
    for i in [&linked, &out] {
        w.storage.create_instance(i).await.expect("store");
    }
    let dir = session_dir(w.dir.path(), "linked");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("sandbox-session.json"),
        r#"{"phone":"15550000009","pushName":null,"pairedAt":"2024-01-01T00:00:00Z"}"#,
    )
    .expect("session");

    assert_eq!(w.runtime.instances.restore_all().await, Ok(2));
    w.until_status("linked", InstanceStatus::Connected).await;
    assert_eq!(w.count("linked", "qr_received"), 0);
    assert_eq!(
        w.runtime.status.get("out").map(|v| v.status),
        Some(InstanceStatus::LoggedOut)
    );
    let counts = w.runtime.status.counts_by_status();
    assert_eq!(counts["connected"], 1);
    assert_eq!(counts["logged_out"], 1);
    assert_eq!(counts["failed"], 0);

    let out = w.runtime.instances.get("out").expect("parked handle");
    assert!(matches!(
        out.sandbox(SandboxControl::Scan {
            phone: "15550000001".into()
        })
        .await,
        Err(DomainError::Conflict {
            code: "invalid_state",
            ..
        })
    ));
    w.runtime.shutdown().await;
    assert!(matches!(
        w.runtime.instances.get("linked"),
        Err(DomainError::Unavailable(_))
    ));
    assert!(matches!(
        w.runtime
            .instances
            .reconnect(&instance("never", EngineKind::Sandbox))
            .await,
        Err(DomainError::Unavailable(_))
    ));
    assert!(!w.runtime.instances.is_alive());
}

#[tokio::test]
async fn pair_code_links_the_instance() {
    let w = world(SandboxConfig::default(), quick_backoff()).await;
    let handle = w.create("p", EngineKind::Sandbox).await;
    assert!(matches!(
        handle.pair_code("not a phone").await,
        Err(DomainError::Invalid(_))
    ));
    let code = handle.pair_code("+7 900 123 45 67").await.expect("code");
    assert_eq!(code.len(), 9);
    // The sandbox "types the code" after a second.
    w.until_status("p", InstanceStatus::Connected).await;
    assert_eq!(
        w.runtime.status.get("p").and_then(|v| v.phone).as_deref(),
        Some("79001234567")
    );
    assert!(matches!(
        handle.pair_code("79001234567").await,
        Err(DomainError::Conflict {
            code: "already_connected",
            ..
        })
    ));
    w.runtime.shutdown().await;
}

fn inbound(id: &str, text: &str) -> SandboxControl {
    crate::engine::sandbox::text_from(id, "79005550001", Some("Ann"), text)
}

/// An inbound message is answered once it is committed: the message, its sender as a
/// contact and its `message_received` event are all stored when the answer comes, and a
/// second delivery of the same message is a success that stores nothing more.
#[tokio::test]
async fn inbound_is_answered_once_committed_with_contact_and_event() {
    let w = world(SandboxConfig::default(), quick_backoff()).await;
    let handle = w.create("in", EngineKind::Sandbox).await;
    w.scan("in", "79001110000").await;
    for n in 0..20 {
        let id = format!("IN-{n}");
        handle
            .sandbox(inbound(&id, "hello"))
            .await
            .expect("inbound");
        // No waiting: the answer came after the commit.
        let stored = w.storage.message_by_id("in", &id).await.expect("read");
        assert!(stored.is_some(), "{id} answered but not stored");
        let events = w.storage.events_of("in");
        assert!(
            events.iter().any(|e| e.kind() == EventKind::MessageReceived
                && e.data_json()["messageId"] == id.as_str()),
            "{id} answered but its event is not stored"
        );
    }
    handle
        .sandbox(inbound("IN-0", "again"))
        .await
        .expect("redelivery");
    let received = |w: &World| {
        w.storage
            .events_of("in")
            .iter()
            .filter(|e| e.kind() == EventKind::MessageReceived)
            .count()
    };
    assert_eq!(
        received(&w),
        20,
        "a redelivered message made a second event"
    );
    let contacts = w
        .storage
        .list_contacts(
            "in",
            &ContactQuery {
                limit: 10,
                ..ContactQuery::default()
            },
        )
        .await
        .expect("contacts");
    assert_eq!(contacts.total, 1);
    assert_eq!(contacts.items[0].push_name.as_deref(), Some("Ann"));
    w.runtime.shutdown().await;
}

/// When the message cannot be stored, its caller hears so instead of a success.
#[tokio::test]
async fn inbound_that_cannot_be_stored_is_not_answered_with_success() {
    let w = world(SandboxConfig::default(), quick_backoff()).await;
    let handle = w.create("down", EngineKind::Sandbox).await;
    w.scan("down", "79001110001").await;
    w.storage.close().await;
    let answer = handle.sandbox(inbound("LOST-1", "hello")).await;
    assert!(
        matches!(answer, Err(DomainError::Store(StoreError::Unavailable(_)))),
        "{answer:?}"
    );
    w.runtime.shutdown().await;
}

/// An event raised outside the actor (a limit reached, a webhook paused) while a message
/// write of the actor is still queued takes its turn behind it: stored and announced
/// after it, with a later id. Published on its own it would overtake the write, and a
/// live stream, which skips an id not past the last it sent, would drop the message's
/// event.
#[tokio::test]
async fn an_event_raised_elsewhere_waits_for_the_writes_queued_before_it() {
    use crate::domain::event::{LimitExceeded, LimitUsage};
    use crate::domain::{Event, LimitPeriod};

    let w = world(SandboxConfig::default(), quick_backoff()).await;
    let handle = w.create("q", EngineKind::Sandbox).await;
    w.scan("q", "79001110002").await;
    let mut live = w.runtime.events.subscribe("q");
    w.storage.hold_writes();
    let sent = tokio::spawn({
        let handle = handle.clone();
        async move { handle.sandbox(inbound("HELD-1", "hello")).await }
    });
    w.until("the message's write to be queued", |w| {
        w.storage.held_writes() == 1
    })
    .await;
    let limit = Event::LimitExceeded(LimitExceeded {
        exceeded_limits: vec!["maxMessagesSent".into()],
        usage: LimitUsage::default(),
        period: LimitPeriod::Day,
    });
    w.runtime.events.raise("q", limit).await.expect("raise");
    // The actor holds the event until the write before it commits.
    let stored = |w: &World, kind: EventKind| {
        w.storage
            .events_of("q")
            .iter()
            .filter(|e| e.kind() == kind)
            .count()
    };
    assert_eq!(
        stored(&w, EventKind::LimitExceeded),
        0,
        "stored ahead of the queued write"
    );
    w.storage.release_writes();
    sent.await.expect("join").expect("inbound");

    let mut announced = Vec::new();
    let waited = tokio::time::timeout(PATIENCE, async {
        while !announced
            .iter()
            .any(|e: &crate::domain::InstanceEvent| e.kind() == EventKind::LimitExceeded)
        {
            announced.push(live.recv().await.expect("live event"));
        }
    })
    .await;
    assert!(waited.is_ok(), "the raised event was not announced");
    let kinds: Vec<EventKind> = announced
        .iter()
        .map(|e| e.kind())
        .filter(|k| matches!(k, EventKind::MessageReceived | EventKind::LimitExceeded))
        .collect();
    assert_eq!(
        kinds,
        [EventKind::MessageReceived, EventKind::LimitExceeded]
    );
    assert!(
        announced.windows(2).all(|p| p[0].id < p[1].id),
        "announced out of id order"
    );
    let events = w.storage.events_of("q");
    assert!(
        events.windows(2).all(|p| p[0].id < p[1].id),
        "stored out of id order"
    );
    assert_eq!(stored(&w, EventKind::LimitExceeded), 1);
    w.runtime.shutdown().await;
}

/// Without a running actor, a raised event is published at once.
#[tokio::test]
async fn an_event_raised_for_an_instance_not_running_is_published_at_once() {
    use crate::domain::Event;
    use crate::domain::event::{PauseReason, WebhookPaused};

    let w = world(SandboxConfig::default(), quick_backoff()).await;
    let mut live = w.runtime.events.subscribe("idle");
    let paused = Event::WebhookPaused(WebhookPaused {
        reason: PauseReason::Manual,
        failing_since: None,
    });
    w.runtime.events.raise("idle", paused).await.expect("raise");
    let stored = w.storage.events_of("idle");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].kind(), EventKind::WebhookPaused);
    let got = live.try_recv().expect("announced");
    assert_eq!(got.id, stored[0].id);
    w.runtime.shutdown().await;
}
