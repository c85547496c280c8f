//! The sandbox session as stored in `sandbox-session.json`, and [`SessionFile`]: that
//! file with what it holds kept in memory, so an inbound message's address-book check
//! does not read and parse the whole file again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::super::EngineError;

/// What `sandbox-session.json` holds: the simulated equivalent of key material.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoredSession {
    pub(super) phone: String,
    pub(super) push_name: Option<String>,
    pub(super) paired_at: DateTime<Utc>,
    /// The simulated phone's address book: JID → names.
    #[serde(default)]
    pub(super) contacts: BTreeMap<String, StoredContact>,
    /// The profile's "about" text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) about: Option<String>,
    /// The id of the profile picture kept in [`super::profile::PICTURE_FILE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) picture_id: Option<String>,
    /// The addresses the account blocks.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub(super) blocked: BTreeSet<String>,
}

impl StoredSession {
    /// A session just linked as `phone`.
    pub(super) fn linked(phone: &str) -> Self {
        StoredSession {
            phone: phone.to_owned(),
            push_name: None,
            paired_at: Utc::now(),
            contacts: BTreeMap::new(),
            about: None,
            picture_id: None,
            blocked: BTreeSet::new(),
        }
    }

    /// Puts `jid` in the address book, with `name` and `push_name` where given;
    /// whether that changed anything.
    pub(super) fn know(&mut self, jid: &str, name: Option<&str>, push_name: Option<&str>) -> bool {
        let mut changed = false;
        let entry = self.contacts.entry(jid.to_owned()).or_insert_with(|| {
            changed = true;
            StoredContact {
                name: None,
                push_name: None,
            }
        });
        for (field, given) in [(&mut entry.name, name), (&mut entry.push_name, push_name)] {
            if let Some(given) = given
                && field.as_deref() != Some(given)
            {
                *field = Some(given.to_owned());
                changed = true;
            }
        }
        changed
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoredContact {
    pub(super) name: Option<String>,
    pub(super) push_name: Option<String>,
}

/// `sandbox-session.json`, and what it holds as this session last read or wrote it.
/// While a session runs only it writes its file, so the copy stays true; [`Self::load`]
/// reads the file again (at start, when the cluster may just have put it there).
pub(super) struct SessionFile {
    path: PathBuf,
    /// `None`: not read yet, or a write failed and the file is to be read again.
    held: Mutex<Option<Held>>,
}

/// What the file holds: a session, or no file.
type Held = Option<StoredSession>;

impl SessionFile {
    pub(super) fn new(path: PathBuf) -> Self {
        SessionFile {
            path,
            held: Mutex::new(None),
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    fn held(&self) -> MutexGuard<'_, Option<Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the file again; `None` when there is none.
    pub(super) fn load(&self) -> Result<Option<StoredSession>, EngineError> {
        let read = read_session(&self.path)?;
        *self.held() = Some(read.clone());
        Ok(read)
    }

    /// What the file holds; `None` when there is none.
    pub(super) fn read(&self) -> Result<Option<StoredSession>, EngineError> {
        Ok(filled(&self.path, &mut self.held())?.clone())
    }

    /// Stores `session` as the whole file.
    pub(super) fn write(&self, session: StoredSession) -> Result<(), EngineError> {
        let mut held = self.held();
        *held = None;
        write_session(&self.path, &session)?;
        *held = Some(Some(session));
        Ok(())
    }

    /// Changes the stored session with `change`, which tells whether it changed
    /// anything: the file is written only then. `InvalidState` when nothing is stored.
    pub(super) fn edit(
        &self,
        change: impl FnOnce(&mut StoredSession) -> bool,
    ) -> Result<(), EngineError> {
        let mut held = self.held();
        let Some(session) = filled(&self.path, &mut held)? else {
            return Err(EngineError::InvalidState("not linked".into()));
        };
        if !change(session) {
            return Ok(());
        }
        let written = write_session(&self.path, session);
        if written.is_err() {
            // The copy is ahead of the file: read the file again next time.
            *held = None;
        }
        written
    }

    /// Forgets the session, file and copy.
    pub(super) fn remove(&self) -> Result<(), EngineError> {
        let mut held = self.held();
        *held = None;
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
        *held = Some(None);
        Ok(())
    }
}

/// The copy `held` of the file at `path`, read first when there is none.
fn filled<'a>(path: &Path, held: &'a mut Option<Held>) -> Result<&'a mut Held, EngineError> {
    let copy = match held.take() {
        Some(copy) => copy,
        None => read_session(path)?,
    };
    Ok(held.insert(copy))
}

fn read_session(path: &Path) -> Result<Option<StoredSession>, EngineError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| EngineError::Io(format!("{} is corrupt: {err}", path.display()))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Writes through a temporary file and a rename, so a crash mid-write never leaves a
/// half session that would fail every later start.
fn write_session(path: &Path, session: &StoredSession) -> Result<(), EngineError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec_pretty(session)
        .map_err(|err| EngineError::Io(format!("cannot encode the session: {err}")))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn know_tells_what_changed() {
        let mut s = StoredSession::linked("15550001111");
        let ann = "79990001122@s.whatsapp.net";
        assert!(s.know(ann, None, None), "a new sender");
        assert!(!s.know(ann, None, None));
        assert!(s.know(ann, None, Some("Ann")), "a new push name");
        assert!(!s.know(ann, None, Some("Ann")));
        assert!(s.know(ann, Some("Ann Lee"), None), "a saved name");
        assert!(!s.know(ann, Some("Ann Lee"), Some("Ann")));
        let known = &s.contacts[ann];
        assert_eq!(known.name.as_deref(), Some("Ann Lee"));
        assert_eq!(known.push_name.as_deref(), Some("Ann"));
    }

    #[test]
    fn a_failed_write_makes_the_file_read_again() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("sandbox-session.json");
        let file = SessionFile::new(path.clone());
        assert_eq!(file.read().expect("read"), None);
        assert!(matches!(
            file.edit(|_| true),
            Err(EngineError::InvalidState(_))
        ));
        file.write(StoredSession::linked("15550001111"))
            .expect("write");
        let ann = "79990001122@s.whatsapp.net";
        file.edit(|s| s.know(ann, None, Some("Ann"))).expect("edit");
        assert!(
            file.read()
                .expect("read")
                .expect("stored")
                .contacts
                .contains_key(ann)
        );

        // The write goes through `<name>.tmp`: a directory there makes it fail.
        let tmp = path.with_extension("json.tmp");
        std::fs::create_dir(&tmp).expect("block the write");
        let bob = "79990003344@s.whatsapp.net";
        assert!(file.edit(|s| s.know(bob, None, Some("Bob"))).is_err());
        std::fs::remove_dir(&tmp).expect("unblock");
        let stored = file.read().expect("read").expect("stored");
        assert!(
            !stored.contacts.contains_key(bob),
            "not what the file holds"
        );
        assert!(stored.contacts.contains_key(ann));
    }

    #[test]
    fn remove_forgets_file_and_copy() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("sandbox-session.json");
        let file = SessionFile::new(path.clone());
        file.write(StoredSession::linked("15550001111"))
            .expect("write");
        file.remove().expect("remove");
        assert!(!path.exists());
        assert_eq!(file.read().expect("read"), None);
        file.remove().expect("removing nothing is fine");
    }
}
