//! The send pipeline driven without HTTP, as a worker that sends later would drive it: a caller,
//! a parsed message and options in, a typed outcome out.

use qikchat_relay::{
    config::Config,
    http::state::AppState,
    idempotency::Key,
    message::Message,
    policy::{Refusal, Rule},
    relay::{Error, Options, Outcome},
};
use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path},
};

use crate::helpers::{KEY, RECIPIENT, TOKEN, TempDir, qikchat_success, settings};

#[tokio::test]
async fn the_pipeline_sends_replays_and_refuses_without_an_http_request() {
    let qikchat = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("QIKCHAT-API-KEY", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(qikchat_success("m-worker")))
        .expect(1)
        .mount(&qikchat)
        .await;
    let dir = TempDir::new();
    let callers = dir.write(
        "clients.toml",
        &format!("[clients.billing]\ntoken = \"{TOKEN}\"\ntypes = [\"text\"]\n"),
    );
    let data = dir.0.join("data");
    let config = Config::from_pairs(settings(
        &qikchat,
        &[
            ("RELAY_CLIENTS_FILE", &callers),
            ("RELAY_DATA_DIR", data.to_str().expect("UTF-8")),
        ],
    ))
    .expect("valid");
    let policy =
        qikchat_relay::policy::Live::start(config.policy.clone(), config.upstream_timeout())
            .expect("the callers file reads");
    let state = AppState::new(&config, policy).expect("the relay's parts start");
    let caller = state.policy.current().caller("billing").expect("billing");
    let text =
        || Message::parse(&json!({"to": RECIPIENT, "type": "text", "text": "hi"})).expect("valid");
    let keyed = || Options {
        idempotency_key: Key::parse(b"order-7"),
        request_id: "worker-1".into(),
    };

    let sent = state.relay.send(&caller, text(), keyed()).await;
    match sent.result {
        Ok(Outcome::Queued(response)) => assert_eq!(response.id, "m-worker"),
        other => panic!("not queued: {other:?}"),
    }
    assert_eq!(sent.attempt.qikchat_id.as_deref(), Some("m-worker"));
    assert_eq!(sent.attempt.message_type, Some("text"));

    // The same key again: the stored answer, and Qikchat is not called a second time.
    let again = state.relay.send(&caller, text(), keyed()).await;
    match again.result {
        Ok(Outcome::Replayed(answer)) => {
            assert_eq!(answer.status, 200);
            assert!(answer.body.contains("m-worker"), "{}", answer.body);
        }
        other => panic!("not replayed: {other:?}"),
    }

    // A type the caller may not send is refused by its rules, and nothing goes out.
    let image = Message::parse(
        &json!({"to": RECIPIENT, "type": "image", "link": "https://cdn.example.com/a.png"}),
    )
    .expect("valid");
    let refused = state.relay.send(&caller, image, Options::default()).await;
    assert!(
        matches!(
            refused.result,
            Err(Error::Refused(Refusal::Forbidden {
                rule: Rule::Types,
                ..
            }))
        ),
        "{:?}",
        refused.result.err()
    );
    // The mock's expect(1) is checked when it is dropped.
}
