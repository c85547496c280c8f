//! Accounts: who may call the API, and in which role.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Roles of the contract: `admin` sees everything, `user` owns instances, `operator`
/// answers WABA chats for the user named by its `owner_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    Admin,
    User,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Operator => "operator",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            "operator" => Ok(Role::Operator),
            other => Err(format!(
                "unknown role '{other}' (expected admin, user or operator)"
            )),
        }
    }
}

/// An account. Secrets are stored only in derived form: `password_hash` is an argon2 PHC
/// string, `api_key_hash` is the lookup digest of the API key and `api_key_sealed` the key
/// encrypted under the server's secret key (so login can hand it back, as the spec shows).
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub first_name: String,
    pub last_name: String,
    pub role: Role,
    pub owner_id: Option<String>,
    pub active: bool,
    pub api_key_hash: String,
    pub api_key_sealed: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
