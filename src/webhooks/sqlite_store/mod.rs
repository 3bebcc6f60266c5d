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
    DeadLetter, Delivery, Error, Event, Ingested, Kind, LatestStatus, NewDelivery, Owner,
    status_rank,
};
use crate::message::Recipient;

/// How long an event is remembered to recognise Qikchat delivering it again, and a message's
/// latest status kept after its last status event (as in Redis).
const KEPT_FOR_MS: i64 = 7 * 86_400_000;

/// An event's payload is kept once, in `events.json`: a message's latest status
/// (`latest_statuses.event_seq`) and each delivery (`deliveries.event_seq`) point at its event
/// rather than copying it. (`statuses`, which did copy it, is dropped: those messages' status reads
/// ask Qikchat until their next status event. Deliveries stored before `event_seq` keep their
/// `body`.) `events.bytes` is the size of `json`, and the one row of `usage` their sum, kept by
/// triggers: what `RELAY_WEBHOOK_STORE_MAX_MB` bounds.
const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    json TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    routed INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0
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
    last_error TEXT NOT NULL DEFAULT '',
    event_seq INTEGER
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

/// Where [`make_room`] stops dropping, as a share of `RELAY_WEBHOOK_STORE_MAX_MB`: 10% of the bound
/// is freed at once, so the search for delivered events runs once per tenth of the bound filled,
/// not on every event of a full store.
const ROOM_AFTER_DROPPING: f64 = 0.9;

/// Columns added after the first release, for a database made by an older relay.
const ADDED_COLUMNS: [(&str, &str, &str); 2] = [
    ("events", "bytes", "INTEGER NOT NULL DEFAULT 0"),
    ("deliveries", "event_seq", "INTEGER"),
];

/// Run after [`ADDED_COLUMNS`]: what uses them.
const SCHEMA_ON_ADDED_COLUMNS: &str = "
UPDATE events SET bytes = length(CAST(json AS BLOB)) WHERE bytes = 0;
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_seq);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO usage (id, bytes) VALUES (1, (SELECT total(bytes) FROM events));
CREATE TRIGGER IF NOT EXISTS usage_on_insert AFTER INSERT ON events
BEGIN UPDATE usage SET bytes = bytes + NEW.bytes WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS usage_on_delete AFTER DELETE ON events
BEGIN UPDATE usage SET bytes = bytes - OLD.bytes WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS usage_on_update AFTER UPDATE OF bytes ON events
BEGIN UPDATE usage SET bytes = bytes - OLD.bytes + NEW.bytes WHERE id = 1; END;
";

/// An event no delivery still needs: routed, and none of its deliveries pending or dead. Such
/// events are kept only to recognise duplicates and to answer status reads, so they are the ones
/// dropped, oldest first, to make room (SQL, on the table `events`).
const DELIVERED: &str = "events.routed = 1
    AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = events.seq)";

pub struct SqliteStore {
    db: Mutex<Connection>,
    /// `RELAY_WEBHOOK_STORE_MAX_MB` in bytes: what the events' payloads may take.
    max_bytes: i64,
    /// The same database with `synchronous=NORMAL`, for [`SqliteStore::remember_owner`].
    owners: Mutex<Connection>,
    /// Why the last write failed (disk full, read-only, I/O error), until a write succeeds:
    /// readiness reports it without writing on every probe.
    write_failure: Mutex<Option<String>>,
}

impl SqliteStore {
    /// Opens (or creates) `dir/webhooks.sqlite3`, creating `dir` if needed, with its events'
    /// payloads bounded to `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Arc<Self>, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("webhooks.sqlite3");
        let db = Connection::open(&path)
            .map_err(|e| Error(format!("cannot open {}: {e}", path.display())))?;
        db.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        db.execute_batch(SCHEMA).map_err(sql)?;
        for (table, column, definition) in ADDED_COLUMNS {
            let exists: bool = db
                .query_row(
                    "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
                    params![table, column],
                    |row| row.get::<_, i64>(0).map(|n| n > 0),
                )
                .map_err(sql)?;
            if !exists {
                db.execute_batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN {column} {definition}"
                ))
                .map_err(sql)?;
            }
        }
        db.execute_batch(SCHEMA_ON_ADDED_COLUMNS).map_err(sql)?;
        let owners = Connection::open(&path)
            .map_err(|e| Error(format!("cannot open {}: {e}", path.display())))?;
        owners.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        // WAL (set by SCHEMA, kept in the file) with NORMAL: see the module's documentation.
        owners
            .execute_batch("PRAGMA synchronous = NORMAL;")
            .map_err(sql)?;
        Ok(Arc::new(Self {
            db: Mutex::new(db),
            max_bytes: i64::try_from(max_bytes).unwrap_or(i64::MAX),
            owners: Mutex::new(owners),
            write_failure: Mutex::new(None),
        }))
    }

    /// Runs `work` in one transaction on the blocking pool.
    async fn run<T, F>(self: &Arc<Self>, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>, i64) -> rusqlite::Result<T> + Send + 'static,
    {
        self.run_on(false, work).await
    }

    /// Runs `work` in one transaction on the blocking pool, on the owners' connection when
    /// `owners` (no fsync per commit) or else the durable one.
    async fn run_on<T, F>(self: &Arc<Self>, owners: bool, work: F) -> Result<T, Error>
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
        .map_err(|e| Error(format!("the store's task failed: {e}")))?
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

    /// The bytes the events' payloads take now.
    pub async fn bytes(self: &Arc<Self>) -> Result<u64, Error> {
        self.run(|tx, _| tx.query_row("SELECT bytes FROM usage WHERE id = 1", [], |row| row.get(0)))
            .await
            .map(|bytes: i64| u64::try_from(bytes).unwrap_or(0))
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
                    "INSERT OR IGNORE INTO deliveries (id, caller, url, order_key, body, due_at, event_seq)
                     VALUES (?1, ?2, ?3, ?4, '', ?5, ?6)",
                    params![d.id, d.caller, d.url, d.order_key, now, seq],
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
                     (SELECT json FROM events WHERE seq = event_seq), body",
            )?;
            let claimed = claim
                .query_map(params![now + lease, now, limit as i64], |row| {
                    Ok(Delivery {
                        id: row.get(0)?,
                        caller: row.get(1)?,
                        url: row.get(2)?,
                        order_key: row.get(3)?,
                        attempts: row.get(4)?,
                        body: delivery_body(row.get(5)?, row.get(6)?),
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
                     (SELECT json FROM events WHERE seq = event_seq), body
                 FROM deliveries
                 WHERE dead_at IS NOT NULL ORDER BY dead_at DESC, seq DESC LIMIT ?1",
            )?;
            let letters = query
                .query_map(params![limit as i64], |row| {
                    let body = delivery_body(row.get(6)?, row.get(7)?);
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

    pub async fn remember_owner(
        self: &Arc<Self>,
        message_id: &str,
        owner: &Owner,
        to: &Recipient,
        ttl: Duration,
    ) -> Result<(), Error> {
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
    ) -> Result<Option<String>, Error> {
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

    pub async fn owner(self: &Arc<Self>, message_id: &str) -> Result<Option<Owner>, Error> {
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
    ) -> Result<Option<LatestStatus>, Error> {
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

/// Makes room for `bytes` more under `max_bytes` by dropping the JSON of delivered events, oldest
/// first, and the latest statuses that pointed at them (those messages' status reads ask Qikchat
/// again). The row stays, without its JSON, so Qikchat delivering the event again is still a
/// duplicate; it goes with the others after [`KEPT_FOR_MS`].
/// Once over, it drops down to [`ROOM_AFTER_DROPPING`] of the bound, so that a full store drops
/// in batches rather than on every event. `false` when the events still to deliver alone leave no
/// room for `bytes`.
fn make_room(tx: &rusqlite::Transaction<'_>, bytes: i64, max_bytes: i64) -> rusqlite::Result<bool> {
    let used = |tx: &rusqlite::Transaction<'_>| -> rusqlite::Result<i64> {
        tx.query_row("SELECT bytes FROM usage WHERE id = 1", [], |row| row.get(0))
    };
    if used(tx)?.saturating_add(bytes) <= max_bytes {
        return Ok(true);
    }
    let target = (max_bytes as f64 * ROOM_AFTER_DROPPING) as i64;
    let mut oldest = tx.prepare_cached(&format!(
        "SELECT seq FROM events WHERE {DELIVERED} AND bytes > 0 ORDER BY seq LIMIT 256"
    ))?;
    let mut dropped = 0_u64;
    while used(tx)?.saturating_add(bytes) > target {
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
            if used(tx)?.saturating_add(bytes) <= target {
                break;
            }
        }
    }
    if dropped > 0 {
        metrics::counter!("relay_webhook_store_dropped_total").increment(dropped);
    }
    Ok(used(tx)?.saturating_add(bytes) <= max_bytes)
}

/// A delivery's body: built from its event, or, for a delivery stored by an older relay, the copy
/// it kept.
fn delivery_body(event_json: Option<String>, kept: String) -> String {
    match event_json.map(|json| serde_json::from_str::<Event>(&json)) {
        Some(Ok(event)) => super::event::body(&event),
        _ => kept,
    }
}

fn sql(e: rusqlite::Error) -> Error {
    Error(e.to_string())
}

/// Times are kept as SQLite integers: milliseconds since the Unix epoch.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    i64::try_from(crate::unix_ms()).unwrap_or(i64::MAX)
}
