//! What the on-call engineer sees: the metrics after a scripted run of sends and failures, the
//! audit trail, and OpenTelemetry spans received by a local OTLP collector. Each test runs the
//! real binary, so its metrics and logs are its own and can be counted exactly.

use std::time::Duration;

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    trace::v1::{Span, span::SpanKind},
};
use prost::Message as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_partial_json, method, path, query_param},
};

use crate::{
    helpers::{KEY, OTHER_TOKEN, RECIPIENT, TOKEN, qikchat_success, samples, settings, value},
    process::{Relay, start},
};

const IDEMPOTENCY_KEY: &str = "order-4711-SENTINEL-confirmation";

/// A relay process's `/metrics` exposition.
async fn scrape(http: &reqwest::Client, url: &str) -> String {
    http.get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

fn text(body: &str) -> Value {
    json!({"to": RECIPIENT, "type": "text", "text": body})
}

/// A fake Qikchat that answers by the text sent: `ok` and `slow` are accepted, `refuse` is
/// refused, `boom` fails and `busy` is rate limited.
async fn scripted_qikchat() -> MockServer {
    let qikchat = MockServer::start().await;
    let answers = [
        (
            "ok",
            ResponseTemplate::new(200).set_body_json(qikchat_success("m-ok")),
        ),
        (
            "slow",
            ResponseTemplate::new(200)
                .set_body_json(qikchat_success("m-slow"))
                .set_delay(Duration::from_millis(800)),
        ),
        (
            "refuse",
            ResponseTemplate::new(400)
                .set_body_json(json!({"status": false, "message": "Template not approved"})),
        ),
        ("boom", ResponseTemplate::new(500)),
        (
            "busy",
            ResponseTemplate::new(429).insert_header("Retry-After", "7"),
        ),
    ];
    for (text, answer) in answers {
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .and(body_partial_json(json!({"text": {"body": text}})))
            .respond_with(answer)
            .mount(&qikchat)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/v1/messages"))
        .and(query_param("msgid", "m-ok"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": true,
            "message": {"event": "whatsapp:message:dlr", "payload": {
                "id": "m-ok", "message": {"type": "text", "status": "delivered"}}}
        })))
        .mount(&qikchat)
        .await;
    qikchat
}

async fn post(
    http: &reqwest::Client,
    relay: &Relay,
    body: &Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = http
        .post(format!("{}/send", relay.url))
        .bearer_auth(TOKEN)
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("the relay answers")
}

#[tokio::test]
async fn a_scripted_run_shows_up_in_the_metrics_and_one_audit_event_per_send() {
    let qikchat = scripted_qikchat().await;
    let relay = start(&settings(&qikchat, &[("RELAY_MAX_IN_FLIGHT", "1")])).await;
    let http = reqwest::Client::new();

    // A send, its retry (replayed) and the key reused for another message.
    let first = post(&http, &relay, &text("ok"), Some(IDEMPOTENCY_KEY)).await;
    assert_eq!(first.status(), 200);
    let first_request_id = first.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let replayed = post(&http, &relay, &text("ok"), Some(IDEMPOTENCY_KEY)).await;
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let reused = post(&http, &relay, &text("refuse"), Some(IDEMPOTENCY_KEY)).await;
    assert_eq!(reused.status(), 422);
    // Qikchat refuses, fails, rate limits; one request is invalid.
    for (body, status) in [("refuse", 422), ("boom", 502), ("busy", 429)] {
        assert_eq!(
            post(&http, &relay, &text(body), None).await.status(),
            status
        );
    }
    let invalid = post(
        &http,
        &relay,
        &json!({"to": RECIPIENT, "type": "text"}),
        None,
    )
    .await;
    assert_eq!(invalid.status(), 422);
    // One send in flight at most: a second one while Qikchat is slow is shed.
    let slow = {
        let (http, url) = (http.clone(), relay.url.clone());
        tokio::spawn(async move {
            http.post(format!("{url}/send"))
                .bearer_auth(TOKEN)
                .json(&text("slow"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(post(&http, &relay, &text("ok"), None).await.status(), 503);
    assert_eq!(slow.await.expect("joined").expect("answered"), 200);
    let status = http
        .get(format!("{}/messages/m-ok", relay.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(status.status(), 200);

    let exposition = scrape(&http, &relay.url).await;
    let m = samples(&exposition);
    let sends = |outcome| {
        value(
            &m,
            "relay_sends_total",
            &[
                ("caller", "billing"),
                ("type", "text"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(sends("queued"), 2.0, "{exposition}");
    assert_eq!(sends("replayed"), 1.0);
    assert_eq!(sends("idempotency_key_reused"), 1.0);
    assert_eq!(sends("rejected_by_qikchat"), 1.0);
    assert_eq!(sends("upstream_error"), 1.0);
    assert_eq!(sends("rate_limited"), 1.0);
    assert_eq!(sends("invalid_request"), 1.0);
    assert_eq!(sends("overloaded"), 1.0);
    let qikchat_calls = |operation, outcome, status| {
        value(
            &m,
            "relay_qikchat_request_duration_seconds_count",
            &[
                ("operation", operation),
                ("outcome", outcome),
                ("status", status),
            ],
        )
    };
    assert_eq!(qikchat_calls("send", "accepted", "200"), 2.0);
    assert_eq!(qikchat_calls("send", "rejected", "400"), 1.0);
    assert_eq!(qikchat_calls("send", "failed", "500"), 1.0);
    assert_eq!(qikchat_calls("send", "rate_limited", "429"), 1.0);
    assert_eq!(qikchat_calls("status", "found", "200"), 1.0);
    // The slow call is in the 0.5 s to 1 s buckets, not below.
    let slow_bucket = |le| {
        value(
            &m,
            "relay_qikchat_request_duration_seconds_bucket",
            &[
                ("operation", "send"),
                ("outcome", "accepted"),
                ("status", "200"),
                ("le", le),
            ],
        )
    };
    assert_eq!(slow_bucket("0.5"), 1.0);
    assert_eq!(slow_bucket("1"), 2.0);
    let rejections = |reason| value(&m, "relay_rejections_total", &[("reason", reason)]);
    assert_eq!(rejections("overloaded"), 1.0);
    assert_eq!(rejections("rate_limited"), 1.0);
    assert_eq!(rejections("draining"), 0.0);
    let idempotency = |result| value(&m, "relay_idempotency_total", &[("result", result)]);
    assert_eq!(idempotency("replayed"), 1.0);
    assert_eq!(idempotency("reused"), 1.0);
    assert_eq!(idempotency("in_flight"), 0.0);
    assert_eq!(value(&m, "relay_sends_in_flight_limit", &[]), 1.0);
    assert_eq!(value(&m, "relay_sends_in_flight", &[]), 0.0);
    assert_eq!(
        value(
            &m,
            "relay_http_requests_total",
            &[("method", "POST"), ("route", "/send"), ("status", "200")]
        ),
        3.0
    );
    for secret in [
        KEY,
        TOKEN,
        OTHER_TOKEN,
        RECIPIENT,
        IDEMPOTENCY_KEY,
        &first_request_id,
    ] {
        assert!(!exposition.contains(secret), "{secret} in the metrics");
    }

    // The audit trail: one event per send, on its own target, with what on-call needs.
    let output = relay
        .output_once(|lines| {
            lines
                .iter()
                .filter(|l| l.contains(r#""target":"audit""#))
                .count()
                >= 9
        })
        .await;
    let audit: Vec<Value> = output
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "audit")
        .collect();
    assert_eq!(audit.len(), 9, "{audit:#?}");
    let first_event = &audit[0];
    for (field, expected) in [
        ("message", json!("send attempt")),
        ("caller", json!("billing")),
        ("request_id", json!(first_request_id)),
        ("type", json!("text")),
        ("to", json!("+91******8080")),
        ("outcome", json!("queued")),
        ("qikchat_id", json!("m-ok")),
        ("qikchat_status", json!(200)),
        (
            "idempotency_key_sha256",
            json!(hex(&Sha256::digest(IDEMPOTENCY_KEY))),
        ),
    ] {
        assert_eq!(first_event[field], expected, "{field} in {first_event}");
    }
    assert!(
        first_event["latency_ms"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0)
    );
    let outcomes: Vec<&str> = audit
        .iter()
        .map(|event| event["outcome"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        outcomes,
        [
            "queued",
            "replayed",
            "idempotency_key_reused",
            "rejected_by_qikchat",
            "upstream_error",
            "rate_limited",
            "invalid_request",
            "overloaded",
            "queued"
        ]
    );
    assert_eq!(audit[1]["qikchat_id"], "m-ok", "a replay names the message");
    assert_eq!(audit[3]["qikchat_status"], 400);
    assert!(audit[7].get("qikchat_id").is_none());
    for line in &output {
        for secret in [KEY, TOKEN, OTHER_TOKEN, RECIPIENT, IDEMPOTENCY_KEY] {
            assert!(!line.contains(secret), "{secret} in a log line: {line}");
        }
    }
}

/// A local OTLP/HTTP collector: it accepts every export and keeps the requests.
async fn collector() -> MockServer {
    let collector = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&collector)
        .await;
    collector
}

/// Every span the collector has received so far, and the raw bodies.
async fn exported(collector: &MockServer) -> (Vec<Span>, Vec<Vec<u8>>) {
    let bodies: Vec<Vec<u8>> = collector
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|request| request.body)
        .collect();
    let spans = bodies
        .iter()
        .map(|body| ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf"))
        .flat_map(|export| export.resource_spans)
        .flat_map(|resource| resource.scope_spans)
        .flat_map(|scope| scope.spans)
        .collect();
    (spans, bodies)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn spans_continue_the_callers_trace_and_reach_an_otlp_collector_without_secrets() {
    let qikchat = scripted_qikchat().await;
    let collector = collector().await;
    let relay = start(&settings(
        &qikchat,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.uri()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    ))
    .await;
    let http = reqwest::Client::new();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";

    let response = http
        .post(format!("{}/send", relay.url))
        .bearer_auth(TOKEN)
        .header("traceparent", format!("00-{trace_id}-{parent_id}-01"))
        .header("tracestate", "vendor=secret-ish")
        .json(&text("ok"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);

    let mut spans = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..100 {
        (spans, bodies) = exported(&collector).await;
        if spans.iter().any(|s| s.name == "qikchat.send")
            && spans.iter().any(|s| s.name == "POST /send")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server = spans
        .iter()
        .find(|s| s.name == "POST /send")
        .unwrap_or_else(|| panic!("no server span in {spans:#?}"));
    assert_eq!(
        hex(&server.trace_id),
        trace_id,
        "the caller's trace goes on"
    );
    assert_eq!(hex(&server.parent_span_id), parent_id);
    assert_eq!(server.kind, SpanKind::Server as i32);
    let client = spans
        .iter()
        .find(|s| s.name == "qikchat.send")
        .expect("a span for the Qikchat call");
    assert_eq!(hex(&client.trace_id), trace_id);
    assert_eq!(
        client.parent_span_id, server.span_id,
        "the Qikchat call is a child"
    );
    assert_eq!(client.kind, SpanKind::Client as i32);
    let attribute = |span: &Span, key: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref())
            .map(|v| format!("{:?}", v.value))
    };
    assert!(attribute(server, "caller").is_some_and(|v| v.contains("billing")));
    assert!(attribute(server, "outcome").is_some_and(|v| v.contains("queued")));
    assert!(attribute(client, "http_status").is_some_and(|v| v.contains("200")));
    for body in &bodies {
        let text = String::from_utf8_lossy(body);
        for secret in [KEY, TOKEN, RECIPIENT] {
            assert!(!text.contains(secret), "{secret} in an exported span");
        }
    }

    // Qikchat sees none of the caller's or the relay's internal headers.
    let sent = qikchat.received_requests().await.unwrap_or_default();
    let send = sent
        .iter()
        .find(|r| r.method.as_str() == "POST")
        .expect("the send reached Qikchat");
    for header in ["traceparent", "tracestate", "x-request-id", "authorization"] {
        assert!(
            !send.headers.contains_key(header),
            "{header} forwarded to Qikchat"
        );
    }

    // Every line logged during the request carries the trace id.
    let lines: Vec<Value> = relay
        .output_once(|lines| lines.iter().any(|l| l.contains("request finished")))
        .await
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["span"]["route"] == "/send")
        .collect();
    assert!(lines.len() >= 2, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["span"]["trace_id"], trace_id, "{line}");
    }
}

#[tokio::test]
async fn without_an_exporter_logs_still_carry_the_callers_trace_id() {
    let qikchat = scripted_qikchat().await;
    let relay = start(&settings(&qikchat, &[])).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";

    let response = reqwest::Client::new()
        .post(format!("{}/send", relay.url))
        .bearer_auth(TOKEN)
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .json(&text("ok"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);

    let finished = relay
        .output_once(|lines| lines.iter().any(|l| l.contains("request finished")))
        .await
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "request finished")
        .expect("a request line");
    assert_eq!(finished["span"]["trace_id"], trace_id);
    assert!(finished["span"].get("otel.name").is_none());
}

#[tokio::test]
async fn every_metric_family_has_a_help_line_and_the_process_metrics_are_exported() {
    let qikchat = scripted_qikchat().await;
    let relay = start(&settings(
        &qikchat,
        &[("RELAY_WEBHOOK_SECRET", "hook-0123456789abcdef")],
    ))
    .await;
    let http = reqwest::Client::new();
    assert_eq!(post(&http, &relay, &text("ok"), None).await.status(), 200);
    assert_eq!(
        post(&http, &relay, &text("refuse"), None).await.status(),
        422
    );

    let exposition = scrape(&http, &relay.url).await;
    let lines_starting = |prefix: &str| -> Vec<String> {
        exposition
            .lines()
            .filter_map(|line| line.strip_prefix(prefix))
            .filter_map(|rest| rest.split(' ').next())
            .map(str::to_owned)
            .collect()
    };
    let types = lines_starting("# TYPE ");
    let helps = lines_starting("# HELP ");
    for family in [
        "relay_http_requests_total",
        "relay_sends_total",
        "relay_qikchat_request_duration_seconds",
        "relay_webhook_deliveries_total",
        "relay_build_info",
        "process_cpu_seconds_total",
    ] {
        assert!(
            types.iter().any(|t| t == family),
            "no {family} in:\n{exposition}"
        );
    }
    let undescribed: Vec<_> = types.iter().filter(|t| !helps.contains(t)).collect();
    assert!(undescribed.is_empty(), "no # HELP for {undescribed:?}");
    let mut once = helps.clone();
    once.sort_unstable();
    once.dedup();
    assert_eq!(once.len(), helps.len(), "a # HELP line twice: {helps:?}");

    let m = samples(&exposition);
    let process = |name| value(&m, name, &[]);
    assert!(process("process_resident_memory_bytes") > 0.0);
    assert!(process("process_virtual_memory_bytes") > 0.0);
    assert!(process("process_threads") >= 1.0);
    let open = process("process_open_fds");
    assert!(open > 0.0);
    assert!(process("process_max_fds") >= open);
    assert!(process("process_cpu_seconds_total") >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let started = process("process_start_time_seconds");
    assert!(
        (now - 3600.0..=now + 1.0).contains(&started),
        "started at {started}, now {now}"
    );
}
