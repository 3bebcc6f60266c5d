//! The deliveries: claimed when due, delivered or failed (retried, or a dead letter), and dead
//! letters listed and replayed.

use std::{sync::Arc, time::Duration};

use rusqlite::params;

use super::{SqliteStore, millis};
use crate::webhooks::{DeadLetter, Delivery, Error, event::delivery_body};

impl SqliteStore {
    pub async fn due(
        self: &Arc<Self>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>, Error> {
        let lease = millis(lease);
        self.run(move |tx, now| {
            // Only the oldest live delivery of each order key: a message's events go in order.
            let mut claim = tx.prepare(
                "UPDATE deliveries SET due_at = ?1 WHERE seq IN (
                     SELECT d.seq FROM deliveries d
                     WHERE d.dead_at IS NULL AND d.due_at <= ?2
                       AND NOT EXISTS (SELECT 1 FROM deliveries e
                                       WHERE e.order_key = d.order_key AND e.dead_at IS NULL
                                         AND e.seq < d.seq)
                     ORDER BY d.due_at, d.seq LIMIT ?3)
                 RETURNING id, caller, url, order_key, attempts,
                     (SELECT json FROM events WHERE seq = event_seq), body, reference",
            )?;
            let claimed = claim
                .query_map(params![now + lease, now, limit as i64], |row| {
                    Ok(Delivery {
                        id: row.get(0)?,
                        caller: row.get(1)?,
                        url: row.get(2)?,
                        order_key: row.get(3)?,
                        attempts: row.get(4)?,
                        body: delivery_body(
                            row.get::<_, Option<String>>(5)?.as_deref(),
                            &row.get::<_, String>(6)?,
                            row.get::<_, Option<String>>(7)?.as_deref(),
                        ),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(claimed)
        })
        .await
    }

    pub async fn delivered(self: &Arc<Self>, id: &str) -> Result<(), Error> {
        let id = id.to_owned();
        self.run(move |tx, _| {
            tx.execute("DELETE FROM deliveries WHERE id = ?1", params![id])?;
            Ok(())
        })
        .await
    }

    pub async fn failed(
        self: &Arc<Self>,
        id: &str,
        retry_in: Option<Duration>,
        error: &str,
    ) -> Result<(), Error> {
        let (id, error) = (id.to_owned(), error.to_owned());
        self.run(move |tx, now| {
            match retry_in {
                Some(retry_in) => tx.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, due_at = ?2, last_error = ?3
                     WHERE id = ?1 AND dead_at IS NULL",
                    params![id, now + millis(retry_in), error],
                )?,
                None => tx.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, dead_at = ?2, last_error = ?3
                     WHERE id = ?1 AND dead_at IS NULL",
                    params![id, now, error],
                )?,
            };
            Ok(())
        })
        .await
    }

    pub async fn dead_letters(self: &Arc<Self>, limit: usize) -> Result<Vec<DeadLetter>, Error> {
        self.run(move |tx, _| {
            let mut query = tx.prepare(
                "SELECT id, caller, url, attempts, last_error, dead_at,
                     (SELECT json FROM events WHERE seq = event_seq), body, reference
                 FROM deliveries
                 WHERE dead_at IS NOT NULL ORDER BY dead_at DESC, seq DESC LIMIT ?1",
            )?;
            let letters = query
                .query_map(params![limit as i64], |row| {
                    let body = delivery_body(
                        row.get::<_, Option<String>>(6)?.as_deref(),
                        &row.get::<_, String>(7)?,
                        row.get::<_, Option<String>>(8)?.as_deref(),
                    );
                    Ok(DeadLetter {
                        id: row.get(0)?,
                        caller: row.get(1)?,
                        url: row.get(2)?,
                        attempts: row.get(3)?,
                        last_error: row.get(4)?,
                        dead_at_ms: u64::try_from(row.get::<_, i64>(5)?).unwrap_or(0),
                        body: serde_json::from_str(&body)
                            .unwrap_or(serde_json::Value::String(body)),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(letters)
        })
        .await
    }

    pub async fn replay(self: &Arc<Self>, id: &str) -> Result<bool, Error> {
        let id = id.to_owned();
        self.run(move |tx, now| {
            // To the back of its message's line, as a new delivery would go.
            let replayed = tx.execute(
                "UPDATE deliveries SET dead_at = NULL, attempts = 0, due_at = ?2,
                     seq = (SELECT MAX(seq) + 1 FROM deliveries)
                 WHERE id = ?1 AND dead_at IS NOT NULL",
                params![id, now],
            )?;
            Ok(replayed == 1)
        })
        .await
    }
}
