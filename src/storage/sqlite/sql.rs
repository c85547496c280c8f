//! SQL text that more than one query runs, as macros so that `concat!` can join the
//! statements of a write into one query: sqlx binds the `?` of a multi-statement query in
//! order across its statements, and the writer's task then asks the connection's worker
//! thread once instead of once per statement. [`Bound`] and [`Plain`] carry such a query
//! to the writer.

use futures::future::BoxFuture;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, Execute, Sqlite, SqliteConnection};
use wagate_actors::store::StoreResult;

use super::{corrupt, map_err};

/// Inserts one message row, bound by `messaging::bind_message`.
macro_rules! insert_message_sql {
    () => {
        "INSERT INTO messages (id, instance_id, message_id, remote_jid, from_me, message_type,
                               content, has_media, media_url, caption, mime_type, file_name,
                               media_path, media_size, status, push_name, metadata, ts,
                               created_at, updated_at, status_updated_at, read_by_me,
                               quoted_message_id, mentions, reactions, edited_at, revoked,
                               typed, message_secret)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
                 ?, ?);"
    };
}

/// Inserts one event row, bound by `bind_event`.
macro_rules! insert_event_sql {
    () => {
        "INSERT INTO events (id, instance_id, kind, ts, data) VALUES (?, ?, ?, ?, ?);"
    };
}

/// Inserts or merges one contact and returns the stored row, bound by
/// `messaging::bind_contact`. A new row gets its search text at once; a merged one keeps
/// its old text, which the caller rewrites when the merge changed it.
macro_rules! upsert_contact_sql {
    () => {
        "INSERT INTO contacts (id, instance_id, remote_jid, number, name, push_name, is_group,
                               profile_picture, about, last_activity, search_text, created_at,
                               updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (instance_id, remote_jid) DO UPDATE SET
             name = COALESCE(excluded.name, contacts.name),
             push_name = COALESCE(excluded.push_name, contacts.push_name),
             is_group = excluded.is_group,
             profile_picture = COALESCE(excluded.profile_picture, contacts.profile_picture),
             about = COALESCE(excluded.about, contacts.about),
             last_activity = CASE
                 WHEN excluded.last_activity IS NULL THEN contacts.last_activity
                 WHEN contacts.last_activity IS NULL THEN excluded.last_activity
                 ELSE MAX(excluded.last_activity, contacts.last_activity) END,
             updated_at = excluded.updated_at
         RETURNING *;"
    };
}

/// A query as the writer's task receives it: its arguments were bound (and its JSON
/// encoded) by the caller, before the write was queued, so the one task every write waits
/// on only runs it. Cloning is cheap (sqlx keeps text and blobs behind `Arc`s), and a
/// replayed batch runs the clone again.
#[derive(Clone, Debug)]
pub(super) struct Bound {
    sql: &'static str,
    args: SqliteArguments,
}

/// A query being bound.
pub(super) type Binding = Query<'static, Sqlite, SqliteArguments>;

impl Bound {
    /// `sql` with the arguments `bind` gives it, in the order of its `?`s.
    pub(super) fn new(
        sql: &'static str,
        bind: impl FnOnce(Binding) -> StoreResult<Binding>,
    ) -> StoreResult<Bound> {
        let mut query = bind(sqlx::query(sql))?;
        let args = query.take_arguments().map_err(corrupt)?.unwrap_or_default();
        // sqlx binds NULL to a `?` it has no argument for: a miscount would store NULLs.
        debug_assert_eq!(
            sql.matches('?').count(),
            args.len(),
            "one argument per `?` of {sql}"
        );
        Ok(Bound { sql, args })
    }

    /// The query, ready to run (as often as needed).
    pub(super) fn query(&self) -> Binding {
        sqlx::query_with(self.sql, self.args.clone())
    }

    /// Runs every statement.
    pub(super) async fn execute(&self, conn: &mut SqliteConnection) -> StoreResult<()> {
        self.query().execute(conn).await.map_err(map_err)?;
        Ok(())
    }

    /// Runs every statement; the rows they returned.
    pub(super) async fn fetch_all(
        &self,
        conn: &mut SqliteConnection,
    ) -> StoreResult<Vec<SqliteRow>> {
        self.query().fetch_all(conn).await.map_err(map_err)
    }
}

/// A write that is one query, and at most a follow-up on the one row it returns: queued
/// next to others with the same SQL, the group-commit writer runs it joined with them, as
/// one query (see `commits.rs`).
pub(super) struct Plain {
    /// Bound before it is queued: how it runs alone.
    bound: Bound,
    /// Binds its arguments again, after those of the writes it is joined with.
    rebind: Box<dyn Fn(Binding) -> StoreResult<Binding> + Send + Sync>,
    /// Run on the row its query returns, if it returns one (a merged contact's search
    /// text, say).
    then: Option<Then>,
}

/// See [`Plain::then`].
pub(super) type Then =
    for<'c> fn(&'c mut SqliteConnection, &'c SqliteRow) -> BoxFuture<'c, StoreResult<()>>;

impl Plain {
    /// `bound`, and `rebind`, which must bind the same arguments to a query (its owned
    /// copy of what `bound` was bound from).
    pub(super) fn new(
        bound: Bound,
        rebind: impl Fn(Binding) -> StoreResult<Binding> + Send + Sync + 'static,
    ) -> Plain {
        Plain {
            bound,
            rebind: Box::new(rebind),
            then: None,
        }
    }

    /// Runs `then` on the row the query returns. Its query must return one row, whether
    /// it inserts or updates, so that joined queries return one row per write.
    pub(super) fn then(mut self, then: Then) -> Plain {
        self.then = Some(then);
        self
    }

    /// Its statements.
    pub(super) fn sql(&self) -> &'static str {
        self.bound.sql
    }

    /// Runs it alone.
    pub(super) async fn run(&self, conn: &mut SqliteConnection) -> StoreResult<()> {
        let Some(then) = self.then else {
            return self.bound.execute(conn).await;
        };
        if let Some(row) = self.bound.fetch_all(&mut *conn).await?.first() {
            then(conn, row).await?;
        }
        Ok(())
    }

    /// Binds its arguments to `query`, after those bound to it already.
    pub(super) fn rebind(&self, query: Binding) -> StoreResult<Binding> {
        (self.rebind)(query)
    }

    /// What it runs on the row it returns.
    pub(super) fn follow_up(&self) -> Option<Then> {
        self.then
    }
}
