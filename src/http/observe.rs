//! The middleware that gives every request its span, its one log line and its metrics.
//!
//! The request span is created here with empty fields (caller, type, outcome, ...) that handlers
//! fill in as they learn them; the "request finished" line at the end carries them all.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    http::Method,
    middleware::Next,
    response::Response,
};
use opentelemetry::{
    propagation::TextMapPropagator,
    trace::{TraceContextExt, TraceId},
};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::{Instrument, Span, field::Empty, info, info_span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::error::REQUEST_ID;
use crate::{metric, telemetry};

/// Continues the caller's W3C trace (`traceparent`) in `span`, and names the trace in the logs:
/// `trace_id` is the span's when spans are exported, else the caller's when it sent one.
fn join_trace(span: &Span, request: &Request, method: &str, route: &str) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    let mut trace_id = parent.span().span_context().trace_id();
    if telemetry::exporting() {
        span.record("otel.name", format!("{method} {route}"));
        span.record("otel.kind", "server");
        let _ = span.set_parent(parent);
        trace_id = span.context().span().span_context().trace_id();
    }
    if trace_id != TraceId::INVALID {
        span.record("trace_id", trace_id.to_string());
    }
}

/// The method as a label: one of the standard ones, else `other`. HTTP lets a client invent
/// methods, and each invented one would be a new time series for as long as the process lives.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

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
        method = method_label(&method),
        route,
        caller = Empty,
        r#type = Empty,
        to = Empty,
        outcome = Empty,
        qikchat_id = Empty,
        qikchat_status = Empty,
        trace_id = Empty,
        otel.name = Empty,
        otel.kind = Empty,
    );
    join_trace(&span, &request, method_label(&method), &route);

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
        ("method", method_label(&method).to_owned()),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!(metric::HTTP_REQUESTS_TOTAL, &labels).increment(1);
    metrics::histogram!(metric::HTTP_REQUEST_DURATION_SECONDS, &labels)
        .record(latency.as_secs_f64());
    response
}
