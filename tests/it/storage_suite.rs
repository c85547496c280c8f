//! The storage suite: every backend of the storage seam must pass these same checks.
//! `storage_suite!` instantiates one test per check for a backend constructor.

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};
use wagate_actors::domain::{
    ActivityEntry, ActivityQuery, EngineKind, EventQuery, Instance, InstanceEvent, InstanceStatus,
    LimitPeriod, Limits, Role, User, WebhookSettings, new_id,
};
use wagate_actors::error::StoreError;
use wagate_actors::messaging::{Contact, ContactQuery, HistoryQuery, Message, MessageStatus};
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
            // Header names may hold `.` and `$`, which document field names should not.
            headers: BTreeMap::from([
                ("X-A".to_string(), "1".to_string()),
                ("X.Trace$Id".to_string(), "2".to_string()),
            ]),
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

fn message(
    instance: &str,
    jid: &str,
    wa_id: &str,
    from_me: bool,
    ts: chrono::DateTime<Utc>,
) -> Message {
    Message {
        id: new_id(),
        instance_id: instance.to_owned(),
        message_id: wa_id.to_owned(),
        remote_jid: jid.to_owned(),
        from_me,
        message_type: "text".into(),
        content: Some(format!("body {wa_id}")),
        has_media: false,
        media_url: None,
        caption: None,
        mime_type: None,
        file_name: None,
        media_path: None,
        media_size: None,
        status: if from_me {
            MessageStatus::Sent
        } else {
            MessageStatus::Received
        },
        push_name: (!from_me).then(|| "Ivan".to_owned()),
        metadata: serde_json::json!({"timestamp": ts.timestamp()}),
        timestamp: ts,
        created_at: ts,
        updated_at: ts,
        status_updated_at: None,
    }
}

pub async fn messages_and_statuses(s: DynStorage) {
    let t = Utc
        .with_ymd_and_hms(2024, 3, 1, 10, 0, 0)
        .single()
        .expect("date");
    let m = message("inst", "7900@s.whatsapp.net", "WA1", true, t);
    s.insert_message(&m).await.expect("insert");
    assert_eq!(
        s.message_by_id("inst", "WA1").await.expect("get"),
        Some(m.clone())
    );
    assert!(
        matches!(s.insert_message(&m).await, Err(StoreError::Conflict(_))),
        "message ids are unique"
    );
    assert_eq!(s.message_by_id("other", "WA1").await.expect("get"), None);

    let later = t + Duration::seconds(5);
    let read = s
        .advance_message_status("inst", "WA1", MessageStatus::Read, later)
        .await
        .expect("advance")
        .expect("moved");
    assert_eq!(read.status, MessageStatus::Read);
    assert_eq!(read.status_updated_at, Some(later));
    // A late `delivered` after `read` changes nothing.
    assert_eq!(
        s.advance_message_status("inst", "WA1", MessageStatus::Delivered, later)
            .await
            .expect("advance"),
        None
    );
    assert_eq!(
        s.advance_message_status("inst", "WA1", MessageStatus::Failed, later)
            .await
            .expect("advance"),
        None
    );
    assert_eq!(
        s.advance_message_status("inst", "nope", MessageStatus::Read, later)
            .await
            .expect("advance"),
        None
    );
    assert_eq!(
        s.message_by_id("inst", "WA1")
            .await
            .expect("get")
            .map(|m| m.status),
        Some(MessageStatus::Read)
    );
}

pub async fn history_and_chats(s: DynStorage) {
    let t = Utc
        .with_ymd_and_hms(2024, 3, 1, 10, 0, 0)
        .single()
        .expect("date");
    let a = "7900@s.whatsapp.net";
    let b = "123-456@g.us";
    for i in 0..10 {
        s.insert_message(&message(
            "inst",
            a,
            &format!("A{i}"),
            i % 2 == 0,
            t + Duration::minutes(i),
        ))
        .await
        .expect("insert");
    }
    s.insert_message(&message("inst", b, "B0", false, t + Duration::minutes(30)))
        .await
        .expect("insert");
    s.insert_message(&message("other", a, "X0", false, t))
        .await
        .expect("insert");

    let q = HistoryQuery {
        limit: 3,
        skip: 1,
        ..Default::default()
    };
    let page = s.chat_history("inst", a, &q).await.expect("history");
    assert_eq!(page.total, 10);
    let ids: Vec<_> = page.items.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids, ["A8", "A7", "A6"], "newest first, skipped one");
    let q = HistoryQuery {
        limit: 50,
        skip: 0,
        start: Some(t + Duration::minutes(2)),
        end: Some(t + Duration::minutes(4)),
    };
    let page = s.chat_history("inst", a, &q).await.expect("history");
    assert_eq!(page.total, 3, "inclusive date range");

    let chats = s.list_chats("inst", 10, 0).await.expect("chats");
    assert_eq!(chats.total, 2);
    assert_eq!(chats.items[0].remote_jid, b, "newest activity first");
    assert_eq!(chats.items[0].unread_count, 1);
    assert_eq!(chats.items[1].last_message.message_id, "A9");
    assert_eq!(
        chats.items[1].unread_count, 5,
        "inbound messages not yet read"
    );
    assert_eq!(chats.items[1].message_count, 10);
    let mut marked = s.mark_chat_read("inst", a).await.expect("read");
    marked.sort();
    assert_eq!(marked, ["A1", "A3", "A5", "A7", "A9"]);
    assert!(
        s.mark_chat_read("inst", a)
            .await
            .expect("read again")
            .is_empty()
    );
    let chats = s.list_chats("inst", 10, 0).await.expect("chats");
    assert_eq!(chats.items[1].unread_count, 0);
}

fn contact(
    instance: &str,
    number: &str,
    name: Option<&str>,
    push: Option<&str>,
    group: bool,
) -> Contact {
    let now = Utc
        .timestamp_millis_opt(Utc::now().timestamp_millis())
        .single()
        .expect("ts");
    Contact {
        id: new_id(),
        instance_id: instance.to_owned(),
        remote_jid: if group {
            format!("{number}@g.us")
        } else {
            format!("{number}@s.whatsapp.net")
        },
        number: number.to_owned(),
        name: name.map(str::to_owned),
        push_name: push.map(str::to_owned),
        is_group: group,
        profile_picture: None,
        about: None,
        last_activity: None,
        created_at: now,
        updated_at: now,
    }
}

pub async fn contacts_upsert_and_search(s: DynStorage) {
    let first = s
        .upsert_contact(&contact(
            "inst",
            "79001234567",
            Some("Иван Иванов"),
            None,
            false,
        ))
        .await
        .expect("insert");
    // An update with only a push name keeps the saved name and the id.
    let mut seen = contact("inst", "79001234567", None, Some("Ваня"), false);
    seen.last_activity = Some(
        Utc.timestamp_millis_opt(1_700_000_000_000)
            .single()
            .expect("ts"),
    );
    let merged = s.upsert_contact(&seen).await.expect("upsert");
    assert_eq!(merged.id, first.id);
    assert_eq!(merged.name.as_deref(), Some("Иван Иванов"));
    assert_eq!(merged.push_name.as_deref(), Some("Ваня"));
    assert_eq!(merged.last_activity, seen.last_activity);
    // An older activity does not move lastActivity back.
    let mut old = contact("inst", "79001234567", None, None, false);
    old.last_activity = Some(
        Utc.timestamp_millis_opt(1_600_000_000_000)
            .single()
            .expect("ts"),
    );
    assert_eq!(
        s.upsert_contact(&old).await.expect("upsert").last_activity,
        seen.last_activity
    );

    s.upsert_contact(&contact(
        "inst",
        "15550001111",
        Some("Bob 100%"),
        None,
        false,
    ))
    .await
    .expect("insert");
    s.upsert_contact(&contact(
        "inst",
        "120363000",
        Some("Рабочая группа"),
        None,
        true,
    ))
    .await
    .expect("insert");
    s.upsert_contact(&contact("other", "15550002222", Some("Bob"), None, false))
        .await
        .expect("insert");

    let all = s
        .list_contacts(
            "inst",
            &ContactQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(all.total, 3);
    let find = |q: &str| ContactQuery {
        limit: 10,
        search: Some(q.to_owned()),
        ..Default::default()
    };
    assert_eq!(
        s.list_contacts("inst", &find("bob"))
            .await
            .expect("search")
            .total,
        1,
        "case-insensitive"
    );
    assert_eq!(
        s.list_contacts("inst", &find("ваня"))
            .await
            .expect("search")
            .total,
        1,
        "push name"
    );
    assert_eq!(
        s.list_contacts("inst", &find("0012345"))
            .await
            .expect("search")
            .total,
        1,
        "number"
    );
    assert_eq!(
        s.list_contacts("inst", &find("100%"))
            .await
            .expect("search")
            .total,
        1,
        "wildcards are literal"
    );
    assert_eq!(
        s.list_contacts("inst", &find("%"))
            .await
            .expect("search")
            .total,
        1
    );
    let groups = ContactQuery {
        limit: 10,
        only_groups: true,
        ..Default::default()
    };
    let page = s.list_contacts("inst", &groups).await.expect("groups");
    assert_eq!(page.total, 1);
    assert!(page.items[0].is_group);
    let paged = s
        .list_contacts(
            "inst",
            &ContactQuery {
                limit: 1,
                skip: 2,
                ..Default::default()
            },
        )
        .await
        .expect("page");
    assert_eq!((paged.total, paged.items.len()), (3, 1));
}

pub async fn ping_and_provider(s: DynStorage) {
    s.ping().await.expect("ping");
    assert!(["sqlite", "mongodb"].contains(&s.provider()));
}

pub async fn closed_store_is_unavailable(s: DynStorage) {
    s.close().await;
    assert!(matches!(s.ping().await, Err(StoreError::Unavailable(_))));
    assert!(matches!(
        s.user_by_id("any").await,
        Err(StoreError::Unavailable(_))
    ));
}

/// One `#[tokio::test]` per suite check, each on a fresh store from `$make`.
macro_rules! storage_suite {
    ($module:ident, $make:path) => {
        mod $module {
            use super::*;
            storage_suite!(@tests $make; users_crud, users_paging, instances_crud, activity_filters, events_cursor,
                messages_and_statuses, history_and_chats, contacts_upsert_and_search, ping_and_provider,
                closed_store_is_unavailable);
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

/// A fresh database on the MongoDB test server (started by `./scripts/test`).
async fn mongo_store() -> (DynStorage, ()) {
    let url = crate::common::fresh_mongodb_url();
    let store = wagate::storage::mongo::MongoStorage::connect(&url)
        .await
        .expect("connect to the MongoDB test server");
    (std::sync::Arc::new(store), ())
}

storage_suite!(mongodb, mongo_store);

#[tokio::test]
async fn mongodb_url_must_name_a_database() {
    let base = crate::common::fresh_mongodb_url();
    let server = base.rsplit_once('/').expect("url with a database").0;
    let err = wagate::storage::mongo::MongoStorage::connect(server)
        .await
        .expect_err("no database in the URL");
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("names no database")),
        "{err}"
    );
}

#[tokio::test]
async fn mongodb_down_is_unavailable_quickly() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let started = std::time::Instant::now();
    let err = wagate::storage::mongo::MongoStorage::connect(&format!(
        "mongodb://127.0.0.1:{port}/wagate"
    ))
    .await
    .expect_err("nothing listens there");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}
