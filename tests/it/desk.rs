//! The operator desk's panel (`/desk`): how its files are served, and an operator's work
//! in it driven end to end in headless Chromium (the dashboard test's harness) against the
//! fake Graph API, with customers writing through Meta's signed webhook. Screenshots of
//! each step are kept under `<target dir>/test-artifacts/desk/`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Auth, Backend, read};
use crate::dashboard::{Browser, artifacts_named, js};
use crate::waba::{
    APP_SECRET, CUSTOMER, Desk, PHONE_NUMBER_ID, desk_on, meta_error, notification, now_secs,
    operator, status, webhook,
};

/// The customer whose window closed a day ago.
const LATE_CUSTOMER: &str = "79007654321";

#[tokio::test]
async fn the_panel_is_served_under_the_strict_content_security_policy() {
    let d = desk_on(Backend::Sqlite).await;
    for (path, content_type, needle) in [
        (
            "/desk",
            "text/html; charset=utf-8",
            r#"<script src="/desk/app.js" defer></script>"#,
        ),
        (
            "/desk/app.js",
            "text/javascript; charset=utf-8",
            "'use strict';",
        ),
        ("/desk/style.css", "text/css; charset=utf-8", ":root {"),
    ] {
        let resp = d
            .server
            .request(Method::GET, path, &Auth::None)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200, "{path}");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("content-type"), content_type, "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        if path == "/desk" {
            let csp = header("content-security-policy");
            for directive in [
                "default-src 'none'",
                "script-src 'self'",
                "connect-src 'self'",
            ] {
                assert!(csp.contains(directive), "CSP {csp:?} lacks {directive}");
            }
            assert!(!csp.contains("unsafe-inline"), "{csp}");
        }
        let body = resp.text().await.expect("body");
        assert!(body.contains(needle), "{path}");
    }
    let (status, body) = read(
        d.server
            .request(Method::GET, "/desk/%2e%2e%2fCargo.toml", &Auth::None)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = read(
        d.server
            .request(Method::GET, "/desk/nope.js", &Auth::None)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (404, json!("not_found")));
}

/// A customer's text message, signed as Meta signs it.
async fn customer_says(d: &Desk, from: &str, name: &str, wamid: &str, text: &str, ts: i64) {
    let body = notification(
        PHONE_NUMBER_ID,
        json!({
            "contacts": [{"profile": {"name": name}, "wa_id": from}],
            "messages": [{"from": from, "id": wamid, "timestamp": ts.to_string(),
                          "type": "text", "text": {"body": text}}],
        }),
    );
    let (code, answer) = webhook(&d.server, &body, Some(APP_SECRET)).await;
    assert_eq!(code, 200, "webhook: {answer}");
}

/// A customer's file (`image` or `document`) Meta keeps as `media_id`.
async fn customer_sends(d: &Desk, wamid: &str, kind: &str, media: Value) {
    let body = notification(
        PHONE_NUMBER_ID,
        json!({
            "contacts": [{"profile": {"name": "Anna Customer"}, "wa_id": CUSTOMER}],
            "messages": [{"from": CUSTOMER, "id": wamid, "timestamp": now_secs().to_string(),
                          "type": kind, kind: media}],
        }),
    );
    let (code, answer) = webhook(&d.server, &body, Some(APP_SECRET)).await;
    assert_eq!(code, 200, "webhook: {answer}");
}

async fn chat_ids(d: &Desk) -> (i64, i64) {
    let (code, chats) = d.server.get("/api/waba/operator/chats", &d.owner).await;
    assert_eq!(code, 200, "{chats}");
    let id = |phone: &str| {
        chats["chats"]
            .as_array()
            .expect("chats")
            .iter()
            .find(|c| c["customerPhone"] == phone)
            .and_then(|c| c["id"].as_i64())
            .unwrap_or_else(|| panic!("no chat with {phone}: {chats}"))
    };
    (id(CUSTOMER), id(LATE_CUSTOMER))
}

/// The `selector` inside the chat list entry of `chat`.
fn in_chat(chat: i64, selector: &str) -> String {
    format!("#chat-list li[data-chat=\"{chat}\"] {selector}")
}

/// An operator's day at the desk, in a real browser: two chats, a customer message that
/// arrives live, an answer whose ticks follow Meta's statuses, the template picker of a
/// chat whose window closed, and an image shown inline.
#[tokio::test]
async fn an_operator_answers_customers_in_the_browser() {
    let d = desk_on(Backend::Sqlite).await;
    d.graph.set_templates(vec![
        json!({"id": "T1", "name": "order_ready", "language": "en_US", "status": "APPROVED",
               "category": "UTILITY",
               "components": [{"type": "BODY", "text": "Your order {{1}} is ready."}]}),
        json!({"id": "T2", "name": "hello_world", "language": "en_US", "status": "APPROVED",
               "category": "UTILITY", "components": [{"type": "BODY", "text": "Hello!"}]}),
        json!({"id": "T3", "name": "draft", "language": "en_US", "status": "PENDING",
               "category": "UTILITY", "components": [{"type": "BODY", "text": "Soon"}]}),
    ]);
    let (operator_id, op) = operator(&d.server, "desk-op@example.com", &d.owner_id).await;
    customer_says(
        &d,
        LATE_CUSTOMER,
        "Boris Late",
        "wamid.LATE",
        "Any news?",
        now_secs() - 25 * 3600,
    )
    .await;
    customer_says(
        &d,
        CUSTOMER,
        "Anna Customer",
        "wamid.A1",
        "Hello, is my order ready?",
        now_secs(),
    )
    .await;
    let (anna, boris) = chat_ids(&d).await;

    let artifacts = artifacts_named("desk");
    let _ = std::fs::remove_dir_all(&artifacts);
    let browser = Browser::launch().await;
    let page = browser.new_page(artifacts.clone()).await;
    println!("desk screenshots: {}", artifacts.display());

    // 1. The operator signs in and sees the two chats, with unread counts, the time left
    //    in their windows and their assignees.
    page.goto(&d.server.url("/desk")).await;
    page.wait_for(
        "the sign-in form",
        "!document.querySelector('#login-view').hidden",
    )
    .await;
    page.fill("#login-email", "desk-op@example.com").await;
    page.fill("#login-password", "password1").await;
    page.click("#login-submit").await;
    page.wait_for(
        "the two chats",
        "document.querySelectorAll('#chat-list li').length === 2",
    )
    .await;
    assert!(page.text_of("#who").await.contains("desk-op@example.com"));
    // Anything a reload would lose: it must survive every step below.
    page.eval("window.deskMarker = 'no reload'").await;
    assert_eq!(
        page.text_of(&in_chat(anna, ".chat-name")).await,
        "Anna Customer"
    );
    assert_eq!(page.text_of(&in_chat(anna, ".unread")).await, "1");
    assert!(
        page.text_of(&in_chat(anna, ".window"))
            .await
            .ends_with("m left"),
        "{}",
        page.text_of(&in_chat(anna, ".window")).await
    );
    assert_eq!(
        page.text_of(&in_chat(boris, ".window")).await,
        "window closed"
    );
    assert_eq!(
        page.text_of(&in_chat(anna, ".assignee")).await,
        "unassigned"
    );
    page.screenshot("01-chats").await;

    // Take the chat: the assignee changes in the panel and in the API.
    page.click(&in_chat(anna, "a")).await;
    page.wait_for(
        "the conversation",
        "[...document.querySelectorAll('#messages li.msg.in .msg-text')].some(e => e.textContent === 'Hello, is my order ready?')",
    )
    .await;
    page.click("#take").await;
    page.wait_for(
        "the chat to be assigned to the operator",
        &format!(
            "document.querySelector('#chat-assignee').textContent === 'assigned to you' && \
             document.querySelector({}).textContent === 'assigned to you' && document.querySelector('#take').hidden",
            js(&in_chat(anna, ".assignee"))
        ),
    )
    .await;
    let (_, mine) = d
        .server
        .get("/api/waba/operator/chats?assigned=me", &op)
        .await;
    assert_eq!(mine["chats"][0]["id"], anna, "{mine}");
    assert_eq!(mine["chats"][0]["assignedOperatorId"], json!(operator_id));

    // 2. A customer message arrives through Meta's signed webhook and shows without a
    //    reload, in the conversation and in the chat list's unread count.
    customer_says(
        &d,
        CUSTOMER,
        "Anna Customer",
        "wamid.A2",
        "It's order 12345",
        now_secs(),
    )
    .await;
    page.wait_for(
        "the new message, live",
        "[...document.querySelectorAll('#messages li.msg.in .msg-text')].some(e => e.textContent === \"It's order 12345\")",
    )
    .await;
    page.wait_for(
        "the unread count to grow",
        &format!(
            "document.querySelector({}).textContent === '2'",
            js(&in_chat(anna, ".unread"))
        ),
    )
    .await;
    assert_eq!(page.eval("window.deskMarker").await, json!("no reload"));
    page.screenshot("02-live-message").await;

    // Mark it read: the count goes, and Meta is told.
    page.click("#mark-read").await;
    page.wait_for(
        "the unread count to go",
        &format!(
            "document.querySelector({}).hidden",
            js(&in_chat(anna, ".unread"))
        ),
    )
    .await;
    assert!(
        d.graph
            .message_bodies()
            .iter()
            .any(|b| b["status"] == "read" && b["message_id"] == "wamid.A2"),
        "{:?}",
        d.graph.message_bodies()
    );

    // 3. The operator answers; the tick follows Meta's statuses: sent → delivered → read.
    page.fill("#compose-text", "Yes, it left today").await;
    page.click("#compose-send").await;
    let answer = "[...document.querySelectorAll('#messages li.msg.out')].find(e => e.querySelector('.msg-text')?.textContent === 'Yes, it left today')";
    page.wait_for(
        "the answer, sent",
        &format!("{answer}?.querySelector('.tick').dataset.status === 'sent'"),
    )
    .await;
    let sent = d
        .graph
        .message_bodies()
        .into_iter()
        .find(|b| b["text"]["body"] == "Yes, it left today")
        .expect("Meta got the answer");
    assert_eq!(sent["to"], CUSTOMER);
    let (_, history) = d
        .server
        .get(&format!("/api/waba/operator/chat/{anna}/messages"), &op)
        .await;
    let wamid = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["content"] == "Yes, it left today")
        .and_then(|m| m["whatsappMessageId"].as_str())
        .expect("the answer's wamid")
        .to_owned();
    for (step, meta_status) in ["delivered", "read"].into_iter().enumerate() {
        let (code, body) = webhook(
            &d.server,
            &status(&wamid, CUSTOMER, meta_status),
            Some(APP_SECRET),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        page.wait_for(
            &format!("the tick to turn {meta_status}"),
            &format!(
                "{answer}?.querySelector('.tick').dataset.status === {}",
                js(meta_status)
            ),
        )
        .await;
        page.screenshot(&format!("03-tick-{}-{meta_status}", step + 1))
            .await;
    }
    assert_eq!(page.text_of(".tick[data-status=read]").await, "✓✓");

    // 4. The chat whose window closed offers only templates, and says why.
    page.click(&in_chat(boris, "a")).await;
    page.wait_for(
        "only templates",
        "(() => { const t = document.querySelector('#compose-text'); \
         return t.disabled && t.offsetParent !== null && t.placeholder.includes('24-hour window') && \
           document.querySelector('#compose-file').disabled && \
           document.querySelector('#compose-send').disabled && \
           !document.querySelector('#window-note').hidden && \
           !document.querySelector('#template-picker').hidden && \
           document.querySelectorAll('#template-select option').length === 2; })()",
    )
    .await;
    assert!(
        page.text_of("#window-note")
            .await
            .contains("more than 24 hours"),
        "{}",
        page.text_of("#window-note").await
    );
    assert_eq!(
        page.eval(
            "[...document.querySelectorAll('#template-select option')].map(o => o.textContent)"
        )
        .await,
        json!(["hello_world (en_US)", "order_ready (en_US)"])
    );
    page.eval(
        "(() => { const s = document.querySelector('#template-select'); s.value = '1'; \
         s.dispatchEvent(new Event('change')); })()",
    )
    .await;
    page.fill("#template-params input[data-name='1']", "12345")
        .await;
    page.screenshot("04-templates-only").await;
    page.click("#template-send").await;
    page.wait_for(
        "the template in the conversation",
        "[...document.querySelectorAll('#messages li.msg.out')].some(e => e.querySelector('.tick')?.dataset.status === 'sent')",
    )
    .await;
    let template = d
        .graph
        .message_bodies()
        .into_iter()
        .find(|b| b["type"] == "template")
        .expect("Meta got the template");
    assert_eq!(template["to"], LATE_CUSTOMER);
    assert_eq!(
        template["template"],
        json!({"name": "order_ready", "language": {"code": "en_US"},
               "components": [{"type": "body", "parameters": [{"type": "text", "text": "12345"}]}]})
    );

    // 5. An image from the customer shows inline; a document is a download.
    page.click(&in_chat(anna, "a")).await;
    page.wait_for(
        "Anna's conversation again",
        "[...document.querySelectorAll('#messages li.msg.out .msg-text')].some(e => e.textContent === 'Yes, it left today')",
    )
    .await;
    let png = wagate::qr::png("the parcel").expect("a PNG");
    d.graph.keep_media("MEDIA_IMG", &png, "image/png");
    d.graph
        .keep_media("MEDIA_PDF", b"%PDF-1.4 invoice", "application/pdf");
    customer_sends(
        &d,
        "wamid.IMG",
        "image",
        json!({"id": "MEDIA_IMG", "mime_type": "image/png", "sha256": "x", "caption": "The parcel"}),
    )
    .await;
    page.wait_for(
        "the image, inline",
        "(() => { const img = document.querySelector('#messages li.msg.in img.msg-image'); \
         return !!img && img.src.startsWith('data:image/png;base64,') && img.complete && img.naturalWidth > 0; })()",
    )
    .await;
    customer_sends(
        &d,
        "wamid.DOC",
        "document",
        json!({"id": "MEDIA_PDF", "mime_type": "application/pdf", "filename": "invoice.pdf"}),
    )
    .await;
    page.wait_for(
        "the document, as a download",
        "[...document.querySelectorAll('#messages li.msg.in a.msg-file')].some(a => a.textContent === '⬇ invoice.pdf' && a.hasAttribute('download'))",
    )
    .await;
    assert_eq!(page.eval("window.deskMarker").await, json!("no reload"));
    page.screenshot("05-image").await;

    // A file Meta does not know shows why it is missing; once Meta has it, trying again
    // shows it.
    customer_sends(
        &d,
        "wamid.LOST",
        "image",
        json!({"id": "MEDIA_LATER", "mime_type": "image/png", "sha256": "x", "caption": "Second photo"}),
    )
    .await;
    let lost = "[...document.querySelectorAll('#messages li.msg.in')].find(e => e.querySelector('.msg-text')?.textContent === 'Second photo')";
    page.wait_for(
        "the failed fetch, shown",
        &format!(
            "{lost}?.querySelector('.msg-error')?.textContent.includes('could not be fetched')"
        ),
    )
    .await;
    d.graph.keep_media("MEDIA_LATER", &png, "image/png");
    page.eval(&format!(
        "{lost}.querySelector('.msg-error button').id = 'retry-lost'"
    ))
    .await;
    page.click("#retry-lost").await;
    page.wait_for(
        "the fetched image, after the retry",
        &format!("{lost}?.querySelector('img.msg-image')?.naturalWidth > 0"),
    )
    .await;

    // The operator attaches a photo: uploaded to Meta, sent by its media id, and shown
    // inline from the desk's copy.
    let upload_dir = tempfile::tempdir().expect("temp dir");
    let photo = upload_dir.path().join("parcel.png");
    std::fs::write(&photo, &png).expect("write the photo");
    let document = page.call("DOM.getDocument", json!({})).await;
    let input = page
        .call(
            "DOM.querySelector",
            json!({"nodeId": document["root"]["nodeId"], "selector": "#compose-file"}),
        )
        .await;
    page.call(
        "DOM.setFileInputFiles",
        json!({"nodeId": input["nodeId"], "files": [photo.display().to_string()]}),
    )
    .await;
    page.wait_for(
        "the attachment",
        "document.querySelector('#compose-attachment').textContent.startsWith('Attached: parcel.png')",
    )
    .await;
    page.fill("#compose-text", "Here it is").await;
    page.click("#compose-send").await;
    page.wait_for(
        "the photo, sent and inline",
        "[...document.querySelectorAll('#messages li.msg.out')].some(e => \
           e.querySelector('.msg-text')?.textContent === 'Here it is' && \
           e.querySelector('.tick')?.dataset.status === 'sent' && \
           e.querySelector('img.msg-image')?.naturalWidth > 0)",
    )
    .await;
    let uploads = d.graph.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].bytes, png);
    assert_eq!(uploads[0].content_type.as_deref(), Some("image/png"));
    let photo_send = d
        .graph
        .message_bodies()
        .into_iter()
        .find(|b| b["type"] == "image")
        .expect("Meta got the photo");
    assert_eq!(
        photo_send["image"],
        json!({"id": "UPLOAD-1", "caption": "Here it is"})
    );
    page.screenshot("06-attachment").await;

    // A send Meta refuses stays in the conversation, marked not delivered, with why.
    d.graph
        .answer(400, meta_error(131026, "Message undeliverable"));
    page.fill("#compose-text", "Are you there?").await;
    page.click("#compose-send").await;
    page.wait_for(
        "the refused send, marked failed",
        "[...document.querySelectorAll('#messages li.msg.out')].some(e => \
           e.querySelector('.msg-text')?.textContent === 'Are you there?' && \
           e.querySelector('.tick')?.dataset.status === 'failed' && \
           e.querySelector('.msg-error')?.textContent.includes('131026'))",
    )
    .await;
    page.wait_for(
        "the error, told",
        "!document.querySelector('#toast').hidden && document.querySelector('#toast').classList.contains('error')",
    )
    .await;
    page.screenshot("07-not-delivered").await;

    // Release the chat.
    page.click("#release").await;
    page.wait_for(
        "the chat to be released",
        "document.querySelector('#chat-assignee').textContent === 'unassigned'",
    )
    .await;

    // Nothing failed in the page: no exception, no CSP violation, no failed request but
    // the refused send's 502.
    let errors: Vec<String> = page
        .errors()
        .into_iter()
        .filter(|e| !(e.contains("status of 502") && e.ends_with("/api/waba/operator/send")))
        .collect();
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");

    page.click("#logout").await;
    page.wait_for(
        "the sign-in form again",
        "!document.querySelector('#login-view').hidden && sessionStorage.getItem('wagate.token') === null",
    )
    .await;
    drop(page);
    drop(browser);
}
