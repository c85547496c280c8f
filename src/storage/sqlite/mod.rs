//! SQLite storage on sqlx: one file in WAL mode, migrations from `migrations/` embedded in
//! the binary and applied at start.
//!
//! - this file: users, instances, activity, events;
//! - [`messaging`]: messages, chats and contacts.
//! - [`stats`]: daily usage buckets.
//! - [`transfer`]: whole-store export, import, counts and clearing (provider switches).
//! - [`commits`]: the group-commit writer the writes of every message go through;
//!   [`sql`]: the statements they join into one query, and their bound arguments.

#[macro_use]
mod sql;

mod chats;
mod checkpoint;
mod commits;
mod messaging;
mod stats;
mod transfer;
mod waba;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteExecutor, SqlitePool};
use wagate_actors::domain::{
    ActivityEntry, ActivityQuery, EventQuery, Instance, InstanceEvent, InstanceStatus,
    MessageStatus, Page, Role, User, WebhookSettings,
};
use wagate_actors::error::StoreError;
use wagate_actors::store::{
    ActivityStore, EventStore, InstanceStore, Storage, StoreResult, UserStore,
};

use self::checkpoint::{Checkpointer, IDLE_BUSY_TIMEOUT, JOURNAL_SIZE_LIMIT};
use self::commits::CommitQueue;
use self::sql::{Binding, Bound};
use super::from_millis;

/// The embedded migrations (`migrations/*.sql`, append-only).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Read connections of a file database.
const READERS: u32 = 8;

/// SQLite implementation of every storage trait. Cheap to clone (pool handles).
#[derive(Clone, Debug)]
pub struct SqliteStorage {
    /// Readers: WAL lets them run beside the writer.
    pool: SqlitePool,
    /// The one connection every write goes through. SQLite admits one writer at a time;
    /// with writes spread over the pool, the losers sleep in SQLite's busy handler
    /// (1, 2, 5, 10… ms). Queued on this pool they wait their turn without sleeping.
    writer: SqlitePool,
    /// The writes every message makes (messages, contacts, events, statuses), committed
    /// in batches on the writer's connection.
    commits: CommitQueue,
    /// The WAL checkpoints of a file database (none in memory); stops with the last clone.
    checkpoints: Option<Arc<Checkpointer>>,
}

impl SqliteStorage {
    /// Opens (creating if needed) the database file and applies pending migrations.
    /// `:memory:` gives a private in-memory database (one connection, for tests).
    ///
    /// Fails when the file cannot be created or opened, or a migration fails.
    pub async fn open(path: &Path) -> Result<SqliteStorage, StoreError> {
        let memory = path.as_os_str() == ":memory:";
        let mut options = if memory {
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(unavailable)?
        } else {
            if let Some(parent) = path.parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // WAL + NORMAL: durable across process crashes, fsync only at checkpoints.
                .synchronous(SqliteSynchronous::Normal)
                // Checkpoints run in the background (checkpoint.rs), never inside a commit.
                .pragma("wal_autocheckpoint", "0")
                .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT.to_string())
        };
        options = options
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(if memory { 1 } else { READERS })
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(if memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if memory {
                None
            } else {
                Some(Duration::from_secs(3600))
            })
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(unavailable)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        // An in-memory database lives in its single connection: it reads and writes there.
        if memory {
            return Ok(SqliteStorage {
                commits: CommitQueue::start(pool.clone()),
                writer: pool.clone(),
                pool,
                checkpoints: None,
            });
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // No ping before each batch: a round trip to the connection's thread per
            // batch, and a broken connection fails the batch's BEGIN just as clearly.
            .test_before_acquire(false)
            .min_connections(0)
            .idle_timeout(Some(Duration::from_secs(600)))
            .max_lifetime(Some(Duration::from_secs(3600)))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(unavailable)?;
        // One connection kept for the life of the storage: `data_version` is per connection.
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.busy_timeout(IDLE_BUSY_TIMEOUT))
            .await
            .map_err(unavailable)?;
        Ok(SqliteStorage {
            pool,
            commits: CommitQueue::start(writer.clone()),
            writer,
            checkpoints: Some(Arc::new(Checkpointer::start(path, checkpointer))),
        })
    }

    /// The underlying pool, for benchmarks that compare against raw queries.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The pool of writes (one connection): inserts, updates, deletes and transactions.
    pub(crate) fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// The group commit of the writes every message makes.
    pub(crate) fn commits(&self) -> &CommitQueue {
        &self.commits
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Maps sqlx errors onto the seam's three kinds.
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// Runs a query with one bound text parameter and decodes the row it finds, if any.
async fn find_one<T>(
    pool: &SqlitePool,
    sql: &'static str,
    value: &str,
    decode: fn(&SqliteRow) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    sqlx::query(sql)
        .bind(value)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(decode)
        .transpose()
}

pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn user_from_row(row: &SqliteRow) -> StoreResult<User> {
    let role: String = row.try_get("role").map_err(map_err)?;
    Ok(User {
        id: row.try_get("id").map_err(map_err)?,
        email: row.try_get("email").map_err(map_err)?,
        password_hash: row.try_get("password_hash").map_err(map_err)?,
        first_name: row.try_get("first_name").map_err(map_err)?,
        last_name: row.try_get("last_name").map_err(map_err)?,
        role: Role::from_str(&role).map_err(corrupt)?,
        owner_id: row.try_get("owner_id").map_err(map_err)?,
        active: row.try_get("active").map_err(map_err)?,
        api_key_hash: row.try_get("api_key_hash").map_err(map_err)?,
        api_key_sealed: row.try_get("api_key_sealed").map_err(map_err)?,
        created_at: from_millis(row.try_get("created_at").map_err(map_err)?)?,
        updated_at: from_millis(row.try_get("updated_at").map_err(map_err)?)?,
    })
}

fn instance_from_row(row: &SqliteRow) -> StoreResult<Instance> {
    let engine: String = row.try_get("engine").map_err(map_err)?;
    let status: String = row.try_get("status").map_err(map_err)?;
    let settings: String = row.try_get("webhook_settings").map_err(map_err)?;
    let limits: Option<String> = row.try_get("limits").map_err(map_err)?;
    let last_activity: Option<i64> = row.try_get("last_activity").map_err(map_err)?;
    Ok(Instance {
        id: row.try_get("id").map_err(map_err)?,
        user_id: row.try_get("user_id").map_err(map_err)?,
        name: row.try_get("name").map_err(map_err)?,
        description: row.try_get("description").map_err(map_err)?,
        engine: engine.parse().map_err(corrupt)?,
        status: status.parse().map_err(corrupt)?,
        phone: row.try_get("phone").map_err(map_err)?,
        webhook_url: row.try_get("webhook_url").map_err(map_err)?,
        webhook_enabled: row.try_get("webhook_enabled").map_err(map_err)?,
        webhook: serde_json::from_str::<WebhookSettings>(&settings).map_err(corrupt)?,
        limits: limits
            .map(|l| serde_json::from_str(&l))
            .transpose()
            .map_err(corrupt)?,
        last_activity: last_activity.map(from_millis).transpose()?,
        created_at: from_millis(row.try_get("created_at").map_err(map_err)?)?,
        updated_at: from_millis(row.try_get("updated_at").map_err(map_err)?)?,
    })
}

fn activity_from_row(row: &SqliteRow) -> StoreResult<ActivityEntry> {
    let details: String = row.try_get("details").map_err(map_err)?;
    Ok(ActivityEntry {
        id: row.try_get("id").map_err(map_err)?,
        instance_id: row.try_get("instance_id").map_err(map_err)?,
        action: row.try_get("action").map_err(map_err)?,
        details: serde_json::from_str(&details).map_err(corrupt)?,
        created_at: from_millis(row.try_get("created_at").map_err(map_err)?)?,
    })
}

fn event_from_row(row: &SqliteRow) -> StoreResult<InstanceEvent> {
    let data: String = row.try_get("data").map_err(map_err)?;
    let kind: String = row.try_get("kind").map_err(map_err)?;
    InstanceEvent::from_stored(
        row.try_get("id").map_err(map_err)?,
        row.try_get("instance_id").map_err(map_err)?,
        &kind,
        from_millis(row.try_get("ts").map_err(map_err)?)?,
        serde_json::from_str(&data).map_err(corrupt)?,
    )
    .map_err(corrupt)
}

/// `UPDATE {table} SET status = …, {stamps} = at WHERE {keys} AND status IN (…) RETURNING *`
/// for the forward-only status rule (`MessageStatus::predecessors`): one conditional
/// statement, so concurrent receipts cannot move a status backwards. `keys` pushes the
/// row's identifying conditions. None when nothing may become `status`.
pub(crate) fn forward_only_status(
    table: &str,
    stamps: &[&str],
    status: MessageStatus,
    at: DateTime<Utc>,
    keys: impl FnOnce(&mut QueryBuilder<Sqlite>),
) -> Option<QueryBuilder<Sqlite>> {
    let allowed = status.predecessors();
    if allowed.is_empty() {
        return None;
    }
    let mut qb = QueryBuilder::<Sqlite>::new(format!("UPDATE {table} SET status = "));
    qb.push_bind(status.as_str());
    for column in stamps {
        qb.push(format!(", {column} = ")).push_bind(ms(at));
    }
    qb.push(" WHERE ");
    keys(&mut qb);
    qb.push(" AND status IN (");
    let mut sep = qb.separated(", ");
    for s in allowed {
        sep.push_bind(s.as_str());
    }
    qb.push(") RETURNING *");
    Some(qb)
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn json(v: &impl serde::Serialize) -> StoreResult<String> {
    serde_json::to_string(v).map_err(corrupt)
}

/// SQLite integers are i64; limits and offsets from the API are unsigned.
pub(crate) fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Inserts one user row; shared by `create_user` and imports (inside a transaction).
pub(crate) async fn insert_user<'e>(ex: impl SqliteExecutor<'e>, u: &User) -> StoreResult<()> {
    sqlx::query(
            "INSERT INTO users (id, email, password_hash, first_name, last_name, role, owner_id, active,
                                api_key_hash, api_key_sealed, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(&u.first_name)
        .bind(&u.last_name)
        .bind(u.role.as_str())
        .bind(&u.owner_id)
        .bind(u.active)
        .bind(&u.api_key_hash)
        .bind(&u.api_key_sealed)
        .bind(ms(u.created_at))
        .bind(ms(u.updated_at))
        .execute(ex)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// Inserts one instance row with every field (status, phone and last activity too).
pub(crate) async fn insert_instance<'e>(
    ex: impl SqliteExecutor<'e>,
    i: &Instance,
) -> StoreResult<()> {
    sqlx::query(
            "INSERT INTO instances (id, user_id, name, description, engine, status, phone, webhook_url,
                                    webhook_enabled, webhook_settings, limits, last_activity, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&i.id)
        .bind(&i.user_id)
        .bind(&i.name)
        .bind(&i.description)
        .bind(i.engine.as_str())
        .bind(i.status.as_str())
        .bind(&i.phone)
        .bind(&i.webhook_url)
        .bind(i.webhook_enabled)
        .bind(json(&i.webhook)?)
        .bind(i.limits.as_ref().map(json).transpose()?)
        .bind(i.last_activity.map(ms))
        .bind(ms(i.created_at))
        .bind(ms(i.updated_at))
        .execute(ex)
        .await
        .map_err(map_err)?;
    Ok(())
}

pub(crate) async fn insert_activity<'e>(
    ex: impl SqliteExecutor<'e>,
    e: &ActivityEntry,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO activity (id, instance_id, action, details, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&e.id)
            .bind(&e.instance_id)
            .bind(&e.action)
            .bind(json(&e.details)?)
            .bind(ms(e.created_at))
            .execute(ex)
            .await
            .map_err(map_err)?;
    Ok(())
}

pub(crate) async fn insert_event<'e>(
    ex: impl SqliteExecutor<'e>,
    e: &InstanceEvent,
) -> StoreResult<()> {
    bind_event(sqlx::query(insert_event_sql!()), e)?
        .execute(ex)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// Binds the arguments of [`insert_event_sql`] for `e`.
fn bind_event(q: Binding, e: &InstanceEvent) -> StoreResult<Binding> {
    Ok(q.bind(&e.id)
        .bind(&e.instance_id)
        .bind(e.kind().as_str())
        .bind(ms(e.timestamp))
        .bind(json(&e.data())?))
}

#[async_trait]
impl UserStore for SqliteStorage {
    async fn create_user(&self, u: &User) -> StoreResult<()> {
        insert_user(self.writer(), u).await
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        find_one(
            &self.pool,
            "SELECT * FROM users WHERE id = ?",
            id,
            user_from_row,
        )
        .await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        find_one(
            &self.pool,
            "SELECT * FROM users WHERE email = ? COLLATE NOCASE",
            email,
            user_from_row,
        )
        .await
    }

    async fn user_by_api_key_hash(&self, hash: &str) -> StoreResult<Option<User>> {
        find_one(
            &self.pool,
            "SELECT * FROM users WHERE api_key_hash = ?",
            hash,
            user_from_row,
        )
        .await
    }

    async fn list_users(&self, limit: u32, skip: u64) -> StoreResult<Page<User>> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        let rows = sqlx::query("SELECT * FROM users ORDER BY created_at, id LIMIT ? OFFSET ?")
            .bind(i64::from(limit))
            .bind(clamp_i64(skip))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(Page {
            items: rows.iter().map(user_from_row).collect::<StoreResult<_>>()?,
            total: total.max(0) as u64,
        })
    }

    async fn update_user(&self, u: &User) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE users SET email = ?, password_hash = ?, first_name = ?, last_name = ?, role = ?,
                              owner_id = ?, active = ?, api_key_hash = ?, api_key_sealed = ?, updated_at = ?
             WHERE id = ?",
        )
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(&u.first_name)
        .bind(&u.last_name)
        .bind(u.role.as_str())
        .bind(&u.owner_id)
        .bind(u.active)
        .bind(&u.api_key_hash)
        .bind(&u.api_key_sealed)
        .bind(ms(u.updated_at))
        .bind(&u.id)
        .execute(self.writer())
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id)
            .execute(self.writer())
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn count_admins(&self) -> StoreResult<u64> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin' AND active = 1")
                .fetch_one(&self.pool)
                .await
                .map_err(map_err)?;
        Ok(n.max(0) as u64)
    }
}

#[async_trait]
impl InstanceStore for SqliteStorage {
    async fn create_instance(&self, i: &Instance) -> StoreResult<()> {
        insert_instance(self.writer(), i).await
    }

    async fn instance_by_id(&self, id: &str) -> StoreResult<Option<Instance>> {
        find_one(
            &self.pool,
            "SELECT * FROM instances WHERE id = ?",
            id,
            instance_from_row,
        )
        .await
    }

    async fn list_instances(&self, user_id: Option<&str>) -> StoreResult<Vec<Instance>> {
        let rows = match user_id {
            Some(uid) => {
                sqlx::query("SELECT * FROM instances WHERE user_id = ? ORDER BY id")
                    .bind(uid)
                    .fetch_all(&self.pool)
                    .await
            }
            None => {
                sqlx::query("SELECT * FROM instances ORDER BY id")
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(map_err)?;
        rows.iter().map(instance_from_row).collect()
    }

    async fn update_instance(&self, i: &Instance) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE instances SET name = ?, description = ?, engine = ?, webhook_url = ?, webhook_enabled = ?,
                                  webhook_settings = ?, limits = ?, updated_at = ?
             WHERE id = ?",
        )
        .bind(&i.name)
        .bind(&i.description)
        .bind(i.engine.as_str())
        .bind(&i.webhook_url)
        .bind(i.webhook_enabled)
        .bind(json(&i.webhook)?)
        .bind(i.limits.as_ref().map(json).transpose()?)
        .bind(ms(i.updated_at))
        .bind(&i.id)
        .execute(self.writer())
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_instance_status(
        &self,
        id: &str,
        status: InstanceStatus,
        phone: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let state = (id.to_owned(), phone.map(str::to_owned));
        self.commits()
            .submit(state, move |conn, (id, phone)| {
                Box::pin(async move {
                    sqlx::query("UPDATE instances SET status = ?, phone = COALESCE(?, phone), last_activity = ? WHERE id = ?")
                        .bind(status.as_str())
                        .bind(phone)
                        .bind(ms(at))
                        .bind(id)
                        .execute(conn)
                        .await
                        .map_err(map_err)?;
                    Ok(())
                })
            })
            .await
    }

    async fn delete_instance(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.writer().begin().await.map_err(map_err)?;
        for statement in [
            "DELETE FROM activity WHERE instance_id = ?",
            "DELETE FROM events WHERE instance_id = ?",
            "DELETE FROM messages WHERE instance_id = ?",
            "DELETE FROM contacts WHERE instance_id = ?",
            "DELETE FROM chat_settings WHERE instance_id = ?",
            "DELETE FROM labels WHERE instance_id = ?",
        ] {
            sqlx::query(statement)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        let done = sqlx::query("DELETE FROM instances WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }
}

/// Adds the activity filters shared by the count and the page query.
fn push_activity_filters(qb: &mut QueryBuilder<Sqlite>, instance_id: &str, q: &ActivityQuery) {
    qb.push(" WHERE instance_id = ")
        .push_bind(instance_id.to_owned());
    if !q.actions.is_empty() {
        qb.push(" AND action IN (");
        let mut sep = qb.separated(", ");
        for a in &q.actions {
            sep.push_bind(a.clone());
        }
        qb.push(")");
    }
    if let Some(start) = q.start {
        qb.push(" AND created_at >= ").push_bind(ms(start));
    }
    if let Some(end) = q.end {
        qb.push(" AND created_at <= ").push_bind(ms(end));
    }
}

#[async_trait]
impl ActivityStore for SqliteStorage {
    async fn append_activity(&self, e: &ActivityEntry) -> StoreResult<()> {
        let e = e.clone();
        self.commits()
            .submit(e, |conn, e| Box::pin(insert_activity(conn, e)))
            .await
    }

    async fn list_activity(
        &self,
        instance_id: &str,
        q: &ActivityQuery,
    ) -> StoreResult<Page<ActivityEntry>> {
        let mut count = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM activity");
        push_activity_filters(&mut count, instance_id, q);
        let total: i64 = count
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        let mut page = QueryBuilder::<Sqlite>::new("SELECT * FROM activity");
        push_activity_filters(&mut page, instance_id, q);
        page.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(q.limit))
            .push(" OFFSET ")
            .push_bind(clamp_i64(q.skip));
        let rows = page.build().fetch_all(&self.pool).await.map_err(map_err)?;
        Ok(Page {
            items: rows
                .iter()
                .map(activity_from_row)
                .collect::<StoreResult<_>>()?,
            total: total.max(0) as u64,
        })
    }
}

#[async_trait]
impl EventStore for SqliteStorage {
    async fn append_event(&self, e: &InstanceEvent) -> StoreResult<()> {
        let write = Bound::new(insert_event_sql!(), |q| bind_event(q, e))?;
        self.commits()
            .submit(write, |conn, write| Box::pin(write.execute(conn)))
            .await
    }

    async fn list_events(
        &self,
        instance_id: &str,
        q: &EventQuery,
    ) -> StoreResult<(Vec<InstanceEvent>, bool)> {
        let cursor = q.since.is_some() || q.after_id.is_some();
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM events WHERE instance_id = ");
        qb.push_bind(instance_id.to_owned());
        if let Some(since) = q.since {
            qb.push(" AND ts > ").push_bind(ms(since));
        }
        if let Some(after) = &q.after_id {
            qb.push(" AND id > ").push_bind(after.clone());
        }
        if !q.types.is_empty() {
            qb.push(" AND kind IN (");
            let mut sep = qb.separated(", ");
            for t in &q.types {
                sep.push_bind(t.clone());
            }
            qb.push(")");
        }
        qb.push(if cursor {
            " ORDER BY id ASC"
        } else {
            " ORDER BY id DESC"
        });
        qb.push(" LIMIT ").push_bind(i64::from(q.limit) + 1);
        let rows = qb.build().fetch_all(&self.pool).await.map_err(map_err)?;
        let mut events = rows
            .iter()
            .map(event_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let has_more = events.len() > q.limit as usize;
        events.truncate(q.limit as usize);
        if !cursor {
            events.reverse();
        }
        Ok((events, has_more))
    }
}

#[async_trait]
impl Storage for SqliteStorage {
    fn provider(&self) -> &'static str {
        "sqlite"
    }

    fn embedded(&self) -> bool {
        true
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(self.writer())
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn close(&self) {
        if let Some(checkpoints) = &self.checkpoints {
            checkpoints.stop().await;
        }
        self.writer.close().await;
        self.pool.close().await;
    }
}
