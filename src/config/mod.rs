//! The relay's configuration: read once from the environment into one typed [`Config`].
//!
//! Every setting is an environment variable (docs/configuration.md); no file is read here (the
//! callers file and the key file are the policy's). A missing or invalid value, or a `RELAY_`
//! variable that is not a setting (`known`), is a [`ConfigError`] that names the variable and
//! never contains a secret.

use std::{net::SocketAddr, time::Duration};

use secrecy::SecretString;
use url::Url;

pub use crate::policy::CallerToken;
use crate::policy::{self, KeySource};

mod callers;
mod env;
mod known;
mod outbox;
mod traces;
mod webhooks;

use callers::parse_callers;
use env::{Env, parse_or, positive};
pub use outbox::OutboxSettings;
pub use traces::Traces;
use traces::traces;
pub use webhooks::{StoreSettings, WebhookSettings};
use webhooks::{admin_token, store, webhooks};

/// Everything the relay needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub qikchat_base_url: Url,
    /// Callers, their rules and the Qikchat accounts: what can change without a restart.
    pub policy: crate::policy::Sources,
    /// How often the callers file and key files are checked for changes.
    pub reload_interval_ms: u64,
    pub sandbox: bool,
    pub upstream_timeout_ms: u64,
    pub max_in_flight: usize,
    pub max_body_bytes: usize,
    /// `POST /messages/batch`'s own body limit (`RELAY_MAX_BATCH_BYTES`).
    pub max_batch_bytes: usize,
    /// What one client connection may hold and for how long (`RELAY_HEADER_TIMEOUT_MS`, ...).
    pub connections: ConnectionLimits,
    pub drain_timeout_ms: u64,
    pub log_format: LogFormat,
    /// Where idempotency keys live when shared by replicas; in memory when `None`.
    pub redis_url: Option<SecretString>,
    pub idempotency_ttl_s: u64,
    /// How long a claim on a key holds before its holder is presumed dead.
    pub idempotency_lease_ms: u64,
    /// In-memory store only: at most this many keys (new ones are refused beyond it).
    pub idempotency_max_keys: usize,
    pub media_preflight: crate::preflight::Mode,
    pub media_preflight_timeout_ms: u64,
    /// Lets the preflight fetch private addresses: for tests and internal CDNs only.
    pub media_preflight_allow_private: bool,
    pub media_preflight_cache_s: u64,
    /// A `tracing` filter directive such as `info` or `qikchat_relay=debug,info`.
    pub log_filter: String,
    pub traces: Traces,
    /// Receiving Qikchat's webhooks: on when `RELAY_WEBHOOK_SECRET` is set.
    pub webhooks: Option<WebhookSettings>,
    /// The durable store of message owners and webhook events: always there.
    pub store: StoreSettings,
    /// SHA-256 of `RELAY_ADMIN_TOKEN`: the operator's endpoints are off without it.
    pub admin_token_sha256: Option<[u8; 32]>,
    /// The customer-service window (`RELAY_CUSTOMER_WINDOW`, `RELAY_CUSTOMER_WINDOW_S`).
    pub conversation: crate::conversation::Settings,
    /// Queued and scheduled sends (`RELAY_OUTBOX_*`).
    pub outbox: OutboxSettings,
}
/// Bounds on client connections, so that no client, with or without a token, can hold the
/// relay's memory, descriptors or time (the contract's "Holding under hostile load").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A complete request head must arrive within this of the connection opening, or of the
    /// previous answer.
    pub header_timeout_ms: u64,
    /// A connection with no request in flight is closed after this long without a request.
    pub idle_timeout_ms: u64,
    /// A request body must arrive whole within this of the handler asking for it.
    pub body_timeout_ms: u64,
    /// Open client connections at most (lowered at start to what the descriptor limit allows).
    pub max_connections: usize,
}

impl ConnectionLimits {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl std::str::FromStr for LogFormat {
    type Err = &'static str;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            _ => Err("must be json or pretty"),
        }
    }
}

/// A configuration problem, worded for the one line the process prints before it exits.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

impl ConfigError {
    fn new(variable: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            variable: variable.into(),
            problem: problem.into(),
        }
    }
}
/// Whether a variable's name is of the kind the relay reads (its settings, the key, the log filter
/// and OpenTelemetry's).
fn read_by_the_relay(name: &str) -> bool {
    ["RELAY_", "QIKCHAT_", "OTEL_", "RUST_LOG"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

impl Config {
    /// Reads the process environment. A variable that is not Unicode is refused when it is one
    /// of the relay's own (by its prefix), and otherwise left out: `std::env::vars` would panic on
    /// it, and the rest of the environment is none of the relay's business.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut pairs = Vec::new();
        for (name, value) in std::env::vars_os() {
            match (name.into_string(), value.into_string()) {
                (Ok(name), Ok(value)) => pairs.push((name, value)),
                (Ok(name), Err(_)) if read_by_the_relay(&name) => {
                    return Err(ConfigError::new(name, "the value is not valid UTF-8"));
                }
                (Err(name), _) if read_by_the_relay(&name.to_string_lossy()) => {
                    return Err(ConfigError::new(
                        name.to_string_lossy(),
                        "the name is not valid UTF-8",
                    ));
                }
                _ => {}
            }
        }
        Self::from_pairs(pairs)
    }

    /// Reads configuration from `(VARIABLE, value)` pairs; tests use this instead of `set_var`.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let pairs: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        // Accounts in the callers file may name any variable for their key (`key_env`).
        let env_snapshot: std::collections::BTreeMap<String, SecretString> = pairs
            .iter()
            .map(|(k, v)| (k.clone(), SecretString::from(v.as_str())))
            .collect();
        // Before anything is parsed: a misspelt setting may be why another one seems missing.
        known::refuse_unknown(pairs.iter().map(|(k, _)| k.as_str()))?;
        let env = Env::read(pairs)?;
        let outbox = outbox::outbox(&env)?;

        let traces = traces(&env)?;
        let webhooks = webhooks(&env)?;
        let store = store(&env)?;
        let admin_token_sha256 = admin_token(&env)?;
        let default_key = match (env.qikchat_api_key, env.qikchat_api_key_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "QIKCHAT_API_KEY_FILE",
                    "set either QIKCHAT_API_KEY or QIKCHAT_API_KEY_FILE, not both",
                ));
            }
            (Some(key), None) => KeySource::Inline(
                policy::check_key("QIKCHAT_API_KEY", &key)
                    .map_err(|e| ConfigError::new(e.source_name, e.problem))?,
            ),
            (None, Some(path)) => KeySource::File(path),
            (None, None) => KeySource::None,
        };
        if env.relay_clients.is_some() && env.relay_clients_file.is_some() {
            return Err(ConfigError::new(
                "RELAY_CLIENTS_FILE",
                "set either RELAY_CLIENTS or RELAY_CLIENTS_FILE, not both",
            ));
        }
        let callers = match env.relay_clients.as_deref() {
            Some(list) => parse_callers(list)?,
            None => Vec::new(),
        };

        let qikchat_base_url: Url = parse_or(
            "QIKCHAT_BASE_URL",
            env.qikchat_base_url,
            "https://api.qikchat.in",
        )?;
        let listen_addr: SocketAddr =
            parse_or("RELAY_LISTEN_ADDR", env.relay_listen_addr, "0.0.0.0:8080")?;
        let log_format: LogFormat = parse_or("RELAY_LOG_FORMAT", env.relay_log_format, "json")?;
        let media_preflight = parse_or("RELAY_MEDIA_PREFLIGHT", env.relay_media_preflight, "warn")?;
        positive("RELAY_CUSTOMER_WINDOW_S", env.relay_customer_window_s)?;
        let conversation = crate::conversation::Settings {
            mode: parse_or("RELAY_CUSTOMER_WINDOW", env.relay_customer_window, "warn")?,
            window: Duration::from_secs(env.relay_customer_window_s),
        };
        let templates = parse_or("RELAY_TEMPLATES", env.relay_templates, "open")?;
        positive(
            "RELAY_MEDIA_PREFLIGHT_TIMEOUT_MS",
            env.relay_media_preflight_timeout_ms,
        )?;
        if !matches!(qikchat_base_url.scheme(), "http" | "https") {
            return Err(ConfigError::new(
                "QIKCHAT_BASE_URL",
                "must be an http or https URL",
            ));
        }
        positive("RELAY_UPSTREAM_TIMEOUT_MS", env.relay_upstream_timeout_ms)?;
        positive("RELAY_RELOAD_INTERVAL_MS", env.relay_reload_interval_ms)?;
        positive("RELAY_MAX_IN_FLIGHT", env.relay_max_in_flight as u64)?;
        positive("RELAY_MAX_BODY_BYTES", env.relay_max_body_bytes as u64)?;
        positive("RELAY_MAX_BATCH_BYTES", env.relay_max_batch_bytes as u64)?;
        positive("RELAY_HEADER_TIMEOUT_MS", env.relay_header_timeout_ms)?;
        positive("RELAY_IDLE_TIMEOUT_MS", env.relay_idle_timeout_ms)?;
        positive("RELAY_BODY_TIMEOUT_MS", env.relay_body_timeout_ms)?;
        positive("RELAY_MAX_CONNECTIONS", env.relay_max_connections as u64)?;
        positive("RELAY_IDEMPOTENCY_TTL_S", env.relay_idempotency_ttl_s)?;
        positive(
            "RELAY_IDEMPOTENCY_MAX_KEYS",
            env.relay_idempotency_max_keys as u64,
        )?;
        let idempotency_lease_ms = env::lease(
            "RELAY_IDEMPOTENCY_LEASE_MS",
            env.relay_idempotency_lease_ms,
            env.relay_upstream_timeout_ms,
        )?;
        let redis_url = match env.relay_redis_url.filter(|url| !url.trim().is_empty()) {
            Some(url) => {
                // Checked now so a typo fails at start; the URL may hold a password, never printed.
                redis::Client::open(url.as_str()).map_err(|_| {
                    ConfigError::new(
                        "RELAY_REDIS_URL",
                        "is not a valid redis:// or rediss:// URL",
                    )
                })?;
                Some(SecretString::from(url))
            }
            None => None,
        };
        tracing_subscriber::EnvFilter::try_new(&env.rust_log)
            .map_err(|e| ConfigError::new("RUST_LOG", format!("is not a valid filter: {e}")))?;

        let policy = policy::Sources {
            clients_file: env.relay_clients_file,
            clients: callers,
            allow_anonymous: env.relay_allow_anonymous,
            default_key,
            base_url: qikchat_base_url.clone(),
            timeout: Duration::from_millis(env.relay_upstream_timeout_ms),
            sandbox: env.relay_sandbox,
            env: std::sync::Arc::new(env_snapshot),
            templates,
        };

        Ok(Self {
            listen_addr,
            qikchat_base_url,
            policy,
            reload_interval_ms: env.relay_reload_interval_ms,
            sandbox: env.relay_sandbox,
            upstream_timeout_ms: env.relay_upstream_timeout_ms,
            max_in_flight: env.relay_max_in_flight,
            max_body_bytes: env.relay_max_body_bytes,
            max_batch_bytes: env.relay_max_batch_bytes,
            connections: ConnectionLimits {
                header_timeout_ms: env.relay_header_timeout_ms,
                idle_timeout_ms: env.relay_idle_timeout_ms,
                body_timeout_ms: env.relay_body_timeout_ms,
                max_connections: env.relay_max_connections,
            },
            drain_timeout_ms: env.relay_drain_timeout_ms,
            log_format,
            log_filter: env.rust_log,
            redis_url,
            media_preflight,
            media_preflight_timeout_ms: env.relay_media_preflight_timeout_ms,
            media_preflight_allow_private: env.relay_media_preflight_allow_private,
            media_preflight_cache_s: env.relay_media_preflight_cache_s,
            idempotency_ttl_s: env.relay_idempotency_ttl_s,
            idempotency_lease_ms,
            idempotency_max_keys: env.relay_idempotency_max_keys,
            traces,
            webhooks,
            store,
            admin_token_sha256,
            conversation,
            outbox,
        })
    }

    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }

    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_s)
    }

    pub fn idempotency_lease(&self) -> Duration {
        Duration::from_millis(self.idempotency_lease_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

#[cfg(test)]
mod tests;
