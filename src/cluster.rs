//! Cluster mode (`CLUSTER_MODE=mongodb`), the parts outside the actors: joining (the
//! secrets' fingerprint), and the signature of calls one node forwards to another.
//!
//! A forwarded call carries three headers: [`NODE_HEADER`] (the sender),
//! [`TIME_HEADER`] (its clock, ms since the Unix epoch) and [`SIGNATURE_HEADER`]:
//! hex HMAC-SHA256 with `CLUSTER_SECRET` of
//! `v1\n{node}\n{time}\n{METHOD}\n{path?query}\n{hex SHA-256 of the body}`. A node
//! never forwards a signed call again (one hop), and refuses a signature that does not
//! verify or is more than [`MAX_SKEW`] old.
//!
//! A node also keeps copies, in its own `DATA_DIR`, of what the nodes share: the session
//! directory of an instance it ran, the media files it stored or served. They go when the
//! instance is deleted, whichever node deletes it ([`forget_local`]), and at start for
//! the instances deleted while the node was away ([`sweep_local`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wagate_actors::cluster::{LeaseBoard, LeaseManagerHandle};
use wagate_actors::instance::session_dir;
use wagate_actors::media_store::uploads_dir;

use crate::config::ClusterConfig;
use crate::storage::mongo::cluster::MongoCluster;

/// The node that signed a forwarded call.
pub const NODE_HEADER: &str = "x-wagate-forwarded-by";
/// When it signed it (ms since the Unix epoch).
pub const TIME_HEADER: &str = "x-wagate-forwarded-at";
/// The signature.
pub const SIGNATURE_HEADER: &str = "x-wagate-signature";
/// Every answer in cluster mode names the node that handled the call.
pub const SERVED_BY_HEADER: &str = "x-wagate-node";

/// How far a signature's time may be from the receiver's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(30);

/// What the HTTP edge needs in cluster mode. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    pub config: Arc<ClusterConfig>,
    pub store: MongoCluster,
    pub board: LeaseBoard,
    pub leases: LeaseManagerHandle,
    /// Forwards calls to other nodes (no overall timeout: live streams pass through).
    pub client: reqwest::Client,
    /// How long a forwarded call may wait for the owner's answer to begin (a stalled
    /// owner answers nothing; it loses its leases within a TTL).
    pub forward_timeout: Duration,
    /// Owners looked up recently, so that a burst of calls for one instance does not
    /// read the lease and the node registry for each.
    pub owners: OwnerCache,
}

/// How long a looked-up owner is used without asking the database again. An owner that
/// lost the instance meanwhile answers a forwarded call with 503 `instance_moving`
/// (it no longer runs it), which also drops the entry.
pub const OWNER_CACHE_TTL: Duration = Duration::from_secs(1);
/// Entries kept at most; the cache is emptied when it would grow past this.
const OWNER_CACHE_MAX: usize = 10_000;

/// Instance (or desk) → its owner's id and URL, for [`OWNER_CACHE_TTL`]. Cheap to clone.
#[derive(Clone, Default)]
pub struct OwnerCache(Arc<std::sync::Mutex<HashMap<String, Owner>>>);

/// When it was looked up, the owner's id, its URL.
type Owner = (Instant, String, String);

impl OwnerCache {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Owner>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The owner and its URL, if looked up less than [`OWNER_CACHE_TTL`] ago.
    pub fn get(&self, id: &str) -> Option<(String, String)> {
        let map = self.map();
        let (at, owner, url) = map.get(id)?;
        (at.elapsed() < OWNER_CACHE_TTL).then(|| (owner.clone(), url.clone()))
    }

    pub fn put(&self, id: &str, owner: &str, url: &str) {
        let mut map = self.map();
        if map.len() >= OWNER_CACHE_MAX {
            map.clear();
        }
        map.insert(
            id.to_owned(),
            (Instant::now(), owner.to_owned(), url.to_owned()),
        );
    }

    /// Forgets the owner of `id` (it did not answer, or no longer runs it).
    pub fn forget(&self, id: &str) {
        self.map().remove(id);
    }
}

/// This node's copies of an instance's shared state: its session directory and its
/// cached media files.
fn local_copies(data_dir: &Path, instance_id: &str) -> [PathBuf; 2] {
    [
        session_dir(data_dir, instance_id),
        uploads_dir(data_dir, instance_id),
    ]
}

/// Removes this node's copies of an instance another node deleted (that node removed its
/// own, and the shared ones). Failures are logged: a copy left behind is only disk space.
pub async fn forget_local(data_dir: &Path, instance_id: &str) {
    for dir in local_copies(data_dir, instance_id) {
        if let Err(err) = tokio::fs::remove_dir_all(&dir).await
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %dir.display(), %err, "cannot remove a deleted instance's copy");
        }
    }
}

/// At start, before any instance runs here: removes the copies of every instance not in
/// `stored` (deleted while this node was away). Only directories named like instance ids
/// are touched. Returns how many instances' copies went.
pub async fn sweep_local(data_dir: &Path, stored: &HashSet<String>) -> usize {
    let mut gone = HashSet::new();
    // The directories holding every instance's copies, one per kind of copy.
    let parents = local_copies(data_dir, "any").map(|dir| dir.parent().map(Path::to_owned));
    for parent in parents.into_iter().flatten() {
        let mut entries = match tokio::fs::read_dir(&parent).await {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => {
                tracing::warn!(path = %parent.display(), %err, "cannot list the local copies");
                continue;
            }
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let is_dir = entry.file_type().await.is_ok_and(|t| t.is_dir());
            if is_dir && uuid::Uuid::try_parse(&name).is_ok() && !stored.contains(&name) {
                gone.insert(name);
            }
        }
    }
    for id in &gone {
        forget_local(data_dir, id).await;
    }
    gone.len()
}

/// A digest naming the secrets every node must share, safe to store: SHA-256 over the
/// length-prefixed secrets, first 16 bytes in hex.
pub fn fingerprint(jwt_secret: &[u8], secret_key: &[u8], cluster_secret: &[u8]) -> String {
    let mut digest = Sha256::new();
    digest.update(b"wagate-cluster-secrets-v1");
    for part in [jwt_secret, secret_key, cluster_secret] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    hex::encode(&digest.finalize()[..16])
}

type HmacSha256 = Hmac<Sha256>;

fn mac(
    secret: &[u8],
    node: &str,
    time_ms: i64,
    method: &str,
    target: &str,
    body: &[u8],
) -> HmacSha256 {
    // HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    let body_hash = hex::encode(Sha256::digest(body));
    mac.update(format!("v1\n{node}\n{time_ms}\n{method}\n{target}\n{body_hash}").as_bytes());
    mac
}

/// The signature of a forwarded call (`target` is the path with its query).
pub fn sign(
    secret: &[u8],
    node: &str,
    time_ms: i64,
    method: &str,
    target: &str,
    body: &[u8],
) -> String {
    hex::encode(
        mac(secret, node, time_ms, method, target, body)
            .finalize()
            .into_bytes(),
    )
}

/// Why a forwarded call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the forwarded call's signature headers are missing or malformed")]
    Malformed,
    #[error("the forwarded call's signature is too old or from the future")]
    Stale,
    #[error("the forwarded call's signature does not verify")]
    Invalid,
}

/// Checks a forwarded call's signature against `now_ms` (constant-time comparison).
#[allow(clippy::too_many_arguments)]
pub fn verify(
    secret: &[u8],
    node: &str,
    time: &str,
    signature: &str,
    method: &str,
    target: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<(), SignatureError> {
    let time_ms: i64 = time.parse().map_err(|_| SignatureError::Malformed)?;
    let expected = hex::decode(signature).map_err(|_| SignatureError::Malformed)?;
    let skew = i64::try_from(MAX_SKEW.as_millis()).unwrap_or(i64::MAX);
    if (now_ms - time_ms).abs() > skew {
        return Err(SignatureError::Stale);
    }
    mac(secret, node, time_ms, method, target, body)
        .verify_slice(&expected)
        .map_err(|_| SignatureError::Invalid)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cached_owner_is_used_until_forgotten() {
        let cache = super::OwnerCache::default();
        assert_eq!(cache.get("i1"), None);
        cache.put("i1", "n2", "http://n2");
        assert_eq!(cache.get("i1"), Some(("n2".into(), "http://n2".into())));
        cache.forget("i1");
        assert_eq!(cache.get("i1"), None);
    }

    use super::*;

    #[test]
    fn a_signature_verifies_only_for_what_was_signed() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let sig = sign(secret, "n1", 1_000, "POST", "/api/x?y=1", b"{}");
        assert_eq!(
            verify(
                secret,
                "n1",
                "1000",
                &sig,
                "POST",
                "/api/x?y=1",
                b"{}",
                1_500
            ),
            Ok(())
        );
        for (node, method, target, body) in [
            ("n2", "POST", "/api/x?y=1", &b"{}"[..]),
            ("n1", "GET", "/api/x?y=1", b"{}"),
            ("n1", "POST", "/api/x?y=2", b"{}"),
            ("n1", "POST", "/api/x?y=1", b"{ }"),
        ] {
            assert_eq!(
                verify(secret, node, "1000", &sig, method, target, body, 1_500),
                Err(SignatureError::Invalid),
                "{node} {method} {target}"
            );
        }
        assert_eq!(
            verify(
                b"another secret, just as long....",
                "n1",
                "1000",
                &sig,
                "POST",
                "/api/x?y=1",
                b"{}",
                1_500
            ),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify(
                secret,
                "n1",
                "1000",
                &sig,
                "POST",
                "/api/x?y=1",
                b"{}",
                1_000 + 31_000
            ),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(
                secret,
                "n1",
                "soon",
                &sig,
                "POST",
                "/api/x?y=1",
                b"{}",
                1_500
            ),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn the_fingerprint_changes_with_every_secret_and_shows_none() {
        let base = fingerprint(b"jwt", b"key", b"cluster");
        assert_ne!(base, fingerprint(b"jwt2", b"key", b"cluster"));
        assert_ne!(base, fingerprint(b"jwt", b"key2", b"cluster"));
        assert_ne!(base, fingerprint(b"jwt", b"key", b"cluster2"));
        // Length prefixes: moving a byte from one secret to the next changes it too.
        assert_ne!(base, fingerprint(b"jw", b"tkey", b"cluster"));
        assert!(!base.contains("6a7774"), "no secret in hex");
        assert_eq!(base.len(), 32);
    }

    /// Only the copies of instances not stored go, and only directories named like
    /// instance ids.
    #[tokio::test]
    async fn the_sweep_removes_the_copies_of_instances_not_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path();
        let (kept, gone) = (
            uuid::Uuid::now_v7().to_string(),
            uuid::Uuid::now_v7().to_string(),
        );
        for (id, file) in [(&kept, "a"), (&gone, "b")] {
            for copy in local_copies(data, id) {
                std::fs::create_dir_all(&copy).expect("copy");
                std::fs::write(copy.join(file), b"x").expect("file");
            }
        }
        let notes = data.join("uploads").join("notes");
        std::fs::create_dir_all(&notes).expect("notes");
        let loose = data
            .join("instances")
            .join(uuid::Uuid::now_v7().to_string());
        std::fs::write(&loose, b"a file named like an instance").expect("loose");

        let stored = HashSet::from([kept.clone()]);
        assert_eq!(sweep_local(data, &stored).await, 1);
        for copy in local_copies(data, &kept) {
            assert!(copy.join("a").is_file(), "{} kept", copy.display());
        }
        for copy in local_copies(data, &gone) {
            assert!(!copy.exists(), "{} removed", copy.display());
        }
        assert!(
            notes.is_dir() && loose.is_file(),
            "what is not an instance's stays"
        );
        // Nothing more to do the second time; a data directory without copies is fine.
        assert_eq!(sweep_local(data, &stored).await, 0);
        let empty = tempfile::tempdir().expect("tempdir");
        assert_eq!(sweep_local(empty.path(), &stored).await, 0);
    }
}
