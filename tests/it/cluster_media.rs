//! The media files a cluster's nodes share (GridFS in MongoDB, here SecantusDB): the
//! store's rules on their own, then real nodes serving a file stored by a node that was
//! killed since.

use base64::Engine as _;
use mongodb::bson::{Document, doc};
use reqwest::Method;
use serde_json::json;
use wagate::storage::mongo::media::{BUCKET, MongoMedia};
use wagate_actors::media_store::SharedMedia;

use crate::cluster::{Cluster, Leases, Node, moved_off, owners, paired};
use crate::common::{Auth, eventually, fresh_mongodb_url, mongo_database};

/// `n` bytes that are neither constant nor a multiple of a GridFS chunk.
fn sample(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8 ^ seed)
        .collect()
}

async fn count(db: &mongodb::Database, which: &str, filter: Document) -> u64 {
    db.collection::<Document>(&format!("{BUCKET}.{which}"))
        .count_documents(filter)
        .await
        .expect("count")
}

#[tokio::test]
async fn the_shared_media_store_keeps_files_byte_for_byte_and_deletes_by_instance() {
    let url = fresh_mongodb_url();
    let db = mongo_database(&url).await;
    let media = MongoMedia::open(db.clone()).await.expect("open");
    // Several chunks (255 KiB each), the last one short.
    let big = sample(700_001, 1);
    media.put("a", "a/big", &big).await.expect("put big");
    media
        .put("a", "a/small", b"small")
        .await
        .expect("put small");
    // "a" is a prefix of "ab": they stay apart.
    media
        .put("ab", "ab/kept", &sample(1_000, 2))
        .await
        .expect("put");
    media
        .put("b", "b/kept", b"")
        .await
        .expect("put an empty file");

    assert_eq!(media.get("a/big").await.expect("get"), Some(big.clone()));
    assert_eq!(
        media.get("a/small").await.expect("get"),
        Some(b"small".to_vec())
    );
    assert_eq!(media.get("b/kept").await.expect("get"), Some(Vec::new()));
    assert_eq!(media.get("a/missing").await.expect("get"), None);
    assert!(count(&db, "chunks", doc! {"files_id": "a/big"}).await >= 3);

    // One file: gone with its chunks; deleting it again is no error.
    media.delete("a/small").await.expect("delete");
    assert_eq!(media.get("a/small").await.expect("get"), None);
    assert_eq!(count(&db, "chunks", doc! {"files_id": "a/small"}).await, 0);
    media
        .delete("a/small")
        .await
        .expect("delete a missing file");

    // An instance: its files only.
    media.delete_instance("a").await.expect("delete instance");
    assert_eq!(media.get("a/big").await.expect("get"), None);
    assert_eq!(count(&db, "chunks", doc! {"files_id": "a/big"}).await, 0);
    assert_eq!(
        media.get("ab/kept").await.expect("get"),
        Some(sample(1_000, 2))
    );
    assert_eq!(media.get("b/kept").await.expect("get"), Some(Vec::new()));
    media
        .delete_instance("a")
        .await
        .expect("delete an instance without files");

    // Opening the store again (another node) keeps what is stored.
    let again = MongoMedia::open(db.clone()).await.expect("open again");
    assert_eq!(
        again.get("ab/kept").await.expect("get"),
        Some(sample(1_000, 2))
    );
}

/// Status and bytes of a message's media, downloaded through `via`.
async fn download(via: &Node, auth: &Auth, id: &str, message: &str) -> (u16, Vec<u8>) {
    let Auth::Bearer(token) = auth else {
        unreachable!("the admin signs in with a token")
    };
    let resp = via
        .server
        .client
        .get(format!(
            "{}/api/instances/{id}/messages/{message}/media",
            via.server.base
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("download");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.expect("bytes").to_vec())
}

/// A file an instance received on one node is downloaded, byte for byte, through
/// another node after the first was killed; deleting the instance deletes its files from
/// the shared store.
#[tokio::test]
async fn a_file_stored_before_a_failover_is_served_by_the_survivor() {
    let mut cluster = Cluster::start(2, Leases::Short).await;
    let auth = cluster.admin_when_all_live().await;
    let instances = paired(&cluster, &auth, 1, "media").await;
    let id = instances[0].0.clone();
    let before = owners(cluster.node("n1"), &auth, &instances).await;
    let owner = before[&id].0.clone();
    let survivor_id = if owner == "n1" { "n2" } else { "n1" };

    // Received through the survivor-to-be (forwarded to the owner, which stores it).
    let bytes = sample(300_000, 3);
    let message = inbound_file(cluster.node(survivor_id), &auth, &id, &bytes).await;
    let stored = eventually(20, "the file stored on its owner", || async {
        let (status, got) = download(cluster.node(&owner), &auth, &id, &message).await;
        (status == 200).then_some(got)
    })
    .await;
    assert_eq!(stored, bytes);
    let db = mongo_database(&cluster.url).await;
    assert_eq!(
        count(&db, "files", doc! {"metadata.instance": &id}).await,
        1
    );

    cluster.take(&owner).server.kill_hard().await;
    let survivor = cluster.node(survivor_id);
    moved_off(survivor, &auth, &instances, &before, &owner).await;
    let (status, got) = download(survivor, &auth, &id, &message).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&got));
    assert!(got == bytes, "the file byte for byte ({} bytes)", got.len());
    // Again, from the survivor's cache.
    assert_eq!(download(survivor, &auth, &id, &message).await, (200, bytes));

    let (status, body) = survivor
        .call(Method::DELETE, &format!("/api/instances/{id}"), &auth, None)
        .await;
    assert!(status == 200 || status == 204, "delete: {status} {body}");
    assert_eq!(
        count(&db, "files", doc! {"metadata.instance": &id}).await,
        0
    );
    assert_eq!(
        count(&db, "chunks", doc! {}).await,
        0,
        "no chunk left behind"
    );
}

/// Posts an inbound message with a file to `id` through `via`; its message id.
async fn inbound_file(via: &Node, auth: &Auth, id: &str, bytes: &[u8]) -> String {
    let (status, body) = via
        .call(
            Method::POST,
            &format!("/api/sandbox/instances/{id}/inbound"),
            auth,
            Some(json!({
                "from": "79006660001",
                "body": "a file",
                "media": {
                    "base64": base64::engine::general_purpose::STANDARD.encode(bytes),
                    "fileName": "file.bin",
                    "mimeType": "application/octet-stream",
                },
            })),
        )
        .await;
    assert_eq!(status, 200, "inbound: {body}");
    body["messageId"].as_str().expect("messageId").to_owned()
}

/// A node keeps copies of the files it served in its `DATA_DIR`. When another node
/// deletes the instance they go at once (the change stream tells every node), and a node
/// that was away when it was deleted removes them when it starts again.
#[tokio::test]
async fn a_deleted_instances_cached_files_leave_every_node() {
    let mut cluster = Cluster::start(2, Leases::Short).await;
    let auth = cluster.admin_when_all_live().await;
    let instances = paired(&cluster, &auth, 3, "cache").await;
    let owned = owners(cluster.node("n1"), &auth, &instances).await;
    let bytes = sample(70_000, 5);
    // Each instance's file, downloaded through the node that does not own it: that node
    // now keeps a copy.
    let mut cached = Vec::new();
    for (id, _) in &instances[..2] {
        let owner = owned[id].0.clone();
        let other = if owner == "n1" { "n2" } else { "n1" };
        let message = inbound_file(cluster.node(&owner), &auth, id, &bytes).await;
        let got = eventually(20, "the file through the other node", || async {
            let (status, got) = download(cluster.node(other), &auth, id, &message).await;
            (status == 200).then_some(got)
        })
        .await;
        assert!(got == bytes, "the file byte for byte");
        let copy = cluster.node(other).data_dir().join("uploads").join(id);
        assert!(copy.is_dir(), "{other} keeps a copy in {}", copy.display());
        cached.push((id.clone(), owner, other.to_owned(), copy));
    }

    // Deleted through its owner, while the other node runs: its copy goes.
    let (id, owner, other, copy) = &cached[0];
    let (status, body) = cluster
        .node(owner)
        .call(Method::DELETE, &format!("/api/instances/{id}"), &auth, None)
        .await;
    assert!(status == 200 || status == 204, "delete: {status} {body}");
    eventually(20, "the copy on the other node removed", || async {
        (!copy.exists()).then_some(())
    })
    .await;
    assert!(cluster.node(other).data_dir().exists());

    // Deleted through its owner while the other node is away: the copy goes when that
    // node starts again, and what belongs to an instance still stored, or is not named
    // like an instance, stays.
    let (id, owner, other, copy) = cached[1].clone();
    let node_dir = cluster.node(&other).data_dir().to_owned();
    let not_an_instance = node_dir.join("uploads").join("notes");
    let stranger = node_dir
        .join("instances")
        .join(uuid::Uuid::now_v7().to_string());
    let still_stored = node_dir.join("uploads").join(&instances[2].0);
    for dir in [&not_an_instance, &stranger, &still_stored] {
        std::fs::create_dir_all(dir).expect("a directory to sweep or keep");
    }
    let data = cluster.stop(&other).await;
    let (status, body) = cluster
        .node(&owner)
        .call(Method::DELETE, &format!("/api/instances/{id}"), &auth, None)
        .await;
    assert!(status == 200 || status == 204, "delete: {status} {body}");
    assert!(copy.exists(), "nobody removed it while its node was away");
    cluster.start_again(&other, data).await;
    // Removed before the node answers: it sweeps before it starts.
    assert!(!copy.exists(), "the copy of the instance deleted meanwhile");
    assert!(
        !stranger.exists(),
        "a session directory of no stored instance"
    );
    assert!(
        still_stored.is_dir(),
        "the copy of an instance still stored"
    );
    assert!(
        not_an_instance.is_dir(),
        "a directory not named like an instance"
    );
}
