//! Telemetry in one place: the log subscriber, the metrics recorder and the trace exporter. The
//! middleware that gives every request its span, its one log line and its metrics is
//! `http::observe`.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing::warn;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::{
    config::{Config, LogFormat, Traces},
    metric,
};

mod json_lines;
pub use json_lines::{AppendJsonFields, JsonLines};

/// Latency buckets in seconds: from a sandbox answer (sub-millisecond) to Qikchat's timeout.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Whether spans go to an OpenTelemetry exporter (set once, by [`init`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans go to an OpenTelemetry exporter: then each request's span is named and joins
/// the caller's trace.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// What [`init`] started; [`Telemetry::shutdown`] sends the spans still buffered.
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still in the batch, waiting at most for the exporter's timeout.
    pub async fn shutdown(self) {
        if let Some(provider) = self.traces {
            // The SDK blocks while it flushes, on a thread of its own.
            let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = flushed {
                warn!(error = %e, "the last spans could not be exported");
            }
        }
    }
}

/// Installs the global subscriber: log lines on stdout, JSON (default) or human-readable,
/// filtered by `RUST_LOG`; and, when an OTLP endpoint is configured, spans exported to it.
/// A second call (tests building several apps) leaves the first in place.
pub fn init(config: &Config) -> Result<Telemetry, String> {
    let logs = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stdout)
            .with_ansi(false)
            .event_format(JsonLines)
            .fmt_fields(AppendJsonFields)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stdout)
            .boxed(),
    };
    let provider = match config.traces {
        Traces::Off => None,
        Traces::Otlp {
            default_service_name,
        } => Some(tracer_provider(default_service_name)?),
    };
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
    });
    let installed = tracing_subscriber::registry()
        .with(EnvFilter::new(&config.log_filter))
        .with(logs)
        .with(spans)
        .try_init()
        .is_ok();
    EXPORTING.store(installed && provider.is_some(), Ordering::Relaxed);
    Ok(Telemetry {
        traces: provider.filter(|_| installed),
    })
}

/// Spans batched and sent over OTLP/HTTP; the SDK reads the standard `OTEL_*` variables.
fn tracer_provider(default_service_name: bool) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: cannot create the exporter: {e}"))?;
    let mut resource = Resource::builder();
    if default_service_name {
        resource = resource.with_service_name(env!("CARGO_PKG_NAME"));
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            resource
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build(),
        )
        .build())
}

/// The process-wide Prometheus recorder; installed on first use, with every family's help text
/// ([`metric`]).
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
            metric::describe();
            metrics::gauge!(metric::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            // Counters that alerts divide or take rates of exist from the start, at 0, rather
            // than appearing with their first event.
            // `rate_limited` is Qikchat's 429; the relay's own limits count under their rule.
            let limits = crate::policy::Rule::LIMITS.map(crate::policy::Rule::as_str);
            let conversation = ["opted_out", "outside_customer_window"];
            let templates = ["unknown_template", "template_mismatch"];
            for reason in ["overloaded", "caller_in_flight", "draining", "rate_limited"]
                .into_iter()
                .chain(limits)
                .chain(conversation)
                .chain(templates)
            {
                metrics::counter!(metric::REJECTIONS_TOTAL, "reason" => reason).increment(0);
            }
            for result in ["replayed", "in_flight", "reused", "outcome_unknown"] {
                metrics::counter!(metric::IDEMPOTENCY_TOTAL, "result" => result).increment(0);
            }
            // A replica's first failed or unknown message must count for the dead-letter alert.
            for status in ["accepted", "scheduled", "queued", "failed", "expired", "canceled", "unknown"] {
                metrics::counter!(metric::OUTBOX_TRANSITIONS_TOTAL, "status" => status).increment(0);
            }
            metrics::counter!(metric::OUTBOX_RETRIES_TOTAL).increment(0);
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
