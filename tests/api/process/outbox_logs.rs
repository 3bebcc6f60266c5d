//! What the outbox writes, with the real binary at trace level: no log line holds the key, a
//! token or a customer's full number, and once a message ended its record holds no number.

use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use super::start;
use crate::helpers::{KEY, OTHER_TOKEN, TOKEN, TempDir, qikchat_success, settings};
use crate::outbox::{ENDED, accept_at, read_at};

#[tokio::test]
async fn the_outbox_logs_and_keeps_no_key_token_or_number() {
    let qikchat = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(qikchat_success("outbox-log-1")))
        .up_to_n_times(1)
        .mount(&qikchat)
        .await;
    // The second is refused with the key in Qikchat's words: it ends `failed`.
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"status": false, "message": format!("bad key {KEY}")})),
        )
        .mount(&qikchat)
        .await;
    let data = TempDir::new();
    let data_dir = data.0.to_string_lossy().into_owned();
    let relay = start(&settings(
        &qikchat,
        &[("RUST_LOG", "trace"), ("RELAY_DATA_DIR", &data_dir)],
    ))
    .await;
    let http = reqwest::Client::new();
    let body = |text: &str| json!({"to": "+91 80808 08080", "type": "text", "text": text});
    let ids = [
        accept_at(&http, &relay.url, TOKEN, &body("first")).await,
        accept_at(&http, &relay.url, OTHER_TOKEN, &body("second")).await,
    ];
    let started = Instant::now();
    let mut bodies = Vec::new();
    for (id, token) in ids.iter().zip([TOKEN, OTHER_TOKEN]) {
        loop {
            let (status, read) = read_at(&http, &relay.url, token, id).await;
            assert_eq!(status, 200, "{read}");
            if read["status"].as_str().is_some_and(|s| ENDED.contains(&s)) {
                bodies.push(read.to_string());
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{read}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(bodies[0].contains("\"queued\""), "{}", bodies[0]);
    assert!(bodies[1].contains("\"failed\""), "{}", bodies[1]);
    relay.terminate();

    let secrets = [KEY, TOKEN, OTHER_TOKEN, "918080808080", "80808 08080"];
    let output = relay.output();
    assert!(
        output
            .iter()
            .any(|line| line.contains("an outbox message ended")),
        "{output:?}"
    );
    for text in output.iter().chain(&bodies) {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} appears in: {text}");
        }
    }
    // The ended messages' rows, read back through SQLite: their bodies are gone.
    let db = rusqlite::Connection::open(data.0.join("outbox.sqlite3")).expect("the outbox");
    let mut rows = db
        .prepare("SELECT coalesce(body, ''), state FROM messages")
        .expect("a query");
    let rows: Vec<(String, String)> = rows
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(rows.len(), 2);
    for (body, state) in rows {
        assert!(
            body.is_empty() && !body.contains("8080808080"),
            "{state}: {body}"
        );
    }
}
