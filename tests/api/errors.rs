//! How every answer (or silence) from Qikchat maps to the caller's answer, and that nothing is
//! ever sent twice.

use std::time::Duration;

use serde_json::json;
use wiremock::{
    Mock, ResponseTemplate,
    matchers::{method, path},
};

use crate::helpers::{KEY, problem, spawn_app, spawn_app_with, text_message};

/// Qikchat answers every send with `response`, and must be called exactly once.
async fn qikchat_answers(app: &crate::helpers::TestApp, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(response)
        .expect(1)
        .mount(&app.qikchat)
        .await;
}

#[tokio::test]
async fn a_qikchat_5xx_is_a_502_and_is_not_resent() {
    let app = spawn_app().await;
    qikchat_answers(
        &app,
        ResponseTemplate::new(500).set_body_json(json!({"status": false, "message": "boom"})),
    )
    .await;

    problem(app.send(&text_message()).await, 502, "upstream_error").await;
}

#[tokio::test]
async fn an_html_error_page_from_a_gateway_is_a_502() {
    let app = spawn_app().await;
    qikchat_answers(
        &app,
        ResponseTemplate::new(502)
            .set_body_raw("<html><body>Bad Gateway</body></html>", "text/html"),
    )
    .await;

    let body = problem(app.send(&text_message()).await, 502, "upstream_error").await;
    assert!(
        !body["detail"].as_str().unwrap_or_default().contains("html"),
        "{body}"
    );
}

#[tokio::test]
async fn a_success_status_with_a_non_json_body_is_a_502() {
    let app = spawn_app().await;
    qikchat_answers(
        &app,
        ResponseTemplate::new(200).set_body_raw("OK", "text/plain"),
    )
    .await;

    problem(app.send(&text_message()).await, 502, "upstream_error").await;
}

#[tokio::test]
async fn a_success_answer_without_a_message_id_is_a_502() {
    let app = spawn_app().await;
    for answer in [
        json!({"status": true, "data": []}),
        json!({"status": true, "message": "queued"}),
        json!({"status": true, "data": [{"id": ""}]}),
    ] {
        app.qikchat.reset().await;
        qikchat_answers(&app, ResponseTemplate::new(200).set_body_json(answer)).await;
        problem(app.send(&text_message()).await, 502, "upstream_error").await;
    }
}

#[tokio::test]
async fn status_false_is_a_422_carrying_qikchats_message() {
    let app = spawn_app().await;
    qikchat_answers(
        &app,
        ResponseTemplate::new(200)
            .set_body_json(json!({"status": false, "message": "invalid message payload"})),
    )
    .await;

    let body = problem(app.send(&text_message()).await, 422, "rejected_by_qikchat").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("invalid message payload"),
        "{body}"
    );
}

#[tokio::test]
async fn a_qikchat_4xx_is_a_422_with_its_message_or_error_text() {
    let app = spawn_app().await;
    for (status, answer, expected) in [
        (
            400,
            json!({"status": false, "message": "Template not found"}),
            "Template not found",
        ),
        (
            422,
            json!({"error": "outside the 24 hour window"}),
            "outside the 24 hour window",
        ),
        (400, json!({"nothing": "useful"}), "HTTP 400"),
    ] {
        app.qikchat.reset().await;
        qikchat_answers(&app, ResponseTemplate::new(status).set_body_json(answer)).await;
        let body = problem(app.send(&text_message()).await, 422, "rejected_by_qikchat").await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(expected),
            "{body}"
        );
    }
}

#[tokio::test]
async fn qikchat_echoing_the_key_never_reaches_the_caller() {
    let app = spawn_app().await;
    qikchat_answers(
        &app,
        ResponseTemplate::new(400).set_body_json(
            json!({"status": false, "message": format!("bad key {KEY} for this number")}),
        ),
    )
    .await;

    let body = problem(app.send(&text_message()).await, 422, "rejected_by_qikchat").await;
    // The whole text is replaced: what surrounds the key could be the rest of it.
    assert_eq!(
        body["detail"],
        format!(
            "Qikchat refused the message: {}",
            qikchat_relay::qikchat::WITHHELD
        ),
        "{body}"
    );
}

#[tokio::test]
async fn qikchat_refusing_the_key_is_a_502_without_detail() {
    let app = spawn_app().await;
    for status in [401, 403] {
        app.qikchat.reset().await;
        qikchat_answers(
            &app,
            ResponseTemplate::new(status).set_body_json(json!({"message": "Invalid API key"})),
        )
        .await;
        let body = problem(app.send(&text_message()).await, 502, "upstream_error").await;
        assert!(!body.to_string().contains("Invalid API key"), "{body}");
    }
}

#[tokio::test]
async fn a_qikchat_429_is_a_429_with_its_retry_after() {
    let app = spawn_app().await;
    qikchat_answers(
        &app,
        ResponseTemplate::new(429).insert_header("retry-after", "7"),
    )
    .await;

    let response = app.send(&text_message()).await;

    assert_eq!(response.headers()["retry-after"], "7");
    problem(response, 429, "rate_limited").await;
}

#[tokio::test]
async fn a_qikchat_429_without_retry_after_still_tells_the_caller_when_to_retry() {
    let app = spawn_app().await;
    qikchat_answers(&app, ResponseTemplate::new(429)).await;

    let response = app.send(&text_message()).await;

    assert_eq!(response.headers()["retry-after"], "1");
    problem(response, 429, "rate_limited").await;
}

#[tokio::test]
async fn a_slow_qikchat_is_a_504_and_the_message_is_never_resent() {
    let app = spawn_app_with(&[("RELAY_UPSTREAM_TIMEOUT_MS", "300")]).await;
    qikchat_answers(
        &app,
        ResponseTemplate::new(200)
            .set_body_json(crate::helpers::qikchat_success("late"))
            .set_delay(Duration::from_secs(2)),
    )
    .await;

    let body = problem(app.send(&text_message()).await, 504, "upstream_timeout").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("may or may not"),
        "{body}"
    );
}

#[tokio::test]
async fn an_unreachable_qikchat_is_a_503_with_retry_after() {
    // A port that was just free: connections are refused, so nothing can have been sent.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let app = spawn_app_with(&[
        ("QIKCHAT_BASE_URL", &url),
        ("RELAY_UPSTREAM_TIMEOUT_MS", "500"),
    ])
    .await;

    let response = app.send(&text_message()).await;

    assert!(response.headers().contains_key("retry-after"));
    problem(response, 503, "upstream_unavailable").await;
}

#[tokio::test]
async fn sends_beyond_the_in_flight_limit_are_shed_at_once() {
    let app = spawn_app_with(&[("RELAY_MAX_IN_FLIGHT", "1")]).await;
    crate::helpers::qikchat_accepts_slowly(&app.qikchat, "slow", Duration::from_millis(700), 1)
        .await;

    let message = text_message();
    let first = app.send(&message);
    let second = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.send(&text_message()).await
    };
    let (first, second) = tokio::join!(first, second);

    assert_eq!(first.status(), 200);
    assert!(second.headers().contains_key("retry-after"));
    problem(second, 503, "overloaded").await;
}

#[tokio::test]
async fn a_refused_connection_is_retried_within_the_timeout_because_nothing_was_sent() {
    // Qikchat comes up on this port only after the relay's first attempts were refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let app = spawn_app_with(&[
        ("QIKCHAT_BASE_URL", &url),
        ("RELAY_UPSTREAM_TIMEOUT_MS", "5000"),
    ])
    .await;
    let message = text_message();
    let send = app.send(&message);
    let late_qikchat = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is still free");
        let qikchat = wiremock::MockServer::builder()
            .listener(listener)
            .start()
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(crate::helpers::qikchat_success("retried")),
            )
            .expect(1)
            .mount(&qikchat)
            .await;
        qikchat
    };

    let (response, _qikchat) = tokio::join!(send, late_qikchat);

    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["id"], "retried");
}
