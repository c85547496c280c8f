//! The storage seam: small async traits owned by the domain. The server crate implements
//! them for SQLite (sqlx) and MongoDB; both pass one shared test suite.
//!
//! Every method fails with [`StoreError::Unavailable`] when the backend cannot be reached,
//! and with [`StoreError::Conflict`] where a uniqueness rule is named in its docs.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    ActivityEntry, ActivityQuery, EventQuery, Instance, InstanceEvent, InstanceStatus, Page, User,
};
use crate::error::StoreError;
pub use crate::messaging::{ContactStore, MessageStore};
pub use crate::stats::StatsStore;

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Fails with `Conflict` when the email (case-insensitive) is taken.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>>;
    /// Case-insensitive.
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    async fn user_by_api_key_hash(&self, hash: &str) -> StoreResult<Option<User>>;
    /// Oldest first.
    async fn list_users(&self, limit: u32, skip: u64) -> StoreResult<Page<User>>;
    /// Replaces every field but `id` and `created_at`. Returns false when the user does
    /// not exist. Fails with `Conflict` when the new email is taken.
    async fn update_user(&self, user: &User) -> StoreResult<bool>;
    /// Returns false when the user does not exist.
    async fn delete_user(&self, id: &str) -> StoreResult<bool>;
    async fn count_admins(&self) -> StoreResult<u64>;
}

#[async_trait]
pub trait InstanceStore: Send + Sync {
    async fn create_instance(&self, instance: &Instance) -> StoreResult<()>;
    async fn instance_by_id(&self, id: &str) -> StoreResult<Option<Instance>>;
    /// Instances of one user, or of everybody when `user_id` is None; oldest first.
    async fn list_instances(&self, user_id: Option<&str>) -> StoreResult<Vec<Instance>>;
    /// Replaces the user-editable fields (name, description, engine, webhook settings,
    /// limits) and `updated_at`. Returns false when the instance does not exist.
    async fn update_instance(&self, instance: &Instance) -> StoreResult<bool>;
    /// Records a status change (and the linked phone, when known) without touching the
    /// user-editable fields. `at` becomes `last_activity`.
    async fn set_instance_status(
        &self,
        id: &str,
        status: InstanceStatus,
        phone: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Deletes the instance and everything recorded for it (activity, events, messages,
    /// contacts).
    /// Returns false when the instance does not exist.
    async fn delete_instance(&self, id: &str) -> StoreResult<bool>;
}

#[async_trait]
pub trait ActivityStore: Send + Sync {
    async fn append_activity(&self, entry: &ActivityEntry) -> StoreResult<()>;
    /// Newest first, filtered and paged as the query says.
    async fn list_activity(
        &self,
        instance_id: &str,
        query: &ActivityQuery,
    ) -> StoreResult<Page<ActivityEntry>>;
}

#[async_trait]
pub trait EventStore: Send + Sync {
    async fn append_event(&self, event: &InstanceEvent) -> StoreResult<()>;
    /// With a cursor (`since` or `after_id`): the first `query.limit` matching events after
    /// it, oldest first. Without one: the latest `query.limit` matching events, still oldest
    /// first. The boolean says whether more events matched beyond the limit.
    async fn list_events(
        &self,
        instance_id: &str,
        query: &EventQuery,
    ) -> StoreResult<(Vec<InstanceEvent>, bool)>;
}

/// Everything the gateway stores, behind one object.
#[async_trait]
pub trait Storage:
    UserStore + InstanceStore + ActivityStore + EventStore + MessageStore + ContactStore + StatsStore
{
    /// `sqlite` or `mongodb`.
    fn provider(&self) -> &'static str;
    /// Succeeds when the backend answers a trivial query.
    async fn ping(&self) -> StoreResult<()>;
    /// Flushes and closes connections; later calls fail with `Unavailable`.
    async fn close(&self);
}

pub type DynStorage = Arc<dyn Storage>;
