//! Properties at the HTTP edge, with few cases (each is a real request): arbitrary
//! query parameters, path segments and chat targets are answered with a result or a
//! JSON `{error, code}` — never a 5xx. The unit-level properties of the same parsers
//! (phone numbers, JIDs, pages, dates) run next to them in `src/http/properties.rs` and
//! the actors crate.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::Method;
use serde_json::json;

use crate::common::{Auth, TestServer, read};

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        // A failure is reported with its minimal input; nothing is written to disk.
        failure_persistence: None,
        ..Config::default()
    })
}

/// Values of query parameters: arbitrary text, and text close to what is expected.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "-?[0-9]{1,25}",
        "[0-9]{1,5}-[0-9]{1,2}-[0-9]{1,2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[+-][0-9]{2}:?[0-9]{2})?)?",
        "(today|week|month|year|all|png|true|false|connected|message_sent)(,[a-z_]{0,12}){0,3}",
    ]
}

const PARAMS: [&str; 14] = [
    "limit",
    "skip",
    "offset",
    "startDate",
    "endDate",
    "since",
    "types",
    "actions",
    "search",
    "onlyGroups",
    "period",
    "format",
    "ownerId",
    "limit[]",
];

/// Answers `GET path?query` through `block_on`, for proptest's synchronous closures.
fn get(srv: &TestServer, auth: &Auth, path: &str, query: &[(String, String)]) -> (u16, String) {
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async {
            let resp = srv
                .request(Method::GET, path, auth)
                .query(query)
                .send()
                .await
                .expect("request");
            let (status, body) = read(resp).await;
            (status, body.to_string())
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_query_parameters_never_cause_a_5xx() {
    let srv = TestServer::start().await;
    let key = Auth::Key(srv.admin_key.clone());
    let id = srv.connected_instance(&key, "props", "79160000001").await;
    let paths = [
        "/api/users".to_owned(),
        "/api/instances".to_owned(),
        format!("/api/instances/{id}/activity"),
        format!("/api/instances/{id}/events"),
        format!("/api/instances/{id}/chats"),
        format!("/api/instances/{id}/chats/79160000002/messages"),
        format!("/api/instances/{id}/contacts/db"),
        format!("/api/instances/{id}/webhook/deliveries"),
        format!("/api/instances/{id}/qr"),
        "/api/stats/user".to_owned(),
        format!("/api/stats/instances/{id}"),
        "/api/waba/operator/chats".to_owned(),
    ];
    let query =
        proptest::collection::vec((proptest::sample::select(PARAMS.to_vec()), value()), 1..4);
    let case = (proptest::sample::select(paths.to_vec()), query);
    runner(96)
        .run(&case, |(path, query)| {
            let query: Vec<(String, String)> =
                query.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let (status, body) = get(&srv, &key, &path, &query);
            prop_assert!(status < 500, "GET {path} {query:?} → {status} {body}");
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_chat_ids_and_targets_never_cause_a_5xx() {
    let srv = TestServer::start().await;
    let key = Auth::Key(srv.admin_key.clone());
    let id = srv.connected_instance(&key, "props", "79160000003").await;
    let target = prop_oneof![
        any::<String>(),
        "[+]?[0-9 ().-]{0,20}(@(s\\.whatsapp\\.net|c\\.us|g\\.us|lid|x))?",
        "[0-9]{7,15}:[0-9]{1,3}@s\\.whatsapp\\.net",
    ];
    runner(64)
        .run(&target, |target| {
            // As a path segment of the history…
            let segment: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
            let path = format!("/api/instances/{id}/chats/{segment}/messages");
            let (status, body) = get(&srv, &key, &path, &[]);
            prop_assert!(
                matches!(status, 200 | 400 | 404),
                "GET {path} → {status} {body}"
            );
            // …and as the recipient of a send and the sender of an inbound message.
            for (path, body) in [
                (
                    format!("/api/whatsapp/{id}/send"),
                    json!({"phone": target, "message": "property"}),
                ),
                (
                    format!("/api/sandbox/instances/{id}/inbound"),
                    json!({"from": target, "body": "property"}),
                ),
            ] {
                let (status, answer) = tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(srv.call(
                        Method::POST,
                        &path,
                        &key,
                        Some(body),
                    ))
                });
                prop_assert!(
                    matches!(status, 200 | 400),
                    "POST {path} {target:?} → {status} {answer}"
                );
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}
