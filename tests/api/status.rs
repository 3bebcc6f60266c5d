//! `GET /messages/{id}`: Qikchat's status lookup, mapped to a small stable shape, for the
//! message's sender only (or a caller with `read_any_status`, for its account).

use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path, query_param},
};

use crate::helpers::{
    KEY, OTHER_TOKEN, Redis, TOKEN, TempDir, TestApp, problem, qikchat_success, spawn_app,
    spawn_app_with, text_message,
};

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
    app.sent("LJsYjz93FXXXXXX0i1H52N").await;
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
    app.sent("abc").await;
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
        app.sent(id).await;
        qikchat_status_answers(&app, id, response).await;
        problem(app.get(&format!("/messages/{id}")).await, 404, "not_found").await;
    }
}

#[tokio::test]
async fn upstream_failures_map_as_for_sends() {
    let app = spawn_app().await;
    for id in ["x5xx", "xkey", "xrate", "xjunk"] {
        app.sent(id).await;
    }
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

/// Qikchat's status lookup answers `delivered` for `id` with the default key, `calls` times.
async fn qikchat_knows(qikchat: &MockServer, id: &str, calls: u64) {
    Mock::given(method("GET"))
        .and(path("/v1/messages"))
        .and(query_param("msgid", id))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"status": true,
            "message": {"payload": {"id": id, "message": {"status": "delivered"}}}})),
        )
        .expect(calls)
        .mount(qikchat)
        .await;
}

#[tokio::test]
async fn another_caller_of_the_same_account_gets_404_for_a_message_it_did_not_send_and_qikchat_is_not_asked()
 {
    let app = spawn_app().await;
    app.sent("m-billing").await;
    // One lookup: the sender's. The other caller's read never reaches Qikchat.
    qikchat_knows(&app.qikchat, "m-billing", 1).await;

    let other = app.get_as(OTHER_TOKEN, "/messages/m-billing").await;
    let own = app.get("/messages/m-billing").await;

    let refused = problem(other, 404, "not_found").await;
    assert_eq!(own.status(), 200);
    // The same answer as for an id Qikchat does not know: nothing tells the id exists.
    assert_eq!(refused["detail"], "no message with this id");
}

#[tokio::test]
async fn an_id_the_relay_never_sent_is_404_without_asking_qikchat() {
    let app = spawn_app().await;
    qikchat_knows(&app.qikchat, "m-elsewhere", 0).await;

    problem(app.get("/messages/m-elsewhere").await, 404, "not_found").await;
}

#[tokio::test]
async fn a_caller_with_read_any_status_reads_every_message_of_its_account_and_no_other() {
    let dir = TempDir::new();
    let brand2 = MockServer::start().await;
    let key_file = dir.write("brand2-key", "qk_SENTINEL_BRAND2_KEY_feedface\n");
    let file = dir.write(
        "clients.toml",
        &format!(
            r#"
            [accounts.brand2]
            key_file = "{key_file}"
            base_url = "{}"

            [clients.billing]
            token = "{TOKEN}"

            [clients.support]
            token = "{SUPPORT_TOKEN}"
            read_any_status = true

            [clients.marketing]
            token = "{OTHER_TOKEN}"
            account = "brand2"
            "#,
            brand2.uri()
        ),
    );
    let app = spawn_app_with(&[("RELAY_CLIENTS_FILE", &file)]).await;
    app.sent("m-billing").await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(qikchat_success("m-brand2")))
        .expect(1)
        .mount(&brand2)
        .await;
    assert_eq!(
        app.send_as(OTHER_TOKEN, &text_message()).await.status(),
        200
    );
    qikchat_knows(&app.qikchat, "m-billing", 1).await;
    qikchat_knows(&app.qikchat, "m-before-the-relay", 1).await;
    qikchat_knows(&app.qikchat, "m-brand2", 0).await;
    qikchat_knows(&brand2, "m-brand2", 0).await;

    let billings = app.get_as(SUPPORT_TOKEN, "/messages/m-billing").await;
    let unrecorded = app
        .get_as(SUPPORT_TOKEN, "/messages/m-before-the-relay")
        .await;
    let other_account = app.get_as(SUPPORT_TOKEN, "/messages/m-brand2").await;

    assert_eq!(billings.status(), 200);
    // Not recorded (sent before the relay, or past its TTL): asked of the caller's account.
    assert_eq!(unrecorded.status(), 200);
    problem(other_account, 404, "not_found").await;
}

#[tokio::test]
async fn who_sent_a_message_is_kept_in_the_data_dir_for_a_relay_started_on_it_later() {
    let app = spawn_app().await;
    app.sent("m-kept").await;
    qikchat_knows(&app.qikchat, "m-kept", 1).await;
    let data = app.data.0.to_str().expect("UTF-8").to_owned();

    let later = app.sibling(&[("RELAY_DATA_DIR", &data)]).await;
    let own = get_as(&app, &later.url("/messages/m-kept"), TOKEN).await;
    let other = get_as(&app, &later.url("/messages/m-kept"), OTHER_TOKEN).await;

    assert_eq!(own.status(), 200);
    problem(other, 404, "not_found").await;
}

#[tokio::test]
async fn two_relays_on_one_redis_share_who_sent_each_message() {
    let redis = Redis::start().await;
    let app = spawn_app_with(&[("RELAY_REDIS_URL", &redis.url)]).await;
    let replica = app.sibling(&[("RELAY_REDIS_URL", &redis.url)]).await;
    app.sent("m-shared").await;
    qikchat_knows(&app.qikchat, "m-shared", 1).await;

    let own = get_as(&app, &replica.url("/messages/m-shared"), TOKEN).await;
    let other = get_as(&app, &replica.url("/messages/m-shared"), OTHER_TOKEN).await;

    assert_eq!(own.status(), 200);
    problem(other, 404, "not_found").await;
}

#[tokio::test]
async fn the_sender_of_a_sandbox_id_is_recorded_too() {
    let app = spawn_app_with(&[("RELAY_SANDBOX", "true")]).await;
    app.qikchat_expects_no_call().await;
    let sent: Value = app.send(&text_message()).await.json().await.expect("json");
    let id = sent["id"].as_str().expect("an id");

    let other = app.get_as(OTHER_TOKEN, &format!("/messages/{id}")).await;

    problem(other, 404, "not_found").await;
}

const SUPPORT_TOKEN: &str = "tok_SENTINEL_support_0123456789";

async fn get_as(app: &TestApp, url: &str, token: &str) -> reqwest::Response {
    app.http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("the relay answers")
}
