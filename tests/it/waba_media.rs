//! The desk's files against the fake Graph API: inbound attachments fetched by media id
//! (with the account's token), kept and served with their type, and every way a fetch
//! can fail shown on the message instead of an empty `mediaUrl`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Backend, read};
use crate::waba::{
    APP_SECRET, CUSTOMER, Desk, MediaFault, PHONE_NUMBER_ID, TOKEN, desk_with, meta_error,
    notification, now_secs, open_events, sse_events, webhook,
};

/// A 1×1 PNG.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\0\x05\0\x01\xff\x89\x99=\x1d\0\0\0\0IEND\xaeB`\x82";

/// A customer sends an attachment of `kind` (`image`, `document`, …) with Meta's `media_id`.
async fn customer_sends_file(d: &Desk, wamid: &str, kind: &str, media_id: &str) {
    let mut attachment = json!({"id": media_id, "mime_type": "image/png", "sha256": "x"});
    if kind == "document" {
        attachment =
            json!({"id": media_id, "mime_type": "application/pdf", "filename": "invoice.pdf"});
    }
    let body = notification(
        PHONE_NUMBER_ID,
        json!({
            "contacts": [{"profile": {"name": "Anna Customer"}, "wa_id": CUSTOMER}],
            "messages": [{"from": CUSTOMER, "id": wamid, "timestamp": now_secs().to_string(),
                          "type": kind, kind: attachment}],
        }),
    );
    let (code, answer) = webhook(&d.server, &body, Some(APP_SECRET)).await;
    assert_eq!(code, 200, "webhook: {answer}");
}

/// Reads the operator stream until a new `media` event of a message in state `status`
/// arrives (one after the `seen` events already looked at); returns that message.
async fn media_event(
    stream: &mut reqwest::Response,
    buffer: &mut String,
    seen: &mut usize,
    status: &str,
) -> Value {
    loop {
        let events = sse_events(stream, buffer, *seen + 1).await;
        let found = events[*seen..]
            .iter()
            .position(|(_, e)| e["type"] == "media" && e["message"]["media"]["status"] == status);
        match found {
            Some(i) => {
                *seen += i + 1;
                return events[*seen - 1].1["message"].clone();
            }
            None => *seen = events.len(),
        }
    }
}

async fn get_media(d: &Desk, id: i64) -> reqwest::Response {
    d.server
        .request(
            Method::GET,
            &format!("/api/waba/operator/media/{id}"),
            &d.owner,
        )
        .send()
        .await
        .expect("media")
}

async fn inbound_files_are_fetched_and_served(backend: Backend) {
    let d = desk_with(backend, &[("waba_media_retry_ms", "20")]).await;
    d.graph.keep_media("MEDIA-IMG-1", PNG, "image/png");
    let mut stream = open_events(&d, None).await;
    let (mut buffer, mut seen) = (String::new(), 0);

    customer_sends_file(&d, "wamid.IMG1", "image", "MEDIA-IMG-1").await;
    let message = media_event(&mut stream, &mut buffer, &mut seen, "stored").await;
    let id = message["id"].as_i64().expect("id");
    assert_eq!(message["type"], "image");
    assert_eq!(
        message["mediaUrl"],
        format!("/api/waba/operator/media/{id}")
    );
    assert_eq!(message["media"]["mimeType"], "image/png");
    assert_eq!(message["media"]["size"], PNG.len());
    assert_eq!(message["media"]["attempts"], 1);

    // Both requests to Meta carried the account's token.
    let requests = d.graph.media_requests();
    assert_eq!(
        requests.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(),
        ["GET /v21.0/MEDIA-IMG-1", "GET /download/MEDIA-IMG-1"]
    );
    assert!(
        requests
            .iter()
            .all(|(_, auth)| *auth == format!("Bearer {TOKEN}"))
    );

    let answer = get_media(&d, id).await;
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.headers()["content-type"], "image/png");
    assert!(
        answer.headers()["content-disposition"]
            .to_str()
            .expect("ascii")
            .starts_with("inline")
    );
    assert_eq!(answer.bytes().await.expect("bytes").as_ref(), PNG);

    // The history shows the same, and the chat list's last message too.
    let (code, history) = d
        .server
        .get(
            &format!("/api/waba/operator/chat/{}/messages", message["chatId"]),
            &d.owner,
        )
        .await;
    assert_eq!(code, 200, "{history}");
    assert_eq!(
        history["messages"][0]["mediaUrl"],
        format!("/api/waba/operator/media/{id}")
    );
    assert_eq!(history["messages"][0]["media"]["status"], "stored");

    // Meta answers 500, then the file: retried, and the attempt shows.
    d.graph
        .keep_media("MEDIA-DOC-1", b"%PDF-1.4 invoice", "application/pdf");
    d.graph.media_fault(MediaFault::Lookup(
        500,
        json!({"error": {"message": "An unexpected error has occurred", "code": 2}}),
    ));
    customer_sends_file(&d, "wamid.DOC1", "document", "MEDIA-DOC-1").await;
    let retrying = media_event(&mut stream, &mut buffer, &mut seen, "pending").await;
    assert_eq!(retrying["media"]["attempts"], 1);
    assert!(retrying["media"]["error"].is_string(), "{retrying}");
    let doc = media_event(&mut stream, &mut buffer, &mut seen, "stored").await;
    assert_eq!(doc["media"]["attempts"], 2);
    assert_eq!(doc["media"]["fileName"], "invoice.pdf");
    let answer = get_media(&d, doc["id"].as_i64().expect("id")).await;
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.headers()["content-type"], "application/pdf");
    assert!(
        answer.headers()["content-disposition"]
            .to_str()
            .expect("ascii")
            .starts_with("attachment; filename=\"invoice.pdf\"")
    );

    // An unknown media id: refused by Meta, not retried, and said so.
    let before = d.graph.media_requests().len();
    customer_sends_file(&d, "wamid.IMG2", "image", "MEDIA-UNKNOWN").await;
    let failed = media_event(&mut stream, &mut buffer, &mut seen, "failed").await;
    assert_eq!(failed["media"]["attempts"], 1);
    assert!(
        failed["media"]["error"]
            .as_str()
            .expect("error")
            .contains("does not exist"),
        "{failed}"
    );
    assert_eq!(d.graph.media_requests().len() - before, 1, "one lookup");
    let failed_id = failed["id"].as_i64().expect("id");
    let (code, body) = read(get_media(&d, failed_id).await).await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(body["code"], "media_fetch_failed");

    // Once Meta has it, a retry fetches it.
    d.graph.keep_media("MEDIA-UNKNOWN", PNG, "image/png");
    let (code, body) = d
        .server
        .post(
            &format!("/api/waba/operator/media/{failed_id}/retry"),
            &d.owner,
            json!({}),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let stored = media_event(&mut stream, &mut buffer, &mut seen, "stored").await;
    assert_eq!(stored["id"], failed_id);
    assert_eq!(get_media(&d, failed_id).await.status().as_u16(), 200);

    // A text message has no file; another account sees none of this.
    let (code, body) = read(get_media(&d, 999_999).await).await;
    assert_eq!(code, 404, "{body}");
    let (_, _, other) = d.server.new_user("other@example.com", "user").await;
    let (code, body) = d
        .server
        .get(
            &format!("/api/waba/operator/media/{id}"),
            &crate::common::Auth::Bearer(other),
        )
        .await;
    assert_eq!(code, 404, "{body}");
}

async fn failed_fetches_are_bounded_and_visible(backend: Backend) {
    let d = desk_with(
        backend,
        &[
            ("waba_media_timeout_ms", "300"),
            ("waba_media_retry_ms", "20"),
            ("waba_media_max_bytes", "2048"),
        ],
    )
    .await;
    let mut stream = open_events(&d, None).await;
    let (mut buffer, mut seen) = (String::new(), 0);

    // A download that never finishes: three attempts, each cut off, then failed.
    d.graph.keep_media("MEDIA-SLOW", PNG, "image/png");
    for _ in 0..3 {
        d.graph.media_fault(MediaFault::Stall);
    }
    customer_sends_file(&d, "wamid.SLOW", "image", "MEDIA-SLOW").await;
    let failed = media_event(&mut stream, &mut buffer, &mut seen, "failed").await;
    assert_eq!(failed["media"]["attempts"], 3);
    assert!(
        failed["media"]["error"]
            .as_str()
            .expect("error")
            .contains("longer than 300 ms"),
        "{failed}"
    );
    // Not an empty mediaUrl: it points at the file, which says why it is missing.
    let id = failed["id"].as_i64().expect("id");
    assert_eq!(failed["mediaUrl"], format!("/api/waba/operator/media/{id}"));
    let (code, body) = read(get_media(&d, id).await).await;
    assert_eq!(code, 502, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("longer than")
    );

    // A file over the limit is refused without downloading it.
    d.graph
        .keep_media("MEDIA-BIG", &vec![7u8; 4096], "image/png");
    let before = d.graph.media_requests().len();
    customer_sends_file(&d, "wamid.BIG", "image", "MEDIA-BIG").await;
    let big = media_event(&mut stream, &mut buffer, &mut seen, "failed").await;
    assert_eq!(big["media"]["attempts"], 1);
    assert!(
        big["media"]["error"]
            .as_str()
            .expect("error")
            .contains("limit of 2048 bytes"),
        "{big}"
    );
    assert_eq!(
        d.graph.media_requests()[before..]
            .iter()
            .map(|(r, _)| r.as_str())
            .collect::<Vec<_>>(),
        ["GET /v21.0/MEDIA-BIG"]
    );

    // Meta refuses the token: permanent, said so.
    d.graph.media_fault(MediaFault::Lookup(
        401,
        meta_error(190, "Error validating access token"),
    ));
    d.graph.keep_media("MEDIA-TOKEN", PNG, "image/png");
    customer_sends_file(&d, "wamid.TOKEN", "image", "MEDIA-TOKEN").await;
    let refused = media_event(&mut stream, &mut buffer, &mut seen, "failed").await;
    assert_eq!(refused["media"]["attempts"], 1);
    assert!(
        refused["media"]["error"]
            .as_str()
            .expect("error")
            .contains("access token"),
        "{refused}"
    );
}

/// `POST /api/waba/operator/send` as a multipart form.
async fn send_file(
    d: &Desk,
    chat: i64,
    bytes: Vec<u8>,
    name: &str,
    mime: &str,
    message: Option<&str>,
) -> (u16, Value) {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str(mime)
        .expect("mime");
    let mut form = reqwest::multipart::Form::new()
        .text("chatId", chat.to_string())
        .part("file", part);
    if let Some(m) = message {
        form = form.text("message", m.to_owned());
    }
    read(
        d.server
            .request(Method::POST, "/api/waba/operator/send", &d.owner)
            .multipart(form)
            .send()
            .await
            .expect("send"),
    )
    .await
}

async fn uploads_are_sent_by_media_id(backend: Backend) {
    let d = desk_with(backend, &[]).await;
    let chat = crate::waba::customer_writes(&d, "wamid.IN-UP", now_secs()).await;

    // An image: uploaded to /{phone-number-id}/media, then sent by its id.
    let (code, sent) = send_file(
        &d,
        chat,
        PNG.to_vec(),
        "photo.png",
        "image/png",
        Some("Your photo"),
    )
    .await;
    assert_eq!(code, 200, "{sent}");
    assert_eq!(sent["message"]["type"], "image");
    let uploads = d.graph.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].phone_number_id, PHONE_NUMBER_ID);
    assert_eq!(uploads[0].messaging_product, "whatsapp");
    assert_eq!(uploads[0].kind, "image/png");
    assert_eq!(uploads[0].content_type.as_deref(), Some("image/png"));
    assert_eq!(uploads[0].bytes, PNG);
    assert_eq!(uploads[0].file_name.as_deref(), Some("photo.png"));
    let bodies = d.graph.message_bodies();
    let last = bodies.last().expect("a send");
    assert_eq!(last["type"], "image");
    assert_eq!(
        last["image"],
        json!({"id": "UPLOAD-1", "caption": "Your photo"})
    );

    // The desk keeps a copy: the history points at it.
    let id = sent["message"]["id"].as_i64().expect("id");
    let (_, history) = d
        .server
        .get(
            &format!("/api/waba/operator/chat/{chat}/messages"),
            &d.owner,
        )
        .await;
    let m = &history["messages"][0];
    assert_eq!(m["id"], id);
    assert_eq!(m["mediaUrl"], format!("/api/waba/operator/media/{id}"));
    assert_eq!(m["media"]["status"], "stored");
    assert_eq!(m["content"], "Your photo");
    let answer = d
        .server
        .request(
            Method::GET,
            &format!("/api/waba/operator/media/{id}"),
            &d.owner,
        )
        .send()
        .await
        .expect("media");
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.bytes().await.expect("bytes").as_ref(), PNG);

    // A document keeps its name.
    let (code, sent) = send_file(
        &d,
        chat,
        b"%PDF-1.4 x".to_vec(),
        "invoice.pdf",
        "application/pdf",
        None,
    )
    .await;
    assert_eq!(code, 200, "{sent}");
    let last = d.graph.message_bodies().last().cloned().expect("a send");
    assert_eq!(last["type"], "document");
    assert_eq!(
        last["document"],
        json!({"id": "UPLOAD-2", "filename": "invoice.pdf"})
    );

    // Over 10 MB: an image over Meta's 5 MB, refused before anything reaches Meta.
    let mut big = PNG.to_vec();
    big.resize(10 * 1024 * 1024 + 1, 0);
    let sends = d.graph.message_bodies().len();
    let (code, body) = send_file(&d, chat, big, "big.png", "image/png", None).await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(body["code"], "payload_too_large");
    // Over MAX_UPLOAD_BYTES (16 MiB): the same, from the edge.
    let (code, body) = send_file(
        &d,
        chat,
        vec![1u8; 17 * 1024 * 1024],
        "big.pdf",
        "application/pdf",
        None,
    )
    .await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(body["code"], "payload_too_large");

    // A type Meta refuses: 400, nothing uploaded.
    let (code, body) = send_file(
        &d,
        chat,
        b"MZ\x90\0 program".to_vec(),
        "setup.exe",
        "application/x-msdownload",
        None,
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["code"], "unsupported_media_type");
    let (code, body) =
        send_file(&d, chat, b"GIF89a....".to_vec(), "a.gif", "image/gif", None).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(d.graph.uploads().len(), 2);
    assert_eq!(d.graph.message_bodies().len(), sends);

    // Missing parts are 400; another account's chat 404.
    let (code, body) = read(
        d.server
            .request(Method::POST, "/api/waba/operator/send", &d.owner)
            .multipart(reqwest::multipart::Form::new().text("chatId", chat.to_string()))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().expect("error").contains("file"));

    // Outside the window: refused before the upload.
    let stale = crate::waba::inbound("wamid.IN-OLD", "79005550000", "old", now_secs() - 25 * 3600);
    let (code, body) = webhook(&d.server, &stale, Some(APP_SECRET)).await;
    assert_eq!(code, 200, "{body}");
    let (_, chats) = d.server.get("/api/waba/operator/chats", &d.owner).await;
    let old = chats["chats"]
        .as_array()
        .expect("chats")
        .iter()
        .find(|c| c["customerPhone"] == "79005550000")
        .and_then(|c| c["id"].as_i64())
        .expect("the stale chat");
    let (code, body) = send_file(&d, old, PNG.to_vec(), "photo.png", "image/png", None).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["code"], "outside_24h_window");
    assert_eq!(d.graph.uploads().len(), 2);
}

backend_tests!(
    inbound_files_are_fetched_and_served,
    failed_fetches_are_bounded_and_visible,
    uploads_are_sent_by_media_id
);
