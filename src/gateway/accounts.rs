//! Accounts: creating users, checking credentials, resolving API keys and tokens.
//! The HTTP edge calls these; they own the rules (unique emails, the last admin, the
//! operator's owner) so every path through the API applies them the same way.

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A field is missing its rules (the message names it).
    #[error("{0}")]
    Invalid(String),
    #[error("a user with this email already exists")]
    EmailTaken,
    /// Wrong credentials, token or key; the message does not say which part.
    #[error("{0}")]
    Unauthorized(String),
    #[error("user not found")]
    NotFound,
    #[error("the last active admin cannot be demoted or deactivated")]
    LastAdmin,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A failure of ours (hashing, token signing); the detail is for the log.
    #[error("{0}")]
    Internal(String),
}

fn internal(e: impl std::fmt::Display) -> AccountError {
    AccountError::Internal(e.to_string())
}

use chrono::Utc;
use wagate_actors::domain::{Role, User, new_id};
use wagate_actors::store::DynStorage;

use crate::crypto::{self, JwtKeys, KeyVault};
use wagate_actors::error::StoreError;

/// What a new account needs.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
    pub role: Role,
    pub owner_id: Option<String>,
}

/// Account operations over storage, the key vault and the JWT keys. Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    storage: DynStorage,
    vault: KeyVault,
    jwt: JwtKeys,
}

/// Longest accepted name, email or password, in characters.
const MAX_FIELD: usize = 200;
/// Shortest accepted password.
pub const MIN_PASSWORD: usize = 6;

pub fn validate_email(email: &str) -> Result<String, AccountError> {
    let e = email.trim();
    let valid = e.len() <= MAX_FIELD
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        })
        && !e.chars().any(char::is_whitespace);
    if valid {
        Ok(e.to_owned())
    } else {
        Err(AccountError::Invalid(
            "email must be a valid email address".into(),
        ))
    }
}

pub fn validate_password(password: &str) -> Result<(), AccountError> {
    let length = password.chars().count();
    if !(MIN_PASSWORD..=MAX_FIELD).contains(&length) {
        return Err(AccountError::Invalid(format!(
            "password must be between {MIN_PASSWORD} and {MAX_FIELD} characters"
        )));
    }
    Ok(())
}

pub fn validate_name(field: &str, value: &str) -> Result<String, AccountError> {
    let v = value.trim();
    if v.chars().count() > MAX_FIELD {
        return Err(AccountError::Invalid(format!(
            "{field} must be at most {MAX_FIELD} characters"
        )));
    }
    Ok(v.to_owned())
}

async fn hash_password(password: String) -> Result<String, AccountError> {
    tokio::task::spawn_blocking(move || crypto::hash_password(&password))
        .await
        .map_err(internal)?
        .map_err(internal)
}

/// A user plus the API key in clear, as the login and create answers carry it.
pub struct WithKey {
    pub user: User,
    pub api_key: Option<String>,
}

impl Accounts {
    pub fn new(storage: DynStorage, vault: KeyVault, jwt: JwtKeys) -> Self {
        Accounts {
            storage,
            vault,
            jwt,
        }
    }

    pub fn storage(&self) -> &DynStorage {
        &self.storage
    }

    /// Creates a user with a fresh API key.
    ///
    /// Fails with `Invalid` on invalid fields or a missing/invalid operator owner, `EmailTaken` when the
    /// email is taken.
    pub async fn create(&self, new: NewUser) -> Result<WithKey, AccountError> {
        let email = validate_email(&new.email)?;
        validate_password(&new.password)?;
        let first_name = validate_name("firstName", &new.first_name)?;
        let last_name = validate_name("lastName", &new.last_name)?;
        let owner_id = self.check_owner(new.role, new.owner_id.as_deref()).await?;
        if self.storage.user_by_email(&email).await?.is_some() {
            return Err(AccountError::EmailTaken);
        }
        let password_hash = hash_password(new.password).await?;
        let api_key = crypto::new_api_key();
        let now = Utc::now();
        let user = User {
            id: new_id(),
            email,
            password_hash,
            first_name,
            last_name,
            role: new.role,
            owner_id,
            active: true,
            api_key_hash: crypto::api_key_hash(&api_key),
            api_key_sealed: self.vault.seal(&api_key),
            created_at: now,
            updated_at: now,
        };
        self.storage.create_user(&user).await.map_err(|e| match e {
            StoreError::Conflict(_) => AccountError::EmailTaken,
            other => other.into(),
        })?;
        Ok(WithKey {
            user,
            api_key: Some(api_key),
        })
    }

    /// An operator must name an existing, non-operator owner; other roles have no owner.
    async fn check_owner(
        &self,
        role: Role,
        owner_id: Option<&str>,
    ) -> Result<Option<String>, AccountError> {
        match (role, owner_id) {
            (Role::Operator, None) => Err(AccountError::Invalid(
                "ownerId is required for role operator".into(),
            )),
            (Role::Operator, Some(id)) => match self.storage.user_by_id(id).await? {
                Some(owner) if owner.role != Role::Operator => Ok(Some(owner.id)),
                Some(_) => Err(AccountError::Invalid(
                    "ownerId must name a user or admin, not an operator".into(),
                )),
                None => Err(AccountError::Invalid(
                    "ownerId names no existing user".into(),
                )),
            },
            (_, Some(_)) => Err(AccountError::Invalid(
                "ownerId is only allowed for role operator".into(),
            )),
            (_, None) => Ok(None),
        }
    }

    /// Creates the configured admin when no active admin exists (first start).
    pub async fn ensure_admin(
        &self,
        email: &str,
        password: &str,
        first: &str,
        last: &str,
    ) -> Result<bool, AccountError> {
        if self.storage.count_admins().await? > 0 {
            return Ok(false);
        }
        if let Some(mut existing) = self.storage.user_by_email(email).await? {
            // The admin email exists as another role or deactivated: promote it back.
            existing.role = Role::Admin;
            existing.owner_id = None;
            existing.active = true;
            existing.updated_at = Utc::now();
            self.storage.update_user(&existing).await?;
            return Ok(true);
        }
        self.create(NewUser {
            email: email.to_owned(),
            password: password.to_owned(),
            first_name: first.to_owned(),
            last_name: last.to_owned(),
            role: Role::Admin,
            owner_id: None,
        })
        .await?;
        Ok(true)
    }

    /// Checks email and password; on success a token and the user with its API key.
    ///
    /// Fails with `Unauthorized` for an unknown email, a wrong password or a deactivated account,
    /// without saying which.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
    ) -> Result<(String, WithKey), AccountError> {
        let refused = || AccountError::Unauthorized("invalid email or password".into());
        let user = self.storage.user_by_email(email.trim()).await?;
        // Verify against a dummy hash when the user is unknown, so timing does not reveal
        // which emails exist.
        let phc = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.to_owned());
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || crypto::verify_password(&password, &phc))
            .await
            .map_err(internal)?;
        let user = match user {
            Some(u) if ok && u.active => u,
            _ => return Err(refused()),
        };
        let token = self.jwt.issue(&user.id).map_err(internal)?;
        let api_key = self.vault.open(&user.api_key_sealed);
        if api_key.is_none() {
            tracing::warn!(user_id = %user.id, "API key cannot be unsealed (secret key changed?); regenerate it");
        }
        Ok((token, WithKey { user, api_key }))
    }

    /// The active user a bearer token names.
    pub async fn user_for_token(&self, token: &str) -> Result<User, AccountError> {
        let claims = self
            .jwt
            .verify(token)
            .map_err(|e| AccountError::Unauthorized(e.to_string()))?;
        match self.storage.user_by_id(&claims.sub).await? {
            Some(u) if u.active => Ok(u),
            _ => Err(AccountError::Unauthorized("invalid token".into())),
        }
    }

    /// The active user an API key belongs to.
    pub async fn user_for_api_key(&self, key: &str) -> Result<User, AccountError> {
        if !key.starts_with(crypto::API_KEY_PREFIX) || key.len() > 128 {
            return Err(AccountError::Unauthorized("invalid API key".into()));
        }
        match self
            .storage
            .user_by_api_key_hash(&crypto::api_key_hash(key))
            .await?
        {
            Some(u) if u.active => Ok(u),
            _ => Err(AccountError::Unauthorized("invalid API key".into())),
        }
    }

    /// Replaces the user's API key; the old one stops working at once.
    pub async fn regenerate_api_key(&self, mut user: User) -> Result<String, AccountError> {
        let api_key = crypto::new_api_key();
        user.api_key_hash = crypto::api_key_hash(&api_key);
        user.api_key_sealed = self.vault.seal(&api_key);
        user.updated_at = Utc::now();
        if !self.storage.update_user(&user).await? {
            return Err(AccountError::NotFound);
        }
        Ok(api_key)
    }

    /// Applies a partial update. Role, activity and owner changes are for admins only;
    /// the caller checks that. Fails with `LastAdmin` when the last admin would be lost.
    pub async fn update(&self, mut user: User, patch: UserPatch) -> Result<User, AccountError> {
        let was_admin = user.role == Role::Admin && user.active;
        if let Some(email) = patch.email {
            let email = validate_email(&email)?;
            if !email.eq_ignore_ascii_case(&user.email)
                && self.storage.user_by_email(&email).await?.is_some()
            {
                return Err(AccountError::EmailTaken);
            }
            user.email = email;
        }
        if let Some(password) = patch.password {
            validate_password(&password)?;
            user.password_hash = hash_password(password).await?;
        }
        if let Some(v) = patch.first_name {
            user.first_name = validate_name("firstName", &v)?;
        }
        if let Some(v) = patch.last_name {
            user.last_name = validate_name("lastName", &v)?;
        }
        if let Some(active) = patch.active {
            user.active = active;
        }
        if patch.role.is_some() || patch.owner_id.is_some() {
            let role = patch.role.unwrap_or(user.role);
            let owner = match (&patch.owner_id, role) {
                (Some(o), _) => Some(o.clone()),
                (None, Role::Operator) => user.owner_id.clone(),
                (None, _) => None,
            };
            if owner.as_deref() == Some(user.id.as_str()) {
                return Err(AccountError::Invalid(
                    "ownerId must name another user".into(),
                ));
            }
            user.owner_id = self.check_owner(role, owner.as_deref()).await?;
            user.role = role;
        }
        if was_admin
            && !(user.role == Role::Admin && user.active)
            && self.storage.count_admins().await? <= 1
        {
            return Err(AccountError::LastAdmin);
        }
        user.updated_at = Utc::now();
        self.storage.update_user(&user).await.map_err(|e| match e {
            StoreError::Conflict(_) => AccountError::EmailTaken,
            other => other.into(),
        })?;
        Ok(user)
    }
}

/// Fields a `PUT /api/users/{id}` may change; absent fields stay as they are.
#[derive(Debug, Default, Clone)]
pub struct UserPatch {
    pub email: Option<String>,
    pub password: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: Option<Role>,
    pub owner_id: Option<String>,
    pub active: Option<bool>,
}

/// An argon2id hash of a random string, verified against when an email is unknown.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0lT2bnSxNVz6g5+0yXmpgOH0DhAKDXtHxbTLRTfXYWo";
