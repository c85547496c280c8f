//! Daily usage buckets on SQLite.

use async_trait::async_trait;
use chrono::NaiveDate;
use sqlx::{QueryBuilder, Row, Sqlite};
use wagate_actors::domain::{Usage, UsageFilter, UsageKey};
use wagate_actors::store::StatsStore;
use wagate_actors::store::StoreResult;

use super::{SqliteStorage, clamp_i64, corrupt, map_err};

fn count(row: &sqlx::sqlite::SqliteRow, column: &str) -> StoreResult<u64> {
    let v: i64 = row.try_get(column).map_err(map_err)?;
    Ok(v.max(0) as u64)
}

/// One `usage_daily` row as a bucket.
pub(super) fn usage_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<(UsageKey, Usage)> {
    let day: String = row.try_get("day").map_err(map_err)?;
    Ok((
        UsageKey {
            day: NaiveDate::parse_from_str(&day, "%Y-%m-%d").map_err(corrupt)?,
            user_id: row.try_get("user_id").map_err(map_err)?,
            instance_id: row.try_get("instance_id").map_err(map_err)?,
        },
        Usage {
            messages_sent: count(row, "messages_sent")?,
            messages_received: count(row, "messages_received")?,
            media_sent: count(row, "media_sent")?,
            media_received: count(row, "media_received")?,
            total_media_size: count(row, "total_media_size")?,
            api_calls: count(row, "api_calls")?,
            webhook_sent: count(row, "webhook_sent")?,
        },
    ))
}

#[async_trait]
impl StatsStore for SqliteStorage {
    async fn add_usage(&self, rows: &[(UsageKey, Usage)]) -> StoreResult<()> {
        let mut tx = self.writer().begin().await.map_err(map_err)?;
        for (k, u) in rows {
            sqlx::query(
                "INSERT INTO usage_daily (day, user_id, instance_id, messages_sent, messages_received, media_sent,
                                          media_received, total_media_size, api_calls, webhook_sent)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (day, user_id, instance_id) DO UPDATE SET
                     messages_sent = messages_sent + excluded.messages_sent,
                     messages_received = messages_received + excluded.messages_received,
                     media_sent = media_sent + excluded.media_sent,
                     media_received = media_received + excluded.media_received,
                     total_media_size = total_media_size + excluded.total_media_size,
                     api_calls = api_calls + excluded.api_calls,
                     webhook_sent = webhook_sent + excluded.webhook_sent",
            )
            .bind(k.day.format("%Y-%m-%d").to_string())
            .bind(&k.user_id)
            .bind(&k.instance_id)
            .bind(clamp_i64(u.messages_sent))
            .bind(clamp_i64(u.messages_received))
            .bind(clamp_i64(u.media_sent))
            .bind(clamp_i64(u.media_received))
            .bind(clamp_i64(u.total_media_size))
            .bind(clamp_i64(u.api_calls))
            .bind(clamp_i64(u.webhook_sent))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn usage(&self, filter: &UsageFilter) -> StoreResult<Vec<(UsageKey, Usage)>> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM usage_daily WHERE 1 = 1");
        if let Some(user) = &filter.user_id {
            qb.push(" AND user_id = ").push_bind(user.clone());
        }
        if let Some(instance) = &filter.instance_id {
            qb.push(" AND instance_id = ").push_bind(instance.clone());
        }
        if let Some(from) = filter.from {
            qb.push(" AND day >= ")
                .push_bind(from.format("%Y-%m-%d").to_string());
        }
        let rows = qb.build().fetch_all(self.pool()).await.map_err(map_err)?;
        rows.iter().map(usage_from_row).collect()
    }
}
