//! The conversation: the 24-hour customer-service window and the opt-out lists, learnt from
//! Qikchat's webhooks posted as Qikchat posts them, and what they do to sends.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::MockServer;

use crate::helpers::{
    OTHER_TOKEN, RECIPIENT, Redis, TOKEN, TempDir, TestApp, problem, qikchat_success, samples,
    settings, value,
};
use crate::process;
use crate::webhooks::{
    ADMIN_TOKEN, WEBHOOK_SECRET, inbound_event, inbound_from, post_event, relay_with_callers,
    status_event,
};

/// The window of [`RECIPIENT`], as a path.
const WINDOW: &str = "/customers/%2B918080808080/window";
const OPT_OUT: &str = "/opt-outs/%2B918080808080";

/// billing is an ordinary caller; alerts sends one-time passwords (`ignore_opt_out`).
fn callers(extra_account: &str) -> String {
    format!(
        r#"
        [accounts.default]
        {extra_account}

        [clients.billing]
        token = "{TOKEN}"

        [clients.alerts]
        token = "{OTHER_TOKEN}"
        ignore_opt_out = true
        "#
    )
}

async fn relay(dir: &TempDir, extra: &[(&str, &str)]) -> TestApp {
    relay_with_callers(dir, &callers(""), extra).await
}

fn text() -> Value {
    json!({"to": RECIPIENT, "type": "text", "text": "Your order shipped"})
}

fn template() -> Value {
    json!({"to": RECIPIENT, "type": "template",
        "template": {"name": "order_update", "language": "en", "body": ["Asha", "#1234"]}})
}

/// GETs `path` as billing until `done` holds for its JSON (or 10 s have passed), and returns it.
async fn until(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        last = app.get(path).await.json().await.unwrap_or_default();
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never got there: {last}");
}

async fn admin(app: &TestApp, method: reqwest::Method, path: &str) -> reqwest::Response {
    app.http
        .request(method, app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("the relay answers")
}

/// The opt-out list of the default account, once `done` holds for it.
async fn opt_outs_until(app: &TestApp, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut last = Vec::new();
    for _ in 0..200 {
        let list: Value = admin(app, reqwest::Method::GET, "/opt-outs")
            .await
            .json()
            .await
            .unwrap_or_default();
        last = list["opt_outs"].as_array().cloned().unwrap_or_default();
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the opt-out list never got there: {last:?}");
}

async fn post(app: &TestApp, event: &Value) {
    let answer = post_event(&app.http, &app.url(""), event).await;
    assert_eq!(answer.status(), 200);
}

async fn sent(app: &TestApp, body: &Value) -> Value {
    let answer = app.send(body).await;
    assert_eq!(answer.status(), 200);
    answer.json().await.expect("JSON")
}

#[tokio::test]
async fn the_window_is_unknown_then_open_after_the_customer_writes_then_closed_and_warned_about() {
    let dir = TempDir::new();
    let app = relay(&dir, &[("RELAY_CUSTOMER_WINDOW_S", "2")]).await;
    app.qikchat_accepts("wamid-1", 4).await;

    // Nothing received yet: the relay cannot tell, and refuses nothing.
    let unknown: Value = app.get(WINDOW).await.json().await.expect("JSON");
    assert_eq!(unknown, json!({"open": null}));
    assert!(sent(&app, &text()).await.get("warnings").is_none());

    post(&app, &inbound_event("in-1", "Where is my order?")).await;
    let open = until(&app, WINDOW, |w| w["open"] == true).await;
    for field in ["last_inbound_at", "closes_at"] {
        assert!(
            open[field].as_str().is_some_and(|t| t.ends_with('Z')),
            "{open}"
        );
    }
    assert!(sent(&app, &text()).await.get("warnings").is_none());

    let closed = until(&app, WINDOW, |w| w["open"] == false).await;
    assert_eq!(closed["last_inbound_at"], open["last_inbound_at"]);
    // warn (the default): sent, with a warning naming `type`.
    let warned = sent(&app, &text()).await;
    assert_eq!(warned["warnings"][0]["field"], "type", "{warned}");
    assert_eq!(warned["warnings"][0]["code"], "outside_customer_window");
    // A template opens a conversation: never held by the window.
    assert!(sent(&app, &template()).await.get("warnings").is_none());
    assert_eq!(app.qikchat_bodies().await.len(), 4);
}

#[tokio::test]
async fn enforced_a_closed_window_refuses_free_form_messages_but_never_templates() {
    let dir = TempDir::new();
    let app = relay(
        &dir,
        &[
            ("RELAY_CUSTOMER_WINDOW", "enforce"),
            ("RELAY_CUSTOMER_WINDOW_S", "1"),
        ],
    )
    .await;
    app.qikchat_accepts("wamid-1", 2).await;
    post(&app, &inbound_event("in-1", "hi")).await;
    until(&app, WINDOW, |w| w["open"] == true).await;
    sent(&app, &text()).await;
    until(&app, WINDOW, |w| w["open"] == false).await;

    let refused = problem(app.send(&text()).await, 422, "outside_customer_window").await;
    assert_eq!(refused["errors"][0]["field"], "type", "{refused}");
    let detail = refused["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("last wrote at") && detail.contains("template"),
        "{detail}"
    );
    sent(&app, &template()).await;
    assert_eq!(
        app.qikchat_bodies().await.len(),
        2,
        "the refused text was not sent"
    );
    // The recorder is the test process's, shared by tests running beside this one: at least
    // this refusal is counted (exact counts are checked in a process of its own, below).
    let rejections = value(
        &samples(&app.scrape().await),
        "relay_rejections_total",
        &[("reason", "outside_customer_window")],
    );
    assert!(rejections >= 1.0, "{rejections}");
}

#[tokio::test]
async fn a_customer_never_seen_is_known_closed_once_webhooks_have_run_longer_than_the_window() {
    let dir = TempDir::new();
    let app = relay(
        &dir,
        &[
            ("RELAY_CUSTOMER_WINDOW", "enforce"),
            ("RELAY_CUSTOMER_WINDOW_S", "1"),
        ],
    )
    .await;
    app.qikchat_accepts("wamid-1", 1).await;
    // Another customer writes: the account's webhooks are running from now on.
    post(&app, &inbound_from("+971501234567", "in-9", "hello")).await;
    post(&app, &status_event("unrelated", "delivered")).await;
    // Within the first window the relay cannot tell: sent.
    assert_eq!(
        app.get(WINDOW).await.json::<Value>().await.ok(),
        Some(json!({"open": null}))
    );
    sent(&app, &text()).await;

    let closed = until(&app, WINDOW, |w| w["open"] == false).await;
    assert_eq!(closed, json!({"open": false}), "never seen: no dates");
    problem(app.send(&text()).await, 422, "outside_customer_window").await;
    let other: Value = app
        .get("/customers/+971501234567/window")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(other["open"], false, "their window has closed too: {other}");
    assert_eq!(app.qikchat_bodies().await.len(), 1);
}

#[tokio::test]
async fn off_the_window_holds_nothing_and_a_bad_number_is_named() {
    let dir = TempDir::new();
    let app = relay(
        &dir,
        &[
            ("RELAY_CUSTOMER_WINDOW", "off"),
            ("RELAY_CUSTOMER_WINDOW_S", "1"),
        ],
    )
    .await;
    app.qikchat_accepts("wamid-1", 1).await;
    post(&app, &inbound_event("in-1", "hi")).await;
    until(&app, WINDOW, |w| w["open"] == true).await;
    until(&app, WINDOW, |w| w["open"] == false).await;
    assert!(sent(&app, &text()).await.get("warnings").is_none());

    let bad = problem(
        app.get("/customers/12345/window").await,
        422,
        "invalid_request",
    )
    .await;
    assert_eq!(bad["errors"][0]["field"], "number", "{bad}");
    let undecodable = problem(
        app.get("/customers/%FF/window").await,
        422,
        "invalid_request",
    )
    .await;
    assert_eq!(undecodable["errors"][0]["field"], "number");
    let anonymous = app.http.get(app.url(WINDOW)).send().await.expect("answer");
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn stop_in_any_case_opts_out_start_opts_back_in_and_the_exempt_caller_still_sends() {
    let dir = TempDir::new();
    let app = relay(&dir, &[]).await;
    app.qikchat_accepts("wamid-1", 3).await;

    // Not a keyword: a message that merely contains one.
    post(&app, &inbound_event("in-0", "please don't stop")).await;
    post(&app, &inbound_event("in-1", "  sToP \n")).await;
    let list = opt_outs_until(&app, |list| !list.is_empty()).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["customer"], "+91******8080");
    assert_eq!(list[0]["how"], "keyword");

    let refused = problem(app.send(&text()).await, 403, "forbidden").await;
    assert_eq!(refused["rule"], "opted_out", "{refused}");
    assert!(
        !refused.to_string().contains("918080808080"),
        "masked only: {refused}"
    );
    // Templates too: an opt-out is from every message of the account.
    problem(app.send(&template()).await, 403, "forbidden").await;
    assert!(app.qikchat_bodies().await.is_empty(), "nothing was sent");
    // A caller that sends only what the customer asked for (OTPs) is not held.
    assert_eq!(app.send_as(OTHER_TOKEN, &text()).await.status(), 200);

    post(&app, &inbound_event("in-2", "START")).await;
    opt_outs_until(&app, <[Value]>::is_empty).await;
    sent(&app, &text()).await;
    post(&app, &inbound_event("in-3", "Unsubscribe")).await;
    opt_outs_until(&app, |list| list.len() == 1).await;
    problem(app.send(&text()).await, 403, "forbidden").await;
    // The same STOP posted again by Qikchat, or routed again, changes nothing.
    post(&app, &inbound_event("in-3", "Unsubscribe")).await;
    post(&app, &inbound_event("in-4", "START")).await;
    opt_outs_until(&app, <[Value]>::is_empty).await;
    sent(&app, &text()).await;
    assert_eq!(app.qikchat_bodies().await.len(), 3);
}

#[tokio::test]
async fn an_accounts_own_keywords_replace_the_defaults() {
    let dir = TempDir::new();
    let callers = callers(
        r#"opt_out_keywords = ["Basta", "parar"]
        opt_in_keywords = ["volver"]"#,
    );
    let app = relay_with_callers(&dir, &callers, &[]).await;
    post(&app, &inbound_event("in-1", "STOP")).await;
    post(&app, &inbound_event("in-2", "basta")).await;
    let list = opt_outs_until(&app, |list| !list.is_empty()).await;
    assert_eq!(list.len(), 1);
    post(&app, &inbound_event("in-3", "VOLVER")).await;
    opt_outs_until(&app, <[Value]>::is_empty).await;
}

#[tokio::test]
async fn operators_list_add_and_remove_opt_outs_with_the_admin_token_only() {
    let dir = TempDir::new();
    let app = relay(&dir, &[]).await;
    app.qikchat_accepts("wamid-1", 1).await;

    for token in [None, Some(TOKEN)] {
        let mut request = app.http.get(app.url("/opt-outs"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        problem(request.send().await.expect("answer"), 401, "unauthorized").await;
    }
    let added = admin(&app, reqwest::Method::PUT, OPT_OUT).await;
    assert_eq!(added.status(), 200);
    let added: Value = added.json().await.expect("JSON");
    assert_eq!(added["opted_out"], true);
    assert_eq!(added["customer"], "+91******8080");
    assert_eq!(added["entry"]["how"], "admin");
    // Again: unchanged, with its first date.
    let again: Value = admin(&app, reqwest::Method::PUT, OPT_OUT)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(again["entry"]["since"], added["entry"]["since"]);
    problem(app.send(&text()).await, 403, "forbidden").await;

    let list: Value = admin(&app, reqwest::Method::GET, "/opt-outs?account=default")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(list["account"], "default");
    assert_eq!(list["opt_outs"], json!([added["entry"]]));

    let removed: Value = admin(&app, reqwest::Method::DELETE, OPT_OUT)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(removed["opted_out"], false, "{removed}");
    sent(&app, &text()).await;

    let unknown = problem(
        admin(&app, reqwest::Method::GET, "/opt-outs?account=nope").await,
        422,
        "invalid_request",
    )
    .await;
    assert_eq!(unknown["errors"][0]["field"], "account");
    let bad = problem(
        admin(&app, reqwest::Method::PUT, "/opt-outs/0800-CALL-NOW").await,
        422,
        "invalid_request",
    )
    .await;
    assert_eq!(bad["errors"][0]["field"], "number");
}

#[tokio::test]
async fn an_opt_out_is_kept_across_a_restart_of_the_embedded_store() {
    let dir = TempDir::new();
    {
        let app = relay(&dir, &[]).await;
        post(&app, &inbound_event("in-1", "STOP")).await;
        opt_outs_until(&app, |list| list.len() == 1).await;
    }
    // The same RELAY_DATA_DIR, a new process state.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let app = relay(&dir, &[]).await;
    problem(app.send(&text()).await, 403, "forbidden").await;
    assert!(app.qikchat_bodies().await.is_empty());
    let window: Value = app.get(WINDOW).await.json().await.expect("JSON");
    assert_eq!(window["open"], true, "the window is kept too: {window}");
}

#[tokio::test]
async fn two_replicas_on_redis_share_the_opt_outs_and_the_windows() {
    let redis = Redis::start().await;
    let dir = TempDir::new();
    let settings = [("RELAY_REDIS_URL", redis.url.as_str())];
    let app = relay(&dir, &settings).await;
    let file = dir.0.join("clients.toml");
    let other = app
        .sibling(&[
            ("RELAY_CLIENTS_FILE", file.to_str().expect("UTF-8")),
            ("RELAY_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("RELAY_ADMIN_TOKEN", ADMIN_TOKEN),
            ("RELAY_REDIS_URL", redis.url.as_str()),
        ])
        .await;
    app.qikchat_accepts("wamid-1", 1).await;

    // Qikchat's call reaches the first replica; the second refuses the send.
    post(&app, &inbound_event("in-1", "STOP")).await;
    opt_outs_until(&app, |list| list.len() == 1).await;
    let refused = app
        .http
        .post(other.url("/send"))
        .bearer_auth(TOKEN)
        .json(&text())
        .send()
        .await
        .expect("answer");
    let refused = problem(refused, 403, "forbidden").await;
    assert_eq!(refused["rule"], "opted_out");
    let window: Value = app
        .http
        .get(other.url(WINDOW))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("JSON");
    assert_eq!(window["open"], true, "{window}");

    // An operator takes them off on the second: the first sends again.
    let removed = app
        .http
        .delete(other.url(OPT_OUT))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(removed.status(), 200);
    sent(&app, &text()).await;
    assert_eq!(app.qikchat_bodies().await.len(), 1);
}

#[tokio::test]
async fn no_full_number_reaches_a_log_line_a_metric_or_an_admin_answer() {
    let qikchat = MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/v1/messages"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(qikchat_success("w-1")))
        .mount(&qikchat)
        .await;
    let dir = TempDir::new();
    let file = dir.write("clients.toml", &callers(""));
    let env = settings(
        &qikchat,
        &[
            ("RUST_LOG", "trace"),
            ("RELAY_CLIENTS_FILE", &file),
            ("RELAY_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("RELAY_ADMIN_TOKEN", ADMIN_TOKEN),
            ("RELAY_CUSTOMER_WINDOW_S", "1"),
        ],
    );
    let mut relay = process::start(&env).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", relay.url);
    let mut answers = Vec::new();
    let hook = http
        .post(url(&format!("/webhooks/qikchat/{WEBHOOK_SECRET}")))
        .json(&inbound_event("in-1", "STOP"))
        .send()
        .await
        .expect("answer");
    assert_eq!(hook.status(), 200);
    let mut listed = Value::Null;
    for _ in 0..200 {
        listed = http
            .get(url("/opt-outs"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("answer")
            .json()
            .await
            .unwrap_or_default();
        if listed["opt_outs"].as_array().is_some_and(|l| !l.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed["opt_outs"][0]["customer"], "+91******8080");
    answers.push(listed.to_string());
    for request in [
        http.get(url(WINDOW)).bearer_auth(TOKEN),
        http.get(url("/customers/+91 80808 08080/window"))
            .bearer_auth(TOKEN),
        http.put(url(OPT_OUT)).bearer_auth(ADMIN_TOKEN),
        http.delete(url(OPT_OUT)).bearer_auth(ADMIN_TOKEN),
        http.put(url(OPT_OUT)).bearer_auth(ADMIN_TOKEN),
        http.post(url("/send")).bearer_auth(TOKEN).json(&text()),
        // Exempt from the opt-out, and outside the window by now: sent with a warning.
        http.post(url("/send"))
            .bearer_auth(OTHER_TOKEN)
            .json(&text()),
        http.get(url("/metrics")),
    ] {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let answer = request.send().await.expect("answer");
        answers.push(answer.text().await.expect("body"));
    }
    assert!(
        answers[6].contains("opted_out"),
        "the send was refused: {}",
        answers[6]
    );
    assert!(
        answers[7].contains("outside_customer_window"),
        "sent with a warning: {}",
        answers[7]
    );
    // A process of its own: the counts are exactly this test's.
    let metrics = samples(&answers[8]);
    for (name, labels, expected) in [
        ("relay_rejections_total", vec![("reason", "opted_out")], 1.0),
        (
            "relay_conversation_warnings_total",
            vec![("rule", "outside_customer_window")],
            1.0,
        ),
        (
            "relay_opt_out_changes_total",
            vec![("change", "opt_out"), ("how", "keyword")],
            1.0,
        ),
        (
            "relay_opt_out_changes_total",
            vec![("change", "opt_out"), ("how", "admin")],
            2.0,
        ),
        (
            "relay_opt_out_changes_total",
            vec![("change", "opt_in"), ("how", "admin")],
            1.0,
        ),
    ] {
        assert_eq!(value(&metrics, name, &labels), expected, "{name}{labels:?}");
    }
    relay.terminate();
    assert_eq!(relay.exit_code(Duration::from_secs(10)).await, 0);
    let output = relay.output();
    assert!(
        output
            .iter()
            .any(|line| line.contains("/customers/{number}/window")
                && line.contains("+91******8080")),
        "the window's log line names the route and the masked number: {output:?}"
    );
    for text in output.iter().chain(&answers) {
        for number in ["918080808080", "80808 08080", "80808%2008080"] {
            assert!(!text.contains(number), "{number} appears in: {text}");
        }
    }
}
