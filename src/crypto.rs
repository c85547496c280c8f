//! Secrets handling: password hashing, API keys, JWTs and sealing values at rest.
//!
//! API keys are never stored in plaintext. Each user row keeps two derived forms:
//! - `api_key_hash`: SHA-256 of the key, for lookup. Keys carry 256 random bits, so a
//!   fast hash is enough: there is nothing to brute-force.
//! - `api_key_sealed`: the key encrypted with ChaCha20-Poly1305 under the server's secret
//!   key, so `POST /api/auth/login` can hand the key back as the spec shows.
//!
//! A stolen database therefore yields neither usable keys nor passwords without the
//! secret key, which lives outside it (`SECRET_KEY` or `<DATA_DIR>/secret.key`).

use std::path::Path;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of every API key, so leaked keys are recognisable in logs and scanners.
pub const API_KEY_PREFIX: &str = "wag_";

/// Seals and opens small secrets with the server's 32-byte key.
#[derive(Clone)]
pub struct KeyVault {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyVault(<redacted>)")
    }
}

impl KeyVault {
    pub fn new(key: [u8; 32]) -> Self {
        KeyVault {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    /// Reads the key from `path` (64 hex characters), creating it with fresh random bytes
    /// and mode 0600 when missing.
    ///
    /// Fails when the file cannot be read or written, or holds something else than a key.
    pub fn load_or_create(path: &Path) -> std::io::Result<KeyVault> {
        if path.exists() {
            let text = std::fs::read_to_string(path)?;
            let bytes = hex::decode(text.trim()).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} does not hold 64 hex characters", path.display()),
                )
            })?;
            let key = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} does not hold a 32-byte key", path.display()),
                )
            })?;
            return Ok(KeyVault::new(key));
        }
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        write_private(path, hex::encode(key).as_bytes())?;
        Ok(KeyVault::new(key))
    }

    /// Encrypts `plain` with a random nonce; the result is base64(nonce ‖ ciphertext).
    pub fn seal(&self, plain: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        STANDARD.encode(out)
    }

    /// Decrypts what [`KeyVault::seal`] produced; None when it was sealed under another key
    /// or tampered with.
    pub fn open(&self, sealed: &str) -> Option<String> {
        let raw = STANDARD.decode(sealed).ok()?;
        if raw.len() < 12 {
            return None;
        }
        let (nonce, ct) = raw.split_at(12);
        let plain = self.cipher.decrypt(Nonce::from_slice(nonce), ct).ok()?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// A new API key: the prefix plus 32 random bytes in URL-safe base64.
pub fn new_api_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The lookup digest of an API key (lowercase hex SHA-256).
pub fn api_key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Hashes a password with argon2id. CPU-heavy: call from `spawn_blocking`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a password against a stored PHC string. CPU-heavy: call from `spawn_blocking`.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Claims of our JWTs: the user id and the validity window.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
}

/// Issues and checks HS256 tokens. The algorithm is pinned: a token that names another
/// algorithm (including `none`) is refused.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    lifetime: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8], lifetime: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = 5;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            lifetime,
        }
    }

    /// A token for `user_id`, valid for the configured lifetime.
    pub fn issue(&self, user_id: &str) -> Result<String, String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_owned(),
            iat: now,
            exp: now.saturating_add(i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX / 2)),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| e.to_string())
    }

    /// The claims of a valid token; why it is invalid otherwise.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired".to_owned(),
                _ => "invalid token".to_owned(),
            })
    }
}

/// A fresh random JWT secret for development runs without `JWT_SECRET`.
pub fn random_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_tamper() {
        let vault = KeyVault::new([7u8; 32]);
        let sealed = vault.seal("wag_secret");
        assert_ne!(sealed, vault.seal("wag_secret"), "nonces must differ");
        assert_eq!(vault.open(&sealed).as_deref(), Some("wag_secret"));
        assert_eq!(KeyVault::new([8u8; 32]).open(&sealed), None);
        let mut raw = STANDARD.decode(&sealed).expect("base64");
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(vault.open(&STANDARD.encode(raw)), None);
    }

    #[test]
    fn key_file_is_created_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret.key");
        let a = KeyVault::load_or_create(&path).expect("create");
        let b = KeyVault::load_or_create(&path).expect("load");
        assert_eq!(b.open(&a.seal("x")).as_deref(), Some("x"));
        std::fs::write(&path, "nothex").expect("write");
        assert!(KeyVault::load_or_create(&path).is_err());
    }

    #[test]
    fn passwords() {
        let h = hash_password("hunter22").expect("hash");
        assert!(verify_password("hunter22", &h));
        assert!(!verify_password("hunter23", &h));
        assert!(!verify_password("hunter22", "not a phc string"));
    }

    #[test]
    fn jwt_pins_the_algorithm() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let t = keys.issue("u1").expect("issue");
        assert_eq!(keys.verify(&t).expect("valid").sub, "u1");
        // The same claims under HS512 with the same secret are refused.
        let claims = Claims {
            sub: "u1".into(),
            iat: 0,
            exp: i64::MAX / 4,
        };
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .expect("encode");
        assert!(keys.verify(&hs512).is_err());
        let other = JwtKeys::new(b"another-secret-another-secret-xx", Duration::from_secs(60));
        assert!(other.verify(&t).is_err());
    }

    #[test]
    fn api_keys() {
        let k = new_api_key();
        assert!(k.starts_with(API_KEY_PREFIX));
        assert_eq!(k.len(), API_KEY_PREFIX.len() + 43);
        assert_eq!(api_key_hash(&k), api_key_hash(&k));
        assert_ne!(api_key_hash(&k), api_key_hash(&new_api_key()));
    }
}
