//! Caller authentication: bearer tokens from RELAY_CLIENTS, or anonymous mode.

use serde_json::Value;

use crate::helpers::{TOKEN, problem, spawn_app, spawn_app_with, text_message};

#[tokio::test]
async fn send_without_a_token_is_401_with_a_bearer_challenge_and_sends_nothing() {
    let app = spawn_app().await;
    app.qikchat_expects_no_call().await;

    let response = app
        .http
        .post(app.url("/send"))
        .json(&text_message())
        .send()
        .await
        .expect("answer");

    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    problem(response, 401, "unauthorized").await;
}

#[tokio::test]
async fn send_with_an_unknown_or_malformed_token_is_401() {
    let app = spawn_app().await;
    app.qikchat_expects_no_call().await;

    for authorization in [
        "Bearer not-a-known-token-at-all",
        &format!("Basic {TOKEN}"),
        TOKEN,
        "Bearer",
    ] {
        let response = app
            .http
            .post(app.url("/send"))
            .header("authorization", authorization)
            .json(&text_message())
            .send()
            .await
            .expect("answer");
        let body = problem(response, 401, "unauthorized").await;
        assert!(
            !body.to_string().contains(TOKEN),
            "the token is echoed: {body}"
        );
    }
}

#[tokio::test]
async fn each_configured_caller_can_send_with_its_own_token() {
    let app = spawn_app().await;
    app.qikchat_accepts("id-1", 2).await;

    for token in [TOKEN, crate::helpers::OTHER_TOKEN] {
        let response = app.send_as(token, &text_message()).await;
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test]
async fn status_lookup_needs_a_token_too() {
    let app = spawn_app().await;
    app.qikchat_expects_no_call().await;

    let response = app
        .http
        .get(app.url("/messages/abc123"))
        .send()
        .await
        .expect("answer");

    problem(response, 401, "unauthorized").await;
}

#[tokio::test]
async fn anonymous_mode_accepts_requests_without_a_token() {
    let app = spawn_app_with(&[("RELAY_ALLOW_ANONYMOUS", "true"), ("RELAY_CLIENTS", "")]).await;
    app.qikchat_accepts("id-anon", 1).await;

    let response = app
        .http
        .post(app.url("/send"))
        .json(&text_message())
        .send()
        .await
        .expect("answer");

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["id"], "id-anon");
}

#[tokio::test]
async fn health_metrics_and_docs_need_no_token() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs/"] {
        let response = app.http.get(app.url(path)).send().await.expect("answer");
        assert_eq!(response.status(), 200, "{path}");
    }
}
