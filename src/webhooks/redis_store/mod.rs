//! The webhook store in Redis, shared by every replica (`RELAY_REDIS_URL`).
//!
//! Keys, all under `qikchat-relay:webhooks:`:
//! - `seen:<event key>`: the events stored in the last 7 days, so a duplicate is dropped.
//! - `event:<n>`: an event's JSON, the one copy of its payload; `n` from the counter `event-seq`,
//!   zero-padded to 16 digits so that members of `delivered` with the same score sort by age.
//!   `bytes` is the sum of their sizes, which `RELAY_WEBHOOK_STORE_MAX_MB` bounds.
//! - `holds`: a hash, event number to how many still need the event (its stream entry until it is
//!   routed, then each delivery not yet delivered, dead letters included). With none left the
//!   event moves to `delivered`, a sorted set by the time (ms) that happened: kept for status
//!   reads for 7 days, and dropped oldest first when a new event needs the room.
//! - `events`: a stream of events not routed yet (`ref`: the event's number), read through the
//!   consumer group `relay` (each replica is one consumer). Routing acknowledges and deletes the
//!   entry: the stream is a work log, not an archive. An entry read but not routed within the
//!   lease (its router died) is claimed again with `XAUTOCLAIM`.
//! - `delivery:<id>`: a hash per delivery: caller, url, order_key, event (its number), attempts,
//!   and last_error and dead_at_ms once it failed. (A delivery stored by an older relay has its
//!   `body` instead of `event`, and a stream entry its `event` JSON instead of `ref`.)
//! - `order:<order key>`: a list of the pending deliveries of one order key, oldest first. Only
//!   its head is ever in `due`, so a message's events reach a subscriber in order.
//! - `due`: a sorted set of delivery ids by the time (ms) they are due; claiming one moves its
//!   score to the end of the lease, so a worker that dies loses it.
//! - `dead`: a sorted set of dead letters by the time they died.
//! - `status:<message id>`: a hash {rank, status, event}, the latest status (7 days) and the
//!   number of its event.
//! - `owner:<message id>`: who sent a message (JSON), for the TTL given.
//! - `last-sender:<account>:<pseudonym of a number>`: the caller that last sent to that number,
//!   for the same TTL.
//!
//! Every step is one Lua script (or one command), on Redis's clock (`TIME`): two replicas never
//! both take the same step. The scripts build their keys from the prefix (`ARGV[1]`) rather than
//! declaring them in KEYS, like the limits' daily quota: fine on a single Redis, which is what the
//! relay uses. Needs Redis 6.2 or later (`XAUTOCLAIM`).

use std::{
    sync::{Arc, LazyLock, Mutex, PoisonError},
    time::Duration,
};

use redis::aio::ConnectionManager;

use super::{
    Error, status_rank,
    store::{DeadLetter, Delivery, Event, Ingested, Kind, LatestStatus, NewDelivery, Owner},
};
use crate::message::Recipient;

/// Every key of the webhook store starts with this.
pub const PREFIX: &str = "qikchat-relay:webhooks:";

/// How long an event's key is remembered to recognise a duplicate, and a message's latest status
/// is kept.
const SEVEN_DAYS_S: u64 = 7 * 86_400;

/// The longest delay (a lease or a retry) the scripts are given: ten years in ms. Keeps Redis's
/// scores and Lua's numbers (doubles) exact.
const MAX_DELAY_MS: u64 = 10 * 365 * 86_400_000;

/// The consumer group every replica reads the event stream through.
const GROUP: &str = "relay";

/// Put before every script: effects replication (only needed before Redis 5, where a script that
/// reads `TIME` may not write otherwise), the prefix, and Redis's clock in ms.
const PREAMBLE_LUA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local P = ARGV[1]
local function ms(n) return string.format('%d', n) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- An event gone for good: its payload, its size, its holds.
local function drop(n)
  local key = P .. 'event:' .. n
  redis.call('DECRBY', P .. 'bytes', redis.call('STRLEN', key))
  redis.call('DEL', key)
  redis.call('HDEL', P .. 'holds', n)
  redis.call('ZREM', P .. 'delivered', n)
end
-- One fewer needs event n; with none left it is delivered.
local function release(n)
  if redis.call('HINCRBY', P .. 'holds', n, -1) <= 0 then
    redis.call('HDEL', P .. 'holds', n)
    redis.call('ZADD', P .. 'delivered', ms(now_ms()), n)
  end
end
";

/// Stores an event unless its key was seen. ARGV: prefix, event key, event JSON, seen TTL (s),
/// the bound in bytes, the share of it to drop down to when over it, then for a status to
/// remember (else absent): message id, status, rank.
/// Returns {1 if stored, 0 for a duplicate, 2 if refused for room; delivered events dropped}.
///
/// First forgets (a bounded number per call) delivered events older than the seen TTL; then, if
/// the new event does not fit, drops delivered events oldest first. Refused, its key is not
/// remembered: Qikchat's retry is not a duplicate.
const INGEST_LUA: &str = r"
local seen = P .. 'seen:' .. ARGV[2]
if not redis.call('SET', seen, '1', 'NX', 'EX', ARGV[4]) then return {0, 0} end
local json, max = ARGV[3], tonumber(ARGV[5])
local delivered, dropped = P .. 'delivered', 0
local old = now_ms() - tonumber(ARGV[4]) * 1000
for _, n in ipairs(redis.call('ZRANGEBYSCORE', delivered, '-inf', ms(old), 'LIMIT', 0, 100)) do
  drop(n)
end
local function used() return tonumber(redis.call('GET', P .. 'bytes') or '0') end
if used() + #json > max then
  local target = math.floor(max * tonumber(ARGV[6]))
  while used() + #json > target do
    local oldest = redis.call('ZRANGE', delivered, 0, 99)
    if #oldest == 0 then break end
    for _, n in ipairs(oldest) do
      drop(n)
      dropped = dropped + 1
      if used() + #json <= target then break end
    end
  end
  if used() + #json > max then
    redis.call('DEL', seen)
    return {2, dropped}
  end
end
local n = string.format('%016d', redis.call('INCR', P .. 'event-seq'))
redis.call('SET', P .. 'event:' .. n, json)
redis.call('INCRBY', P .. 'bytes', #json)
redis.call('HSET', P .. 'holds', n, '1')
redis.call('XADD', P .. 'events', '*', 'ref', n)
if ARGV[7] then
  local key = P .. 'status:' .. ARGV[7]
  local stored = tonumber(redis.call('HGET', key, 'rank') or '-1') or -1
  if tonumber(ARGV[9]) >= stored then
    redis.call('HSET', key, 'rank', ARGV[9], 'status', ARGV[8], 'event', n)
    redis.call('HDEL', key, 'payload')
  end
  redis.call('EXPIRE', key, ARGV[4])
end
return {1, dropped}
";

/// Events to route: first those read by a consumer that did not route them within the lease
/// (claimed for this one), then new ones. ARGV: prefix, group, consumer, lease (ms), limit.
/// Returns {stream id, event JSON, ...} (the JSON empty if the entry has no `event` field).
///
/// The group is created here when missing, from the start of the stream (id 0, not `$`): the
/// stream holds only unrouted events, so none is skipped however late the group is created.
const UNROUTED_LUA: &str = r"
local stream, group, consumer, lease, limit = P .. 'events', ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local out, count = {}, 0
local function take(entries)
  for _, entry in ipairs(entries or {}) do
    -- An entry deleted while pending comes back as nil before Redis 7: skip it.
    if type(entry) == 'table' and count < limit then
      local json, fields = '', entry[2]
      if type(fields) == 'table' then
        for i = 1, #fields - 1, 2 do
          if fields[i] == 'event' then json = fields[i + 1] end
          if fields[i] == 'ref' then json = redis.call('GET', P .. 'event:' .. fields[i + 1]) or '' end
        end
      end
      table.insert(out, entry[1])
      table.insert(out, json)
      count = count + 1
    end
  end
end
local function autoclaim(cursor)
  return redis.pcall('XAUTOCLAIM', stream, group, consumer, lease, cursor, 'COUNT', limit - count)
end
local claimed = autoclaim('0-0')
if claimed.err then
  if not string.find(claimed.err, 'NOGROUP', 1, true) then return claimed end
  redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
  claimed = autoclaim('0-0')
  if claimed.err then return claimed end
end
-- XAUTOCLAIM looks at COUNT * 10 pending entries per call: go on through the pending list
-- (bounded, so one call never takes long) while there may be more to claim.
local rounds = 1
while true do
  take(claimed[2])
  if claimed[1] == '0-0' or count >= limit or rounds >= 10 then break end
  claimed = redis.call('XAUTOCLAIM', stream, group, consumer, lease, claimed[1], 'COUNT', limit - count)
  rounds = rounds + 1
end
if count < limit then
  local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', limit - count, 'STREAMS', stream, '>')
  if read then take(read[1][2]) end
end
return out
";

/// Drops stream entries that cannot be read as events, and their events, so they are not read
/// again. ARGV: prefix, group, ids...
const DROP_LUA: &str = r"
for i = 3, #ARGV do
  for _, entry in ipairs(redis.call('XRANGE', P .. 'events', ARGV[i], ARGV[i])) do
    local fields = entry[2]
    for k = 1, #fields - 1, 2 do
      if fields[k] == 'ref' then drop(fields[k + 1]) end
    end
  end
  redis.call('XACK', P .. 'events', ARGV[2], ARGV[i])
  redis.call('XDEL', P .. 'events', ARGV[i])
end
return 0
";

/// Creates an event's deliveries and removes the event from the stream. ARGV: prefix, group,
/// stream id, then per delivery: id, caller, url, order key.
/// An event no longer in the stream was routed already (by a router whose lease had run out, or
/// by a retry of this call): nothing is created twice, even if the deliveries were made since.
/// A delivery id already present is skipped too. Each delivery holds the event; the stream entry
/// lets go of it. Returns 1 if it routed the event.
const ROUTE_LUA: &str = r"
local stream, group, handle = P .. 'events', ARGV[2], ARGV[3]
local entry = redis.call('XRANGE', stream, handle, handle)[1]
if not entry then
  redis.call('XACK', stream, group, handle)
  return 0
end
local n, legacy = nil, ''
for i = 1, #entry[2] - 1, 2 do
  if entry[2][i] == 'ref' then n = entry[2][i + 1] end
  if entry[2][i] == 'event' then legacy = entry[2][i + 1] end
end
if not n then
  -- Stored by an older relay, the event in its stream entry: kept as the others from now on.
  n = string.format('%016d', redis.call('INCR', P .. 'event-seq'))
  redis.call('SET', P .. 'event:' .. n, legacy)
  redis.call('INCRBY', P .. 'bytes', #legacy)
  redis.call('HSET', P .. 'holds', n, '1')
end
local now = now_ms()
for i = 4, #ARGV - 3, 4 do
  local id, order = ARGV[i], ARGV[i + 3]
  local key = P .. 'delivery:' .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'caller', ARGV[i + 1], 'url', ARGV[i + 2], 'order_key', order,
      'event', n, 'attempts', '0')
    redis.call('HINCRBY', P .. 'holds', n, 1)
    if redis.call('RPUSH', P .. 'order:' .. order, id) == 1 then
      redis.call('ZADD', P .. 'due', ms(now), id)
    end
  end
end
redis.call('XACK', stream, group, handle)
redis.call('XDEL', stream, handle)
release(n)
return 1
";

/// Claims due deliveries for the lease. ARGV: prefix, limit, lease (ms).
/// Returns {id, caller, url, order key, kept body, attempts, event JSON, ...}: the event's JSON,
/// or for a delivery stored by an older relay the body it kept. An id whose hash is gone is
/// dropped.
const DUE_LUA: &str = r"
local due, now = P .. 'due', now_ms()
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', ms(now), 'LIMIT', 0, ARGV[2])) do
  local f = redis.call('HMGET', P .. 'delivery:' .. id, 'caller', 'url', 'order_key', 'body', 'attempts', 'event')
  if f[1] then
    redis.call('ZADD', due, ms(now + tonumber(ARGV[3])), id)
    table.insert(out, id)
    for k = 1, 5 do table.insert(out, f[k] or '') end
    table.insert(out, f[6] and redis.call('GET', P .. 'event:' .. f[6]) or '')
  else
    redis.call('ZREM', due, id)
  end
end
return out
";

/// A delivery is done: removed, and the next of its order key becomes due (unless it already
/// is: `NX` never shortens a lease). ARGV: prefix, id. Returns 1 if there was such a delivery.
const DELIVERED_LUA: &str = r"
local id = ARGV[2]
local key = P .. 'delivery:' .. id
local order = redis.call('HGET', key, 'order_key')
redis.call('ZREM', P .. 'due', id)
if not order then return 0 end
-- A worker whose lease ran out may deliver after another made it a dead letter: delivered wins.
redis.call('ZREM', P .. 'dead', id)
local list = P .. 'order:' .. order
redis.call('LREM', list, 1, id)
local n = redis.call('HGET', key, 'event')
redis.call('DEL', key)
if n then release(n) end
local next = redis.call('LINDEX', list, 0)
if next then redis.call('ZADD', P .. 'due', 'NX', ms(now_ms()), next) end
return 1
";

/// An attempt failed: counted; retried after ARGV[4] ms, or, when ARGV[4] is empty, a dead
/// letter, and the next of its order key becomes due. ARGV: prefix, id, error, retry (ms or '').
/// Returns 0 if there is no such pending delivery (delivered, or dead already), 1 for a retry,
/// 2 for a dead letter.
const FAILED_LUA: &str = r"
local id = ARGV[2]
local key = P .. 'delivery:' .. id
local order = redis.call('HGET', key, 'order_key')
if not order or redis.call('ZSCORE', P .. 'dead', id) then return 0 end
local now = now_ms()
redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSET', key, 'last_error', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('ZADD', P .. 'due', ms(now + tonumber(ARGV[4])), id)
  return 1
end
redis.call('ZREM', P .. 'due', id)
local list = P .. 'order:' .. order
redis.call('LREM', list, 1, id)
redis.call('ZADD', P .. 'dead', ms(now), id)
redis.call('HSET', key, 'dead_at_ms', ms(now))
local next = redis.call('LINDEX', list, 0)
if next then redis.call('ZADD', P .. 'due', 'NX', ms(now), next) end
return 2
";

/// The newest dead letters. ARGV: prefix, limit.
/// Returns {id, caller, url, attempts, last error, dead at (ms), kept body, event JSON, ...}.
const DEAD_LETTERS_LUA: &str = r"
local out = {}
local ids = redis.call('ZREVRANGE', P .. 'dead', 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')
for i = 1, #ids - 1, 2 do
  local id = ids[i]
  local f = redis.call('HMGET', P .. 'delivery:' .. id, 'caller', 'url', 'attempts', 'last_error', 'body', 'event')
  if f[1] then
    table.insert(out, id)
    for k = 1, 4 do table.insert(out, f[k] or '') end
    table.insert(out, ids[i + 1])
    table.insert(out, f[5] or '')
    table.insert(out, f[6] and redis.call('GET', P .. 'event:' .. f[6]) or '')
  end
end
return out
";

/// A dead letter back at the end of its order key's line, attempts reset. ARGV: prefix, id.
/// Returns 1 if there was such a dead letter.
const REPLAY_LUA: &str = r"
local id = ARGV[2]
if not redis.call('ZSCORE', P .. 'dead', id) then return 0 end
redis.call('ZREM', P .. 'dead', id)
local key = P .. 'delivery:' .. id
local order = redis.call('HGET', key, 'order_key')
if not order then return 0 end
redis.call('HSET', key, 'attempts', '0')
redis.call('HDEL', key, 'dead_at_ms')
if redis.call('RPUSH', P .. 'order:' .. order, id) == 1 then
  redis.call('ZADD', P .. 'due', ms(now_ms()), id)
end
return 1
";

/// A message's latest status. ARGV: prefix, message id. Returns {} when none is known (or its event
/// was dropped for room), else {status, its event's JSON, ''}, or, as stored by an older relay,
/// {status, '', the payload's JSON}.
const LATEST_STATUS_LUA: &str = r"
local f = redis.call('HMGET', P .. 'status:' .. ARGV[2], 'status', 'event', 'payload')
if not f[1] then return {} end
if f[2] then
  local json = redis.call('GET', P .. 'event:' .. f[2])
  if not json then return {} end
  return {f[1], json, ''}
end
return {f[1], '', f[3] or ''}
";

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{PREAMBLE_LUA}{body}"))
}

/// Hashed once: `redis::Script` sends EVALSHA and loads the script only when Redis lacks it.
static INGEST: LazyLock<redis::Script> = LazyLock::new(|| script(INGEST_LUA));
static UNROUTED: LazyLock<redis::Script> = LazyLock::new(|| script(UNROUTED_LUA));
static DROP: LazyLock<redis::Script> = LazyLock::new(|| script(DROP_LUA));
static ROUTE: LazyLock<redis::Script> = LazyLock::new(|| script(ROUTE_LUA));
static DUE: LazyLock<redis::Script> = LazyLock::new(|| script(DUE_LUA));
static DELIVERED: LazyLock<redis::Script> = LazyLock::new(|| script(DELIVERED_LUA));
static FAILED: LazyLock<redis::Script> = LazyLock::new(|| script(FAILED_LUA));
static DEAD_LETTERS: LazyLock<redis::Script> = LazyLock::new(|| script(DEAD_LETTERS_LUA));
static REPLAY: LazyLock<redis::Script> = LazyLock::new(|| script(REPLAY_LUA));
static LATEST_STATUS: LazyLock<redis::Script> = LazyLock::new(|| script(LATEST_STATUS_LUA));

/// Where a full store drops delivered events down to, as a share of `RELAY_WEBHOOK_STORE_MAX_MB`
/// (as in the embedded store): 10% freed at once, so dropping runs once per tenth of the bound.
const ROOM_AFTER_DROPPING: f64 = 0.9;

/// The webhook store in Redis. Cheap to clone: the clones share one connection.
#[derive(Clone)]
pub struct RedisStore {
    redis: ConnectionManager,
    /// This replica's name in the consumer group (e.g. host name and pid).
    consumer: Arc<str>,
    /// `RELAY_WEBHOOK_STORE_MAX_MB` in bytes: what the events may take, shared by every replica.
    max_bytes: u64,
    /// Why the last write was refused for memory (`OOM`: Redis is at its `maxmemory`), until a
    /// write succeeds: readiness reports it.
    write_failure: Arc<Mutex<Option<String>>>,
}

impl RedisStore {
    /// Connects lazily, like the limits and idempotency stores: the relay starts while Redis is
    /// down. Each connection attempt and each answer is given `timeout`, with one retry.
    /// `consumer` names this replica in the consumer group; replicas must not share a name.
    /// The events' payloads are bounded to `max_bytes`.
    pub fn new(
        url: &str,
        timeout: Duration,
        consumer: String,
        max_bytes: u64,
    ) -> redis::RedisResult<Self> {
        Ok(Self {
            redis: crate::redis_client::connect_lazily(url, timeout)?,
            consumer: consumer.into(),
            max_bytes,
            write_failure: Arc::default(),
        })
    }

    /// A failed write: remembered when Redis refused it for memory, then as [`redis_error`].
    fn write_error(&self, e: redis::RedisError) -> Error {
        if is_out_of_memory(&e) {
            *self
                .write_failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
        }
        redis_error(e)
    }

    fn wrote(&self) {
        *self
            .write_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Why Redis refuses writes now (out of memory), if it does: nothing is written unless the
    /// last write was refused; then one small write with a one-second life tells whether it
    /// takes writes again.
    pub async fn unwritable(&self) -> Option<String> {
        let failed = self
            .write_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        failed.as_ref()?;
        let probe: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("{PREFIX}probe"))
            .arg("1")
            .arg("PX")
            .arg(1000)
            .query_async(&mut self.redis.clone())
            .await;
        match probe {
            Ok(()) => {
                self.wrote();
                None
            }
            Err(e) if is_out_of_memory(&e) => Some(e.to_string()),
            // Unreachable: readiness says so through the idempotency store's ping.
            Err(_) => failed,
        }
    }

    /// The bytes the events take now, shared by every replica.
    pub async fn bytes(&self) -> Result<u64, Error> {
        let bytes: Option<i64> = redis::cmd("GET")
            .arg(format!("{PREFIX}bytes"))
            .query_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        Ok(bytes.map_or(0, |b| u64::try_from(b).unwrap_or(0)))
    }

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
            metrics::counter!("relay_webhook_store_dropped_total").increment(dropped);
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
                .arg(&d.order_key);
        }
        let _: i64 = invocation
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(|e| self.write_error(e))?;
        Ok(())
    }

    pub async fn due(&self, limit: usize, lease: Duration) -> Result<Vec<Delivery>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let flat: Vec<String> = DUE
            .arg(PREFIX)
            .arg(limit)
            .arg(delay_ms(lease))
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        Ok(flat
            .chunks_exact(7)
            .map(|f| Delivery {
                id: f[0].clone(),
                caller: f[1].clone(),
                url: f[2].clone(),
                order_key: f[3].clone(),
                body: delivery_body(&f[6], &f[4]),
                attempts: f[5].parse().unwrap_or(0),
            })
            .collect())
    }

    pub async fn delivered(&self, id: &str) -> Result<(), Error> {
        let _: i64 = DELIVERED
            .arg(PREFIX)
            .arg(id)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    pub async fn failed(
        &self,
        id: &str,
        retry_in: Option<Duration>,
        error: &str,
    ) -> Result<(), Error> {
        let retry = retry_in
            .map(|d| delay_ms(d).to_string())
            .unwrap_or_default();
        let _: i64 = FAILED
            .arg(PREFIX)
            .arg(id)
            .arg(error)
            .arg(retry)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let flat: Vec<String> = DEAD_LETTERS
            .arg(PREFIX)
            .arg(limit)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        Ok(flat
            .chunks_exact(8)
            .map(|f| DeadLetter {
                id: f[0].clone(),
                caller: f[1].clone(),
                url: f[2].clone(),
                attempts: f[3].parse().unwrap_or(0),
                last_error: f[4].clone(),
                // A score may come back as `1.7e12` from some Redis versions: read it as a float.
                dead_at_ms: f[5].parse::<f64>().map_or(0, |ms| ms as u64),
                body: {
                    let body = delivery_body(&f[7], &f[6]);
                    serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body))
                },
            })
            .collect())
    }

    pub async fn replay(&self, id: &str) -> Result<bool, Error> {
        let replayed: i64 = REPLAY
            .arg(PREFIX)
            .arg(id)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        Ok(replayed == 1)
    }

    pub async fn remember_owner(
        &self,
        message_id: &str,
        owner: &Owner,
        to: &Recipient,
        ttl: Duration,
    ) -> Result<(), Error> {
        let json = serde_json::to_string(owner).map_err(|e| Error(e.to_string()))?;
        let ttl_ms = delay_ms(ttl).max(1);
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(format!("{PREFIX}owner:{message_id}"))
            .arg(json)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("SET")
            .arg(last_sender_key(&owner.account, to))
            .arg(&owner.caller)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .query_async::<()>(&mut self.redis.clone())
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

/// A delivery's body: built from its event's JSON, or, for a delivery stored by an older relay
/// (no event), the body it kept.
fn delivery_body(event_json: &str, kept: &str) -> String {
    match serde_json::from_str::<Event>(event_json) {
        Ok(event) => super::event::body(&event),
        Err(_) => kept.to_owned(),
    }
}

/// Redis refused a write because it is at its `maxmemory` (with a policy that does not evict).
/// Inside a script the refusal comes back with the script's own error code, so the text is read
/// too.
fn is_out_of_memory(e: &redis::RedisError) -> bool {
    e.code() == Some("OOM") || e.to_string().contains("OOM command not allowed")
}

fn last_sender_key(account: &str, customer: &Recipient) -> String {
    format!("{PREFIX}last-sender:{account}:{}", customer.pseudonym())
}

/// A lease, retry or TTL in whole ms, as the scripts take it (at most [`MAX_DELAY_MS`]).
fn delay_ms(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis())
        .unwrap_or(u64::MAX)
        .min(MAX_DELAY_MS)
}

/// The error without the URL (a Redis error names the failure, not the server's address).
fn redis_error(e: redis::RedisError) -> Error {
    Error(e.to_string())
}
