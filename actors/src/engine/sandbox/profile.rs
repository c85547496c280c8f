//! Profiles and blocklists on the sandbox. Each session keeps its own in its stored
//! session (the picture in a file beside it), so they survive restarts; the network
//! shows each connected account's profile to the others, and does not deliver messages
//! to an account from someone it blocks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::domain::ProfilePicture;
use crate::engine::EngineError;

/// The picture's file inside the instance's session directory.
pub(super) const PICTURE_FILE: &str = "sandbox-picture.jpg";

/// What the other sandbox accounts see of a connected one.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct PublicProfile {
    pub name: Option<String>,
    pub about: Option<String>,
    pub picture: Option<ProfilePicture>,
    /// Addresses this account blocks: their messages do not reach it, and they see no
    /// picture of it.
    pub blocked: BTreeSet<String>,
}

impl PublicProfile {
    /// Whether `jid` may see this account's picture and reach it.
    pub(super) fn admits(&self, jid: &str) -> bool {
        !self.blocked.contains(jid)
    }
}

/// Where the picture of the session stored at `session_file` is kept.
pub(super) fn picture_path(session_file: &Path) -> PathBuf {
    session_file.with_file_name(PICTURE_FILE)
}

/// The stored picture `id` as others get it: a `data:` URL (no server to download
/// from), or none when the file is gone.
pub(super) fn read_picture(
    session_file: &Path,
    id: Option<&str>,
) -> Result<Option<ProfilePicture>, EngineError> {
    let Some(id) = id else {
        return Ok(None);
    };
    match std::fs::read(picture_path(session_file)) {
        Ok(bytes) => Ok(Some(ProfilePicture {
            id: id.to_owned(),
            url: format!("data:image/jpeg;base64,{}", BASE64.encode(bytes)),
        })),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Stores `jpeg` as the picture (through a temporary file and a rename), or removes it.
pub(super) fn write_picture(session_file: &Path, jpeg: Option<&[u8]>) -> Result<(), EngineError> {
    let path = picture_path(session_file);
    match jpeg {
        Some(bytes) => {
            let tmp = path.with_extension("jpg.tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)?;
        }
        None => match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_is_read_back_as_a_data_url_until_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let session = dir.path().join("sandbox-session.json");
        assert_eq!(read_picture(&session, None).expect("read"), None);
        write_picture(&session, Some(&[0xff, 0xd8, 0xff, 0x01])).expect("write");
        let picture = read_picture(&session, Some("p1"))
            .expect("read")
            .expect("a picture");
        assert_eq!(picture.id, "p1");
        assert_eq!(picture.url, "data:image/jpeg;base64,/9j/AQ==");
        write_picture(&session, None).expect("remove");
        assert_eq!(read_picture(&session, Some("p1")).expect("read"), None);
        write_picture(&session, None).expect("removing twice is no error");
    }

    #[test]
    fn a_blocked_address_is_not_admitted() {
        let mut profile = PublicProfile::default();
        assert!(profile.admits("79001@s.whatsapp.net"));
        profile.blocked.insert("79001@s.whatsapp.net".into());
        assert!(!profile.admits("79001@s.whatsapp.net"));
        assert!(profile.admits("79002@s.whatsapp.net"));
    }
}
