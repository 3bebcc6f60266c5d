//! The real binary: configuration failures (unknown `RELAY_` variables: `unknown_settings`), what
//! its logs contain (and never contain), and how it shuts down.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use crate::helpers::{
    KEY, OTHER_TOKEN, RECIPIENT, TOKEN, qikchat_accepts_slowly, qikchat_success, settings,
};

mod outbox_crash;
mod outbox_logs;
mod unknown_settings;

pub const BINARY: &str = env!("CARGO_BIN_EXE_qikchat-relay");

/// A running relay process and every line it has written so far (stdout and stderr).
pub struct Relay {
    pub child: Child,
    pub url: String,
    lines: Arc<Mutex<Vec<String>>>,
    /// Its own `RELAY_DATA_DIR` when `env` named none (the message store is always on).
    _data: Option<crate::helpers::TempDir>,
}

pub fn command(env: &[(String, String)]) -> Command {
    run(Command::new(BINARY), env)
}

/// `command` with only `env` for an environment and its output piped, killed when dropped.
fn run(mut command: Command, env: &[(String, String)]) -> Command {
    command
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

pub async fn start(env: &[(String, String)]) -> Relay {
    start_with_open_files(env, None).await
}

/// Starts the binary, with its open-files limit (soft and hard) set to `open_files` when given.
pub async fn start_with_open_files(env: &[(String, String)], open_files: Option<u64>) -> Relay {
    let data = (!env.iter().any(|(k, _)| k == "RELAY_DATA_DIR")).then(crate::helpers::TempDir::new);
    let mut env = env.to_vec();
    if let Some(dir) = &data {
        env.push((
            "RELAY_DATA_DIR".into(),
            dir.0.to_str().expect("UTF-8").into(),
        ));
    }
    let mut command = match open_files {
        None => command(&env),
        Some(limit) => {
            // prlimit (util-linux) sets the limit and then becomes the relay: same pid.
            let mut limited = Command::new("prlimit");
            limited.arg(format!("--nofile={limit}:{limit}")).arg(BINARY);
            run(limited, &env)
        }
    };
    let mut child = command.spawn().expect("the binary starts");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    for stream in [
        Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        Box::new(stderr),
    ] {
        let lines = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().expect("lock").push(line);
            }
        });
    }
    for _ in 0..200 {
        let addr = lines.lock().expect("lock").iter().find_map(|line| {
            let json: Value = serde_json::from_str(line).ok()?;
            (json["message"] == "qikchat-relay listening")
                .then(|| json["addr"].as_str().map(str::to_owned))?
        });
        if let Some(addr) = addr {
            return Relay {
                child,
                url: format!("http://{addr}"),
                lines,
                _data: data,
            };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the relay did not start: {:?}", lines.lock().expect("lock"));
}

impl Relay {
    pub fn terminate(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub async fn exit_code(&mut self, within: Duration) -> i32 {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the relay exits in time")
            .expect("wait");
        status.code().expect("an exit code, not a signal")
    }

    pub fn output(&self) -> Vec<String> {
        self.lines.lock().expect("lock").clone()
    }

    /// The output once `done` holds for it (lines are read as the process writes them), or after
    /// 5 s, whichever comes first.
    pub async fn output_once(&self, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        for _ in 0..250 {
            let output = self.output();
            if done(&output) {
                return output;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.output()
    }
}

#[tokio::test]
async fn a_missing_key_stops_the_process_with_one_line_naming_the_variable() {
    let env = [("RELAY_CLIENTS".to_owned(), format!("billing:{TOKEN}"))];
    let output = command(&env).output().await.expect("runs");

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("QIKCHAT_API_KEY"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn configuration_errors_name_the_variable_and_never_print_a_secret() {
    let qikchat = MockServer::start().await;
    for (variable, value) in [
        ("RELAY_LISTEN_ADDR", "nowhere"),
        (
            "RELAY_CLIENTS",
            &format!("billing:{TOKEN},billing:{OTHER_TOKEN}") as &str,
        ),
        ("RELAY_UPSTREAM_TIMEOUT_MS", "soon"),
        ("QIKCHAT_API_KEY_FILE", "/nonexistent/key"),
    ] {
        let env = settings(&qikchat, &[(variable, value)]);
        let output = command(&env).output().await.expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{variable}: {stderr}");
        assert!(stderr.contains(variable), "{variable}: {stderr}");
        for secret in [KEY, TOKEN, OTHER_TOKEN] {
            assert!(
                !stderr.contains(secret),
                "{variable}: a secret was printed: {stderr}"
            );
        }
    }
}

#[tokio::test]
async fn logs_never_show_the_key_a_token_or_a_full_number_even_at_trace_level() {
    let qikchat = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(qikchat_success("log-id-1")))
        .up_to_n_times(1)
        .mount(&qikchat)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"status": false, "message": format!("bad key {KEY}")})),
        )
        .up_to_n_times(1)
        .mount(&qikchat)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"message": format!("Invalid key {KEY}")})),
        )
        .mount(&qikchat)
        .await;
    let mut relay = start(&settings(&qikchat, &[("RUST_LOG", "trace")])).await;
    let http = reqwest::Client::new();
    let send = |token: &'static str| {
        http.post(format!("{}/send", relay.url))
            .bearer_auth(token)
            .json(&json!({"to": "+91 80808 08080", "type": "text", "text": "hello"}))
            .send()
    };

    let mut bodies = Vec::new();
    for token in [
        TOKEN,
        TOKEN,
        TOKEN,
        "tok_SENTINEL_unknown_0123456789",
        OTHER_TOKEN,
    ] {
        let response = send(token).await.expect("answer");
        bodies.push((
            response.status().as_u16(),
            response.text().await.expect("body"),
        ));
    }
    relay.terminate();
    assert_eq!(relay.exit_code(Duration::from_secs(10)).await, 0);

    let statuses: Vec<u16> = bodies.iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses, [200, 422, 502, 401, 502]);
    let output = relay.output();
    assert!(output.len() > 10, "trace logging is on: {output:?}");
    for text in output.iter().chain(bodies.iter().map(|(_, body)| body)) {
        for secret in [
            KEY,
            TOKEN,
            OTHER_TOKEN,
            "tok_SENTINEL_unknown",
            "918080808080",
            "80808 08080",
        ] {
            assert!(!text.contains(secret), "{secret} appears in: {text}");
        }
    }

    let finished: Vec<Value> = output
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|json| json["message"] == "request finished" && json["span"]["route"] == "/send")
        .collect();
    assert_eq!(finished.len(), 5, "one line per request: {output:?}");
    let first = &finished[0];
    assert_eq!(first["status"], 200);
    assert!(first["latency_ms"].as_f64().is_some());
    let span = &first["span"];
    for (field, expected) in [
        ("caller", json!("billing")),
        ("method", json!("POST")),
        ("type", json!("text")),
        ("outcome", json!("queued")),
        ("qikchat_id", json!("log-id-1")),
        ("qikchat_status", json!(200)),
        ("to", json!("+91******8080")),
    ] {
        assert_eq!(span[field], expected, "{field} in {first}");
    }
    assert!(span["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(finished[1]["span"]["outcome"], "rejected_by_qikchat");
    assert_eq!(finished[1]["span"]["qikchat_status"], 400);
    assert_eq!(finished[3]["status"], 401);
    assert!(
        finished[3]["span"].get("caller").is_none(),
        "an unknown token names no caller"
    );
    assert_eq!(finished[4]["span"]["caller"], "alerts");
    assert!(
        output
            .iter()
            .any(|line| line.contains("\"level\":\"ERROR\"")
                && line.contains("refused the relay's key")),
        "a refused key is an error for the operator: {output:?}"
    );
}

#[tokio::test]
async fn sigterm_lets_a_send_in_flight_finish_then_exits_0() {
    let qikchat = MockServer::start().await;
    qikchat_accepts_slowly(&qikchat, "drained-1", Duration::from_millis(1500), 1).await;
    let mut relay = start(&settings(
        &qikchat,
        &[("RELAY_UPSTREAM_TIMEOUT_MS", "5000")],
    ))
    .await;
    let http = reqwest::Client::new();
    let in_flight = tokio::spawn(
        http.post(format!("{}/send", relay.url))
            .bearer_auth(TOKEN)
            .json(&json!({"to": RECIPIENT, "type": "text", "text": "hello"}))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;

    relay.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = reqwest::Client::new()
        .get(format!("{}/healthz", relay.url))
        .send()
        .await;

    let response = in_flight
        .await
        .expect("task")
        .expect("the send in flight is answered");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["id"], "drained-1");
    assert!(refused.is_err(), "no new connections while draining");
    assert_eq!(relay.exit_code(Duration::from_secs(10)).await, 0);
}

#[tokio::test]
async fn the_drain_is_bounded_by_the_drain_timeout() {
    let qikchat = MockServer::start().await;
    qikchat_accepts_slowly(&qikchat, "slow", Duration::from_secs(20), 0..).await;
    let mut relay = start(&settings(
        &qikchat,
        &[
            ("RELAY_UPSTREAM_TIMEOUT_MS", "30000"),
            ("RELAY_DRAIN_TIMEOUT_MS", "300"),
        ],
    ))
    .await;
    let http = reqwest::Client::new();
    let _stuck = tokio::spawn(
        http.post(format!("{}/send", relay.url))
            .bearer_auth(TOKEN)
            .json(&json!({"to": RECIPIENT, "type": "text", "text": "hello"}))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = std::time::Instant::now();
    relay.terminate();

    assert_eq!(relay.exit_code(Duration::from_secs(5)).await, 0);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "exited after {:?}",
        started.elapsed()
    );
    assert!(
        relay
            .output()
            .iter()
            .any(|line| line.contains("drain timeout reached"))
    );
}

#[tokio::test]
async fn the_healthcheck_subcommand_succeeds_on_a_serving_relay_and_fails_otherwise() {
    let qikchat = MockServer::start().await;
    let relay = start(&settings(&qikchat, &[])).await;
    let addr = relay.url.trim_start_matches("http://").to_owned();
    let probe = |addr: &str, path: &str| {
        std::process::Command::new(BINARY)
            .env_clear()
            .env("RELAY_LISTEN_ADDR", addr)
            .args(["healthcheck", path])
            .output()
            .expect("runs")
    };

    assert!(probe(&addr, "/healthz").status.success());
    assert!(probe(&addr, "/readyz").status.success());
    let not_found = probe(&addr, "/nope");
    assert!(!not_found.status.success());
    assert!(String::from_utf8_lossy(&not_found.stderr).contains("answered 404"));
    drop(relay);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    assert!(!probe(&closed.to_string(), "/healthz").status.success());
}

#[tokio::test]
async fn a_send_whose_caller_hung_up_still_finishes_before_the_process_exits() {
    let qikchat = MockServer::start().await;
    qikchat_accepts_slowly(&qikchat, "abandoned", Duration::from_millis(1500), 1).await;
    let mut relay = start(&settings(
        &qikchat,
        &[("RELAY_UPSTREAM_TIMEOUT_MS", "5000")],
    ))
    .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let gave_up = impatient
        .post(format!("{}/send", relay.url))
        .bearer_auth(TOKEN)
        .json(&json!({"to": RECIPIENT, "type": "text", "text": "hello"}))
        .send()
        .await;
    assert!(gave_up.is_err(), "the caller hung up");

    let signalled = std::time::Instant::now();
    relay.terminate();

    assert_eq!(relay.exit_code(Duration::from_secs(10)).await, 0);
    let waited = signalled.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "exited after {waited:?}, before the send was over"
    );
}

#[tokio::test]
async fn qikchat_text_with_the_key_in_a_changed_form_reaches_neither_the_caller_nor_the_logs() {
    let characters: Vec<String> = KEY.chars().map(String::from).collect();
    let forms = [
        ("upper", KEY.to_uppercase()),
        ("spaced", characters.join(" ").to_uppercase()),
        ("dotted", characters.join(".")),
        ("cut", KEY[..8].to_owned()),
    ];
    let qikchat = MockServer::start().await;
    for (name, form) in &forms {
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .and(wiremock::matchers::body_partial_json(
                json!({"text": {"body": name}}),
            ))
            .respond_with(ResponseTemplate::new(400).set_body_json(
                json!({"status": false, "message": format!("Invalid API key {form} for this account")}),
            ))
            .expect(1)
            .mount(&qikchat)
            .await;
    }
    let mut relay = start(&settings(&qikchat, &[("RUST_LOG", "trace")])).await;
    let http = reqwest::Client::new();

    let mut bodies = Vec::new();
    for (name, _) in &forms {
        let response = http
            .post(format!("{}/send", relay.url))
            .bearer_auth(TOKEN)
            .json(&json!({"to": RECIPIENT, "type": "text", "text": name}))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 422, "{name}");
        let body: Value = response.json().await.expect("a problem");
        assert_eq!(body["code"], "rejected_by_qikchat", "{body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .ends_with(qikchat_relay::qikchat::WITHHELD),
            "{name}: {body}"
        );
        bodies.push(body.to_string());
    }
    relay.terminate();
    assert_eq!(relay.exit_code(Duration::from_secs(10)).await, 0);

    let output = relay.output();
    assert!(
        output
            .iter()
            .any(|line| line.contains("Qikchat's text withheld")),
        "the operator is told: {output:?}"
    );
    // Every form starts with the key's first 8 characters: none may be there in any shape.
    let fold = |text: &str| -> String {
        text.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let first_eight = fold(&KEY[..8]);
    for text in output.iter().chain(&bodies) {
        for (name, form) in &forms {
            assert!(!text.contains(form.as_str()), "{name} appears in: {text}");
        }
        assert!(
            !fold(text).contains(&first_eight),
            "the key appears in: {text}"
        );
    }
}

#[tokio::test]
async fn sigterm_stops_the_webhook_fan_out_and_the_reloads_then_exits_0_promptly() {
    let qikchat = MockServer::start().await;
    // A subscriber that takes its time: a delivery is under way when SIGTERM comes.
    let subscriber = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/alerts/inbound"))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(4)))
        .mount(&subscriber)
        .await;
    let dir = crate::helpers::TempDir::new();
    let callers = dir.write("clients.toml", &crate::webhooks::callers_file(&subscriber));
    let mut relay = start(&settings(
        &qikchat,
        &[
            ("RELAY_CLIENTS_FILE", &callers),
            ("RELAY_WEBHOOK_SECRET", crate::webhooks::WEBHOOK_SECRET),
            ("RELAY_RELOAD_INTERVAL_MS", "100"),
        ],
    ))
    .await;
    let http = reqwest::Client::new();
    let stored = crate::webhooks::post_event(
        &http,
        &relay.url,
        &crate::webhooks::inbound_event("in-stop", "hi"),
    )
    .await;
    assert_eq!(stored.status(), 200);
    assert_eq!(
        crate::webhooks::received(&subscriber, "/alerts/inbound", 1)
            .await
            .len(),
        1,
        "a delivery is under way"
    );

    let asked = std::time::Instant::now();
    relay.terminate();
    assert_eq!(relay.exit_code(Duration::from_secs(10)).await, 0);
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "exited after {:?}, not promptly",
        asked.elapsed()
    );
    let output = relay.output();
    assert!(
        output
            .iter()
            .any(|line| line.contains("background tasks stopped")),
        "the loops were stopped, not abandoned: {output:?}"
    );
}
