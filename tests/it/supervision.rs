//! The whole actor tree is supervised: each long-lived actor — the stats counter, the
//! webhook queue, the operator desk and the instance supervisor — killed in turn comes
//! back by itself, and sends, their webhooks and operator sends keep working.

use ractor::ActorCell;
use serde_json::json;
use wagate_actors::runtime::Runtime;

use crate::common::{Backend, eventually};
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
