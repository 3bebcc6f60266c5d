//! The events: stored once (a duplicate dropped, room made when the store is full), claimed by
//! the routers, and routed into their deliveries.

use std::{sync::Arc, time::Duration};

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, millis, used_bytes};
use crate::metric;
use crate::webhooks::{
    Error, Event, Ingested, Kind, NewDelivery, status_rank, store::ROOM_AFTER_DROPPING,
};

/// How long an event is remembered to recognise Qikchat delivering it again, and a message's
/// latest status kept after its last status event (as in Redis).
const KEPT_FOR_MS: i64 = 7 * 86_400_000;

/// An event no delivery still needs: routed, and none of its deliveries pending or dead. Such
/// events are kept only to recognise duplicates and to answer status reads, so they are the ones
/// dropped, oldest first, to make room (SQL, on the table `events`).
const DELIVERED: &str = "events.routed = 1
    AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = events.seq)";

impl SqliteStore {
    pub async fn ingest(self: &Arc<Self>, event: &Event) -> Result<Ingested, Error> {
        let event = event.clone();
        let json = serde_json::to_string(&event).map_err(|e| Error(e.to_string()))?;
        let bytes = i64::try_from(json.len()).unwrap_or(i64::MAX);
        let max_bytes = self.max_bytes;
        let ingested = self
            .run(move |tx, now| {
                let forgotten = now.saturating_sub(KEPT_FOR_MS);
                tx.execute(
                    "DELETE FROM latest_statuses WHERE updated_at < ?1",
                    params![forgotten],
                )?;
                // An old event that is still a message's latest status is kept with it.
                tx.execute(
                    &format!(
                        "DELETE FROM events WHERE {DELIVERED} AND received_at < ?1
                         AND NOT EXISTS (SELECT 1 FROM latest_statuses s
                                         WHERE s.event_seq = events.seq)"
                    ),
                    params![forgotten],
                )?;
                let duplicate = tx
                    .query_row(
                        "SELECT 1 FROM events WHERE key = ?1",
                        params![event.key],
                        |_| Ok(()),
                    )
                    .optional()?;
                if duplicate.is_some() {
                    return Ok(Ingested::Duplicate);
                }
                if !make_room(tx, bytes, max_bytes)? {
                    return Ok(Ingested::Full);
                }
                tx.execute(
                    "INSERT INTO events (key, json, received_at, bytes) VALUES (?1, ?2, ?3, ?4)",
                    params![event.key, json, now, bytes],
                )?;
                let seq = tx.last_insert_rowid();
                if let (Kind::Status, Some(status)) = (event.kind, &event.status) {
                    tx.execute(
                        "INSERT INTO latest_statuses (message_id, rank, status, event_seq, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (message_id) DO UPDATE SET
                             rank = excluded.rank, status = excluded.status,
                             event_seq = excluded.event_seq, updated_at = excluded.updated_at
                         WHERE excluded.rank >= latest_statuses.rank",
                        params![event.message_id, status_rank(status), status, seq, now],
                    )?;
                    // A status that does not replace the latest one still keeps it.
                    tx.execute(
                        "UPDATE latest_statuses SET updated_at = ?2 WHERE message_id = ?1",
                        params![event.message_id, now],
                    )?;
                }
                Ok(Ingested::Stored)
            })
            .await?;
        // A refusal for room wrote nothing, yet shows the store can be written.
        self.wrote();
        Ok(ingested)
    }

    pub async fn unrouted(
        self: &Arc<Self>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(String, Event)>, Error> {
        let lease = millis(lease);
        let rows: Vec<(i64, String)> = self
            .run(move |tx, now| {
                let mut claim = tx.prepare(
                    "UPDATE events SET lease_until = ?1 WHERE seq IN (
                         SELECT seq FROM events WHERE routed = 0 AND lease_until <= ?2
                         ORDER BY seq LIMIT ?3)
                     RETURNING seq, json",
                )?;
                let rows = claim
                    .query_map(params![now + lease, now, limit as i64], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await?;
        let mut events = Vec::with_capacity(rows.len());
        for (seq, json) in rows {
            match serde_json::from_str::<Event>(&json) {
                Ok(event) => events.push((seq.to_string(), event)),
                Err(e) => {
                    tracing::warn!(error = %e, seq, "an unreadable stored event is dropped");
                    self.route(&seq.to_string(), &[]).await?;
                }
            }
        }
        events.sort_by_key(|(seq, _)| seq.parse::<i64>().unwrap_or(i64::MAX));
        Ok(events)
    }

    pub async fn route(
        self: &Arc<Self>,
        handle: &str,
        deliveries: &[NewDelivery],
    ) -> Result<(), Error> {
        let seq: i64 = handle
            .parse()
            .map_err(|_| Error(format!("not an event handle: {handle}")))?;
        let deliveries = deliveries.to_vec();
        self.run(move |tx, now| {
            let routed: Option<i64> = tx
                .query_row(
                    "SELECT routed FROM events WHERE seq = ?1",
                    params![seq],
                    |row| row.get(0),
                )
                .optional()?;
            if routed != Some(0) {
                return Ok(());
            }
            for d in &deliveries {
                tx.execute(
                    "INSERT OR IGNORE INTO deliveries
                         (id, caller, url, order_key, body, due_at, event_seq, reference)
                     VALUES (?1, ?2, ?3, ?4, '', ?5, ?6, ?7)",
                    params![d.id, d.caller, d.url, d.order_key, now, seq, d.reference],
                )?;
            }
            tx.execute("UPDATE events SET routed = 1 WHERE seq = ?1", params![seq])?;
            Ok(())
        })
        .await
    }
}

/// Makes room for `bytes` more under `max_bytes` by dropping the JSON of delivered events, oldest
/// first, and the latest statuses that pointed at them (those messages' status reads ask Qikchat
/// again). The row stays, without its JSON, so Qikchat delivering the event again is still a
/// duplicate; it goes with the others after [`KEPT_FOR_MS`].
/// Once over, it drops down to [`ROOM_AFTER_DROPPING`] of the bound, so that a full store drops
/// in batches rather than on every event. `false` when the events still to deliver alone leave no
/// room for `bytes`.
fn make_room(tx: &rusqlite::Transaction<'_>, bytes: i64, max_bytes: i64) -> rusqlite::Result<bool> {
    if used_bytes(tx)?.saturating_add(bytes) <= max_bytes {
        return Ok(true);
    }
    let target = (max_bytes as f64 * ROOM_AFTER_DROPPING) as i64;
    let mut oldest = tx.prepare_cached(&format!(
        "SELECT seq FROM events WHERE {DELIVERED} AND bytes > 0 ORDER BY seq LIMIT 256"
    ))?;
    let mut dropped = 0_u64;
    while used_bytes(tx)?.saturating_add(bytes) > target {
        let seqs = oldest
            .query_map([], |row| row.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if seqs.is_empty() {
            break;
        }
        for seq in seqs {
            tx.execute(
                "DELETE FROM latest_statuses WHERE event_seq = ?1",
                params![seq],
            )?;
            tx.execute(
                "UPDATE events SET json = 'null', bytes = 0 WHERE seq = ?1",
                params![seq],
            )?;
            dropped += 1;
            if used_bytes(tx)?.saturating_add(bytes) <= target {
                break;
            }
        }
    }
    if dropped > 0 {
        metrics::counter!(metric::WEBHOOK_STORE_DROPPED_TOTAL).increment(dropped);
    }
    Ok(used_bytes(tx)?.saturating_add(bytes) <= max_bytes)
}
