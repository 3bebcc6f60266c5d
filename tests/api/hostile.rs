//! Holding under hostile load: stalled and flooding connections, invented methods, ambiguous
//! bodies and framework refusals, each tried over a real port as an attacker would.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use wiremock::{Mock, ResponseTemplate, matchers::method};

use crate::{
    helpers::{OTHER_TOKEN, RECIPIENT, TOKEN, problem, qikchat_success, settings, spawn_app_with},
    process::start_with_open_files,
};

/// Reads until the relay closes the connection; returns what it wrote and how long that took.
/// Panics if it is still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + within).into(), stream.read(&mut buffer)).await {
            Err(_) => panic!(
                "the connection is still open after {within:?}; it wrote {:?}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(Ok(0) | Err(_)) => {
                return (String::from_utf8_lossy(&seen).into(), started.elapsed());
            }
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test]
async fn connections_that_stall_before_their_head_is_complete_are_closed_within_the_header_timeout()
{
    let app = spawn_app_with(&[("RELAY_HEADER_TIMEOUT_MS", "500")]).await;
    // Silent; half a request line; a head trickled one header line every 200 ms.
    for stage in ["silent", "half a request line", "trickled headers"] {
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        match stage {
            "silent" => {}
            "half a request line" => stream.write_all(b"POST /se").await.expect("write"),
            _ => {
                stream
                    .write_all(b"POST /send HTTP/1.1\r\nHost: relay\r\n")
                    .await
                    .expect("write");
            }
        }
        let (mut read, mut write) = stream.into_split();
        let trickle = (stage == "trickled headers").then(|| {
            tokio::spawn(async move {
                for n in 0..100 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if write
                        .write_all(format!("x-{n}: y\r\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            })
        });
        let started = Instant::now();
        let mut buffer = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                match read.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "{stage}: still open after 3 s");
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1_500),
            "{stage}: closed after {took:?}"
        );
        if let Some(trickle) = trickle {
            trickle.abort();
        }
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(&[
        ("RELAY_HEADER_TIMEOUT_MS", "10000"),
        ("RELAY_IDLE_TIMEOUT_MS", "500"),
    ])
    .await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        .await
        .expect("write");
    let (answer, took) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1_500),
        "kept alive, then closed after {took:?}"
    );
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408_problem_json_and_nothing_is_sent() {
    let app = spawn_app_with(&[("RELAY_BODY_TIMEOUT_MS", "500")]).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(qikchat_success("m-1")))
        .expect(0)
        .mount(&app.qikchat)
        .await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /send HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"to\": \"{RECIPIENT}\","
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let (answer, took) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(
        took < Duration::from_millis(1_500),
        "answered after {took:?}"
    );
}

#[tokio::test]
async fn a_request_head_over_32_kib_gets_431() {
    let app = spawn_app_with(&[]).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: relay\r\n");
    for n in 0..5 {
        head.push_str(&format!("x-big-{n}: {}\r\n", "a".repeat(8 * 1024)));
    }
    // The relay answers and closes once 32 KiB are read; the rest may not be written.
    let _ = stream.write_all(head.as_bytes()).await;
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

#[tokio::test]
async fn a_connection_beyond_max_connections_is_closed_at_once_and_the_others_are_served() {
    let app = spawn_app_with(&[("RELAY_MAX_CONNECTIONS", "5")]).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(app.addr).await.expect("connect"));
    }
    // Accepted in order: give the relay a moment to take the five before the sixth.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut beyond = TcpStream::connect(app.addr).await.expect("connect");
    let (_, took) = read_until_closed(&mut beyond, Duration::from_secs(2)).await;
    assert!(took < Duration::from_millis(500), "closed after {took:?}");

    let first = &mut held[0];
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (answer, _) = read_until_closed(first, Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let metrics = app.scrape().await;
    assert!(
        metrics.contains("relay_connections_rejected_total{reason=\"max_connections\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("relay_connections_open"), "{metrics}");
}

#[tokio::test]
async fn invented_methods_become_one_other_label_and_never_a_label_of_their_own() {
    let app = spawn_app_with(&[]).await;
    let url = format!("http://{}/send", app.addr);
    let sent = futures::future::join_all((0..8).map(|task| {
        let http = app.http.clone();
        let url = url.clone();
        async move {
            for n in 0..250 {
                let method = reqwest::Method::from_bytes(format!("TOK{task}X{n}").as_bytes())
                    .expect("a method");
                let answer = http.request(method, &url).send().await.expect("answered");
                assert_eq!(answer.status(), 405);
                let content_type = answer.headers()["content-type"]
                    .to_str()
                    .ok()
                    .map(str::to_owned);
                assert_eq!(content_type.as_deref(), Some("application/problem+json"));
            }
        }
    }));
    sent.await;
    let metrics = app.scrape().await;
    assert!(
        !metrics.contains("TOK"),
        "an invented method became a label"
    );
    assert!(metrics.contains("method=\"other\""), "{metrics}");
}

#[tokio::test]
async fn a_json_object_with_a_key_twice_is_422_naming_it_and_nothing_is_sent() {
    let app = spawn_app_with(&[]).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(qikchat_success("m-1")))
        .expect(0)
        .mount(&app.qikchat)
        .await;
    for (body, field) in [
        (
            format!(
                r#"{{"to": "{RECIPIENT}", "type": "text", "text": "hi", "to": "+971500000000"}}"#
            ),
            "to",
        ),
        (
            format!(
                r#"{{"to": "{RECIPIENT}", "type": "location", "location": {{"latitude": 1, "longitude": 2, "latitude": 3}}}}"#
            ),
            "location.latitude",
        ),
    ] {
        let answer = app
            .http
            .post(format!("http://{}/send", app.addr))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("answered");
        let problem = problem(answer, 422, "invalid_request").await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
}

#[tokio::test]
async fn every_refusal_of_the_framework_is_problem_json() {
    let app = spawn_app_with(&[
        ("RELAY_WEBHOOK_SECRET", "hook-0123456789abcdef"),
        ("RELAY_MAX_BODY_BYTES", "1024"),
    ])
    .await;
    let base = format!("http://{}", app.addr);
    let big = json!({"event": "message", "payload": "x".repeat(4096)}).to_string();
    let cases = [
        (
            app.http
                .get(format!("{base}/messages/%FF"))
                .bearer_auth(TOKEN),
            400,
            "malformed_request",
        ),
        (
            app.http
                .post(format!("{base}/webhooks/qikchat/%FF"))
                .header("content-type", "application/json")
                .body("{}"),
            404,
            "not_found",
        ),
        (
            app.http
                .post(format!("{base}/webhooks/qikchat/hook-0123456789abcdef"))
                .header("content-type", "application/json")
                .body(big.clone()),
            413,
            "payload_too_large",
        ),
        (
            app.http
                .post(format!("{base}/send"))
                .bearer_auth(OTHER_TOKEN)
                .header("content-type", "application/json")
                .body(big),
            413,
            "payload_too_large",
        ),
        (
            app.http.delete(format!("{base}/healthz")),
            405,
            "method_not_allowed",
        ),
    ];
    for (request, status, code) in cases {
        let answer = request.send().await.expect("answered");
        let problem: Value = problem(answer, status, code).await;
        assert!(
            problem["request_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty())
        );
    }
}

/// The relay's resident memory, from /proc.
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

/// A relay binary (as deployed) in sandbox mode, with an open-files limit when given.
async fn sandbox_relay(extra: &[(&str, &str)], open_files: Option<u64>) -> crate::process::Relay {
    let qikchat = wiremock::MockServer::start().await;
    let mut env = settings(&qikchat, &[("RELAY_SANDBOX", "true")]);
    env.retain(|(k, _)| k != "QIKCHAT_API_KEY");
    for (k, v) in extra {
        env.push(((*k).into(), (*v).into()));
    }
    env.push(("PATH".into(), std::env::var("PATH").unwrap_or_default()));
    start_with_open_files(&env, open_files).await
}

async fn send_text(http: &reqwest::Client, url: &str) -> Result<u16, reqwest::Error> {
    let answer = http
        .post(format!("{url}/send"))
        .bearer_auth(OTHER_TOKEN)
        .json(&json!({"to": RECIPIENT, "type": "text", "text": "Your OTP is 4711"}))
        .timeout(Duration::from_secs(2))
        .send()
        .await?;
    Ok(answer.status().as_u16())
}

#[tokio::test]
async fn a_flood_of_1500_connections_with_huge_heads_keeps_memory_bounded_while_sends_succeed() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let relay = sandbox_relay(&[], None).await;
    let pid = relay.child.id().expect("running");
    let addr = relay.url.trim_start_matches("http://").to_owned();
    let before = rss_mb(pid);

    // Each connection: a request line and thirty 8 KB header lines, then it stops.
    let header = format!("x-flood: {}\r\n", "a".repeat(8 * 1024));
    let flood: Vec<_> = (0..1500)
        .map(|_| {
            let addr = addr.clone();
            let header = header.clone();
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.ok()?;
                stream
                    .write_all(b"POST /send HTTP/1.1\r\nHost: relay\r\n")
                    .await
                    .ok()?;
                for _ in 0..30 {
                    if stream.write_all(header.as_bytes()).await.is_err() {
                        break;
                    }
                }
                Some(stream)
            })
        })
        .collect();
    let mut peak = before;
    let http = reqwest::Client::new();
    let mut sent = None;
    for _ in 0..40 {
        peak = peak.max(rss_mb(pid));
        if sent.is_none() {
            sent = send_text(&http, &relay.url).await.ok();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut open = Vec::new();
    for task in flood {
        if let Ok(Some(stream)) = task.await {
            open.push(stream);
        }
        peak = peak.max(rss_mb(pid));
    }
    assert_eq!(sent, Some(200), "another caller's send during the flood");
    assert!(peak < 120.0, "RSS went from {before:.1} MB to {peak:.1} MB");
    drop(open);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_mb(pid);
    assert!(
        after < before + 40.0,
        "RSS {before:.1} MB before, {after:.1} MB after"
    );
    assert_eq!(send_text(&http, &relay.url).await.ok(), Some(200));
}

#[tokio::test]
async fn idle_connections_beyond_the_open_files_limit_do_not_lock_out_a_send() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let relay = sandbox_relay(&[("RELAY_HEADER_TIMEOUT_MS", "1000")], Some(1024)).await;
    let addr = relay.url.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..1100 {
        if let Ok(stream) = TcpStream::connect(&addr).await {
            idle.push(stream);
        }
    }
    // The idle ones give their slots back within the header timeout; a send gets in by then,
    // although the 1,100 are still open on this side.
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut status = None;
    while started.elapsed() < Duration::from_secs(5) {
        status = send_text(&http, &relay.url).await.ok();
        if status == Some(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, Some(200), "no send got through in 5 s");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let output = relay.output();
    assert!(
        !output
            .iter()
            .any(|line| line.contains("Too many open files")),
        "{output:?}"
    );
    drop(idle);
}
