//! Cluster mode on MongoDB: the node registry (`cluster_nodes`), instance leases
//! (`instance_leases`) and the fenced session vault (`instance_sessions` for sandbox
//! sessions, `instance_keys` for the key rows of real ones).
//!
//! Session writes are fenced by `instance_fences` (`{_id: instance, epoch}`), not by the
//! lease document: a node raises the fence to its new epoch as part of taking a lease,
//! before the instance starts, and every session write matches `{epoch: mine}` in its
//! transaction. The lease documents are rewritten by every renewal (one `updateMany` per
//! node every few seconds); a fence on them made every session write in flight during a
//! renewal lose a write conflict. The fence document changes hands only with the lease.
//!
//! Every lease time is the database server's clock (`$$NOW`), never a node's, and is
//! stored as milliseconds since the Unix epoch (a number): comparisons of numbers are
//! exact on every MongoDB-wire server, while date-to-`$$NOW` comparisons are not on all
//! of them. Lease writes use majority write concern, so a lease taken survives an
//! election.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Binary, Bson, Document, doc, spec::BinarySubtype};
use mongodb::error::{Error as MongoError, TRANSIENT_TRANSACTION_ERROR};
use mongodb::options::{CollectionOptions, IndexOptions, ReturnDocument, WriteConcern};
use mongodb::{Client, ClientSession, Collection, Database, IndexModel};
use wagate_actors::cluster::{
    ClusterSettings, ClusterView, KeyBatch, KeyRecord, LeaseBoard, LeaseRecord, LeaseStore,
    NodeRecord, SessionVault, VaultError,
};
use wagate_actors::error::{StoreError, StoreResult};

use super::tx::{TRANSACTION_ATTEMPTS, commit};
use super::{client_options, is_duplicate_key, map_err};

const NODES: &str = "cluster_nodes";
const LEASES: &str = "instance_leases";
const SESSIONS: &str = "instance_sessions";
/// Each instance's fencing token as session writes see it: `{_id, epoch}`, raised (never
/// lowered) by the node that takes the lease, before it starts the instance.
const FENCES: &str = "instance_fences";
/// A real session's key rows: `{_id, instance, table, key, value}`.
const KEYS: &str = "instance_keys";

/// Connections of the lease client: renewals, scans and takeovers (32 acquires at once
/// queue briefly; a renewal waits for at most that few).
const LEASE_POOL: u32 = 4;

fn majority(db: &Database, name: &str) -> Collection<Document> {
    db.collection_with_options(
        name,
        CollectionOptions::builder()
            .write_concern(WriteConcern::majority())
            .build(),
    )
}

/// `$$NOW` as milliseconds since the Unix epoch.
fn now_ms() -> Bson {
    Bson::Document(doc! {"$toLong": "$$NOW"})
}

/// `$$NOW + ms`.
fn now_plus(ms: i64) -> Bson {
    Bson::Document(doc! {"$add": [{"$toLong": "$$NOW"}, ms]})
}

/// `expiresAt` still in the future on the server's clock.
fn unexpired() -> Document {
    doc! {"$expr": {"$gt": ["$expiresAt", {"$toLong": "$$NOW"}]}}
}

/// Why a node may not join the cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "DATABASE_URL is not a MongoDB replica set: cluster mode needs one (transactions \
         and change streams do not exist on a standalone server). Start mongod with \
         --replSet and run rs.initiate() once"
    )]
    NotAReplicaSet,
    #[error(
        "this node's secrets (JWT_SECRET, SECRET_KEY, CLUSTER_SECRET) differ from those of \
         the live node(s) {0}: every node of a cluster needs the same ones"
    )]
    SecretsDiffer(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The cluster's collections. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MongoCluster {
    client: Client,
    db: Database,
    /// The same database through a client of its own, for the lease calls alone: a
    /// renewal must not wait in the connection pool behind session loads, webhook jobs,
    /// media and routing lookups (a node taking over a thousand instances queues a
    /// thousand session loads at once), or it misses its deadline and the node fences
    /// itself.
    leases: Database,
    /// The leases this node holds: the session vault fences its writes with them.
    board: LeaseBoard,
    /// A digest of the shared secrets, written with every heartbeat.
    fingerprint: String,
    /// One fenced write at a time per instance from this node: they all rewrite the
    /// instance's fence document, so concurrent ones would only conflict (and a restarted
    /// session's last writes may still run beside the new one's first).
    writers: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl MongoCluster {
    /// Connects to `url` (the same database as the storage).
    ///
    /// Fails with `Unavailable` when the URL is invalid or names no database.
    pub async fn connect(
        url: &str,
        board: LeaseBoard,
        fingerprint: String,
    ) -> StoreResult<MongoCluster> {
        let (options, name) = client_options(url).await?;
        let mut lease_options = options.clone();
        lease_options.max_pool_size = Some(LEASE_POOL);
        let client = Client::with_options(options).map_err(map_err)?;
        let leases = Client::with_options(lease_options)
            .map_err(map_err)?
            .database(&name);
        Ok(MongoCluster {
            db: client.database(&name),
            leases,
            client,
            board,
            fingerprint,
            writers: Arc::default(),
        })
    }

    /// The shared database (the webhook outbox lives there too).
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn coll(&self, name: &str) -> Collection<Document> {
        majority(&self.db, name)
    }

    /// A collection of the lease calls (nodes, leases, fences), on their own client.
    fn lease_coll(&self, name: &str) -> Collection<Document> {
        majority(&self.leases, name)
    }

    /// Checks that this node may join: the server is a replica set, and every live node
    /// was started with the same secrets. Creates the index the key rows are read by.
    pub async fn check_join(&self, node_id: &str) -> Result<(), JoinError> {
        self.db
            .collection::<Document>(KEYS)
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"instance": 1})
                    .options(
                        IndexOptions::builder()
                            .name("instance_keys_by_instance".to_owned())
                            .build(),
                    )
                    .build(),
            )
            .await
            .map_err(map_err)?;
        let hello = self
            .db
            .run_command(doc! {"hello": 1})
            .await
            .map_err(map_err)?;
        if !hello.get_str("setName").is_ok_and(|name| !name.is_empty()) {
            return Err(JoinError::NotAReplicaSet);
        }
        let view = self.view().await?;
        let mut others: Vec<String> = Vec::new();
        let mut nodes = self.coll(NODES).find(doc! {}).await.map_err(map_err)?;
        while let Some(node) = nodes.try_next().await.map_err(map_err)? {
            let id = node.get_str("_id").unwrap_or_default();
            let live = node.get_i64("expiresAt").unwrap_or(0) > view.now_ms;
            let theirs = node.get_str("fingerprint").unwrap_or_default();
            if live && id != node_id && theirs != self.fingerprint {
                others.push(id.to_owned());
            }
        }
        if others.is_empty() {
            Ok(())
        } else {
            Err(JoinError::SecretsDiffer(others.join(", ")))
        }
    }

    /// The server's clock, in ms since the Unix epoch.
    async fn server_now(&self) -> StoreResult<i64> {
        let hello = self
            .leases
            .run_command(doc! {"hello": 1})
            .await
            .map_err(map_err)?;
        hello
            .get_datetime("localTime")
            .map(|t| t.timestamp_millis())
            .map_err(|_| StoreError::Corrupt("the server's hello has no localTime".into()))
    }

    /// The owner of an instance's unexpired lease, its epoch and the owner's URL (None
    /// when nobody holds it, or its owner is not a live node).
    pub async fn owner_of(&self, instance_id: &str) -> StoreResult<Option<(String, u64, String)>> {
        let mut filter = unexpired();
        filter.insert("_id", instance_id);
        let Some(lease) = self.coll(LEASES).find_one(filter).await.map_err(map_err)? else {
            return Ok(None);
        };
        let owner = lease.get_str("owner").unwrap_or_default().to_owned();
        let epoch = epoch_of(&lease);
        let mut filter = unexpired();
        filter.insert("_id", owner.as_str());
        let node = self.coll(NODES).find_one(filter).await.map_err(map_err)?;
        Ok(node.map(|n| {
            let url = n.get_str("url").unwrap_or_default().to_owned();
            (owner, epoch, url)
        }))
    }
}

fn epoch_of(lease: &Document) -> u64 {
    match lease.get("epoch") {
        Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Double(n)) if *n >= 0.0 => *n as u64,
        _ => 0,
    }
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl LeaseStore for MongoCluster {
    async fn renew(&self, node: &ClusterSettings) -> StoreResult<Vec<(String, u64)>> {
        let ttl = millis(node.lease_ttl);
        self.lease_coll(NODES)
            .update_one(
                doc! {"_id": &node.node_id},
                vec![doc! {"$set": {
                    "url": &node.url,
                    "fingerprint": &self.fingerprint,
                    "lastHeartbeat": now_ms(),
                    "expiresAt": now_plus(ttl),
                }}],
            )
            .upsert(true)
            .await
            .map_err(map_err)?;
        let mut mine = unexpired();
        mine.insert("owner", node.node_id.as_str());
        // One update renews every lease of the node.
        self.lease_coll(LEASES)
            .update_many(
                mine.clone(),
                vec![doc! {"$set": {"expiresAt": now_plus(ttl)}}],
            )
            .await
            .map_err(map_err)?;
        let mut owned = Vec::new();
        let mut cursor = self.lease_coll(LEASES).find(mine).await.map_err(map_err)?;
        while let Some(lease) = cursor.try_next().await.map_err(map_err)? {
            if let Ok(id) = lease.get_str("_id") {
                owned.push((id.to_owned(), epoch_of(&lease)));
            }
        }
        Ok(owned)
    }

    async fn view(&self) -> StoreResult<ClusterView> {
        let now_ms = self.server_now().await?;
        let mut nodes = Vec::new();
        let mut cursor = self
            .lease_coll(NODES)
            .find(doc! {})
            .await
            .map_err(map_err)?;
        while let Some(node) = cursor.try_next().await.map_err(map_err)? {
            let record = NodeRecord {
                node_id: node.get_str("_id").unwrap_or_default().to_owned(),
                url: node.get_str("url").unwrap_or_default().to_owned(),
                last_heartbeat_ms: node.get_i64("lastHeartbeat").unwrap_or(0),
                expires_at_ms: node.get_i64("expiresAt").unwrap_or(0),
            };
            if record.expires_at_ms > now_ms {
                nodes.push(record);
            }
        }
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let mut leases = Vec::new();
        let mut cursor = self
            .lease_coll(LEASES)
            .find(doc! {})
            .await
            .map_err(map_err)?;
        while let Some(lease) = cursor.try_next().await.map_err(map_err)? {
            leases.push(LeaseRecord {
                instance_id: lease.get_str("_id").unwrap_or_default().to_owned(),
                owner: lease.get_str("owner").unwrap_or_default().to_owned(),
                epoch: epoch_of(&lease),
                expires_at_ms: lease.get_i64("expiresAt").unwrap_or(0),
            });
        }
        Ok(ClusterView {
            now_ms,
            nodes,
            leases,
        })
    }

    async fn acquire(&self, instance_id: &str, node: &ClusterSettings) -> StoreResult<Option<u64>> {
        let ttl = millis(node.lease_ttl);
        let taken = self
            .coll(LEASES)
            .find_one_and_update(
                doc! {
                    "_id": instance_id,
                    "$expr": {"$lte": ["$expiresAt", {"$toLong": "$$NOW"}]},
                },
                vec![doc! {"$set": {
                    "owner": &node.node_id,
                    "epoch": {"$add": [{"$ifNull": ["$epoch", 0_i64]}, 1_i64]},
                    "expiresAt": now_plus(ttl),
                }}],
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        match taken {
            Ok(Some(lease)) if lease.get_str("owner").is_ok_and(|o| o == node.node_id) => {
                let epoch = epoch_of(&lease);
                // Before the caller may start the instance: from here on the previous
                // owner's session writes are refused. (Failing here leaves a lease the
                // caller does not know of; its next renewal releases it.)
                self.raise_fence(instance_id, epoch).await?;
                Ok(Some(epoch))
            }
            Ok(_) => Ok(None),
            // The lease exists and has not expired: the upsert's insert collides.
            Err(e) if is_duplicate_key(&e) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn release(&self, node: &str, leases: &[(String, u64)]) -> StoreResult<()> {
        if leases.is_empty() {
            return Ok(());
        }
        let which: Vec<Document> = leases
            .iter()
            .map(|(id, epoch)| {
                doc! {"_id": id, "owner": node, "epoch": i64::try_from(*epoch).unwrap_or(i64::MAX)}
            })
            .collect();
        self.lease_coll(LEASES)
            .update_many(doc! {"$or": which}, doc! {"$set": {"expiresAt": 0_i64}})
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn delete(&self, instance_id: &str) -> StoreResult<()> {
        self.writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(instance_id);
        self.coll(SESSIONS)
            .delete_one(doc! {"_id": instance_id})
            .await
            .map_err(map_err)?;
        self.coll(KEYS)
            .delete_many(doc! {"instance": instance_id})
            .await
            .map_err(map_err)?;
        self.lease_coll(FENCES)
            .delete_one(doc! {"_id": instance_id})
            .await
            .map_err(map_err)?;
        self.lease_coll(LEASES)
            .delete_one(doc! {"_id": instance_id})
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn leave(&self, node: &str) -> StoreResult<()> {
        self.lease_coll(NODES)
            .delete_one(doc! {"_id": node})
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

#[async_trait]
impl SessionVault for MongoCluster {
    async fn load(&self, instance_id: &str) -> StoreResult<BTreeMap<String, Vec<u8>>> {
        let mut files = BTreeMap::new();
        let Some(stored) = self
            .coll(SESSIONS)
            .find_one(doc! {"_id": instance_id})
            .await
            .map_err(map_err)?
        else {
            return Ok(files);
        };
        for file in stored
            .get_array("files")
            .map_err(|e| StoreError::Corrupt(format!("session of {instance_id}: {e}")))?
        {
            let Some(file) = file.as_document() else {
                continue;
            };
            if let (Ok(name), Ok(data)) = (file.get_str("name"), file.get_binary_generic("data")) {
                files.insert(name.to_owned(), data.clone());
            }
        }
        Ok(files)
    }

    async fn save(
        &self,
        instance_id: &str,
        files: BTreeMap<String, Vec<u8>>,
    ) -> Result<(), VaultError> {
        let stored: Vec<Document> = files
            .into_iter()
            .map(|(name, data)| {
                doc! {"name": name, "data": Binary { subtype: BinarySubtype::Generic, bytes: data }}
            })
            .collect();
        self.fenced_write(instance_id, &Fenced::Files(&stored))
            .await
    }

    async fn load_keys(&self, instance_id: &str) -> StoreResult<Vec<KeyRecord>> {
        let mut rows = Vec::new();
        let mut cursor = self
            .coll(KEYS)
            .find(doc! {"instance": instance_id})
            .await
            .map_err(map_err)?;
        while let Some(row) = cursor.try_next().await.map_err(map_err)? {
            if let (Ok(table), Ok(key), Ok(value)) = (
                row.get_str("table"),
                row.get_str("key"),
                row.get_binary_generic("value"),
            ) {
                rows.push(KeyRecord {
                    table: table.to_owned(),
                    key: key.to_owned(),
                    value: value.clone(),
                });
            }
        }
        Ok(rows)
    }

    async fn write_keys(&self, instance_id: &str, batch: KeyBatch) -> Result<(), VaultError> {
        self.fenced_write(instance_id, &Fenced::Keys(&batch)).await
    }
}

/// What a fenced transaction writes besides the fence.
enum Fenced<'a> {
    /// A sandbox session's files.
    Files(&'a [Document]),
    /// Key rows of a real session.
    Keys(&'a KeyBatch),
}

/// The `_id` of a key row: instance, table and key as one JSON array (no separator can
/// collide).
fn key_id(instance_id: &str, table: &str, key: &str) -> String {
    serde_json::to_string(&(instance_id, table, key)).unwrap_or_default()
}

impl MongoCluster {
    /// Raises `instance_id`'s fence to `epoch` (never lowers it).
    async fn raise_fence(&self, instance_id: &str, epoch: u64) -> StoreResult<()> {
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        self.lease_coll(FENCES)
            .update_one(doc! {"_id": instance_id}, doc! {"$max": {"epoch": epoch}})
            .upsert(true)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// Writes `what` in one transaction with the fence check: refused (and counted) when
    /// the lease is no longer this node's at the epoch its board holds.
    async fn fenced_write(&self, instance_id: &str, what: &Fenced<'_>) -> Result<(), VaultError> {
        let node = self.board.node_id().to_owned();
        let Some(epoch) = self.board.epoch(instance_id) else {
            self.board.count_fenced_write();
            return Err(VaultError::Fenced);
        };
        let writer = self
            .writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(instance_id.to_owned())
            .or_default()
            .clone();
        let _turn = writer.lock().await;
        let mut session = self.client.start_session().await.map_err(map_err)?;
        // A takeover raises the same fence document, so the transaction can lose a write
        // conflict to it (or to a transaction of its own that timed out and still runs on
        // the server): tried again while the server calls the failure transient.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .fenced_once(&mut session, instance_id, &node, epoch, what)
                .await
            {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    self.board.count_fenced_write();
                    return Err(VaultError::Fenced);
                }
                Err(e)
                    if e.contains_label(TRANSIENT_TRANSACTION_ERROR)
                        && attempt < TRANSACTION_ATTEMPTS => {}
                Err(e) => return Err(map_err(e).into()),
            }
        }
    }

    /// One attempt of [`MongoCluster::fenced_write`]: `Ok(false)` when the lease is no
    /// longer this node's at `epoch` (nothing written).
    async fn fenced_once(
        &self,
        session: &mut ClientSession,
        instance_id: &str,
        node: &str,
        epoch: u64,
        what: &Fenced<'_>,
    ) -> Result<bool, MongoError> {
        // Operations inside a transaction carry no write concern of their own: the
        // transaction's applies to the commit.
        session
            .start_transaction()
            .write_concern(WriteConcern::majority())
            .await?;
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        let written = async {
            if !self.fence(session, instance_id, node, epoch).await? {
                return Ok(false);
            }
            match what {
                Fenced::Files(stored) => {
                    self.db
                        .collection::<Document>(SESSIONS)
                        .replace_one(
                            doc! {"_id": instance_id},
                            doc! {"_id": instance_id, "files": stored.to_vec(), "owner": node, "epoch": epoch},
                        )
                        .upsert(true)
                        .session(&mut *session)
                        .await?;
                }
                Fenced::Keys(batch) => {
                    let keys: Collection<Document> = self.db.collection(KEYS);
                    if batch.clear {
                        keys.delete_many(doc! {"instance": instance_id})
                            .session(&mut *session)
                            .await?;
                    }
                    for write in &batch.writes {
                        let id = key_id(instance_id, write.table, &write.key);
                        match &write.value {
                            Some(value) => {
                                keys.replace_one(
                                    doc! {"_id": &id},
                                    doc! {
                                        "_id": &id,
                                        "instance": instance_id,
                                        "table": write.table,
                                        "key": &write.key,
                                        "value": Binary { subtype: BinarySubtype::Generic, bytes: value.clone() },
                                    },
                                )
                                .upsert(true)
                                .session(&mut *session)
                                .await?;
                            }
                            None => {
                                keys.delete_one(doc! {"_id": &id})
                                    .session(&mut *session)
                                    .await?;
                            }
                        }
                    }
                }
            }
            Ok(true)
        }
        .await;
        match written {
            Ok(true) => commit(session).await.map(|()| true),
            other => {
                // Fails only when the transaction is already gone, aborted either way.
                let _ = session.abort_transaction().await;
                other
            }
        }
    }

    /// The fence, inside a fenced write's transaction: whether `instance_id`'s fence is
    /// still at `epoch`. It is written (not only read), so a takeover that raises it
    /// before this transaction commits makes one of the two conflict.
    ///
    /// An instance without a fence document (its lease was taken before fences existed)
    /// is checked against its lease as it was then (`{owner, epoch}`, unexpired), and the
    /// fence is created at `epoch` in the same transaction.
    async fn fence(
        &self,
        session: &mut ClientSession,
        instance_id: &str,
        node: &str,
        epoch: i64,
    ) -> Result<bool, MongoError> {
        let fences: Collection<Document> = self.db.collection(FENCES);
        let held = fences
            .update_one(
                doc! {"_id": instance_id, "epoch": epoch},
                doc! {"$inc": {"writes": 1_i64}},
            )
            .session(&mut *session)
            .await?;
        if held.matched_count > 0 {
            return Ok(true);
        }
        let raised = fences
            .find_one(doc! {"_id": instance_id})
            .session(&mut *session)
            .await?;
        if raised.is_some() {
            return Ok(false); // another epoch: the lease changed hands
        }
        let mut lease = unexpired();
        lease.insert("_id", instance_id);
        lease.insert("owner", node);
        lease.insert("epoch", epoch);
        let held = self
            .db
            .collection::<Document>(LEASES)
            .find_one(lease)
            .session(&mut *session)
            .await?;
        if held.is_none() {
            return Ok(false);
        }
        let created = fences
            .insert_one(doc! {"_id": instance_id, "epoch": epoch, "writes": 1_i64})
            .session(&mut *session)
            .await;
        match created {
            Ok(_) => Ok(true),
            // A takeover raised the fence meanwhile.
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
