//! The key store of real sessions in cluster mode on MongoDB (SecantusDB): the same
//! answers as wacore's own in-memory backend, before and after loading the rows back,
//! and every write fenced by the lease.

use std::sync::Arc;
use std::time::Duration;

use wagate::storage::mongo::cluster::MongoCluster;
use wagate_actors::cluster::{
    ClusterSettings, KeyBatch, KeyWrite, LeaseBoard, LeaseStore, SessionVault, VaultError,
};
use wagate_actors::testing::keys::differential;

use mongodb::bson::{Document, doc};

use crate::common::{fresh_mongodb_url, mongo_database};

fn settings(node: &str) -> ClusterSettings {
    ClusterSettings {
        node_id: node.to_owned(),
        url: format!("http://{node}"),
        // Long enough to outlast the test: nothing renews these leases.
        lease_ttl: Duration::from_secs(600),
        renew_every: Duration::from_secs(200),
        scan_every: Duration::from_secs(2),
    }
}

/// A node's view of the cluster database, holding the lease of `instance`.
async fn node_holding(url: &str, node: &str, instance: &str) -> (MongoCluster, LeaseBoard) {
    let board = LeaseBoard::new(node);
    let cluster = MongoCluster::connect(url, board.clone(), "fingerprint".into())
        .await
        .expect("connect");
    cluster.check_join(node).await.expect("join");
    let epoch = cluster
        .acquire(instance, &settings(node))
        .await
        .expect("acquire")
        .expect("the lease is free");
    board.insert(instance, epoch);
    (cluster, board)
}

/// One session row set to `value`.
fn put(value: &[u8]) -> KeyBatch {
    KeyBatch {
        clear: false,
        writes: vec![KeyWrite {
            table: "session",
            key: "15550000001@s.whatsapp.net".into(),
            value: Some(value.to_vec()),
        }],
    }
}

#[tokio::test]
async fn the_mongodb_key_store_answers_as_wacores_own_and_loads_back_the_same() {
    let url = fresh_mongodb_url();
    for seed in [7, 8] {
        // Each seed on an instance of its own, whose lease this node holds.
        let instance = format!("i{seed}");
        let (cluster, _board) = node_holding(&url, "n1", &instance).await;
        let vault: Arc<dyn SessionVault> = Arc::new(cluster);
        if let Err(diff) = differential(vault, &instance, seed, 400, 100).await {
            panic!("{diff}");
        }
    }
}

#[tokio::test]
async fn a_node_that_lost_the_lease_can_neither_write_nor_erase_the_keys() {
    let url = fresh_mongodb_url();
    let (old, old_board) = node_holding(&url, "n1", "i1").await;
    old.write_keys("i1", put(b"old owner"))
        .await
        .expect("the owner writes");

    // The lease expires (released here, as a crash's TTL would) and n2 takes it.
    let epoch = old_board.epoch("i1").expect("held");
    old.release("n1", &[("i1".to_owned(), epoch)])
        .await
        .expect("release");
    let (new, new_board) = node_holding(&url, "n2", "i1").await;
    assert!(new_board.epoch("i1") > Some(epoch), "a new epoch");

    // n1 still believes it holds the lease: its writes and its logout are refused.
    assert_eq!(
        old.write_keys("i1", put(b"stale")).await,
        Err(VaultError::Fenced)
    );
    let clear = KeyBatch {
        clear: true,
        writes: Vec::new(),
    };
    assert_eq!(old.write_keys("i1", clear).await, Err(VaultError::Fenced));
    assert_eq!(
        old_board
            .counters()
            .fenced_writes
            .load(std::sync::atomic::Ordering::Relaxed),
        2,
        "refused writes are counted"
    );

    // The new owner reads what the old one wrote while it held the lease, and writes on.
    let rows = new.load_keys("i1").await.expect("load");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].value, b"old owner");
    new.write_keys("i1", put(b"new owner"))
        .await
        .expect("the new owner writes");
    let rows = new.load_keys("i1").await.expect("load");
    assert_eq!(rows[0].value, b"new owner");

    // Deleting the instance deletes its keys.
    new.delete("i1").await.expect("delete");
    assert!(new.load_keys("i1").await.expect("load").is_empty());
}

/// A lease taken before fence documents existed (an upgraded cluster) has none: its
/// writes are checked against the lease itself, and the first one creates the fence at
/// the lease's epoch.
#[tokio::test]
async fn a_lease_without_a_fence_is_checked_against_itself() {
    let url = fresh_mongodb_url();
    let fences = mongo_database(&url)
        .await
        .collection::<Document>("instance_fences");
    let (old, old_board) = node_holding(&url, "n1", "i1").await;
    let epoch = old_board.epoch("i1").expect("held");
    fences.delete_many(doc! {}).await.expect("no fence");
    old.write_keys("i1", put(b"n1"))
        .await
        .expect("the lease is n1's at its epoch");
    let fence = fences
        .find_one(doc! {"_id": "i1"})
        .await
        .expect("read")
        .expect("created by the write");
    assert_eq!(
        fence.get_i64("epoch"),
        Ok(i64::try_from(epoch).expect("epoch"))
    );

    // n2 takes the lease; without a fence again, n1 is refused by the lease, n2 is not.
    old.release("n1", &[("i1".to_owned(), epoch)])
        .await
        .expect("release");
    let (new, _) = node_holding(&url, "n2", "i1").await;
    fences.delete_many(doc! {}).await.expect("no fence");
    assert_eq!(
        old.write_keys("i1", put(b"stale")).await,
        Err(VaultError::Fenced)
    );
    new.write_keys("i1", put(b"n2"))
        .await
        .expect("the lease is n2's");
    let rows = new.load_keys("i1").await.expect("load");
    assert_eq!(rows[0].value, b"n2");
    assert_eq!(
        old.write_keys("i1", put(b"stale")).await,
        Err(VaultError::Fenced)
    );
}
