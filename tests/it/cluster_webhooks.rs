//! The webhook outbox a cluster's nodes share (MongoDB, here SecantusDB): its queue
//! rules on their own, then real nodes handing an instance's backlog over when its owner
//! is killed.

use std::collections::{BTreeMap, HashSet};

use chrono::Utc;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use reqwest::Method;
use serde_json::json;
use wagate::storage::mongo::outbox::MongoOutbox;
use wagate_actors::webhook_queue::{
    DELIVERY_RECORDS_KEPT, DeadLetter, DeliveryRecord, DeliveryStatus, Outbox, WebhookJob,
};

use crate::cluster::{Cluster, Leases, owners, paired};
use crate::common::{eventually, fresh_mongodb_url, mongo_database};
use crate::receiver::Receiver;

async fn outbox(url: &str) -> MongoOutbox {
    MongoOutbox::open(mongo_database(url).await)
        .await
        .expect("open")
}

fn job(instance: &str, event: &str) -> WebhookJob {
    WebhookJob {
        seq: 0,
        instance_id: instance.into(),
        event_id: event.into(),
        event: "connected".into(),
        body: format!("{{\"id\":\"{event}\"}}").into_bytes(),
        attempts: 0,
        created_at: Utc::now(),
        not_before: None,
    }
}

fn events_of(jobs: &[WebhookJob]) -> Vec<&str> {
    jobs.iter().map(|j| j.event_id.as_str()).collect()
}

#[tokio::test]
async fn the_shared_outbox_keeps_each_instance_in_order_and_each_event_once() {
    let url = fresh_mongodb_url();
    let outbox = outbox(&url).await;
    outbox
        .push_many(
            vec![job("a", "e1"), job("a", "e2"), job("b", "e3")],
            vec![("a".into(), "e2".into()), ("b".into(), "e3".into())],
        )
        .await
        .expect("push");
    // "a" is a prefix of "ab": they stay apart.
    outbox.push(job("ab", "e4")).await.expect("push");
    // The same event queued again (a catch-up after a crash between the jobs and the
    // cursor, or two owners over a hand-over) is one job; a cursor never moves back.
    outbox
        .push_many(vec![job("a", "e1")], vec![("a".into(), "e1".into())])
        .await
        .expect("push again");
    let pending = outbox.pending("a", 10).await.expect("pending");
    assert_eq!(events_of(&pending), ["e1", "e2"]);
    assert_eq!(
        pending[0].body, b"{\"id\":\"e1\"}",
        "the body byte for byte"
    );
    assert_eq!(
        outbox.cursor("a").await.expect("cursor").as_deref(),
        Some("e2")
    );
    assert_eq!(outbox.depth().await.expect("depth"), 4);
    assert_eq!(
        outbox.pending_instances().await.expect("instances"),
        ["a", "ab", "b"]
    );

    // An attempt that failed: its count and its next time are kept.
    let mut head = outbox.head("a").await.expect("head").expect("a head");
    head.attempts = 2;
    head.not_before = Some(Utc::now());
    outbox.update(&head).await.expect("update");
    let again = outbox.head("a").await.expect("head").expect("a head");
    assert_eq!((again.event_id.as_str(), again.attempts), ("e1", 2));
    assert!(again.not_before.is_some());

    // Given up: a dead letter, out of the queue; revived at the end of the queue.
    outbox
        .bury(DeadLetter {
            job: again.clone(),
            http_status: Some(500),
            error: Some("HTTP 500".into()),
            failed_at: Utc::now(),
        })
        .await
        .expect("bury");
    assert_eq!(
        events_of(&outbox.pending("a", 10).await.expect("pending")),
        ["e2"]
    );
    let dead = outbox.dead_letters("a").await.expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].job.event_id.as_str(), dead[0].http_status),
        ("e1", Some(500))
    );
    let backlog = outbox.backlog().await.expect("backlog");
    let of_a = backlog
        .iter()
        .find(|b| b.instance_id == "a")
        .expect("a in the backlog");
    assert_eq!((of_a.pending, of_a.failed), (1, 1));
    assert!(of_a.oldest_pending.is_some());
    let revived = outbox.revive("a", "e1").await.expect("revive");
    assert_eq!(revived.map(|j| j.attempts), Some(2), "attempts kept");
    assert_eq!(outbox.revive("a", "e1").await.expect("revive"), None);
    // A replay of an event still queued is a second job of it, after the first.
    outbox.requeue(job("a", "e2")).await.expect("requeue");
    assert_eq!(
        events_of(&outbox.pending("a", 10).await.expect("pending")),
        ["e2", "e1", "e2"]
    );
    assert!(outbox.dead_letters("a").await.expect("dead").is_empty());

    // Delivered jobs leave; a purge forgets the instance, and only it.
    for job in outbox.pending("a", 1).await.expect("pending") {
        outbox.remove(&job).await.expect("remove");
    }
    assert_eq!(
        events_of(&outbox.pending("a", 10).await.expect("pending")),
        ["e1", "e2"]
    );
    outbox.purge("a").await.expect("purge");
    assert_eq!(outbox.head("a").await.expect("head"), None);
    assert_eq!(outbox.cursor("a").await.expect("cursor"), None);
    assert_eq!(
        outbox.head("ab").await.expect("head").map(|j| j.event_id),
        Some("e4".into())
    );
    assert_eq!(outbox.depth().await.expect("depth"), 2);
}

#[tokio::test]
async fn the_origin_is_set_once_by_the_first_node() {
    let url = fresh_mongodb_url();
    let first = outbox(&url).await;
    let origin = first.origin().expect("an origin").to_owned();
    let made_after = wagate_actors::domain::new_id();
    assert!(origin < made_after, "made when the outbox was first opened");
    let second = outbox(&url).await;
    assert_eq!(
        second.origin(),
        Some(origin.as_str()),
        "read, not made again"
    );
    assert_eq!(
        first.pending_instances().await.expect("instances"),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn an_adopted_instance_queues_after_its_previous_owners_jobs() {
    let url = fresh_mongodb_url();
    let before = outbox(&url).await;
    before
        .push_many(
            vec![job("i", "e1"), job("i", "e2")],
            vec![("i".into(), "e2".into())],
        )
        .await
        .expect("push");
    // The previous owner's clock ran an hour ahead of the next owner's.
    let hour_us = 3_600_000_000_i64;
    mongo_database(&url)
        .await
        .collection::<Document>("webhook_jobs")
        .update_many(doc! {"instance": "i"}, doc! {"$inc": {"seq": hour_us}})
        .await
        .expect("move the jobs an hour ahead");

    // Without adopting, a node would queue before them...
    let careless = outbox(&url).await;
    careless.push(job("i", "x")).await.expect("push");
    assert_eq!(
        events_of(&careless.pending("i", 10).await.expect("pending")),
        ["x", "e1", "e2"]
    );
    careless.purge("i").await.expect("purge");
    before
        .push_many(vec![job("i", "e1"), job("i", "e2")], Vec::new())
        .await
        .expect("push");
    mongo_database(&url)
        .await
        .collection::<Document>("webhook_jobs")
        .update_many(doc! {"instance": "i"}, doc! {"$inc": {"seq": hour_us}})
        .await
        .expect("move the jobs an hour ahead");
    // ...the node that adopts the instance queues after them.
    let next = outbox(&url).await;
    next.adopt("i").await.expect("adopt");
    next.push(job("i", "e3")).await.expect("push");
    next.push(job("i", "e4")).await.expect("push");
    assert_eq!(
        events_of(&next.pending("i", 10).await.expect("pending")),
        ["e1", "e2", "e3", "e4"]
    );
}

#[tokio::test]
async fn delivery_records_are_newest_first_and_bounded() {
    let url = fresh_mongodb_url();
    let outbox = outbox(&url).await;
    let extra = 60;
    for n in 0..DELIVERY_RECORDS_KEPT + extra {
        let record = DeliveryRecord {
            event_id: format!("e{n}"),
            event: "connected".into(),
            attempt: 1,
            status: if n % 2 == 0 {
                DeliveryStatus::Delivered
            } else {
                DeliveryStatus::Retrying
            },
            http_status: Some(200),
            error: None,
            duration_ms: 3,
            created_at: Utc::now(),
        };
        outbox.record("i", record).await.expect("record");
    }
    outbox
        .record(
            "other",
            DeliveryRecord {
                event_id: "o".into(),
                event: "connected".into(),
                attempt: 2,
                status: DeliveryStatus::Failed,
                http_status: None,
                error: Some("refused".into()),
                duration_ms: 1,
                created_at: Utc::now(),
            },
        )
        .await
        .expect("record");
    let page = outbox.deliveries("i", 3, 0).await.expect("deliveries");
    let newest = DELIVERY_RECORDS_KEPT + extra - 1;
    assert_eq!(
        page.items
            .iter()
            .map(|r| r.event_id.clone())
            .collect::<Vec<_>>(),
        [
            format!("e{newest}"),
            format!("e{}", newest - 1),
            format!("e{}", newest - 2)
        ]
    );
    assert!(
        page.total >= DELIVERY_RECORDS_KEPT as u64
            && page.total < (DELIVERY_RECORDS_KEPT + extra) as u64,
        "trimmed to about the kept number: {}",
        page.total
    );
    let other = outbox.deliveries("other", 10, 0).await.expect("deliveries");
    assert_eq!(other.total, 1);
    assert_eq!(other.items[0].status, DeliveryStatus::Failed);
    assert_eq!(other.items[0].error.as_deref(), Some("refused"));
    assert_eq!(other.items[0].http_status, None);
}

/// The `message_sent` events stored for `instance`, oldest first.
async fn sent_events(url: &str, instance: &str) -> Vec<String> {
    let docs: Vec<Document> = mongo_database(url)
        .await
        .collection::<Document>("events")
        .find(doc! {"instanceId": instance, "kind": "message_sent"})
        .sort(doc! {"_id": 1})
        .await
        .expect("events")
        .try_collect()
        .await
        .expect("events");
    docs.iter()
        .map(|d| d.get_str("_id").expect("an id").to_owned())
        .collect()
}

/// kill -9 of the node that owns hooked instances while their receiver holds every
/// request: the survivors take the instances over and deliver every stored `message_sent`
/// event, each instance's in the order of its events. Nothing delivered before the hold
/// goes out again; the only events delivered twice are those whose request was in flight
/// at the kill.
#[tokio::test]
async fn webhooks_of_a_killed_owner_are_delivered_by_the_survivors() {
    let mut cluster = Cluster::start(3, Leases::Short).await;
    let auth = cluster.admin_when_all_live().await;
    let instances = paired(&cluster, &auth, 6, "hooks").await;
    let rx = Receiver::start().await;
    let via = cluster.node("n1");
    for (id, _) in &instances {
        let (status, body) = via
            .call(
                Method::PUT,
                &format!("/api/instances/{id}"),
                &auth,
                Some(json!({"webhookUrl": rx.url(), "webhookEnabled": true})),
            )
            .await;
        assert_eq!(status, 200, "set the webhook: {body}");
    }
    let send_round = |round: u32| {
        let instances = &instances;
        let auth = &auth;
        async move {
            for (id, _) in instances {
                let (status, body) = via
                    .call(
                        Method::POST,
                        &format!("/api/whatsapp/{id}/send"),
                        auth,
                        Some(json!({"phone": "79170000999", "message": format!("m{round}")})),
                    )
                    .await;
                assert_eq!(status, 200, "send: {body}");
            }
        }
    };
    let ids_of = |r: &[crate::receiver::Received], event: &str| -> Vec<String> {
        r.iter()
            .map(|r| r.json())
            .filter(|r| r["event"] == event)
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect()
    };
    // Delivered and answered before the hold.
    send_round(0).await;
    send_round(1).await;
    rx.wait_for("the first two rounds", 60, |r| {
        ids_of(r, "message_sent").len() >= 2 * instances.len()
    })
    .await;
    let delivered_early: HashSet<String> =
        ids_of(&rx.received(), "message_sent").into_iter().collect();
    rx.hold();
    send_round(2).await;
    send_round(3).await;
    // Every instance's worker waits on a request of the third round.
    eventually(60, "a request of every instance held", || async {
        (rx.in_flight() == instances.len()).then_some(())
    })
    .await;
    let before = owners(via, &auth, &instances).await;
    let victim = before
        .values()
        .map(|(node, _)| node.clone())
        .find(|n| n != "n1")
        .expect("a node other than n1 owns an instance");
    let in_flight: HashSet<String> = ids_of(&rx.received(), "message_sent")
        .into_iter()
        .filter(|id| !delivered_early.contains(id))
        .collect();
    cluster.take(&victim).server.kill_hard().await;
    rx.release();

    let mut stored: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, _) in &instances {
        let sent = sent_events(&cluster.url, id).await;
        assert_eq!(sent.len(), 4, "{id}: four sends stored");
        stored.insert(id.clone(), sent);
    }
    let wanted: HashSet<String> = stored.values().flatten().cloned().collect();
    let got = rx
        .wait_for("every message_sent delivered", 90, |r| {
            let seen: HashSet<String> = r
                .iter()
                .filter_map(|r| r.json()["id"].as_str().map(str::to_owned))
                .collect();
            wanted.is_subset(&seen)
        })
        .await;

    let mut first: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for r in got.iter().map(|r| r.json()) {
        if r["event"] != "message_sent" {
            continue;
        }
        let id = r["id"].as_str().expect("an id").to_owned();
        if !seen.insert(id.clone()) {
            assert!(
                in_flight.contains(&id),
                "{id} delivered twice, but not in flight at the kill"
            );
            continue;
        }
        let instance = r["data"]["instanceId"].as_str().expect("instanceId");
        first.entry(instance.to_owned()).or_default().push(id);
    }
    assert_eq!(first, stored, "each instance's events once each, in order");

    // The records of the deliveries are shared too: any node lists them, the previous
    // owner's beside the new one's (each is written once its answer came).
    let moved = before
        .iter()
        .find(|(_, (node, _))| *node == victim)
        .map(|(id, _)| id.clone())
        .expect("an instance of the victim");
    let n1 = cluster.node("n1");
    eventually(30, "the four sends' deliveries listed by n1", || async {
        let (status, body) = n1
            .call(
                Method::GET,
                &format!("/api/instances/{moved}/webhook/deliveries"),
                &auth,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let delivered: HashSet<&str> = body["deliveries"]
            .as_array()
            .expect("deliveries")
            .iter()
            .filter(|d| d["event"] == "message_sent" && d["status"] == "delivered")
            .filter_map(|d| d["eventId"].as_str())
            .collect();
        stored[&moved]
            .iter()
            .all(|id| delivered.contains(id.as_str()))
            .then_some(())
    })
    .await;
}
