//! The storage suite: every backend of the storage seam must pass these same checks.
//! `storage_suite!` instantiates one test per check for a backend constructor.

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};
use wagate_actors::domain::{
    ActivityEntry, ActivityQuery, EngineKind, EventQuery, Instance, InstanceEvent, InstanceStatus,
    LimitPeriod, Limits, Role, User, WebhookSettings, new_id,
};
use wagate_actors::error::StoreError;
use wagate_actors::storage::DynStorage;

fn user(email: &str, role: Role) -> User {
    let now = Utc::now();
    User {
        id: new_id(),
        email: email.to_owned(),
        password_hash: "$argon2id$dummy".into(),
        first_name: "First".into(),
        last_name: "Last".into(),
        role,
        owner_id: None,
        active: true,
        api_key_hash: format!("hash-{}", new_id()),
        api_key_sealed: "sealed".into(),
        created_at: now,
        updated_at: now,
    }
}

fn instance(user_id: &str) -> Instance {
    let now = Utc::now();
    Instance {
        id: new_id(),
        user_id: user_id.to_owned(),
        name: "Main".into(),
        description: Some("desc".into()),
        engine: EngineKind::Sandbox,
        status: InstanceStatus::Connecting,
        phone: None,
        webhook_url: Some("https://example.com/hook".into()),
        webhook_enabled: true,
        webhook: WebhookSettings {
            secret: Some("s3cret".into()),
            headers: BTreeMap::from([("X-A".to_string(), "1".to_string())]),
            ..WebhookSettings::default()
        },
        limits: Some(Limits {
            max_messages_sent: Some(10),
            max_api_calls: None,
            period: LimitPeriod::Day,
        }),
        last_activity: None,
        // Millisecond precision is what every backend keeps.
        created_at: Utc
            .timestamp_millis_opt(now.timestamp_millis())
            .single()
            .expect("ts"),
        updated_at: Utc
            .timestamp_millis_opt(now.timestamp_millis())
            .single()
            .expect("ts"),
    }
}

pub async fn users_crud(s: DynStorage) {
    let mut u = user("Case@Example.com", Role::User);
    u.created_at = Utc
        .timestamp_millis_opt(u.created_at.timestamp_millis())
        .single()
        .expect("ts");
    u.updated_at = u.created_at;
    s.create_user(&u).await.expect("create");
    assert_eq!(s.user_by_id(&u.id).await.expect("get"), Some(u.clone()));
    assert_eq!(
        s.user_by_email("case@example.COM")
            .await
            .expect("by email")
            .map(|x| x.id),
        Some(u.id.clone())
    );
    assert_eq!(
        s.user_by_api_key_hash(&u.api_key_hash)
            .await
            .expect("by key")
            .map(|x| x.id),
        Some(u.id.clone())
    );
    assert_eq!(s.user_by_api_key_hash("nope").await.expect("by key"), None);

    let dup = user("case@example.com", Role::User);
    assert!(matches!(
        s.create_user(&dup).await,
        Err(StoreError::Conflict(_))
    ));

    let mut changed = u.clone();
    changed.first_name = "Changed".into();
    changed.role = Role::Admin;
    changed.api_key_hash = "new-hash".into();
    assert!(s.update_user(&changed).await.expect("update"));
    let got = s.user_by_id(&u.id).await.expect("get").expect("exists");
    assert_eq!(
        (got.first_name.as_str(), got.role),
        ("Changed", Role::Admin)
    );
    assert_eq!(
        s.user_by_api_key_hash(&u.api_key_hash)
            .await
            .expect("old key"),
        None
    );
    assert_eq!(s.count_admins().await.expect("count"), 1);

    let ghost = user("ghost@example.com", Role::User);
    assert!(!s.update_user(&ghost).await.expect("update missing"));
    assert!(s.delete_user(&u.id).await.expect("delete"));
    assert!(!s.delete_user(&u.id).await.expect("delete again"));
    assert_eq!(s.user_by_id(&u.id).await.expect("get"), None);
}

pub async fn users_paging(s: DynStorage) {
    for i in 0..5 {
        s.create_user(&user(&format!("u{i}@example.com"), Role::User))
            .await
            .expect("create");
    }
    let page = s.list_users(2, 1).await.expect("list");
    assert_eq!(page.total, 5);
    let emails: Vec<_> = page.items.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(emails, ["u1@example.com", "u2@example.com"]);
    assert!(s.list_users(10, 10).await.expect("list").items.is_empty());
}

pub async fn instances_crud(s: DynStorage) {
    let a = instance("user-a");
    let b = instance("user-b");
    s.create_instance(&a).await.expect("create a");
    s.create_instance(&b).await.expect("create b");
    assert_eq!(s.instance_by_id(&a.id).await.expect("get"), Some(a.clone()));
    assert_eq!(
        s.list_instances(Some("user-a")).await.expect("list").len(),
        1
    );
    assert_eq!(s.list_instances(None).await.expect("list all").len(), 2);

    let at = Utc
        .timestamp_millis_opt(Utc::now().timestamp_millis())
        .single()
        .expect("ts");
    s.set_instance_status(&a.id, InstanceStatus::Connected, Some("79001234567"), at)
        .await
        .expect("status");
    let got = s.instance_by_id(&a.id).await.expect("get").expect("exists");
    assert_eq!(got.status, InstanceStatus::Connected);
    assert_eq!(got.phone.as_deref(), Some("79001234567"));
    assert_eq!(got.last_activity, Some(at));
    // A status change without a phone keeps the known phone.
    s.set_instance_status(&a.id, InstanceStatus::Disconnected, None, at)
        .await
        .expect("status");
    let got = s.instance_by_id(&a.id).await.expect("get").expect("exists");
    assert_eq!(got.phone.as_deref(), Some("79001234567"));

    let mut edited = got.clone();
    edited.name = "Renamed".into();
    edited.webhook.notify_read = true;
    edited.limits = None;
    // update_instance must not clobber the status written by the actor.
    edited.status = InstanceStatus::Connecting;
    assert!(s.update_instance(&edited).await.expect("update"));
    let got = s.instance_by_id(&a.id).await.expect("get").expect("exists");
    assert_eq!(got.name, "Renamed");
    assert!(got.webhook.notify_read);
    assert_eq!(got.limits, None);
    assert_eq!(got.status, InstanceStatus::Disconnected);

    s.append_activity(&ActivityEntry::new(&a.id, "created", serde_json::json!({})))
        .await
        .expect("activity");
    s.append_event(&InstanceEvent::new(
        &a.id,
        "connected",
        serde_json::json!({}),
    ))
    .await
    .expect("event");
    assert!(s.delete_instance(&a.id).await.expect("delete"));
    assert!(!s.delete_instance(&a.id).await.expect("delete again"));
    assert_eq!(s.instance_by_id(&a.id).await.expect("get"), None);
    let q = ActivityQuery {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        s.list_activity(&a.id, &q).await.expect("activity").total,
        0,
        "activity deleted with it"
    );
    let (events, _) = s
        .list_events(
            &a.id,
            &EventQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("events");
    assert!(events.is_empty(), "events deleted with it");
    assert!(
        s.instance_by_id(&b.id).await.expect("get").is_some(),
        "others untouched"
    );
}

pub async fn activity_filters(s: DynStorage) {
    let base = Utc
        .with_ymd_and_hms(2024, 1, 1, 12, 0, 0)
        .single()
        .expect("date");
    let actions = [
        "created",
        "qr_received",
        "connected",
        "disconnected",
        "connected",
    ];
    for (i, action) in actions.iter().enumerate() {
        let mut e = ActivityEntry::new("inst", action, serde_json::json!({"n": i}));
        e.created_at = base + Duration::minutes(i as i64);
        s.append_activity(&e).await.expect("append");
    }
    s.append_activity(&ActivityEntry::new(
        "other",
        "connected",
        serde_json::json!({}),
    ))
    .await
    .expect("append");

    let all = s
        .list_activity(
            "inst",
            &ActivityQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(all.total, 5);
    let ns: Vec<_> = all
        .items
        .iter()
        .map(|e| e.details["n"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(ns, [4, 3, 2, 1, 0], "newest first");

    let q = ActivityQuery {
        limit: 1,
        skip: 1,
        actions: vec!["connected".into()],
        ..Default::default()
    };
    let page = s.list_activity("inst", &q).await.expect("list");
    assert_eq!(page.total, 2);
    assert_eq!(page.items[0].details["n"], 2);

    let q = ActivityQuery {
        limit: 100,
        start: Some(base + Duration::minutes(1)),
        end: Some(base + Duration::minutes(3)),
        ..Default::default()
    };
    let page = s.list_activity("inst", &q).await.expect("list");
    assert_eq!(page.total, 3, "start and end are inclusive");
}

pub async fn events_cursor(s: DynStorage) {
    let base = Utc
        .with_ymd_and_hms(2024, 1, 1, 12, 0, 0)
        .single()
        .expect("date");
    let mut ids = Vec::new();
    for i in 0..6 {
        let kind = if i % 2 == 0 {
            "message_received"
        } else {
            "connected"
        };
        let mut e = InstanceEvent::new("inst", kind, serde_json::json!({"n": i}));
        e.timestamp = base + Duration::seconds(i);
        ids.push(e.id.clone());
        s.append_event(&e).await.expect("append");
    }
    let n = |evs: &[InstanceEvent]| {
        evs.iter()
            .map(|e| e.data["n"].as_i64().unwrap_or(-1))
            .collect::<Vec<_>>()
    };

    // No cursor: the latest `limit`, oldest first.
    let (evs, more) = s
        .list_events(
            "inst",
            &EventQuery {
                limit: 2,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!((n(&evs), more), (vec![4, 5], true));
    assert_eq!(evs[0].data["instanceId"], "inst");

    // since: strictly after, oldest first.
    let q = EventQuery {
        since: Some(base + Duration::seconds(1)),
        limit: 3,
        ..Default::default()
    };
    let (evs, more) = s.list_events("inst", &q).await.expect("list");
    assert_eq!((n(&evs), more), (vec![2, 3, 4], true));

    // after_id: strictly after that event.
    let q = EventQuery {
        after_id: Some(ids[3].clone()),
        limit: 10,
        ..Default::default()
    };
    let (evs, more) = s.list_events("inst", &q).await.expect("list");
    assert_eq!((n(&evs), more), (vec![4, 5], false));

    // types filter.
    let q = EventQuery {
        types: vec!["connected".into()],
        limit: 10,
        ..Default::default()
    };
    let (evs, more) = s.list_events("inst", &q).await.expect("list");
    assert_eq!((n(&evs), more), (vec![1, 3, 5], false));
    assert!(evs.iter().all(|e| e.kind == "connected"));
}

pub async fn ping_and_provider(s: DynStorage) {
    s.ping().await.expect("ping");
    assert!(["sqlite", "mongodb"].contains(&s.provider()));
}

/// One `#[tokio::test]` per suite check, each on a fresh store from `$make`.
macro_rules! storage_suite {
    ($module:ident, $make:path) => {
        mod $module {
            use super::*;
            storage_suite!(@tests $make; users_crud, users_paging, instances_crud, activity_filters, events_cursor, ping_and_provider);
        }
    };
    (@tests $make:path; $($check:ident),*) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (store, _guard) = $make().await;
                super::$check(store).await;
            }
        )*
    };
}

async fn sqlite_store() -> (DynStorage, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = wagate::storage::sqlite::SqliteStorage::open(&dir.path().join("suite.db"))
        .await
        .expect("open sqlite");
    (std::sync::Arc::new(store), dir)
}

storage_suite!(sqlite, sqlite_store);
