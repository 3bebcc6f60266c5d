//! One caller cannot take the relay from the others: its media links are checked only once its
//! limits have passed and without a RELAY_MAX_IN_FLIGHT permit, and `max_in_flight` in the callers
//! file bounds its own sends in flight. A local listener that accepts and never answers stands in
//! for a hostile media host.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use crate::helpers::{
    OTHER_TOKEN, RECIPIENT, TOKEN, TempDir, TestApp, problem, qikchat_accepts_slowly,
    spawn_app_with, text_message,
};

/// A media host that accepts every connection, counts it, and never answers (nor closes it).
struct SilentHost {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentHost {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let addr = listener.local_addr().expect("bound");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                held.push(connection);
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    fn link(&self, n: usize) -> String {
        format!("http://{}/image-{n}.png", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits (at most `within`) until `n` connections were accepted; the count then.
    async fn until_accepted(&self, n: usize, within: Duration) -> usize {
        let started = Instant::now();
        while self.accepted() < n && started.elapsed() < within {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.accepted()
    }
}

impl Drop for SilentHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn image(link: &str) -> Value {
    json!({"to": RECIPIENT, "type": "image", "link": link})
}

/// A relay whose callers come from `file`, checking (loopback) links in enforce mode.
async fn relay_with_file(dir: &TempDir, file: &str, extra: &[(&str, &str)]) -> TestApp {
    let path = dir.write("clients.toml", file);
    let mut settings = vec![
        ("RELAY_CLIENTS_FILE", path.as_str()),
        ("RELAY_MEDIA_PREFLIGHT", "enforce"),
        ("RELAY_MEDIA_PREFLIGHT_ALLOW_PRIVATE", "true"),
    ];
    settings.extend_from_slice(extra);
    spawn_app_with(&settings).await
}

#[tokio::test]
async fn a_rate_limited_callers_media_sends_fetch_nothing() {
    let dir = TempDir::new();
    let file = format!(
        "[clients.billing]\ntoken = \"{TOKEN}\"\nrate_per_minute = 1\nburst = 1\n\
         [clients.alerts]\ntoken = \"{OTHER_TOKEN}\"\n"
    );
    let app = relay_with_file(&dir, &file, &[("RELAY_MEDIA_PREFLIGHT_TIMEOUT_MS", "500")]).await;
    app.qikchat_accepts("the-one-allowed", 1).await;
    let media = SilentHost::start().await;
    assert_eq!(app.send(&text_message()).await.status(), 200);

    for n in 0..5 {
        problem(app.send(&image(&media.link(n))).await, 429, "rate_limited").await;
    }

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(media.accepted(), 0, "the relay connected to the media host");
}

#[tokio::test]
async fn one_callers_hanging_links_neither_delay_nor_refuse_another_callers_sends() {
    let app = spawn_app_with(&[
        ("RELAY_MEDIA_PREFLIGHT", "enforce"),
        ("RELAY_MEDIA_PREFLIGHT_ALLOW_PRIVATE", "true"),
        ("RELAY_MEDIA_PREFLIGHT_TIMEOUT_MS", "3000"),
        ("RELAY_MAX_IN_FLIGHT", "8"),
    ])
    .await;
    app.qikchat_accepts("alerts-sent", 2).await;
    let hanging = SilentHost::start().await;
    let fast = MockServer::start().await;
    Mock::given(method("HEAD"))
        .and(path("/ok.png"))
        .respond_with(ResponseTemplate::new(200).insert_header("content-type", "image/png"))
        .mount(&fast)
        .await;
    let hangs = 120;
    let attack: Vec<_> = (0..hangs)
        .map(|n| {
            let request = app
                .http
                .post(app.url("/send"))
                .bearer_auth(TOKEN)
                .json(&image(&hanging.link(n)));
            tokio::spawn(async move { request.send().await.expect("the relay answers") })
        })
        .collect();
    let started = Instant::now();
    let accepted = hanging
        .until_accepted(100, Duration::from_millis(2000))
        .await;

    let text = app.send_as(OTHER_TOKEN, &text_message()).await;
    let linked = app
        .send_as(OTHER_TOKEN, &image(&format!("{}/ok.png", fast.uri())))
        .await;
    let others_done = started.elapsed();

    assert!(accepted >= 100, "only {accepted} link checks ran at once");
    assert_eq!(text.status(), 200);
    assert_eq!(linked.status(), 200);
    assert!(
        others_done < Duration::from_millis(2900),
        "the other caller waited for the hanging checks: {others_done:?}"
    );
    for send in attack {
        let answer = send.await.expect("the send task");
        problem(answer, 422, "media_unreachable").await;
    }
}

#[tokio::test]
async fn a_caller_beyond_its_max_in_flight_is_overloaded_alone() {
    let dir = TempDir::new();
    let file = format!(
        "[clients.billing]\ntoken = \"{TOKEN}\"\nmax_in_flight = 2\n\
         [clients.alerts]\ntoken = \"{OTHER_TOKEN}\"\n"
    );
    let app = relay_with_file(&dir, &file, &[]).await;
    qikchat_accepts_slowly(&app.qikchat, "slow", Duration::from_millis(800), 4).await;

    let text = text_message();
    let first = app.send(&text);
    let second = app.send(&text);
    let third_and_other = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let third = app.send(&text_message()).await;
        let other = app.send_as(OTHER_TOKEN, &text_message()).await;
        (third, other)
    };
    let (first, second, (third, other)) = tokio::join!(first, second, third_and_other);

    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 200);
    assert_eq!(
        other.status(),
        200,
        "another caller is not held to billing's limit"
    );
    assert_eq!(
        third
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body = problem(third, 503, "overloaded").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("max_in_flight"),
        "{body}"
    );
    // Both slots came back with their answers.
    assert_eq!(app.send(&text_message()).await.status(), 200);
}

#[tokio::test]
async fn a_send_in_flight_across_a_reload_still_holds_and_then_gives_back_its_slot() {
    let dir = TempDir::new();
    let callers =
        |rate: &str| format!("[clients.billing]\ntoken = \"{TOKEN}\"\nmax_in_flight = 1\n{rate}");
    let app = relay_with_file(&dir, &callers(""), &[("RELAY_RELOAD_INTERVAL_MS", "50")]).await;
    qikchat_accepts_slowly(&app.qikchat, "slow", Duration::from_millis(1000), 2).await;

    let text = text_message();
    let first = app.send(&text);
    let during = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        dir.write("clients.toml", &callers("rate_per_minute = 600\n"));
        // The reload is polled every 50 ms; the new policy has a rate, which answers carry.
        let mut refused = None;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let response = app.send(&text_message()).await;
            if response.headers().contains_key("ratelimit-limit") {
                refused = Some(response);
                break;
            }
        }
        refused.expect("the callers file was reloaded")
    };
    let (first, during) = tokio::join!(first, during);

    assert_eq!(first.status(), 200);
    problem(during, 503, "overloaded").await;
    assert_eq!(
        app.send(&text_message()).await.status(),
        200,
        "the slot of the send that spanned the reload came back"
    );
}
