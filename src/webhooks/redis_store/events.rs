//! The events: stored once (a duplicate dropped, room made when the store is full), read from the
//! stream by the routers, and routed into their deliveries.

use std::{sync::LazyLock, time::Duration};

use super::{PREFIX, RedisStore, delay_ms, redis_error, script};
use crate::metric;
use crate::webhooks::{
    Error, status_rank,
    store::{Event, Ingested, Kind, NewDelivery, ROOM_AFTER_DROPPING},
};

/// How long an event's key is remembered to recognise a duplicate, and a message's latest status
/// is kept.
const SEVEN_DAYS_S: u64 = 7 * 86_400;

/// The consumer group every replica reads the event stream through.
const GROUP: &str = "relay";

/// Stores an event unless its key was seen. ARGV: prefix, event key, event JSON, seen TTL (s),
/// the bound in bytes, the share of it to drop down to when over it, then for a status to
/// remember (else absent): message id, status, rank.
/// Returns {1 if stored, 0 for a duplicate, 2 if refused for room; delivered events dropped}.
///
/// First forgets (a bounded number per call) delivered events older than the seen TTL; then, if
/// the new event does not fit, drops delivered events oldest first. Refused, its key is not
/// remembered: Qikchat's retry is not a duplicate.
const INGEST_LUA: &str = include_str!("ingest.lua");

/// Events to route: first those read by a consumer that did not route them within the lease
/// (claimed for this one), then new ones. ARGV: prefix, group, consumer, lease (ms), limit.
/// Returns {stream id, event JSON, ...} (the JSON empty if the entry has no `event` field).
///
/// The group is created here when missing, from the start of the stream (id 0, not `$`): the
/// stream holds only unrouted events, so none is skipped however late the group is created.
const UNROUTED_LUA: &str = include_str!("unrouted.lua");

/// Drops stream entries that cannot be read as events, and their events, so they are not read
/// again. ARGV: prefix, group, ids...
const DROP_LUA: &str = include_str!("drop.lua");

/// Creates an event's deliveries and removes the event from the stream. ARGV: prefix, group,
/// stream id, then per delivery: id, caller, url, order key, reference (`''` for none).
/// An event no longer in the stream was routed already (by a router whose lease had run out, or
/// by a retry of this call): nothing is created twice, even if the deliveries were made since.
/// A delivery id already present is skipped too. Each delivery holds the event; the stream entry
/// lets go of it. Returns 1 if it routed the event.
const ROUTE_LUA: &str = include_str!("route.lua");

/// Hashed once: `redis::Script` sends EVALSHA and loads the script only when Redis lacks it.
static INGEST: LazyLock<redis::Script> = LazyLock::new(|| script(INGEST_LUA));
static UNROUTED: LazyLock<redis::Script> = LazyLock::new(|| script(UNROUTED_LUA));
static DROP: LazyLock<redis::Script> = LazyLock::new(|| script(DROP_LUA));
static ROUTE: LazyLock<redis::Script> = LazyLock::new(|| script(ROUTE_LUA));

impl RedisStore {
    pub async fn ingest(&self, event: &Event) -> Result<Ingested, Error> {
        let json = serde_json::to_string(event).map_err(|e| Error(e.to_string()))?;
        let mut invocation = INGEST.prepare_invoke();
        invocation
            .arg(PREFIX)
            .arg(&event.key)
            .arg(json)
            .arg(SEVEN_DAYS_S)
            .arg(self.max_bytes)
            .arg(ROOM_AFTER_DROPPING);
        let status = match (event.kind, &event.status) {
            (Kind::Status, Some(status)) if !event.message_id.is_empty() => Some(status),
            _ => None,
        };
        if let Some(status) = status {
            invocation
                .arg(&event.message_id)
                .arg(status)
                .arg(status_rank(status));
        }
        let (stored, dropped): (i64, u64) = invocation
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(|e| self.write_error(e))?;
        self.wrote();
        if dropped > 0 {
            metrics::counter!(metric::WEBHOOK_STORE_DROPPED_TOTAL).increment(dropped);
        }
        Ok(match stored {
            1 => Ingested::Stored,
            2 => Ingested::Full,
            _ => Ingested::Duplicate,
        })
    }

    pub async fn unrouted(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(String, Event)>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let flat: Vec<String> = UNROUTED
            .arg(PREFIX)
            .arg(GROUP)
            .arg(&*self.consumer)
            .arg(delay_ms(lease))
            .arg(limit)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        let mut events = Vec::with_capacity(flat.len() / 2);
        let mut poison = Vec::new();
        for pair in flat.chunks_exact(2) {
            let (handle, json) = (&pair[0], &pair[1]);
            match serde_json::from_str::<Event>(json) {
                Ok(event) => events.push((handle.clone(), event)),
                Err(e) => {
                    tracing::warn!(
                        stream_id = %handle,
                        error = %e,
                        "a webhook event in Redis cannot be read; dropped"
                    );
                    poison.push(handle.clone());
                }
            }
        }
        if !poison.is_empty() {
            let mut invocation = DROP.prepare_invoke();
            invocation.arg(PREFIX).arg(GROUP);
            for handle in &poison {
                invocation.arg(handle);
            }
            let _: i64 = invocation
                .invoke_async(&mut self.redis.clone())
                .await
                .map_err(redis_error)?;
        }
        Ok(events)
    }

    pub async fn route(&self, handle: &str, deliveries: &[NewDelivery]) -> Result<(), Error> {
        let mut invocation = ROUTE.prepare_invoke();
        invocation.arg(PREFIX).arg(GROUP).arg(handle);
        for d in deliveries {
            invocation
                .arg(&d.id)
                .arg(&d.caller)
                .arg(&d.url)
                .arg(&d.order_key)
                .arg(d.reference.as_deref().unwrap_or_default());
        }
        let _: i64 = invocation
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(|e| self.write_error(e))?;
        Ok(())
    }
}
