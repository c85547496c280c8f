//! The account's approved templates: read from the fake Graph API page by page, cached for
//! `waba_templates_ttl_ms` on the server's clock, and Meta's failures as JSON errors.

use std::sync::Arc;

use serde_json::{Value, json};
use wagate_actors::domain::ManualClock;

use crate::common::{Auth, Backend};
use crate::waba::{Desk, TOKEN, desk_at, meta_error, operator};

const TTL_MS: i64 = 60_000;

/// Meta's templates of the account: three approved ones (two pages of the fake's two),
/// one pending and one rejected.
fn meta_templates() -> Vec<Value> {
    vec![
        json!({"id": "T1", "name": "order_ready", "language": "en_US", "status": "APPROVED",
               "category": "UTILITY",
               "components": [
                   {"type": "HEADER", "format": "IMAGE"},
                   {"type": "BODY", "text": "Hi {{1}}, order {{2}} is ready. Thanks, {{1}}!"},
                   {"type": "FOOTER", "text": "Reply STOP to opt out"},
                   {"type": "BUTTONS", "buttons": [
                       {"type": "URL", "text": "Track", "url": "https://shop.example/track/{{1}}"},
                       {"type": "QUICK_REPLY", "text": "Thanks"}]}]}),
        json!({"id": "T2", "name": "draft", "language": "en_US", "status": "PENDING",
               "category": "MARKETING", "components": [{"type": "BODY", "text": "Soon"}]}),
        json!({"id": "T3", "name": "hello_world", "language": "en_US", "status": "APPROVED",
               "category": "UTILITY",
               "components": [{"type": "HEADER", "format": "TEXT", "text": "Hello"},
                              {"type": "BODY", "text": "Welcome!"}]}),
        json!({"id": "T4", "name": "banned", "language": "en_US", "status": "REJECTED",
               "category": "MARKETING", "components": [{"type": "BODY", "text": "No"}]}),
        json!({"id": "T5", "name": "appointment", "language": "ru", "status": "APPROVED",
               "category": "UTILITY", "parameter_format": "NAMED",
               "components": [{"type": "BODY", "text": "{{ name }}, see you at {{time}}"}]}),
    ]
}

async fn templates(d: &Desk, who: &Auth) -> (u16, Value) {
    d.server.get("/api/waba/operator/templates", who).await
}

fn names(list: &Value) -> Vec<(String, String)> {
    list["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().expect("name").to_owned(),
                t["language"].as_str().expect("language").to_owned(),
            )
        })
        .collect()
}

fn pair(name: &str, language: &str) -> (String, String) {
    (name.to_owned(), language.to_owned())
}

async fn approved_templates_are_listed_and_cached(backend: Backend) {
    let start = chrono::Utc::now();
    let clock = Arc::new(ManualClock::new(start));
    let ttl = TTL_MS.to_string();
    let d = desk_at(
        backend,
        &[("waba_templates_ttl_ms", ttl.as_str())],
        Some(clock.clone()),
    )
    .await;
    d.graph.set_templates(meta_templates());

    // Only the approved ones, by name, with what a send must fill in.
    let (code, list) = templates(&d, &d.owner).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(
        names(&list),
        vec![
            pair("appointment", "ru"),
            pair("hello_world", "en_US"),
            pair("order_ready", "en_US")
        ]
    );
    let order = &list["templates"][2];
    assert_eq!(order["status"], "APPROVED");
    assert_eq!(order["category"], "UTILITY");
    assert_eq!(order["id"], "T1");
    let components = order["components"].as_array().expect("components");
    assert_eq!(components.len(), 4);
    assert_eq!(
        components[0],
        json!({"type": "HEADER", "format": "IMAGE", "text": null, "parameters": [], "parameterCount": 1})
    );
    assert_eq!(components[1]["type"], "BODY");
    assert_eq!(components[1]["parameters"], json!(["1", "2"]));
    assert_eq!(components[1]["parameterCount"], 2);
    assert_eq!(components[2]["parameterCount"], 0);
    assert_eq!(components[3]["parameterCount"], 0);
    assert_eq!(
        components[3]["buttons"],
        json!([
            {"type": "URL", "text": "Track", "url": "https://shop.example/track/{{1}}", "phoneNumber": null,
             "parameters": ["1"], "parameterCount": 1, "index": 0},
            {"type": "QUICK_REPLY", "text": "Thanks", "url": null, "phoneNumber": null,
             "parameters": [], "parameterCount": 0, "index": 1}
        ])
    );
    let hello = &list["templates"][1];
    assert_eq!(hello["components"][0]["parameterCount"], 0);
    let appointment = &list["templates"][0];
    assert_eq!(appointment["parameterFormat"], "NAMED");
    assert_eq!(
        appointment["components"][0]["parameters"],
        json!(["name", "time"])
    );
    assert_eq!(
        list["fetchedAt"]
            .as_str()
            .map(|t| t.parse::<chrono::DateTime<chrono::Utc>>().is_ok()),
        Some(true)
    );

    // Meta was asked for the account's approved templates, page by page, with its token.
    let requests = d.graph.template_requests();
    assert_eq!(requests.len(), 2, "two pages of approved templates");
    for r in &requests {
        assert_eq!(r.business_account_id, "WABA_ID");
        assert_eq!(r.authorization, format!("Bearer {TOKEN}"));
        assert_eq!(r.query.get("status").map(String::as_str), Some("APPROVED"));
        assert!(
            r.query
                .get("fields")
                .is_some_and(|f| f.contains("components")),
            "{:?}",
            r.query
        );
    }
    assert_eq!(requests[0].query.get("after"), None);
    assert_eq!(
        requests[1].query.get("after").map(String::as_str),
        Some("cursor-2")
    );

    // Within the TTL the list comes from the cache, for the owner and its operators
    // alike, even after Meta's list changed.
    let (_, op) = operator(&d.server, "templates-op@example.com", &d.owner_id).await;
    d.graph.set_templates(vec![meta_templates()[2].clone()]);
    clock.set(start + chrono::Duration::milliseconds(TTL_MS - 1000));
    let (code, again) = templates(&d, &op).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(again, list);
    assert_eq!(
        d.graph.template_requests().len(),
        2,
        "served from the cache"
    );

    // Once the TTL has passed, Meta is asked again.
    clock.set(start + chrono::Duration::milliseconds(TTL_MS + 1000));
    let (code, fresh) = templates(&d, &op).await;
    assert_eq!(code, 200, "{fresh}");
    assert_eq!(names(&fresh), vec![pair("hello_world", "en_US")]);
    assert_eq!(d.graph.template_requests().len(), 3);
    let (_, cached) = templates(&d, &d.owner).await;
    assert_eq!(cached, fresh);
    assert_eq!(d.graph.template_requests().len(), 3);

    // New settings (another business account) read the list again at once.
    let (code, body) = d
        .server
        .put(
            "/api/waba/settings",
            &d.owner,
            json!({"businessAccountId": "WABA_ID_2"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = templates(&d, &d.owner).await;
    assert_eq!(code, 200);
    let requests = d.graph.template_requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[3].business_account_id, "WABA_ID_2");

    // An operator cannot name another account; an admin can.
    let (code, body) = d
        .server
        .get("/api/waba/operator/templates?ownerId=someone-else", &op)
        .await;
    assert_eq!(
        (code, body["code"].clone()),
        (404, json!("not_found")),
        "{body}"
    );
    let (code, body) = d
        .server
        .get(
            &format!("/api/waba/operator/templates?ownerId={}", d.owner_id),
            &d.server.admin(),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(names(&body), vec![pair("hello_world", "en_US")]);
}

async fn template_errors_are_json(backend: Backend) {
    let d = desk_at(backend, &[], None).await;
    d.graph.set_templates(meta_templates());

    // An account without settings.
    let (_, _, token) = d.server.new_user("nobody@example.com", "user").await;
    let (code, body) = templates(&d, &Auth::Bearer(token)).await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["code"], "waba_not_configured");
    assert!(d.graph.template_requests().is_empty());

    // Meta answers 500 every time: 502, after the retries.
    for _ in 0..3 {
        d.graph
            .answer_templates(500, meta_error(1, "An unknown error occurred"));
    }
    let (code, body) = templates(&d, &d.owner).await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(body["code"], "waba_unavailable");
    assert_eq!(d.graph.template_requests().len(), 3, "retried twice");

    // Meta answers 500, then 200: the retry gets the list (and the failure was not
    // cached).
    d.graph
        .answer_templates(500, meta_error(1, "An unknown error occurred"));
    let (code, body) = templates(&d, &d.owner).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["templates"].as_array().map(Vec::len), Some(3));
    assert_eq!(d.graph.template_requests().len(), 3 + 1 + 2);
}

async fn template_refusals_carry_metas_code(backend: Backend) {
    let d = desk_at(backend, &[], None).await;
    d.graph.answer_templates(
        400,
        meta_error(
            100,
            "Unsupported get request. Object with ID 'WABA_ID' does not exist",
        ),
    );
    let (code, body) = templates(&d, &d.owner).await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(body["code"], "waba_error");
    let message = body["error"].as_str().expect("error");
    assert!(message.contains("code 100"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    assert_eq!(d.graph.template_requests().len(), 1, "not retried");

    d.graph
        .answer_templates(401, meta_error(190, "Error validating access token"));
    let (code, body) = templates(&d, &d.owner).await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(body["code"], "waba_token_invalid");
}

backend_tests!(
    approved_templates_are_listed_and_cached,
    template_errors_are_json,
    template_refusals_carry_metas_code
);
