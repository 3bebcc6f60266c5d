//! Caller policy (`RELAY_CLIENTS_FILE`): what each caller may send, its rate and quota, the
//! accounts' WhatsApp pacing, several Qikchat accounts, and keys and callers that change while
//! the relay runs.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path, query_param},
};

use crate::helpers::{
    KEY, OTHER_TOKEN, RECIPIENT, Redis, TOKEN, TempDir, TestApp, problem, qikchat_success,
    spawn_app_with,
};

const MARKETING_TOKEN: &str = "tok_SENTINEL_marketing_0123456789";
const BRAND2_KEY: &str = "qk_SENTINEL_BRAND2_KEY_feedface";

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn text_to(to: &str) -> Value {
    json!({"to": to, "type": "text", "text": "Your OTP is 4711"})
}

fn template(name: &str) -> Value {
    json!({"to": RECIPIENT, "type": "template", "template": {"name": name, "language": "en"}})
}

/// A relay whose callers come from `file` (written to a temporary directory).
async fn relay_with_file(dir: &TempDir, file: &str, extra: &[(&str, &str)]) -> TestApp {
    let path = dir.write("clients.toml", file);
    let mut settings = vec![("RELAY_CLIENTS_FILE", path.as_str())];
    settings.extend_from_slice(extra);
    spawn_app_with(&settings).await
}

fn header_u64(response: &reqwest::Response, name: &str) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

#[tokio::test]
async fn each_scope_rule_refuses_with_403_naming_the_rule_and_sends_nothing() {
    let dir = TempDir::new();
    let file = format!(
        r#"
        [clients.billing]
        token_sha256 = "{}"
        types = ["text", "template"]
        templates = ["invoice_ready"]
        destinations = ["+91", "+971"]
        "#,
        sha256(TOKEN)
    );
    let app = relay_with_file(&dir, &file, &[]).await;
    app.qikchat_accepts("m-1", 2).await;

    let refused = [
        (
            json!({"to": RECIPIENT, "type": "image", "link": "https://cdn.example.com/a.png"}),
            "types",
            "may not send image messages",
        ),
        (template("promo_diwali"), "templates", "promo_diwali"),
        (text_to("+447700900123"), "destinations", "+44******0123"),
    ];
    for (body, rule, says) in refused {
        let response = app.send(&body).await;
        let problem = problem(response, 403, "forbidden").await;
        assert_eq!(problem["rule"], rule, "{problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(says) && detail.contains("billing"),
            "{detail}"
        );
        assert!(
            !detail.contains("447700900123"),
            "the full number in {detail}"
        );
    }
    // What the rules allow goes through: the two calls Qikchat expects.
    assert_eq!(app.send(&template("invoice_ready")).await.status(), 200);
    assert_eq!(app.send(&text_to("+971501234567")).await.status(), 200);
}

#[tokio::test]
async fn a_caller_over_its_rate_gets_429_with_retry_after_and_every_answer_says_what_is_left() {
    let dir = TempDir::new();
    let file = format!(
        r#"
        [clients.billing]
        token = "{TOKEN}"
        rate_per_minute = 6
        burst = 2

        [clients.alerts]
        token = "{OTHER_TOKEN}"
        "#
    );
    let app = relay_with_file(&dir, &file, &[]).await;
    app.qikchat_accepts("m-1", 3).await;

    let first = app.send(&text_to(RECIPIENT)).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header_u64(&first, "ratelimit-limit"), Some(2));
    assert_eq!(header_u64(&first, "ratelimit-remaining"), Some(1));
    assert!(header_u64(&first, "ratelimit-reset").is_some_and(|s| (1..=10).contains(&s)));
    let second = app.send(&text_to(RECIPIENT)).await;
    assert_eq!(header_u64(&second, "ratelimit-remaining"), Some(0));

    let third = app.send(&text_to(RECIPIENT)).await;
    assert_eq!(header_u64(&third, "ratelimit-remaining"), Some(0));
    let retry_after = header_u64(&third, "retry-after").expect("Retry-After");
    assert!(
        (1..=10).contains(&retry_after),
        "one send every 10 s: {retry_after}"
    );
    let problem = problem(third, 429, "rate_limited").await;
    assert_eq!(problem["rule"], "rate_per_minute");

    // Another caller has its own limit (none): not affected, and no RateLimit headers.
    let other = app.send_as(OTHER_TOKEN, &text_to(RECIPIENT)).await;
    assert_eq!(other.status(), 200);
    assert!(other.headers().get("ratelimit-limit").is_none());
}

#[tokio::test]
async fn the_daily_quota_counts_sends_and_resets_at_midnight_utc() {
    let dir = TempDir::new();
    let file = format!("[clients.billing]\ntoken = \"{TOKEN}\"\ndaily_quota = 2\n");
    let app = relay_with_file(&dir, &file, &[]).await;
    app.qikchat_accepts("m-1", 2).await;

    // An invalid request is refused before any limit: it uses nothing, and says what is left.
    let invalid = app.send(&json!({"to": RECIPIENT, "type": "text"})).await;
    assert_eq!(invalid.status(), 422);
    assert_eq!(header_u64(&invalid, "ratelimit-limit"), Some(2));
    assert_eq!(header_u64(&invalid, "ratelimit-remaining"), Some(2));
    for remaining in [1, 0] {
        let sent = app.send(&text_to(RECIPIENT)).await;
        assert_eq!(sent.status(), 200);
        assert_eq!(header_u64(&sent, "ratelimit-limit"), Some(2));
        assert_eq!(header_u64(&sent, "ratelimit-remaining"), Some(remaining));
    }
    let refused = app.send(&text_to(RECIPIENT)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let until_midnight = 86_400 - now % 86_400;
    for name in ["retry-after", "ratelimit-reset"] {
        let seconds = header_u64(&refused, name).expect(name);
        assert!(
            seconds.abs_diff(until_midnight) <= 2,
            "{name}: {seconds} vs {until_midnight}"
        );
    }
    let problem = problem(refused, 429, "rate_limited").await;
    assert_eq!(problem["rule"], "daily_quota");
    // Any answer to this caller says where it stands, a status lookup too.
    let lookup = app.get("/messages/m-1").await;
    assert_eq!(header_u64(&lookup, "ratelimit-remaining"), Some(0));
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("00:00 UTC")
    );
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_is_answered_even_when_the_limit_is_used_up() {
    let dir = TempDir::new();
    let file = format!("[clients.billing]\ntoken = \"{TOKEN}\"\nrate_per_minute = 1\nburst = 1\n");
    let app = relay_with_file(&dir, &file, &[]).await;
    app.qikchat_accepts("m-1", 1).await;
    let send = |key: &'static str| {
        app.http
            .post(app.url("/send"))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", key)
            .json(&text_to(RECIPIENT))
            .send()
    };

    assert_eq!(send("order-1").await.expect("answer").status(), 200);
    let replay = send("order-1").await.expect("answer");
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    // A new message is limited, and its key stays free for a retry once the limit allows it.
    let limited = send("order-2").await.expect("answer");
    assert_eq!(limited.status(), 429);
}

#[tokio::test]
async fn two_relays_share_one_limit_and_one_quota_through_redis() {
    let redis = Redis::start().await;
    let dir = TempDir::new();
    let file = format!(
        "[clients.billing]\ntoken = \"{TOKEN}\"\nrate_per_minute = 1\nburst = 3\n\n[clients.alerts]\ntoken = \"{OTHER_TOKEN}\"\ndaily_quota = 2\n"
    );
    let settings = [("RELAY_REDIS_URL", redis.url.as_str())];
    let app = relay_with_file(&dir, &file, &settings).await;
    let path = dir.0.join("clients.toml");
    let path = path.to_str().expect("UTF-8");
    let sibling = app
        .sibling(&[
            ("RELAY_CLIENTS_FILE", path),
            ("RELAY_REDIS_URL", &redis.url),
        ])
        .await;
    app.qikchat_accepts("m-1", 5).await;
    let send_via = |url: String, token: &'static str| {
        app.http
            .post(url)
            .bearer_auth(token)
            .json(&text_to(RECIPIENT))
            .send()
    };

    let mut statuses = Vec::new();
    for url in [
        app.url("/send"),
        sibling.url("/send"),
        app.url("/send"),
        sibling.url("/send"),
    ] {
        statuses.push(
            send_via(url, TOKEN)
                .await
                .expect("answer")
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "a burst of 3 across both replicas"
    );

    let mut statuses = Vec::new();
    for url in [sibling.url("/send"), app.url("/send"), sibling.url("/send")] {
        statuses.push(
            send_via(url, OTHER_TOKEN)
                .await
                .expect("answer")
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        statuses,
        [200, 200, 429],
        "a daily quota of 2 across both replicas"
    );
}

#[tokio::test]
async fn an_account_paces_each_recipient_and_caps_its_sends_per_second() {
    let dir = TempDir::new();
    let file = format!(
        r#"
        [accounts.default]
        recipient_burst = 2
        recipient_interval_ms = 60000

        [clients.billing]
        token = "{TOKEN}"

        [clients.alerts]
        token = "{OTHER_TOKEN}"
        "#
    );
    let app = relay_with_file(&dir, &file, &[]).await;
    app.qikchat_accepts("m-1", 3).await;

    // Two to one customer, from any caller; a third to them is paced: WhatsApp would refuse it.
    assert_eq!(app.send(&text_to(RECIPIENT)).await.status(), 200);
    assert_eq!(
        app.send_as(OTHER_TOKEN, &text_to(RECIPIENT)).await.status(),
        200
    );
    let paced = app.send(&text_to(RECIPIENT)).await;
    let retry_after = header_u64(&paced, "retry-after").expect("Retry-After");
    assert!((50..=60).contains(&retry_after), "{retry_after}");
    let paced = problem(paced, 429, "rate_limited").await;
    assert_eq!(paced["rule"], "recipient_interval_ms");
    assert!(
        !paced["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("8080808080")
    );
    // Another customer is not affected.
    assert_eq!(app.send(&text_to("+918080808081")).await.status(), 200);

    // The account's throughput: 2 a second, whoever the recipients are.
    let dir = TempDir::new();
    let file = format!(
        "[accounts.default]\nrate_per_second = 2\n\n[clients.billing]\ntoken = \"{TOKEN}\"\n"
    );
    let app = relay_with_file(&dir, &file, &[]).await;
    app.qikchat_accepts("m-2", 2).await;
    assert_eq!(app.send(&text_to("+918080808082")).await.status(), 200);
    assert_eq!(app.send(&text_to("+918080808083")).await.status(), 200);
    let capped = app.send(&text_to("+918080808084")).await;
    assert_eq!(header_u64(&capped, "retry-after"), Some(1));
    let capped = problem(capped, 429, "rate_limited").await;
    assert_eq!(capped["rule"], "rate_per_second");
}

#[tokio::test]
async fn a_send_refused_by_one_limit_uses_up_none_of_the_others() {
    let dir = TempDir::new();
    let file = format!(
        r#"
        [accounts.default]
        recipient_burst = 1
        recipient_interval_ms = 60000

        [clients.billing]
        token = "{TOKEN}"
        rate_per_minute = 1
        burst = 2
        daily_quota = 2
        "#
    );
    let app = relay_with_file(&dir, &file, &[]).await;
    app.qikchat_accepts("m-1", 2).await;

    assert_eq!(app.send(&text_to(RECIPIENT)).await.status(), 200);
    // Paced: the caller's rate and quota are left as they were.
    let paced = app.send(&text_to(RECIPIENT)).await;
    assert_eq!(header_u64(&paced, "ratelimit-remaining"), Some(1));
    assert_eq!(
        problem(paced, 429, "rate_limited").await["rule"],
        "recipient_interval_ms"
    );
    // So one more send to someone else still fits both.
    let sent = app.send(&text_to("+918080808081")).await;
    assert_eq!(sent.status(), 200);
    assert_eq!(header_u64(&sent, "ratelimit-remaining"), Some(0));
}

#[tokio::test]
async fn each_account_sends_with_its_own_key_to_its_own_base_url() {
    let dir = TempDir::new();
    let brand2 = MockServer::start().await;
    let key_file = dir.write("brand2-key", &format!("{BRAND2_KEY}\n"));
    let file = format!(
        r#"
        [accounts.brand2]
        key_file = "{key_file}"
        base_url = "{}"

        [clients.billing]
        token = "{TOKEN}"

        [clients.marketing]
        token = "{MARKETING_TOKEN}"
        account = "brand2"
        "#,
        brand2.uri()
    );
    let app = relay_with_file(&dir, &file, &[]).await;
    app.qikchat_accepts("m-default", 1).await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("QIKCHAT-API-KEY", BRAND2_KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(qikchat_success("m-brand2")))
        .expect(1)
        .mount(&brand2)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/messages"))
        .and(query_param("msgid", "m-brand2"))
        .and(header("QIKCHAT-API-KEY", BRAND2_KEY))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"status": true,
            "message": {"event": "whatsapp:message:dlr", "payload": {"id": "m-brand2",
            "message": {"type": "text", "status": "read"}}}})),
        )
        .expect(1)
        .mount(&brand2)
        .await;

    let sent: Value = app
        .send(&text_to(RECIPIENT))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(sent["id"], "m-default");
    let sent: Value = app
        .send_as(MARKETING_TOKEN, &text_to(RECIPIENT))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(sent["id"], "m-brand2");
    // The status lookup goes to the caller's account.
    let status = app.get_as(MARKETING_TOKEN, "/messages/m-brand2").await;
    assert_eq!(status.status(), 200);
    let status: Value = status.json().await.expect("json");
    assert_eq!(status["status"], "read");
}

/// Kubernetes updates a mounted secret by writing a new directory and swapping the `..data`
/// symlink to it; the file the relay reads is a symlink through `..data`.
fn kubernetes_secret(dir: &TempDir, generation: u32, key: &str) -> String {
    let version = dir.0.join(format!("..2026_11_25_{generation}"));
    std::fs::create_dir_all(&version).expect("version dir");
    std::fs::write(version.join("qikchat-api-key"), key).expect("write key");
    let staged = dir.0.join("..data_tmp");
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(&version, &staged).expect("symlink");
    std::fs::rename(&staged, dir.0.join("..data")).expect("atomic swap");
    let visible = dir.0.join("qikchat-api-key");
    if !visible.exists() {
        std::os::unix::fs::symlink(dir.0.join("..data/qikchat-api-key"), &visible)
            .expect("symlink");
    }
    visible.to_str().expect("UTF-8").to_owned()
}

#[tokio::test]
async fn a_rotated_key_file_is_used_for_the_next_send_and_a_send_in_flight_keeps_its_key() {
    let dir = TempDir::new();
    let key_file = kubernetes_secret(&dir, 1, KEY);
    let app = spawn_app_with(&[
        ("QIKCHAT_API_KEY_FILE", &key_file),
        ("RELAY_RELOAD_INTERVAL_MS", "50"),
    ])
    .await;
    const NEW_KEY: &str = "qk_SENTINEL_ROTATED_KEY_0ddba11";
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("QIKCHAT-API-KEY", KEY))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(qikchat_success("m-old"))
                .set_delay(Duration::from_millis(800)),
        )
        .mount(&app.qikchat)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("QIKCHAT-API-KEY", NEW_KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(qikchat_success("m-new")))
        .mount(&app.qikchat)
        .await;

    // A send starts with the old key; the key is rotated while Qikchat takes its time.
    let in_flight = {
        let (http, url) = (app.http.clone(), app.url("/send"));
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(TOKEN)
                .json(&text_to(RECIPIENT))
                .send()
                .await
                .expect("answer")
                .json::<Value>()
                .await
                .expect("json")
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    kubernetes_secret(&dir, 2, &format!("{NEW_KEY}\n"));

    assert_eq!(in_flight.await.expect("joined")["id"], "m-old");
    let mut id = Value::Null;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent: Value = app
            .send(&text_to(RECIPIENT))
            .await
            .json()
            .await
            .expect("json");
        id = sent["id"].clone();
        if id == "m-new" {
            break;
        }
    }
    assert_eq!(id, "m-new", "the rotated key is used without a restart");
    let keys: Vec<String> = app
        .qikchat
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| {
            r.headers
                .get("QIKCHAT-API-KEY")?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(keys.first().map(String::as_str), Some(KEY));
    assert_eq!(keys.last().map(String::as_str), Some(NEW_KEY));
}

#[tokio::test]
async fn a_callers_file_is_reloaded_when_it_changes_and_a_broken_one_keeps_the_last_good_one() {
    let dir = TempDir::new();
    let billing_only = format!("[clients.billing]\ntoken = \"{TOKEN}\"\n");
    let app = relay_with_file(&dir, &billing_only, &[("RELAY_RELOAD_INTERVAL_MS", "50")]).await;
    app.qikchat_accepts("m-1", 3).await;
    assert_eq!(app.send(&text_to(RECIPIENT)).await.status(), 200);
    assert_eq!(
        app.send_as(OTHER_TOKEN, &text_to(RECIPIENT)).await.status(),
        401
    );

    // Broken: a rule that does not exist. The running policy stays.
    dir.write(
        "clients.toml",
        &format!("[clients.billing]\ntoken = \"{TOKEN}\"\ntypes = [\"txt\"]\n"),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.send(&text_to(RECIPIENT)).await.status(), 200);

    // Fixed, with alerts added and billing gone.
    dir.write(
        "clients.toml",
        &format!("[clients.alerts]\ntoken = \"{OTHER_TOKEN}\"\n"),
    );
    let mut status = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = app
            .send_as(OTHER_TOKEN, &text_to(RECIPIENT))
            .await
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
    }
    assert_eq!(status, 200, "alerts was added without a restart");
    assert_eq!(
        app.send(&text_to(RECIPIENT)).await.status(),
        401,
        "billing was removed"
    );
}

#[test]
fn a_callers_file_with_a_bad_entry_is_refused_at_start_naming_the_entry_and_never_the_token() {
    let dir = TempDir::new();
    let cases = [
        ("types = [\"video\", \"vidoe\"]", "clients.billing.types[1]"),
        ("account = \"brand9\"", "clients.billing.account"),
        ("destinations = [\"91\"]", "clients.billing.destinations[0]"),
        ("burst = 5", "clients.billing.rate_per_minute"),
        ("daily_quota = 0", "clients.billing.daily_quota"),
        ("max_in_flight = 0", "clients.billing.max_in_flight"),
        ("max_in_flight = -2", "line 3"),
        ("rate = 5", "line 3"),
        (
            "webhooks = { statuses = \"http://billing/\" }",
            "clients.billing.webhooks",
        ),
        (
            "webhooks = { statuses = \"http://billing/\", inbound_replies = true, \
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" }",
            "clients.billing.webhooks.inbound",
        ),
        (
            "webhooks = { inbound = \"http://billing/\", inbound_keywords = [\"STOP\", \"two words\"], \
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" }",
            "clients.billing.webhooks.inbound_keywords",
        ),
        (
            "webhooks = { inbound = \"http://billing/\", inbound_keywords = [], \
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" }",
            "clients.billing.webhooks.inbound_keywords",
        ),
    ];
    for (line, named) in cases {
        let path = dir.write(
            "clients.toml",
            &format!("[clients.billing]\ntoken = \"{TOKEN}\"\n{line}\n"),
        );
        let error = refused_at_start(&path).expect_err(line);
        let text = error.to_string();
        assert!(
            text.contains("RELAY_CLIENTS_FILE") && text.contains(named),
            "{line}: {text}"
        );
        assert!(!text.contains(TOKEN) && !text.contains(KEY), "{text}");
    }
    let path = dir.write("clients.toml", "[clients.billing]\ntoken = \"short\"\n");
    let error = refused_at_start(&path).expect_err("a short token");
    assert!(
        error.to_string().contains("clients.billing.token"),
        "{error}"
    );
    let error = qikchat_relay::config::Config::from_pairs([
        ("QIKCHAT_API_KEY", KEY),
        ("RELAY_CLIENTS", &format!("billing:{TOKEN}")),
        ("RELAY_CLIENTS_FILE", path.as_str()),
    ])
    .expect_err("both");
    assert_eq!(error.variable, "RELAY_CLIENTS_FILE");
}

/// What the start makes of a callers file at `path`: the environment names it (and reads no
/// file), then the policy reads it, as `main` does before it serves.
fn refused_at_start(path: &str) -> Result<(), String> {
    let config = qikchat_relay::config::Config::from_pairs([
        ("QIKCHAT_API_KEY", KEY),
        ("RELAY_CLIENTS_FILE", path),
    ])
    .map_err(|e| e.to_string())?;
    qikchat_relay::policy::Live::start(config.policy.clone(), config.upstream_timeout())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn sighup_reloads_the_callers_file_at_once() {
    let dir = TempDir::new();
    let path = dir.write(
        "clients.toml",
        &format!("[clients.billing]\ntoken = \"{TOKEN}\"\n"),
    );
    let qikchat = MockServer::start().await;
    let relay = crate::process::start(&crate::helpers::settings(
        &qikchat,
        &[
            ("RELAY_CLIENTS_FILE", &path),
            // Never by polling within this test: only the signal can do it.
            ("RELAY_RELOAD_INTERVAL_MS", "3600000"),
        ],
    ))
    .await;
    let http = reqwest::Client::new();
    let status_as = |token: &'static str| {
        http.get(format!("{}/messages/m-1", relay.url))
            .bearer_auth(token)
            .send()
    };
    dir.write(
        "clients.toml",
        &format!("[clients.alerts]\ntoken = \"{OTHER_TOKEN}\"\n"),
    );
    assert_eq!(status_as(OTHER_TOKEN).await.expect("answer").status(), 401);

    let pid = relay.child.id().expect("running").to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(signalled.success());
    let mut status = 401;
    for _ in 0..50 {
        status = status_as(OTHER_TOKEN)
            .await
            .expect("answer")
            .status()
            .as_u16();
        if status != 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(status, 401, "alerts is a caller after SIGHUP");
    assert_eq!(status_as(TOKEN).await.expect("answer").status(), 401);
    let output = relay
        .output_once(|lines| lines.iter().any(|l| l.contains("configuration reloaded")))
        .await;
    let reloaded = output
        .iter()
        .find(|l| l.contains("configuration reloaded"))
        .expect("a reload line");
    assert!(reloaded.contains("SIGHUP"), "{reloaded}");
    for line in &output {
        assert!(!line.contains(KEY) && !line.contains(OTHER_TOKEN), "{line}");
    }
}

#[test]
fn the_example_callers_file_in_deploy_is_one_the_relay_accepts() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/clients.example.toml");
    // Sandbox mode: the example's key files are not on this machine.
    let config = qikchat_relay::config::Config::from_pairs([
        ("RELAY_SANDBOX", "true"),
        ("RELAY_CLIENTS_FILE", path),
    ])
    .expect("the example loads");
    let (spec, _) = qikchat_relay::policy::load(&config.policy).expect("loads");
    assert!(spec.callers.len() >= 3, "{spec:?}");
    assert!(spec.accounts.len() >= 2, "{spec:?}");
    assert!(
        spec.callers
            .iter()
            .any(|(_, rules)| rules.daily_quota.is_some())
    );
    assert!(spec.accounts.values().any(|a| a.recipient_rate.is_some()));
    assert!(
        spec.templates
            .declared
            .values()
            .any(|d| d.account.is_some())
    );
}
