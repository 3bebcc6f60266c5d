//! The outbox's settings (`RELAY_OUTBOX_*`): how long a queued message may wait, how long a
//! replica holds one, how many may wait, how many one replica works on.

use std::time::Duration;

use super::ConfigError;
use super::env::{Env, lease, positive};

/// How the outbox holds messages.
#[derive(Debug, Clone, Copy)]
pub struct OutboxSettings {
    /// How long after it is due a message may still be sent, when its caller gives no
    /// `valid_until` (`RELAY_OUTBOX_VALIDITY_S`).
    pub validity: Duration,
    /// How long a worker holds a claimed message before another may take it, and a started one
    /// before it is taken for `unknown` (`RELAY_OUTBOX_LEASE_MS`): longer than a Qikchat call.
    pub lease: Duration,
    /// Messages waiting at most (`RELAY_OUTBOX_MAX`); beyond, `outbox_full`.
    pub max: u64,
    /// Messages one replica works on at once (`RELAY_OUTBOX_CONCURRENCY`), paced or sending.
    pub concurrency: usize,
}

pub(super) fn outbox(env: &Env) -> Result<OutboxSettings, ConfigError> {
    positive("RELAY_OUTBOX_VALIDITY_S", env.relay_outbox_validity_s)?;
    positive("RELAY_OUTBOX_MAX", env.relay_outbox_max)?;
    positive(
        "RELAY_OUTBOX_CONCURRENCY",
        env.relay_outbox_concurrency as u64,
    )?;
    let lease_ms = lease(
        "RELAY_OUTBOX_LEASE_MS",
        env.relay_outbox_lease_ms,
        env.relay_upstream_timeout_ms,
    )?;
    Ok(OutboxSettings {
        validity: Duration::from_secs(env.relay_outbox_validity_s),
        lease: Duration::from_millis(lease_ms),
        max: env.relay_outbox_max,
        concurrency: env.relay_outbox_concurrency,
    })
}
