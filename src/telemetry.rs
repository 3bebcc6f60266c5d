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
use tracing::{Instrument, field::Empty, info, info_span, warn};
use tracing_subscriber::EnvFilter;

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
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
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
