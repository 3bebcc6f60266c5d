//! `GET /messages/{id}`: Qikchat's status lookup, mapped to a small stable shape.

use serde_json::{Value, json};
use wiremock::{
    Mock, ResponseTemplate,
    matchers::{header, method, path, query_param},
};

use crate::helpers::{KEY, TestApp, problem, spawn_app, spawn_app_with};

async fn qikchat_status_answers(app: &TestApp, id: &str, response: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path("/v1/messages"))
        .and(query_param("msgid", id))
        .and(header("QIKCHAT-API-KEY", KEY))
        .respond_with(response)
        .expect(1)
        .mount(&app.qikchat)
        .await;
}

#[tokio::test]
async fn a_known_message_reports_its_status_and_timestamps() {
    let app = spawn_app().await;
    let answer = json!({
        "status": true,
        "message": {
            "event": "whatsapp:message:dlr",
            "payload": {
                "id": "LJsYjz93FXXXXXX0i1H52N",
                "name": "whatsapp",
                "contacts": [{"profile": {"name": "unknown user"}, "to": "+918080808080"}],
                "message": {
                    "type": "template", "status": "read",
                    "sentAt": "2024-07-02T08:59:21.000Z", "deliveredAt": "2024-07-02T08:59:22.000Z",
                    "readAt": "2024-07-02T09:03:52.000Z", "processedAt": "2024-07-02T08:59:19.631Z",
                    "lastUpdatedAt": "2024-07-02T09:03:53.423Z"
                }
            }
        }
    });
    qikchat_status_answers(
        &app,
        "LJsYjz93FXXXXXX0i1H52N",
        ResponseTemplate::new(200).set_body_json(answer),
    )
    .await;

    let response = app.get("/messages/LJsYjz93FXXXXXX0i1H52N").await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        json!({
            "id": "LJsYjz93FXXXXXX0i1H52N", "status": "read", "type": "template",
            "sent_at": "2024-07-02T08:59:21.000Z", "delivered_at": "2024-07-02T08:59:22.000Z",
            "read_at": "2024-07-02T09:03:52.000Z", "updated_at": "2024-07-02T09:03:53.423Z"
        })
    );
}

#[tokio::test]
async fn absent_timestamps_are_absent_fields() {
    let app = spawn_app().await;
    let answer = json!({"status": true, "message": {"payload": {"id": "abc", "message": {"status": "queued"}}}});
    qikchat_status_answers(
        &app,
        "abc",
        ResponseTemplate::new(200).set_body_json(answer),
    )
    .await;

    let body: Value = app.get("/messages/abc").await.json().await.expect("json");

    assert_eq!(body, json!({"id": "abc", "status": "queued"}));
}

#[tokio::test]
async fn an_id_qikchat_does_not_know_is_a_404() {
    let app = spawn_app().await;
    for (id, response) in [
        (
            "unknown1",
            ResponseTemplate::new(400).set_body_json(json!({"error": "Invalid request"})),
        ),
        ("unknown2", ResponseTemplate::new(404)),
        (
            "unknown3",
            ResponseTemplate::new(200)
                .set_body_json(json!({"status": false, "message": "not found"})),
        ),
    ] {
        qikchat_status_answers(&app, id, response).await;
        problem(app.get(&format!("/messages/{id}")).await, 404, "not_found").await;
    }
}

#[tokio::test]
async fn upstream_failures_map_as_for_sends() {
    let app = spawn_app().await;
    qikchat_status_answers(&app, "x5xx", ResponseTemplate::new(503)).await;
    qikchat_status_answers(&app, "xkey", ResponseTemplate::new(401)).await;
    qikchat_status_answers(
        &app,
        "xrate",
        ResponseTemplate::new(429).insert_header("retry-after", "3"),
    )
    .await;
    qikchat_status_answers(
        &app,
        "xjunk",
        ResponseTemplate::new(200).set_body_raw("<html>", "text/html"),
    )
    .await;

    problem(app.get("/messages/x5xx").await, 502, "upstream_error").await;
    problem(app.get("/messages/xkey").await, 502, "upstream_error").await;
    let limited = app.get("/messages/xrate").await;
    assert_eq!(limited.headers()["retry-after"], "3");
    problem(limited, 429, "rate_limited").await;
    problem(app.get("/messages/xjunk").await, 502, "upstream_error").await;
}

#[tokio::test]
async fn a_malformed_id_is_refused_without_asking_qikchat() {
    let app = spawn_app().await;
    app.qikchat_expects_no_call().await;

    for id in ["a%20b", "a'b", &"x".repeat(129)] {
        let body = problem(
            app.get(&format!("/messages/{id}")).await,
            422,
            "invalid_request",
        )
        .await;
        assert_eq!(body["errors"][0]["field"], "id");
    }
}

#[tokio::test]
async fn the_sandbox_knows_its_own_ids_and_nothing_else() {
    let app = spawn_app_with(&[("RELAY_SANDBOX", "true")]).await;
    app.qikchat_expects_no_call().await;

    let sent: Value = app
        .send(&crate::helpers::text_message())
        .await
        .json()
        .await
        .expect("json");
    let id = sent["id"].as_str().expect("an id");
    let status: Value = app
        .get(&format!("/messages/{id}"))
        .await
        .json()
        .await
        .expect("json");

    assert_eq!(status, json!({"id": id, "status": "queued"}));
    problem(
        app.get("/messages/52JH6WmuSruAVyXvBBYemd0Ia").await,
        404,
        "not_found",
    )
    .await;
}
