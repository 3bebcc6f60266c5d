//! Telemetry in one place: the log subscriber, the metrics recorder, and [`observe`], the
//! middleware that gives every request its span, its one log line and its metrics.
//!
//! The request span is created here with empty fields (caller, type, outcome, ...) that handlers
//! fill in as they learn them; the "request finished" line at the end carries them all.

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::{
    Instrument,
    field::{Empty, Field, Visit},
    info, info_span, warn,
};
use tracing_log::NormalizeEvent;
use tracing_subscriber::{
    EnvFilter,
    field::RecordFields,
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields, format::Writer, time::FormatTime,
    },
    registry::LookupSpan,
};

use crate::{
    app::REQUEST_ID,
    config::{Config, LogFormat},
};

/// Latency buckets in seconds: from a sandbox answer (sub-millisecond) to Qikchat's timeout.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the global log subscriber: JSON lines (default) or human-readable, filtered by
/// `RUST_LOG`. A second call (tests building several apps) leaves the first in place.
pub fn init_logs(config: &Config) {
    let filter = EnvFilter::new(&config.log_filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match config.log_format {
        LogFormat::Json => builder
            .with_ansi(false)
            .event_format(JsonLines)
            .fmt_fields(AppendJsonFields)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// JSON span fields that later `Span::record` calls append to (tracing-subscriber's own
/// `JsonFields` parses a span's fields and writes them out again on every `record`).
#[derive(Debug, Default)]
pub struct AppendJsonFields;

impl<'writer> FormatFields<'writer> for AppendJsonFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut object = String::with_capacity(128);
        object.push('{');
        fields.record(&mut JsonFieldWriter::new(&mut object, true));
        object.push('}');
        writer.write_str(&object)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        let current = &mut current.fields;
        if current.is_empty() {
            current.push_str("{}");
        }
        if current.ends_with('}') {
            current.pop();
            let first = current.len() == 1;
            fields.record(&mut JsonFieldWriter::new(current, first));
            current.push('}');
        }
        Ok(())
    }
}

/// One JSON object per line, the same shape as tracing-subscriber's
/// `json().flatten_event(true).with_current_span(true).with_span_list(false)`:
/// `{"timestamp","level",<event fields>,"target","span":{<span fields>,"name"}}`, written
/// directly instead of through serde with the span's fields parsed again for every line.
#[derive(Debug, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'writer> FormatFields<'writer> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        // Events from the `log` crate (dependencies) carry their real target in `log.*` fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut line = String::with_capacity(512);
        line.push_str("{\"timestamp\":\"");
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut line))?;
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push('"');
        event.record(&mut JsonFieldWriter::new(&mut line, false));
        line.push_str(",\"target\":");
        push_json_str(&mut line, meta.target());
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            line.push_str(",\"span\":{");
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                let inner = fields.fields.trim();
                let inner = inner
                    .strip_prefix('{')
                    .and_then(|f| f.strip_suffix('}'))
                    .unwrap_or("");
                if !inner.is_empty() {
                    line.push_str(inner);
                    line.push(',');
                }
            }
            line.push_str("\"name\":");
            push_json_str(&mut line, span.name());
            line.push('}');
        }
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// Writes fields as `"name":value` pairs, comma-separated, JSON-escaped.
struct JsonFieldWriter<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> JsonFieldWriter<'a> {
    fn new(out: &'a mut String, first: bool) -> Self {
        Self { out, first }
    }

    fn key(&mut self, field: &Field) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        push_json_str(self.out, field.name());
        self.out.push(':');
    }
}

impl Visit for JsonFieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_str(self.out, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        self.key(field);
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        push_json_str(self.out, &text);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        use std::fmt::Write;
        self.key(field);
        let mut text = String::new();
        let _ = write!(text, "{value}");
        push_json_str(self.out, &text);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        use std::fmt::Write;
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        use std::fmt::Write;
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        use std::fmt::Write;
        self.key(field);
        match serde_json::Number::from_f64(value) {
            Some(number) => {
                let _ = write!(self.out, "{number}");
            }
            None => self.out.push_str("null"),
        }
    }
}

/// `value` as a JSON string, escaped as serde_json escapes it.
fn push_json_str(out: &mut String, value: &str) {
    use std::fmt::Write;
    out.push('"');
    let mut start = 0;
    for (i, byte) in value.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&value[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&value[start..]);
    out.push('"');
}

/// The process-wide Prometheus recorder; installed on first use.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .expect("the bucket list is not empty");
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                Err(e) => {
                    warn!(error = %e, "another metrics recorder is installed; /metrics will be empty");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            metrics::gauge!("relay_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            // Histogram samples pile up until upkeep folds them into buckets. Left to /metrics
            // scrapes, a relay nobody scrapes grows by about 20 bytes a request (bench/PROFILE.md,
            // P4), so a thread of its own does it, for as long as the process lives.
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
            if let Err(e) = spawned {
                warn!(error = %e, "no metrics upkeep thread; histogram samples are folded only when /metrics is scraped");
            }
            handle
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Wraps a request in its span, then logs its one line and counts it.
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // The route template, never the raw path: ids in paths would explode metric cardinality.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let span = info_span!(
        "request",
        request_id,
        method = %method,
        route,
        caller = Empty,
        r#type = Empty,
        to = Empty,
        outcome = Empty,
        qikchat_id = Empty,
        qikchat_status = Empty,
    );

    let response = next.run(request).instrument(span.clone()).await;

    let latency = started.elapsed();
    let status = response.status().as_u16();
    span.in_scope(|| {
        info!(
            status,
            latency_ms = latency.as_secs_f64() * 1e3,
            "request finished"
        )
    });
    let labels = [
        ("method", method.to_string()),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("relay_http_requests_total", &labels).increment(1);
    metrics::histogram!("relay_http_request_duration_seconds", &labels)
        .record(latency.as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use proptest::prelude::*;
    use serde_json::{Value, json};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn lines_of(run: impl FnOnce()) -> Vec<Value> {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_ansi(false)
            .event_format(JsonLines)
            .fmt_fields(AppendJsonFields)
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        let bytes = captured.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8(bytes)
            .expect("UTF-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
            .collect()
    }

    #[test]
    fn a_line_holds_the_event_fields_and_the_span_fields_recorded_later() {
        let tricky = "quote \" backslash \\ newline \n tab \t bell \u{7} é 😀";
        let lines = lines_of(|| {
            let span = info_span!(
                "request",
                request_id = "r-1",
                caller = Empty,
                outcome = Empty
            );
            span.record("caller", "billing");
            span.record("outcome", tricky);
            span.in_scope(|| {
                info!(
                    status = 200u64,
                    latency_ms = 1.5,
                    ok = true,
                    delta = -3i64,
                    "request finished"
                )
            });
            warn!(error = %tricky, "outside any span");
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "request finished");
        assert_eq!(line["status"], 200);
        assert_eq!(line["latency_ms"], 1.5);
        assert_eq!(line["ok"], true);
        assert_eq!(line["delta"], -3);
        assert_eq!(line["target"], module_path!());
        assert_eq!(
            line["span"],
            json!({"request_id": "r-1", "caller": "billing", "outcome": tricky, "name": "request"})
        );
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(lines[1]["error"], tricky);
        assert!(lines[1].get("span").is_none());
    }

    proptest! {
        #[test]
        fn any_text_is_written_as_the_json_string_of_that_text(text in any::<String>()) {
            let mut out = String::new();
            push_json_str(&mut out, &text);
            prop_assert_eq!(serde_json::from_str::<String>(&out).ok(), Some(text));
        }
    }
}
