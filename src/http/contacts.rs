//! Contacts on both path families of the spec: live ones from WhatsApp (`/contacts`,
//! `/contacts/add`) and stored ones (`/contacts/db`, `/contacts/import`, `/contacts/save`).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::domain::address::{is_group_jid, jid_user};
use wagate_actors::domain::{Contact, ContactQuery, Jid};

use crate::gateway::contacts::ContactFields;
use crate::http::access::UsableInstance;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppQuery, chat_address};
use crate::http::openapi::{NO_INSTANCE, NOT_CONNECTED, OVER_LIMIT};
use crate::http::state::AppState;
use crate::http::{Pagination, iso, page_limit};

/// The stored-contact endpoints exist under both `/api/instances` and `/api/whatsapp`;
/// the `whatsapp_*` handlers are the second family.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live_contacts))
        .routes(routes!(add_contact))
        .routes(routes!(stored_contacts))
        .routes(routes!(import_contacts))
        .routes(routes!(save_contact))
        .routes(routes!(whatsapp_stored_contacts))
        .routes(routes!(whatsapp_import_contacts))
        .routes(routes!(whatsapp_save_contact))
}

/// A stored contact as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ContactView {
    id: String,
    instance_id: String,
    name: Option<String>,
    number: String,
    remote_jid: String,
    push_name: Option<String>,
    is_group: bool,
    profile_picture: Option<String>,
    about: Option<String>,
    #[schema(format = DateTime)]
    last_activity: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl From<Contact> for ContactView {
    fn from(c: Contact) -> Self {
        ContactView {
            id: c.id,
            instance_id: c.instance_id,
            name: c.name,
            number: c.number,
            remote_jid: c.remote_jid,
            push_name: c.push_name,
            is_group: c.is_group,
            profile_picture: c.profile_picture,
            about: c.about,
            last_activity: c.last_activity.map(iso),
            created_at: iso(c.created_at),
            updated_at: iso(c.updated_at),
        }
    }
}

/// A contact as WhatsApp reports it now.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct LiveContact {
    /// The WhatsApp address (JID).
    #[schema(example = "79001234567@s.whatsapp.net")]
    id: String,
    /// The saved name; else the name the person set (push name); else the number.
    #[schema(example = "Иван Иванов")]
    name: String,
    #[schema(example = "79001234567")]
    number: String,
    is_group: bool,
}

#[derive(Debug, Serialize, ToSchema)]
struct LiveContacts {
    contacts: Vec<LiveContact>,
}

/// The instance's contacts as WhatsApp reports them now (not stored).
#[utoipa::path(
    get,
    path = "/api/whatsapp/{instanceId}/contacts",
    tag = "contacts",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "The contacts", body = LiveContacts),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
    )
)]
async fn live_contacts(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
) -> ApiResult<AppJson<LiveContacts>> {
    let contacts = state.instances.get(&instance.id)?.contacts().await?;
    let list = contacts
        .into_iter()
        .map(|c| {
            let number = jid_user(&c.jid).to_owned();
            // The document shows a name for every contact, never null.
            let name = [c.name, c.push_name]
                .into_iter()
                .flatten()
                .map(|n| n.trim().to_owned())
                .find(|n| !n.is_empty())
                .unwrap_or_else(|| number.clone());
            LiveContact {
                is_group: is_group_jid(&c.jid),
                id: c.jid,
                name,
                number,
            }
        })
        .collect();
    Ok(AppJson(LiveContacts { contacts: list }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AddContact {
    /// A phone number or a person's WhatsApp address (not a group's).
    #[schema(schema_with = crate::http::openapi::person_address_schema)]
    phone: String,
    /// At most 1024 characters.
    #[schema(max_length = 1024)]
    name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct AddedContact {
    /// The WhatsApp address (JID).
    id: String,
    number: String,
    name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ContactAdded {
    success: bool,
    message: &'static str,
    contact: AddedContact,
}

/// Adds a person to the instance's WhatsApp contacts and stores it.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/contacts/add",
    tag = "contacts",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = AddContact,
    responses(
        (status = 200, description = "Added", body = ContactAdded),
        (status = 404, description = "No such instance, or the number is not on WhatsApp (`not_on_whatsapp`)", body = ErrorBody),
        (status = 400, description = "A missing or invalid field, or not a person's phone number (`validation_error`)", body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
    )
)]
async fn add_contact(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppJson(body): AppJson<AddContact>,
) -> ApiResult<AppJson<ContactAdded>> {
    let jid = chat_address("phone", &body.phone)?;
    let stored = state.contacts.add(&instance.id, &jid, body.name).await?;
    Ok(AppJson(ContactAdded {
        success: true,
        message: "Контакт успешно добавлен",
        contact: AddedContact {
            id: stored.remote_jid,
            number: stored.number,
            name: stored.name,
        },
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct ContactParams {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// How many contacts to skip.
    skip: Option<u64>,
    /// Part of a name, push name or number (at most 200 characters).
    search: Option<String>,
    /// `true` for groups only.
    #[param(value_type = Option<bool>)]
    only_groups: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ContactList {
    contacts: Vec<ContactView>,
    pagination: Pagination,
}

/// The instance's stored contacts, searchable.
#[utoipa::path(
    get,
    path = "/api/instances/{instanceId}/contacts/db",
    tag = "contacts",
    params(("instanceId" = String, Path, description = "The instance's id"), ContactParams),
    responses(
        (status = 200, description = "A page of contacts", body = ContactList),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn stored_contacts(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppQuery(p): AppQuery<ContactParams>,
) -> ApiResult<AppJson<ContactList>> {
    let limit = page_limit(p.limit, 100)?;
    let skip = p.skip.unwrap_or(0);
    let only_groups = match p.only_groups.as_deref() {
        None | Some("false") | Some("0") | Some("") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "onlyGroups must be true or false, not '{other}'"
            )));
        }
    };
    let search = p
        .search
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    if search.as_ref().is_some_and(|s| s.chars().count() > 200) {
        return Err(ApiError::bad_request(
            "search must be at most 200 characters",
        ));
    }
    let page = state
        .storage
        .list_contacts(
            &instance.id,
            &ContactQuery {
                limit,
                skip,
                search,
                only_groups,
            },
        )
        .await?;
    Ok(AppJson(ContactList {
        contacts: page.items.into_iter().map(ContactView::from).collect(),
        pagination: Pagination::new(page.total, limit, skip),
    }))
}

/// [`stored_contacts`] under `/api/whatsapp`.
#[utoipa::path(
    get,
    path = "/api/whatsapp/{instanceId}/contacts/db",
    tag = "contacts",
    params(("instanceId" = String, Path, description = "The instance's id"), ContactParams),
    responses(
        (status = 200, description = "A page of contacts", body = ContactList),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn whatsapp_stored_contacts(
    state: State<AppState>,
    usable: UsableInstance,
    params: AppQuery<ContactParams>,
) -> ApiResult<AppJson<ContactList>> {
    stored_contacts(state, usable, params).await
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Imported {
    success: bool,
    message: String,
    imported_count: u64,
}

/// Stores (or refreshes) every contact WhatsApp reports for the instance.
#[utoipa::path(
    post,
    path = "/api/instances/{instanceId}/contacts/import",
    tag = "contacts",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "Imported", body = Imported),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
    )
)]
async fn import_contacts(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
) -> ApiResult<AppJson<Imported>> {
    let imported = state.contacts.import(&instance.id).await?;
    Ok(AppJson(Imported {
        success: true,
        message: format!("Successfully imported {imported} contacts"),
        imported_count: imported,
    }))
}

/// [`import_contacts`] under `/api/whatsapp`.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/contacts/import",
    tag = "contacts",
    params(("instanceId" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "Imported", body = Imported),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
    )
)]
async fn whatsapp_import_contacts(
    state: State<AppState>,
    usable: UsableInstance,
) -> ApiResult<AppJson<Imported>> {
    import_contacts(state, usable).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SaveContact {
    /// A phone number or WhatsApp address. With `isGroup: true` a bare group id (digits
    /// and dashes, without `@g.us`) is taken too, which this schema leaves out.
    #[schema(schema_with = crate::http::openapi::chat_address_schema)]
    number: String,
    /// At most 1024 characters (as are the other texts); blank is none.
    #[schema(max_length = 1024)]
    name: Option<String>,
    #[schema(max_length = 1024)]
    push_name: Option<String>,
    is_group: Option<bool>,
    #[schema(max_length = 1024)]
    profile_picture: Option<String>,
    #[schema(max_length = 1024)]
    about: Option<String>,
}

/// Stores a contact (or updates the stored one with the same address).
#[utoipa::path(
    post,
    path = "/api/instances/{instanceId}/contacts/save",
    tag = "contacts",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = SaveContact,
    responses(
        (status = 200, description = "The stored contact", body = ContactView),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 400, description = "A missing or invalid number or field (`validation_error`)", body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn save_contact(
    State(state): State<AppState>,
    UsableInstance { instance, .. }: UsableInstance,
    AppJson(body): AppJson<SaveContact>,
) -> ApiResult<AppJson<ContactView>> {
    let jid = if body.is_group.unwrap_or(false) && !body.number.contains('@') {
        Jid::group(&body.number).map_err(|e| ApiError::validation(format!("number: {e}")))?
    } else {
        chat_address("number", &body.number)?
    };
    let fields = ContactFields {
        name: body.name,
        push_name: body.push_name,
        profile_picture: body.profile_picture,
        about: body.about,
    };
    let stored = state.contacts.save(&instance.id, &jid, fields).await?;
    Ok(AppJson(ContactView::from(stored)))
}

/// [`save_contact`] under `/api/whatsapp`.
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/contacts/save",
    tag = "contacts",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = SaveContact,
    responses(
        (status = 200, description = "The stored contact", body = ContactView),
        (status = 404, description = NO_INSTANCE, body = ErrorBody),
        (status = 400, description = "A missing or invalid number or field (`validation_error`)", body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
async fn whatsapp_save_contact(
    state: State<AppState>,
    usable: UsableInstance,
    body: AppJson<SaveContact>,
) -> ApiResult<AppJson<ContactView>> {
    save_contact(state, usable, body).await
}
