//! Authentication: the [`AuthUser`] extractor (JWT bearer or `x-api-key`) and the
//! `/api/auth` routes.

use std::time::Instant;

use axum::Extension;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::domain::{Role, User};

use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::AppJson;
use crate::http::state::AppState;
use crate::http::wire::Peer;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(me))
}

/// The caller, authenticated by `Authorization: Bearer <jwt>` or `x-api-key: <key>`.
/// Handlers that take it are closed to anonymous callers (401).
#[derive(Debug, Clone)]
pub struct AuthUser(pub User);

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.0.role == Role::Admin
    }

    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this endpoint is for admins only"))
        }
    }

    /// Whether the caller may see data owned by `owner_id`.
    pub fn can_access(&self, owner_id: &str) -> bool {
        self.is_admin() || self.0.id == owner_id
    }
}

/// The instance a request path names, for attributing API calls in the statistics.
fn instance_in_path(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/api/instances/")
        .or_else(|| path.strip_prefix("/api/whatsapp/"))
        .or_else(|| path.strip_prefix("/api/sandbox/instances/"))
        .or_else(|| path.strip_prefix("/api/stats/instances/"))?;
    let id = rest.split('/').next()?;
    (!id.is_empty() && id.len() <= 64).then_some(id)
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    /// Authenticates, applies the user's rate limit (429 `rate_limited`), then counts the
    /// call (`apiCalls`) for the user and the instance the path names. Once per request:
    /// the access extractors that need the caller too get the same one.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(known) = parts.extensions.get::<AuthUser>() {
            return Ok(known.clone());
        }
        let user = authenticate(parts, state).await?;
        if let Err(wait) = state.limits.calls.check(&user.0.id, Instant::now()) {
            return Err(ApiError::too_many_requests(
                "rate_limited",
                format!(
                    "rate limit of {} calls per minute exceeded",
                    state.config.rate_limit_per_minute
                ),
                crate::throttle::retry_after_secs(wait),
            ));
        }
        let calls = wagate_actors::domain::Usage {
            api_calls: 1,
            ..Default::default()
        };
        state
            .stats
            .add(&user.0.id, instance_in_path(parts.uri.path()), calls);
        parts.extensions.insert(user.clone());
        Ok(user)
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<AuthUser, ApiError> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let text = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <token>`"))?;
        return state
            .accounts
            .user_for_token(token.trim())
            .await
            .map(AuthUser)
            .map_err(ApiError::from);
    }
    if let Some(value) = parts.headers.get("x-api-key") {
        let key = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("invalid API key"))?;
        return state
            .accounts
            .user_for_api_key(key.trim())
            .await
            .map(AuthUser)
            .map_err(ApiError::from);
    }
    Err(ApiError::unauthorized(
        "authentication required: send `Authorization: Bearer <token>` or `x-api-key`",
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn instance_ids_in_paths() {
        use super::instance_in_path as f;
        assert_eq!(f("/api/instances/abc/qr"), Some("abc"));
        assert_eq!(f("/api/whatsapp/abc/send"), Some("abc"));
        assert_eq!(f("/api/sandbox/instances/abc/scan"), Some("abc"));
        assert_eq!(f("/api/stats/instances/abc"), Some("abc"));
        assert_eq!(f("/api/instances"), None);
        assert_eq!(f("/api/instances/"), None);
        assert_eq!(f("/api/users/abc"), None);
    }
}

#[derive(Debug, Deserialize, ToSchema)]
struct LoginRequest {
    #[schema(example = "admin@example.com", min_length = 1)]
    email: String,
    #[schema(min_length = 1)]
    password: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct LoginUser {
    id: String,
    email: String,
    first_name: String,
    last_name: String,
    role: Role,
    /// The user's API key (null for accounts created before keys were shown).
    api_key: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct LoginResponse {
    /// A JWT for `Authorization: Bearer <token>`.
    token: String,
    user: LoginUser,
}

/// Logs in: a JWT and the user's API key.
///
/// Checks the password, throttled per email and per client address: a locked-out email
/// or address gets 429 `too_many_attempts` before the password is looked at.
#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "auth",
    security(()),
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 401, description = "Wrong email or password", body = ErrorBody),
        (status = 429, description = "Too many failed attempts (`too_many_attempts`); see `Retry-After`", body = ErrorBody),
    )
)]
async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<Peer>>>,
    AppJson(body): AppJson<LoginRequest>,
) -> ApiResult<AppJson<LoginResponse>> {
    if body.email.trim().is_empty() || body.password.is_empty() {
        return Err(ApiError::validation("email and password are required"));
    }
    let ip = peer.map(|Extension(ConnectInfo(Peer(addr)))| addr.ip());
    let throttle = &state.limits.login;
    if let Err(wait) = throttle.begin(&body.email, ip, Instant::now()) {
        return Err(ApiError::too_many_requests(
            "too_many_attempts",
            "too many failed login attempts; retry later",
            crate::throttle::retry_after_secs(wait),
        ));
    }
    let (token, with_key) = match state.accounts.login(&body.email, &body.password).await {
        Ok(ok) => {
            throttle.succeeded(&body.email, ip);
            ok
        }
        Err(e) => {
            // Only a refused password counts; an outage is not the caller's failure.
            if !matches!(e, crate::gateway::accounts::AccountError::Unauthorized(_)) {
                throttle.not_judged(&body.email, ip);
            }
            return Err(e.into());
        }
    };
    let u = with_key.user;
    Ok(AppJson(LoginResponse {
        token,
        user: LoginUser {
            id: u.id,
            email: u.email,
            first_name: u.first_name,
            last_name: u.last_name,
            role: u.role,
            api_key: with_key.api_key,
        },
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct MeResponse {
    id: String,
    email: String,
    first_name: String,
    last_name: String,
    role: Role,
    /// An operator's owner (the account whose WABA chats it answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_id: Option<String>,
}

/// The caller's own account.
#[utoipa::path(
    get,
    path = "/api/auth/me",
    tag = "auth",
    responses((status = 200, description = "The caller", body = MeResponse))
)]
async fn me(AuthUser(u): AuthUser) -> AppJson<MeResponse> {
    AppJson(MeResponse {
        id: u.id,
        email: u.email,
        first_name: u.first_name,
        last_name: u.last_name,
        role: u.role,
        owner_id: u.owner_id,
    })
}
