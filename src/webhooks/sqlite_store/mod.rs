//! The webhook store on local disk: one SQLite database in `RELAY_DATA_DIR`, in WAL mode with
//! `synchronous=FULL`, so an event acknowledged to Qikchat survives a crash of the process or of
//! the machine. Every operation is one transaction, run on the blocking pool.
//!
//! Message owners, written on every send, go through a connection of their own with
//! `synchronous=NORMAL`: a commit is not fsynced, so it survives the process being killed
//! (SIGKILL, a panic, an OOM kill: the WAL is in the OS's page cache) but not a power cut or a
//! kernel crash, which may lose the owners of the last sends. Those messages' status reads then
//! answer 404 and their statuses reach nobody; an fsync per send would cost every send a disk
//! flush. The other read every send makes, of the customer's conversation, uses that connection
//! too. The conversation's writes (windows, opt-outs) are durable like the events they come from.
//!
//! The schema is `schema.sql` (and `schema_on_added_columns.sql`, for a database made by an older
//! relay); the operations are grouped by what they act on: `events.rs` (store, claim, route, make
//! room), `deliveries.rs` (claim, deliver, fail, dead letters), `messages.rs` (owners, last
//! senders, latest statuses) and `conversation.rs` (windows, opt-outs).

mod conversation;
mod deliveries;
mod events;
mod messages;

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use rusqlite::{Connection, params};

use super::{Error, store::WriteFailure};

/// An event's payload is kept once, in `events.json`: a message's latest status
/// (`latest_statuses.event_seq`) and each delivery (`deliveries.event_seq`) point at its event
/// rather than copying it. (`statuses`, which did copy it, is dropped: those messages' status reads
/// ask Qikchat until their next status event. Deliveries stored before `event_seq` keep their
/// `body`.) `events.bytes` is the size of `json`, and the one row of `usage` their sum, kept by
/// triggers: what `RELAY_WEBHOOK_STORE_MAX_MB` bounds.
const SCHEMA: &str = include_str!("schema.sql");

/// Columns added after the first release, for a database made by an older relay.
const ADDED_COLUMNS: [(&str, &str, &str); 5] = [
    ("events", "bytes", "INTEGER NOT NULL DEFAULT 0"),
    ("deliveries", "event_seq", "INTEGER"),
    ("owners", "reference", "TEXT"),
    ("deliveries", "reference", "TEXT"),
    ("owners", "relay_id", "TEXT"),
];

/// Run after [`ADDED_COLUMNS`]: what uses them.
const SCHEMA_ON_ADDED_COLUMNS: &str = include_str!("schema_on_added_columns.sql");

pub struct SqliteStore {
    db: Mutex<Connection>,
    /// `RELAY_WEBHOOK_STORE_MAX_MB` in bytes: what the events' payloads may take.
    max_bytes: i64,
    /// The same database with `synchronous=NORMAL`, for [`SqliteStore::remember_owner`].
    owners: Mutex<Connection>,
    /// Why the last write failed (disk full, read-only, I/O error), until a write succeeds:
    /// readiness reports it without writing on every probe.
    write_failure: WriteFailure,
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
            write_failure: WriteFailure::default(),
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
            let mut db = crate::lock(connection);
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
                self.write_failure.failed(e.to_string());
            }
        }
    }

    fn wrote(&self) {
        self.write_failure.cleared();
    }

    /// Why the store cannot be written now, if it cannot. Nothing is written unless the last
    /// write failed; then one small write tells whether it can again (space came back).
    pub async fn unwritable(self: &Arc<Self>) -> Option<String> {
        let failed = self.write_failure.last();
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

    /// The bytes the events' payloads take now.
    pub async fn bytes(self: &Arc<Self>) -> Result<u64, Error> {
        self.run(|tx, _| used_bytes(tx))
            .await
            .map(|bytes: i64| u64::try_from(bytes).unwrap_or(0))
    }
}

/// The bytes the events' payloads take: the one row of `usage`, kept by triggers.
fn used_bytes(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<i64> {
    tx.query_row("SELECT bytes FROM usage WHERE id = 1", [], |row| row.get(0))
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
