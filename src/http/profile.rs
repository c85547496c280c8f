//! The account's profile (push name, about, picture), contacts' pictures, and blocking.

use axum::extract::{DefaultBodyLimit, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::domain::address::jid_user;
use wagate_actors::domain::{Profile, ProfilePatch, ProfilePicture};

use crate::http::access::UsableInstance;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{
    AppJson, AppMultipart, AppPath, field_bytes, multipart_error, person_address,
};
use crate::http::openapi::{NO_INSTANCE, NOT_CONNECTED, OVER_LIMIT};
use crate::http::state::AppState;

/// WhatsApp's longest push name.
const MAX_NAME: usize = 25;
/// WhatsApp's longest "about" text.
const MAX_ABOUT: usize = 139;
/// The largest picture accepted (WhatsApp shows 640×640; a phone photo is smaller than
/// this once compressed).
const MAX_PICTURE: usize = 2 * 1024 * 1024;

const NO_CONTACT: &str =
    "No such instance visible to the caller, or the number is not on WhatsApp (`not_on_whatsapp`)";

pub fn router() -> OpenApiRouter<AppState> {
    let (schemas, paths, pictures) = routes!(set_picture, remove_picture);
    // Multipart overhead on top of the picture itself.
    let pictures = pictures.layer(DefaultBodyLimit::max(MAX_PICTURE + 64 * 1024));
    OpenApiRouter::new()
        .routes(routes!(get_profile, update_profile))
        .routes((schemas, paths, pictures))
        .routes(routes!(contact_picture))
        .routes(routes!(block))
        .routes(routes!(unblock))
        .routes(routes!(blocklist))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateProfile {
    /// The push name: 1 to 25 characters, not blank.
    #[schema(
        example = "Support",
        min_length = 1,
        max_length = 25,
        pattern = r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    name: Option<String>,
    /// The "about" text: at most 139 characters; empty clears it.
    #[schema(example = "Answering 9:00–18:00", max_length = 139)]
    about: Option<String>,
}

/// The form of a new picture.
#[derive(ToSchema)]
#[allow(dead_code)]
struct PictureForm {
    /// A JPEG of at most 2 MiB (WhatsApp shows it square, 640×640).
    #[schema(value_type = String, format = Binary, content_media_type = "image/jpeg")]
    file: Vec<u8>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Done {
    success: bool,
}

#[derive(Debug, Serialize, ToSchema)]
struct ContactPicture {
    /// The contact's phone number.
    phone: String,
    /// `null` when they have none, or hide it from the account.
    picture: Option<ProfilePicture>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Blocked {
    /// The contact's phone number.
    phone: String,
    /// Whether the account blocks them now.
    blocked: bool,
}

#[derive(Debug, Serialize, ToSchema)]
struct BlockedContact {
    /// `…@s.whatsapp.net`, or `…@lid` when WhatsApp does not say the number.
    jid: String,
    /// The phone number, when known.
    phone: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Blocklist {
    blocklist: Vec<BlockedContact>,
}

/// The account's profile: number, push name, about text and picture.
#[utoipa::path(
    get,
    path = "/api/whatsapp/{instanceId}/profile",
    tag = "profile",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "The profile", body = Profile),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn get_profile(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
) -> ApiResult<AppJson<Profile>> {
    let profile = state.instances.get(&instance.id)?.profile().await?;
    Ok(AppJson(profile))
}

/// Changes the push name or the about text; answers the profile as it is now.
#[utoipa::path(
    put,
    path = "/api/whatsapp/{instanceId}/profile",
    tag = "profile",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = UpdateProfile,
    responses(
        (status = 200, description = "Changed", body = Profile),
        (status = 400, description = "Nothing to change, or a field out of bounds (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn update_profile(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppJson(body): AppJson<UpdateProfile>,
) -> ApiResult<AppJson<Profile>> {
    if let Some(name) = &body.name
        && (name.trim().is_empty() || name.chars().count() > MAX_NAME)
    {
        return Err(ApiError::validation(format!(
            "name: 1 to {MAX_NAME} characters, not blank"
        )));
    }
    if let Some(about) = &body.about
        && about.chars().count() > MAX_ABOUT
    {
        return Err(ApiError::validation(format!(
            "about: at most {MAX_ABOUT} characters"
        )));
    }
    if body.name.is_none() && body.about.is_none() {
        return Err(ApiError::validation(
            "nothing to change: give name or about",
        ));
    }
    let handle = state.instances.get(&instance.id)?;
    handle
        .update_profile(ProfilePatch {
            name: body.name,
            about: body.about,
        })
        .await?;
    Ok(AppJson(handle.profile().await?))
}

/// Sets the account's picture (`multipart/form-data` with a JPEG `file`).
#[utoipa::path(
    put,
    path = "/api/whatsapp/{instanceId}/profile/picture",
    tag = "profile",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body(content = PictureForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Set", body = Done),
        (status = 400, description = "Not a multipart form, no file, or not a JPEG (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 413, description = "The picture is over 2 MiB", body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn set_picture(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppMultipart(mut form): AppMultipart,
) -> ApiResult<AppJson<Done>> {
    let max = MAX_PICTURE.min(state.config.max_upload_bytes);
    let mut picture = None;
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        if field.name() != Some("file") {
            continue;
        }
        picture = Some(field_bytes(&mut field, max, "the picture").await?);
    }
    let picture = picture.ok_or_else(|| ApiError::validation("file is required"))?;
    // Every JPEG starts with a start-of-image marker followed by another marker.
    if !picture.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Err(ApiError::validation("file: WhatsApp takes a JPEG picture"));
    }
    state
        .instances
        .get(&instance.id)?
        .set_profile_picture(Some(picture))
        .await?;
    Ok(AppJson(Done { success: true }))
}

/// Removes the account's picture.
#[utoipa::path(
    delete,
    path = "/api/whatsapp/{instanceId}/profile/picture",
    tag = "profile",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "Removed (or there was none)", body = Done),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn remove_picture(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
) -> ApiResult<AppJson<Done>> {
    state
        .instances
        .get(&instance.id)?
        .set_profile_picture(None)
        .await?;
    Ok(AppJson(Done { success: true }))
}

/// A contact's profile picture.
#[utoipa::path(
    get,
    path = "/api/whatsapp/{instanceId}/contacts/{phone}/picture",
    tag = "profile",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("phone" = String, Path, description = "The contact's phone number or WhatsApp address"),
    ),
    responses(
        (status = 200, description = "The picture, or `null`", body = ContactPicture),
        (status = 400, description = "Not a person's number or address (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn contact_picture(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppPath((_, phone)): AppPath<(String, String)>,
) -> ApiResult<AppJson<ContactPicture>> {
    let jid = person(&phone)?;
    let picture = state
        .instances
        .get(&instance.id)?
        .contact_picture(&jid)
        .await?;
    Ok(AppJson(ContactPicture {
        phone: jid_user(&jid).to_owned(),
        picture,
    }))
}

/// Blocks a contact: WhatsApp stops delivering their messages and calls to the account.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/contacts/{phone}/block",
    tag = "profile",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("phone" = String, Path, description = "The contact's phone number or WhatsApp address"),
    ),
    responses(
        (status = 200, description = "Blocked", body = Blocked),
        (status = 400, description = "Not a person's number or address (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_CONTACT, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn block(
    state: State<AppState>,
    usable: UsableInstance,
    path: AppPath<(String, String)>,
) -> ApiResult<AppJson<Blocked>> {
    set_blocked(state, usable, path, true).await
}

/// Unblocks a contact.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/contacts/{phone}/unblock",
    tag = "profile",
    params(
        ("instanceId" = String, Path, description = "The instance's id"),
        ("phone" = String, Path, description = "The contact's phone number or WhatsApp address"),
    ),
    responses(
        (status = 200, description = "Unblocked (or was not blocked)", body = Blocked),
        (status = 400, description = "Not a person's number or address (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_CONTACT, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn unblock(
    state: State<AppState>,
    usable: UsableInstance,
    path: AppPath<(String, String)>,
) -> ApiResult<AppJson<Blocked>> {
    set_blocked(state, usable, path, false).await
}

async fn set_blocked(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppPath((_, phone)): AppPath<(String, String)>,
    blocked: bool,
) -> ApiResult<AppJson<Blocked>> {
    let jid = person(&phone)?;
    state
        .instances
        .get(&instance.id)?
        .block(&jid, blocked)
        .await?;
    Ok(AppJson(Blocked {
        phone: jid_user(&jid).to_owned(),
        blocked,
    }))
}

/// The contacts the account blocks.
#[utoipa::path(
    get,
    path = "/api/whatsapp/{instanceId}/blocklist",
    tag = "profile",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "The blocked contacts", body = Blocklist),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn blocklist(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
) -> ApiResult<AppJson<Blocklist>> {
    let list = state.instances.get(&instance.id)?.blocklist().await?;
    let blocklist = list
        .into_iter()
        .map(|jid| BlockedContact {
            phone: jid.strip_suffix("@s.whatsapp.net").map(str::to_owned),
            jid,
        })
        .collect();
    Ok(AppJson(Blocklist { blocklist }))
}

/// A person's address from a path segment (a number or an address; no group).
fn person(value: &str) -> ApiResult<String> {
    Ok(person_address("phone", value)?.into_string())
}
