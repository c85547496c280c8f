//! The account's approved message templates, with what a send of each must fill in.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::domain::waba::{TemplateButton, TemplateComponent, WabaTemplate};

use super::DeskCaller;
use crate::gateway::waba::{Scope, WabaError};
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppQuery};
use crate::http::iso;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(templates))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TemplatesQuery {
    /// The account whose templates to list: admins may name any; others see only their
    /// own account (an operator: its owner's). Default: the caller's.
    #[serde(rename = "ownerId")]
    owner_id: Option<String>,
}

/// A button of a template.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WabaTemplateButton)]
struct ButtonView {
    /// `QUICK_REPLY`, `URL`, `PHONE_NUMBER`, `COPY_CODE`, …
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    url: Option<String>,
    phone_number: Option<String>,
    /// The placeholders of a dynamic URL; a send gives them in a `button` component
    /// (`sub_type` `url`, this button's `index`).
    parameters: Vec<String>,
    parameter_count: usize,
    /// The button's position, as a send's `button` component names it.
    index: usize,
}

/// One part of a template, and how many parameters a send's component of the same
/// `type` must carry.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WabaTemplateComponent)]
struct ComponentView {
    /// `HEADER`, `BODY`, `FOOTER` or `BUTTONS`.
    #[serde(rename = "type")]
    kind: String,
    /// A header's format: `TEXT`, `IMAGE`, `VIDEO`, `DOCUMENT` or `LOCATION`.
    format: Option<String>,
    text: Option<String>,
    /// The `{{…}}` placeholders of `text`, each once, in order (`"1"`, `"2"`, or names
    /// for templates whose `parameterFormat` is `NAMED`).
    parameters: Vec<String>,
    /// Parameters a send's component must carry: one per placeholder, or one for a
    /// media or location header (the file or place itself).
    parameter_count: usize,
    /// The buttons of a `BUTTONS` component.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    buttons: Vec<ButtonView>,
}

/// An approved template.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WabaTemplateInfo)]
struct TemplateView {
    /// Meta's id of the template.
    id: Option<String>,
    /// What a send names as `template.name`.
    name: String,
    /// What a send names as `template.language` (`en_US`).
    language: String,
    /// Always `APPROVED`: only those can be sent.
    status: String,
    /// `MARKETING`, `UTILITY` or `AUTHENTICATION`.
    category: Option<String>,
    /// `POSITIONAL` (`{{1}}`) or `NAMED` (`{{first_name}}`; a send's parameters then
    /// carry `parameter_name`); null: positional.
    parameter_format: Option<String>,
    components: Vec<ComponentView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WabaTemplates)]
struct TemplateList {
    templates: Vec<TemplateView>,
    /// When Meta listed them (they are kept for `WABA_TEMPLATES_TTL_MS`).
    #[schema(format = DateTime)]
    fetched_at: String,
}

fn button_view((index, b): (usize, &TemplateButton)) -> ButtonView {
    ButtonView {
        kind: b.kind.clone(),
        text: b.text.clone(),
        url: b.url.clone(),
        phone_number: b.phone_number.clone(),
        parameter_count: b.placeholders.len(),
        parameters: b.placeholders.clone(),
        index,
    }
}

fn component_view(c: &TemplateComponent) -> ComponentView {
    ComponentView {
        kind: c.kind.clone(),
        format: c.format.clone(),
        text: c.text.clone(),
        parameters: c.placeholders.clone(),
        parameter_count: c.parameter_count(),
        buttons: c.buttons.iter().enumerate().map(button_view).collect(),
    }
}

fn template_view(t: &WabaTemplate) -> TemplateView {
    TemplateView {
        id: t.id.clone(),
        name: t.name.clone(),
        language: t.language.clone(),
        status: t.status.clone(),
        category: t.category.clone(),
        parameter_format: t.parameter_format.clone(),
        components: t.components.iter().map(component_view).collect(),
    }
}

/// The account's approved message templates, for a send of `type` `template` (the only
/// kind allowed outside the 24-hour window).
///
/// Read from Meta's Graph API (`/{businessAccountId}/message_templates`, every page) and
/// kept for `WABA_TEMPLATES_TTL_MS`; new settings read them again at once. Each component
/// says how many parameters a send's component of the same type must carry.
#[utoipa::path(
    get,
    path = "/api/waba/operator/templates",
    tag = "waba",
    params(TemplatesQuery),
    responses(
        (status = 200, description = "The approved templates, by name and language", body = TemplateList),
        (status = 404, description = "The account has no WABA settings (`waba_not_configured`), or `ownerId` names an account the caller does not see", body = ErrorBody),
        (status = 502, description = "Meta refused or failed (`waba_error` with Meta's code, `waba_token_invalid`, `waba_unavailable`)", body = ErrorBody),
    )
)]
async fn templates(
    State(state): State<AppState>,
    desk: DeskCaller,
    AppQuery(query): AppQuery<TemplatesQuery>,
) -> ApiResult<AppJson<TemplateList>> {
    let requested = query
        .owner_id
        .as_deref()
        .map(str::trim)
        .filter(|o| !o.is_empty());
    let owner = match (&desk.scope, requested) {
        (Scope::All, Some(owner)) => owner.to_owned(),
        (Scope::All, None) => desk.caller.0.id.clone(),
        (Scope::Owner(own), Some(owner)) if owner != own => {
            return Err(ApiError::not_found(format!("user {owner} not found")));
        }
        (Scope::Owner(own), _) => own.clone(),
    };
    let list = state.waba.templates(&owner).await.map_err(|e| match e {
        // Unlike a send (500, as the operator API document has it), a list with nothing
        // to list from is not a server fault.
        WabaError::NotConfigured => {
            ApiError::new(StatusCode::NOT_FOUND, "waba_not_configured", e.to_string())
        }
        other => other.into(),
    })?;
    Ok(AppJson(TemplateList {
        templates: list.templates.iter().map(template_view).collect(),
        fetched_at: iso(list.fetched_at),
    }))
}
