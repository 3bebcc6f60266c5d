//! Declared templates (`[templates.*]` in the callers file, `RELAY_TEMPLATES`): a template send
//! that does not fit its declaration is refused naming every wrong part, before Qikchat is
//! called; a body by name goes out in the declared order.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path},
};

use crate::helpers::{
    KEY, OTHER_TOKEN, RECIPIENT, TOKEN, TempDir, TestApp, named_fields, problem, qikchat_success,
    samples, spawn_app_with,
};

const BRAND2_KEY: &str = "qk_SENTINEL_BRAND2_KEY_templates";

const ORDER_UPDATE: &str = r#"
[templates.order_update]
languages = ["en", "hi"]
body = ["name", "order"]
header = "document"
buttons = ["url"]
"#;

fn callers(templates: &str) -> String {
    format!(
        "[clients.billing]\ntoken = \"{TOKEN}\"\n\n[clients.alerts]\ntoken = \"{OTHER_TOKEN}\"\n{templates}"
    )
}

async fn relay(dir: &TempDir, file: &str, extra: &[(&str, &str)]) -> TestApp {
    let path = dir.write("clients.toml", file);
    let mut settings = vec![("RELAY_CLIENTS_FILE", path.as_str())];
    settings.extend_from_slice(extra);
    spawn_app_with(&settings).await
}

fn send_of(template: Value) -> Value {
    json!({"to": RECIPIENT, "type": "template", "template": template})
}

/// An `order_update` that fits its declaration, with `body` as given.
fn order_update(body: Value) -> Value {
    send_of(json!({"name": "order_update", "language": "en",
        "header": {"type": "document", "link": "https://cdn.example.com/o.pdf", "filename": "o.pdf"},
        "body": body, "buttons": [{"type": "url", "text": "1234"}]}))
}

fn message_of<'a>(problem: &'a Value, field: &str) -> &'a str {
    problem["errors"]
        .as_array()
        .and_then(|errors| errors.iter().find(|e| e["field"] == field))
        .and_then(|e| e["message"].as_str())
        .unwrap_or_else(|| panic!("no error for {field} in {problem}"))
}

#[tokio::test]
async fn every_wrong_part_of_a_declared_template_is_named_and_nothing_is_sent() {
    let dir = TempDir::new();
    let app = relay(&dir, &callers(ORDER_UPDATE), &[]).await;
    app.qikchat_expects_no_call().await;
    let wrong = send_of(json!({"name": "order_update", "language": "fr",
        "header": {"type": "image", "link": "https://cdn.example.com/o.png"},
        "body": ["Siva", "#1234", "extra"], "buttons": [{"type": "quick_reply", "payload": "x"}]}));
    let body = problem(app.send(&wrong).await, 422, "invalid_request").await;
    assert_eq!(
        named_fields(&body),
        [
            "template.body",
            "template.buttons",
            "template.header",
            "template.language"
        ]
    );
    assert_eq!(
        message_of(&body, "template.body"),
        "order_update takes 2 body parameters (name, order); got 3"
    );
    assert_eq!(
        message_of(&body, "template.language"),
        "order_update is declared in en, hi; got fr"
    );
    assert_eq!(
        message_of(&body, "template.header"),
        "order_update takes a document header; got image"
    );
    // Qikchat's raw components are checked for the same parts.
    let raw = send_of(
        json!({"name": "order_update", "language": "en", "components": [
        {"type": "body", "parameters": [{"type": "text", "text": "Siva"}]}]}),
    );
    let body = problem(app.send(&raw).await, 422, "invalid_request").await;
    assert_eq!(
        named_fields(&body),
        ["template.body", "template.buttons", "template.header"]
    );
}

#[tokio::test]
async fn a_body_by_name_goes_to_qikchat_in_the_declared_order_and_is_the_same_request_as_its_list()
{
    let dir = TempDir::new();
    let app = relay(&dir, &callers(ORDER_UPDATE), &[]).await;
    app.qikchat_accepts("m-named", 1).await;
    let named = order_update(json!({"order": "#1234", "name": "Siva"}));
    let sent = app
        .http
        .post(app.url("/send"))
        .bearer_auth(TOKEN)
        .header("Idempotency-Key", "order-1234")
        .json(&named)
        .send()
        .await
        .expect("answers");
    assert_eq!(sent.status(), 200);
    let bodies = app.qikchat_bodies().await;
    assert_eq!(bodies.len(), 1);
    let components = &bodies[0]["template"]["components"];
    assert_eq!(
        components[1],
        json!({"type": "body", "parameters": [
            {"type": "text", "text": "Siva"}, {"type": "text", "text": "#1234"}]})
    );
    // The list in the declared order is the same request: replayed under the same key, not sent.
    let again = app
        .http
        .post(app.url("/send"))
        .bearer_auth(TOKEN)
        .header("Idempotency-Key", "order-1234")
        .json(&order_update(json!(["Siva", "#1234"])))
        .send()
        .await
        .expect("answers");
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["id"], "m-named");
    assert_eq!(app.qikchat_bodies().await.len(), 1);
}

#[tokio::test]
async fn a_missing_or_unknown_name_is_named_and_nothing_is_sent() {
    let dir = TempDir::new();
    let app = relay(&dir, &callers(ORDER_UPDATE), &[]).await;
    app.qikchat_expects_no_call().await;
    let typo = order_update(json!({"name": "Siva", "ordr": "#1234"}));
    let body = problem(app.send(&typo).await, 422, "invalid_request").await;
    assert_eq!(
        named_fields(&body),
        ["template.body.order", "template.body.ordr"]
    );
    assert_eq!(
        message_of(&body, "template.body.order"),
        "is missing: order_update takes name, order"
    );
    assert!(
        message_of(&body, "template.body.ordr").ends_with("did you mean order?"),
        "{body}"
    );
    // A body by name needs a declaration: only it knows the order.
    let undeclared = send_of(json!({"name": "promo", "language": "en", "body": {"name": "Siva"}}));
    let body = problem(app.send(&undeclared).await, 422, "invalid_request").await;
    assert_eq!(named_fields(&body), ["template.body"]);
}

#[tokio::test]
async fn declared_mode_refuses_an_undeclared_template_and_open_mode_sends_it() {
    let dir = TempDir::new();
    let strict = relay(
        &dir,
        &callers(ORDER_UPDATE),
        &[("RELAY_TEMPLATES", "declared")],
    )
    .await;
    strict.qikchat_accepts("m-declared", 1).await;
    let promo = send_of(json!({"name": "order_updat", "language": "en", "body": ["x"]}));
    let body = problem(strict.send(&promo).await, 422, "unknown_template").await;
    assert_eq!(named_fields(&body), ["template.name"]);
    assert!(
        message_of(&body, "template.name").ends_with("did you mean order_update?"),
        "{body}"
    );
    let fits = order_update(json!(["Siva", "#1234"]));
    assert_eq!(strict.send(&fits).await.status(), 200);

    let open_dir = TempDir::new();
    let open = relay(&open_dir, &callers(ORDER_UPDATE), &[]).await;
    open.qikchat_accepts("m-open", 1).await;
    assert_eq!(open.send(&promo).await.status(), 200);
}

#[tokio::test]
async fn a_template_declared_for_one_account_is_undeclared_for_the_others() {
    let dir = TempDir::new();
    let brand2 = MockServer::start().await;
    let key_file = dir.write("brand2-key", BRAND2_KEY);
    let file = format!(
        "[accounts.brand2]\nkey_file = \"{key_file}\"\nbase_url = \"{}\"\n\n\
         [clients.billing]\ntoken = \"{TOKEN}\"\n\n\
         [clients.marketing]\ntoken = \"{OTHER_TOKEN}\"\naccount = \"brand2\"\n\n\
         [templates.sale]\nlanguages = [\"en\"]\nbody = 1\naccount = \"brand2\"\n",
        brand2.uri()
    );
    let app = relay(&dir, &file, &[]).await;
    app.qikchat_accepts("m-default", 1).await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("QIKCHAT-API-KEY", BRAND2_KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(qikchat_success("m-brand2")))
        .expect(0)
        .mount(&brand2)
        .await;
    let two = send_of(json!({"name": "sale", "language": "en", "body": ["a", "b"]}));
    // Through the default account the template is undeclared, and passes (RELAY_TEMPLATES=open).
    assert_eq!(app.send(&two).await.status(), 200);
    let body = problem(app.send_as(OTHER_TOKEN, &two).await, 422, "invalid_request").await;
    assert_eq!(
        message_of(&body, "template.body"),
        "sale takes 1 body parameter; got 2"
    );
}

#[tokio::test]
async fn a_changed_declaration_is_used_once_the_callers_file_is_reloaded() {
    let dir = TempDir::new();
    let one = "[templates.otp]\nlanguages = [\"en\"]\nbody = 1\n";
    let app = relay(&dir, &callers(one), &[("RELAY_RELOAD_INTERVAL_MS", "50")]).await;
    // The first send, and the first of two parameters once the new declaration is in force: a
    // probe that is refused until then sends nothing while it waits.
    app.qikchat_accepts("m-otp", 2).await;
    let otp = send_of(json!({"name": "otp", "language": "en", "body": ["4711"]}));
    let two = send_of(json!({"name": "otp", "language": "en", "body": ["4711", "10"]}));
    assert_eq!(app.send(&otp).await.status(), 200);
    problem(app.send(&two).await, 422, "invalid_request").await;

    dir.write(
        "clients.toml",
        &callers("[templates.otp]\nlanguages = [\"en\"]\nbody = [\"code\", \"minutes\"]\n"),
    );
    let mut status = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = app.send(&two).await.status().as_u16();
        if status == 200 {
            break;
        }
    }
    assert_eq!(status, 200, "the new declaration takes two parameters");
    let body = problem(app.send(&otp).await, 422, "invalid_request").await;
    assert_eq!(
        message_of(&body, "template.body"),
        "otp takes 2 body parameters (code, minutes); got 1"
    );
}

#[tokio::test]
async fn refusals_are_counted_as_rejections_by_reason() {
    let dir = TempDir::new();
    let app = relay(
        &dir,
        &callers(ORDER_UPDATE),
        &[("RELAY_TEMPLATES", "declared")],
    )
    .await;
    app.qikchat_expects_no_call().await;
    let count = |m: &str, reason: &str| {
        samples(m)
            .get(&(
                "relay_rejections_total".to_owned(),
                [("reason".to_owned(), reason.to_owned())].into(),
            ))
            .copied()
            .unwrap_or(0.0)
    };
    let before = app.scrape().await;
    let unknown = send_of(json!({"name": "promo", "language": "en"}));
    problem(app.send(&unknown).await, 422, "unknown_template").await;
    let mismatch = order_update(json!(["Siva"]));
    problem(app.send(&mismatch).await, 422, "invalid_request").await;
    let after = app.scrape().await;
    for reason in ["unknown_template", "template_mismatch"] {
        assert!(
            count(&after, reason) >= count(&before, reason) + 1.0,
            "{reason}"
        );
    }
}

#[test]
fn a_bad_declaration_fails_the_callers_file_naming_it() {
    let dir = TempDir::new();
    let cases = [
        ("langauges = [\"en\"]", "line"),
        (
            "languages = [\"en\"]\nheader = \"gif\"",
            "templates.t.header",
        ),
        ("languages = [\"en\"]\nbody = -1", "templates.t.body"),
        (
            "languages = [\"en\"]\nbody = [\"a\", \"a\"]",
            "templates.t.body[1]",
        ),
        (
            "languages = [\"en\"]\nbuttons = [\"call\"]",
            "templates.t.buttons[0]",
        ),
        (
            "languages = [\"en\"]\naccount = \"brand9\"",
            "templates.t.account",
        ),
        ("body = 1", "templates.t.languages"),
    ];
    for (lines, named) in cases {
        let path = dir.write(
            "clients.toml",
            &callers(&format!("[templates.t]\n{lines}\n")),
        );
        let config = qikchat_relay::config::Config::from_pairs([
            ("QIKCHAT_API_KEY", KEY),
            ("RELAY_CLIENTS_FILE", path.as_str()),
        ])
        .expect("the environment is valid");
        let error =
            qikchat_relay::policy::Live::start(config.policy.clone(), config.upstream_timeout())
                .map(|_| ())
                .expect_err(lines)
                .to_string();
        assert!(
            error.contains("RELAY_CLIENTS_FILE") && error.contains(named),
            "{lines}: {error}"
        );
        assert!(!error.contains(TOKEN), "{error}");
    }
    let error = qikchat_relay::config::Config::from_pairs([
        ("QIKCHAT_API_KEY", KEY),
        ("RELAY_ALLOW_ANONYMOUS", "true"),
        ("RELAY_TEMPLATES", "strict"),
    ])
    .expect_err("not a mode");
    assert_eq!(error.variable, "RELAY_TEMPLATES");
}
