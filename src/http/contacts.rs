//! Contacts on both path families of the spec: live ones from WhatsApp (`/contacts`,
//! `/contacts/add`) and stored ones (`/contacts/db`, `/contacts/import`, `/contacts/save`).

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wagate_actors::domain::new_id;
use wagate_actors::messaging::{Contact, ContactQuery, is_group_jid, jid_user};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::http::auth::AuthUser;
use crate::http::extract::{AppJson, AppPath, AppQuery};
use crate::http::instances::usable_instance;
use crate::http::messages::target_jid;
use crate::http::{Pagination, iso, page_limit};

pub fn router() -> Router<AppState> {
    let mut r = Router::new()
        .route("/api/whatsapp/{id}/contacts", get(live_contacts))
        .route("/api/whatsapp/{id}/contacts/add", post(add_contact));
    for family in ["/api/instances", "/api/whatsapp"] {
        r = r
            .route(
                &format!("{family}/{{id}}/contacts/db"),
                get(stored_contacts),
            )
            .route(
                &format!("{family}/{{id}}/contacts/import"),
                post(import_contacts),
            )
            .route(
                &format!("{family}/{{id}}/contacts/save"),
                post(save_contact),
            );
    }
    r
}

/// Longest accepted contact field (name, push name, about, picture URL).
const MAX_FIELD: usize = 1024;

fn bounded(field: &str, v: Option<String>) -> ApiResult<Option<String>> {
    match v {
        Some(s) if s.chars().count() > MAX_FIELD => Err(ApiError::validation(format!(
            "{field} must be at most {MAX_FIELD} characters"
        ))),
        Some(s) if s.trim().is_empty() => Ok(None),
        other => Ok(other.map(|s| s.trim().to_owned())),
    }
}

/// A stored contact as the API shows it.
#[derive(Debug, Serialize)]
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
    last_activity: Option<String>,
    created_at: String,
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

async fn live_contacts(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<Value>> {
    let instance = usable_instance(&state, &caller, &id, false).await?;
    let contacts = state.instances.get(&instance.id)?.contacts().await?;
    let list: Vec<Value> = contacts
        .into_iter()
        .map(|c| {
            json!({
                "id": c.jid,
                "name": c.name,
                "number": jid_user(&c.jid),
                "isGroup": is_group_jid(&c.jid),
            })
        })
        .collect();
    Ok(AppJson(json!({"contacts": list})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddContact {
    phone: String,
    name: Option<String>,
}

async fn add_contact(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<AddContact>,
) -> ApiResult<AppJson<Value>> {
    let jid = target_jid("phone", &body.phone)?;
    if is_group_jid(&jid) {
        return Err(ApiError::validation(
            "phone must be a person's number, not a group",
        ));
    }
    let name = bounded("name", body.name)?;
    let instance = usable_instance(&state, &caller, &id, false).await?;
    let handle = state.instances.get(&instance.id)?;
    if !handle.add_contact(&jid, name.as_deref()).await? {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_on_whatsapp",
            format!("{} is not on WhatsApp", jid_user(&jid)),
        ));
    }
    let now = Utc::now();
    let stored = state
        .storage
        .upsert_contact(&Contact {
            id: new_id(),
            instance_id: instance.id.clone(),
            remote_jid: jid.clone(),
            number: jid_user(&jid).to_owned(),
            name: name.clone(),
            push_name: None,
            is_group: false,
            profile_picture: None,
            about: None,
            last_activity: None,
            created_at: now,
            updated_at: now,
        })
        .await?;
    Ok(AppJson(json!({
        "success": true,
        "message": "Контакт успешно добавлен",
        "contact": {"id": stored.remote_jid, "number": stored.number, "name": stored.name},
    })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContactParams {
    limit: Option<u32>,
    skip: Option<u64>,
    search: Option<String>,
    only_groups: Option<String>,
}

async fn stored_contacts(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
    AppQuery(p): AppQuery<ContactParams>,
) -> ApiResult<AppJson<Value>> {
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
    let instance = usable_instance(&state, &caller, &id, false).await?;
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
    let contacts: Vec<ContactView> = page.items.into_iter().map(ContactView::from).collect();
    Ok(AppJson(
        json!({"contacts": contacts, "pagination": Pagination::new(page.total, limit, skip)}),
    ))
}

async fn import_contacts(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<Value>> {
    let instance = usable_instance(&state, &caller, &id, false).await?;
    let live = state.instances.get(&instance.id)?.contacts().await?;
    let mut imported = 0u64;
    for c in live {
        let now = Utc::now();
        state
            .storage
            .upsert_contact(&Contact {
                id: new_id(),
                instance_id: instance.id.clone(),
                number: jid_user(&c.jid).to_owned(),
                is_group: is_group_jid(&c.jid),
                remote_jid: c.jid,
                name: c.name,
                push_name: c.push_name,
                profile_picture: None,
                about: None,
                last_activity: None,
                created_at: now,
                updated_at: now,
            })
            .await?;
        imported += 1;
    }
    Ok(AppJson(json!({
        "success": true,
        "message": format!("Successfully imported {imported} contacts"),
        "importedCount": imported,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SaveContact {
    number: String,
    name: Option<String>,
    push_name: Option<String>,
    is_group: Option<bool>,
    profile_picture: Option<String>,
    about: Option<String>,
}

async fn save_contact(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<SaveContact>,
) -> ApiResult<AppJson<ContactView>> {
    let is_group = body.is_group.unwrap_or(false);
    let jid = if is_group && !body.number.contains('@') {
        let digits = body.number.trim();
        if digits.is_empty()
            || !digits.chars().all(|c| c.is_ascii_digit() || c == '-')
            || digits.len() > 64
        {
            return Err(ApiError::validation(
                "number: a group id is digits (and dashes)",
            ));
        }
        format!("{digits}@g.us")
    } else {
        target_jid("number", &body.number)?
    };
    let instance = usable_instance(&state, &caller, &id, false).await?;
    let now = Utc::now();
    let stored = state
        .storage
        .upsert_contact(&Contact {
            id: new_id(),
            instance_id: instance.id.clone(),
            number: jid_user(&jid).to_owned(),
            is_group: is_group_jid(&jid),
            remote_jid: jid,
            name: bounded("name", body.name)?,
            push_name: bounded("pushName", body.push_name)?,
            profile_picture: bounded("profilePicture", body.profile_picture)?,
            about: bounded("about", body.about)?,
            last_activity: None,
            created_at: now,
            updated_at: now,
        })
        .await?;
    Ok(AppJson(ContactView::from(stored)))
}
