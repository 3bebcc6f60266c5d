//! The JSON log line format: one object per line, written directly.
//!
//! `{"timestamp","level",<event fields>,"target","span":{<fields of every span in scope, outermost
//! first>,"name"}}`. It is the shape of tracing-subscriber's
//! `json().flatten_event(true).with_current_span(true)`, with two differences: the span object
//! holds the fields of the enclosing spans too (so a line logged while calling Qikchat still
//! carries the request's `request_id` and `trace_id`), and it is written without serde. Theirs
//! parses a span's fields and writes them out again on every `Span::record` and for every line:
//! half of the relay's instructions per request (bench/PROFILE.md, P1).

use tracing::field::{Field, Visit};
use tracing_log::NormalizeEvent;
use tracing_subscriber::{
    field::RecordFields,
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields, format::Writer, time::FormatTime,
    },
    registry::LookupSpan,
};

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
        // The event's span and the spans around it, outermost first; their field names differ.
        if let Some(scope) = ctx.event_scope() {
            let mut innermost = "";
            line.push_str(",\"span\":{");
            for span in scope.from_root() {
                innermost = span.name();
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
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
            push_json_str(&mut line, innermost);
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use proptest::prelude::*;
    use serde_json::{Value, json};
    use tracing_subscriber::fmt::MakeWriter;

    use tracing::{field::Empty, info, info_span, warn};

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
            span.in_scope(|| {
                info_span!("qikchat.send", http_status = 502u64).in_scope(|| warn!("retrying"))
            });
            warn!(error = %tricky, "outside any span");
        });
        assert_eq!(lines.len(), 3, "{lines:?}");
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
        // A line inside a nested span carries the request's fields as well as its own.
        assert_eq!(
            lines[1]["span"],
            json!({"request_id": "r-1", "caller": "billing", "outcome": tricky, "http_status": 502, "name": "qikchat.send"})
        );
        assert_eq!(lines[2]["error"], tricky);
        assert!(lines[2].get("span").is_none());
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
