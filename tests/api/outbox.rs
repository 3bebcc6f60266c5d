//! The outbox (`POST /messages`, `POST /messages/batch`, `DELETE /messages/{id}`): accepted at once,
//! stored durably, delivered later at the account's pace, when due, each at most once, and its
//! statuses reported under the relay's own `msg_` id. The fake Qikchat records every send it
//! receives, and when; tests poll `GET /messages/{id}` with a deadline rather than sleep.
//! Crashes of the real binary are in `process/outbox_crash.rs`.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, Request, Respond, ResponseTemplate,
    matchers::{method, path},
};

use crate::helpers::{
    OTHER_TOKEN, RECIPIENT, Redis, TOKEN, TempDir, TestApp, named_fields, problem, qikchat_success,
    samples, spawn_app_with,
};
use crate::webhooks::{ADMIN_TOKEN, post_event, status_event, subscriber_accepts, verified};

/// The statuses after which nothing more happens in the outbox itself.
pub const ENDED: [&str; 8] = [
    "queued",
    "sent",
    "delivered",
    "read",
    "failed",
    "expired",
    "canceled",
    "unknown",
];

/// One send the fake Qikchat received.
#[derive(Clone, Debug)]
pub struct Call {
    pub at: Instant,
    pub wall: SystemTime,
    pub body: Value,
}

impl Call {
    /// The text of a text message: the tests' way of telling messages apart.
    pub fn text(&self) -> String {
        self.body["text"]["body"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// What the fake Qikchat answers.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// Success, with an id of its own for each call (`<prefix><n>`).
    Accept,
    /// This HTTP status, without a body Qikchat would send on success.
    Status(u16),
}

/// The sends a fake Qikchat received, in order.
#[derive(Clone, Default)]
pub struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    pub fn all(&self) -> Vec<Call> {
        self.0.lock().expect("lock").clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().expect("lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many sends carried each text.
    pub fn per_text(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for call in self.all() {
            *counts.entry(call.text()).or_insert(0) += 1;
        }
        counts
    }

    /// The calls whose text is `text`.
    pub fn with_text(&self, text: &str) -> Vec<Call> {
        self.all()
            .into_iter()
            .filter(|c| c.text() == text)
            .collect()
    }

    /// Waits until there are at least `n` calls (or `within` has passed); the count then.
    pub async fn until(&self, n: usize, within: Duration) -> usize {
        let started = Instant::now();
        while self.len() < n && started.elapsed() < within {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.len()
    }
}

/// A fake Qikchat's `POST /v1/messages` that records each call (time and body) before answering.
pub struct Recorder {
    calls: Calls,
    prefix: String,
    answer: Answer,
    delay: Duration,
}

impl Respond for Recorder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let n = {
            let mut calls = self.calls.0.lock().expect("lock");
            calls.push(Call {
                at: Instant::now(),
                wall: SystemTime::now(),
                body,
            });
            calls.len()
        };
        let template = match self.answer {
            Answer::Accept => ResponseTemplate::new(200)
                .set_body_json(qikchat_success(&format!("{}{n:06}", self.prefix))),
            Answer::Status(status) => ResponseTemplate::new(status)
                .set_body_json(json!({"status": false, "message": "refused by the fake"})),
        };
        template.set_delay(self.delay)
    }
}

/// Mounts a recording `POST /v1/messages` on `qikchat`; Qikchat ids are `<prefix><n>`.
pub async fn record(qikchat: &MockServer, prefix: &str, answer: Answer, delay: Duration) -> Calls {
    let calls = Calls::default();
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(Recorder {
            calls: calls.clone(),
            prefix: prefix.to_owned(),
            answer,
            delay,
        })
        .mount(qikchat)
        .await;
    calls
}

/// A text message told apart by `n`: its text is `message <n>`, its reference `ref-<n>`.
pub fn message(n: impl std::fmt::Display) -> Value {
    json!({"to": RECIPIENT, "type": "text", "text": format!("message {n}"), "reference": format!("ref-{n}")})
}

/// `message(n)` with `extra` fields added.
fn message_with(n: impl std::fmt::Display, extra: Value) -> Value {
    let mut body = message(n);
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

/// What the relay must send Qikchat for `message(n)`.
fn qikchat_body(n: impl std::fmt::Display) -> Value {
    json!({"to_contact": RECIPIENT, "type": "text", "text": {"body": format!("message {n}")}})
}

/// An RFC 3339 time `offset` from now.
pub fn from_now(offset: Duration) -> String {
    at(offset).1
}

/// The time `offset` from now, to the millisecond, and as RFC 3339: the time is the one the text
/// says (no fraction of a millisecond lost between them).
pub fn at(offset: Duration) -> (SystemTime, String) {
    let text = humantime::format_rfc3339_millis(SystemTime::now() + offset).to_string();
    let time = humantime::parse_rfc3339(&text).expect("an RFC 3339 time");
    (time, text)
}

/// Whether `id` has the shape of a relay id: `^msg_[0-9A-Za-z]{26}$`.
pub fn is_msg_id(id: &str) -> bool {
    id.strip_prefix("msg_")
        .is_some_and(|rest| rest.len() == 26 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

pub async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> reqwest::Response {
    http.post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("the relay answers")
}

/// Posts `body` to `POST /messages` on the relay at `base`, checks the 202 and returns its id.
pub async fn accept_at(http: &reqwest::Client, base: &str, token: &str, body: &Value) -> String {
    let answer = post(http, base, "/messages", token, body).await;
    let status = answer.status().as_u16();
    let location = answer
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = answer.text().await.unwrap_or_default();
    assert_eq!(status, 202, "POST /messages of {body}: {text}");
    let answer: Value = serde_json::from_str(&text).expect("a JSON answer");
    let id = answer["id"].as_str().unwrap_or_default().to_owned();
    assert!(is_msg_id(&id), "a msg_ id: {answer}");
    assert_eq!(
        location.as_deref(),
        Some(format!("/messages/{id}").as_str()),
        "Location"
    );
    id
}

/// [`accept_at`] on `app` as billing.
pub async fn accept(app: &TestApp, body: &Value) -> String {
    accept_at(&app.http, &app.url(""), TOKEN, body).await
}

/// `POST /messages/batch` of `messages` on the relay at `base`: its 202 results.
pub async fn batch_at(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    messages: Vec<Value>,
) -> Vec<Value> {
    let answer = post(
        http,
        base,
        "/messages/batch",
        token,
        &json!({"messages": messages}),
    )
    .await;
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap_or_default();
    assert_eq!(status, 202, "POST /messages/batch: {text}");
    let answer: Value = serde_json::from_str(&text).expect("a JSON answer");
    answer["results"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("results in {answer}"))
}

/// The ids of a batch whose items were all accepted.
pub fn all_ids(results: &[Value]) -> Vec<String> {
    results
        .iter()
        .map(|r| {
            let id = r["id"].as_str().unwrap_or_default().to_owned();
            assert!(is_msg_id(&id), "an accepted item: {r}");
            id
        })
        .collect()
}

/// `GET /messages/{id}` at `base`: its status code and JSON body.
pub async fn read_at(http: &reqwest::Client, base: &str, token: &str, id: &str) -> (u16, Value) {
    let answer = http
        .get(format!("{base}/messages/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the relay answers");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or_default())
}

/// `GET /messages/{id}` at `base` until `done` holds for its body (or `within` has passed).
pub async fn until_at(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = read_at(http, base, TOKEN, id).await;
        if status == 200 && done(&body) {
            return body;
        }
        assert!(
            started.elapsed() < within,
            "{id} never got there in {within:?}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `id` on `app` until its status is `status`.
pub async fn until_status(app: &TestApp, id: &str, status: &str, within: Duration) -> Value {
    until_at(&app.http, &app.url(""), id, within, |b| {
        b["status"] == status
    })
    .await
}

/// Polls `id` on `app` until its status is one of [`ENDED`].
pub async fn until_ended(app: &TestApp, id: &str, within: Duration) -> Value {
    until_at(&app.http, &app.url(""), id, within, |b| {
        b["status"].as_str().is_some_and(|s| ENDED.contains(&s))
    })
    .await
}

/// A relay whose callers come from `callers`, written in `dir` (kept by the caller).
async fn relay_with_file(dir: &TempDir, callers: &str, extra: &[(&str, &str)]) -> TestApp {
    let file = dir.write("clients.toml", callers);
    let mut settings = vec![("RELAY_CLIENTS_FILE", file.as_str())];
    settings.extend_from_slice(extra);
    spawn_app_with(&settings).await
}

/// billing and alerts on the default account, whose `[accounts.default]` table gets `account`.
fn callers_with_account(account: &str) -> String {
    format!(
        "[accounts.default]\n{account}\n\n[clients.billing]\ntoken = \"{TOKEN}\"\n\n\
         [clients.alerts]\ntoken = \"{OTHER_TOKEN}\"\n"
    )
}

const SHORT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_message_is_accepted_at_once_then_delivered_once_under_its_own_id() {
    let app = spawn_app_with(&[]).await;
    let calls = record(&app.qikchat, "qk", Answer::Accept, Duration::ZERO).await;

    let answer = post(&app.http, &app.url(""), "/messages", TOKEN, &message(1)).await;

    assert_eq!(answer.status(), 202);
    let location = answer.headers()["location"]
        .to_str()
        .expect("text")
        .to_owned();
    let body: Value = answer.json().await.expect("json");
    let id = body["id"].as_str().expect("an id").to_owned();
    assert!(is_msg_id(&id), "{body}");
    assert_eq!(body["status"], "accepted", "{body}");
    assert_eq!(location, format!("/messages/{id}"));

    let delivered = until_status(&app, &id, "queued", SHORT).await;
    assert_eq!(delivered["id"], id.as_str(), "{delivered}");
    assert_eq!(delivered["qikchat_id"], "qk000001", "{delivered}");
    assert_eq!(delivered["reference"], "ref-1", "{delivered}");
    assert!(delivered["attempts"].is_u64(), "{delivered}");
    for field in ["accepted_at", "updated_at", "valid_until"] {
        assert!(delivered[field].is_string(), "{field} in {delivered}");
    }
    let transitions = samples(&app.scrape().await);
    assert!(
        transitions.iter().any(
            |((name, labels), value)| name == "relay_outbox_transitions_total"
                && labels.get("status").map(String::as_str) == Some("queued")
                && *value >= 1.0
        ),
        "relay_outbox_transitions_total{{status=\"queued\"}} counts it"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = calls.all();
    assert_eq!(received.len(), 1, "exactly one send: {received:?}");
    assert_eq!(
        received[0].body,
        qikchat_body(1),
        "the message, as /send sends it"
    );
}

#[tokio::test]
async fn the_reference_and_every_status_reach_the_callers_statuses_webhook_under_the_msg_id() {
    let dir = TempDir::new();
    let subscriber = MockServer::start().await;
    subscriber_accepts(&subscriber, "/billing/statuses").await;
    let app = crate::webhooks::relay(&dir, &subscriber, &[]).await;
    let calls = record(&app.qikchat, "qkhook", Answer::Accept, Duration::ZERO).await;

    let id = accept(&app, &message("hooked")).await;
    let queued = until_status(&app, &id, "queued", SHORT).await;
    assert_eq!(queued["reference"], "ref-hooked");
    let qikchat_id = queued["qikchat_id"]
        .as_str()
        .expect("qikchat_id")
        .to_owned();
    assert_eq!(calls.len(), 1);

    // Qikchat's own later status continues the same record, under the relay's id.
    let answer = post_event(
        &app.http,
        &app.url(""),
        &status_event(&qikchat_id, "delivered"),
    )
    .await;
    assert_eq!(answer.status(), 200);
    let events = events_until(&subscriber, |events| {
        events.iter().any(|e| e["data"]["status"] == "delivered")
    })
    .await;

    let statuses: Vec<&str> = events
        .iter()
        .filter_map(|e| e["data"]["status"].as_str())
        .collect();
    for expected in ["queued", "delivered"] {
        assert!(statuses.contains(&expected), "{expected} in {statuses:?}");
    }
    for event in &events {
        assert_eq!(event["type"], "message.status", "{event}");
        assert_eq!(event["data"]["id"], id.as_str(), "{event}");
        assert_eq!(event["data"]["reference"], "ref-hooked", "{event}");
        let status = event["data"]["status"].as_str().unwrap_or_default();
        if ["queued", "sent", "delivered", "read"].contains(&status) {
            assert_eq!(event["data"]["qikchat_id"], qikchat_id.as_str(), "{event}");
        }
    }
    let read = until_status(&app, &id, "delivered", SHORT).await;
    assert_eq!(read["reference"], "ref-hooked", "{read}");
    assert_eq!(read["qikchat_id"], qikchat_id.as_str(), "{read}");
}

/// The verified bodies the subscriber received on `/billing/statuses`, once `done` holds for them.
async fn events_until(subscriber: &MockServer, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let events: Vec<Value> = subscriber
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == "/billing/statuses")
            .map(verified)
            .collect();
        if done(&events) {
            return events;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the webhook events never got there: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn accept_with_key(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url("/messages"))
        .bearer_auth(TOKEN)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("the relay answers")
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_gets_the_same_message_and_sends_once() {
    let app = spawn_app_with(&[]).await;
    let calls = record(&app.qikchat, "qk", Answer::Accept, Duration::ZERO).await;

    let first = accept_with_key(&app, "order-7", &message(7)).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("json");
    let retry = accept_with_key(&app, "order-7", &message(7)).await;
    assert_eq!(retry.status(), 202);
    let retry: Value = retry.json().await.expect("json");
    assert_eq!(
        retry["id"], first["id"],
        "the same message: {first} {retry}"
    );

    let other = accept_with_key(&app, "order-7", &message(8)).await;
    problem(other, 422, "idempotency_key_reused").await;

    let id = first["id"].as_str().expect("an id");
    until_status(&app, id, "queued", SHORT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        calls.per_text(),
        BTreeMap::from([("message 7".to_owned(), 1)])
    );
}

#[tokio::test]
async fn an_invalid_message_is_refused_at_acceptance_naming_the_field_and_nothing_is_sent() {
    let app = spawn_app_with(&[]).await;
    let calls = record(&app.qikchat, "qk", Answer::Accept, Duration::ZERO).await;
    let base = app.url("");

    let cases = [
        (json!({"to": RECIPIENT, "type": "text", "text": ""}), "text"),
        (json!({"to": "12", "type": "text", "text": "hi"}), "to"),
        (message_with(1, json!({"reference": ""})), "reference"),
        (
            message_with(1, json!({"reference": "r".repeat(129)})),
            "reference",
        ),
        (message_with(1, json!({"send_at": "tomorrow"})), "send_at"),
        (
            message_with(
                1,
                json!({"send_at": from_now(Duration::from_secs(36 * 86400))}),
            ),
            "send_at",
        ),
        (
            message_with(1, json!({"valid_until": "soon"})),
            "valid_until",
        ),
        (message_with(1, json!({"captoin": "typo"})), "captoin"),
    ];
    for (body, field) in cases {
        let answer = post(&app.http, &base, "/messages", TOKEN, &body).await;
        let refused = problem(answer, 422, "invalid_request").await;
        assert!(
            named_fields(&refused).contains(&field.to_owned()),
            "{field} named for {body}: {refused}"
        );
    }
    // An end before the start: it could never be sent.
    let backwards = message_with(
        1,
        json!({"send_at": from_now(Duration::from_secs(600)),
               "valid_until": from_now(Duration::from_secs(60))}),
    );
    let refused = problem(
        post(&app.http, &base, "/messages", TOKEN, &backwards).await,
        422,
        "invalid_request",
    )
    .await;
    assert!(
        named_fields(&refused).contains(&"valid_until".to_owned()),
        "{refused}"
    );
    // 35 days ahead is still allowed.
    let far = accept(
        &app,
        &message_with(
            2,
            json!({"send_at": from_now(Duration::from_secs(34 * 86400))}),
        ),
    )
    .await;
    let (_, far) = read_at(&app.http, &base, TOKEN, &far).await;
    assert_eq!(far["status"], "scheduled", "{far}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(calls.len(), 0, "nothing was sent: {:?}", calls.all());
    // Only the valid, scheduled message is stored.
    let started = Instant::now();
    loop {
        let exposition = app.scrape().await;
        let waiting = samples(&exposition)
            .into_iter()
            .find(|((name, _), _)| name == "relay_outbox_waiting")
            .map(|(_, value)| value);
        if waiting == Some(1.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "relay_outbox_waiting is {waiting:?}, not 1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_scheduled_message_waits_for_send_at_then_goes_promptly() {
    let app = spawn_app_with(&[]).await;
    let calls = record(&app.qikchat, "qk", Answer::Accept, Duration::ZERO).await;
    let (send_at, text) = at(Duration::from_secs(2));
    let body = message_with("later", json!({ "send_at": text }));

    let answer = post(&app.http, &app.url(""), "/messages", TOKEN, &body).await;
    assert_eq!(answer.status(), 202);
    let answer: Value = answer.json().await.expect("json");
    assert_eq!(answer["status"], "scheduled", "{answer}");
    let id = answer["id"].as_str().expect("an id");
    let (_, scheduled) = read_at(&app.http, &app.url(""), TOKEN, id).await;
    assert_eq!(scheduled["status"], "scheduled", "{scheduled}");
    assert!(scheduled["send_at"].is_string(), "{scheduled}");

    until_status(&app, id, "queued", Duration::from_secs(6)).await;
    let received = calls.all();
    assert_eq!(received.len(), 1, "{received:?}");
    let late = received[0]
        .wall
        .duration_since(send_at)
        .unwrap_or_else(|early| panic!("sent {:?} before send_at", early.duration()));
    assert!(
        late <= Duration::from_millis(1500),
        "sent {late:?} after send_at"
    );
}

#[tokio::test]
async fn a_message_is_canceled_before_it_is_sent_and_never_sent() {
    let app = spawn_app_with(&[]).await;
    let calls = record(&app.qikchat, "qk", Answer::Accept, Duration::ZERO).await;
    let send_at = Duration::from_millis(1000);
    let id = accept(
        &app,
        &message_with("canceled", json!({"send_at": from_now(send_at)})),
    )
    .await;

    // Another caller's message is not found, and stays as it was.
    let foreign = app
        .http
        .delete(app.url(&format!("/messages/{id}")))
        .bearer_auth(OTHER_TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(foreign.status(), 404);
    let (status, _) = read_at(&app.http, &app.url(""), OTHER_TOKEN, &id).await;
    assert_eq!(status, 404, "another caller does not read it either");

    let answer = app
        .http
        .delete(app.url(&format!("/messages/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.expect("json");
    assert_eq!(answer["id"], id.as_str(), "{answer}");
    assert_eq!(answer["status"], "canceled", "{answer}");

    tokio::time::sleep(send_at + Duration::from_millis(1000)).await;
    let (_, read) = read_at(&app.http, &app.url(""), TOKEN, &id).await;
    assert_eq!(read["status"], "canceled", "{read}");
    assert_eq!(calls.len(), 0, "a canceled message was sent");
}

#[tokio::test]
async fn a_message_that_was_sent_cannot_be_canceled() {
    let app = spawn_app_with(&[]).await;
    record(&app.qikchat, "qk", Answer::Accept, Duration::ZERO).await;
    let id = accept(&app, &message("gone")).await;
    until_status(&app, &id, "queued", SHORT).await;

    let answer = app
        .http
        .delete(app.url(&format!("/messages/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answer");

    problem(answer, 409, "not_cancelable").await;
    let (_, read) = read_at(&app.http, &app.url(""), TOKEN, &id).await;
    assert_eq!(read["status"], "queued", "{read}");
}

#[tokio::test]
async fn a_batch_accepts_the_valid_items_in_order_and_refuses_the_others_alone() {
    let app = spawn_app_with(&[]).await;
    let calls = record(&app.qikchat, "qk", Answer::Accept, Duration::ZERO).await;
    let messages = vec![
        message(1),
        json!({"to": RECIPIENT, "type": "text", "text": ""}),
        message(3),
        json!({"to": RECIPIENT, "type": "carrier_pigeon"}),
        message(5),
    ];

    let results = batch_at(&app.http, &app.url(""), TOKEN, messages).await;

    assert_eq!(results.len(), 5, "{results:?}");
    let mut ids = Vec::new();
    for n in [0, 2, 4] {
        let id = results[n]["id"].as_str().unwrap_or_default();
        assert!(is_msg_id(id), "item {n}: {}", results[n]);
        assert_eq!(results[n]["status"], "accepted", "item {n}: {}", results[n]);
        assert!(
            results[n].get("error").is_none(),
            "item {n}: {}",
            results[n]
        );
        ids.push(id.to_owned());
    }
    for n in [1, 3] {
        let error = &results[n]["error"];
        assert_eq!(error["status"], 422, "item {n}: {}", results[n]);
        assert_eq!(error["code"], "invalid_request", "item {n}: {}", results[n]);
        assert!(error["detail"].is_string(), "item {n}: {}", results[n]);
        assert!(results[n].get("id").is_none(), "item {n}: {}", results[n]);
    }
    assert_eq!(
        named_fields(&results[1]["error"]),
        ["text"],
        "{}",
        results[1]
    );
    for id in &ids {
        until_status(&app, id, "queued", SHORT).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent: Vec<String> = calls.per_text().into_keys().collect();
    assert_eq!(sent, ["message 1", "message 3", "message 5"]);
    assert_eq!(calls.len(), 3);
}

#[tokio::test]
async fn a_batch_that_is_not_a_list_of_1_to_1000_messages_is_refused_whole() {
    let app = spawn_app_with(&[]).await;
    let calls = record(&app.qikchat, "qk", Answer::Accept, Duration::ZERO).await;
    let base = app.url("");
    let tiny = json!({"to": RECIPIENT, "type": "text", "text": "x"});

    for body in [
        json!({"messages": "message 1"}),
        json!({"messages": []}),
        json!([message(1)]),
        json!({"message": [message(1)]}),
        json!({"messages": vec![tiny.clone(); 1001]}),
        json!({"messages": [tiny.clone(), [null]]}),
        json!({"messages": [tiny.clone()], "extra": true}),
    ] {
        let answer = post(&app.http, &base, "/messages/batch", TOKEN, &body).await;
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap_or_default();
        assert!(
            [400, 413, 422].contains(&status),
            "{status} for {}: {text}",
            &body.to_string()[..body.to_string().len().min(80)]
        );
    }
    // 1000 is allowed, whatever the body's size (scheduled: nothing is sent here).
    let later = from_now(Duration::from_secs(3600));
    let full: Vec<Value> = (0..1000)
        .map(|n| message_with(n, json!({"send_at": later})))
        .collect();
    let results = batch_at(&app.http, &base, TOKEN, full).await;
    assert_eq!(all_ids(&results).len(), 1000);
    assert!(results.iter().all(|r| r["status"] == "scheduled"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls.len(), 0, "nothing was due");
}

#[tokio::test]
async fn an_account_paced_at_10_per_second_gets_50_messages_all_sent_none_refused() {
    let dir = TempDir::new();
    let app = relay_with_file(&dir, &callers_with_account("rate_per_second = 10"), &[]).await;
    let calls = record(&app.qikchat, "qk", Answer::Accept, Duration::ZERO).await;
    let started = Instant::now();

    let results = batch_at(
        &app.http,
        &app.url(""),
        TOKEN,
        (0..50).map(message).collect(),
    )
    .await;

    let ids = all_ids(&results);
    assert_eq!(calls.until(50, Duration::from_secs(12)).await, 50);
    let received = calls.all();
    let last = received.iter().map(|c| c.at).max().expect("calls");
    let took = last.duration_since(started);
    // A burst of 10, then one every 100 ms: the 50th goes 4 s after the first.
    assert!(
        took >= Duration::from_millis(3800),
        "50 sends at 10/s took only {took:?}"
    );
    assert!(
        took <= Duration::from_secs(8),
        "50 sends at 10/s took {took:?}"
    );
    for id in &ids {
        until_status(&app, id, "queued", Duration::from_secs(2)).await;
    }
    assert!(calls.per_text().values().all(|n| *n == 1), "each once");
}

#[tokio::test]
async fn messages_to_one_customer_are_spaced_by_the_recipient_interval() {
    let dir = TempDir::new();
    let app = relay_with_file(
        &dir,
        &callers_with_account("recipient_burst = 1\nrecipient_interval_ms = 1000"),
        &[],
    )
    .await;
    let calls = record(&app.qikchat, "qk", Answer::Accept, Duration::ZERO).await;

    let ids = all_ids(
        &batch_at(
            &app.http,
            &app.url(""),
            TOKEN,
            (0..3).map(message).collect(),
        )
        .await,
    );

    for id in &ids {
        until_status(&app, id, "queued", Duration::from_secs(6)).await;
    }
    let mut times: Vec<Instant> = calls.all().iter().map(|c| c.at).collect();
    assert_eq!(times.len(), 3);
    times.sort();
    for pair in times.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(
            gap >= Duration::from_millis(900) && gap <= Duration::from_millis(1800),
            "sends to one customer {gap:?} apart"
        );
    }
}

#[tokio::test]
async fn qikchat_answering_429_is_retried_until_valid_until_then_expired() {
    let app = spawn_app_with(&[]).await;
    let calls = record(&app.qikchat, "qk", Answer::Status(429), Duration::ZERO).await;
    let (valid_until, text) = at(Duration::from_secs(3));
    let body = message_with("limited", json!({ "valid_until": text }));
    let id = accept(&app, &body).await;

    let mut seen = Vec::new();
    let started = Instant::now();
    let ended = loop {
        let (_, read) = read_at(&app.http, &app.url(""), TOKEN, &id).await;
        let status = read["status"].as_str().unwrap_or_default().to_owned();
        if !seen.contains(&status) {
            seen.push(status.clone());
        }
        if ENDED.contains(&status.as_str()) {
            break read;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{read}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };

    assert_eq!(ended["status"], "expired", "{ended} (seen {seen:?})");
    assert!(!seen.iter().any(|s| s == "queued"), "{seen:?}");
    // Retried until valid_until: not given up on while it could still be sent.
    let ended_at = SystemTime::now();
    assert!(
        ended_at + Duration::from_millis(200) >= valid_until,
        "expired {:?} before valid_until, after {} calls: {ended}",
        valid_until.duration_since(ended_at).unwrap_or_default(),
        calls.len()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = calls.all();
    assert!(received.len() >= 2, "retried: {} calls", received.len());
    assert!(
        received.iter().all(|c| c.wall <= valid_until),
        "a call after valid_until"
    );
}

#[tokio::test]
async fn a_timeout_after_sending_ends_unknown_and_is_never_resent() {
    let app = spawn_app_with(&[("RELAY_UPSTREAM_TIMEOUT_MS", "500")]).await;
    let calls = record(
        &app.qikchat,
        "qk",
        Answer::Accept,
        Duration::from_millis(2000),
    )
    .await;
    let id = accept(&app, &message("slow")).await;

    let ended = until_ended(&app, &id, Duration::from_secs(8)).await;

    assert_eq!(ended["status"], "unknown", "{ended}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(calls.len(), 1, "never resent");
}

#[tokio::test]
async fn a_5xx_from_qikchat_ends_unknown_and_is_never_resent() {
    let app = spawn_app_with(&[]).await;
    let calls = record(&app.qikchat, "qk", Answer::Status(502), Duration::ZERO).await;
    let id = accept(&app, &message("gateway")).await;

    let ended = until_ended(&app, &id, SHORT).await;

    assert_eq!(ended["status"], "unknown", "{ended}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(calls.len(), 1, "never resent");
}

#[tokio::test]
async fn a_refusal_from_qikchat_ends_failed_with_its_error_and_is_a_dead_letter() {
    let app = spawn_app_with(&[("RELAY_ADMIN_TOKEN", ADMIN_TOKEN)]).await;
    let calls = record(&app.qikchat, "qk", Answer::Status(400), Duration::ZERO).await;
    let id = accept(&app, &message("refused")).await;

    let ended = until_ended(&app, &id, SHORT).await;

    assert_eq!(ended["status"], "failed", "{ended}");
    assert!(ended["error"]["code"].is_string(), "{ended}");
    assert_eq!(calls.len(), 1);
    let dead = app
        .http
        .get(app.url("/outbox/dead-letters"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(dead.status(), 200);
    let dead = dead.text().await.expect("text");
    assert!(dead.contains(&id), "{dead}");
    let refused = app
        .http
        .get(app.url("/outbox/dead-letters"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status(), 401, "a caller's token is not the admin's");
}

#[tokio::test]
async fn qikchat_unreachable_then_back_gets_the_message_exactly_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    // One call (its connection retries included) gives up after 500 ms.
    let app = spawn_app_with(&[
        ("QIKCHAT_BASE_URL", &base),
        ("RELAY_UPSTREAM_TIMEOUT_MS", "500"),
    ])
    .await;
    let id = accept(&app, &message("patient")).await;

    // Nothing reached Qikchat: the message waits for another try (or is in one), it has not ended.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let (_, waiting) = read_at(&app.http, &app.url(""), TOKEN, &id).await;
        let status = waiting["status"].as_str().unwrap_or_default();
        assert!(["accepted", "sending"].contains(&status), "{waiting}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
    let qikchat = MockServer::builder().listener(listener).start().await;
    let calls = record(&qikchat, "qkback", Answer::Accept, Duration::ZERO).await;
    let queued = until_status(&app, &id, "queued", Duration::from_secs(12)).await;

    assert_eq!(queued["qikchat_id"], "qkback000001", "{queued}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls.len(), 1);
}

#[tokio::test]
async fn a_full_outbox_refuses_with_503_outbox_full_and_retry_after() {
    let app = spawn_app_with(&[("RELAY_OUTBOX_MAX", "2")]).await;
    record(&app.qikchat, "qk", Answer::Accept, Duration::ZERO).await;
    let later = json!({"send_at": from_now(Duration::from_secs(600))});
    accept(&app, &message_with(1, later.clone())).await;
    accept(&app, &message_with(2, later.clone())).await;

    let answer = post(
        &app.http,
        &app.url(""),
        "/messages",
        TOKEN,
        &message_with(3, later),
    )
    .await;

    assert!(answer.headers().contains_key("retry-after"), "Retry-After");
    problem(answer, 503, "outbox_full").await;
}

#[tokio::test]
async fn one_callers_backlog_does_not_hold_up_another_callers_message() {
    let dir = TempDir::new();
    let app = relay_with_file(&dir, &callers_with_account("rate_per_second = 20"), &[]).await;
    let calls = record(&app.qikchat, "qk", Answer::Accept, Duration::ZERO).await;
    let backlog = batch_at(
        &app.http,
        &app.url(""),
        TOKEN,
        (0..200).map(message).collect(),
    )
    .await;
    assert_eq!(all_ids(&backlog).len(), 200);

    let accepted = Instant::now();
    let id = accept_at(&app.http, &app.url(""), OTHER_TOKEN, &message("alerts")).await;
    let started = Instant::now();
    while calls.with_text("message alerts").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "alerts' message waited behind billing's backlog ({} of 200 sent)",
            calls.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let sent = calls.with_text("message alerts")[0].at;
    let waited = sent.duration_since(accepted);
    let before = calls.all().iter().filter(|c| c.at < sent).count();
    // The account's burst (20) may go before it, and a turn or two of billing's: callers take
    // turns at the account's pace, so not the backlog.
    assert!(
        waited <= Duration::from_millis(1000),
        "alerts' message waited {waited:?}, behind {before} of billing's"
    );
    assert!(before <= 30, "{before} of billing's went first");
    let (status, _) = read_at(&app.http, &app.url(""), OTHER_TOKEN, &id).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn two_replicas_on_redis_send_each_of_100_messages_exactly_once_between_them() {
    let redis = Redis::start().await;
    let settings = [
        ("RELAY_REDIS_URL", redis.url.as_str()),
        ("RELAY_OUTBOX_CONCURRENCY", "4"),
    ];
    let app = spawn_app_with(&settings).await;
    let here = record(
        &app.qikchat,
        "qkhere",
        Answer::Accept,
        Duration::from_millis(100),
    )
    .await;
    let other_qikchat = MockServer::start().await;
    let there = record(
        &other_qikchat,
        "qkthere",
        Answer::Accept,
        Duration::from_millis(100),
    )
    .await;
    let mut sibling_settings = settings.to_vec();
    let other_uri = other_qikchat.uri();
    sibling_settings.push(("QIKCHAT_BASE_URL", &other_uri));
    let sibling = app.sibling(&sibling_settings).await;

    let ids = all_ids(
        &batch_at(
            &app.http,
            &app.url(""),
            TOKEN,
            (0..100).map(message).collect(),
        )
        .await,
    );

    let started = Instant::now();
    while here.len() + there.len() < 100 {
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "{} + {} of 100 sent",
            here.len(),
            there.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &ids {
        // Read on the replica that did not accept it: the outbox is shared.
        until_at(&app.http, &sibling.url(""), id, SHORT, |b| {
            b["status"] == "queued"
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut counts = here.per_text();
    for (text, n) in there.per_text() {
        *counts.entry(text).or_insert(0) += n;
    }
    assert_eq!(counts.len(), 100, "every message was sent");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert!(
        !here.is_empty() && !there.is_empty(),
        "both replicas deliver: {} and {}",
        here.len(),
        there.len()
    );
}

#[tokio::test]
async fn the_callers_rules_and_quota_are_applied_at_acceptance_alone_and_in_a_batch() {
    let dir = TempDir::new();
    let callers = format!(
        "[clients.billing]\ntoken = \"{TOKEN}\"\ntypes = [\"text\"]\ndestinations = [\"+91\"]\n\
         daily_quota = 2\n\n[clients.alerts]\ntoken = \"{OTHER_TOKEN}\"\n"
    );
    let app = relay_with_file(&dir, &callers, &[]).await;
    let calls = record(&app.qikchat, "qk", Answer::Accept, Duration::ZERO).await;
    let base = app.url("");
    let image = json!({"to": RECIPIENT, "type": "image", "link": "https://cdn.example.com/a.png"});
    let abroad = json!({"to": "+447700900123", "type": "text", "text": "hi"});

    for (body, rule) in [(&image, "types"), (&abroad, "destinations")] {
        let refused = problem(
            post(&app.http, &base, "/messages", TOKEN, body).await,
            403,
            "forbidden",
        )
        .await;
        assert_eq!(refused["rule"], rule, "{refused}");
    }
    let results = batch_at(
        &app.http,
        &base,
        TOKEN,
        vec![
            image.clone(),
            message(1),
            abroad.clone(),
            message(2),
            message(3),
        ],
    )
    .await;
    assert_eq!(results[0]["error"]["status"], 403, "{}", results[0]);
    assert_eq!(results[0]["error"]["rule"], "types", "{}", results[0]);
    assert_eq!(
        results[2]["error"]["rule"], "destinations",
        "{}",
        results[2]
    );
    // The daily quota of 2 counts each accepted message: the third is refused for it.
    assert!(
        is_msg_id(results[1]["id"].as_str().unwrap_or_default()),
        "{}",
        results[1]
    );
    assert!(
        is_msg_id(results[3]["id"].as_str().unwrap_or_default()),
        "{}",
        results[3]
    );
    assert_eq!(results[4]["error"]["status"], 429, "{}", results[4]);
    assert_eq!(results[4]["error"]["rule"], "daily_quota", "{}", results[4]);
    let over = post(&app.http, &base, "/messages", TOKEN, &message(4)).await;
    assert_eq!(
        problem(over, 429, "rate_limited").await["rule"],
        "daily_quota"
    );

    assert_eq!(calls.until(2, SHORT).await, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent: Vec<String> = calls.per_text().into_keys().collect();
    assert_eq!(sent, ["message 1", "message 2"], "only what was accepted");
}

#[tokio::test]
async fn a_batch_item_with_an_idempotency_key_is_accepted_once_across_retries() {
    let app = spawn_app_with(&[]).await;
    let calls = record(&app.qikchat, "qk", Answer::Accept, Duration::ZERO).await;
    let items = vec![
        message_with("keyed", json!({"idempotency_key": "batch-item-1"})),
        message("unkeyed"),
    ];

    let first = batch_at(&app.http, &app.url(""), TOKEN, items.clone()).await;
    let retry = batch_at(&app.http, &app.url(""), TOKEN, items).await;

    assert_eq!(retry[0]["id"], first[0]["id"], "{first:?} {retry:?}");
    assert_ne!(retry[1]["id"], first[1]["id"], "no key, a new message");
    for result in first.iter().chain(&retry) {
        until_status(
            &app,
            result["id"].as_str().unwrap_or_default(),
            "queued",
            SHORT,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        calls.per_text(),
        BTreeMap::from([
            ("message keyed".to_owned(), 1),
            ("message unkeyed".to_owned(), 2)
        ])
    );
}

#[tokio::test]
async fn retries_and_the_expiry_are_posted_to_the_statuses_webhook_with_their_error() {
    let dir = TempDir::new();
    let subscriber = MockServer::start().await;
    subscriber_accepts(&subscriber, "/billing/statuses").await;
    let app = crate::webhooks::relay(&dir, &subscriber, &[]).await;
    record(&app.qikchat, "qk", Answer::Status(429), Duration::ZERO).await;
    let body = message_with(
        "retried",
        json!({"valid_until": from_now(Duration::from_secs(2))}),
    );
    let id = accept(&app, &body).await;

    let events = events_until(&subscriber, |events| {
        events.iter().any(|e| e["data"]["status"] == "expired")
    })
    .await;

    for event in &events {
        assert_eq!(event["data"]["id"], id.as_str(), "{event}");
        assert_eq!(event["data"]["reference"], "ref-retried", "{event}");
    }
    let retried = events
        .iter()
        .find(|e| e["data"]["status"] == "accepted")
        .unwrap_or_else(|| panic!("a retry back to accepted: {events:?}"));
    assert!(retried["data"]["error"]["code"].is_string(), "{retried}");
    let expired = events
        .iter()
        .find(|e| e["data"]["status"] == "expired")
        .expect("expired");
    assert!(expired["data"]["error"]["code"].is_string(), "{expired}");
    assert!(
        !events.iter().any(|e| e["data"]["status"] == "queued"),
        "{events:?}"
    );
}
