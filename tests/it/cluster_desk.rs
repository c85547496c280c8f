//! The WABA operator desk in a cluster: one node at a time serves it (the holder of the
//! desk's lease), whichever node a call or Meta's webhook reaches, and another takes it
//! over when that node dies.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::cluster::{Cluster, Leases, Node};
use crate::common::{Auth, eventually};
use crate::waba::{
    APP_SECRET, CUSTOMER, FakeGraph, PHONE_NUMBER_ID, TOKEN, VERIFY_TOKEN, inbound, now_secs, sign,
};

/// The node serving the desk, as `via` lists the nodes; None while nobody does.
async fn desk_node(via: &Node, auth: &Auth) -> Option<String> {
    let (status, body) = via
        .call(Method::GET, "/api/cluster/nodes", auth, None)
        .await;
    assert_eq!(status, 200, "nodes: {body}");
    let nodes = body["nodes"].as_array().expect("nodes");
    let serving: Vec<&str> = nodes
        .iter()
        .filter(|n| n["desk"] == true)
        .filter_map(|n| n["nodeId"].as_str())
        .collect();
    assert!(serving.len() <= 1, "one desk at most: {body}");
    serving.first().map(|n| (*n).to_owned())
}

/// Posts Meta's signed notification to `node`.
async fn meta_posts(node: &Node, body: &Value) -> (u16, Value) {
    let raw = serde_json::to_vec(body).expect("json");
    let answer = node
        .server
        .client
        .post(format!("{}/api/waba/webhook", node.server.base))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign(APP_SECRET, &raw))
        .body(raw)
        .send()
        .await
        .expect("webhook");
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Reads the operator feed until a `message` event with `text` arrives.
async fn feed_until(stream: &mut reqwest::Response, text: &str) -> Value {
    let mut buffer = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let found = buffer
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .find(|e| e["type"] == "message" && e.to_string().contains(text));
            if let Some(found) = found {
                return found;
            }
            let chunk = stream.chunk().await.expect("chunk").expect("feed open");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the message on the feed in time")
}

#[tokio::test]
async fn one_node_serves_the_desk_and_another_takes_it_over() {
    let graph = FakeGraph::start().await;
    let graph_url = graph.url();
    let mut cluster = Cluster::start_with(
        2,
        Leases::Short,
        &[
            ("WABA_GRAPH_BASE_URL", graph_url.as_str()),
            ("WABA_API_VERSION", "v21.0"),
        ],
    )
    .await;
    let admin = cluster.node("n1").server.admin().await;
    let desk = eventually(20, "a node serving the desk", || async {
        desk_node(cluster.node("n1"), &admin).await
    })
    .await;
    let other = if desk == "n1" { "n2" } else { "n1" };

    // The owner signs up and configures the desk through the node that does not serve it.
    let (status, body) = cluster
        .node(other)
        .call(
            Method::POST,
            "/api/users",
            &admin,
            Some(
                json!({"email": "owner@example.com", "password": "password1",
                        "firstName": "Desk", "lastName": "Owner", "role": "user"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "user: {body}");
    let (status, login) = cluster
        .node(other)
        .call(
            Method::POST,
            "/api/auth/login",
            &Auth::None,
            Some(json!({"email": "owner@example.com", "password": "password1"})),
        )
        .await;
    assert_eq!(status, 200, "login: {login}");
    let owner = Auth::Bearer(login["token"].as_str().expect("token").to_owned());
    let (status, body) = cluster
        .node(other)
        .call(
            Method::PUT,
            "/api/waba/settings",
            &owner,
            Some(
                json!({"accessToken": TOKEN, "phoneNumberId": PHONE_NUMBER_ID,
                        "businessAccountId": "WABA_ID", "appSecret": APP_SECRET,
                        "verifyToken": VERIFY_TOKEN}),
            ),
        )
        .await;
    assert_eq!(status, 200, "settings: {body}");

    // The operator's live feed is opened on one node, Meta's webhook reaches the other:
    // the desk node handles both, so the feed carries the message.
    let Auth::Bearer(token) = &owner else {
        unreachable!("a bearer token")
    };
    let mut feed = cluster
        .node(&desk)
        .server
        .client
        .get(format!(
            "{}/api/waba/operator/events",
            cluster.node(&desk).server.base
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("feed");
    assert_eq!(feed.status(), 200);
    let (status, body) = meta_posts(
        cluster.node(other),
        &inbound(
            "wamid.ONE",
            CUSTOMER,
            "first, via the other node",
            now_secs(),
        ),
    )
    .await;
    assert_eq!(status, 200, "webhook: {body}");
    feed_until(&mut feed, "first, via the other node").await;

    // An operator's reply through the other node reaches Meta once.
    let (status, chats) = cluster
        .node(other)
        .call(Method::GET, "/api/waba/operator/chats", &owner, None)
        .await;
    assert_eq!(status, 200, "chats: {chats}");
    let chat = chats["chats"][0]["id"].as_i64().expect("a chat");
    let (status, sent) = cluster
        .node(other)
        .call(
            Method::POST,
            "/api/waba/operator/send",
            &owner,
            Some(json!({"chatId": chat, "message": "on it"})),
        )
        .await;
    assert_eq!(status, 200, "send: {sent}");
    assert_eq!(
        graph.message_bodies().len(),
        1,
        "{:?}",
        graph.message_bodies()
    );

    // The desk node dies: the other takes the desk over and serves it.
    cluster.take(&desk).server.kill_hard().await;
    let survivor = cluster.node(other);
    eventually(30, "the survivor serving the desk", || async {
        (desk_node(survivor, &admin).await.as_deref() == Some(other)).then_some(())
    })
    .await;
    // The lease is in the database a moment before the survivor records it as its own;
    // meanwhile it answers 503 `desk_moving`, and Meta retries as a client would.
    let second = inbound("wamid.TWO", CUSTOMER, "second, after the move", now_secs());
    let (status, body) = eventually(30, "the survivor taking the desk's calls", || async {
        let (status, body) = meta_posts(survivor, &second).await;
        (body["code"] != "desk_moving").then_some((status, body))
    })
    .await;
    assert_eq!(status, 200, "webhook after the move: {body}");
    let (status, messages) = survivor
        .call(
            Method::GET,
            &format!("/api/waba/operator/chat/{chat}/messages"),
            &owner,
            None,
        )
        .await;
    assert_eq!(status, 200, "messages: {messages}");
    let texts = messages.to_string();
    for text in [
        "first, via the other node",
        "on it",
        "second, after the move",
    ] {
        assert!(texts.contains(text), "{text} in {messages}");
    }
}
