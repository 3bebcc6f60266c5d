//! `Idempotency-Key`: a retry never sends a message twice, on one relay and on several sharing
//! Redis.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use wiremock::{
    Mock, ResponseTemplate,
    matchers::{method, path},
};

use crate::helpers::{
    OTHER_TOKEN, RECIPIENT, Redis, TOKEN, TestApp, problem, qikchat_accepts_slowly, spawn_app,
    spawn_app_with, text_message,
};

async fn send_with_key(
    app: &TestApp,
    url: &str,
    token: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    app.http
        .post(url)
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("the relay answers")
}

#[tokio::test]
async fn a_retry_with_the_same_key_gets_the_stored_answer_and_sends_nothing() {
    let app = spawn_app().await;
    app.qikchat_accepts("first-id", 1).await;
    let url = app.url("/send");

    let first = send_with_key(&app, &url, TOKEN, "order-1", &text_message()).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_id = first.headers()["x-request-id"].clone();
    let first_body: Value = first.json().await.expect("json");
    // The same request, as the caller may well write it the second time.
    let retry_body = json!({"to": "+91 80808 08080", "type": "text", "text": "Your OTP is 4711"});
    let retry = send_with_key(&app, &url, TOKEN, "order-1", &retry_body).await;

    assert_eq!(retry.status(), 200);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_ne!(
        retry.headers()["x-request-id"],
        first_id,
        "the header is the new request's"
    );
    let retry_body: Value = retry.json().await.expect("json");
    assert_eq!(retry_body, first_body);
    assert_eq!(retry_body["id"], "first-id");
}

#[tokio::test]
async fn the_same_key_for_a_different_request_is_refused() {
    let app = spawn_app().await;
    app.qikchat_accepts("first-id", 1).await;
    let url = app.url("/send");
    send_with_key(&app, &url, TOKEN, "order-2", &text_message()).await;

    let other = json!({"to": RECIPIENT, "type": "text", "text": "A different text"});
    let response = send_with_key(&app, &url, TOKEN, "order-2", &other).await;

    problem(response, 422, "idempotency_key_reused").await;
}

#[tokio::test]
async fn keys_are_scoped_to_the_caller() {
    let app = spawn_app().await;
    app.qikchat_accepts("an-id", 2).await;
    let url = app.url("/send");

    let billing = send_with_key(&app, &url, TOKEN, "shared-key", &text_message()).await;
    let alerts = send_with_key(&app, &url, OTHER_TOKEN, "shared-key", &text_message()).await;

    assert_eq!(billing.status(), 200);
    assert_eq!(alerts.status(), 200);
    assert!(alerts.headers().get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn five_concurrent_duplicates_call_qikchat_once() {
    let app = spawn_app().await;
    qikchat_accepts_slowly(&app.qikchat, "once", Duration::from_millis(600), 1).await;
    let url = app.url("/send");
    let body = text_message();

    let answers = join_all((0..5).map(|_| send_with_key(&app, &url, TOKEN, "burst", &body))).await;

    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        4,
        "{statuses:?}"
    );
    for answer in answers.into_iter().filter(|r| r.status() == 409) {
        assert!(answer.headers().contains_key("retry-after"));
        problem(answer, 409, "idempotency_key_in_flight").await;
    }
}

#[tokio::test]
async fn a_timed_out_send_is_never_resent_under_its_key() {
    let app = spawn_app_with(&[("RELAY_UPSTREAM_TIMEOUT_MS", "300")]).await;
    qikchat_accepts_slowly(&app.qikchat, "once", Duration::from_secs(2), 1).await;
    let url = app.url("/send");

    let first = problem(
        send_with_key(&app, &url, TOKEN, "slow", &text_message()).await,
        504,
        "upstream_timeout",
    )
    .await;
    let retry = send_with_key(&app, &url, TOKEN, "slow", &text_message()).await;

    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let replayed: Value = retry.json().await.expect("json");
    assert_eq!(
        replayed, first,
        "the stored answer, its request_id included"
    );
}

#[tokio::test]
async fn an_answer_where_nothing_was_sent_frees_the_key_for_a_retry() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&app.qikchat)
        .await;
    app.qikchat_accepts("after-429", 1).await;
    let url = app.url("/send");

    problem(
        send_with_key(&app, &url, TOKEN, "limited", &text_message()).await,
        429,
        "rate_limited",
    )
    .await;
    let retry = send_with_key(&app, &url, TOKEN, "limited", &text_message()).await;

    assert_eq!(retry.status(), 200);
    assert!(retry.headers().get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn an_invalid_key_is_a_422_naming_the_header() {
    let app = spawn_app().await;
    app.qikchat_expects_no_call().await;

    let too_long = "k".repeat(256);
    for key in ["has space", too_long.as_str()] {
        let response = send_with_key(&app, &app.url("/send"), TOKEN, key, &text_message()).await;
        let body = problem(response, 422, "invalid_request").await;
        assert_eq!(body["errors"][0]["field"], "Idempotency-Key", "{key}");
    }
}

#[tokio::test]
async fn two_relays_sharing_redis_call_qikchat_once_for_concurrent_duplicates() {
    let redis = Redis::start().await;
    let app = spawn_app_with(&[("RELAY_REDIS_URL", &redis.url)]).await;
    let sibling = app.sibling(&[("RELAY_REDIS_URL", &redis.url)]).await;
    qikchat_accepts_slowly(&app.qikchat, "once", Duration::from_millis(600), 1).await;
    let (here, there) = (app.url("/send"), sibling.url("/send"));
    let body = text_message();

    let answers = join_all((0..6).map(|i| {
        send_with_key(
            &app,
            if i % 2 == 0 { &here } else { &there },
            TOKEN,
            "replicated",
            &body,
        )
    }))
    .await;

    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        5,
        "{statuses:?}"
    );
    let replay = send_with_key(&app, &there, TOKEN, "replicated", &body).await;
    assert_eq!(
        replay.headers()["idempotent-replayed"],
        "true",
        "the other replica replays it"
    );
}

#[tokio::test]
async fn a_key_is_replayed_after_a_relay_restart_with_redis() {
    let redis = Redis::start().await;
    let app = spawn_app_with(&[("RELAY_REDIS_URL", &redis.url)]).await;
    app.qikchat_accepts("before-restart", 1).await;
    let first = app.sibling(&[("RELAY_REDIS_URL", &redis.url)]).await;
    let sent: Value = send_with_key(&app, &first.url("/send"), TOKEN, "restart", &text_message())
        .await
        .json()
        .await
        .expect("json");
    drop(first);

    let restarted = app.sibling(&[("RELAY_REDIS_URL", &redis.url)]).await;
    let replay = send_with_key(
        &app,
        &restarted.url("/send"),
        TOKEN,
        "restart",
        &text_message(),
    )
    .await;

    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replayed: Value = replay.json().await.expect("json");
    assert_eq!(replayed, sent);
}

#[tokio::test]
async fn with_redis_down_sends_are_refused_and_readiness_fails() {
    let mut redis = Redis::start().await;
    let app = spawn_app_with(&[("RELAY_REDIS_URL", &redis.url)]).await;
    app.qikchat_accepts("no-key", 1).await;
    let url = app.url("/send");
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("answer")
            .status(),
        200
    );
    assert_eq!(
        send_with_key(&app, &url, TOKEN, "before", &text_message())
            .await
            .status(),
        200
    );

    redis.stop();

    let ready = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("answer");
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.expect("json");
    assert_eq!(ready["status"], "redis_unreachable");
    let keyed = send_with_key(&app, &url, TOKEN, "during", &text_message()).await;
    assert!(keyed.headers().contains_key("retry-after"));
    problem(keyed, 503, "upstream_unavailable").await;
    // Without a key too: the opt-out list lives in the same Redis, and a send is refused rather
    // than sent to a customer who may have said STOP (docs/conversation.md).
    let unkeyed = problem(app.send(&text_message()).await, 503, "upstream_unavailable").await;
    assert!(
        unkeyed["detail"]
            .as_str()
            .is_some_and(|d| d.contains("opt-outs")),
        "{unkeyed}"
    );
}
