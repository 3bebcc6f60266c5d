//! The audit trail: one event per send attempt on the `audit` log target, whatever its outcome,
//! so operators can route it to their log store on its own (docs/operating.md).
//!
//! It names the caller, the request, the message (its type and the masked recipient, never its
//! content) and what Qikchat answered. An Idempotency-Key appears only as its SHA-256.

use std::time::Duration;

use tracing::info;

/// The log target audit events are written to.
pub const TARGET: &str = "audit";

/// What is known about a send attempt; filled in as it goes.
#[derive(Debug, Default)]
pub struct SendAttempt {
    pub message_type: Option<&'static str>,
    /// Masked, as in every log line: `+91******8080`.
    pub to: Option<String>,
    pub idempotency_key_sha256: Option<String>,
    pub qikchat_id: Option<String>,
    pub qikchat_status: Option<u16>,
    /// The caller's rate limit or quota as it stands, for the `RateLimit-*` headers (not logged).
    pub rate_limit: Option<crate::policy::limits::RateLimitHeaders>,
}

impl SendAttempt {
    /// Writes the event. `outcome` is `queued`, `replayed` or the problem's code.
    pub fn record(&self, caller: &str, request_id: &str, outcome: &str, latency: Duration) {
        info!(
            target: TARGET,
            caller,
            request_id,
            idempotency_key_sha256 = self.idempotency_key_sha256.as_deref(),
            r#type = self.message_type,
            to = self.to.as_deref(),
            outcome,
            qikchat_id = self.qikchat_id.as_deref(),
            qikchat_status = self.qikchat_status,
            latency_ms = latency.as_secs_f64() * 1e3,
            "send attempt"
        );
    }
}
