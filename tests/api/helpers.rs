//! Starting a relay against a fake Qikchat, and calling it.

use std::{collections::BTreeMap, net::SocketAddr};

use qikchat_relay::{config::Config, http::app::App};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path},
};

/// Sentinels: tests assert these never show up in logs, bodies or metrics.
pub const KEY: &str = "qk_SENTINEL_KEY_c0ffee_1234567890";
pub const TOKEN: &str = "tok_SENTINEL_billing_0123456789";
pub const OTHER_TOKEN: &str = "tok_SENTINEL_alerts_0123456789";
pub const RECIPIENT: &str = "+918080808080";

/// A relay on a random port and the fake Qikchat behind it. The relay stops when this is dropped.
pub struct TestApp {
    pub addr: SocketAddr,
    pub qikchat: MockServer,
    pub http: reqwest::Client,
    /// The relay's `RELAY_DATA_DIR`: its own, unless the test gave one.
    pub data: std::sync::Arc<TempDir>,
    _stop: oneshot::Sender<()>,
}

/// The settings every test relay starts from; `extra` overrides or adds to them.
pub fn settings(qikchat: &MockServer, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = vec![
        ("QIKCHAT_API_KEY".into(), KEY.into()),
        ("QIKCHAT_BASE_URL".into(), qikchat.uri()),
        ("RELAY_LISTEN_ADDR".into(), "127.0.0.1:0".into()),
        (
            "RELAY_CLIENTS".into(),
            format!("billing:{TOKEN},alerts:{OTHER_TOKEN}"),
        ),
        ("RELAY_UPSTREAM_TIMEOUT_MS".into(), "2000".into()),
        // Media links in tests point nowhere; tests/api/preflight.rs turns the check on.
        ("RELAY_MEDIA_PREFLIGHT".into(), "off".into()),
    ];
    for (key, value) in extra {
        // Each of these replaces the other, as the relay refuses both at once.
        let replaces = match *key {
            "RELAY_CLIENTS_FILE" => "RELAY_CLIENTS",
            "QIKCHAT_API_KEY_FILE" => "QIKCHAT_API_KEY",
            _ => key,
        };
        pairs.retain(|(k, _)| k != key && k != replaces);
        pairs.push(((*key).into(), (*value).into()));
    }
    pairs
}

/// A directory of the test's own, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("qikchat-relay-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }

    /// Writes `content` to `name` in the directory and returns its path as text.
    pub fn write(&self, name: &str, content: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, content).expect("write");
        path.to_str().expect("UTF-8 path").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    let qikchat = MockServer::start().await;
    let (addr, data, stop) = start_relay(&qikchat, extra).await;
    TestApp {
        addr,
        qikchat,
        http: reqwest::Client::new(),
        data,
        _stop: stop,
    }
}

/// Starts a relay against `qikchat`; it stops when the sender is dropped. Unless `extra` names a
/// `RELAY_DATA_DIR`, the relay gets one of its own (the store of message owners is always on),
/// removed once the relay and the returned handle are gone.
async fn start_relay(
    qikchat: &MockServer,
    extra: &[(&str, &str)],
) -> (SocketAddr, std::sync::Arc<TempDir>, oneshot::Sender<()>) {
    let data = std::sync::Arc::new(TempDir::new());
    let own_dir = data.0.to_str().expect("UTF-8 path").to_owned();
    let mut pairs = settings(qikchat, extra);
    if !pairs.iter().any(|(k, _)| k == "RELAY_DATA_DIR") {
        pairs.push(("RELAY_DATA_DIR".into(), own_dir));
    }
    let config = Config::from_pairs(pairs).expect("test configuration is valid");
    let app = App::build(config).await.expect("the relay starts");
    let addr = app.local_addr().expect("bound");
    let (stop, stopped) = oneshot::channel::<()>();
    let kept = data.clone();
    tokio::spawn(async move {
        let _ = app
            .run(async {
                let _ = stopped.await;
            })
            .await;
        // The directory outlives the relay's last write.
        drop(kept);
    });
    (addr, data, stop)
}

/// A second relay in front of the same fake Qikchat, as another replica would be.
pub struct Sibling {
    pub addr: SocketAddr,
    /// Its own `RELAY_DATA_DIR`, unless `extra` named one.
    _data: std::sync::Arc<TempDir>,
    _stop: oneshot::Sender<()>,
}

impl Sibling {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A `redis-server` of the test's own on a free port, stopped when dropped. `tests/run.sh` installs
/// it when it is missing.
pub struct Redis {
    pub url: String,
    child: std::process::Child,
}

impl Redis {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A `redis-server` with `extra` arguments (e.g. `--maxmemory 2mb`).
    pub async fn start_with(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (bash tests/run.sh installs it)");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Self {
            url: format!("redis://127.0.0.1:{port}"),
            child,
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

impl TestApp {
    /// Another relay with the same settings plus `extra`, in front of the same fake Qikchat.
    pub async fn sibling(&self, extra: &[(&str, &str)]) -> Sibling {
        let (addr, data, stop) = start_relay(&self.qikchat, extra).await;
        Sibling {
            addr,
            _data: data,
            _stop: stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `POST /send` as the `billing` caller.
    pub async fn send(&self, body: &Value) -> reqwest::Response {
        self.send_as(TOKEN, body).await
    }

    pub async fn send_as(&self, token: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/send"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("the relay answers")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.get_as(TOKEN, path).await
    }

    pub async fn get_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("the relay answers")
    }

    /// The relay's `/metrics` exposition.
    pub async fn scrape(&self) -> String {
        self.get("/metrics")
            .await
            .text()
            .await
            .expect("the metrics as text")
    }

    /// Qikchat answers every send with success and message id `id`, and expects `calls` of them.
    pub async fn qikchat_accepts(&self, id: &str, calls: u64) {
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .and(header("QIKCHAT-API-KEY", KEY))
            .respond_with(ResponseTemplate::new(200).set_body_json(qikchat_success(id)))
            .expect(calls)
            .mount(&self.qikchat)
            .await;
    }

    /// `token`'s caller sends a text that Qikchat accepts as `id`, so that the relay records it as
    /// that caller's message (`GET /messages/{id}` answers only for those).
    pub async fn sent_as(&self, token: &str, id: &str) {
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(qikchat_success(id)))
            .up_to_n_times(1)
            .expect(1)
            .mount(&self.qikchat)
            .await;
        let answer = self.send_as(token, &text_message()).await;
        assert_eq!(answer.status(), 200, "the send of {id} succeeds");
    }

    /// [`TestApp::sent_as`] by the `billing` caller.
    pub async fn sent(&self, id: &str) {
        self.sent_as(TOKEN, id).await;
    }

    /// Qikchat must not be called at all.
    pub async fn qikchat_expects_no_call(&self) {
        Mock::given(wiremock::matchers::any())
            .respond_with(ResponseTemplate::new(500))
            .expect(0)
            .mount(&self.qikchat)
            .await;
    }

    /// The bodies Qikchat received, as JSON.
    pub async fn qikchat_bodies(&self) -> Vec<Value> {
        self.qikchat
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).expect("the relay sends JSON"))
            .collect()
    }
}

/// Qikchat's documented success answer.
/// The fake Qikchat accepts sends as `id`, each after `delay`, and expects `calls` of them.
pub async fn qikchat_accepts_slowly(
    qikchat: &MockServer,
    id: &str,
    delay: std::time::Duration,
    calls: impl Into<wiremock::Times>,
) {
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(qikchat_success(id))
                .set_delay(delay),
        )
        .expect(calls)
        .mount(qikchat)
        .await;
}

pub fn qikchat_success(id: &str) -> Value {
    json!({
        "status": true,
        "message": "Messages queued successfully",
        "data": [{
            "id": id, "channel": "whatsapp", "from": "918080808081", "recipient": RECIPIENT,
            "credits": 0.80, "created_at": "2023-02-19T12:52:25.222Z", "status": "queued"
        }]
    })
}

pub fn text_message() -> Value {
    json!({"to": RECIPIENT, "type": "text", "text": "Your OTP is 4711"})
}

/// A problem+json answer's body, after checking its shape.
pub async fn problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(content_type, "application/problem+json", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(
        body["request_id"],
        request_id.as_str(),
        "the body names the request"
    );
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
    assert!(!body.to_string().contains(KEY), "the key leaked: {body}");
    body
}

/// The fields named by an `invalid_request` problem, sorted.
pub fn named_fields(problem: &Value) -> Vec<String> {
    let mut fields: Vec<String> = problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    fields.sort();
    fields
}

/// The samples of a Prometheus text exposition: (name, labels) -> value.
pub fn samples(exposition: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let mut samples = BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        if let Ok(value) = value.parse() {
            samples.insert((name.to_owned(), labels), value);
        }
    }
    samples
}

pub fn value(
    samples: &BTreeMap<(String, BTreeMap<String, String>), f64>,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .get(&(name.to_owned(), labels.clone()))
        .copied()
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}
