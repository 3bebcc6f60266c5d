//! What the store knows of the messages sent: who sent each (its owner), who last wrote to a
//! number, and each message's latest status.

use std::{sync::LazyLock, time::Duration};

use super::{PREFIX, RedisStore, delay_ms, redis_error, script};
use crate::{
    message::Recipient,
    webhooks::{
        Error,
        store::{Event, LatestStatus, Owner},
    },
};

/// A message's latest status. ARGV: prefix, message id. Returns {} when none is known (or its event
/// was dropped for room), else {status, its event's JSON, ''}, or, as stored by an older relay,
/// {status, '', the payload's JSON}.
const LATEST_STATUS_LUA: &str = include_str!("latest_status.lua");

/// Hashed once: `redis::Script` sends EVALSHA and loads the script only when Redis lacks it.
static LATEST_STATUS: LazyLock<redis::Script> = LazyLock::new(|| script(LATEST_STATUS_LUA));

impl RedisStore {
    pub async fn remember_owner(
        &self,
        message_id: &str,
        owner: &Owner,
        to: Option<&Recipient>,
        ttl: Duration,
    ) -> Result<(), Error> {
        let json = serde_json::to_string(owner).map_err(|e| Error(e.to_string()))?;
        let ttl_ms = delay_ms(ttl).max(1);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(format!("{PREFIX}owner:{message_id}"))
            .arg(json)
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        if let Some(to) = to {
            pipe.cmd("SET")
                .arg(last_sender_key(&owner.account, to))
                .arg(&owner.caller)
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.redis.clone())
            .await
            .map_err(redis_error)
    }

    pub async fn last_sender(
        &self,
        account: &str,
        customer: &Recipient,
    ) -> Result<Option<String>, Error> {
        redis::cmd("GET")
            .arg(last_sender_key(account, customer))
            .query_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)
    }

    pub async fn owner(&self, message_id: &str) -> Result<Option<Owner>, Error> {
        let json: Option<String> = redis::cmd("GET")
            .arg(format!("{PREFIX}owner:{message_id}"))
            .query_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        json.map(|json| {
            serde_json::from_str(&json)
                .map_err(|e| Error(format!("a message's owner cannot be read: {e}")))
        })
        .transpose()
    }

    pub async fn latest_status(&self, message_id: &str) -> Result<Option<LatestStatus>, Error> {
        let found: Vec<String> = LATEST_STATUS
            .arg(PREFIX)
            .arg(message_id)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        let [status, event, kept] = <[String; 3]>::try_from(found).unwrap_or_default();
        if status.is_empty() {
            return Ok(None);
        }
        let payload = if event.is_empty() {
            kept
        } else {
            match serde_json::from_str::<Event>(&event) {
                Ok(event) => event.payload.to_string(),
                Err(_) => return Ok(None),
            }
        };
        Ok(Some(LatestStatus { status, payload }))
    }
}

fn last_sender_key(account: &str, customer: &Recipient) -> String {
    format!("{PREFIX}last-sender:{account}:{}", customer.pseudonym())
}
