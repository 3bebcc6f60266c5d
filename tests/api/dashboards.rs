//! The Grafana dashboard (deploy/grafana/qikchat-relay.json) and the Prometheus alerts
//! (deploy/prometheus/alerts.yaml) query only metrics the relay exports, with labels it sets; every
//! alert tells the on-call what to look at; the dashboard answers the on-call's questions.
//! promtool checks the PromQL itself (deploy/validate.sh); this checks it against the relay.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_string_contains, method, path},
};

use crate::helpers::{
    KEY, RECIPIENT, TOKEN, TestApp, problem, qikchat_success, spawn_app_with, text_message,
};

const DASHBOARD: &str = "deploy/grafana/qikchat-relay.json";
const ALERTS: &str = "deploy/prometheus/alerts.yaml";

/// Labels the scrape adds to every series of a target (Prometheus, Kubernetes relabelling).
const TARGET_LABELS: [&str; 4] = ["job", "instance", "namespace", "pod"];

/// Metrics that are not the relay's but that the files may query.
const OTHER_METRICS: [&str; 1] = ["up"];

/// The panels the on-call needs, by title.
const PANELS: [&str; 16] = [
    "Sends by outcome",
    "Send error ratio by caller",
    "Qikchat latency p50 / p99",
    "Qikchat answers by outcome and status",
    "Sends in flight vs limit",
    "Rejections by reason",
    "Idempotency: replays and conflicts",
    "HTTP requests by route and status",
    "HTTP latency p99 by route",
    "Build info",
    "Webhook events received",
    "Webhook deliveries by outcome",
    "Outbox depth vs RELAY_OUTBOX_MAX",
    "Outbox delivery lag (oldest due message)",
    "Outbox transitions by status",
    "Outbox retries",
];

const ALERT_NAMES: [&str; 10] = [
    "QikchatRelayQikchatFailing",
    "QikchatRelayErrorRatioHigh",
    "QikchatRelayQikchatLatencyHigh",
    "QikchatRelayShedding",
    "QikchatRelayDown",
    "QikchatRelayWebhookDeadLetters",
    "QikchatRelayWebhookStoreFull",
    "QikchatRelayOutboxBehind",
    "QikchatRelayOutboxNearlyFull",
    "QikchatRelayOutboxDeadLetters",
];

fn read(file: &str) -> String {
    let full = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

fn alerts() -> Value {
    yaml_serde::from_str(&read(ALERTS)).unwrap_or_else(|e| panic!("{ALERTS}: {e}"))
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every `expr` of the dashboard, with the title of its panel.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| t["expr"].as_str().map(|e| (title.clone(), e.to_owned())))
        })
        .collect()
}

/// Every alerting rule of every group.
fn alert_rules(alerts: &Value) -> Vec<&Value> {
    alerts["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().into_iter().flatten())
        .collect()
}

/// A metric selector found in an expression: the name, and the label names it matches on.
#[derive(Debug)]
struct Selector {
    metric: String,
    labels: Vec<String>,
}

/// The metrics an expression reads: identifiers starting with `relay_`, and any identifier
/// followed by `{` (a selector), outside quoted strings. Enough for the PromQL in these files;
/// promtool parses it for real.
fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
            continue;
        }
        // Not a name: not a name's first character, or a Grafana variable (`$__rate_interval`).
        if !is_ident(c) || c.is_ascii_digit() || (i > 0 && chars[i - 1] == '$') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        let braced = j < chars.len() && chars[j] == '{';
        if !braced && !name.starts_with("relay_") {
            continue;
        }
        let mut labels = Vec::new();
        if braced {
            // `{name op "value", ...}`: the label names are the identifiers outside the quotes.
            j += 1;
            while j < chars.len() && chars[j] != '}' {
                if chars[j] == '"' || chars[j] == '\'' || chars[j] == '`' {
                    j = skip_string(&chars, j);
                } else if is_ident(chars[j]) {
                    let label_start = j;
                    while j < chars.len() && is_ident(chars[j]) {
                        j += 1;
                    }
                    labels.push(chars[label_start..j].iter().collect());
                } else {
                    j += 1;
                }
            }
            i = j;
        }
        out.push(Selector {
            metric: name,
            labels,
        });
    }
    out
}

/// The index just after the quoted string that starts at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The metric families of a scrape (`# TYPE <name> <type>`), and the label names seen on each
/// family's samples (histogram samples count for their family).
struct Scrape {
    types: BTreeMap<String, String>,
    labels: BTreeMap<String, BTreeSet<String>>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut types = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    types.insert(name.to_owned(), kind.to_owned());
                }
            }
        }
        let mut scrape = Self {
            types,
            labels: BTreeMap::new(),
        };
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let Some(family) = scrape.family(&line[..name_end]) else {
                continue;
            };
            let seen = scrape.labels.entry(family).or_default();
            if let Some(labels) = line[name_end..].strip_prefix('{') {
                seen.extend(label_names(labels));
            }
        }
        scrape
    }

    /// The family a sample or selector name belongs to: itself, or the histogram (or summary)
    /// whose `_bucket`, `_sum` or `_count` series it is.
    fn family(&self, name: &str) -> Option<String> {
        if self.types.contains_key(name) {
            return Some(name.to_owned());
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            matches!(
                self.types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            )
            .then(|| base.to_owned())
        })
    }
}

/// The label names of a sample's `name="value",...}` (values may hold `,`, `}` and `\"`).
fn label_names(labels: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = labels;
    while let Some((name, after)) = rest.split_once("=\"") {
        names.push(name.trim_start_matches(',').trim().to_owned());
        let mut escaped = false;
        let Some(end) = after.char_indices().find_map(|(i, c)| {
            let closes = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            closes.then_some(i)
        }) else {
            break;
        };
        rest = &after[end + 1..];
        if rest.starts_with('}') {
            break;
        }
    }
    names
}

/// The problems of one expression against a scrape.
fn check_expr(scrape: &Scrape, file: &str, context: &str, expr: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let found = selectors(expr);
    if found.is_empty() {
        problems.push(format!("{file}: {context}: no metric in `{expr}`"));
    }
    for selector in found {
        if OTHER_METRICS.contains(&selector.metric.as_str()) {
            continue;
        }
        if !selector.metric.starts_with("relay_") {
            problems.push(format!(
                "{file}: {context}: metric {} is not the relay's (relay_*) nor one of {OTHER_METRICS:?}",
                selector.metric
            ));
            continue;
        }
        let Some(family) = scrape.family(&selector.metric) else {
            problems.push(format!(
                "{file}: {context}: metric {} is not in the relay's /metrics (no `# TYPE {}` line)",
                selector.metric,
                selector
                    .metric
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_sum")
                    .trim_end_matches("_count"),
            ));
            continue;
        };
        let seen = scrape.labels.get(&family).cloned().unwrap_or_default();
        for label in selector.labels {
            if !TARGET_LABELS.contains(&label.as_str()) && !seen.contains(&label) {
                problems.push(format!(
                    "{file}: {context}: metric {} has no label {label} (it has {seen:?})",
                    selector.metric
                ));
            }
        }
    }
    problems
}

/// Drives a relay through every path that creates a metric family: a queued send with an
/// Idempotency-Key and its replay, a send Qikchat rejects (4xx), an invalid one, a media send
/// whose link is checked, an outbox message that Qikchat rate-limits once and then takes (after
/// which the worker's sweep has set the outbox's gauges). Returns the scrape of /metrics.
async fn exercise_every_metric(app: &TestApp) -> String {
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(body_string_contains("dashboards: please reject"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"status": false, "message": "Template not found"})),
        )
        .with_priority(1)
        .expect(1)
        .mount(&app.qikchat)
        .await;
    // The queued text send (once: its retry is a replay) and the media send.
    app.qikchat_accepts("dashboards-1", 2).await;

    let keyed = || {
        app.http
            .post(app.url("/send"))
            .bearer_auth(TOKEN)
            .header("idempotency-key", "dashboards-order-1")
            .json(&text_message())
    };
    let queued = keyed().send().await.expect("the relay answers");
    assert_eq!(queued.status(), 200, "queued");
    let replayed = keyed().send().await.expect("the relay answers");
    assert_eq!(replayed.status(), 200, "replayed");
    assert!(
        replayed.headers().get("idempotent-replayed").is_some(),
        "the retry is a replay"
    );

    let rejected = app
        .send(&json!({"to": RECIPIENT, "type": "text", "text": "dashboards: please reject"}))
        .await;
    problem(rejected, 422, "rejected_by_qikchat").await;

    let invalid = app.send(&json!({"to": RECIPIENT, "type": "image"})).await;
    problem(invalid, 422, "invalid_request").await;

    let media = MockServer::start().await;
    Mock::given(method("HEAD"))
        .and(path("/dashboards.png"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "image/png")
                .insert_header("content-length", "1000"),
        )
        .mount(&media)
        .await;
    let link = format!("{}/dashboards.png", media.uri());
    let image = app
        .send(&json!({"to": RECIPIENT, "type": "image", "link": link}))
        .await;
    assert_eq!(image.status(), 200, "media send");

    outbox_message_retried_then_queued(app).await;

    let scrape = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("the relay answers")
        .text()
        .await
        .expect("text");
    assert!(!scrape.contains(KEY), "the key is in /metrics");
    scrape
}

/// `POST /messages`: Qikchat answers the first delivery 429 (a retry) and the second 200 (queued),
/// so the outbox's counters have their series; then waits for a sweep to have set its gauges.
async fn outbox_message_retried_then_queued(app: &TestApp) {
    const TEXT: &str = "dashboards: outbox";
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(body_string_contains(TEXT))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .with_priority(1)
        .up_to_n_times(1)
        .expect(1)
        .mount(&app.qikchat)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(body_string_contains(TEXT))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(qikchat_success("dashboards-outbox-1")),
        )
        .with_priority(2)
        .expect(1)
        .mount(&app.qikchat)
        .await;
    let accepted = app
        .http
        .post(app.url("/messages"))
        .bearer_auth(TOKEN)
        .json(&json!({"to": RECIPIENT, "type": "text", "text": TEXT}))
        .send()
        .await
        .expect("the relay answers");
    assert_eq!(accepted.status(), 202, "outbox message accepted");
    let id = accepted.json::<Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("an id")
        .to_owned();

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = app.get(&format!("/messages/{id}")).await;
        let status = status.json::<Value>().await.expect("JSON");
        let scrape = app.scrape().await;
        let gauges = ["relay_outbox_waiting", "relay_outbox_oldest_due_seconds"]
            .iter()
            .all(|name| scrape.contains(&format!("# TYPE {name} ")));
        if status["status"] == "queued" && gauges {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox message is not queued, or its gauges are not exported, after 20 s: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_query_only_metrics_and_labels_the_relay_exports() {
    // Webhooks on, so that their metrics are exported too.
    let dir = crate::helpers::TempDir::new();
    let data = dir.0.join("data");
    let app = spawn_app_with(&[
        ("RELAY_WEBHOOK_SECRET", "hook-0123456789abcdef"),
        ("RELAY_DATA_DIR", data.to_str().expect("UTF-8")),
        ("RELAY_MEDIA_PREFLIGHT", "enforce"),
        ("RELAY_MEDIA_PREFLIGHT_ALLOW_PRIVATE", "true"),
        ("RELAY_MEDIA_PREFLIGHT_TIMEOUT_MS", "2000"),
    ])
    .await;
    let scrape = Scrape::parse(&exercise_every_metric(&app).await);

    let mut problems = Vec::new();
    let dashboard_exprs = dashboard_exprs(&dashboard());
    assert!(!dashboard_exprs.is_empty(), "{DASHBOARD}: no expr found");
    for (title, expr) in &dashboard_exprs {
        problems.extend(check_expr(
            &scrape,
            DASHBOARD,
            &format!("panel {title:?}"),
            expr,
        ));
    }
    let alerts = alerts();
    let rules = alert_rules(&alerts);
    assert!(!rules.is_empty(), "{ALERTS}: no rule found");
    for rule in rules {
        let name = rule["alert"].as_str().or(rule["record"].as_str());
        let context = format!("rule {}", name.unwrap_or("?"));
        match rule["expr"].as_str() {
            Some(expr) => problems.extend(check_expr(&scrape, ALERTS, &context, expr)),
            None => problems.push(format!("{ALERTS}: {context}: no expr")),
        }
    }
    problems.dedup();
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}\nthe relay's metric families: {:?}",
        problems.len(),
        problems.join("\n  "),
        scrape
            .types
            .keys()
            .filter(|name| name.starts_with("relay_"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_description_that_point_somewhere() {
    let alerts = alerts();
    let rules = alert_rules(&alerts);
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for rule in &rules {
        let Some(name) = rule["alert"].as_str() else {
            continue;
        };
        names.insert(name);
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        if !["critical", "warning", "info"].contains(&severity) {
            problems.push(format!(
                "{ALERTS}: {name}: severity {severity:?}, not critical, warning or info"
            ));
        }
        for annotation in ["summary", "description"] {
            if rule["annotations"][annotation]
                .as_str()
                .is_none_or(|text| text.trim().is_empty())
            {
                problems.push(format!("{ALERTS}: {name}: no {annotation} annotation"));
            }
        }
        let description = rule["annotations"]["description"]
            .as_str()
            .unwrap_or_default();
        if !description.contains("qikchat-relay") {
            problems.push(format!(
                "{ALERTS}: {name}: the description does not name the dashboard or the job"
            ));
        }
    }
    for expected in ALERT_NAMES {
        if !names.contains(expected) {
            problems.push(format!("{ALERTS}: no alert {expected}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_dashboard_has_the_on_call_panels_a_prometheus_data_source_and_its_uid() {
    let dashboard = dashboard();
    let mut problems = Vec::new();
    if dashboard["uid"] != "qikchat-relay" {
        problems.push(format!(
            "{DASHBOARD}: uid {} is not qikchat-relay",
            dashboard["uid"]
        ));
    }
    if dashboard["schemaVersion"] != 39 {
        problems.push(format!(
            "{DASHBOARD}: schemaVersion {} is not 39",
            dashboard["schemaVersion"]
        ));
    }
    let variables = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !variables.iter().any(|v| {
        v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource" && v["query"] == "prometheus"
    }) {
        problems.push(format!(
            "{DASHBOARD}: no datasource variable DS_PROMETHEUS of type prometheus"
        ));
    }
    let panels = panels(&dashboard);
    let titles: BTreeSet<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for title in PANELS {
        if !titles.contains(title) {
            problems.push(format!("{DASHBOARD}: no panel {title:?}"));
        }
    }
    let mut ids = BTreeSet::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("?");
        if !ids.insert(panel["id"].as_u64()) {
            problems.push(format!(
                "{DASHBOARD}: panel {title:?}: id {} twice",
                panel["id"]
            ));
        }
        if panel["type"] == "row" {
            continue;
        }
        if panel["description"]
            .as_str()
            .is_none_or(|d| d.trim().is_empty())
        {
            problems.push(format!("{DASHBOARD}: panel {title:?} has no description"));
        }
        if panel["datasource"]["uid"] != "${DS_PROMETHEUS}" {
            problems.push(format!(
                "{DASHBOARD}: panel {title:?}: datasource is not ${{DS_PROMETHEUS}}"
            ));
        }
        if panel["targets"].as_array().is_none_or(Vec::is_empty) {
            problems.push(format!("{DASHBOARD}: panel {title:?} has no query"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scrape_parser_finds_families_and_their_labels() {
    let scrape = Scrape::parse(concat!(
        "# TYPE relay_a_total counter\n",
        "relay_a_total{route=\"/messages/{id}\",x=\"a,b=\\\"c\\\"\",y=\"\"} 1\n",
        "# TYPE relay_b_seconds histogram\n",
        "relay_b_seconds_bucket{operation=\"send\",le=\"0.5\"} 1\n",
        "relay_b_seconds_sum 0.1\n",
        "relay_b_seconds_count 1\n",
    ));
    let labels = |family: &str| -> Vec<String> { scrape.labels[family].iter().cloned().collect() };
    assert_eq!(labels("relay_a_total"), ["route", "x", "y"]);
    assert_eq!(labels("relay_b_seconds"), ["le", "operation"]);
    assert_eq!(
        scrape.family("relay_b_seconds_count").as_deref(),
        Some("relay_b_seconds")
    );
    assert_eq!(scrape.family("relay_a_total_count"), None);
    assert!(
        check_expr(
            &scrape,
            "f",
            "c",
            r#"relay_b_seconds_bucket{operation="send"}"#
        )
        .is_empty()
    );
    assert_eq!(
        check_expr(
            &scrape,
            "f",
            "c",
            r#"relay_a_total{outcome="x"} + rely_c{}"#
        ),
        [
            r#"f: c: metric relay_a_total has no label outcome (it has {"route", "x", "y"})"#,
            r#"f: c: metric rely_c is not the relay's (relay_*) nor one of ["up"]"#,
        ]
    );
}

#[test]
fn the_expression_scan_finds_metrics_and_labels_but_not_strings_or_variables() {
    let found = selectors(
        r#"sum by (le) (rate(relay_x_bucket{job=~"$job", outcome!~"relay_not|a,b"}[$__rate_interval])) / up{job="qikchat-relay"} + relay_y"#,
    );
    let found: Vec<(&str, Vec<&str>)> = found
        .iter()
        .map(|s| {
            (
                s.metric.as_str(),
                s.labels.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            ("relay_x_bucket", vec!["job", "outcome"]),
            ("up", vec!["job"]),
            ("relay_y", vec![]),
        ]
    );
}
