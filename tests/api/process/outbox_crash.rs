//! The outbox through SIGKILL, with the real binary: a replica killed in the middle of a backlog
//! loses no accepted message and sends none twice. What it had claimed but not started is sent
//! after `RELAY_OUTBOX_LEASE_MS` (by the same data directory restarted, or by the other replica
//! on Redis); what it had started ends `unknown`, never resent.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use wiremock::MockServer;

use super::start;
use crate::helpers::{Redis, TOKEN, TempDir, settings};
use crate::outbox::{Answer, ENDED, accept_at, all_ids, batch_at, message, read_at, record};

const BACKLOG: usize = 200;
/// What each relay works on at once: at most this many can be `sending` when it is killed.
const CONCURRENCY: usize = 4;
/// The fake Qikchat's answer time: with [`CONCURRENCY`], a backlog of about 5 s.
const QIKCHAT_DELAY: Duration = Duration::from_millis(100);

fn outbox_settings<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut pairs = vec![
        ("RELAY_UPSTREAM_TIMEOUT_MS", "1000"),
        ("RELAY_OUTBOX_LEASE_MS", "2000"),
        ("RELAY_OUTBOX_CONCURRENCY", "4"),
    ];
    pairs.extend_from_slice(extra);
    pairs
}

/// Kills the relay with SIGKILL and waits for it to be gone.
async fn kill(relay: &mut super::Relay) {
    relay.child.start_kill().expect("SIGKILL");
    let _ = tokio::time::timeout(Duration::from_secs(5), relay.child.wait())
        .await
        .expect("the killed relay is gone");
}

/// Reads every id at `base` until each has ended (or `within` has passed): id -> its body.
async fn until_all_ended(
    http: &reqwest::Client,
    base: &str,
    ids: &[String],
    within: Duration,
) -> BTreeMap<String, Value> {
    let started = Instant::now();
    let mut ended = BTreeMap::new();
    loop {
        let pending: Vec<&String> = ids.iter().filter(|id| !ended.contains_key(*id)).collect();
        for id in pending {
            let (status, body) = read_at(http, base, TOKEN, id).await;
            if status == 200 && body["status"].as_str().is_some_and(|s| ENDED.contains(&s)) {
                ended.insert(id.clone(), body);
            }
        }
        if ended.len() == ids.len() {
            return ended;
        }
        let waiting: Vec<Value> = {
            let mut waiting = Vec::new();
            for id in ids.iter().filter(|id| !ended.contains_key(*id)).take(3) {
                waiting.push(read_at(http, base, TOKEN, id).await.1);
            }
            waiting
        };
        assert!(
            started.elapsed() < within,
            "{} of {} messages never ended, e.g. {waiting:?}",
            ids.len() - ended.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the crash left: every message `queued` or `unknown`, none sent twice, `queued` ones sent
/// exactly once, at most [`CONCURRENCY`] `unknown` and none of them sent after the crash.
/// `texts[i]` is the text of `ids[i]`; `after` the calls made after the kill.
fn check_the_crash(
    ended: &BTreeMap<String, Value>,
    ids: &[String],
    texts: &[String],
    counts: &BTreeMap<String, usize>,
    after: &[String],
) {
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    let mut unknown = Vec::new();
    for (id, text) in ids.iter().zip(texts) {
        let body = &ended[id];
        let sent = counts.get(text).copied().unwrap_or(0);
        match body["status"].as_str() {
            Some("queued") => assert_eq!(sent, 1, "{text} is queued: {body}"),
            Some("unknown") => {
                assert!(
                    !after.contains(text),
                    "{text} was started before the crash and sent again after it"
                );
                unknown.push(text.clone());
            }
            _ => panic!("{text} ended neither queued nor unknown: {body}"),
        }
    }
    assert!(
        unknown.len() <= CONCURRENCY,
        "{} unknown, more than were in flight at the crash ({} queued, {} sends after it): {unknown:?}",
        unknown.len(),
        ids.len() - unknown.len(),
        after.len()
    );
}

#[tokio::test]
async fn a_relay_killed_mid_backlog_and_restarted_sends_every_message_at_most_once() {
    let qikchat = MockServer::start().await;
    let calls = record(&qikchat, "qkcrash", Answer::Accept, QIKCHAT_DELAY).await;
    let data = TempDir::new();
    let dir = data.0.to_str().expect("UTF-8").to_owned();
    let env = settings(
        &qikchat,
        &outbox_settings(&[("RELAY_DATA_DIR", dir.as_str())]),
    );
    let http = reqwest::Client::new();
    let mut first = start(&env).await;

    let (send_at, send_at_text) = crate::outbox::at(Duration::from_secs(3));
    let scheduled = accept_at(
        &http,
        &first.url,
        TOKEN,
        &json!({"to": crate::helpers::RECIPIENT, "type": "text", "text": "message scheduled",
                "reference": "ref-scheduled",
                "send_at": send_at_text}),
    )
    .await;
    let mut ids = all_ids(
        &batch_at(
            &http,
            &first.url,
            TOKEN,
            (0..BACKLOG).map(message).collect(),
        )
        .await,
    );
    let started = calls.until(20, Duration::from_secs(5)).await;
    assert!(started >= 20, "the backlog started: {started} sends");
    kill(&mut first).await;
    let before = calls.len();
    assert!(
        before < BACKLOG / 2,
        "killed mid-backlog, after {before} sends"
    );

    let second = start(&env).await;
    ids.push(scheduled.clone());
    let ended = until_all_ended(&http, &second.url, &ids, Duration::from_secs(20)).await;

    let mut texts: Vec<String> = (0..BACKLOG).map(|n| format!("message {n}")).collect();
    texts.push("message scheduled".to_owned());
    let after: Vec<String> = calls.all()[before..].iter().map(|c| c.text()).collect();
    assert!(
        !after.is_empty(),
        "the restarted relay went on with the backlog"
    );
    check_the_crash(&ended, &ids, &texts, &calls.per_text(), &after);
    assert_eq!(
        ended[&scheduled]["status"], "queued",
        "{}",
        ended[&scheduled]
    );
    assert_eq!(ended[&scheduled]["reference"], "ref-scheduled");
    let sent = calls.with_text("message scheduled");
    assert_eq!(sent.len(), 1);
    assert!(sent[0].wall >= send_at, "the scheduled message went early");
}

#[tokio::test]
async fn with_redis_a_replica_killed_mid_backlog_leaves_the_rest_to_the_other() {
    let redis = Redis::start().await;
    let (qikchat_a, qikchat_b) = (MockServer::start().await, MockServer::start().await);
    let calls_a = record(&qikchat_a, "qka", Answer::Accept, QIKCHAT_DELAY).await;
    let calls_b = record(&qikchat_b, "qkb", Answer::Accept, QIKCHAT_DELAY).await;
    let shared = outbox_settings(&[("RELAY_REDIS_URL", redis.url.as_str())]);
    let http = reqwest::Client::new();
    let mut a = start(&settings(&qikchat_a, &shared)).await;
    let b = start(&settings(&qikchat_b, &shared)).await;

    let ids = all_ids(&batch_at(&http, &a.url, TOKEN, (0..BACKLOG).map(message).collect()).await);
    calls_a.until(10, Duration::from_secs(5)).await;
    kill(&mut a).await;
    let (killed_sent, b_before) = (calls_a.len(), calls_b.len());
    assert!(killed_sent >= 1, "the killed replica was delivering");
    assert!(
        killed_sent + b_before < BACKLOG * 3 / 4,
        "killed mid-backlog, after {killed_sent} + {b_before} sends"
    );

    let ended = until_all_ended(&http, &b.url, &ids, Duration::from_secs(20)).await;

    let texts: Vec<String> = (0..BACKLOG).map(|n| format!("message {n}")).collect();
    let mut counts = calls_a.per_text();
    for (text, n) in calls_b.per_text() {
        *counts.entry(text).or_insert(0) += n;
    }
    let after: Vec<String> = calls_b.all()[b_before..].iter().map(|c| c.text()).collect();
    assert!(
        !after.is_empty(),
        "the other replica went on with the backlog"
    );
    check_the_crash(&ended, &ids, &texts, &counts, &after);
}
