//! The users API: admins manage every account; a user may read and update itself.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::domain::{Role, User};

use crate::gateway::accounts::{NewUser, UserPatch};
use crate::http::access::AdminOnly;
use crate::http::auth::AuthUser;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppPath, AppQuery};
use crate::http::state::AppState;
use crate::http::{PageParams, Pagination, iso};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read, update, remove))
        .routes(routes!(regenerate_key))
}

/// A user as the API shows it: never a password hash or a key digest.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    id: String,
    email: String,
    first_name: String,
    last_name: String,
    role: Role,
    /// An operator's owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_id: Option<String>,
    active: bool,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// The new API key: only in the answer that created the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
}

impl UserView {
    fn new(u: User, api_key: Option<String>) -> Self {
        UserView {
            id: u.id,
            email: u.email,
            first_name: u.first_name,
            last_name: u.last_name,
            role: u.role,
            owner_id: u.owner_id,
            active: u.active,
            created_at: iso(u.created_at),
            updated_at: iso(u.updated_at),
            api_key,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateUser {
    #[schema(
        pattern = "^[^@\\s]+@[^@\\s]+$",
        max_length = 200,
        example = "ann@example.com"
    )]
    email: String,
    /// 6 to 200 characters.
    #[schema(min_length = 6, max_length = 200)]
    password: String,
    #[serde(default)]
    #[schema(max_length = 200)]
    first_name: String,
    #[serde(default)]
    #[schema(max_length = 200)]
    last_name: String,
    /// `user` when omitted.
    #[serde(default = "default_role")]
    role: Role,
    /// For an operator, and required for one: the account whose WABA chats it answers
    /// (an existing user or admin, 400 otherwise). Other roles have none.
    owner_id: Option<String>,
}

fn default_role() -> Role {
    Role::User
}

/// Creates a user (admins only). The answer carries its API key, shown this once.
#[utoipa::path(
    post,
    path = "/api/users",
    tag = "users",
    request_body = CreateUser,
    responses(
        (status = 201, description = "Created", body = UserView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "The email is taken", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    _admin: AdminOnly,
    AppJson(body): AppJson<CreateUser>,
) -> ApiResult<(StatusCode, AppJson<UserView>)> {
    let created = state
        .accounts
        .create(NewUser {
            email: body.email,
            password: body.password,
            first_name: body.first_name,
            last_name: body.last_name,
            role: body.role,
            owner_id: body.owner_id,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        AppJson(UserView::new(created.user, created.api_key)),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
struct UserList {
    users: Vec<UserView>,
    pagination: Pagination,
}

/// Lists users (admins only).
#[utoipa::path(
    get,
    path = "/api/users",
    tag = "users",
    params(PageParams),
    responses(
        (status = 200, description = "A page of users (default limit 100)", body = UserList),
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    _admin: AdminOnly,
    AppQuery(page): AppQuery<PageParams>,
) -> ApiResult<AppJson<UserList>> {
    let (limit, skip) = page.resolve(100)?;
    let found = state.storage.list_users(limit, skip).await?;
    Ok(AppJson(UserList {
        users: found
            .items
            .into_iter()
            .map(|u| UserView::new(u, None))
            .collect(),
        pagination: Pagination::new(found.total, limit, skip),
    }))
}

/// The user `id` if the caller may see it; 404 otherwise (an existing account of somebody
/// else is not revealed to a non-admin).
async fn visible_user(state: &AppState, caller: &AuthUser, id: &str) -> ApiResult<User> {
    if !caller.is_admin() && caller.0.id != id {
        return Err(ApiError::not_found("user not found"));
    }
    state
        .storage
        .user_by_id(id)
        .await?
        .ok_or_else(|| ApiError::not_found("user not found"))
}

/// A user: any for an admin, only itself for anybody else (404 otherwise).
#[utoipa::path(
    get,
    path = "/api/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 404, description = "No such user visible to the caller", body = ErrorBody),
    )
)]
async fn read(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<UserView>> {
    let user = visible_user(&state, &caller, &id).await?;
    Ok(AppJson(UserView::new(user, None)))
}

/// Absent fields stay as they are; `role`, `active` and `ownerId` are for admins.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateUser {
    #[schema(pattern = "^[^@\\s]+@[^@\\s]+$", max_length = 200)]
    email: Option<String>,
    /// 6 to 200 characters.
    #[schema(min_length = 6, max_length = 200)]
    password: Option<String>,
    #[schema(max_length = 200)]
    first_name: Option<String>,
    #[schema(max_length = 200)]
    last_name: Option<String>,
    role: Option<Role>,
    /// Only for a user who is (or becomes, with `role`) an operator: the account whose
    /// WABA chats it answers, an existing user or admin (400 otherwise).
    owner_id: Option<String>,
    active: Option<bool>,
}

/// Updates a user: any for an admin, only itself for anybody else.
#[utoipa::path(
    put,
    path = "/api/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "The user's id")),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "The updated user", body = UserView),
        (status = 403, description = "A non-admin changing role, active or ownerId", body = ErrorBody),
        (status = 404, description = "No such user visible to the caller", body = ErrorBody),
    )
)]
async fn update(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<UpdateUser>,
) -> ApiResult<AppJson<UserView>> {
    let user = visible_user(&state, &caller, &id).await?;
    if !caller.is_admin()
        && (body.role.is_some() || body.active.is_some() || body.owner_id.is_some())
    {
        return Err(ApiError::forbidden(
            "only admins may change role, active or ownerId",
        ));
    }
    let updated = state
        .accounts
        .update(
            user,
            UserPatch {
                email: body.email,
                password: body.password,
                first_name: body.first_name,
                last_name: body.last_name,
                role: body.role,
                owner_id: body.owner_id,
                active: body.active,
            },
        )
        .await?;
    Ok(AppJson(UserView::new(updated, None)))
}

#[derive(Debug, Serialize, ToSchema)]
struct Deleted {
    success: bool,
    message: String,
}

/// Deletes a user (admins only; not itself, not one that still owns instances).
#[utoipa::path(
    delete,
    path = "/api/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "`cannot_delete_self` or `user_has_instances`", body = ErrorBody),
    )
)]
async fn remove(
    State(state): State<AppState>,
    AdminOnly(caller): AdminOnly,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<Deleted>> {
    let user = visible_user(&state, &caller, &id).await?;
    if user.id == caller.0.id {
        return Err(ApiError::conflict(
            "cannot_delete_self",
            "an admin cannot delete its own account",
        ));
    }
    let owned = state.storage.list_instances(Some(&user.id)).await?.len();
    if owned > 0 {
        return Err(ApiError::conflict(
            "user_has_instances",
            format!("the user still owns {owned} instance(s); delete them first"),
        ));
    }
    state.storage.delete_user(&user.id).await?;
    Ok(AppJson(Deleted {
        success: true,
        message: format!("User {} deleted successfully", user.id),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct NewKey {
    api_key: String,
}

/// Replaces the user's API key; the old one stops working at once.
#[utoipa::path(
    post,
    path = "/api/users/{id}/regenerate-api-key",
    tag = "users",
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The new key", body = NewKey),
        (status = 404, description = "No such user visible to the caller", body = ErrorBody),
    )
)]
async fn regenerate_key(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<NewKey>> {
    let user = visible_user(&state, &caller, &id).await?;
    let api_key = state.accounts.regenerate_api_key(user).await?;
    Ok(AppJson(NewKey { api_key }))
}
