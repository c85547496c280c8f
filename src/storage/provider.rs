//! Which storage provider to use: opening one from the configuration, the choice a live
//! switch records in `DATA_DIR/storage-provider.json` (so it survives a restart), and the
//! provider's URL as `/api/db/status` shows it (passwords masked).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use wagate_actors::error::StoreError;
use wagate_actors::store::DynStorage;

use super::mongo::MongoStorage;
use super::sqlite::SqliteStorage;
use crate::config::{Config, DatabaseProvider};

/// The file under `DATA_DIR` that records the provider chosen by the last switch. When
/// present it overrides `DATABASE_PROVIDER`: the data lives where the switch moved it.
pub const CHOICE_FILE: &str = "storage-provider.json";

/// Why a provider could not be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error("DATABASE_URL is not configured, so mongodb cannot be used")]
    NotConfigured,
    #[error("cannot open {provider}: {source}")]
    Store {
        provider: &'static str,
        source: StoreError,
    },
}

/// `sqlite` or `mongodb` → the provider; anything else is None.
pub fn parse(name: &str) -> Option<DatabaseProvider> {
    match name {
        "sqlite" => Some(DatabaseProvider::Sqlite),
        "mongodb" => Some(DatabaseProvider::Mongodb),
        _ => None,
    }
}

/// Opens `provider` with the configuration's URL for it: `SQLITE_DATABASE_URL` (or the
/// file under `DATA_DIR`) for SQLite, `DATABASE_URL` for MongoDB.
///
/// Fails with `NotConfigured` for MongoDB without `DATABASE_URL`, and with `Store` when
/// the database cannot be opened or reached.
pub async fn open(config: &Config, provider: DatabaseProvider) -> Result<DynStorage, OpenError> {
    let store = |source| OpenError::Store {
        provider: provider.as_str(),
        source,
    };
    match provider {
        DatabaseProvider::Sqlite => {
            let storage = SqliteStorage::open(&config.sqlite_path)
                .await
                .map_err(store)?;
            Ok(Arc::new(storage))
        }
        DatabaseProvider::Mongodb => {
            if config.database_url.0.trim().is_empty() {
                return Err(OpenError::NotConfigured);
            }
            let storage = MongoStorage::connect(&config.database_url.0)
                .await
                .map_err(store)?;
            Ok(Arc::new(storage))
        }
    }
}

fn choice_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CHOICE_FILE)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Choice {
    provider: String,
}

/// The provider recorded by the last successful switch, if any.
///
/// Fails (with a message naming the file) when the file exists but cannot be read or
/// does not name a provider: guessing could start the server on stale data.
pub fn read_choice(data_dir: &Path) -> Result<Option<DatabaseProvider>, String> {
    let path = choice_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let choice: Choice = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is not {{\"provider\": \"sqlite\"|\"mongodb\"}}: {e}",
            path.display()
        )
    })?;
    parse(&choice.provider).map(Some).ok_or_else(|| {
        format!(
            "{} names an unknown provider '{}' (expected sqlite or mongodb)",
            path.display(),
            choice.provider
        )
    })
}

/// Records `provider` atomically: written to a temporary file, flushed to disk, then
/// renamed over the old one, so a crash leaves either the old choice or the new one.
///
/// Fails when the file cannot be written or renamed.
pub fn write_choice(data_dir: &Path, provider: DatabaseProvider) -> std::io::Result<()> {
    let path = choice_path(data_dir);
    let tmp = data_dir.join(format!("{CHOICE_FILE}.tmp"));
    let body = serde_json::to_vec(&Choice {
        provider: provider.as_str().to_owned(),
    })
    .map_err(std::io::Error::other)?;
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&body)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    // The rename itself is durable once the directory is synced (where that is possible).
    if let Ok(dir) = std::fs::File::open(data_dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// The URL of `provider` as the status endpoint shows it: SQLite's `file:` URL, or
/// `DATABASE_URL` with any password replaced by `****` (empty when not configured).
pub fn display_url(config: &Config, provider: &str) -> String {
    match parse(provider) {
        Some(DatabaseProvider::Sqlite) => config.sqlite_url.clone(),
        Some(DatabaseProvider::Mongodb) => mask_password(&config.database_url.0),
        None => String::new(),
    }
}

/// `mongodb://user:secret@host/db` → `mongodb://user:****@host/db`. Only the user info
/// of the authority (before the last `@` ahead of the path) is touched; URLs without a
/// password come back unchanged.
pub fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:****{}",
        &url[..scheme_end],
        &authority[..colon],
        &rest[at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_password("mongodb://user:s3cret@db.example.com:27017/wagate"),
            "mongodb://user:****@db.example.com:27017/wagate"
        );
        assert_eq!(
            mask_password("mongodb+srv://u:p%40ss@cluster.example.net/app?retryWrites=true"),
            "mongodb+srv://u:****@cluster.example.net/app?retryWrites=true"
        );
        assert_eq!(
            mask_password("mongodb://u:p@h1:27017,h2:27017/db"),
            "mongodb://u:****@h1:27017,h2:27017/db"
        );
        assert_eq!(
            mask_password("mongodb://mongo:27017/wagate"),
            "mongodb://mongo:27017/wagate"
        );
        assert_eq!(
            mask_password("mongodb://onlyuser@host/db"),
            "mongodb://onlyuser@host/db"
        );
        // An `@` in the query string is not user info.
        assert_eq!(
            mask_password("mongodb://host/db?x=a:b@c"),
            "mongodb://host/db?x=a:b@c"
        );
    }

    #[test]
    fn the_choice_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_choice(dir.path()), Ok(None));
        write_choice(dir.path(), DatabaseProvider::Mongodb).expect("write");
        assert_eq!(read_choice(dir.path()), Ok(Some(DatabaseProvider::Mongodb)));
        write_choice(dir.path(), DatabaseProvider::Sqlite).expect("write");
        assert_eq!(read_choice(dir.path()), Ok(Some(DatabaseProvider::Sqlite)));
        std::fs::write(dir.path().join(CHOICE_FILE), "{\"provider\":\"oracle\"}").expect("write");
        let err = read_choice(dir.path()).expect_err("unknown provider");
        assert!(err.contains("oracle"), "{err}");
    }
}
