//! What every handler can reach: the policy, the send pipeline ([`Relay`]), the metrics and the
//! webhooks, built once from the configuration.

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::ExposeSecret;
use tokio::sync::Semaphore;

use crate::{
    config::Config,
    http::error,
    idempotency::{Backend, Idempotency, MemoryStore},
    metric,
    outbox::{self, Outbox},
    policy::Live,
    preflight::Preflight,
    ratelimit::Limiter,
    relay::Relay,
    telemetry,
    webhooks::{Store, Webhooks, redis_store::RedisStore, sqlite_store::SqliteStore},
};

/// This replica's name among the consumers of the webhook stream: its host name and process id.
fn consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "relay".to_owned());
    format!("{host}-{}", std::process::id())
}

/// How long one Redis command may take before the store counts as unreachable.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Callers, their rules and the Qikchat accounts; reloaded when their files change.
    pub policy: Arc<Live>,
    /// The send pipeline and what it holds: limits, idempotency, link checks, permits, the store.
    pub relay: Arc<Relay>,
    pub metrics: PrometheusHandle,
    /// Qikchat's webhooks and their fan-out, when `RELAY_WEBHOOK_SECRET` is set.
    pub webhooks: Option<Arc<Webhooks>>,
    /// SHA-256 of `RELAY_ADMIN_TOKEN`, for the operator's endpoints (`http::auth::admin`).
    pub admin_token_sha256: Option<[u8; 32]>,
    /// Queued and scheduled sends (`POST /messages`) and their delivery worker.
    pub outbox: Arc<Outbox>,
}

impl AppState {
    /// Builds every part from `config`, with `policy` already read from its sources
    /// ([`Live::start`]).
    pub fn new(config: &Config, policy: Live) -> std::io::Result<Self> {
        // First: metrics recorded while building (counters exported at 0) need the recorder.
        let metrics = telemetry::metrics();
        let policy = Arc::new(policy);
        // Always there: who sent each message is recorded whether or not webhooks are on.
        let message_store = match &config.redis_url {
            Some(url) => Store::Redis(
                RedisStore::new(
                    url.expose_secret(),
                    REDIS_TIMEOUT,
                    consumer_name(),
                    config.store.webhook_max_bytes,
                )
                .map_err(|_| {
                    std::io::Error::other("RELAY_REDIS_URL: cannot create a Redis client")
                })?,
            ),
            None => Store::Sqlite(
                SqliteStore::open(&config.store.data_dir, config.store.webhook_max_bytes)
                    .map_err(|e| std::io::Error::other(format!("RELAY_DATA_DIR: {e}")))?,
            ),
        };
        if config.webhooks.is_some() {
            metrics::gauge!(metric::WEBHOOK_STORE_MAX_BYTES)
                .set(config.store.webhook_max_bytes as f64);
        }
        let webhooks = match &config.webhooks {
            None => None,
            Some(settings) => Some(
                Webhooks::new(settings.clone(), message_store.clone(), policy.clone())
                    .map_err(std::io::Error::other)?,
            ),
        };
        let no_client = |_| std::io::Error::other("RELAY_REDIS_URL: cannot create a Redis client");
        let (keys, limiter) = match &config.redis_url {
            Some(url) => (
                Backend::redis(url.expose_secret(), REDIS_TIMEOUT).map_err(no_client)?,
                Limiter::redis(url.expose_secret(), REDIS_TIMEOUT).map_err(no_client)?,
            ),
            None => (
                Backend::Memory(MemoryStore::new(config.idempotency_max_keys)),
                Limiter::memory(),
            ),
        };
        let preflight = Preflight::new(
            config.media_preflight,
            Duration::from_millis(config.media_preflight_timeout_ms),
            config.media_preflight_allow_private,
            Duration::from_secs(config.media_preflight_cache_s),
        )
        .map_err(std::io::Error::other)?;
        let relay = Relay {
            preflight,
            idempotency: Idempotency::new(
                keys,
                config.idempotency_lease(),
                config.idempotency_ttl(),
            ),
            store: message_store,
            owner_ttl: config.store.owner_ttl,
            conversation: config.conversation,
            pace_lanes: crate::relay::PaceLanes::default(),
            limiter: Arc::new(limiter),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            max_in_flight: config.max_in_flight,
            draining: AtomicBool::new(false),
            answer_for: error::stored_answer,
            describe: error::describe,
        };
        let outbox_store = match &config.redis_url {
            Some(url) => outbox::Store::Redis(
                outbox::redis_store::RedisStore::new(url.expose_secret(), REDIS_TIMEOUT)
                    .map_err(no_client)?,
            ),
            None => outbox::Store::Sqlite(
                outbox::sqlite_store::SqliteStore::open(&config.store.data_dir)
                    .map_err(|e| std::io::Error::other(format!("RELAY_DATA_DIR: {e}")))?,
            ),
        };
        let relay = Arc::new(relay);
        let outbox = Outbox::new(
            outbox_store,
            config.outbox,
            relay.clone(),
            policy.clone(),
            webhooks.clone(),
        );
        Ok(Self {
            webhooks,
            policy,
            relay,
            metrics,
            admin_token_sha256: config.admin_token_sha256,
            outbox: Arc::new(outbox),
        })
    }
}
