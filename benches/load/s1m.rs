//! S1M: S1's send-text with MongoDB as the storage (SecantusDB, the MongoDB-wire test
//! server `WAGATE_TEST_SECANTUSD` names), against the raw driver writing the same two
//! documents per send (the message and its `message_sent` event) to the same server, the
//! two phases interleaved as in S1.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mongodb::bson::{Document, doc};

use super::s8::start_secantus;
use super::{
    Ctx, Op, ROUNDS, Res, Row, Server, Sizes, closed_loop, median_spread, send_text_op, stored_in,
};

/// The raw driver: per operation, the two documents a send stores, one insert each.
fn raw_op(db: mongodb::Database, instances: Arc<Vec<String>>) -> Op {
    let messages = db.collection::<Document>("messages");
    let events = db.collection::<Document>("events");
    Arc::new(move |i| {
        let (messages, events) = (messages.clone(), events.clone());
        let instance = instances[i as usize % instances.len()].clone();
        Box::pin(async move {
            let now = mongodb::bson::DateTime::now();
            let id = wagate_actors::domain::new_id();
            let message = doc! {
                "_id": &id, "instanceId": &instance, "messageId": format!("3EB0{id}"),
                "chatJid": "79001234567@s.whatsapp.net", "fromMe": true, "type": "text",
                "content": format!("benchmark message {i}"), "status": "sent",
                "timestamp": now, "createdAt": now, "updatedAt": now,
            };
            let event = doc! {
                "_id": wagate_actors::domain::new_id(), "instanceId": &instance,
                "kind": "message_sent", "ts": now,
                "data": {"messageId": format!("3EB0{id}"), "phone": "79001234567",
                         "body": format!("benchmark message {i}"), "status": "sent"},
            };
            messages.insert_one(message).await.is_ok() && events.insert_one(event).await.is_ok()
        })
    })
}

pub(super) async fn s1m(sizes: &Sizes) -> Res<Vec<Row>> {
    let (_mongo, port) = start_secantus("S1M")?;
    let dir = tempfile::tempdir().ctx("temp dir")?;
    let srv = Arc::new(
        Server::start(
            dir.path(),
            &[
                ("database_provider", "mongodb".to_owned()),
                (
                    "database_url",
                    format!("mongodb://127.0.0.1:{port}/wagate_s1m"),
                ),
            ],
        )
        .await?,
    );
    let ids = srv
        .create_instances("s1m", sizes.s1_instances, 4, None)
        .await?;
    srv.wait_connected(ids.len(), Duration::from_secs(60))
        .await?;
    let raw = mongodb::Client::with_uri_str(format!("mongodb://127.0.0.1:{port}/s1m_raw"))
        .await
        .ctx("connect the raw driver")?
        .database("s1m_raw");
    let sent = Arc::new(AtomicU64::new(0));
    let send_op = send_text_op(&srv, &ids, sent.clone());
    let raw_op = raw_op(raw, Arc::new(ids.clone()));
    let w = sizes.workers;
    let cap = 10_000_000;
    println!("S1M: warm-up");
    closed_loop(raw_op.clone(), w, Duration::from_secs(1), cap).await;
    closed_loop(send_op.clone(), w, Duration::from_secs(1), cap).await;
    let (mut raw_rates, mut send_rates) = (Vec::new(), Vec::new());
    let mut errors = 0;
    for round in 1..=ROUNDS {
        let raw = closed_loop(raw_op.clone(), w, sizes.phase, cap).await;
        let send = closed_loop(send_op.clone(), w, sizes.phase, cap).await;
        println!(
            "S1M round {round}: raw driver {:.0}/s ({} errors), send-text {:.0}/s ({} errors)",
            raw.rate(),
            raw.errors,
            send.rate(),
            send.errors
        );
        errors += raw.errors + send.errors;
        raw_rates.push(raw.rate());
        send_rates.push(send.rate());
    }
    let ratio = median_spread(
        send_rates
            .iter()
            .zip(&raw_rates)
            .map(|(s, r)| s / r)
            .collect(),
    );
    let stored = stored_in(&srv, &ids, "79001234567").await?;
    let accepted = sent.load(Ordering::Relaxed);
    let persisted = stored == accepted;
    let rows = vec![
        Row::new(
            "S1M",
            "send-text throughput, MongoDB storage",
            median_spread(send_rates).0,
            "req/s",
            "raw driver: the message and its event, one insert each",
            Some(median_spread(raw_rates).0),
            "report",
            persisted && errors == 0,
        )
        .median_ratio(ratio.0)
        .note(format!(
            "median of {ROUNDS} interleaved rounds {:.3}× (spread {:.3}–{:.3}×); {w} clients, {} instances; {accepted} sends accepted, {stored} stored, {errors} errors; SecantusDB in memory",
            ratio.0,
            ratio.1,
            ratio.2,
            ids.len()
        )),
    ];
    Arc::into_inner(srv)
        .ok_or("server still shared")?
        .stop()
        .await?;
    Ok(rows)
}
