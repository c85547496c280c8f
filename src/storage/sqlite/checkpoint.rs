//! WAL checkpoints off the commit path.
//!
//! SQLite's default (`wal_autocheckpoint=1000`) makes the commit that crosses 1,000 WAL
//! pages copy the WAL into the database file and fsync it, inside that commit: a send
//! waits for a checkpoint it did not need. Every connection here runs with automatic
//! checkpoints off, and one background task does them instead, on a connection of its
//! own:
//!
//! - `PASSIVE` once a second while the WAL grows, or at once past [`WAL_LIMIT`] bytes. It
//!   never waits for readers or writers; what it cannot copy yet waits for the next one.
//! - `TRUNCATE` once the database is quiet (no commit since the last look): the file is
//!   reset to zero bytes. It would make writers wait while it is pending, so it gives up
//!   after [`IDLE_BUSY_TIMEOUT`] and tries again on the next quiet tick.
//!
//! Durability is unchanged: a commit is in the WAL (written with `write()`, and with
//! `synchronous=NORMAL` fsynced at checkpoints) before it returns, so it survives a
//! process crash; a power loss keeps what NORMAL keeps.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often the task looks at the WAL's size.
const TICK: Duration = Duration::from_millis(250);
/// The longest a growing WAL waits for a `PASSIVE` checkpoint.
const PASSIVE_EVERY: Duration = Duration::from_secs(1);
/// A WAL this large is checkpointed at the next tick, whatever the time.
pub const WAL_LIMIT: u64 = 64 * 1024 * 1024;
/// `journal_size_limit`: what a reset WAL file is truncated to at most.
pub const JOURNAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;
/// How long a `TRUNCATE` checkpoint may wait for readers and writers before giving up.
pub const IDLE_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// The background checkpoint task of one database file; stopped on drop.
#[derive(Debug)]
pub struct Checkpointer {
    task: JoinHandle<()>,
    conn: SqlitePool,
}

impl Checkpointer {
    /// Starts checkpointing the database at `db` through `conn` (a pool of one connection
    /// whose busy timeout is [`IDLE_BUSY_TIMEOUT`]).
    pub fn start(db: &Path, conn: SqlitePool) -> Checkpointer {
        let wal = wal_path(db);
        Checkpointer {
            task: tokio::spawn(run(wal, conn.clone())),
            conn,
        }
    }

    /// Stops the task and closes its connection.
    pub async fn stop(&self) {
        self.task.abort();
        self.conn.close().await;
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `<db>-wal`, where SQLite keeps the WAL of `db`.
fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

async fn run(wal: PathBuf, conn: SqlitePool) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_version = None;
    let mut last_checkpoint = Instant::now();
    loop {
        tick.tick().await;
        // Moves whenever another connection committed: whether anybody wrote since the
        // last look. (The WAL's size cannot tell: a WAL checkpointed in full is rewritten
        // from its start without growing.)
        let version = match data_version(&conn).await {
            Ok(version) => version,
            Err(err) => {
                tracing::warn!(%err, "cannot read the database's data version");
                continue;
            }
        };
        let quiet = last_version == Some(version);
        last_version = Some(version);
        let size = tokio::fs::metadata(&wal).await.map_or(0, |m| m.len());
        let mode = if size == 0 {
            continue;
        } else if quiet {
            "TRUNCATE"
        } else if size >= WAL_LIMIT || last_checkpoint.elapsed() >= PASSIVE_EVERY {
            "PASSIVE"
        } else {
            continue;
        };
        // A TRUNCATE that cannot finish in time (a reader on an old snapshot) reports
        // busy; the next quiet tick tries again.
        match checkpoint(&conn, mode).await {
            Ok(()) => last_checkpoint = Instant::now(),
            Err(err) => tracing::warn!(%err, mode, "WAL checkpoint failed; retrying later"),
        }
    }
}

async fn data_version(conn: &SqlitePool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar::<_, i64>("PRAGMA data_version")
        .fetch_one(conn)
        .await
}

/// Runs one checkpoint.
async fn checkpoint(conn: &SqlitePool, mode: &str) -> Result<(), sqlx::Error> {
    let sql = match mode {
        "TRUNCATE" => "PRAGMA wal_checkpoint(TRUNCATE)",
        _ => "PRAGMA wal_checkpoint(PASSIVE)",
    };
    sqlx::query(sql).execute(conn).await?;
    Ok(())
}
