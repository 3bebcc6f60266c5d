//! How the relay reaches Redis (idempotency keys, limits, webhook events): one lazily connecting,
//! multiplexed connection per use, so the relay starts (not ready) while Redis is down, and a
//! dead Redis costs a request at most a few `timeout`s instead of hanging it.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Connects on first use; each connection attempt and each answer gets `timeout`, with one retry.
pub fn connect_lazily(url: &str, timeout: Duration) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client, config)
}
