//! WhatsApp groups of an instance: list, create, read and change them, manage members,
//! invite links, join and leave. Sends to a group use `…/send` with its `…@g.us`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::domain::{Group, GroupPatch, Jid, ParticipantAction, ParticipantOutcome};

use crate::http::access::UsableInstance;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppPath, chat_address, person_address};
use crate::http::openapi::{NOT_CONNECTED, OVER_LIMIT};
use crate::http::state::AppState;

/// WhatsApp's longest group subject.
const MAX_SUBJECT: usize = 100;
/// WhatsApp's longest group description.
const MAX_DESCRIPTION: usize = 2048;
/// The most members one request adds, removes, promotes or demotes (and a new group
/// starts with).
const MAX_PARTICIPANTS: usize = 256;
/// Where WhatsApp's invite links point; the code follows.
const INVITE_PREFIX: &str = "https://chat.whatsapp.com/";

/// The schema of the members of a request: 1 to [`MAX_PARTICIPANTS`] phone numbers or
/// people's addresses.
fn participants_schema() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(crate::http::openapi::person_address_schema())
        .min_items(Some(1))
        .max_items(Some(MAX_PARTICIPANTS))
        .build()
}

const NO_GROUP: &str = "No such instance visible to the caller, or no such group the account is in";
const FORBIDDEN: &str = "WhatsApp refused: the account is not an admin of the group (`forbidden`)";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update))
        .routes(routes!(participants))
        .routes(routes!(invite, revoke_invite))
        .routes(routes!(join))
        .routes(routes!(leave))
}

#[derive(Debug, Serialize, ToSchema)]
struct Groups {
    groups: Vec<Group>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateGroup {
    /// 1 to 100 characters, not blank.
    #[schema(
        example = "Support team",
        min_length = 1,
        max_length = 100,
        pattern = r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    subject: String,
    /// Phone numbers (or people's addresses) of the first members, besides the account:
    /// 1 to 256.
    #[schema(schema_with = participants_schema)]
    participants: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateGroup {
    /// 1 to 100 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    subject: Option<String>,
    /// At most 2048 characters; empty removes it.
    #[schema(max_length = 2048)]
    description: Option<String>,
    /// Only admins send messages.
    announce: Option<bool>,
    /// Only admins change the subject, description and settings.
    locked: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ChangeParticipants {
    action: ParticipantAction,
    /// Phone numbers (or people's addresses): 1 to 256.
    #[schema(schema_with = participants_schema)]
    participants: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ParticipantsChanged {
    /// WhatsApp's answer for each member asked for.
    participants: Vec<ParticipantOutcome>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Invite {
    /// The invite code.
    code: String,
    /// The link to share.
    link: String,
}

impl Invite {
    fn of(code: String) -> Invite {
        Invite {
            link: format!("{INVITE_PREFIX}{code}"),
            code,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct JoinGroup {
    /// An invite code (letters and digits), or the whole `https://chat.whatsapp.com/…`
    /// link.
    #[schema(
        example = "https://chat.whatsapp.com/AbCdEfGhIjKlMnOpQrStUv",
        pattern = r"^(?:https://chat\.whatsapp\.com/)?[A-Za-z0-9]+$"
    )]
    invite: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct Joined {
    /// The group joined (`…@g.us`).
    jid: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct Left {
    success: bool,
}

/// The groups the account is in, with their members.
#[utoipa::path(
    get,
    path = "/api/whatsapp/{instanceId}/groups",
    tag = "groups",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "The groups", body = Groups),
        (status = 404, description = NO_GROUP, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
) -> ApiResult<AppJson<Groups>> {
    let groups = state.instances.get(&instance.id)?.groups().await?;
    Ok(AppJson(Groups { groups }))
}

/// Creates a group with the account as its (super)admin. `group_update` (`create`)
/// follows on every member's side.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/groups",
    tag = "groups",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = CreateGroup,
    responses(
        (status = 201, description = "Created", body = Group),
        (status = 400, description = "A missing or too long subject, no members, too many, or one that is no phone number (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_GROUP, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppJson(body): AppJson<CreateGroup>,
) -> ApiResult<(StatusCode, AppJson<Group>)> {
    let subject = subject(&body.subject)?;
    let participants = people("participants", &body.participants)?;
    let group = state
        .instances
        .get(&instance.id)?
        .create_group(subject, participants)
        .await?;
    Ok((StatusCode::CREATED, AppJson(group)))
}

/// A group's metadata and members with their roles.
#[utoipa::path(
    get,
    path = "/api/whatsapp/{instanceId}/groups/{groupJid}",
    tag = "groups",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("groupJid" = String, Path, description = "The group's address (`…@g.us`)"),
    ),
    responses(
        (status = 200, description = "The group", body = Group),
        (status = 400, description = "Not a group's address (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_GROUP, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn get(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppPath((_, group)): AppPath<(String, String)>,
) -> ApiResult<AppJson<Group>> {
    let jid = group_jid(&group)?;
    let group = state
        .instances
        .get(&instance.id)?
        .group(jid.as_str())
        .await?;
    Ok(AppJson(group))
}

/// Changes the subject, description or settings; answers the group as it is now.
/// Settings are for admins; in a `locked` group so are subject and description.
#[utoipa::path(
    put,
    path = "/api/whatsapp/{instanceId}/groups/{groupJid}",
    tag = "groups",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("groupJid" = String, Path, description = "The group's address (`…@g.us`)"),
    ),
    request_body = UpdateGroup,
    responses(
        (status = 200, description = "Changed", body = Group),
        (status = 400, description = "Nothing to change, or a field out of bounds (`validation_error`)", body = ErrorBody),
        (status = 403, description = FORBIDDEN, body = ErrorBody),
        (status = 404, description = NO_GROUP, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn update(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppPath((_, group)): AppPath<(String, String)>,
    AppJson(body): AppJson<UpdateGroup>,
) -> ApiResult<AppJson<Group>> {
    let jid = group_jid(&group)?;
    let patch = GroupPatch {
        subject: body.subject.as_deref().map(subject).transpose()?,
        description: body
            .description
            .map(|d| {
                if d.chars().count() > MAX_DESCRIPTION {
                    Err(ApiError::validation(format!(
                        "description: at most {MAX_DESCRIPTION} characters"
                    )))
                } else {
                    Ok(d)
                }
            })
            .transpose()?,
        announce: body.announce,
        locked: body.locked,
    };
    if patch.is_empty() {
        return Err(ApiError::validation(
            "nothing to change: give subject, description, announce or locked",
        ));
    }
    let handle = state.instances.get(&instance.id)?;
    handle.update_group(jid.as_str(), patch).await?;
    Ok(AppJson(handle.group(jid.as_str()).await?))
}

/// Adds, removes, promotes or demotes members (admins only). WhatsApp answers per
/// member: `200`, or its code (`403` their privacy settings forbid it, `404` not on
/// WhatsApp or not a member, `409` already a member).
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/groups/{groupJid}/participants",
    tag = "groups",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("groupJid" = String, Path, description = "The group's address (`…@g.us`)"),
    ),
    request_body = ChangeParticipants,
    responses(
        (status = 200, description = "WhatsApp's answer per member", body = ParticipantsChanged),
        (status = 400, description = "An unknown action, no members, too many, or one that is no phone number (`validation_error`)", body = ErrorBody),
        (status = 403, description = FORBIDDEN, body = ErrorBody),
        (status = 404, description = NO_GROUP, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn participants(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppPath((_, group)): AppPath<(String, String)>,
    AppJson(body): AppJson<ChangeParticipants>,
) -> ApiResult<AppJson<ParticipantsChanged>> {
    let jid = group_jid(&group)?;
    let members = people("participants", &body.participants)?;
    let participants = state
        .instances
        .get(&instance.id)?
        .group_participants(jid.as_str(), body.action, members)
        .await?;
    Ok(AppJson(ParticipantsChanged { participants }))
}

/// The group's invite link (admins only).
#[utoipa::path(
    get,
    path = "/api/whatsapp/{instanceId}/groups/{groupJid}/invite",
    tag = "groups",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("groupJid" = String, Path, description = "The group's address (`…@g.us`)"),
    ),
    responses(
        (status = 200, description = "The invite", body = Invite),
        (status = 400, description = "Not a group's address (`validation_error`)", body = ErrorBody),
        (status = 403, description = FORBIDDEN, body = ErrorBody),
        (status = 404, description = NO_GROUP, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn invite(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppPath((_, group)): AppPath<(String, String)>,
) -> ApiResult<AppJson<Invite>> {
    let jid = group_jid(&group)?;
    let code = state
        .instances
        .get(&instance.id)?
        .group_invite(jid.as_str(), false)
        .await?;
    Ok(AppJson(Invite::of(code)))
}

/// Revokes the invite link (admins only): the old one stops working; answers the new
/// one.
#[utoipa::path(
    delete,
    path = "/api/whatsapp/{instanceId}/groups/{groupJid}/invite",
    tag = "groups",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("groupJid" = String, Path, description = "The group's address (`…@g.us`)"),
    ),
    responses(
        (status = 200, description = "The new invite", body = Invite),
        (status = 400, description = "Not a group's address (`validation_error`)", body = ErrorBody),
        (status = 403, description = FORBIDDEN, body = ErrorBody),
        (status = 404, description = NO_GROUP, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn revoke_invite(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppPath((_, group)): AppPath<(String, String)>,
) -> ApiResult<AppJson<Invite>> {
    let jid = group_jid(&group)?;
    let code = state
        .instances
        .get(&instance.id)?
        .group_invite(jid.as_str(), true)
        .await?;
    Ok(AppJson(Invite::of(code)))
}

/// Joins a group by its invite code or link.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/groups/join",
    tag = "groups",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = JoinGroup,
    responses(
        (status = 200, description = "Joined", body = Joined),
        (status = 400, description = "An empty invite (`validation_error`)", body = ErrorBody),
        (status = 404, description = "No such instance visible to the caller, or no group has this invite (revoked?)", body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn join(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppJson(body): AppJson<JoinGroup>,
) -> ApiResult<AppJson<Joined>> {
    let invite = body.invite.trim();
    let code = invite.strip_prefix(INVITE_PREFIX).unwrap_or(invite);
    if code.is_empty() || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::validation(
            "invite: an invite code or a https://chat.whatsapp.com/ link",
        ));
    }
    let jid = state.instances.get(&instance.id)?.join_group(code).await?;
    Ok(AppJson(Joined { jid }))
}

/// Leaves a group.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/groups/{groupJid}/leave",
    tag = "groups",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("groupJid" = String, Path, description = "The group's address (`…@g.us`)"),
    ),
    responses(
        (status = 200, description = "Left", body = Left),
        (status = 400, description = "Not a group's address (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_GROUP, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn leave(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppPath((_, group)): AppPath<(String, String)>,
) -> ApiResult<AppJson<Left>> {
    let jid = group_jid(&group)?;
    state
        .instances
        .get(&instance.id)?
        .leave_group(jid.as_str())
        .await?;
    Ok(AppJson(Left { success: true }))
}

/// A group's address from the path; 400 for anything else.
fn group_jid(value: &str) -> ApiResult<Jid> {
    let jid = chat_address("groupJid", value)?;
    if !jid.is_group() {
        return Err(ApiError::validation(format!(
            "groupJid: '{value}' is not a group's address (…@g.us)"
        )));
    }
    Ok(jid)
}

fn subject(value: &str) -> ApiResult<String> {
    let subject = value.trim();
    match subject.chars().count() {
        0 => Err(ApiError::validation("subject: must not be empty")),
        n if n > MAX_SUBJECT => Err(ApiError::validation(format!(
            "subject: at most {MAX_SUBJECT} characters"
        ))),
        _ => Ok(subject.to_owned()),
    }
}

/// People's addresses from phone numbers (or addresses); groups are refused.
fn people(field: &str, values: &[String]) -> ApiResult<Vec<String>> {
    if values.is_empty() || values.len() > MAX_PARTICIPANTS {
        return Err(ApiError::validation(format!(
            "{field}: 1 to {MAX_PARTICIPANTS} phone numbers"
        )));
    }
    values
        .iter()
        .map(|v| Ok(person_address(field, v)?.into_string()))
        .collect()
}
