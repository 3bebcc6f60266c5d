//! qikchat-relay holds the Qikchat WhatsApp API key so internal services don't have to: they
//! `POST /send` a simple message with their own token, the relay validates it, adds the key and
//! forwards it to Qikchat, and answers with Qikchat's message id.
//!
//! Layout, in the order a request meets it:
//! - [`http`]: the only place that knows axum: `http::server` (the accept loop: connection cap,
//!   header and idle timeouts, head size limit), `http::app` (the router, the middleware stack
//!   with its order explained, start and shutdown), `http::observe` (each request's span, log line
//!   and metrics), `http::error` (`ApiError`, every failure a caller sees, as problem+json),
//!   `http::state`, `http::auth` (bearer token to [`policy::Caller`]) and `http::routes`, one
//!   module per resource: `send`, `messages`, `health`, `webhooks`, `docs` (OpenAPI).
//! - [`telemetry`]: the log subscriber (one JSON line per request), metrics, OpenTelemetry traces.
//! - [`metric`]: every metric family's name and help text, imported by whatever records one; it
//!   imports nothing of the relay. The process metrics (`process_*`) are read there too.
//! - [`audit`]: the audit trail, one event per send attempt on the `audit` log target.
//! - [`relay`]: the send pipeline, no HTTP: [`relay::Relay::send`] takes a caller, a message and
//!   options and returns what happened; `http/routes/send.rs` is its HTTP adapter.
//! - [`outbox`]: messages accepted now (`POST /messages`) and delivered later, at the account's pace,
//!   exactly once, by a worker on every replica through the same pipeline
//!   ([`relay::Relay::deliver_later`]); stored in `RELAY_DATA_DIR` or Redis.
//! - [`policy`]: callers' rules and Qikchat accounts (`RELAY_CLIENTS_FILE`), reloaded while
//!   running; `policy::limits` applies rates, quotas and WhatsApp pacing to a send.
//! - [`ratelimit`]: the counting behind them: GCRA and daily quotas, in memory or in Redis.
//! - [`webhooks`]: Qikchat's webhooks, stored and fanned out to subscribers, signed, with retries
//!   and dead letters (`http/routes/webhooks.rs` receives them).
//! - [`redis_client`]: the one way every Redis user connects.
//! - [`idempotency`]: `Idempotency-Key`, in memory or in Redis: a retry never sends twice.
//! - [`message`]: the domain: a validated [`message::Message`] parsed from a request.
//! - [`preflight`]: media links checked before sending (type, size, reachability), never an SSRF hole.
//! - [`qikchat`]: the upstream: Qikchat's wire format, the key, and what its answers mean.
//! - [`config`]: the typed configuration, read from the environment once; it names the policy's
//!   files and reads none (`policy::Live` reads them at start and again when they change).
//! - [`healthcheck`]: `qikchat-relay healthcheck`, the probe for container images without a shell.

/// Calls the same method on whichever backend a store holds: the stores (`webhooks::Store`,
/// `outbox::Store`) are enums of a `Sqlite` and a `Redis` variant with the same methods.
macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Self::Sqlite($store) => $call,
            Self::Redis($store) => $call,
        }
    };
}

pub mod audit;
pub mod config;
pub mod conversation;
pub mod healthcheck;
pub mod http;
pub mod idempotency;
pub mod message;
pub mod metric;
pub mod outbox;
pub mod policy;
pub mod preflight;
pub mod qikchat;
pub mod ratelimit;
pub mod redis_client;
pub mod relay;
pub mod telemetry;
pub mod webhooks;

/// How strictly a check holds a send: `off`, `warn` (the send goes out and its answer says what
/// the check found) or `enforce` (the send is refused). `RELAY_MEDIA_PREFLIGHT` and
/// `RELAY_CUSTOMER_WINDOW` take these values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    Off,
    Warn,
    Enforce,
}

impl std::str::FromStr for Enforcement {
    type Err = &'static str;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "off" => Ok(Self::Off),
            "warn" => Ok(Self::Warn),
            "enforce" => Ok(Self::Enforce),
            _ => Err("must be off, warn or enforce"),
        }
    }
}

/// Milliseconds since the Unix epoch: the relay's one wall clock, for what outlives a process or
/// is shared with other replicas (leases, expiries, timestamps). Intervals use `Instant`.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `ms` since the Unix epoch in RFC 3339 with milliseconds, as the relay writes every time a
/// caller reads.
pub fn rfc3339_ms(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

/// Locks `mutex`, ignoring poison: the relay's one way to take a lock. Every lock here guards
/// state that each update changes in one step (a table entry, a count, a remembered error) or a
/// database connection whose transaction rolls back on its own, so a panic while holding it
/// cannot leave the value half-updated.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
