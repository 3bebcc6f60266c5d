//! Every metric family the relay exports, in one place: the name the recording code uses, and the
//! help text (and unit) that `/metrics` shows on its `# HELP` line. A name exists only as a
//! constant declared here, so none can be recorded without a help text. The process metrics
//! (`process_*`) come from `metrics-process`, read at each scrape. docs/operating.md lists the
//! families for people; keep the two in step.
//!
//! A module of its own, importing nothing of the relay, so that any module can name its metrics
//! without depending on `telemetry` (which reads the configuration).
//!
//! Units are given for the record only: the exporter appends no suffix, so the names stay the
//! ones dashboards and alerts use.

use std::sync::LazyLock;

use metrics::Unit;

/// Declares each family: a constant holding its name (documented by its help text) and its line
/// in [`describe`]. `in Unit` is optional.
macro_rules! families {
    ($($kind:ident $name:ident = $value:literal $(in $unit:ident)?, $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $name: &str = $value;
        )*

        /// Every name declared above, for the tests.
        #[cfg(test)]
        const ALL: &[&str] = &[$($name),*];

        /// Gives every family its help text, the relay's and the process's. Called once, right
        /// after the recorder is installed: a description given before is lost.
        pub(crate) fn describe() {
            $(families!(@describe $kind $name [$($unit)?] $help);)*
            PROCESS.describe();
        }
    };
    (@describe $kind:ident $name:ident [$unit:ident] $help:literal) => {
        families!(@call $kind $name, Unit::$unit, $help)
    };
    (@describe $kind:ident $name:ident [] $help:literal) => {
        families!(@call $kind $name, $help)
    };
    (@call counter $($args:tt)*) => { metrics::describe_counter!($($args)*) };
    (@call gauge $($args:tt)*) => { metrics::describe_gauge!($($args)*) };
    (@call histogram $($args:tt)*) => { metrics::describe_histogram!($($args)*) };
}

families! {
    counter HTTP_REQUESTS_TOTAL = "relay_http_requests_total" in Count,
        "HTTP requests answered, by method (other for a non-standard one), route (the route template, unmatched for none) and status (the HTTP status code).";
    histogram HTTP_REQUEST_DURATION_SECONDS = "relay_http_request_duration_seconds" in Seconds,
        "Time from a request's arrival to its answer, by method, route and status as in relay_http_requests_total.";
    counter SENDS_TOTAL = "relay_sends_total" in Count,
        "Send attempts (POST /send), by caller (the token's name), type (message type) and outcome: queued, replayed, or the error code the caller got.";
    histogram QIKCHAT_REQUEST_DURATION_SECONDS = "relay_qikchat_request_duration_seconds" in Seconds,
        "Calls to Qikchat, by operation (send, status), outcome (accepted, found, rejected, key_refused, rate_limited, failed, timeout, unreachable, not_found) and status (Qikchat's HTTP status, none if it did not answer).";
    gauge CONNECTIONS_OPEN = "relay_connections_open" in Count,
        "Client connections open now; at most RELAY_MAX_CONNECTIONS.";
    counter CONNECTIONS_REJECTED_TOTAL = "relay_connections_rejected_total" in Count,
        "Client connections the relay shed or closed, by reason: max_connections, header_timeout, idle_timeout, head_too_large.";
    counter REJECTIONS_TOTAL = "relay_rejections_total" in Count,
        "Sends turned away, by reason: overloaded (RELAY_MAX_IN_FLIGHT), caller_in_flight, draining (shutting down), rate_limited (by Qikchat), the caller's limit that refused, opted_out (the customer is on the opt-out list), outside_customer_window (enforced), or a declared template's check: unknown_template, template_mismatch.";
    counter IDEMPOTENCY_TOTAL = "relay_idempotency_total" in Count,
        "Sends with an Idempotency-Key answered from the store, by result: replayed, in_flight, reused (key with another body), outcome_unknown.";
    gauge SENDS_IN_FLIGHT = "relay_sends_in_flight" in Count,
        "Sends waiting for Qikchat now, read at the scrape.";
    gauge SENDS_IN_FLIGHT_LIMIT = "relay_sends_in_flight_limit" in Count,
        "RELAY_MAX_IN_FLIGHT: sends in flight beyond it are shed as overloaded.";
    counter MEDIA_PREFLIGHT_TOTAL = "relay_media_preflight_total" in Count,
        "Media link checks before a send, by outcome: ok, cached (an earlier check reused), or the failure code.";
    histogram MEDIA_PREFLIGHT_DURATION_SECONDS = "relay_media_preflight_duration_seconds" in Seconds,
        "Time a media link check took (not counting cached ones).";
    counter WEBHOOK_EVENTS_TOTAL = "relay_webhook_events_total" in Count,
        "Webhook events received from Qikchat, by kind (status, inbound, other) and result: stored, duplicate, ignored, full (refused for the store's bound).";
    gauge WEBHOOK_STORE_BYTES = "relay_webhook_store_bytes" in Bytes,
        "What stored webhook events take now, read at the scrape (shared by all replicas with Redis).";
    gauge WEBHOOK_STORE_MAX_BYTES = "relay_webhook_store_max_bytes" in Bytes,
        "RELAY_WEBHOOK_STORE_MAX_MB in bytes: the bound of relay_webhook_store_bytes.";
    counter WEBHOOK_STORE_DROPPED_TOTAL = "relay_webhook_store_dropped_total" in Count,
        "Delivered webhook events whose payload was dropped to keep the store within its bound.";
    counter WEBHOOK_DELIVERIES_TOTAL = "relay_webhook_deliveries_total" in Count,
        "Attempts to deliver a webhook event to a subscriber, by outcome: delivered, retried (failed, will retry), dead_letter (failed for the last time).";
    counter CONVERSATION_WARNINGS_TOTAL = "relay_conversation_warnings_total" in Count,
        "Sends that went out with a warning about the conversation, by rule: outside_customer_window (RELAY_CUSTOMER_WINDOW=warn).";
    counter OPT_OUT_CHANGES_TOTAL = "relay_opt_out_changes_total" in Count,
        "Changes asked of the opt-out lists, by change (opt_out, opt_in) and how: keyword (a customer wrote one; counted each time its event is routed) or admin (an operator's PUT or DELETE).";
    gauge OUTBOX_WAITING = "relay_outbox_waiting" in Count,
        "Outbox messages not yet ended (scheduled, accepted, being sent), in the whole outbox (every replica sees the same with Redis): what RELAY_OUTBOX_MAX bounds.";
    gauge OUTBOX_MAX = "relay_outbox_max" in Count,
        "RELAY_OUTBOX_MAX: the bound of relay_outbox_waiting, beyond which POST /messages answers 503 outbox_full.";
    gauge OUTBOX_OLDEST_DUE_SECONDS = "relay_outbox_oldest_due_seconds" in Seconds,
        "How long the oldest outbox message that is due and not yet sent has been due (0 when none is): how far delivery is behind.";
    counter OUTBOX_TRANSITIONS_TOTAL = "relay_outbox_transitions_total" in Count,
        "Outbox messages that reached each status: accepted and scheduled at acceptance, then queued (Qikchat took it), failed, expired, canceled or unknown.";
    counter OUTBOX_RETRIES_TOTAL = "relay_outbox_retries_total" in Count,
        "Outbox deliveries put back for a later attempt because nothing reached Qikchat (unreachable, its 429, a store that could not be read).";
    gauge BUILD_INFO = "relay_build_info",
        "Always 1; the version label is the relay's version.";
}

/// The standard process metrics: CPU, memory, descriptors, threads, start time.
static PROCESS: LazyLock<metrics_process::Collector> =
    LazyLock::new(metrics_process::Collector::default);

/// Reads the process metrics (`/proc/self` on Linux) into the recorder; `/metrics` calls it
/// before rendering, so they are as of the scrape.
pub fn collect_process() {
    PROCESS.collect();
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    #[test]
    fn every_family_has_a_help_line_and_a_unique_prometheus_name() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            for name in ALL {
                metrics::gauge!(*name).set(1.0);
            }
        });
        let rendered = handle.render();
        for name in ALL {
            assert!(
                rendered.contains(&format!("# HELP {name} ")),
                "{name} has no help line in:\n{rendered}"
            );
            assert!(
                name.starts_with("relay_")
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
        }
        let mut names = ALL.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a name is declared twice");
    }
}
