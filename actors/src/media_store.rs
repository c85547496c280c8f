//! Media files kept on disk: `DATA_DIR/uploads/<instance id>/<file id>`, for both
//! directions (what the gateway sends and what it receives).

use std::path::{Path, PathBuf};

/// Where media files live: `DATA_DIR/uploads/<instance id>/<file id>`.
#[derive(Debug, Clone)]
pub struct MediaStore {
    root: PathBuf,
}

impl MediaStore {
    pub fn new(data_dir: &Path) -> Self {
        MediaStore {
            root: data_dir.join("uploads"),
        }
    }

    /// Writes the bytes and returns the path relative to the uploads directory.
    ///
    /// Fails when the directory or file cannot be written.
    pub async fn save(&self, instance_id: &str, bytes: &[u8]) -> std::io::Result<String> {
        let dir = self.root.join(instance_id);
        tokio::fs::create_dir_all(&dir).await?;
        let name = crate::domain::new_id();
        let tmp = dir.join(format!("{name}.part"));
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, dir.join(&name)).await?;
        Ok(format!("{instance_id}/{name}"))
    }

    /// The absolute path of a stored file; None for paths that try to leave the store.
    pub fn path_of(&self, relative: &str) -> Option<PathBuf> {
        let rel = Path::new(relative);
        let safe = rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        safe.then(|| self.root.join(rel))
    }

    /// Removes one stored file (a send that failed after the file was stored).
    pub async fn remove_file(&self, relative: &str) {
        if let Some(path) = self.path_of(relative)
            && let Err(e) = tokio::fs::remove_file(&path).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a media file");
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
        store.remove_instance("inst").await;
        assert!(!dir.path().join("uploads/inst").exists());
    }
}
