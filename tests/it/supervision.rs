//! The whole actor tree is supervised: each long-lived actor — the stats counter, the
//! webhook queue, the operator desk and the instance supervisor — killed in turn comes
//! back by itself, and sends, their webhooks and operator sends keep working.

use ractor::ActorCell;
use serde_json::json;
use wagate_actors::runtime::Runtime;

use crate::common::{Backend, TestServer, eventually};
use crate::receiver::Receiver;
use crate::waba::{customer_writes, desk_on, now_secs};

/// The actor of each kind running now.
fn actor(runtime: &Runtime, kind: &str) -> Option<ActorCell> {
    match kind {
        "stats counter" => runtime.stats.cell(),
        "webhook queue" => runtime.webhooks.cell(),
        "operator desk" => runtime.desk.as_ref().and_then(|d| d.cell()),
        "instance supervisor" => runtime.instances.supervisor_cell(),
        _ => None,
    }
}

#[tokio::test]
async fn each_long_lived_actor_killed_comes_back_and_everything_still_works() {
    let d = desk_on(Backend::Sqlite).await;
    let server = &d.server;
    let admin = server.admin();
    let receiver = Receiver::start().await;
    let id = server
        .connected_instance(&admin, "supervised", "79001112233")
        .await;
    // A webhook, and limits so that every send asks the stats counter.
    let (code, body) = server
        .put(
            &format!("/api/instances/{id}"),
            &admin,
            json!({"webhookUrl": receiver.url(), "webhookEnabled": true,
                   "limits": {"maxMessagesSent": 1000, "period": "day"}}),
        )
        .await;
    assert_eq!(code, 200, "settings: {body}");
    let chat = customer_writes(&d, "wamid.SUP0", now_secs()).await;
    let runtime = server.runtime();

    for (round, kind) in [
        "stats counter",
        "webhook queue",
        "operator desk",
        "instance supervisor",
    ]
    .into_iter()
    .enumerate()
    {
        let old = actor(&runtime, kind).unwrap_or_else(|| panic!("a running {kind}"));
        old.kill();
        eventually(20, &format!("a new {kind}"), || async {
            actor(&runtime, kind)
                .filter(|cell| cell.get_id() != old.get_id())
                .map(|_| ())
        })
        .await;
        server.wait_status(&admin, &id, "connected").await;

        // A send within limits, and its webhook.
        let text = format!("after the {kind} died");
        let sent = eventually(20, &format!("a send after the {kind} died"), || async {
            let (code, body) = server
                .post(
                    &format!("/api/whatsapp/{id}/send"),
                    &admin,
                    json!({"phone": "79005556677", "message": text}),
                )
                .await;
            // 503 while a part restarts is the documented answer; anything else fails.
            assert!(code == 200 || code == 503, "send: {code} {body}");
            (code == 200).then_some(body)
        })
        .await;
        let message_id = sent["id"].as_str().expect("the sent message id").to_owned();
        receiver
            .wait_for(
                &format!("the webhook of the send after the {kind}"),
                20,
                |got| {
                    got.iter().any(|r| {
                        let j = r.json();
                        j["event"] == "message_sent"
                            && j["data"]["messageId"] == message_id.as_str()
                    })
                },
            )
            .await;

        // An operator send through the desk.
        let (code, body) = server
            .post(
                "/api/waba/operator/send",
                &d.owner,
                json!({"chatId": chat, "message": format!("operator reply {round}")}),
            )
            .await;
        assert_eq!(code, 200, "operator send after the {kind} died: {body}");
    }
}

/// `/status` comes from where sends are decided: right after a fault stopped a session
/// (a crash the supervisor restarts, a dropped connection the engine re-establishes, an
/// unlinked phone), the status never says `connected` for a session that would refuse
/// a send. Whenever a status read says connected and nothing has faulted since, the
/// next send goes out.
#[tokio::test]
async fn status_never_says_connected_while_a_send_would_be_refused() {
    let srv = TestServer::start().await;
    let auth = srv.admin();
    let id = srv.connected_instance(&auth, "probe", "79001112299").await;
    let send = || async {
        srv.post(
            &format!("/api/whatsapp/{id}/send"),
            &auth,
            json!({"phone": "79005556677", "message": "probe"}),
        )
        .await
    };
    let mut refused_after_a_fault = 0;
    for round in 0..6 {
        let kind = ["crash", "disconnect", "logout"][round % 3];
        srv.wait_status(&auth, &id, "connected").await;
        let (code, body) = send().await;
        assert_eq!(code, 200, "connected, so the send goes out: {body}");
        let (code, body) = srv
            .post(
                &format!("/api/sandbox/instances/{id}/fault"),
                &auth,
                json!({"kind": kind}),
            )
            .await;
        assert_eq!(code, 200, "{kind}: {body}");
        // The probe reads the status, then sends.
        let (code, status) = srv.get(&format!("/api/instances/{id}/status"), &auth).await;
        assert_eq!(code, 200, "{status}");
        let (code, short) = srv.get(&format!("/api/whatsapp/{id}/status"), &auth).await;
        assert_eq!(code, 200, "{short}");
        let (code, body) = send().await;
        let said_connected = status["status"] == "connected" || status["ready"] == true;
        if said_connected {
            assert_eq!(
                code, 200,
                "after a {kind}, /status said {status} but the send was refused: {body}"
            );
        } else {
            assert_eq!(status["ready"], false, "{status}");
            refused_after_a_fault += usize::from(code != 200);
            assert!(
                code == 200 || code == 409 || code == 503,
                "after a {kind}: {code} {body}"
            );
        }
        if kind == "logout" {
            assert!(
                status["status"] == "disconnected" || status["status"] == "logged_out",
                "{status}"
            );
            srv.wait_status(&auth, &id, "logged_out").await;
            let qr = srv.wait_qr(&auth, &id).await;
            assert!(!qr.is_empty());
            let (code, body) = srv
                .post(
                    &format!("/api/sandbox/instances/{id}/scan"),
                    &auth,
                    json!({"phone": "79001112299"}),
                )
                .await;
            assert_eq!(code, 200, "scan: {body}");
        }
    }
    assert!(refused_after_a_fault > 0, "the faults did stop the session");
}
