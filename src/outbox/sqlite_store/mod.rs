//! The outbox on local disk: `outbox.sqlite3` in `RELAY_DATA_DIR`, in WAL mode, so a message
//! answered 202 survives a crash of the process or the machine (see `Commit` for which steps
//! are fsynced: those that a power cut must not undo).
//! Every operation is one transaction on the blocking pool; a batch is one transaction.
//!
//! The schema is `schema.sql`: one table, `messages`, a row per message; `body` (the message,
//! with the customer's number) is set to NULL once the message ends. A claim is a lease
//! (`lease_until`) under a token: a worker that dies holds nothing once it runs out. Acceptance
//! and reads are here; the rest of a message's life (claims, ends, sweeps) is `life.rs`.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

mod life;

use super::store::{Accepted, Error, NewMessage, Record, State};

const SCHEMA: &str = include_str!("schema.sql");

/// Columns of a [`Record`], in [`record`]'s order.
pub(super) const RECORD: &str = "id, caller, account, state, qikchat_id, reference, send_at, due_at, \
                      valid_until, attempts, error_code, error_detail, accepted_at, updated_at";

/// The states a message waits in before a worker holds it.
pub(super) const WAITING: &str = "('scheduled', 'accepted')";

/// How a transaction is committed. In WAL mode, `synchronous=NORMAL` commits without an fsync: the
/// commit survives the process being killed (it is in the OS's page cache), not a power cut; the
/// next durable commit flushes it too.
///
/// Durable: what must never be lost once answered or once it holds back a second send:
/// acceptance (a 202 was answered), the `sending` mark (after a power cut, a message whose mark was
/// lost would be claimed and sent again), a cancel (it must never be sent). Relaxed: the rest,
/// whose loss only repeats a step or errs on the safe side. A lost claim or renewal is a lease that
/// runs out; a lost end or retry leaves the message `sending`, which the sweep makes `unknown`
/// (a message Qikchat took may then read `unknown`: never sent again, which is the point).
#[derive(Debug, Clone, Copy)]
pub(super) enum Commit {
    Durable,
    Relaxed,
}

pub struct SqliteStore {
    db: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (or creates) `dir/outbox.sqlite3`, creating `dir` if needed.
    pub fn open(dir: &Path) -> Result<Arc<Self>, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("outbox.sqlite3");
        let db = Connection::open(&path)
            .map_err(|e| Error(format!("cannot open {}: {e}", path.display())))?;
        db.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        db.execute_batch(SCHEMA).map_err(sql)?;
        Ok(Arc::new(Self { db: Mutex::new(db) }))
    }

    /// Runs `work` in one transaction on the blocking pool, with the time now in ms, committed
    /// as `commit` says.
    pub(super) async fn run<T, F>(self: &Arc<Self>, commit: Commit, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, i64) -> rusqlite::Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = crate::lock(&store.db);
            let level = match commit {
                Commit::Durable => "FULL",
                Commit::Relaxed => "NORMAL",
            };
            db.pragma_update(None, "synchronous", level)?;
            let tx = db.transaction()?;
            let result = work(&tx, ms(crate::unix_ms()))?;
            tx.commit()?;
            Ok(result)
        })
        .await
        .map_err(|e| Error(format!("the outbox's task failed: {e}")))?
        .map_err(sql)
    }

    pub async fn accept(
        self: &Arc<Self>,
        messages: Vec<NewMessage>,
        max_waiting: u64,
    ) -> Result<Option<Vec<Accepted>>, Error> {
        self.run(Commit::Durable, move |tx, _| {
            // Each item's fate first (a key seen before, in the store or earlier in the batch),
            // so that a batch too large for the room left stores nothing at all.
            // (caller, key, fingerprint, id, state) of the batch's new keyed items.
            let mut seen: Vec<(String, String, String, String, State)> = Vec::new();
            let mut fates = Vec::with_capacity(messages.len());
            for message in messages {
                let Some((key, fingerprint)) = message.key.clone() else {
                    fates.push(Ok(message));
                    continue;
                };
                let earlier = seen
                    .iter()
                    .find(|(caller, k, ..)| *caller == message.caller && *k == key)
                    .map(|(_, _, known, id, state)| (id.clone(), *state, known.clone()));
                let known = match earlier {
                    Some(found) => Some(found),
                    None => by_key(tx, &message.caller, &key)?.map(|(r, f)| (r.id, r.state, f)),
                };
                match known {
                    Some((id, state, known)) if known == fingerprint => {
                        fates.push(Err(Accepted::Existing { id, state }));
                    }
                    Some(_) => fates.push(Err(Accepted::Reused)),
                    None => {
                        let (caller, id) = (message.caller.clone(), message.id.clone());
                        seen.push((caller, key, fingerprint, id, message.state));
                        fates.push(Ok(message));
                    }
                }
            }
            let new = fates.iter().filter(|fate| fate.is_ok()).count() as u64;
            if new > 0 && waiting(tx)? + new > max_waiting {
                return Ok(None);
            }
            let mut results = Vec::with_capacity(fates.len());
            for fate in fates {
                let message = match fate {
                    Ok(message) => message,
                    Err(answer) => {
                        results.push(answer);
                        continue;
                    }
                };
                let (key, fingerprint) = message.key.clone().unzip();
                tx.execute(
                    "INSERT INTO messages (id, caller, account, body, reference, key_sha256,
                         fingerprint, state, send_at, due_at, valid_until, accepted_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)",
                    params![
                        message.id,
                        message.caller,
                        message.account,
                        message.body,
                        message.reference,
                        key,
                        fingerprint,
                        message.state.as_str(),
                        message.send_at_ms.map(ms),
                        ms(message.due_at_ms),
                        ms(message.valid_until_ms),
                        ms(message.accepted_at_ms),
                    ],
                )?;
                results.push(Accepted::Stored {
                    id: message.id,
                    state: message.state,
                });
            }
            Ok(Some(results))
        })
        .await
    }

    pub async fn by_key(
        self: &Arc<Self>,
        caller: &str,
        key_sha256: &str,
    ) -> Result<Option<(Record, String)>, Error> {
        let (caller, key) = (caller.to_owned(), key_sha256.to_owned());
        self.run(Commit::Relaxed, move |tx, _| by_key(tx, &caller, &key))
            .await
    }

    pub async fn get(self: &Arc<Self>, id: &str) -> Result<Option<Record>, Error> {
        let id = id.to_owned();
        self.run(Commit::Relaxed, move |tx, _| get(tx, &id)).await
    }
}

pub(super) fn waiting(tx: &Transaction<'_>) -> rusqlite::Result<u64> {
    tx.query_row(
        "SELECT count(*) FROM messages
         WHERE state IN ('scheduled', 'accepted', 'claimed', 'sending')",
        [],
        |row| row.get::<_, i64>(0),
    )
    .map(u)
}

pub(super) fn get(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<Option<Record>> {
    tx.query_row(
        &format!("SELECT {RECORD} FROM messages WHERE id = ?1"),
        params![id],
        record,
    )
    .optional()
}

pub(super) fn by_key(
    tx: &Transaction<'_>,
    caller: &str,
    key: &str,
) -> rusqlite::Result<Option<(Record, String)>> {
    let found: Option<(String, Option<String>)> = tx
        .query_row(
            "SELECT id, fingerprint FROM messages WHERE caller = ?1 AND key_sha256 = ?2",
            params![caller, key],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let Some((id, fingerprint)) = found else {
        return Ok(None);
    };
    Ok(get(tx, &id)?.map(|record| (record, fingerprint.unwrap_or_default())))
}

pub(super) fn record(row: &Row<'_>) -> rusqlite::Result<Record> {
    let state: String = row.get(3)?;
    let code: Option<String> = row.get(10)?;
    let detail: Option<String> = row.get(11)?;
    Ok(Record {
        id: row.get(0)?,
        caller: row.get(1)?,
        account: row.get(2)?,
        state: State::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                3,
                rusqlite::types::Type::Text,
                format!("unknown state {state:?}").into(),
            )
        })?,
        qikchat_id: row.get(4)?,
        reference: row.get(5)?,
        send_at_ms: row.get::<_, Option<i64>>(6)?.map(u),
        due_at_ms: u(row.get(7)?),
        valid_until_ms: u(row.get(8)?),
        attempts: row.get(9)?,
        error: code.map(|code| (code, detail.unwrap_or_default())),
        accepted_at_ms: u(row.get(12)?),
        updated_at_ms: u(row.get(13)?),
    })
}

pub(super) fn sql(e: rusqlite::Error) -> Error {
    Error(e.to_string())
}

/// Times are kept as SQLite integers: milliseconds since the Unix epoch.
pub(super) fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn u(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
