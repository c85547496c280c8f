//! Daily usage buckets on MongoDB: one document per (day, user, instance), its `_id` made
//! of the three, counters added with `$inc` in an upsert.

use async_trait::async_trait;
use chrono::NaiveDate;
use mongodb::bson::{Document, doc};
use wagate_actors::domain::{Usage, UsageFilter, UsageKey};
use wagate_actors::store::StatsStore;
use wagate_actors::store::StoreResult;

use super::{Fields, MongoStorage, clamp_i64, collect, corrupt, map_err};

pub(super) const USAGE: &str = "usage_daily";

const COUNTERS: [&str; 7] = [
    "messagesSent",
    "messagesReceived",
    "mediaSent",
    "mediaReceived",
    "totalMediaSize",
    "apiCalls",
    "webhookSent",
];

fn values(u: &Usage) -> [u64; 7] {
    [
        u.messages_sent,
        u.messages_received,
        u.media_sent,
        u.media_received,
        u.total_media_size,
        u.api_calls,
        u.webhook_sent,
    ]
}

pub(super) fn usage_from_doc(d: &Document) -> StoreResult<(UsageKey, Usage)> {
    let f = Fields(d);
    let day = f.string("day")?;
    let count =
        |name: &str| -> StoreResult<u64> { Ok(f.opt_i64(name)?.unwrap_or(0).max(0) as u64) };
    Ok((
        UsageKey {
            day: NaiveDate::parse_from_str(&day, "%Y-%m-%d").map_err(corrupt)?,
            user_id: f.string("userId")?,
            instance_id: f.string("instanceId")?,
        },
        Usage {
            messages_sent: count("messagesSent")?,
            messages_received: count("messagesReceived")?,
            media_sent: count("mediaSent")?,
            media_received: count("mediaReceived")?,
            total_media_size: count("totalMediaSize")?,
            api_calls: count("apiCalls")?,
            webhook_sent: count("webhookSent")?,
        },
    ))
}

/// The `_id` of a bucket: [`wagate_actors::store::usage_key`], so exports page by it.
fn bucket_id(k: &UsageKey) -> String {
    wagate_actors::store::usage_key(k)
}

/// A whole bucket document with its counters set, as an import stores it.
pub(super) fn usage_doc(k: &UsageKey, u: &Usage) -> Document {
    let mut d = doc! {
        "_id": bucket_id(k),
        "day": k.day.format("%Y-%m-%d").to_string(),
        "userId": &k.user_id,
        "instanceId": &k.instance_id,
    };
    for (name, value) in COUNTERS.iter().zip(values(u)) {
        d.insert(*name, clamp_i64(value));
    }
    d
}

#[async_trait]
impl StatsStore for MongoStorage {
    async fn add_usage(&self, rows: &[(UsageKey, Usage)]) -> StoreResult<()> {
        let coll = self.coll(USAGE)?;
        for (k, u) in rows {
            let day = k.day.format("%Y-%m-%d").to_string();
            let mut inc = Document::new();
            for (name, value) in COUNTERS.iter().zip(values(u)) {
                inc.insert(*name, clamp_i64(value));
            }
            coll.update_one(
                doc! {"_id": bucket_id(k)},
                doc! {
                    "$setOnInsert": {"day": &day, "userId": &k.user_id, "instanceId": &k.instance_id},
                    "$inc": inc,
                },
            )
            .upsert(true)
            .await
            .map_err(map_err)?;
        }
        Ok(())
    }

    async fn usage(&self, filter: &UsageFilter) -> StoreResult<Vec<(UsageKey, Usage)>> {
        let mut query = Document::new();
        if let Some(user) = &filter.user_id {
            query.insert("userId", user);
        }
        if let Some(instance) = &filter.instance_id {
            query.insert("instanceId", instance);
        }
        if let Some(from) = filter.from {
            query.insert("day", doc! {"$gte": from.format("%Y-%m-%d").to_string()});
        }
        let cursor = self.coll(USAGE)?.find(query).await.map_err(map_err)?;
        collect(cursor, usage_from_doc).await
    }
}
