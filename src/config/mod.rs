//! The relay's configuration: read once from the environment into one typed [`Config`].
//!
//! Every setting is an environment variable (docs/configuration.md); no file is read here (the
//! callers file and the key file are the policy's). A missing or invalid value is
//! a [`ConfigError`] that names the variable and never contains a secret.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::SecretString;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use url::Url;

pub use crate::policy::CallerToken;
use crate::policy::{self, KeySource};

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
}

/// The durable store: who sent each message (always), and webhook events (when webhooks are on).
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The embedded store's directory, when there is no Redis.
    pub data_dir: PathBuf,
    /// How long the relay remembers who sent a message: for its status reads and its statuses.
    pub owner_ttl: Duration,
    /// `RELAY_WEBHOOK_STORE_MAX_MB` in bytes (MiB): what stored webhook events may take.
    pub webhook_max_bytes: u64,
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

/// How Qikchat's webhooks are received and passed on.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The secret path segment of `POST /webhooks/qikchat/{secret}`.
    pub path_secret: SecretString,
    /// Basic Auth Qikchat must send, when set: user and password.
    pub basic_auth: Option<(String, SecretString)>,
    pub retry_base: Duration,
    pub max_attempts: u32,
    /// SHA-256 of `RELAY_ADMIN_TOKEN`, for the dead-letter endpoints.
    pub admin_token_sha256: Option<[u8; 32]>,
    /// How long one delivery to a subscriber may take.
    pub delivery_timeout: Duration,
}

/// Whether spans are exported. The OpenTelemetry SDK reads the other `OTEL_*` variables itself
/// (headers, timeout, sampler, batching, resource attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traces {
    Off,
    /// OTLP over HTTP with protobuf, to `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`.
    Otlp {
        /// Neither `OTEL_SERVICE_NAME` nor a `service.name` resource attribute is set: the relay
        /// names itself `qikchat-relay`.
        default_service_name: bool,
    },
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

/// The environment as envy sees it: names are the variables in lower case.
#[derive(Deserialize)]
struct Env {
    qikchat_api_key: Option<String>,
    qikchat_api_key_file: Option<PathBuf>,
    // Parsed by `parse_or` below rather than by envy, whose errors for these types do not name
    // the variable.
    qikchat_base_url: Option<String>,
    relay_listen_addr: Option<String>,
    relay_clients: Option<String>,
    relay_clients_file: Option<PathBuf>,
    #[serde(default = "default_reload_interval_ms")]
    relay_reload_interval_ms: u64,
    #[serde(default)]
    relay_allow_anonymous: bool,
    #[serde(default)]
    relay_sandbox: bool,
    #[serde(default = "default_upstream_timeout_ms")]
    relay_upstream_timeout_ms: u64,
    #[serde(default = "default_max_in_flight")]
    relay_max_in_flight: usize,
    #[serde(default = "default_max_body_bytes")]
    relay_max_body_bytes: usize,
    #[serde(default = "default_drain_timeout_ms")]
    relay_drain_timeout_ms: u64,
    #[serde(default = "default_header_timeout_ms")]
    relay_header_timeout_ms: u64,
    #[serde(default = "default_idle_timeout_ms")]
    relay_idle_timeout_ms: u64,
    #[serde(default = "default_body_timeout_ms")]
    relay_body_timeout_ms: u64,
    #[serde(default = "default_max_connections")]
    relay_max_connections: usize,
    relay_log_format: Option<String>,
    #[serde(default = "default_log_filter")]
    rust_log: String,
    relay_redis_url: Option<String>,
    relay_media_preflight: Option<String>,
    #[serde(default = "default_media_preflight_timeout_ms")]
    relay_media_preflight_timeout_ms: u64,
    #[serde(default)]
    relay_media_preflight_allow_private: bool,
    #[serde(default = "default_media_preflight_cache_s")]
    relay_media_preflight_cache_s: u64,
    #[serde(default = "default_idempotency_ttl_s")]
    relay_idempotency_ttl_s: u64,
    relay_idempotency_lease_ms: Option<u64>,
    #[serde(default = "default_idempotency_max_keys")]
    relay_idempotency_max_keys: usize,
    // The OpenTelemetry variables the relay itself looks at (the SDK reads the rest).
    otel_sdk_disabled: Option<String>,
    otel_traces_exporter: Option<String>,
    otel_exporter_otlp_endpoint: Option<String>,
    otel_exporter_otlp_traces_endpoint: Option<String>,
    otel_exporter_otlp_protocol: Option<String>,
    otel_exporter_otlp_traces_protocol: Option<String>,
    otel_service_name: Option<String>,
    otel_resource_attributes: Option<String>,
    relay_webhook_secret: Option<String>,
    relay_webhook_basic_auth: Option<String>,
    relay_data_dir: Option<PathBuf>,
    #[serde(default = "default_webhook_retry_base_ms")]
    relay_webhook_retry_base_ms: u64,
    #[serde(default = "default_webhook_max_attempts")]
    relay_webhook_max_attempts: u32,
    #[serde(default = "default_webhook_timeout_ms")]
    relay_webhook_timeout_ms: u64,
    relay_admin_token: Option<String>,
    #[serde(default = "default_message_owner_ttl_s")]
    relay_message_owner_ttl_s: u64,
    #[serde(default = "default_webhook_store_max_mb")]
    relay_webhook_store_max_mb: u64,
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
fn default_message_owner_ttl_s() -> u64 {
    7 * 86_400
}

/// The store's settings, needed with webhooks on or off (message owners are always recorded).
fn store(env: &Env) -> Result<StoreSettings, ConfigError> {
    positive("RELAY_MESSAGE_OWNER_TTL_S", env.relay_message_owner_ttl_s)?;
    positive("RELAY_WEBHOOK_STORE_MAX_MB", env.relay_webhook_store_max_mb)?;
    Ok(StoreSettings {
        webhook_max_bytes: env.relay_webhook_store_max_mb.saturating_mul(1 << 20),
        data_dir: env
            .relay_data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./data")),
        owner_ttl: Duration::from_secs(env.relay_message_owner_ttl_s),
    })
}

/// The webhook settings, when `RELAY_WEBHOOK_SECRET` turns the endpoint on.
fn webhooks(env: &Env) -> Result<Option<WebhookSettings>, ConfigError> {
    let Some(secret) = env
        .relay_webhook_secret
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    // It travels in a URL path: long, and only characters that need no escaping.
    if secret.len() < 16
        || !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    {
        return Err(ConfigError::new(
            "RELAY_WEBHOOK_SECRET",
            "must be at least 16 of A-Z a-z 0-9 - _ . ~ (it is a URL path segment)",
        ));
    }
    let basic_auth = match env.relay_webhook_basic_auth.as_deref() {
        None | Some("") => None,
        Some(pair) => {
            let (user, password) = pair
                .split_once(':')
                .filter(|(u, p)| !u.is_empty() && !p.is_empty())
                .ok_or_else(|| {
                    ConfigError::new("RELAY_WEBHOOK_BASIC_AUTH", "must be user:password")
                })?;
            Some((user.to_owned(), SecretString::from(password)))
        }
    };
    let admin_token_sha256 = match env.relay_admin_token.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(token) if token.len() < policy::MIN_TOKEN_LEN => {
            return Err(ConfigError::new(
                "RELAY_ADMIN_TOKEN",
                "must be at least 16 characters",
            ));
        }
        Some(token) => Some(Sha256::digest(token.as_bytes()).into()),
    };
    positive(
        "RELAY_WEBHOOK_RETRY_BASE_MS",
        env.relay_webhook_retry_base_ms,
    )?;
    positive(
        "RELAY_WEBHOOK_MAX_ATTEMPTS",
        u64::from(env.relay_webhook_max_attempts),
    )?;
    positive("RELAY_WEBHOOK_TIMEOUT_MS", env.relay_webhook_timeout_ms)?;
    Ok(Some(WebhookSettings {
        path_secret: SecretString::from(secret),
        basic_auth,
        retry_base: Duration::from_millis(env.relay_webhook_retry_base_ms),
        max_attempts: env.relay_webhook_max_attempts,
        admin_token_sha256,
        delivery_timeout: Duration::from_millis(env.relay_webhook_timeout_ms),
    }))
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

/// Traces are exported when an OTLP endpoint is set, unless the SDK or the traces exporter is
/// turned off by the standard variables. What the relay cannot do is refused at start.
fn traces(env: &Env) -> Result<Traces, ConfigError> {
    fn set(value: &Option<String>) -> Option<&str> {
        value.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }
    let endpoints = [
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            set(&env.otel_exporter_otlp_traces_endpoint),
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            set(&env.otel_exporter_otlp_endpoint),
        ),
    ];
    let disabled = set(&env.otel_sdk_disabled).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let exporter = set(&env.otel_traces_exporter).unwrap_or("otlp");
    if disabled || exporter == "none" || endpoints.iter().all(|(_, v)| v.is_none()) {
        return Ok(Traces::Off);
    }
    if exporter != "otlp" {
        return Err(ConfigError::new(
            "OTEL_TRACES_EXPORTER",
            "must be otlp or none",
        ));
    }
    for (variable, endpoint) in endpoints {
        if let Some(endpoint) = endpoint {
            let url =
                Url::parse(endpoint).map_err(|_| ConfigError::new(variable, "is not a URL"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::new(variable, "must be an http or https URL"));
            }
        }
    }
    for (variable, protocol) in [
        (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            set(&env.otel_exporter_otlp_traces_protocol),
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            set(&env.otel_exporter_otlp_protocol),
        ),
    ] {
        if protocol.is_some_and(|p| p != "http/protobuf") {
            return Err(ConfigError::new(
                variable,
                "must be http/protobuf: the relay exports OTLP over HTTP (port 4318), not gRPC",
            ));
        }
    }
    let named = set(&env.otel_service_name).is_some()
        || set(&env.otel_resource_attributes).is_some_and(|attributes| {
            attributes
                .split(',')
                .any(|pair| pair.trim_start().starts_with("service.name="))
        });
    Ok(Traces::Otlp {
        default_service_name: !named,
    })
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_pairs(std::env::vars())
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
        let pairs = pairs
            .into_iter()
            // Only our own variables reach envy, so an unrelated variable can never fail the parse.
            .filter(|(k, _)| {
                k.starts_with("QIKCHAT_")
                    || k.starts_with("RELAY_")
                    || k.starts_with("OTEL_")
                    || k == "RUST_LOG"
            });
        let env: Env = envy::from_iter(pairs).map_err(envy_error)?;

        let traces = traces(&env)?;
        let webhooks = webhooks(&env)?;
        let store = store(&env)?;
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
        positive("RELAY_HEADER_TIMEOUT_MS", env.relay_header_timeout_ms)?;
        positive("RELAY_IDLE_TIMEOUT_MS", env.relay_idle_timeout_ms)?;
        positive("RELAY_BODY_TIMEOUT_MS", env.relay_body_timeout_ms)?;
        positive("RELAY_MAX_CONNECTIONS", env.relay_max_connections as u64)?;
        positive("RELAY_IDEMPOTENCY_TTL_S", env.relay_idempotency_ttl_s)?;
        positive(
            "RELAY_IDEMPOTENCY_MAX_KEYS",
            env.relay_idempotency_max_keys as u64,
        )?;
        // The lease must outlast a whole Qikchat call, or a slow send could be taken for a dead one.
        let idempotency_lease_ms = env
            .relay_idempotency_lease_ms
            .unwrap_or(env.relay_upstream_timeout_ms + 5_000);
        if idempotency_lease_ms <= env.relay_upstream_timeout_ms {
            return Err(ConfigError::new(
                "RELAY_IDEMPOTENCY_LEASE_MS",
                "must be longer than RELAY_UPSTREAM_TIMEOUT_MS",
            ));
        }
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

fn parse_or<T>(
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

fn positive(variable: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(variable, "must be greater than 0"));
    }
    Ok(())
}

/// Parses `name:token,name:token`. Errors name the caller, never the token.
fn parse_callers(list: &str) -> Result<Vec<CallerToken>, ConfigError> {
    let mut callers: Vec<CallerToken> = Vec::new();
    for (index, entry) in list.split(',').map(str::trim).enumerate() {
        if entry.is_empty() {
            continue;
        }
        let Some((name, token)) = entry.split_once(':') else {
            return Err(ConfigError::new(
                "RELAY_CLIENTS",
                format!("entry {} is not of the form name:token", index + 1),
            ));
        };
        let (name, token) = (name.trim(), token.trim());
        if !policy::valid_name(name) {
            return Err(ConfigError::new(
                "RELAY_CLIENTS",
                format!(
                    "entry {}: a caller name is 1 to 64 of A-Z a-z 0-9 - _ .",
                    index + 1
                ),
            ));
        }
        if token.len() < policy::MIN_TOKEN_LEN {
            return Err(ConfigError::new(
                "RELAY_CLIENTS",
                format!("caller {name}: its token must be at least 16 characters"),
            ));
        }
        let caller = CallerToken {
            name: name.to_owned(),
            token_sha256: Sha256::digest(token.as_bytes()).into(),
        };
        if callers.iter().any(|c| c.name == caller.name) {
            return Err(ConfigError::new(
                "RELAY_CLIENTS",
                format!("caller {name} is listed twice"),
            ));
        }
        if callers
            .iter()
            .any(|c| c.token_sha256 == caller.token_sha256)
        {
            return Err(ConfigError::new(
                "RELAY_CLIENTS",
                format!("caller {name} shares its token with another caller"),
            ));
        }
        callers.push(caller);
    }
    Ok(callers)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "qk_live_SENTINEL_KEY_0123456789";
    const TOKEN: &str = "tok_SENTINEL_0123456789abcdef";

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_pairs(pairs.iter().copied())
    }

    /// The configuration, then its policy read from its sources (the callers file, the key), as
    /// `main` does before it starts anything.
    fn started(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let c = config(pairs)?;
        policy::load(&c.policy).map_err(|e| ConfigError::new(e.source_name, e.problem))?;
        Ok(c)
    }

    #[test]
    fn traces_are_exported_only_when_an_otlp_endpoint_is_set_and_nothing_turns_them_off() {
        let base = [
            ("QIKCHAT_API_KEY", KEY),
            ("RELAY_CLIENTS", "billing:tok_SENTINEL_0123456789abcdef"),
        ];
        let traces =
            |extra: &[(&str, &str)]| config(&[&base[..], extra].concat()).map(|c| c.traces);
        assert_eq!(traces(&[]).ok(), Some(Traces::Off));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(
            traces(&[endpoint]).ok(),
            Some(Traces::Otlp {
                default_service_name: true
            })
        );
        assert_eq!(
            traces(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://collector/v1/traces"
            )])
            .ok(),
            Some(Traces::Otlp {
                default_service_name: true
            })
        );
        assert_eq!(
            traces(&[endpoint, ("OTEL_SERVICE_NAME", "relay-eu")]).ok(),
            Some(Traces::Otlp {
                default_service_name: false
            })
        );
        assert_eq!(
            traces(&[
                endpoint,
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "team=chat, service.name=relay-eu"
                )
            ])
            .ok(),
            Some(Traces::Otlp {
                default_service_name: false
            })
        );
        assert_eq!(
            traces(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]).ok(),
            Some(Traces::Off)
        );
        assert_eq!(
            traces(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).ok(),
            Some(Traces::Off)
        );
        for (bad, variable) in [
            (("OTEL_TRACES_EXPORTER", "zipkin"), "OTEL_TRACES_EXPORTER"),
            (
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            ),
            (
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
        ] {
            let pairs = [
                &base[..],
                &[
                    (
                        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                        "http://c:4318/v1/traces",
                    ),
                    bad,
                ][..],
            ]
            .concat();
            let error = config(&pairs).expect_err("refused");
            assert_eq!(error.variable, variable, "{error}");
        }
    }

    #[test]
    fn webhooks_are_on_with_a_secret_and_every_setting_is_checked() {
        let base = [
            ("QIKCHAT_API_KEY", KEY),
            ("RELAY_CLIENTS", "billing:tok_SENTINEL_0123456789abcdef"),
        ];
        let with = |extra: &[(&str, &str)]| config(&[&base[..], extra].concat());
        assert!(with(&[]).expect("valid").webhooks.is_none());
        let on = with(&[("RELAY_WEBHOOK_SECRET", "hook-0123456789abcdef")])
            .expect("valid")
            .webhooks
            .expect("on");
        assert_eq!(on.retry_base, Duration::from_secs(1));
        assert_eq!(on.max_attempts, 10);
        assert!(on.basic_auth.is_none() && on.admin_token_sha256.is_none());
        for (pairs, variable) in [
            (
                vec![("RELAY_WEBHOOK_SECRET", "short")],
                "RELAY_WEBHOOK_SECRET",
            ),
            (
                vec![("RELAY_WEBHOOK_SECRET", "has/a/slash/0123456789")],
                "RELAY_WEBHOOK_SECRET",
            ),
            (
                vec![
                    ("RELAY_WEBHOOK_SECRET", "hook-0123456789abcdef"),
                    ("RELAY_WEBHOOK_BASIC_AUTH", "nopassword"),
                ],
                "RELAY_WEBHOOK_BASIC_AUTH",
            ),
            (
                vec![
                    ("RELAY_WEBHOOK_SECRET", "hook-0123456789abcdef"),
                    ("RELAY_ADMIN_TOKEN", "short"),
                ],
                "RELAY_ADMIN_TOKEN",
            ),
            (
                vec![
                    ("RELAY_WEBHOOK_SECRET", "hook-0123456789abcdef"),
                    ("RELAY_WEBHOOK_MAX_ATTEMPTS", "0"),
                ],
                "RELAY_WEBHOOK_MAX_ATTEMPTS",
            ),
        ] {
            let error = with(&pairs).expect_err("refused");
            assert_eq!(error.variable, variable, "{error}");
            assert!(!error.to_string().contains("0123456789abcdef"), "{error}");
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = config(&[
            ("QIKCHAT_API_KEY", KEY),
            ("RELAY_CLIENTS", &format!("billing:{TOKEN}")),
        ])
        .expect("valid");
        assert_eq!(c.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(c.qikchat_base_url.as_str(), "https://api.qikchat.in/");
        assert_eq!(c.upstream_timeout(), Duration::from_secs(10));
        assert_eq!(c.drain_timeout(), Duration::from_secs(30));
        assert_eq!(c.max_in_flight, 512);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.log_filter, "info");
        assert!(!c.sandbox && !c.policy.allow_anonymous);
        assert_eq!(c.policy.clients.len(), 1);
        assert_eq!(c.policy.clients[0].name, "billing");
        assert_eq!(c.reload_interval_ms, 2000);
        assert_eq!(
            c.connections,
            ConnectionLimits {
                header_timeout_ms: 10_000,
                idle_timeout_ms: 60_000,
                body_timeout_ms: 10_000,
                max_connections: 4096,
            }
        );
    }

    #[test]
    fn debug_output_never_shows_the_key_or_a_token() {
        let c = config(&[
            ("QIKCHAT_API_KEY", KEY),
            ("RELAY_CLIENTS", &format!("billing:{TOKEN}")),
        ])
        .expect("valid");
        let printed = format!("{c:?}");
        assert!(!printed.contains(KEY), "{printed}");
        assert!(!printed.contains(TOKEN), "{printed}");
        assert!(printed.contains("billing"));
    }

    #[test]
    fn the_key_is_required_unless_sandbox_mode_is_on() {
        let clients = format!("billing:{TOKEN}");
        let err = started(&[("RELAY_CLIENTS", &clients)]).unwrap_err();
        assert_eq!(err.variable, "QIKCHAT_API_KEY");
        let sandbox = started(&[("RELAY_CLIENTS", &clients), ("RELAY_SANDBOX", "true")]);
        assert!(matches!(
            sandbox.expect("sandbox needs no key").policy.default_key,
            KeySource::None
        ));
    }

    #[test]
    fn the_key_can_come_from_a_file_and_is_trimmed() {
        let dir = std::env::temp_dir().join(format!("relay-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("key");
        std::fs::write(&path, format!("{KEY}\n")).expect("write key");
        let c = config(&[
            ("QIKCHAT_API_KEY_FILE", path.to_str().expect("utf-8 path")),
            ("RELAY_ALLOW_ANONYMOUS", "true"),
        ])
        .expect("valid");
        let (spec, _) = policy::load(&c.policy).expect("loads");
        let key = spec.accounts["default"].key.clone().expect("a key");
        assert_eq!(secrecy::ExposeSecret::expose_secret(&key), KEY);
    }

    #[test]
    fn both_key_sources_at_once_are_refused() {
        let err = config(&[
            ("QIKCHAT_API_KEY", KEY),
            ("QIKCHAT_API_KEY_FILE", "/nonexistent"),
            ("RELAY_ALLOW_ANONYMOUS", "true"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "QIKCHAT_API_KEY_FILE");
    }

    #[test]
    fn no_callers_and_no_anonymous_access_is_refused() {
        let err = started(&[("QIKCHAT_API_KEY", KEY)]).unwrap_err();
        assert_eq!(err.variable, "RELAY_CLIENTS");
        assert!(started(&[("QIKCHAT_API_KEY", KEY), ("RELAY_ALLOW_ANONYMOUS", "true")]).is_ok());
    }

    #[test]
    fn bad_caller_entries_are_named_without_their_token() {
        for (clients, expected) in [
            ("billing", "entry 1"),
            (":abcdefghijklmnopqrstu", "entry 1"),
            ("billing:short", "billing"),
            ("a:abcdefghijklmnop,a:qrstuvwxyzabcdefgh", "listed twice"),
            ("a:abcdefghijklmnop,b:abcdefghijklmnop", "shares its token"),
        ] {
            let err = config(&[("QIKCHAT_API_KEY", KEY), ("RELAY_CLIENTS", clients)]).unwrap_err();
            assert_eq!(err.variable, "RELAY_CLIENTS");
            let line = err.to_string();
            assert!(line.contains(expected), "{clients}: {line}");
            assert!(!line.contains("abcdefghijklmnop"), "token leaked: {line}");
        }
    }

    #[test]
    fn invalid_values_name_their_variable() {
        for (variable, value) in [
            ("RELAY_LISTEN_ADDR", "not-an-address"),
            ("RELAY_UPSTREAM_TIMEOUT_MS", "ten"),
            ("RELAY_SANDBOX", "yes please"),
            ("RELAY_LOG_FORMAT", "xml"),
            ("QIKCHAT_BASE_URL", "not a url"),
            ("RELAY_MAX_IN_FLIGHT", "0"),
            ("RELAY_HEADER_TIMEOUT_MS", "0"),
            ("RELAY_IDLE_TIMEOUT_MS", "soon"),
            ("RELAY_BODY_TIMEOUT_MS", "0"),
            ("RELAY_MAX_CONNECTIONS", "0"),
            ("RUST_LOG", "info,[[["),
            ("RELAY_REDIS_URL", "http://not-redis"),
            ("RELAY_IDEMPOTENCY_LEASE_MS", "100"),
            ("RELAY_MEDIA_PREFLIGHT", "strict"),
        ] {
            let err = config(&[
                ("QIKCHAT_API_KEY", KEY),
                ("RELAY_ALLOW_ANONYMOUS", "true"),
                (variable, value),
            ])
            .unwrap_err();
            assert_eq!(err.variable, variable, "{err}");
        }
    }
}
