//! Receiving Qikchat's webhooks ([`WebhookSettings`], on with `RELAY_WEBHOOK_SECRET`) and the
//! durable store ([`StoreSettings`]) of their events and of message owners.

use std::{path::PathBuf, time::Duration};

use secrecy::SecretString;
use sha2::{Digest, Sha256};

use super::ConfigError;
use super::env::{Env, positive, set};
use crate::policy::MIN_TOKEN_LEN;

/// How Qikchat's webhooks are received and passed on.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The secret path segment of `POST /webhooks/qikchat/{secret}`.
    pub path_secret: SecretString,
    /// Basic Auth Qikchat must send, when set: user and password.
    pub basic_auth: Option<(String, SecretString)>,
    pub retry_base: Duration,
    pub max_attempts: u32,
    /// How long one delivery to a subscriber may take.
    pub delivery_timeout: Duration,
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

/// The webhook settings, when `RELAY_WEBHOOK_SECRET` turns the endpoint on.
pub(super) fn webhooks(env: &Env) -> Result<Option<WebhookSettings>, ConfigError> {
    let Some(secret) = set(&env.relay_webhook_secret) else {
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
        delivery_timeout: Duration::from_millis(env.relay_webhook_timeout_ms),
    }))
}

/// SHA-256 of `RELAY_ADMIN_TOKEN`, when set: the operator's endpoints (dead letters, opt-outs).
pub(super) fn admin_token(env: &Env) -> Result<Option<[u8; 32]>, ConfigError> {
    match set(&env.relay_admin_token) {
        None => Ok(None),
        Some(token) if token.len() < MIN_TOKEN_LEN => Err(ConfigError::new(
            "RELAY_ADMIN_TOKEN",
            "must be at least 16 characters",
        )),
        Some(token) => Ok(Some(Sha256::digest(token.as_bytes()).into())),
    }
}

/// The store's settings, needed with webhooks on or off (message owners are always recorded).
pub(super) fn store(env: &Env) -> Result<StoreSettings, ConfigError> {
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
