//! The storage suite: every backend of the storage seam must pass these same checks.
//! `storage_suite!` instantiates one test per check for a backend constructor.

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};
use wagate_actors::domain::StatusReport;
use wagate_actors::domain::event::{MessageEdited, MessageRevoked};
use wagate_actors::domain::waba::AssignedFilter;
use wagate_actors::domain::{
    ActivityEntry, ActivityQuery, EngineKind, EventQuery, Instance, InstanceEvent, InstanceStatus,
    LimitPeriod, Limits, Role, User, WebhookSettings, new_id,
};
use wagate_actors::domain::{ChatChange, ChatSettings, Label, Mute};
use wagate_actors::domain::{Contact, ContactQuery, HistoryQuery, Message, MessageStatus};
use wagate_actors::domain::{Event, EventKind, Usage, UsageFilter, UsageKey};
use wagate_actors::error::StoreError;
use wagate_actors::store::{DynStorage, Record, RecordCounts, RecordKind};

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
    let all = s.list_instances(None).await.expect("list all");
    assert_eq!(all.len(), 2);
    let listed: Vec<String> = all.into_iter().map(|i| i.id).collect();
    assert_eq!(
        s.instance_ids().await.expect("ids"),
        listed,
        "the ids alone, in the list's order"
    );

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
    s.append_event(&numbered_event(&a.id, "connected", 0))
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
        let mut e = numbered_event("inst", kind, i);
        e.timestamp = base + Duration::seconds(i);
        ids.push(e.id.clone());
        s.append_event(&e).await.expect("append");
    }
    let n = |evs: &[InstanceEvent]| evs.iter().map(number_of).collect::<Vec<_>>();

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
    assert_eq!(evs[0].data_json()["instanceId"], "inst");

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
    assert!(evs.iter().all(|e| e.kind().as_str() == "connected"));
}

/// An event of `kind` numbered `n` (in its message id or phone): the suite checks order
/// and filters by the numbers.
fn numbered_event(instance: &str, kind: &str, n: i64) -> InstanceEvent {
    let data = match kind {
        "message_received" => serde_json::json!({"messageId": n.to_string(), "status": "received"}),
        _ => serde_json::json!({"phone": n.to_string()}),
    };
    let kind: EventKind = kind.parse().expect("kind");
    InstanceEvent::new(instance, Event::from_data(kind, data).expect("data fits"))
}

fn number_of(e: &InstanceEvent) -> i64 {
    let data = e.data_json();
    data["messageId"]
        .as_str()
        .or(data["phone"].as_str())
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1)
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
        quoted_message_id: None,
        mentions: Vec::new(),
        reactions: Vec::new(),
        edited_at: None,
        revoked: false,
        typed: Default::default(),
        message_secret: None,
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
    // The event is the one made when the change was asked for: its id and time.
    let report = StatusReport::new(Some("7900@lid"));
    let read = s
        .advance_message_status("inst", "WA1", MessageStatus::Read, later, &report)
        .await
        .expect("advance")
        .expect("moved");
    assert_eq!(read.instance_id, "inst");
    assert_eq!(read.id, report.id);
    assert_eq!(read.timestamp, report.timestamp);
    let Event::MessageStatus(change) = &read.event else {
        panic!("a message_status event, not {:?}", read.event)
    };
    assert_eq!(change.message_id, "WA1");
    assert_eq!(change.status, MessageStatus::Read);
    assert_eq!(change.from, "7900@lid", "who reported it");
    assert_eq!(change.remote_jid, "7900@s.whatsapp.net", "the stored chat");
    assert!(change.from_me);
    let moved = s
        .message_by_id("inst", "WA1")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(moved.status_updated_at, Some(later));
    // A late `delivered` after `read` changes nothing.
    for (id, status) in [
        ("WA1", MessageStatus::Delivered),
        ("WA1", MessageStatus::Failed),
        ("nope", MessageStatus::Read),
    ] {
        assert_eq!(
            s.advance_message_status("inst", id, status, later, &StatusReport::new(None))
                .await
                .expect("advance"),
            None,
            "{id} cannot become {status:?}"
        );
    }
    let (events, _) = s
        .list_events(
            "inst",
            &EventQuery {
                types: vec!["message_status".into()],
                limit: 100,
                ..EventQuery::default()
            },
        )
        .await
        .expect("events");
    assert_eq!(
        events.iter().map(|e| &e.id).collect::<Vec<_>>(),
        vec![&read.id],
        "the move is stored with its event, and the refused ones store none"
    );
    assert_eq!(
        s.message_by_id("inst", "WA1")
            .await
            .expect("get")
            .map(|m| m.status),
        Some(MessageStatus::Read)
    );

    // A reply keeps what it quotes and mentions; reactions replace the stored ones.
    let reply = Message {
        quoted_message_id: Some("WA1".into()),
        mentions: vec!["7900@s.whatsapp.net".into(), "7901@s.whatsapp.net".into()],
        ..message("inst", "7900@s.whatsapp.net", "WA2", false, later)
    };
    s.insert_message(&reply).await.expect("insert the reply");
    assert_eq!(
        s.message_by_id("inst", "WA2").await.expect("get"),
        Some(reply.clone())
    );
    let reactions = vec![
        wagate_actors::domain::Reaction {
            sender: "7900@s.whatsapp.net".into(),
            from_me: false,
            emoji: "👍".into(),
            timestamp: 7,
        },
        wagate_actors::domain::Reaction {
            sender: "7999@s.whatsapp.net".into(),
            from_me: true,
            emoji: "❤️".into(),
            timestamp: 8,
        },
    ];
    let at = later + Duration::seconds(1);
    assert!(
        s.set_message_reactions("inst", "WA2", &reactions, at)
            .await
            .expect("react")
    );
    let stored = s
        .message_by_id("inst", "WA2")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(stored.reactions, reactions);
    assert_eq!(stored.updated_at, at);
    assert_eq!(stored.quoted_message_id.as_deref(), Some("WA1"));
    assert!(
        s.set_message_reactions("inst", "WA2", &[], at)
            .await
            .expect("clear")
    );
    assert_eq!(
        s.message_by_id("inst", "WA2")
            .await
            .expect("get")
            .map(|m| m.reactions),
        Some(Vec::new())
    );
    assert!(
        !s.set_message_reactions("inst", "nope", &reactions, at)
            .await
            .expect("unknown"),
        "an unknown message is no reaction target"
    );

    // An edit and a deletion rewrite the message with their event, together.
    let mut edited = stored.clone();
    edited.edit("new text".into(), at + Duration::seconds(1));
    let event = InstanceEvent::new(
        "inst",
        Event::MessageEdited(MessageEdited {
            message_id: "WA2".into(),
            remote_jid: "7900@s.whatsapp.net".into(),
            sender: "7999@s.whatsapp.net".into(),
            from_me: true,
            message: "new text".into(),
            timestamp: 9,
        }),
    );
    assert!(s.rewrite_message(&edited, &event).await.expect("edit"));
    let back = s
        .message_by_id("inst", "WA2")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(back.content.as_deref(), Some("new text"));
    assert_eq!(back.edited_at, Some(at + Duration::seconds(1)));
    assert!(!back.revoked);
    assert_eq!(back.reactions, Vec::new(), "the rest is untouched");
    let mut revoked = back.clone();
    revoked.revoke(at + Duration::seconds(2));
    let gone = InstanceEvent::new(
        "inst",
        Event::MessageRevoked(MessageRevoked {
            message_id: "WA2".into(),
            remote_jid: "7900@s.whatsapp.net".into(),
            sender: "7999@s.whatsapp.net".into(),
            from_me: true,
            for_everyone: true,
            timestamp: 9,
        }),
    );
    assert!(s.rewrite_message(&revoked, &gone).await.expect("revoke"));
    let back = s
        .message_by_id("inst", "WA2")
        .await
        .expect("get")
        .expect("stored");
    assert!(back.revoked);
    assert_eq!(back.content, None);
    assert_eq!(back.updated_at, at + Duration::seconds(2));
    let forgotten = InstanceEvent::new(
        "inst",
        Event::MessageRevoked(MessageRevoked {
            message_id: "WA2".into(),
            remote_jid: "7900@s.whatsapp.net".into(),
            sender: "7999@s.whatsapp.net".into(),
            from_me: true,
            for_everyone: false,
            timestamp: 9,
        }),
    );
    assert!(
        s.forget_message("inst", "WA2", &forgotten)
            .await
            .expect("forget")
    );
    assert_eq!(s.message_by_id("inst", "WA2").await.expect("get"), None);
    assert!(
        !s.forget_message("inst", "WA2", &forgotten.clone())
            .await
            .is_ok_and(|found| found),
        "a second forget finds nothing"
    );
    let (events, _) = s
        .list_events(
            "inst",
            &EventQuery {
                limit: 100,
                ..EventQuery::default()
            },
        )
        .await
        .expect("events");
    for e in [&event, &gone, &forgotten] {
        assert!(
            events.iter().any(|stored| stored.id == e.id),
            "the event {} is stored with its change",
            e.id
        );
    }
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

/// Every instant truncated to milliseconds, the precision every backend keeps.
fn ms_now() -> chrono::DateTime<Utc> {
    Utc.timestamp_millis_opt(Utc::now().timestamp_millis())
        .single()
        .expect("ts")
}

/// Stores records of every kind (an inbound message read, one not, usage buckets of two
/// days) and returns how many of each there are.
pub async fn fill_every_kind(s: &DynStorage) -> RecordCounts {
    let mut admin = user("owner@example.com", Role::Admin);
    admin.created_at = ms_now();
    admin.updated_at = admin.created_at;
    s.create_user(&admin).await.expect("user");
    let mut other = user("other@example.com", Role::User);
    other.created_at = admin.created_at;
    other.updated_at = admin.created_at;
    s.create_user(&other).await.expect("user");
    let inst = instance(&admin.id);
    s.create_instance(&inst).await.expect("instance");
    s.set_instance_status(
        &inst.id,
        InstanceStatus::Connected,
        Some("79001234567"),
        ms_now(),
    )
    .await
    .expect("status");
    let mut entry = ActivityEntry::new(&inst.id, "connected", serde_json::json!({"phone": "7900"}));
    entry.created_at = ms_now();
    s.append_activity(&entry).await.expect("activity");
    let mut event = numbered_event(&inst.id, "message_received", 1);
    event.timestamp = ms_now();
    s.append_event(&event).await.expect("event");
    let jid = "79005550000@s.whatsapp.net";
    let t = ms_now();
    s.insert_message(&message(&inst.id, jid, "IN1", false, t))
        .await
        .expect("message");
    s.insert_message(&message(&inst.id, jid, "OUT1", true, t))
        .await
        .expect("message");
    s.mark_chat_read(&inst.id, jid).await.expect("read");
    s.insert_message(&message(
        &inst.id,
        jid,
        "IN2",
        false,
        t + Duration::seconds(1),
    ))
    .await
    .expect("message");
    s.upsert_contact(&contact(
        &inst.id,
        "79005550000",
        Some("Ivan"),
        Some("Ваня"),
        false,
    ))
    .await
    .expect("contact");
    let day = t.date_naive();
    let usage = |n: u64| Usage {
        messages_sent: n,
        api_calls: 10 * n,
        total_media_size: 1000 * n,
        ..Usage::default()
    };
    s.add_usage(&[
        (
            UsageKey {
                day,
                user_id: admin.id.clone(),
                instance_id: inst.id.clone(),
            },
            usage(2),
        ),
        (
            UsageKey {
                day: day - Duration::days(1),
                user_id: admin.id.clone(),
                instance_id: String::new(),
            },
            usage(3),
        ),
    ])
    .await
    .expect("usage");
    // The operator desk: an account (its secrets as stored, sealed), a chat with an
    // inbound message the operator read, a delivered reply and an unread inbound one,
    // and a second chat with one message.
    let mut account = waba_account(&admin.id, &format!("pn-{}", admin.id));
    account.access_token = "sealed:v1:AAECAwQ=".into();
    s.put_waba_account(&account).await.expect("waba account");
    let chat = s
        .waba_chat_for_customer(&admin.id, "79005551111", Some("Анна"), t)
        .await
        .expect("waba chat");
    let mut first = waba_message(chat.id, &format!("wamid.{}-1", admin.id), false, t);
    first.owner_id = admin.id.clone();
    s.insert_waba_message(&first).await.expect("waba message");
    s.mark_waba_chat_read(chat.id).await.expect("waba read");
    let mut reply = waba_message(
        chat.id,
        &format!("wamid.{}-2", admin.id),
        true,
        t + Duration::seconds(1),
    );
    reply.owner_id = admin.id.clone();
    let reply = s.insert_waba_message(&reply).await.expect("waba message");
    s.advance_waba_message_status(
        chat.id,
        &reply.whatsapp_message_id,
        MessageStatus::Delivered,
        t + Duration::seconds(2),
    )
    .await
    .expect("waba status")
    .expect("delivered");
    let mut unread = waba_message(
        chat.id,
        &format!("wamid.{}-3", admin.id),
        false,
        t + Duration::seconds(3),
    );
    unread.owner_id = admin.id.clone();
    s.insert_waba_message(&unread).await.expect("waba message");
    let other_chat = s
        .waba_chat_for_customer(&admin.id, "79005552222", None, t)
        .await
        .expect("waba chat");
    let mut other = waba_message(other_chat.id, &format!("wamid.{}-4", admin.id), false, t);
    other.owner_id = admin.id.clone();
    s.insert_waba_message(&other).await.expect("waba message");
    let mut settings = ChatSettings::new(&inst.id, jid, t);
    settings.apply(&ChatChange::Mute(Some(Mute::Forever)), t);
    settings.apply(
        &ChatChange::Label {
            label_id: "2".into(),
            attached: true,
        },
        t,
    );
    s.put_chat_settings(&settings).await.expect("chat settings");
    s.put_label(&label(&inst.id, "2", "VIP", t))
        .await
        .expect("label");
    RecordCounts {
        users: 2,
        instances: 1,
        activity: 1,
        events: 1,
        messages: 3,
        contacts: 1,
        usage: 2,
        waba_accounts: 1,
        waba_chats: 2,
        waba_messages: 4,
        chats: 1,
        labels: 1,
    }
}

/// Every record of every kind, through the export's keyset paging (`page` per call).
pub async fn export_everything(s: &DynStorage, page: u32) -> Vec<Record> {
    let mut all = Vec::new();
    for kind in RecordKind::ALL {
        let mut after: Option<String> = None;
        loop {
            let batch = s
                .export_records(kind, after.as_deref(), page)
                .await
                .expect("export");
            assert!(batch.len() <= page as usize, "a page holds at most `limit`");
            assert!(batch.iter().all(|r| r.kind() == kind));
            let Some(last) = batch.last() else { break };
            after = Some(last.key());
            all.extend(batch);
        }
    }
    all
}

pub async fn transfer_round_trip(s: DynStorage) {
    let expected = fill_every_kind(&s).await;
    assert_eq!(s.count_records().await.expect("count"), expected);
    // Pages of one record exercise the cursor on every kind.
    let exported = export_everything(&s, 1).await;
    assert_eq!(exported.len() as u64, 20);
    assert_eq!(export_everything(&s, 500).await, exported);
    let read: Vec<_> = exported
        .iter()
        .filter_map(|r| match r {
            Record::Message {
                message,
                read_by_me,
            } => Some((message.message_id.as_str(), *read_by_me)),
            _ => None,
        })
        .collect();
    assert!(
        read.contains(&("IN1", true)) && read.contains(&("IN2", false)),
        "{read:?}"
    );

    s.clear_all().await.expect("clear");
    assert_eq!(
        s.count_records().await.expect("count"),
        RecordCounts::default()
    );
    s.import_records(&exported).await.expect("import");
    assert_eq!(s.count_records().await.expect("count"), expected);
    assert_eq!(
        export_everything(&s, 500).await,
        exported,
        "an import stores records exactly as exported"
    );
    // Imported records work like written ones: the unread count follows the read marks,
    // usage buckets hold their counters (set, not added to).
    let Some(Record::Instance(inst)) = exported.iter().find(|r| r.kind() == RecordKind::Instances)
    else {
        panic!("an instance was exported");
    };
    let chats = s.list_chats(&inst.id, 10, 0).await.expect("chats");
    assert_eq!(chats.items[0].unread_count, 1);
    let total: u64 = s
        .usage(&UsageFilter::default())
        .await
        .expect("usage")
        .iter()
        .map(|(_, u)| u.messages_sent)
        .sum();
    assert_eq!(total, 5);
    // A record already stored is a conflict, never a silent double.
    let users: Vec<_> = exported
        .iter()
        .filter(|r| r.kind() == RecordKind::Users)
        .cloned()
        .collect();
    assert!(matches!(
        s.import_records(&users).await,
        Err(StoreError::Conflict(_))
    ));
    let buckets: Vec<_> = exported
        .iter()
        .filter(|r| r.kind() == RecordKind::Usage)
        .cloned()
        .collect();
    assert!(matches!(
        s.import_records(&buckets).await,
        Err(StoreError::Conflict(_))
    ));
    waba_transfer(&s, &exported).await;
}

/// The WABA part of [`transfer_round_trip`]: `exported` is every record of `s`.
async fn waba_transfer(s: &DynStorage, exported: &[Record]) {
    // The export holds every field as the desk reads it, secrets still sealed.
    let Some(Record::WabaAccount(account)) = exported
        .iter()
        .find(|r| r.kind() == RecordKind::WabaAccounts)
    else {
        panic!("a WABA account was exported");
    };
    assert_eq!(account.access_token, "sealed:v1:AAECAwQ=");
    assert_eq!(
        s.waba_account(&account.owner_id).await.expect("account"),
        Some(account.clone())
    );
    let chats: Vec<_> = exported
        .iter()
        .filter_map(|r| match r {
            Record::WabaChat(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let messages: Vec<_> = exported
        .iter()
        .filter_map(|r| match r {
            Record::WabaMessage(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!((chats.len(), messages.len()), (2, 4));
    for c in &chats {
        assert_eq!(s.waba_chat(c.id).await.expect("chat").as_ref(), Some(c));
    }
    for m in &messages {
        assert_eq!(
            s.waba_message(m.id).await.expect("message").as_ref(),
            Some(m)
        );
    }
    assert!(chats[0].last_customer_message_at.is_some() && chats[0].last_message_at.is_some());
    assert_eq!(chats[0].customer_name.as_deref(), Some("Анна"));
    let delivered = messages.iter().find(|m| m.from_me).expect("the reply");
    assert_eq!(delivered.status, MessageStatus::Delivered);
    assert!(delivered.status_updated_at.is_some() && delivered.sender_user_id.is_some());
    assert_eq!(
        messages
            .iter()
            .map(|m| m.is_read_by_operator)
            .collect::<Vec<_>>(),
        [true, true, false, false]
    );
    let unread =
        |page: wagate_actors::domain::Page<wagate_actors::domain::waba::WabaChatSummary>| {
            page.items
                .iter()
                .map(|c| (c.chat.id, c.unread_count))
                .collect::<Vec<_>>()
        };
    let desk = unread(
        s.list_waba_chats(None, &AssignedFilter::All, 10, 0)
            .await
            .expect("chats"),
    );

    // The imported copy reads like the original, and ids assigned afterwards go past
    // the copied ones (with fresh ids the sequences could not have been there yet).
    // Ids of two and three digits also check that the cursor orders numbers as numbers.
    let shift = |id: i64| id + 97;
    let shifted: Vec<Record> = exported
        .iter()
        .map(|r| match r {
            Record::WabaChat(c) => Record::WabaChat(wagate_actors::domain::waba::WabaChat {
                id: shift(c.id),
                ..c.clone()
            }),
            Record::WabaMessage(m) => {
                Record::WabaMessage(wagate_actors::domain::waba::WabaMessage {
                    id: shift(m.id),
                    chat_id: shift(m.chat_id),
                    ..m.clone()
                })
            }
            other => other.clone(),
        })
        .collect();
    s.clear_all().await.expect("clear");
    s.import_records(&shifted).await.expect("import shifted");
    assert_eq!(export_everything(s, 1).await, shifted);
    let shifted_desk = unread(
        s.list_waba_chats(None, &AssignedFilter::All, 10, 0)
            .await
            .expect("chats"),
    );
    assert_eq!(
        shifted_desk,
        desk.iter()
            .map(|(id, n)| (shift(*id), *n))
            .collect::<Vec<_>>()
    );
    let max_chat = chats.iter().map(|c| shift(c.id)).max().expect("chats");
    let max_message = messages
        .iter()
        .map(|m| shift(m.id))
        .max()
        .expect("messages");
    let chat = s
        .waba_chat_for_customer(&account.owner_id, "79005553333", None, Utc::now())
        .await
        .expect("new chat");
    assert!(chat.id > max_chat, "{} after {max_chat}", chat.id);
    let mut fresh = waba_message(chat.id, "wamid.after-import", false, Utc::now());
    fresh.owner_id = account.owner_id.clone();
    let fresh = s.insert_waba_message(&fresh).await.expect("new message");
    assert!(fresh.id > max_message, "{} after {max_message}", fresh.id);
    // Copied chats and messages are conflicts the second time.
    for kind in [
        RecordKind::WabaAccounts,
        RecordKind::WabaChats,
        RecordKind::WabaMessages,
    ] {
        let again: Vec<_> = shifted
            .iter()
            .filter(|r| r.kind() == kind)
            .cloned()
            .collect();
        assert!(
            matches!(s.import_records(&again).await, Err(StoreError::Conflict(_))),
            "{kind:?}"
        );
    }
}

/// An instant at millisecond precision (what every backend keeps).
fn waba_ms(t: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    Utc.timestamp_millis_opt(t.timestamp_millis())
        .single()
        .expect("ts")
}

fn waba_account(owner: &str, phone_number_id: &str) -> wagate_actors::domain::waba::WabaAccount {
    wagate_actors::domain::waba::WabaAccount {
        owner_id: owner.into(),
        phone_number_id: phone_number_id.into(),
        business_account_id: "waba-1".into(),
        access_token: "sealed-token".into(),
        app_secret: "sealed-secret".into(),
        verify_token: "sealed-verify".into(),
        verify_token_hash: format!("hash-of-{owner}"),
        updated_at: waba_ms(Utc::now()),
    }
}

fn waba_message(
    chat_id: i64,
    wamid: &str,
    from_me: bool,
    at: chrono::DateTime<Utc>,
) -> wagate_actors::domain::waba::WabaMessage {
    wagate_actors::domain::waba::WabaMessage {
        id: 0,
        chat_id,
        owner_id: "owner".into(),
        whatsapp_message_id: wamid.into(),
        from_me,
        message_type: "text".into(),
        content: Some(format!("text of {wamid}")),
        media_url: from_me.then(|| "https://example.com/a.jpg".to_owned()),
        // Inbound ones carry a file still to fetch, so copies carry that too.
        media: (!from_me).then(|| {
            wagate_actors::domain::waba::WabaMedia::pending(
                format!("media-of-{wamid}"),
                Some("image/png".into()),
                None,
            )
        }),
        error: None,
        status: if from_me {
            MessageStatus::Sent
        } else {
            MessageStatus::Received
        },
        is_read_by_operator: from_me,
        sender_user_id: from_me.then(|| "operator-1".to_owned()),
        timestamp: waba_ms(at),
        status_updated_at: None,
    }
}

pub async fn waba_accounts(s: DynStorage) {
    let a = waba_account("owner", "pn-1");
    s.put_waba_account(&a).await.expect("put");
    assert_eq!(s.waba_account("owner").await.expect("get"), Some(a.clone()));
    assert_eq!(
        s.waba_account_by_phone_number_id("pn-1")
            .await
            .expect("by phone"),
        Some(a.clone())
    );
    assert_eq!(
        s.waba_account_by_verify_token_hash("hash-of-owner")
            .await
            .expect("by hash")
            .map(|a| a.owner_id),
        Some("owner".into())
    );
    assert_eq!(s.waba_account("nobody").await.expect("get"), None);

    // Replacing keeps one account per owner; the old phone number id stops routing.
    let moved = waba_account("owner", "pn-2");
    s.put_waba_account(&moved).await.expect("replace");
    assert_eq!(
        s.waba_account_by_phone_number_id("pn-1")
            .await
            .expect("old phone"),
        None
    );
    assert_eq!(
        s.waba_account("owner")
            .await
            .expect("get")
            .map(|a| a.phone_number_id),
        Some("pn-2".into())
    );
    // A phone number id belongs to one account.
    assert!(matches!(
        s.put_waba_account(&waba_account("other", "pn-2")).await,
        Err(StoreError::Conflict(_))
    ));
}

pub async fn waba_chats_and_messages(s: DynStorage) {
    let t0 = waba_ms(Utc::now()) - Duration::hours(2);
    let chat = s
        .waba_chat_for_customer("owner", "79001234567", None, t0)
        .await
        .expect("create");
    assert!(chat.id > 0);
    assert_eq!(
        (
            chat.last_customer_message_at,
            chat.last_message_at,
            chat.created_at
        ),
        (None, None, t0)
    );
    let again = s
        .waba_chat_for_customer("owner", "79001234567", Some("Ann"), t0)
        .await
        .expect("find");
    assert_eq!(again.id, chat.id, "one chat per customer");
    assert_eq!(again.customer_name.as_deref(), Some("Ann"));
    let kept = s
        .waba_chat_for_customer("owner", "79001234567", None, t0)
        .await
        .expect("find");
    assert_eq!(
        kept.customer_name.as_deref(),
        Some("Ann"),
        "None keeps the name"
    );
    let other = s
        .waba_chat_for_customer("other-owner", "79001234567", None, t0)
        .await
        .expect("other owner");
    assert_ne!(other.id, chat.id);
    assert_eq!(
        s.find_waba_chat("owner", "79001234567")
            .await
            .expect("find")
            .map(|c| c.id),
        Some(chat.id)
    );
    assert_eq!(s.find_waba_chat("owner", "1").await.expect("find"), None);

    // Numeric ids, in order; the chat's instants move forward only.
    let inbound = s
        .insert_waba_message(&waba_message(
            chat.id,
            "wamid.in1",
            false,
            t0 + Duration::minutes(1),
        ))
        .await
        .expect("inbound");
    let outbound = s
        .insert_waba_message(&waba_message(
            chat.id,
            "wamid.out1",
            true,
            t0 + Duration::minutes(2),
        ))
        .await
        .expect("outbound");
    assert!(outbound.id > inbound.id && inbound.id > 0);
    let late = s
        .insert_waba_message(&waba_message(chat.id, "wamid.in0", false, t0))
        .await
        .expect("a late inbound");
    assert!(matches!(
        s.insert_waba_message(&waba_message(chat.id, "wamid.in1", false, t0))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let stored = s.waba_chat(chat.id).await.expect("chat").expect("exists");
    assert_eq!(
        stored.last_customer_message_at,
        Some(t0 + Duration::minutes(1))
    );
    assert_eq!(stored.last_message_at, Some(t0 + Duration::minutes(2)));
    assert_eq!(
        s.waba_message(outbound.id).await.expect("get"),
        Some(outbound.clone())
    );
    assert_eq!(
        s.waba_message(late.id).await.expect("get"),
        Some(late.clone())
    );
    assert_eq!(s.waba_message(999_999).await.expect("get"), None);

    // Statuses: forward only.
    let at = waba_ms(Utc::now());
    // Another chat's message is not this chat's to change.
    assert_eq!(
        s.advance_waba_message_status(other.id, "wamid.out1", MessageStatus::Delivered, at)
            .await
            .expect("other chat"),
        None
    );
    let read = s
        .advance_waba_message_status(chat.id, "wamid.out1", MessageStatus::Read, at)
        .await
        .expect("read");
    assert_eq!(read.as_ref().map(|m| m.status), Some(MessageStatus::Read));
    assert_eq!(read.and_then(|m| m.status_updated_at), Some(at));
    for backwards in [
        MessageStatus::Delivered,
        MessageStatus::Sent,
        MessageStatus::Read,
    ] {
        assert_eq!(
            s.advance_waba_message_status(chat.id, "wamid.out1", backwards, at)
                .await
                .expect("ignored"),
            None
        );
    }
    assert_eq!(
        s.advance_waba_message_status(chat.id, "wamid.unknown", MessageStatus::Read, at)
            .await
            .expect("unknown"),
        None
    );

    // History: newest first, paged.
    let page = s.waba_chat_messages(chat.id, 2, 0).await.expect("history");
    assert_eq!(page.total, 3);
    let ids: Vec<i64> = page.items.iter().map(|m| m.id).collect();
    assert_eq!(ids, [outbound.id, inbound.id]);
    let rest = s.waba_chat_messages(chat.id, 2, 2).await.expect("history");
    assert_eq!(
        rest.items.iter().map(|m| m.id).collect::<Vec<_>>(),
        [late.id]
    );

    // Chat list: newest activity first, unread inbound counted, owner-scoped.
    let mine = s
        .list_waba_chats(Some("owner"), &AssignedFilter::All, 10, 0)
        .await
        .expect("list");
    assert_eq!(mine.total, 1);
    assert_eq!(mine.items[0].chat.id, chat.id);
    assert_eq!(mine.items[0].unread_count, 2);
    assert_eq!(
        mine.items[0].last_message.as_ref().map(|m| m.id),
        Some(outbound.id)
    );
    let all = s
        .list_waba_chats(None, &AssignedFilter::All, 10, 0)
        .await
        .expect("all");
    assert_eq!(all.total, 2);
    assert_eq!(
        all.items.iter().map(|c| c.chat.id).collect::<Vec<_>>(),
        [chat.id, other.id],
        "the chat without messages comes last"
    );
    assert_eq!(all.items[1].last_message, None);
    let second = s
        .list_waba_chats(None, &AssignedFilter::All, 1, 1)
        .await
        .expect("page");
    assert_eq!((second.total, second.items.len()), (2, 1));

    assert_eq!(s.mark_waba_chat_read(chat.id).await.expect("read"), 2);
    assert_eq!(s.mark_waba_chat_read(chat.id).await.expect("again"), 0);
    let mine = s
        .list_waba_chats(Some("owner"), &AssignedFilter::All, 10, 0)
        .await
        .expect("list");
    assert_eq!(mine.items[0].unread_count, 0);
}

pub async fn waba_media(s: DynStorage) {
    use wagate_actors::domain::waba::{MediaState, WabaMedia};
    let t0 = waba_ms(Utc::now());
    let chat = s
        .waba_chat_for_customer("owner", "1001", None, t0)
        .await
        .expect("chat");
    let inbound = s
        .insert_waba_message(&waba_message(chat.id, "wamid.m1", false, t0))
        .await
        .expect("insert");
    let pending = inbound.media.clone().expect("a file");
    assert_eq!(pending.state, MediaState::Pending);
    assert_eq!((pending.attempts, pending.path.as_deref()), (0, None));

    let failed_once = WabaMedia {
        attempts: 1,
        error: Some("Meta answered 500".into()),
        ..pending.clone()
    };
    let after = s
        .set_waba_media(inbound.id, &failed_once)
        .await
        .expect("set")
        .expect("the message");
    assert_eq!(after.media.as_ref(), Some(&failed_once));
    let stored = WabaMedia {
        mime_type: Some("image/jpeg".into()),
        file_name: Some("Фото.jpg".into()),
        size: Some(12_345_678_901),
        path: Some("waba-owner/abc".into()),
        state: MediaState::Stored,
        attempts: 2,
        error: None,
        ..pending
    };
    s.set_waba_media(inbound.id, &stored).await.expect("set");
    let read = s
        .waba_message(inbound.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(read.media, Some(stored));
    assert_eq!(
        without_media(read),
        without_media(inbound),
        "nothing else changed"
    );
    assert_eq!(
        s.set_waba_media(999_999, &failed_once).await.expect("set"),
        None
    );
    // A message without a file reads back without one.
    let outbound = s
        .insert_waba_message(&waba_message(chat.id, "wamid.m2", true, t0))
        .await
        .expect("insert");
    assert_eq!(outbound.media, None);
    assert_eq!(
        s.waba_message(outbound.id)
            .await
            .expect("get")
            .expect("exists")
            .media,
        None
    );
}

fn without_media(
    m: wagate_actors::domain::waba::WabaMessage,
) -> wagate_actors::domain::waba::WabaMessage {
    wagate_actors::domain::waba::WabaMessage { media: None, ..m }
}

pub async fn waba_assignment(s: DynStorage) {
    let t0 = waba_ms(Utc::now());
    let a = s
        .waba_chat_for_customer("owner", "1001", None, t0)
        .await
        .expect("chat a");
    let b = s
        .waba_chat_for_customer("owner", "1002", None, t0)
        .await
        .expect("chat b");
    let ids = |page: wagate_actors::domain::Page<wagate_actors::domain::waba::WabaChatSummary>| {
        let mut ids: Vec<i64> = page.items.iter().map(|c| c.chat.id).collect();
        ids.sort();
        (ids, page.total)
    };

    // Compare-and-set: only from the expected assignee.
    assert_eq!(
        s.assign_waba_chat(a.id, Some("someone"), Some("op1"))
            .await
            .expect("wrong expectation"),
        None
    );
    let taken = s
        .assign_waba_chat(a.id, None, Some("op1"))
        .await
        .expect("take")
        .expect("changed");
    assert_eq!(taken.assigned_operator_id.as_deref(), Some("op1"));
    assert_eq!(
        s.assign_waba_chat(a.id, None, Some("op2"))
            .await
            .expect("a second taker"),
        None,
        "the chat is no longer free"
    );
    assert_eq!(
        s.waba_chat(a.id)
            .await
            .expect("get")
            .and_then(|c| c.assigned_operator_id),
        Some("op1".to_owned())
    );
    assert_eq!(
        s.assign_waba_chat(999_999, None, Some("op1"))
            .await
            .expect("no chat"),
        None
    );

    // The list filters by assignee.
    let list = |f: AssignedFilter| {
        let s = s.clone();
        async move {
            ids(s
                .list_waba_chats(Some("owner"), &f, 10, 0)
                .await
                .expect("list"))
        }
    };
    assert_eq!(list(AssignedFilter::All).await, (vec![a.id, b.id], 2));
    assert_eq!(list(AssignedFilter::Unassigned).await, (vec![b.id], 1));
    assert_eq!(
        list(AssignedFilter::To("op1".into())).await,
        (vec![a.id], 1)
    );
    assert_eq!(list(AssignedFilter::To("op2".into())).await, (vec![], 0));

    // Released: unassigned again.
    let released = s
        .assign_waba_chat(a.id, Some("op1"), None)
        .await
        .expect("release")
        .expect("changed");
    assert_eq!(released.assigned_operator_id, None);
    assert_eq!(
        list(AssignedFilter::Unassigned).await,
        (vec![a.id, b.id], 2)
    );
}

pub async fn ping_and_provider(s: DynStorage) {
    s.ping().await.expect("ping");
    assert!(["sqlite", "mongodb", "memory"].contains(&s.provider()));
}

/// `record_message` writes the message, the contact and the event as one: all of them,
/// or (on a conflict) none. A conflicting row fails only its own write, also among
/// concurrent ones.
pub async fn messages_recorded_with_contact_and_event(s: DynStorage) {
    let inst = "rec";
    let jid = "79001234567@s.whatsapp.net";
    let t = Utc
        .timestamp_millis_opt(Utc::now().timestamp_millis())
        .single()
        .expect("ts");
    let events = |s: DynStorage| async move {
        let query = EventQuery {
            limit: 1000,
            ..EventQuery::default()
        };
        let (events, _) = s.list_events(inst, &query).await.expect("events");
        events.into_iter().map(|e| e.id).collect::<Vec<_>>()
    };
    let push_name = |s: DynStorage| async move {
        let query = ContactQuery {
            limit: 10,
            ..ContactQuery::default()
        };
        let page = s.list_contacts(inst, &query).await.expect("contacts");
        assert_eq!(page.total, 1, "one contact");
        page.items[0].push_name.clone()
    };

    let m = message(inst, jid, "R1", false, t);
    let e = numbered_event(inst, "message_received", 1);
    let ann = contact(inst, "79001234567", None, Some("Ann"), false);
    s.record_message(&m, Some(&ann), &e).await.expect("record");
    assert_eq!(
        s.message_by_id(inst, "R1").await.expect("get"),
        Some(m.clone())
    );
    assert_eq!(events(s.clone()).await, vec![e.id.clone()]);
    assert_eq!(push_name(s.clone()).await.as_deref(), Some("Ann"));
    // The contact written with the message is found by its name.
    let search = |s: DynStorage, text: &'static str| async move {
        let query = ContactQuery {
            limit: 10,
            search: Some(text.into()),
            ..ContactQuery::default()
        };
        s.list_contacts(inst, &query).await.expect("search").total
    };
    assert_eq!(search(s.clone(), "ann").await, 1);

    // The same message again: a conflict, and the new contact name and event are not
    // stored.
    let bob = contact(inst, "79001234567", None, Some("Bob"), false);
    let again = message(inst, jid, "R1", false, t);
    let second = numbered_event(inst, "message_received", 2);
    let answer = s.record_message(&again, Some(&bob), &second).await;
    assert!(matches!(answer, Err(StoreError::Conflict(_))), "{answer:?}");
    assert_eq!(events(s.clone()).await, vec![e.id.clone()]);
    assert_eq!(push_name(s.clone()).await.as_deref(), Some("Ann"));

    // A new message whose event conflicts (its id is taken): the message and the contact
    // written before it in the same transaction are rolled back.
    let orphan = message(inst, jid, "R2", false, t);
    let answer = s.record_message(&orphan, Some(&bob), &e).await;
    assert!(matches!(answer, Err(StoreError::Conflict(_))), "{answer:?}");
    assert_eq!(s.message_by_id(inst, "R2").await.expect("get"), None);
    assert_eq!(push_name(s.clone()).await.as_deref(), Some("Ann"));

    // Concurrent writes (sends: no contact), one of them a duplicate: only that one fails.
    let writes = (0..12).map(|n| {
        let s = s.clone();
        async move {
            let wa_id = if n == 7 {
                "R1".to_owned()
            } else {
                format!("S{n}")
            };
            let m = message(inst, "79007654321@s.whatsapp.net", &wa_id, true, t);
            let e = numbered_event(inst, "message_received", 100 + n);
            (wa_id, e.id.clone(), s.record_message(&m, None, &e).await)
        }
    });
    let outcomes = futures::future::join_all(writes).await;
    let stored_events = events(s.clone()).await;
    for (wa_id, event_id, outcome) in outcomes {
        if wa_id == "R1" {
            assert!(
                matches!(outcome, Err(StoreError::Conflict(_))),
                "{outcome:?}"
            );
            assert!(!stored_events.contains(&event_id));
        } else {
            assert_eq!(outcome, Ok(()), "{wa_id} failed with the duplicate");
            assert!(s.message_by_id(inst, &wa_id).await.expect("get").is_some());
            assert!(stored_events.contains(&event_id), "{wa_id} lacks its event");
        }
    }
    assert_eq!(stored_events.len(), 12);

    // A later message under a new name: the merged contact is found by that name only.
    let m = message(inst, jid, "R3", false, t);
    let third = numbered_event(inst, "message_received", 3);
    s.record_message(&m, Some(&bob), &third)
        .await
        .expect("record");
    assert_eq!(push_name(s.clone()).await.as_deref(), Some("Bob"));
    assert_eq!(search(s.clone(), "bob").await, 1);
    assert_eq!(search(s.clone(), "ann").await, 0);
}

/// `record_message_then` returns once a write is queued; each write's outcome is told
/// once it is committed, in the order queued, and a duplicate among them fails alone. A
/// receipt queued behind them (`advance_message_status_then`) is told after them.
pub async fn pipelined_writes_are_told_in_order_once_committed(s: DynStorage) {
    let inst = "pipe";
    let t = Utc
        .timestamp_millis_opt(Utc::now().timestamp_millis())
        .single()
        .expect("ts");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for n in 0..24 {
        // The ninth repeats the first message.
        let wa_id = if n == 9 {
            "P0".to_owned()
        } else {
            format!("P{n}")
        };
        let m = message(inst, "79007654321@s.whatsapp.net", &wa_id, true, t);
        let e = numbered_event(inst, "message_received", n);
        let tx = tx.clone();
        s.record_message_then(
            &m,
            None,
            &e,
            Box::new(move |outcome| {
                let _ = tx.send((n, wa_id, outcome.map(|()| None)));
            }),
        )
        .await;
    }
    // A receipt queued right behind the messages finds the one it is for, whose write
    // may not be committed yet: it is written after it.
    let receipt_tx = tx.clone();
    s.advance_message_status_then(
        inst,
        "P23",
        MessageStatus::Read,
        t,
        &StatusReport::new(None),
        Box::new(move |outcome| {
            let _ = receipt_tx.send((24, "P23".to_owned(), outcome));
        }),
    )
    .await;
    let mut receipt = None;
    drop(tx);
    let mut told = Vec::new();
    while let Some((n, wa_id, outcome)) = rx.recv().await {
        if n == 24 {
            receipt = Some(outcome);
        } else if n == 9 {
            assert!(
                matches!(outcome, Err(StoreError::Conflict(_))),
                "{outcome:?}"
            );
        } else {
            assert_eq!(outcome, Ok(None), "{wa_id}");
            assert!(
                s.message_by_id(inst, &wa_id).await.expect("get").is_some(),
                "{wa_id} is committed when told"
            );
        }
        told.push(n);
    }
    assert_eq!(
        told,
        (0..25).collect::<Vec<_>>(),
        "told in the order queued"
    );
    let receipt = receipt.expect("told").expect("stored");
    let event = receipt.expect("the message was found and moved");
    assert_eq!(
        s.message_by_id(inst, "P23")
            .await
            .expect("get")
            .map(|m| m.status),
        Some(MessageStatus::Read)
    );
    let query = EventQuery {
        limit: 100,
        ..EventQuery::default()
    };
    let (events, _) = s.list_events(inst, &query).await.expect("events");
    assert_eq!(
        events.len(),
        24,
        "23 messages' events and the receipt's, not the duplicate's"
    );
    assert!(
        events.iter().any(|e| e.id == event.id),
        "the receipt's event is stored"
    );
}

fn label(instance_id: &str, label_id: &str, name: &str, at: chrono::DateTime<Utc>) -> Label {
    Label {
        id: new_id(),
        instance_id: instance_id.to_owned(),
        label_id: label_id.to_owned(),
        name: name.to_owned(),
        color: 4,
        created_at: at,
        updated_at: at,
    }
}

pub async fn chat_settings_and_labels(s: DynStorage) {
    let owner = user("chats@example.com", Role::User);
    s.create_user(&owner).await.expect("user");
    let inst = instance(&owner.id);
    s.create_instance(&inst).await.expect("instance");
    let (a, b) = ("79001110001@s.whatsapp.net", "120363000000000001@g.us");
    let t = ms_now();
    assert_eq!(s.chat_settings(&inst.id, a).await.expect("read"), None);

    let mut chat = ChatSettings::new(&inst.id, a, t);
    chat.apply(&ChatChange::Pin(true), t);
    let until = t + Duration::hours(8);
    chat.apply(&ChatChange::Mute(Some(Mute::Until(until))), t);
    s.put_chat_settings(&chat).await.expect("put");
    assert_eq!(
        s.chat_settings(&inst.id, a).await.expect("read"),
        Some(chat.clone())
    );

    // A second put for the same chat replaces it and keeps the first id.
    let mut again = ChatSettings::new(&inst.id, a, t + Duration::seconds(1));
    again.apply(&ChatChange::Archive(true), again.updated_at);
    again.apply(
        &ChatChange::Label {
            label_id: "10".into(),
            attached: true,
        },
        again.updated_at,
    );
    s.put_chat_settings(&again).await.expect("put again");
    let stored = s
        .chat_settings(&inst.id, a)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(stored.id, chat.id, "the first id stays");
    assert!(stored.archived && !stored.pinned);
    assert_eq!(stored.mute, None);
    assert_eq!(stored.labels, ["10"]);

    let mut group = ChatSettings::new(&inst.id, b, t);
    group.apply(&ChatChange::Mute(Some(Mute::Forever)), t);
    s.put_chat_settings(&group).await.expect("put group");
    let mut both = s
        .chat_settings_of(
            &inst.id,
            &[a.into(), b.into(), "7900@s.whatsapp.net".into()],
        )
        .await
        .expect("several");
    both.sort_by(|x, y| x.remote_jid.cmp(&y.remote_jid));
    assert_eq!(both.len(), 2);
    assert_eq!(both[0].mute, Some(Mute::Forever));
    assert!(
        s.chat_settings_of(&inst.id, &[])
            .await
            .expect("none")
            .is_empty()
    );

    // Labels: upserted by label id (the first id and creation stay), listed by number.
    for (id, name) in [("10", "Ten"), ("9", "Nine"), ("10", "Ten again")] {
        s.put_label(&label(&inst.id, id, name, t))
            .await
            .expect("label");
    }
    let labels = s.labels(&inst.id).await.expect("labels");
    let names: Vec<_> = labels
        .iter()
        .map(|l| (l.label_id.as_str(), l.name.as_str()))
        .collect();
    assert_eq!(names, [("9", "Nine"), ("10", "Ten again")]);
    assert_eq!(labels[1].color, 4);
    assert!(s.delete_label(&inst.id, "9").await.expect("delete"));
    assert!(!s.delete_label(&inst.id, "9").await.expect("delete again"));
    assert_eq!(s.labels(&inst.id).await.expect("labels").len(), 1);

    // Deleting the instance takes its chats and labels along.
    assert!(s.delete_instance(&inst.id).await.expect("delete instance"));
    assert_eq!(s.chat_settings(&inst.id, a).await.expect("read"), None);
    assert!(s.labels(&inst.id).await.expect("labels").is_empty());
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
                messages_and_statuses, history_and_chats, contacts_upsert_and_search, transfer_round_trip,
                waba_accounts, waba_chats_and_messages, waba_assignment, waba_media, ping_and_provider, closed_store_is_unavailable,
                messages_recorded_with_contact_and_event, pipelined_writes_are_told_in_order_once_committed,
                chat_settings_and_labels);
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

/// The in-memory storage the actors' own tests run on: it must keep the same contract.
async fn memory_store() -> (DynStorage, ()) {
    let store = wagate_actors::testing::MemoryStorage::default();
    (std::sync::Arc::new(store), ())
}

storage_suite!(memory, memory_store);

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

/// SQLite checkpoints off the commit path: automatic checkpoints are off on every
/// connection, the WAL's file is capped, and the background task resets the WAL to zero
/// bytes once writes stop (without it, the WAL would only grow while the server runs).
#[tokio::test]
async fn sqlite_checkpoints_run_in_the_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wal.db");
    let store = wagate::storage::sqlite::SqliteStorage::open(&path)
        .await
        .expect("open sqlite");
    let pragma = |sql: &'static str| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .expect(sql)
        }
    };
    assert_eq!(pragma("PRAGMA wal_autocheckpoint").await, 0);
    assert_eq!(pragma("PRAGMA journal_size_limit").await, 64 * 1024 * 1024);
    let s: DynStorage = std::sync::Arc::new(store.clone());
    for n in 0..300 {
        s.append_event(&numbered_event("wal", "message_received", n))
            .await
            .expect("append");
    }
    let wal = dir.path().join("wal.db-wal");
    crate::common::eventually(30, "the WAL to be reset once writes stopped", || async {
        let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
        (size == 0).then_some(())
    })
    .await;
    let query = EventQuery {
        limit: 1000,
        ..EventQuery::default()
    };
    let (events, _) = s.list_events("wal", &query).await.expect("events");
    assert_eq!(events.len(), 300, "every write is still there");
}
