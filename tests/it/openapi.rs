//! The OpenAPI document: its snapshot, that it describes exactly what the router serves
//! (and who may call it), the `/docs` page, and a bounded schema-driven fuzz run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::common::{Auth, TestServer, eventually};

/// The checked-in document. After a deliberate change of the API, review the new document
/// and update it with:
///
/// ```text
/// UPDATE_SNAPSHOTS=1 cargo test --test it openapi::
/// ```
const SNAPSHOT: &str = "tests/it/snapshots/openapi.json";

/// The methods an operation may have in the document (axum answers HEAD and OPTIONS by
/// itself, so they are not probed).
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn document() -> Value {
    serde_json::to_value(wagate::http::openapi_document()).expect("the document serialises")
}

#[test]
fn document_matches_the_snapshot() {
    let current = wagate::http::openapi_document()
        .to_pretty_json()
        .expect("the document serialises")
        + "\n";
    let path = repo_path(SNAPSHOT);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("snapshot directory");
        std::fs::write(&path, &current).expect("write the snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; create it with UPDATE_SNAPSHOTS=1 cargo test --test it openapi::",
            path.display()
        )
    });
    if current != expected {
        let line = current
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| current.lines().count().min(expected.lines().count()));
        panic!(
            "the OpenAPI document differs from {SNAPSHOT} from line {}:\n  now:      {}\n  snapshot: {}\n\
             If the API change is intended, review it and run \
             UPDATE_SNAPSHOTS=1 cargo test --test it openapi::",
            line + 1,
            current.lines().nth(line).unwrap_or("<end>"),
            expected.lines().nth(line).unwrap_or("<end>"),
        );
    }
}

/// Each `(method, path, operation)` of the document.
fn operations(doc: &Value) -> Vec<(&'static str, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                ops.push((method, path.clone(), op.clone()));
            }
        }
        for key in item.as_object().expect("path item").keys() {
            assert!(
                METHODS.contains(&key.as_str()) || key == "parameters",
                "{path}: unexpected key {key}"
            );
        }
    }
    ops
}

/// The `{name}` placeholders of a path.
fn placeholders(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_owned)
        .collect()
}

#[test]
fn document_is_consistent() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t["name"].as_str().expect("tag name"))
        .collect();
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    assert_eq!(schemes["bearerAuth"]["type"], "http");
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["apiKey"]["type"], "apiKey");
    assert_eq!(schemes["apiKey"]["in"], "header");
    assert_eq!(schemes["apiKey"]["name"], "x-api-key");
    assert_eq!(
        doc["components"]["schemas"]["Error"]["required"],
        serde_json::json!(["error", "code"])
    );
    let mut ids = BTreeSet::new();
    let ops = operations(&doc);
    assert!(ops.len() > 60, "only {} operations documented", ops.len());
    for (method, path, op) in &ops {
        let what = format!("{} {path}", method.to_uppercase());
        let id = op["operationId"].as_str().expect("operationId");
        assert!(ids.insert(id.to_owned()), "{what}: operationId {id} twice");
        let op_tags = op["tags"].as_array().expect("tags");
        assert!(
            !op_tags.is_empty()
                && op_tags
                    .iter()
                    .all(|t| tags.contains(t.as_str().unwrap_or(""))),
            "{what}: tags {op_tags:?} are not among the declared tags"
        );
        assert!(
            op["summary"].is_string(),
            "{what}: no summary (doc comment)"
        );
        let declared: BTreeSet<String> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().expect("name").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(declared, placeholders(path), "{what}: path parameters");
        assert!(
            op["responses"]["default"].is_object(),
            "{what}: no default (error) answer"
        );
        if let Some(security) = op.get("security") {
            assert_eq!(security, &serde_json::json!([]), "{what}: security");
        } else {
            assert!(
                op["responses"]["401"].is_object(),
                "{what}: needs credentials but does not list 401"
            );
        }
    }
}

/// Path parameters carry the names the API documents give them: «GET
/// /api/instances/{instanceId}/chats/{chatId}/messages», «GET /api/stats/instances/{instanceId}»,
/// «GET /api/waba/operator/message-status/:messageId», «GET
/// /api/waba/operator/chat/:chatId/messages», «POST
/// …/webhook/deliveries/{eventId}/retry». Users keep `{id}`, as the contract names them.
#[test]
fn path_parameters_are_named_as_in_the_documents() {
    let doc = document();
    let paths = doc["paths"].as_object().expect("paths");
    for documented in [
        "/api/instances/{instanceId}",
        "/api/instances/{instanceId}/qr",
        "/api/instances/{instanceId}/chats/{chatId}/messages",
        "/api/instances/{instanceId}/contacts/db",
        "/api/whatsapp/{instanceId}/send",
        "/api/whatsapp/{instanceId}/contacts",
        "/api/stats/instances/{instanceId}",
        "/api/waba/operator/message-status/{messageId}",
        "/api/waba/operator/chat/{chatId}/messages",
        "/api/users/{id}",
        "/api/instances/{instanceId}/webhook/deliveries/{eventId}/retry",
    ] {
        assert!(
            paths.contains_key(documented),
            "{documented} is not in /openapi.json"
        );
    }
    for path in paths.keys() {
        let allowed: &[&str] = if path.starts_with("/api/users/") {
            &["id"]
        } else if path.starts_with("/dashboard/") || path.starts_with("/desk/") {
            &["file"]
        } else if path.contains("/webhook/deliveries/") {
            &["instanceId", "eventId"]
        } else if path.contains("/groups/") {
            // Groups by address, as the features table names them.
            &["instanceId", "groupJid"]
        } else if path.contains("/chats/{chatId}/labels/") {
            // A label on a chat, by the id `GET …/labels` lists.
            &["instanceId", "chatId", "labelId"]
        } else if path.ends_with("/chats/{chatId}/{action}") {
            // The chat actions without a body (archive, pin, unmute, …), one operation.
            &["instanceId", "chatId", "action"]
        } else if path.contains("/presence/subscribe/") || path.contains("/contacts/") {
            // A contact by number (followed, its picture, blocked), as the features table
            // names it.
            &["instanceId", "phone"]
        } else {
            &["instanceId", "chatId", "messageId"]
        };
        for name in placeholders(path) {
            assert!(
                allowed.contains(&name.as_str()),
                "{path}: {{{name}}} is not among the documents' names {allowed:?}"
            );
        }
    }
}

/// The only way to add a route is `utoipa_axum::routes!` with a `#[utoipa::path]`
/// handler, which documents it. axum's own ways of adding routes would serve an endpoint
/// the document does not show, so the server's sources must not use them (unit-test
/// modules, `#[cfg(test)]`, may: they build throwaway servers).
#[test]
fn no_route_bypasses_the_document() {
    const UNDOCUMENTED: [&str; 4] = [".route(", ".route_service(", ".nest(", ".nest_service("];
    fn visit(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                visit(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                // Depth of braces inside a `#[cfg(test)]` item; None outside one.
                let (mut test_depth, mut test_next): (Option<i64>, bool) = (None, false);
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    if code.trim_start().starts_with("#[cfg(test)]") {
                        test_next = true;
                        continue;
                    }
                    let opens = code.matches('{').count() as i64;
                    let closes = code.matches('}').count() as i64;
                    if test_next && opens > 0 {
                        test_next = false;
                        test_depth = Some(0);
                    }
                    if let Some(depth) = test_depth {
                        let depth = depth + opens - closes;
                        test_depth = (depth > 0).then_some(depth);
                        continue;
                    }
                    if UNDOCUMENTED.iter().any(|p| code.contains(p)) {
                        found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    let mut found = Vec::new();
    visit(&repo_path("src"), &mut found);
    assert!(
        found.is_empty(),
        "routes added without `utoipa_axum::routes!` (so missing from the OpenAPI document):\n{}",
        found.join("\n")
    );
}

/// A concrete URL for a documented path: every placeholder filled.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') { "1" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every documented operation is served, with the security the document says; every
/// other method on a documented path answers 405. With [`no_route_bypasses_the_document`]
/// this makes the document and the router describe the same endpoints.
#[tokio::test]
async fn document_and_router_agree() {
    let server = TestServer::start().await;
    let (status, doc) = server.get("/openapi.json", &Auth::None).await;
    assert_eq!(status, 200);
    assert_eq!(
        doc,
        document(),
        "/openapi.json serves the generated document"
    );
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let url = concrete(path);
        for method in METHODS {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let what = format!("{m} {path}");
            let resp = server
                .request(m.clone(), &url, &Auth::None)
                .send()
                .await
                .expect("request");
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            let Some(op) = item.get(method) else {
                assert_eq!(
                    status, 405,
                    "{what} is not documented but answers {status}: {body}"
                );
                continue;
            };
            assert!(
                status != 405 && !(status == 404 && body.contains("no such endpoint")),
                "{what} is documented but not served: {status} {body}"
            );
            let public = op.get("security") == Some(&serde_json::json!([]));
            if public {
                assert_ne!(
                    status, 401,
                    "{what} is documented as public but asks for credentials"
                );
            } else {
                assert_eq!(
                    status, 401,
                    "{what} is documented as needing credentials but answers {status} without: {body}"
                );
            }
        }
    }
}

#[tokio::test]
async fn docs_page_shows_the_document() {
    let server = TestServer::start().await;
    let resp = server
        .request(Method::GET, "/docs", &Auth::None)
        .send()
        .await
        .expect("GET /docs");
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .expect("content type")
            .starts_with("text/html"),
        "{headers:?}"
    );
    let csp = headers["content-security-policy"].to_str().expect("CSP");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = resp.text().await.expect("body");
    assert!(
        html.contains("/openapi.json"),
        "the page names the document"
    );
    // The CSP allows only same-origin files: no inline script or style may be needed.
    assert!(!html.contains("<style"), "inline style in /docs");
    assert!(!html.contains(" style="), "inline style attribute in /docs");
    for script in html.split("<script").skip(1) {
        let tag = script.split('>').next().unwrap_or("");
        assert!(
            tag.contains("src=\"/docs/"),
            "inline script in /docs: <script{tag}>"
        );
    }
    for (asset, kind) in [
        ("/docs/app.js", "text/javascript"),
        ("/docs/app.css", "text/css"),
    ] {
        assert!(html.contains(asset), "/docs does not load {asset}");
        let resp = server
            .request(Method::GET, asset, &Auth::None)
            .send()
            .await
            .expect("asset");
        assert_eq!(resp.status(), 200, "{asset}");
        let ct = resp.headers()["content-type"]
            .to_str()
            .expect("type")
            .to_owned();
        assert!(ct.starts_with(kind), "{asset}: {ct}");
        assert!(
            !resp.text().await.expect("asset body").is_empty(),
            "{asset} is empty"
        );
    }

    let resp = server
        .request(Method::GET, "/openapi.json", &Auth::None)
        .send()
        .await
        .expect("GET /openapi.json");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("application/json")
    );
    let doc: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("valid JSON");
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1."), "openapi {version}");
    assert!(doc["paths"]["/api/auth/login"]["post"].is_object());
}

/// The environment variable naming the schemathesis executable: `./scripts/test` installs
/// a pinned schemathesis (PyPI) and sets it.
const SCHEMATHESIS_VAR: &str = "WAGATE_TEST_SCHEMATHESIS";
/// Generated test cases per operation in each phase (the coverage phase adds its own
/// boundary cases): under two minutes on a small machine.
const FUZZ_EXAMPLES: &str = "100";
/// The same cases every run.
const FUZZ_SEED: &str = "1";
/// An upper bound for the whole run (it takes well under a minute).
const FUZZ_TIMEOUT: Duration = Duration::from_secs(600);

/// Operations left out of the fuzz run, and why.
const NOT_FUZZED: [&str; 5] = [
    // Endless Server-Sent Event streams, by design: a request never completes. The
    // instances and WABA tests cover them.
    "GET /api/instances/{instanceId}/events/stream",
    "GET /api/waba/operator/events",
    // Could create instances on the wacore engine, which connects to WhatsApp's servers:
    // tests never reach the internet. The instances tests cover creation.
    "POST /api/instances",
    // Would delete the instance every other operation is fuzzed against.
    "DELETE /api/instances/{instanceId}",
    // `crash` kills the session on purpose; while the supervisor restarts it, calls on the
    // instance answer 503 `unavailable` with Retry-After, by design.
    "POST /api/sandbox/instances/{instanceId}/fault",
];

/// Operations whose generated "valid" requests are not all accepted, and why: rules the
/// document states in words because JSON Schema cannot (each operation's description
/// says them), checked by the `positive_data_acceptance` check on every other operation.
const POSITIVE_DATA_UNCHECKED: [&str; 11] = [
    // `startDate` must not be after `endDate`, `since` not after `until`: JSON Schema
    // cannot compare two values.
    "GET /api/instances/{instanceId}/activity",
    "GET /api/instances/{instanceId}/chats/{chatId}/messages",
    "POST /api/instances/{instanceId}/webhook/replay",
    // Switching to MongoDB needs `DATABASE_URL` in the server's configuration.
    "POST /api/db/switch",
    // `ownerId` must name an existing user or admin; on an update, whether it is allowed
    // depends on the stored role.
    "POST /api/users",
    "PUT /api/users/{id}",
    // Every field is required the first time an account's settings are set, and only
    // then (a later update keeps what it leaves out): it depends on what is stored.
    "PUT /api/waba/settings",
    // The server downloads the media URL: whether it answers is no property of the
    // request (and the test never reaches the internet).
    "POST /api/whatsapp/{instanceId}/send-media",
    // The same for the image of a status post; and JSON Schema here says neither that
    // exactly one of `text` and `imageUrl` is given, nor that the caption and the
    // background go with one of them only.
    "POST /api/whatsapp/{instanceId}/status",
    // The same for `media.url` of a simulated inbound message.
    "POST /api/sandbox/instances/{instanceId}/inbound",
    // A profile picture must be a JPEG: a property of the file's bytes, not of the form.
    "PUT /api/whatsapp/{instanceId}/profile/picture",
];

/// A bounded schema-driven fuzz run: schemathesis generates requests from
/// `/openapi.json` (valid and invalid ones). No answer may be a 5xx (a client's mistake is
/// a 4xx `{error, code}`), and every answer must be one the document lists for the
/// operation, with the content type and the schema it gives there. Every request the
/// document calls valid is accepted (`positive_data_acceptance`), but on the operations of
/// [`POSITIVE_DATA_UNCHECKED`].
///
/// The operations work on real data: a connected sandbox instance with a chat holding a
/// message with media, a second one for the operations that would limit or log out the
/// first, and a user other than the caller (so rotating its key or deactivating it does
/// not lock the run out).
#[tokio::test]
async fn fuzzing_the_api_finds_no_server_error() {
    let schemathesis = std::env::var(SCHEMATHESIS_VAR).unwrap_or_else(|_| {
        panic!(
            "{SCHEMATHESIS_VAR} is not set: run ./scripts/test, which installs schemathesis and sets it"
        )
    });
    let server = TestServer::start().await;
    let admin = server.admin();
    let (user_id, _, _) = server.new_user("fuzzed@example.com", "user").await;
    let instance = server
        .connected_instance(&admin, "fuzzed", "79001234567")
        .await;
    // The operations that change an instance for the others (usage limits that answer
    // 429 to everything, a logout that answers 409 to sends) work on one of their own.
    let changed = server
        .connected_instance(&admin, "fuzzed changes", "79001234568")
        .await;
    let (code, body) = server
        .post(
            &format!("/api/sandbox/instances/{instance}/inbound"),
            &admin,
            serde_json::json!({
                "from": "79005550000",
                "body": "hello",
                "media": {"base64": "aGVsbG8=", "mimeType": "text/plain", "fileName": "hello.txt"},
            }),
        )
        .await;
    assert_eq!(code, 200, "inbound: {body}");
    let message_id = body["messageId"].as_str().expect("messageId").to_owned();
    // Two messages of the account's own, one to edit and one to delete for everyone.
    let mut own = Vec::new();
    for text in ["to edit", "to delete"] {
        let (code, body) = server
            .post(
                &format!("/api/whatsapp/{instance}/send"),
                &admin,
                serde_json::json!({"phone": "79005550000", "message": text}),
            )
            .await;
        assert_eq!(code, 200, "send: {body}");
        own.push(body["id"].as_str().expect("id").to_owned());
    }
    let [edited, deleted] = &own[..] else {
        unreachable!("two messages were sent")
    };
    let history = format!("/api/instances/{instance}/chats/79005550000/messages");
    eventually(20, "the three messages to be stored", || async {
        let (code, body) = server.get(&history, &admin).await;
        assert_eq!(code, 200, "history: {body}");
        (body["pagination"]["total"] == 3).then_some(())
    })
    .await;

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"# Written by the fuzz test of tests/it/openapi.rs.
[auth]
# The run authenticates with an API key; no account is signed up.
auto-signup = false

# The checks, here rather than on the command line, where they would override the
# operations' own settings below.
[checks]
enabled = false
not_a_server_error.enabled = true
status_code_conformance.enabled = true
content_type_conformance.enabled = true
response_schema_conformance.enabled = true
positive_data_acceptance.enabled = true

[parameters]
"path.instanceId" = "{instance}"

[[operations]]
include-name-regex = "^(PUT /api/instances/[{{]instanceId[}}]|POST /api/(instances|whatsapp)/[{{]instanceId[}}]/(logout|reconnect))$"
parameters = {{ "path.instanceId" = "{changed}" }}

[[operations]]
include-name = "PUT /api/whatsapp/{{instanceId}}/messages/{{messageId}}"
parameters = {{ "path.messageId" = "{edited}" }}

[[operations]]
include-name = "DELETE /api/whatsapp/{{instanceId}}/messages/{{messageId}}"
parameters = {{ "path.messageId" = "{deleted}" }}

[[operations]]
include-path-regex = "^/api/users/"
parameters = {{ "path.id" = "{user_id}" }}

[[operations]]
include-path-regex = "^/api/instances/[{{]instanceId[}}]/(chats|messages)/"
parameters = {{ "path.chatId" = "79005550000", "path.messageId" = "{message_id}" }}
"#
        ),
    )
    .expect("write the schemathesis config");
    let mut unchecked = String::new();
    for operation in POSITIVE_DATA_UNCHECKED {
        unchecked.push_str(&format!(
            "\n[[operations]]\ninclude-name = \"{operation}\"\nchecks.positive_data_acceptance.enabled = false\n"
        ));
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&config)
        .expect("open the schemathesis config");
    std::io::Write::write_all(&mut file, unchecked.as_bytes())
        .expect("write the schemathesis config");

    // A send's `delay` holds its answer that long (up to 20 s, past the request timeout):
    // the valid delays the fuzzer picks are cut to 100 ms. The bounds are checked by
    // `pacing::`; values out of bounds are sent as generated.
    let hooks = dir.path().join("fuzz_hooks.py");
    std::fs::write(
        &hooks,
        r#"import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if not isinstance(body, dict) or "delay" not in body:
        return
    try:
        delay = int(body["delay"])
    except (TypeError, ValueError):
        return
    if 100 < delay <= 20000:
        body["delay"] = 100 if isinstance(body["delay"], int) else "100"
"#,
    )
    .expect("write the schemathesis hooks");

    let mut cmd = tokio::process::Command::new(&schemathesis);
    cmd.current_dir(dir.path())
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(server.url("/openapi.json"))
        .args(["--header", &format!("x-api-key: {}", server.admin_key)])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", FUZZ_EXAMPLES])
        .args(["--seed", FUZZ_SEED])
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        // Only the API key authenticates: generated Authorization headers would take
        // precedence and turn every request into a 401.
        .args(["--generation-with-security-parameters", "false"])
        .args(["--generation-database", "none"])
        .args(["--no-color"])
        .kill_on_drop(true);
    for operation in NOT_FUZZED {
        cmd.args(["--exclude-name", operation]);
    }
    let output = tokio::time::timeout(FUZZ_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {FUZZ_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {schemathesis} ({SCHEMATHESIS_VAR}): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found server errors (or could not run): {}\n{stdout}\n{stderr}",
        output.status
    );
    // It really tested the API, not an empty selection.
    assert!(
        stdout.contains("Tested: ") && stdout.contains("passed"),
        "unexpected schemathesis output:\n{stdout}\n{stderr}"
    );
}

/// The 503 every API operation can answer while a part of the server restarts (an
/// instance's session, an actor) or storage is unreachable is in the document, with its
/// `Retry-After` header; and the request schemas carry the validation the server applies.
#[test]
fn restarts_and_validation_rules_are_in_the_document() {
    let doc = document();
    let unavailable = &doc["components"]["responses"]["Unavailable"];
    assert!(
        unavailable["headers"]["Retry-After"]["schema"]["type"] == "integer",
        "{unavailable}"
    );
    for (method, path, op) in operations(&doc) {
        if path.starts_with("/api/") {
            assert!(
                op["responses"]["503"].is_object(),
                "{method} {path} does not document its 503"
            );
        }
    }
    let send = &doc["paths"]["/api/whatsapp/{instanceId}/send"]["post"];
    assert_eq!(
        send["responses"]["503"]["$ref"],
        "#/components/responses/Unavailable"
    );
    let schemas = &doc["components"]["schemas"];
    let phone = &schemas["SendText"]["properties"]["phone"];
    assert_eq!(
        phone["pattern"],
        wagate::http::openapi::CHAT_ADDRESS_PATTERN,
        "{phone}"
    );
    assert_eq!(
        schemas["ScanRequest"]["properties"]["phone"]["pattern"],
        wagate::http::openapi::PHONE_PATTERN
    );
    let user = &schemas["CreateUser"]["properties"];
    assert_eq!(user["password"]["minLength"], 6, "{user}");
    assert_eq!(user["password"]["maxLength"], 200, "{user}");
    assert!(user["email"]["pattern"].is_string(), "{user}");
    let headers = &schemas["CreateInstance"]["properties"]["headers"];
    assert_eq!(headers["maxProperties"], 20, "{headers}");
    assert!(headers["propertyNames"]["pattern"].is_string(), "{headers}");
    assert_eq!(
        schemas["CreateInstance"]["properties"]["retryInterval"]["minimum"],
        100
    );
    // Texts that must not be blank, and rules across fields.
    assert_eq!(
        schemas["SendText"]["properties"]["message"]["pattern"],
        wagate::http::openapi::NOT_BLANK_PATTERN
    );
    assert_eq!(
        schemas["AddContact"]["properties"]["phone"]["pattern"],
        wagate::http::openapi::PERSON_ADDRESS_PATTERN
    );
    assert!(
        schemas["WabaAssign"]["required"]
            .as_array()
            .is_some_and(|r| r.contains(&"operatorId".into())),
        "{}",
        schemas["WabaAssign"]
    );
    for (schema, rule) in [
        ("WabaSend", "anyOf"),
        ("UpdateInstance", "anyOf"),
        ("SettingsPatch", "anyOf"),
        ("CreateUser", "anyOf"),
        ("MediaInput", "oneOf"),
        ("UpdateGroup", "anyOf"),
    ] {
        let rules = &schemas[schema]["allOf"];
        assert!(
            rules
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r[rule].is_array())),
            "{schema}: {rules}"
        );
    }
    // Path parameters parsed as addresses carry the pattern they are parsed with.
    for (method, path, op) in operations(&doc) {
        let parameters = op["parameters"].as_array().into_iter().flatten();
        for parameter in parameters.filter(|p| p["in"] == "path") {
            let expected = match parameter["name"].as_str() {
                Some("groupJid") => wagate::http::openapi::GROUP_ADDRESS_PATTERN,
                Some("phone") => wagate::http::openapi::PERSON_ADDRESS_PATTERN,
                Some("chatId") if parameter["schema"]["type"] == "string" => {
                    wagate::http::openapi::CHAT_ADDRESS_PATTERN
                }
                _ => continue,
            };
            assert_eq!(
                parameter["schema"]["pattern"], expected,
                "{method} {path}: {parameter}"
            );
        }
    }
}
