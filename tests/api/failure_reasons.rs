//! The caller's `reference` and Qikchat's failure reasons: a reference given with `POST /send`
//! comes back in `GET /messages/{id}` and in every status webhook of the message, and why a
//! message failed (whatever shape Qikchat's status gives it) comes back as `error: {code,
//! detail}`, never with the key. On the embedded store and on Redis.

use serde_json::{Value, json};
use wiremock::{
    Mock, ResponseTemplate,
    matchers::{method, path, query_param},
};

use crate::helpers::{
    KEY, RECIPIENT, Redis, TOKEN, TempDir, TestApp, named_fields, problem, qikchat_success,
    spawn_app,
};
use crate::webhooks::{post_event, received, relay, subscriber_accepts, verified};

const STATUSES: &str = "/billing/statuses";

fn text_with(reference: Value) -> Value {
    json!({"to": RECIPIENT, "type": "text", "text": "Your OTP is 4711", "reference": reference})
}

/// Qikchat accepts the next send as `id`; the caller sends it with `reference`.
async fn send_with_reference(app: &TestApp, id: &str, reference: &str) {
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(qikchat_success(id)))
        .up_to_n_times(1)
        .expect(1)
        .mount(&app.qikchat)
        .await;
    let answer = app.send(&text_with(reference.into())).await;
    assert_eq!(answer.status(), 200, "the send of {id}");
    let sent: Value = answer.json().await.expect("json");
    assert_eq!(sent["id"], id);
}

/// A status event of `id` as Qikchat posts it, `extra` merged into `payload.message`.
fn status_with(id: &str, status: &str, extra: Value) -> Value {
    let mut message = json!({"type": "text", "status": status});
    if let (Some(message), Some(extra)) = (message.as_object_mut(), extra.as_object()) {
        message.extend(extra.clone());
    }
    json!({"event": "whatsapp:message:status", "payload": {"id": id, "message": message}})
}

#[tokio::test]
async fn a_bad_reference_is_refused_naming_it_and_nothing_is_sent() {
    let app = spawn_app().await;
    for (case, reference) in [
        ("empty", json!("")),
        ("only spaces", json!("   ")),
        ("129 characters", json!("r".repeat(129))),
        ("a control character", json!("line\nbreak")),
        ("a tab", json!("a\tb")),
        ("an invisible character", json!("zero\u{200b}width")),
        ("not ASCII", json!("rechnung-\u{e4}")),
        ("not a string", json!(42)),
    ] {
        let answer = app.send(&text_with(reference)).await;
        let body = problem(answer, 422, "invalid_request").await;
        assert_eq!(named_fields(&body), ["reference"], "{case}: {body}");
    }
    assert!(app.qikchat_bodies().await.is_empty(), "nothing sent");
    // null counts as absent, as generated clients send it; it gets as far as Qikchat.
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(qikchat_success("m-null")))
        .expect(1)
        .mount(&app.qikchat)
        .await;
    assert_eq!(app.send(&text_with(Value::Null)).await.status(), 200);
    let bodies = app.qikchat_bodies().await;
    assert!(
        bodies.iter().all(|b| b.get("reference").is_none()),
        "never sent to Qikchat: {bodies:?}"
    );
}

async fn a_reference_and_the_reasons_reach_the_status_read_and_the_subscriber(
    extra: &[(&str, &str)],
) {
    let dir = TempDir::new();
    let subscriber = wiremock::MockServer::start().await;
    subscriber_accepts(&subscriber, STATUSES).await;
    let app = relay(&dir, &subscriber, extra).await;

    send_with_reference(&app, "m-ref", "invoice-2026-0042").await;
    let bodies = app.qikchat_bodies().await;
    assert!(
        bodies.iter().all(|b| b.get("reference").is_none()),
        "{bodies:?}"
    );
    // Before any webhook the relay's own record names it (Qikchat's lookup answers the rest).
    Mock::given(method("GET"))
        .and(path("/v1/messages"))
        .and(query_param("msgid", "m-ref"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"status": true,
            "message": {"event": "whatsapp:message:dlr", "payload": {"id": "m-ref",
                "message": {"type": "text", "status": "queued"}}}})),
        )
        .mount(&app.qikchat)
        .await;
    let read: Value = app.get("/messages/m-ref").await.json().await.expect("json");
    assert_eq!(
        (&read["status"], &read["reference"]),
        (&json!("queued"), &json!("invoice-2026-0042"))
    );
    assert!(read.get("error").is_none(), "{read}");

    // One status for each shape of reason, and one without any.
    let events = [
        (
            "m-ref",
            status_with("m-ref", "sent", json!({})),
            None,
            Some("invoice-2026-0042"),
        ),
        (
            "m-errors",
            status_with(
                "m-errors",
                "failed",
                json!({"errors": [{"code": 131047, "title": "Re-engagement message"}]}),
            ),
            Some(("131047", "Re-engagement message")),
            Some("r-errors"),
        ),
        (
            "m-error",
            status_with(
                "m-error",
                "failed",
                json!({"error": {"code": "470", "message": "Message failed to send because more than 24 hours have passed"}}),
            ),
            Some((
                "470",
                "Message failed to send because more than 24 hours have passed",
            )),
            Some("r-error"),
        ),
        (
            "m-reason",
            json!({"event": "whatsapp:message:status", "payload": {"id": "m-reason",
                "reason": "Number is not on WhatsApp", "message": {"status": "failed"}}}),
            Some(("unknown", "Number is not on WhatsApp")),
            None,
        ),
    ];
    for (id, _, _, reference) in &events[1..] {
        match reference {
            Some(reference) => send_with_reference(&app, id, reference).await,
            None => app.sent(id).await,
        }
    }
    for (_, event, _, _) in &events {
        assert_eq!(
            post_event(&app.http, &app.url(""), event).await.status(),
            200
        );
    }
    let deliveries = received(&subscriber, STATUSES, events.len()).await;
    let bodies: Vec<Value> = deliveries.iter().map(verified).collect();
    for (id, _, reason, reference) in &events {
        let body = bodies
            .iter()
            .find(|b| b["data"]["id"] == *id)
            .unwrap_or_else(|| panic!("{id} delivered: {bodies:?}"));
        let read: Value = app
            .get(&format!("/messages/{id}"))
            .await
            .json()
            .await
            .expect("json");
        for (what, got) in [("webhook", &body["data"]), ("status read", &read)] {
            assert_eq!(
                got.get("reference").and_then(Value::as_str),
                *reference,
                "{id}: the {what}'s reference in {got}"
            );
            let error = got
                .get("error")
                .map(|e| (e["code"].as_str(), e["detail"].as_str()));
            assert_eq!(
                error,
                reason.map(|(code, detail)| (Some(code), Some(detail))),
                "{id}: the {what}'s error in {got}"
            );
            assert!(
                !got.as_object()
                    .is_some_and(|o| o.values().any(Value::is_null)),
                "{id}: the {what} has no null in {got}"
            );
        }
    }
}

#[tokio::test]
async fn a_reference_and_the_reasons_reach_the_status_read_and_the_subscriber_on_disk() {
    a_reference_and_the_reasons_reach_the_status_read_and_the_subscriber(&[]).await;
}

#[tokio::test]
async fn a_reference_and_the_reasons_reach_the_status_read_and_the_subscriber_in_redis() {
    let redis = Redis::start().await;
    a_reference_and_the_reasons_reach_the_status_read_and_the_subscriber(&[(
        "RELAY_REDIS_URL",
        &redis.url,
    )])
    .await;
}

#[tokio::test]
async fn a_reason_that_repeats_the_key_is_withheld_from_the_subscriber_and_the_status_read() {
    let dir = TempDir::new();
    let subscriber = wiremock::MockServer::start().await;
    subscriber_accepts(&subscriber, STATUSES).await;
    let app = relay(&dir, &subscriber, &[]).await;
    send_with_reference(&app, "m-key", "r-key").await;
    let spaced: Vec<String> = KEY.to_uppercase().chars().map(String::from).collect();
    let event = status_with(
        "m-key",
        "failed",
        json!({"errors": [{"code": 131000, "title": format!("invalid key {}", spaced.join(" ")),
            "details": format!("the key {KEY} was refused")}]}),
    );
    assert_eq!(
        post_event(&app.http, &app.url(""), &event).await.status(),
        200
    );
    let deliveries = received(&subscriber, STATUSES, 1).await;
    let body = verified(&deliveries[0]);
    let read = app.get("/messages/m-key").await.text().await.expect("text");
    let withheld = qikchat_relay::qikchat::WITHHELD;
    assert_eq!(body["data"]["error"]["code"], "131000");
    assert_eq!(body["data"]["error"]["detail"], withheld);
    let read: Value = serde_json::from_str(&read).expect("json");
    assert_eq!(read["error"]["detail"], withheld);
    for text in [body.to_string(), read.to_string()] {
        assert!(!text.contains(KEY), "the key leaked: {text}");
        assert!(!text.contains(&KEY[..8]), "part of the key leaked: {text}");
    }
}

#[tokio::test]
async fn qikchats_lookup_of_a_failed_message_carries_its_reason_without_the_key() {
    let app = spawn_app().await;
    send_with_reference(&app, "m-lookup", "order-7").await;
    Mock::given(method("GET"))
        .and(path("/v1/messages"))
        .and(query_param("msgid", "m-lookup"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"status": true,
            "message": {"event": "whatsapp:message:dlr", "payload": {"id": "m-lookup",
                "message": {"type": "template", "status": "failed",
                    "error": {"code": 132001, "message": "Template name does not exist"}}}}})),
        )
        .expect(1)
        .mount(&app.qikchat)
        .await;
    let read: Value = app
        .get("/messages/m-lookup")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read["status"], "failed");
    assert_eq!(read["reference"], "order-7");
    assert_eq!(
        read["error"],
        json!({"code": "132001", "detail": "Template name does not exist"})
    );

    // The same lookup when Qikchat's reason repeats the key: withheld.
    app.sent("m-leak").await;
    Mock::given(method("GET"))
        .and(path("/v1/messages"))
        .and(query_param("msgid", "m-leak"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"status": true,
            "message": {"payload": {"id": "m-leak", "reason": format!("bad key {KEY}"),
                "message": {"type": "text", "status": "failed"}}}})),
        )
        .mount(&app.qikchat)
        .await;
    let read = app
        .get("/messages/m-leak")
        .await
        .text()
        .await
        .expect("text");
    assert!(!read.contains(&KEY[..8]), "the key leaked: {read}");
    let read: Value = serde_json::from_str(&read).expect("json");
    assert_eq!(
        read["error"],
        json!({"code": "unknown", "detail": qikchat_relay::qikchat::WITHHELD})
    );
    assert!(read.get("reference").is_none(), "sent without one: {read}");
}

#[tokio::test]
async fn the_same_idempotency_key_with_another_reference_is_another_request() {
    let app = spawn_app().await;
    app.qikchat_accepts("m-idem", 1).await;
    let send = |reference: &'static str| {
        let app = &app;
        async move {
            app.http
                .post(app.url("/send"))
                .bearer_auth(TOKEN)
                .header("idempotency-key", "order-7-otp")
                .json(&text_with(reference.into()))
                .send()
                .await
                .expect("the relay answers")
        }
    };
    assert_eq!(send("order-7").await.status(), 200);
    let replayed = send("order-7").await;
    assert_eq!(replayed.status(), 200);
    assert_eq!(
        replayed
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    problem(send("order-8").await, 422, "idempotency_key_reused").await;
}
