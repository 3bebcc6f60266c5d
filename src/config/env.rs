//! The environment as envy reads it ([`Env`], with the defaults of the settings that have one),
//! and the checks of a raw value, whose errors name its variable.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// The environment as envy sees it: names are the variables in lower case. Its fields are the
/// relay's settings, the one list of them: `known` reads their names off this derive, and refuses
/// a `RELAY_` variable that is not one of them.
#[derive(Deserialize)]
pub(super) struct Env {
    pub(super) qikchat_api_key: Option<String>,
    pub(super) qikchat_api_key_file: Option<PathBuf>,
    // Parsed by `parse_or` below rather than by envy, whose errors for these types do not name
    // the variable.
    pub(super) qikchat_base_url: Option<String>,
    pub(super) relay_listen_addr: Option<String>,
    pub(super) relay_clients: Option<String>,
    pub(super) relay_clients_file: Option<PathBuf>,
    #[serde(default = "default_reload_interval_ms")]
    pub(super) relay_reload_interval_ms: u64,
    #[serde(default)]
    pub(super) relay_allow_anonymous: bool,
    #[serde(default)]
    pub(super) relay_sandbox: bool,
    #[serde(default = "default_upstream_timeout_ms")]
    pub(super) relay_upstream_timeout_ms: u64,
    #[serde(default = "default_max_in_flight")]
    pub(super) relay_max_in_flight: usize,
    #[serde(default = "default_max_body_bytes")]
    pub(super) relay_max_body_bytes: usize,
    #[serde(default = "default_drain_timeout_ms")]
    pub(super) relay_drain_timeout_ms: u64,
    #[serde(default = "default_header_timeout_ms")]
    pub(super) relay_header_timeout_ms: u64,
    #[serde(default = "default_idle_timeout_ms")]
    pub(super) relay_idle_timeout_ms: u64,
    #[serde(default = "default_body_timeout_ms")]
    pub(super) relay_body_timeout_ms: u64,
    #[serde(default = "default_max_connections")]
    pub(super) relay_max_connections: usize,
    pub(super) relay_log_format: Option<String>,
    #[serde(default = "default_log_filter")]
    pub(super) rust_log: String,
    pub(super) relay_redis_url: Option<String>,
    pub(super) relay_media_preflight: Option<String>,
    pub(super) relay_templates: Option<String>,
    #[serde(default = "default_media_preflight_timeout_ms")]
    pub(super) relay_media_preflight_timeout_ms: u64,
    #[serde(default)]
    pub(super) relay_media_preflight_allow_private: bool,
    #[serde(default = "default_media_preflight_cache_s")]
    pub(super) relay_media_preflight_cache_s: u64,
    #[serde(default = "default_idempotency_ttl_s")]
    pub(super) relay_idempotency_ttl_s: u64,
    pub(super) relay_idempotency_lease_ms: Option<u64>,
    #[serde(default = "default_idempotency_max_keys")]
    pub(super) relay_idempotency_max_keys: usize,
    // The OpenTelemetry variables the relay itself looks at (the SDK reads the rest).
    pub(super) otel_sdk_disabled: Option<String>,
    pub(super) otel_traces_exporter: Option<String>,
    pub(super) otel_exporter_otlp_endpoint: Option<String>,
    pub(super) otel_exporter_otlp_traces_endpoint: Option<String>,
    pub(super) otel_exporter_otlp_protocol: Option<String>,
    pub(super) otel_exporter_otlp_traces_protocol: Option<String>,
    pub(super) otel_service_name: Option<String>,
    pub(super) otel_resource_attributes: Option<String>,
    pub(super) relay_webhook_secret: Option<String>,
    pub(super) relay_webhook_basic_auth: Option<String>,
    pub(super) relay_data_dir: Option<PathBuf>,
    #[serde(default = "default_webhook_retry_base_ms")]
    pub(super) relay_webhook_retry_base_ms: u64,
    #[serde(default = "default_webhook_max_attempts")]
    pub(super) relay_webhook_max_attempts: u32,
    #[serde(default = "default_webhook_timeout_ms")]
    pub(super) relay_webhook_timeout_ms: u64,
    pub(super) relay_admin_token: Option<String>,
    #[serde(default = "default_message_owner_ttl_s")]
    pub(super) relay_message_owner_ttl_s: u64,
    #[serde(default = "default_webhook_store_max_mb")]
    pub(super) relay_webhook_store_max_mb: u64,
    pub(super) relay_customer_window: Option<String>,
    #[serde(default = "default_customer_window_s")]
    pub(super) relay_customer_window_s: u64,
    #[serde(default = "default_max_batch_bytes")]
    pub(super) relay_max_batch_bytes: usize,
    #[serde(default = "default_outbox_validity_s")]
    pub(super) relay_outbox_validity_s: u64,
    pub(super) relay_outbox_lease_ms: Option<u64>,
    #[serde(default = "default_outbox_max")]
    pub(super) relay_outbox_max: u64,
    #[serde(default = "default_outbox_concurrency")]
    pub(super) relay_outbox_concurrency: usize,
}

impl Env {
    /// Reads the relay's own variables out of `pairs`.
    pub(super) fn read(pairs: Vec<(String, String)>) -> Result<Self, ConfigError> {
        let pairs = pairs
            .into_iter()
            // Only our own variables reach envy, so an unrelated variable can never fail the parse.
            .filter(|(k, _)| {
                k.starts_with("QIKCHAT_")
                    || k.starts_with("RELAY_")
                    || k.starts_with("OTEL_")
                    || k == "RUST_LOG"
            });
        envy::from_iter(pairs).map_err(envy_error)
    }
}

fn default_webhook_retry_base_ms() -> u64 {
    1_000
}
fn default_webhook_max_attempts() -> u32 {
    10
}
fn default_webhook_timeout_ms() -> u64 {
    5_000
}
/// 1 GiB of stored events: about a million status events of 1 KB (Qikchat's examples are smaller)
/// held while every subscriber is down, yet small next to the disk or Redis it lives on.
fn default_webhook_store_max_mb() -> u64 {
    1024
}
/// WhatsApp's customer-service window: 24 hours after the customer's last message.
fn default_customer_window_s() -> u64 {
    86_400
}
/// Four hours: a notification later than that is usually worse than none.
fn default_outbox_validity_s() -> u64 {
    14_400
}
fn default_outbox_max() -> u64 {
    100_000
}
fn default_outbox_concurrency() -> usize {
    64
}
fn default_message_owner_ttl_s() -> u64 {
    7 * 86_400
}

fn default_idempotency_ttl_s() -> u64 {
    86_400
}
fn default_media_preflight_timeout_ms() -> u64 {
    3_000
}
fn default_media_preflight_cache_s() -> u64 {
    300
}
fn default_idempotency_max_keys() -> usize {
    100_000
}

fn default_upstream_timeout_ms() -> u64 {
    10_000
}
fn default_max_in_flight() -> usize {
    512
}
fn default_max_body_bytes() -> usize {
    64 * 1024
}
/// 1000 messages of 8 KiB each: room for a full batch of long templates.
fn default_max_batch_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_drain_timeout_ms() -> u64 {
    30_000
}
// A well-behaved client sends its head in one write, and its body right after: 10 s is far more
// than any of them needs, and short enough that a connection that stalls (on purpose or not)
// gives its slot back quickly.
fn default_header_timeout_ms() -> u64 {
    10_000
}
fn default_body_timeout_ms() -> u64 {
    10_000
}
// Longer than the pools of common HTTP clients keep a connection unused, so a caller's idle
// keep-alive connection is normally reused, not closed under it.
fn default_idle_timeout_ms() -> u64 {
    60_000
}
// A few hundred callers with a pool each fit easily; each open connection costs at most its
// 32 KiB head buffer plus a few KiB, so 4096 of them stay well under 256 MiB.
fn default_max_connections() -> usize {
    4096
}
fn default_reload_interval_ms() -> u64 {
    2_000
}
fn default_log_filter() -> String {
    "info".to_owned()
}

/// envy names the variable in lower case; the operator set it in upper case.
fn envy_error(e: envy::Error) -> ConfigError {
    match e {
        envy::Error::MissingValue(field) => {
            ConfigError::new(field.to_ascii_uppercase(), "is required")
        }
        // envy's message reads "<problem> while parsing value '<v>' provided by <VARIABLE>". Only
        // non-secret settings are typed (keys and tokens are plain strings that cannot fail to
        // parse), so the value it quotes is safe to print.
        envy::Error::Custom(message) => {
            let variable = message.rsplit_once("provided by ").map_or_else(
                || "environment".to_owned(),
                |(_, name)| name.to_ascii_uppercase(),
            );
            ConfigError::new(variable, message)
        }
    }
}

pub(super) fn parse_or<T>(
    variable: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let value = value.unwrap_or_else(|| default.to_owned());
    value
        .trim()
        .parse()
        .map_err(|e| ConfigError::new(variable, format!("{e} (got {value:?})")))
}

/// A lease on a send (`RELAY_IDEMPOTENCY_LEASE_MS`, `RELAY_OUTBOX_LEASE_MS`): `given`, or the
/// upstream timeout plus 5 s. It must outlast a whole Qikchat call, or a slow send could be taken
/// for a dead one.
pub(super) fn lease(
    variable: &'static str,
    given: Option<u64>,
    upstream_timeout_ms: u64,
) -> Result<u64, ConfigError> {
    let lease_ms = given.unwrap_or(upstream_timeout_ms + 5_000);
    if lease_ms <= upstream_timeout_ms {
        return Err(ConfigError::new(
            variable,
            "must be longer than RELAY_UPSTREAM_TIMEOUT_MS",
        ));
    }
    Ok(lease_ms)
}

pub(super) fn positive(variable: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(variable, "must be greater than 0"));
    }
    Ok(())
}

/// A variable's value, trimmed, when it is set to more than blanks.
pub(super) fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}
