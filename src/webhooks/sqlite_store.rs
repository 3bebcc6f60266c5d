//! The webhook store on local disk: one SQLite database in `RELAY_DATA_DIR`, in WAL mode with
//! `synchronous=FULL`, so an event acknowledged to Qikchat survives a crash of the process or of
//! the machine. Every operation is one transaction, run on the blocking pool.
//!
//! Message owners, written on every send, go through a connection of their own with
//! `synchronous=NORMAL`: a commit is not fsynced, so it survives the process being killed
//! (SIGKILL, a panic, an OOM kill: the WAL is in the OS's page cache) but not a power cut or a
//! kernel crash, which may lose the owners of the last sends. Those messages' status reads then
//! answer 404 and their statuses reach nobody; an fsync per send would cost every send a disk
//! flush.

use std::{
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    DeadLetter, Delivery, Event, Ingested, Kind, LatestStatus, NewDelivery, Owner, StoreError,
    status_rank,
};
use crate::message::Recipient;

/// How long an event is remembered to recognise Qikchat delivering it again, and a message's
/// latest status kept after its last status event (as in Redis).
const KEPT_FOR_MS: i64 = 7 * 86_400_000;

/// An event's payload is kept once, in `events.json`: a message's latest status points at its
/// event (`latest_statuses.event_seq`) rather than copying the payload. (`statuses`, which did,
/// is dropped: those messages' status reads ask Qikchat until their next status event.)
const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    json TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    routed INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_unrouted ON events (routed, seq);
CREATE INDEX IF NOT EXISTS events_forgotten ON events (routed, received_at);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    caller TEXT NOT NULL,
    url TEXT NOT NULL,
    order_key TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at INTEGER NOT NULL,
    dead_at INTEGER,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (dead_at, due_at);
CREATE INDEX IF NOT EXISTS deliveries_order ON deliveries (order_key, seq);
CREATE TABLE IF NOT EXISTS owners (
    message_id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    account TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS owners_expiry ON owners (expires_at);
CREATE TABLE IF NOT EXISTS last_senders (
    account TEXT NOT NULL,
    customer TEXT NOT NULL,
    caller TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (account, customer)
);
CREATE INDEX IF NOT EXISTS last_senders_expiry ON last_senders (expires_at);
DROP TABLE IF EXISTS statuses;
CREATE TABLE IF NOT EXISTS latest_statuses (
    message_id TEXT PRIMARY KEY,
    rank INTEGER NOT NULL,
    status TEXT NOT NULL,
    event_seq INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS latest_statuses_expiry ON latest_statuses (updated_at);
CREATE INDEX IF NOT EXISTS latest_statuses_event ON latest_statuses (event_seq);
";

pub struct SqliteStore {
    db: Mutex<Connection>,
    /// The same database with `synchronous=NORMAL`, for [`SqliteStore::remember_owner`].
    owners: Mutex<Connection>,
    /// Why the last write failed (disk full, read-only, I/O error), until a write succeeds:
    /// readiness reports it without writing on every probe.
    write_failure: Mutex<Option<String>>,
}

impl SqliteStore {
    /// Opens (or creates) `dir/webhooks.sqlite3`, creating `dir` if needed.
    pub fn open(dir: &Path) -> Result<Arc<Self>, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("webhooks.sqlite3");
        let db = Connection::open(&path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        db.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        db.execute_batch(SCHEMA).map_err(sql)?;
        let owners = Connection::open(&path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        owners.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        // WAL (set by SCHEMA, kept in the file) with NORMAL: see the module's documentation.
        owners
            .execute_batch("PRAGMA synchronous = NORMAL;")
            .map_err(sql)?;
        Ok(Arc::new(Self {
            db: Mutex::new(db),
            owners: Mutex::new(owners),
            write_failure: Mutex::new(None),
        }))
    }

    /// Runs `work` in one transaction on the blocking pool.
    async fn run<T, F>(self: &Arc<Self>, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>, i64) -> rusqlite::Result<T> + Send + 'static,
    {
        self.run_on(false, work).await
    }

    /// Runs `work` in one transaction on the blocking pool, on the owners' connection when
    /// `owners` (no fsync per commit) or else the durable one.
    async fn run_on<T, F>(self: &Arc<Self>, owners: bool, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>, i64) -> rusqlite::Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let connection = if owners { &store.owners } else { &store.db };
            let mut db = connection.lock().unwrap_or_else(PoisonError::into_inner);
            let done = db.transaction().and_then(|tx| {
                let result = work(&tx, now_ms())?;
                tx.commit()?;
                Ok(result)
            });
            if let Err(e) = &done {
                store.note_failure(e);
            }
            done.map_err(sql)
        })
        .await
        .map_err(|e| StoreError(format!("the store's task failed: {e}")))?
    }

    /// Remembers a failure that means the database cannot be written.
    fn note_failure(&self, e: &rusqlite::Error) {
        use rusqlite::ErrorCode::{CannotOpen, DiskFull, ReadOnly, SystemIoFailure};
        if let rusqlite::Error::SqliteFailure(failure, _) = e {
            if matches!(
                failure.code,
                DiskFull | ReadOnly | SystemIoFailure | CannotOpen
            ) {
                *self
                    .write_failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
            }
        }
    }

    fn wrote(&self) {
        *self
            .write_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Why the store cannot be written now, if it cannot. Nothing is written unless the last
    /// write failed; then one small write tells whether it can again (space came back).
    pub async fn unwritable(self: &Arc<Self>) -> Option<String> {
        let failed = self
            .write_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        failed.as_ref()?;
        let probe = self
            .run(|tx, now| {
                tx.execute_batch("CREATE TABLE IF NOT EXISTS probe (at INTEGER NOT NULL)")?;
                tx.execute("INSERT INTO probe (at) VALUES (?1)", params![now])?;
                tx.execute("DELETE FROM probe", [])?;
                Ok(())
            })
            .await;
        match probe {
            Ok(()) => {
                self.wrote();
                None
            }
            Err(e) => Some(e.0),
        }
    }

    pub async fn ingest(self: &Arc<Self>, event: &Event) -> Result<Ingested, StoreError> {
        let event = event.clone();
        let json = serde_json::to_string(&event).map_err(|e| StoreError(e.to_string()))?;
        self.run(move |tx, now| {
            let forgotten = now.saturating_sub(KEPT_FOR_MS);
            tx.execute(
                "DELETE FROM latest_statuses WHERE updated_at < ?1",
                params![forgotten],
            )?;
            // An old event that is still a message's latest status is kept with it.
            tx.execute(
                "DELETE FROM events WHERE routed = 1 AND received_at < ?1
                 AND NOT EXISTS (SELECT 1 FROM latest_statuses s WHERE s.event_seq = events.seq)",
                params![forgotten],
            )?;
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO events (key, json, received_at) VALUES (?1, ?2, ?3)",
                params![event.key, json, now],
            )?;
            if inserted == 0 {
                return Ok(Ingested::Duplicate);
            }
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
        .await
        .inspect(|_| self.wrote())
    }

    pub async fn unrouted(
        self: &Arc<Self>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(String, Event)>, StoreError> {
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
    ) -> Result<(), StoreError> {
        let seq: i64 = handle
            .parse()
            .map_err(|_| StoreError(format!("not an event handle: {handle}")))?;
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
                    "INSERT OR IGNORE INTO deliveries (id, caller, url, order_key, body, due_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![d.id, d.caller, d.url, d.order_key, d.body, now],
                )?;
            }
            tx.execute("UPDATE events SET routed = 1 WHERE seq = ?1", params![seq])?;
            Ok(())
        })
        .await
    }

    pub async fn due(
        self: &Arc<Self>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
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
                 RETURNING id, caller, url, order_key, body, attempts",
            )?;
            let claimed = claim
                .query_map(params![now + lease, now, limit as i64], |row| {
                    Ok(Delivery {
                        id: row.get(0)?,
                        caller: row.get(1)?,
                        url: row.get(2)?,
                        order_key: row.get(3)?,
                        body: row.get(4)?,
                        attempts: row.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(claimed)
        })
        .await
    }

    pub async fn delivered(self: &Arc<Self>, id: &str) -> Result<(), StoreError> {
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
    ) -> Result<(), StoreError> {
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

    pub async fn dead_letters(
        self: &Arc<Self>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.run(move |tx, _| {
            let mut query = tx.prepare(
                "SELECT id, caller, url, attempts, last_error, dead_at, body FROM deliveries
                 WHERE dead_at IS NOT NULL ORDER BY dead_at DESC, seq DESC LIMIT ?1",
            )?;
            let letters = query
                .query_map(params![limit as i64], |row| {
                    let body: String = row.get(6)?;
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

    pub async fn replay(self: &Arc<Self>, id: &str) -> Result<bool, StoreError> {
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

    pub async fn remember_owner(
        self: &Arc<Self>,
        message_id: &str,
        owner: &Owner,
        to: &Recipient,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let (message_id, owner, customer) = (message_id.to_owned(), owner.clone(), to.pseudonym());
        self.run_on(true, move |tx, now| {
            let expires_at = now + millis(ttl);
            tx.execute("DELETE FROM owners WHERE expires_at <= ?1", params![now])?;
            tx.execute(
                "INSERT OR REPLACE INTO owners (message_id, caller, account, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![message_id, owner.caller, owner.account, expires_at],
            )?;
            tx.execute(
                "DELETE FROM last_senders WHERE expires_at <= ?1",
                params![now],
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO last_senders (account, customer, caller, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![owner.account, customer, owner.caller, expires_at],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn last_sender(
        self: &Arc<Self>,
        account: &str,
        customer: &Recipient,
    ) -> Result<Option<String>, StoreError> {
        let (account, customer) = (account.to_owned(), customer.pseudonym());
        self.run(move |tx, now| {
            tx.query_row(
                "SELECT caller FROM last_senders
                 WHERE account = ?1 AND customer = ?2 AND expires_at > ?3",
                params![account, customer, now],
                |row| row.get(0),
            )
            .optional()
        })
        .await
    }

    pub async fn owner(self: &Arc<Self>, message_id: &str) -> Result<Option<Owner>, StoreError> {
        let message_id = message_id.to_owned();
        self.run(move |tx, now| {
            tx.query_row(
                "SELECT caller, account FROM owners WHERE message_id = ?1 AND expires_at > ?2",
                params![message_id, now],
                |row| {
                    Ok(Owner {
                        caller: row.get(0)?,
                        account: row.get(1)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    pub async fn latest_status(
        self: &Arc<Self>,
        message_id: &str,
    ) -> Result<Option<LatestStatus>, StoreError> {
        let message_id = message_id.to_owned();
        self.run(move |tx, _| {
            tx.query_row(
                "SELECT s.status, e.json -> '$.payload'
                 FROM latest_statuses s JOIN events e ON e.seq = s.event_seq
                 WHERE s.message_id = ?1",
                params![message_id],
                |row| {
                    Ok(LatestStatus {
                        status: row.get(0)?,
                        payload: row.get(1)?,
                    })
                },
            )
            .optional()
        })
        .await
    }
}

fn sql(e: rusqlite::Error) -> StoreError {
    StoreError(e.to_string())
}

/// Times are kept as SQLite integers: milliseconds since the Unix epoch.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    i64::try_from(crate::unix_ms()).unwrap_or(i64::MAX)
}
