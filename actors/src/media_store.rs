//! Media files kept on disk: `DATA_DIR/uploads/<instance id>/<file id>`, for both
//! directions (what the gateway sends and what it receives).
//!
//! In cluster mode the store also has a [`SharedMedia`] backend every node reaches (the
//! shared database): a file is written to both, the disk copy is a cache, and a node
//! that takes an instance over fetches a file it does not have from the shared backend
//! the first time it is read ([`MediaStore::local_path`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{StoreError, StoreResult};

/// Where the files of every node are kept in cluster mode, under the same relative path
/// as on disk (`<instance id>/<file id>`), tagged with their instance.
#[async_trait]
pub trait SharedMedia: Send + Sync {
    /// Stores a file of `instance` under `path`.
    async fn put(&self, instance: &str, path: &str, bytes: &[u8]) -> StoreResult<()>;
    /// The bytes stored under `path`; None when there is no such file.
    async fn get(&self, path: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Removes the file stored under `path` (nothing to do when there is none).
    async fn delete(&self, path: &str) -> StoreResult<()>;
    /// Removes every file of `instance`.
    async fn delete_instance(&self, instance: &str) -> StoreResult<()>;
}

/// The shared backend's error behind a failed [`MediaStore::save`]; None for a disk
/// failure.
pub fn shared_failure(e: &std::io::Error) -> Option<&StoreError> {
    e.get_ref()?.downcast_ref::<StoreError>()
}

/// The directory of media files under `DATA_DIR`.
const UPLOADS: &str = "uploads";

/// Where the media files of one instance are kept on this machine
/// (`DATA_DIR/uploads/<instance id>`).
pub fn uploads_dir(data_dir: &Path, instance_id: &str) -> PathBuf {
    data_dir.join(UPLOADS).join(instance_id)
}

/// Where media files live: `DATA_DIR/uploads/<instance id>/<file id>`, plus the shared
/// backend in cluster mode. Cheap to clone.
#[derive(Clone)]
pub struct MediaStore {
    root: PathBuf,
    shared: Option<Arc<dyn SharedMedia>>,
}

impl std::fmt::Debug for MediaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaStore")
            .field("root", &self.root)
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl MediaStore {
    /// Files on this node's disk only.
    pub fn new(data_dir: &Path) -> Self {
        MediaStore {
            root: data_dir.join(UPLOADS),
            shared: None,
        }
    }

    /// Files also kept in `shared` (cluster mode); None: disk only.
    pub fn with_shared(mut self, shared: Option<Arc<dyn SharedMedia>>) -> Self {
        self.shared = shared;
        self
    }

    /// Writes the bytes (to disk, then to the shared backend when there is one) and
    /// returns the path relative to the uploads directory.
    ///
    /// Fails when the directory or file cannot be written, or the shared backend refuses
    /// the file (the disk copy is removed then: a file only this node has would be lost
    /// to the node that takes the instance over); that error carries the backend's
    /// [`StoreError`] ([`shared_failure`]).
    pub async fn save(&self, instance_id: &str, bytes: &[u8]) -> std::io::Result<String> {
        let dir = self.root.join(instance_id);
        tokio::fs::create_dir_all(&dir).await?;
        let name = crate::domain::new_id();
        let tmp = dir.join(format!("{name}.part"));
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, dir.join(&name)).await?;
        let relative = format!("{instance_id}/{name}");
        if let Some(shared) = &self.shared
            && let Err(e) = shared.put(instance_id, &relative, bytes).await
        {
            let _ = tokio::fs::remove_file(dir.join(&name)).await;
            return Err(std::io::Error::other(e));
        }
        Ok(relative)
    }

    /// The absolute path of a stored file on this node's disk (present or not); None
    /// for paths that try to leave the store.
    pub fn path_of(&self, relative: &str) -> Option<PathBuf> {
        let rel = Path::new(relative);
        let safe = rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        safe.then(|| self.root.join(rel))
    }

    /// The absolute path of a stored file, present on this node's disk: fetched from the
    /// shared backend into the disk cache when only another node wrote it. None for
    /// paths that try to leave the store and for files stored nowhere.
    ///
    /// Fails with `Unavailable` when the shared backend cannot be reached or the fetched
    /// file cannot be written to disk.
    pub async fn local_path(&self, relative: &str) -> StoreResult<Option<PathBuf>> {
        let Some(path) = self.path_of(relative) else {
            return Ok(None);
        };
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(Some(path));
        }
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let Some(bytes) = shared.get(relative).await? else {
            return Ok(None);
        };
        let unwritable =
            |e: std::io::Error| StoreError::Unavailable(format!("cannot cache a media file: {e}"));
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(unwritable)?;
        }
        // A unique temporary name: two readers fetching the same file do not collide.
        let tmp = path.with_extension(format!("{}.part", crate::domain::new_id()));
        tokio::fs::write(&tmp, &bytes).await.map_err(unwritable)?;
        tokio::fs::rename(&tmp, &path).await.map_err(unwritable)?;
        Ok(Some(path))
    }

    /// Removes one stored file (a send that failed after the file was stored).
    pub async fn remove_file(&self, relative: &str) {
        let Some(path) = self.path_of(relative) else {
            return;
        };
        if let Err(e) = tokio::fs::remove_file(&path).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a media file");
        }
        if let Some(shared) = &self.shared
            && let Err(e) = shared.delete(relative).await
        {
            tracing::warn!(path = relative, error = %e, "cannot remove a shared media file");
        }
    }

    /// Removes every file of an instance (when it is deleted).
    pub async fn remove_instance(&self, instance_id: &str) {
        let dir = self.root.join(instance_id);
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %dir.display(), error = %e, "cannot remove media of a deleted instance");
        }
        if let Some(shared) = &self.shared
            && let Err(e) = shared.delete_instance(instance_id).await
        {
            tracing::warn!(instance = instance_id, error = %e, "cannot remove shared media of a deleted instance");
        }
    }
}

/// A [`SharedMedia`] in memory: files by path, with their instance (tests).
#[cfg(any(test, feature = "testing"))]
#[derive(Default)]
pub struct MemoryMedia(std::sync::Mutex<std::collections::BTreeMap<String, (String, Vec<u8>)>>);

#[cfg(any(test, feature = "testing"))]
impl MemoryMedia {
    fn files(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, (String, Vec<u8>)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(any(test, feature = "testing"))]
#[async_trait]
impl SharedMedia for MemoryMedia {
    async fn put(&self, instance: &str, path: &str, bytes: &[u8]) -> StoreResult<()> {
        let mut files = self.files();
        files.insert(path.into(), (instance.into(), bytes.to_vec()));
        Ok(())
    }

    async fn get(&self, path: &str) -> StoreResult<Option<Vec<u8>>> {
        let files = self.files();
        Ok(files.get(path).map(|(_, bytes)| bytes.clone()))
    }

    async fn delete(&self, path: &str) -> StoreResult<()> {
        let mut files = self.files();
        files.remove(path);
        Ok(())
    }

    async fn delete_instance(&self, instance: &str) -> StoreResult<()> {
        let mut files = self.files();
        files.retain(|_, (owner, _)| owner != instance);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn store_saves_and_refuses_escapes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MediaStore::new(dir.path());
        let rel = store.save("inst", b"data").await.expect("save");
        let path = store.path_of(&rel).expect("path");
        assert_eq!(std::fs::read(path).expect("read"), b"data");
        assert!(store.path_of("../secret.key").is_none());
        assert!(store.path_of("/etc/passwd").is_none());
        assert_eq!(store.local_path("../secret.key").await, Ok(None));
        store.remove_instance("inst").await;
        assert!(!dir.path().join("uploads/inst").exists());
        assert_eq!(store.local_path(&rel).await, Ok(None));
    }

    /// A shared backend that cannot be reached.
    struct Away;

    #[async_trait]
    impl SharedMedia for Away {
        async fn put(&self, _: &str, _: &str, _: &[u8]) -> StoreResult<()> {
            Err(StoreError::Unavailable("away".into()))
        }
        async fn get(&self, _: &str) -> StoreResult<Option<Vec<u8>>> {
            Err(StoreError::Unavailable("away".into()))
        }
        async fn delete(&self, _: &str) -> StoreResult<()> {
            Err(StoreError::Unavailable("away".into()))
        }
        async fn delete_instance(&self, _: &str) -> StoreResult<()> {
            Err(StoreError::Unavailable("away".into()))
        }
    }

    #[tokio::test]
    async fn a_file_the_shared_backend_refuses_is_not_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MediaStore::new(dir.path()).with_shared(Some(Arc::new(Away)));
        let err = store.save("inst", b"data").await.expect_err("refused");
        assert_eq!(
            shared_failure(&err),
            Some(&StoreError::Unavailable("away".into()))
        );
        let left = std::fs::read_dir(dir.path().join("uploads/inst"))
            .expect("the instance's directory")
            .count();
        assert_eq!(left, 0, "no disk copy only this node would have");
        // A file on no disk, with the backend away: an error, not "no such file".
        assert!(store.local_path("inst/other").await.is_err());

        let blocked = tempfile::tempdir().expect("tempdir");
        std::fs::write(blocked.path().join("uploads"), b"a file, not a directory").expect("write");
        let disk = MediaStore::new(blocked.path());
        let err = disk.save("inst", b"data").await.expect_err("no directory");
        assert_eq!(shared_failure(&err), None);
    }

    #[tokio::test]
    async fn a_file_written_by_another_node_is_fetched_into_the_cache() {
        let shared: Arc<dyn SharedMedia> = Arc::new(MemoryMedia::default());
        let (one, two) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let writer = MediaStore::new(one.path()).with_shared(Some(shared.clone()));
        let reader = MediaStore::new(two.path()).with_shared(Some(shared.clone()));
        let rel = writer.save("inst", b"bytes").await.expect("save");
        let kept = writer.save("other", b"kept").await.expect("save");

        let cached = reader
            .local_path(&rel)
            .await
            .expect("fetch")
            .expect("stored");
        assert_eq!(std::fs::read(&cached).expect("read"), b"bytes");
        assert!(cached.starts_with(two.path()));

        // Removing an instance removes its files everywhere but in other nodes' caches.
        writer.remove_instance("inst").await;
        assert_eq!(shared.get(&rel).await, Ok(None));
        assert_eq!(shared.get(&kept).await, Ok(Some(b"kept".to_vec())));
        writer.remove_file(&kept).await;
        assert_eq!(reader.local_path(&kept).await, Ok(None));
    }
}
