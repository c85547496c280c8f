//! The media files a cluster's nodes share (GridFS in MongoDB, here SecantusDB): the
//! store's rules on their own, then real nodes serving a file stored by a node that was
//! killed since.

use base64::Engine as _;
use mongodb::bson::{Document, doc};
use reqwest::Method;
use serde_json::json;
use wagate::storage::mongo::media::{BUCKET, MongoMedia};
use wagate_actors::media_store::SharedMedia;

use crate::cluster::{Cluster, Leases, Node, listing, moved_off, owners, paired};
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
    let auth = cluster.node("n1").server.admin().await;
    eventually(20, "two live nodes", || async {
        (listing(cluster.node("n1"), &auth).await.len() == 2).then_some(())
    })
    .await;
    let instances = paired(&cluster, &auth, 1, "media").await;
    let id = instances[0].0.clone();
    let before = owners(cluster.node("n1"), &auth, &instances).await;
    let owner = before[&id].0.clone();
    let survivor_id = if owner == "n1" { "n2" } else { "n1" };

    // Received through the survivor-to-be (forwarded to the owner, which stores it).
    let bytes = sample(300_000, 3);
    let (status, body) = cluster
        .node(survivor_id)
        .call(
            Method::POST,
            &format!("/api/sandbox/instances/{id}/inbound"),
            &auth,
            Some(json!({
                "from": "79006660000",
                "body": "the scan",
                "media": {
                    "base64": base64::engine::general_purpose::STANDARD.encode(&bytes),
                    "fileName": "scan.bin",
                    "mimeType": "application/octet-stream",
                },
            })),
        )
        .await;
    assert_eq!(status, 200, "inbound: {body}");
    let message = body["messageId"].as_str().expect("messageId").to_owned();
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
