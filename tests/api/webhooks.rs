//! Qikchat's webhooks: received, stored, and passed on to the right subscriber, signed, in order,
//! at least once, through failures, dead letters and replays.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, Request, ResponseTemplate,
    matchers::{method, path},
};

use crate::helpers::{
    OTHER_TOKEN, RECIPIENT, TOKEN, TempDir, TestApp, problem, qikchat_success, samples,
    spawn_app_with, value,
};

pub const WEBHOOK_SECRET: &str = "hook-SENTINEL-path-secret-0123";
pub const ADMIN_TOKEN: &str = "adm_SENTINEL_0123456789abcdef";
/// The contract's example subscriber secret (Standard Webhooks: `whsec_` + base64).
pub const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A callers file where billing gets its statuses and alerts gets customers' messages.
pub fn callers_file(subscriber: &MockServer) -> String {
    format!(
        r#"
        [clients.billing]
        token = "{TOKEN}"
        [clients.billing.webhooks]
        statuses = "{uri}/billing/statuses"
        secret = "{SIGNING_SECRET}"

        [clients.alerts]
        token = "{OTHER_TOKEN}"
        [clients.alerts.webhooks]
        inbound = "{uri}/alerts/inbound"
        secret = "{SIGNING_SECRET}"
        "#,
        uri = subscriber.uri()
    )
}

/// A relay with webhooks on, its data in `dir`, callers from [`callers_file`].
pub async fn relay(dir: &TempDir, subscriber: &MockServer, extra: &[(&str, &str)]) -> TestApp {
    relay_with_callers(dir, &callers_file(subscriber), extra).await
}

pub async fn relay_with_callers(dir: &TempDir, callers: &str, extra: &[(&str, &str)]) -> TestApp {
    let file = dir.write("clients.toml", callers);
    let data = dir.0.join("data");
    let mut settings = vec![
        ("RELAY_CLIENTS_FILE", file.as_str()),
        ("RELAY_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("RELAY_ADMIN_TOKEN", ADMIN_TOKEN),
        ("RELAY_DATA_DIR", data.to_str().expect("UTF-8")),
        ("RELAY_WEBHOOK_RETRY_BASE_MS", "50"),
        ("RELAY_WEBHOOK_MAX_ATTEMPTS", "3"),
    ];
    settings.extend_from_slice(extra);
    spawn_app_with(&settings).await
}

pub fn status_event(id: &str, status: &str) -> Value {
    json!({"event": "whatsapp:message:status", "payload": {
        "id": id, "contacts": [{"to": RECIPIENT}], "from_qikchat": "kept",
        "message": {"type": "text", "status": status, "lastUpdatedAt": "2026-11-25T10:00:00.000Z"}}})
}

pub fn inbound_event(id: &str, text: &str) -> Value {
    inbound_from(RECIPIENT, id, text)
}

pub fn inbound_from(number: &str, id: &str, text: &str) -> Value {
    json!({"message": {"event": "whatsapp:message:in", "payload": {
        "id": id, "contacts": [{"to": number, "profile": {"name": "Asha"}}],
        "message": {"type": "text", "text": {"body": text}}}}})
}

pub async fn post_event(http: &reqwest::Client, base: &str, event: &Value) -> reqwest::Response {
    http.post(format!("{base}/webhooks/qikchat/{WEBHOOK_SECRET}"))
        .json(event)
        .send()
        .await
        .expect("the relay answers")
}

/// Posts `count` inbound events (`in-0`, `in-1`, ...) all at once, spread over the relays at
/// `bases`, and checks that each was taken.
async fn post_burst(http: &reqwest::Client, bases: &[String], count: usize) {
    let posts: Vec<_> = (0..count)
        .map(|n| {
            let (http, base) = (http.clone(), bases[n % bases.len()].clone());
            tokio::spawn(async move {
                post_event(&http, &base, &inbound_event(&format!("in-{n}"), "hi"))
                    .await
                    .status()
            })
        })
        .collect();
    for post in posts {
        assert_eq!(post.await.expect("joined"), 200);
    }
}

/// The subscriber accepts everything on `at`.
pub async fn subscriber_accepts(subscriber: &MockServer, at: &str) {
    Mock::given(method("POST"))
        .and(path(at))
        .respond_with(ResponseTemplate::new(204))
        .mount(subscriber)
        .await;
}

/// The requests the subscriber received on `at`, once there are at least `count` (or after 10 s).
pub async fn received(subscriber: &MockServer, at: &str, count: usize) -> Vec<Request> {
    let mut requests = Vec::new();
    for _ in 0..500 {
        requests = subscriber
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == at)
            .collect();
        if requests.len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    requests
}

/// Verifies a delivery with the Standard Webhooks reference library, then reads its body.
pub fn verified(request: &Request) -> Value {
    let webhook = standardwebhooks::Webhook::new(SIGNING_SECRET).expect("a valid secret");
    webhook
        .verify(&request.body, &request.headers)
        .expect("the signature verifies");
    serde_json::from_slice(&request.body).expect("JSON")
}

/// The distinct event ids among verified deliveries.
fn distinct_ids(deliveries: &[Request]) -> Vec<String> {
    let mut ids: Vec<String> = deliveries
        .iter()
        .map(|r| {
            verified(r)["data"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

async fn send_one(app: &TestApp, id: &str) {
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(qikchat_success(id)))
        .up_to_n_times(1)
        .mount(&app.qikchat)
        .await;
    let sent: Value = app
        .send(&json!({"to": RECIPIENT, "type": "text", "text": "hi"}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(sent["id"], id);
}

#[tokio::test]
async fn a_status_reaches_the_caller_that_sent_the_message_signed_and_with_every_field() {
    let dir = TempDir::new();
    let subscriber = MockServer::start().await;
    subscriber_accepts(&subscriber, "/billing/statuses").await;
    let app = relay(&dir, &subscriber, &[]).await;
    send_one(&app, "m-1").await;

    let answer = post_event(&app.http, &app.url(""), &status_event("m-1", "delivered")).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.json::<Value>().await.expect("json")["status"],
        "stored"
    );

    let deliveries = received(&subscriber, "/billing/statuses", 1).await;
    assert_eq!(deliveries.len(), 1);
    let body = verified(&deliveries[0]);
    assert_eq!(body["type"], "message.status");
    assert_eq!(body["data"]["id"], "m-1");
    assert_eq!(body["data"]["status"], "delivered");
    assert_eq!(body["data"]["account"], "default");
    assert_eq!(
        body["data"]["payload"]["from_qikchat"], "kept",
        "unknown fields are kept"
    );
    assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    // Nothing for the inbound subscriber, which did not send m-1.
    assert!(received(&subscriber, "/alerts/inbound", 1).await.is_empty());

    // The status lookup now answers from the webhook, without asking Qikchat.
    let status: Value = app.get("/messages/m-1").await.json().await.expect("json");
    assert_eq!(status["status"], "delivered");
    assert_eq!(status["updated_at"], "2026-11-25T10:00:00.000Z");
    let lookups = app
        .qikchat
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == "GET")
        .count();
    assert_eq!(lookups, 0);
    // Another caller does not read billing's message at all, nor is Qikchat asked for it.
    let other = app.get_as(OTHER_TOKEN, "/messages/m-1").await;
    problem(other, 404, "not_found").await;
}

#[tokio::test]
async fn a_customers_message_reaches_the_accounts_inbound_subscriber_in_either_envelope() {
    let dir = TempDir::new();
    let subscriber = MockServer::start().await;
    subscriber_accepts(&subscriber, "/alerts/inbound").await;
    let app = relay(&dir, &subscriber, &[]).await;

    assert_eq!(
        post_event(&app.http, &app.url(""), &inbound_event("in-1", "STOP"))
            .await
            .status(),
        200
    );
    let flat = json!({"event": "whatsapp:message:in", "payload": {"id": "in-2",
        "message": {"type": "text", "text": {"body": "HELP"}}}});
    assert_eq!(
        post_event(&app.http, &app.url(""), &flat).await.status(),
        200
    );

    let deliveries = received(&subscriber, "/alerts/inbound", 2).await;
    let bodies: Vec<Value> = deliveries.iter().map(verified).collect();
    let texts: Vec<&str> = bodies
        .iter()
        .map(|b| {
            b["data"]["payload"]["message"]["text"]["body"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    assert!(
        texts.contains(&"STOP") && texts.contains(&"HELP"),
        "{bodies:?}"
    );
    assert!(bodies.iter().all(|b| b["type"] == "message.inbound"));
    let stop = bodies
        .iter()
        .find(|b| b["data"]["id"] == "in-1")
        .expect("in-1");
    assert_eq!(stop["data"]["from"], RECIPIENT);
}

#[tokio::test]
async fn customers_messages_are_routed_by_keyword_and_by_who_last_wrote_to_the_customer() {
    const SUPPORT_TOKEN: &str = "tok_SENTINEL_support_0123456789";
    const OTHER_CUSTOMER: &str = "+14155550100";
    let dir = TempDir::new();
    let subscriber = MockServer::start().await;
    // billing gets replies to what it sent; compliance gets STOP and UNSUBSCRIBE; support, with
    // no filter, gets every customer message of the account.
    let callers = format!(
        r#"
        [clients.billing]
        token = "{TOKEN}"
        webhooks = {{ inbound = "{uri}/billing", inbound_replies = true, secret = "{SIGNING_SECRET}" }}
        [clients.compliance]
        token = "{OTHER_TOKEN}"
        webhooks = {{ inbound = "{uri}/compliance", inbound_keywords = ["STOP", "unsubscribe"], secret = "{SIGNING_SECRET}" }}
        [clients.support]
        token = "{SUPPORT_TOKEN}"
        webhooks = {{ inbound = "{uri}/support", secret = "{SIGNING_SECRET}" }}
        "#,
        uri = subscriber.uri()
    );
    for at in ["/billing", "/compliance", "/support"] {
        subscriber_accepts(&subscriber, at).await;
    }
    let app = relay_with_callers(&dir, &callers, &[]).await;
    let post = |event: Value| {
        let (http, base) = (app.http.clone(), app.url(""));
        async move { assert_eq!(post_event(&http, &base, &event).await.status(), 200) }
    };

    // Nobody wrote to this customer yet, and "hello" is no keyword: support only.
    post(inbound_from(RECIPIENT, "in-hello", "hello")).await;
    assert_eq!(received(&subscriber, "/support", 1).await.len(), 1);
    // billing writes to the customer; their answer, with the number as Qikchat writes it
    // (no +), is a reply to billing.
    send_one(&app, "sent-1").await;
    post(inbound_from(
        RECIPIENT.trim_start_matches('+'),
        "in-reply",
        "Where is my order?",
    ))
    .await;
    // A keyword, whatever its case and punctuation, from someone billing never wrote to.
    post(inbound_from(OTHER_CUSTOMER, "in-stop-other", "stop!")).await;
    // A keyword from billing's customer: both filters match.
    post(inbound_from(RECIPIENT, "in-stop", "Unsubscribe me please")).await;

    let ids = |at: &'static str, count: usize| {
        let subscriber = &subscriber;
        async move { distinct_ids(&received(subscriber, at, count).await) }
    };
    assert_eq!(
        ids("/support", 4).await,
        ["in-hello", "in-reply", "in-stop", "in-stop-other"]
    );
    assert_eq!(ids("/billing", 2).await, ["in-reply", "in-stop"]);
    assert_eq!(ids("/compliance", 2).await, ["in-stop", "in-stop-other"]);
    // Nothing else arrives later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ids("/billing", 0).await.len(), 2);
    assert_eq!(ids("/compliance", 0).await.len(), 2);

    // compliance now writes to the customer last: the next plain reply is no longer billing's.
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(qikchat_success("sent-2")))
        .mount(&app.qikchat)
        .await;
    let sent = app
        .send_as(
            OTHER_TOKEN,
            &json!({"to": RECIPIENT, "type": "text", "text": "You are unsubscribed"}),
        )
        .await;
    assert_eq!(sent.status(), 200);
    post(inbound_from(RECIPIENT, "in-thanks", "thanks")).await;
    assert_eq!(ids("/support", 5).await.len(), 5);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ids("/billing", 0).await, ["in-reply", "in-stop"]);
    assert_eq!(ids("/compliance", 0).await, ["in-stop", "in-stop-other"]);
}

#[tokio::test]
async fn wrong_secrets_missing_basic_auth_duplicates_and_junk_are_told_apart() {
    let dir = TempDir::new();
    let subscriber = MockServer::start().await;
    subscriber_accepts(&subscriber, "/alerts/inbound").await;
    let app = relay(
        &dir,
        &subscriber,
        &[("RELAY_WEBHOOK_BASIC_AUTH", "qikchat:s3cret-SENTINEL")],
    )
    .await;
    let url = app.url(&format!("/webhooks/qikchat/{WEBHOOK_SECRET}"));
    let event = inbound_event("in-1", "hello");

    let wrong = app
        .http
        .post(app.url("/webhooks/qikchat/not-the-secret-at-all"))
        .basic_auth("qikchat", Some("s3cret-SENTINEL"))
        .json(&event)
        .send()
        .await
        .expect("answer");
    problem(wrong, 404, "not_found").await;
    let no_auth = app
        .http
        .post(&url)
        .json(&event)
        .send()
        .await
        .expect("answer");
    assert_eq!(
        no_auth.headers()["www-authenticate"],
        "Basic realm=\"qikchat-relay\""
    );
    problem(no_auth, 401, "unauthorized").await;

    let post = || {
        app.http
            .post(&url)
            .basic_auth("qikchat", Some("s3cret-SENTINEL"))
            .json(&event)
            .send()
    };
    let first: Value = post().await.expect("answer").json().await.expect("json");
    let again: Value = post().await.expect("answer").json().await.expect("json");
    assert_eq!(
        (first["status"].as_str(), again["status"].as_str()),
        (Some("stored"), Some("duplicate"))
    );
    let junk = app
        .http
        .post(&url)
        .basic_auth("qikchat", Some("s3cret-SENTINEL"))
        .json(&json!({"hello": "world"}))
        .send()
        .await
        .expect("answer");
    problem(junk, 400, "malformed_request").await;
    let other: Value = app
        .http
        .post(&url)
        .basic_auth("qikchat", Some("s3cret-SENTINEL"))
        .json(&json!({"event": "whatsapp:template:approved", "payload": {"id": "t-1"}}))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(
        other["status"], "ignored",
        "taken, so Qikchat does not retry, and dropped"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        received(&subscriber, "/alerts/inbound", 2).await.len(),
        1,
        "a duplicate is not passed on"
    );
}

#[tokio::test]
async fn a_failing_subscriber_gets_retries_in_order_then_dead_letters_that_an_operator_replays() {
    let dir = TempDir::new();
    let subscriber = MockServer::start().await;
    // Fails the first attempt, then takes everything.
    Mock::given(method("POST"))
        .and(path("/billing/statuses"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&subscriber)
        .await;
    subscriber_accepts(&subscriber, "/billing/statuses").await;
    let app = relay(&dir, &subscriber, &[]).await;
    send_one(&app, "m-1").await;

    for status in ["sent", "delivered", "read"] {
        post_event(&app.http, &app.url(""), &status_event("m-1", status)).await;
    }
    let requests = received(&subscriber, "/billing/statuses", 4).await;
    let statuses: Vec<String> = requests
        .iter()
        .map(|r| {
            verified(r)["data"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    // The first failed and was retried before the next event of the same message went out.
    assert_eq!(statuses, ["sent", "sent", "delivered", "read"]);
    let ids: Vec<&str> = requests
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap_or_default())
        .collect();
    assert_eq!(ids[0], ids[1], "a retry has the same webhook-id");

    // A subscriber that never answers well: 3 attempts, then a dead letter.
    subscriber.reset().await;
    Mock::given(method("POST"))
        .and(path("/billing/statuses"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&subscriber)
        .await;
    send_one(&app, "m-2").await;
    post_event(&app.http, &app.url(""), &status_event("m-2", "failed")).await;
    assert_eq!(received(&subscriber, "/billing/statuses", 3).await.len(), 3);

    let list = |token: &'static str| {
        app.http
            .get(app.url("/webhooks/dead-letters"))
            .bearer_auth(token)
            .send()
    };
    problem(list(TOKEN).await.expect("answer"), 401, "unauthorized").await;
    let bad_limit = app
        .get_as(ADMIN_TOKEN, "/webhooks/dead-letters?limit=1.5")
        .await;
    let bad_limit = problem(bad_limit, 422, "invalid_request").await;
    assert_eq!(bad_limit["errors"][0]["field"], "limit");
    let mut letters = Vec::new();
    for _ in 0..50 {
        letters = list(ADMIN_TOKEN)
            .await
            .expect("answer")
            .json::<Vec<Value>>()
            .await
            .expect("json");
        if !letters.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["attempts"], 3);
    assert_eq!(letters[0]["last_error"], "HTTP 500");
    assert_eq!(letters[0]["caller"], "billing");
    assert_eq!(letters[0]["body"]["data"]["id"], "m-2");

    // The subscriber is fixed; the operator replays the letter.
    subscriber.reset().await;
    subscriber_accepts(&subscriber, "/billing/statuses").await;
    let id = letters[0]["id"].as_str().expect("an id");
    let replayed = app
        .http
        .post(app.url(&format!("/webhooks/dead-letters/{id}/replay")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(replayed.status(), 202);
    let delivered = received(&subscriber, "/billing/statuses", 1).await;
    assert_eq!(verified(&delivered[0])["data"]["id"], "m-2");
    assert_eq!(delivered[0].headers["webhook-id"], id);
    let left = list(ADMIN_TOKEN)
        .await
        .expect("answer")
        .json::<Vec<Value>>()
        .await
        .expect("json");
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_burst_of_hundreds_of_events_is_stored_and_each_delivered_once() {
    let dir = TempDir::new();
    let subscriber = MockServer::start().await;
    subscriber_accepts(&subscriber, "/alerts/inbound").await;
    let app = relay(&dir, &subscriber, &[]).await;

    post_burst(&app.http, &[app.url("")], 300).await;
    let deliveries = received(&subscriber, "/alerts/inbound", 300).await;
    let ids = distinct_ids(&deliveries);
    assert_eq!(ids.len(), 300);
    assert_eq!(deliveries.len(), 300, "no duplicates in a healthy run");
}

#[tokio::test]
async fn webhooks_are_off_without_a_secret() {
    let app = spawn_app_with(&[]).await;
    let answer = post_event(&app.http, &app.url(""), &inbound_event("in-1", "hi")).await;
    problem(answer, 404, "not_found").await;
    // The operator's endpoints ask for their token first, and no token is configured.
    let letters = app.get_as(ADMIN_TOKEN, "/webhooks/dead-letters").await;
    problem(letters, 401, "unauthorized").await;
}

/// Posts an event to a relay process whose subscriber fails, kills the process with SIGKILL
/// once the event is acknowledged and a delivery has failed, then starts a new process on the
/// same store: the event reaches the subscriber once it recovers.
async fn survives_a_crash(store: &[(&str, &str)]) {
    let dir = TempDir::new();
    let subscriber = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/alerts/inbound"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&subscriber)
        .await;
    let file = dir.write("clients.toml", &callers_file(&subscriber));
    let qikchat = MockServer::start().await;
    let mut extra = vec![
        ("RELAY_CLIENTS_FILE", file.as_str()),
        ("RELAY_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("RELAY_WEBHOOK_RETRY_BASE_MS", "100"),
        ("RELAY_WEBHOOK_MAX_ATTEMPTS", "50"),
    ];
    extra.extend_from_slice(store);
    let settings = crate::helpers::settings(&qikchat, &extra);
    let http = reqwest::Client::new();

    let mut first = crate::process::start(&settings).await;
    let answer = post_event(
        &http,
        &first.url,
        &inbound_event("in-crash", "still there?"),
    )
    .await;
    assert_eq!(answer.status(), 200);
    assert!(
        !received(&subscriber, "/alerts/inbound", 1).await.is_empty(),
        "an attempt failed"
    );
    first.child.start_kill().expect("SIGKILL");
    first.child.wait().await.expect("killed");

    subscriber.reset().await;
    subscriber_accepts(&subscriber, "/alerts/inbound").await;
    let second = crate::process::start(&settings).await;
    let delivered = received(&subscriber, "/alerts/inbound", 1).await;
    assert_eq!(delivered.len(), 1, "delivered after the restart");
    assert_eq!(verified(&delivered[0])["data"]["id"], "in-crash");
    // The webhook's path secret and the signing secret appear in no log line.
    for line in first.output().iter().chain(second.output().iter()) {
        assert!(!line.contains(WEBHOOK_SECRET), "{line}");
        assert!(!line.contains(&SIGNING_SECRET[6..]), "{line}");
    }
    assert!(
        first
            .output()
            .iter()
            .any(|l| l.contains("webhook delivery failed; retrying")),
        "the failed attempt is logged"
    );
}

#[tokio::test]
async fn an_acknowledged_event_survives_a_crash_in_the_embedded_store() {
    let dir = TempDir::new();
    let data = dir.0.join("data");
    survives_a_crash(&[("RELAY_DATA_DIR", data.to_str().expect("UTF-8"))]).await;
}

#[tokio::test]
async fn an_acknowledged_event_survives_a_crash_in_redis() {
    let redis = crate::helpers::Redis::start().await;
    survives_a_crash(&[("RELAY_REDIS_URL", &redis.url)]).await;
}

#[tokio::test]
async fn two_replicas_share_one_redis_stream_and_deliver_each_event_once() {
    let redis = crate::helpers::Redis::start().await;
    let dir = TempDir::new();
    let subscriber = MockServer::start().await;
    subscriber_accepts(&subscriber, "/alerts/inbound").await;
    let app = relay(&dir, &subscriber, &[("RELAY_REDIS_URL", &redis.url)]).await;
    let file = dir.0.join("clients.toml");
    let sibling = app
        .sibling(&[
            ("RELAY_CLIENTS_FILE", file.to_str().expect("UTF-8")),
            ("RELAY_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("RELAY_REDIS_URL", &redis.url),
        ])
        .await;
    let bases = [app.url(""), sibling.url("")];

    post_burst(&app.http, &bases, 100).await;
    // The same event posted to the other replica is a duplicate there too.
    let again: Value = post_event(&app.http, &bases[1], &inbound_event("in-0", "hi"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["status"], "duplicate");

    let deliveries = received(&subscriber, "/alerts/inbound", 100).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deliveries = received(&subscriber, "/alerts/inbound", deliveries.len()).await;
    let ids = distinct_ids(&deliveries);
    assert_eq!(ids.len(), 100, "every event delivered");
    assert_eq!(
        deliveries.len(),
        100,
        "and none twice, though at least once would allow it"
    );
}

/// A tmpfs of `size` mounted on a directory of the test's own, unmounted when dropped.
struct SmallDisk {
    dir: TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = TempDir::new();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir.0)
            .status()
            .expect("mount runs");
        assert!(
            mounted.success(),
            "this test needs to mount a tmpfs (run the tests as root)"
        );
        Self { dir }
    }

    /// Fills what is left of the disk with `filler`.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.dir.0.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: the relay may still hold its database open for a moment after the test.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_webhook_events_with_503_and_readiness_says_why_until_space_comes_back()
{
    let dir = TempDir::new();
    let disk = SmallDisk::mount("4m");
    let data = disk.dir.0.join("data");
    let subscriber = MockServer::start().await;
    let app = relay(
        &dir,
        &subscriber,
        &[("RELAY_DATA_DIR", data.to_str().expect("UTF-8"))],
    )
    .await;
    let big = |n: usize| big_inbound(&format!("in-{n}"), 20_000);
    assert_eq!(app.get("/readyz").await.status(), 200);
    let filler = disk.fill();

    let mut refused = None;
    for n in 0..100 {
        let answer = post_event(&app.http, &app.url(""), &big(n)).await;
        if answer.status() != 200 {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("an event is refused once the disk is full");
    problem(refused, 503, "upstream_unavailable").await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let health: Value = ready.json().await.expect("json");
    assert_eq!(health["status"], "store_unwritable");

    std::fs::remove_file(filler).expect("space comes back");
    assert_eq!(app.get("/readyz").await.status(), 200);
    let stored = post_event(&app.http, &app.url(""), &big(1000)).await;
    assert_eq!(stored.status(), 200);
}

/// A customer's message carrying `filler` bytes, so that a few fill a small store.
fn big_inbound(id: &str, filler: usize) -> Value {
    let mut event = inbound_event(id, "hello");
    event["message"]["payload"]["filler"] = json!("x".repeat(filler));
    event
}

/// `RELAY_WEBHOOK_STORE_MAX_MB=1` in `store` (embedded or Redis), with 50 KB events: delivered
/// events make room for new ones, events still to deliver are never dropped, and once they alone
/// fill the bound an event is refused 503 `overloaded` (Qikchat retries) until they are delivered.
async fn bounded_store(store: &[(&str, &str)]) {
    const EVENT_BYTES: usize = 50_000;
    let dir = TempDir::new();
    let subscriber = MockServer::start().await;
    subscriber_accepts(&subscriber, "/alerts/inbound").await;
    let mut settings = vec![("RELAY_WEBHOOK_STORE_MAX_MB", "1")];
    settings.extend_from_slice(store);
    let app = relay(&dir, &subscriber, &settings).await;
    let gauge = |name: &'static str| {
        let app = &app;
        async move { value(&samples(&app.scrape().await), name, &[]) }
    };
    assert_eq!(gauge("relay_webhook_store_max_bytes").await, 1_048_576.0);

    // Three megabytes through a one-megabyte store, each event delivered before the next comes.
    for n in 0..60 {
        let answer = post_event(
            &app.http,
            &app.url(""),
            &big_inbound(&format!("in-{n}"), EVENT_BYTES),
        )
        .await;
        assert_eq!(answer.status(), 200, "event {n}: {:?}", answer.text().await);
        assert_eq!(
            received(&subscriber, "/alerts/inbound", n + 1).await.len(),
            n + 1
        );
    }
    assert!(gauge("relay_webhook_store_bytes").await <= 1_048_576.0);
    assert!(gauge("relay_webhook_store_dropped_total").await >= 30.0);
    // A dropped event's payload is gone, not the memory of it: Qikchat's retry is a duplicate.
    let again = post_event(&app.http, &app.url(""), &big_inbound("in-0", EVENT_BYTES)).await;
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["status"], "duplicate");

    // The subscriber goes down: its events become dead letters, which are kept, never dropped.
    subscriber.reset().await;
    Mock::given(method("POST"))
        .and(path("/alerts/inbound"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&subscriber)
        .await;
    let mut refused = None;
    for n in 0..60 {
        let id = format!("held-{n}");
        // Each from another customer, so that their deliveries fail side by side, not in turn.
        let mut event = big_inbound(&id, EVENT_BYTES);
        event["message"]["payload"]["contacts"][0]["to"] = json!(format!("+91808080{n:04}"));
        let answer = post_event(&app.http, &app.url(""), &event).await;
        if answer.status() != 200 {
            refused = Some((n, event, answer));
            break;
        }
    }
    let (held, refused_event, refused) =
        refused.expect("the store refuses once undelivered events fill it");
    assert!(refused.headers().contains_key("retry-after"));
    let body = problem(refused, 503, "overloaded").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("RELAY_WEBHOOK_STORE_MAX_MB"),
        "{body}"
    );
    let full = value(
        &samples(&app.scrape().await),
        "relay_webhook_events_total",
        &[("kind", "inbound"), ("result", "full")],
    );
    assert!(full >= 1.0, "{full}");

    // Fixed and replayed, the held events are delivered, and the refused one is taken on retry.
    let mut letters = Vec::new();
    for _ in 0..1500 {
        letters = app
            .get_as(ADMIN_TOKEN, "/webhooks/dead-letters?limit=100")
            .await
            .json::<Vec<Value>>()
            .await
            .expect("json");
        if letters.len() >= held {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(letters.len(), held, "every held event became a dead letter");
    subscriber.reset().await;
    subscriber_accepts(&subscriber, "/alerts/inbound").await;
    for letter in &letters {
        let id = letter["id"].as_str().expect("an id");
        let replayed = app
            .http
            .post(app.url(&format!("/webhooks/dead-letters/{id}/replay")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("answer");
        assert_eq!(replayed.status(), 202);
    }
    let delivered = received(&subscriber, "/alerts/inbound", held).await;
    assert_eq!(
        distinct_ids(&delivered).len(),
        held,
        "each held event is delivered"
    );
    let mut retried = None;
    for _ in 0..100 {
        let answer = post_event(&app.http, &app.url(""), &refused_event).await;
        if answer.status() == 200 {
            retried = Some(answer.json::<Value>().await.expect("json"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        retried.expect("taken once there is room")["status"],
        "stored"
    );
}

#[tokio::test]
async fn the_embedded_store_keeps_to_its_bound_and_refuses_only_when_undelivered_events_fill_it() {
    let dir = TempDir::new();
    let data = dir.0.join("bounded");
    bounded_store(&[("RELAY_DATA_DIR", data.to_str().expect("UTF-8"))]).await;
}

#[tokio::test]
async fn the_redis_store_keeps_to_its_bound_and_refuses_only_when_undelivered_events_fill_it() {
    let redis = crate::helpers::Redis::start().await;
    bounded_store(&[("RELAY_REDIS_URL", &redis.url)]).await;
}

#[tokio::test]
async fn a_redis_out_of_memory_refuses_webhook_events_with_503_and_readiness_says_why_until_it_has_room()
 {
    let redis = crate::helpers::Redis::start_with(&["--maxmemory-policy", "noeviction"]).await;
    let dir = TempDir::new();
    let subscriber = MockServer::start().await;
    subscriber_accepts(&subscriber, "/alerts/inbound").await;
    let app = relay(&dir, &subscriber, &[("RELAY_REDIS_URL", &redis.url)]).await;
    let raw = redis::Client::open(redis.url.as_str())
        .expect("a client")
        .get_multiplexed_async_connection()
        .await
        .expect("a connection");
    let max_memory = |bytes: &'static str| {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET").arg("maxmemory").arg(bytes);
        let raw = raw.clone();
        async move {
            let mut raw = raw;
            let (): () = cmd.query_async(&mut raw).await.expect("CONFIG SET");
        }
    };
    let stored = post_event(&app.http, &app.url(""), &big_inbound("before", 20_000)).await;
    assert_eq!(stored.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);

    // Redis out of memory (maxmemory below what it holds, no eviction): it refuses every write.
    max_memory("1").await;
    let refused = post_event(&app.http, &app.url(""), &big_inbound("refused", 20_000)).await;
    problem(refused, 503, "upstream_unavailable").await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let health: Value = ready.json().await.expect("json");
    assert_eq!(health["status"], "store_unwritable");

    max_memory("0").await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    let stored = post_event(&app.http, &app.url(""), &big_inbound("refused", 20_000)).await;
    let stored: Value = stored.json().await.expect("json");
    assert_eq!(
        stored["status"], "stored",
        "the refused event was not kept half-way"
    );
}
