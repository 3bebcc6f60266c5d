//! The outbox on local disk: `outbox.sqlite3` in `RELAY_DATA_DIR`, in WAL mode with
//! `synchronous=FULL`, so a message answered 202 survives a crash of the process or the machine.
//! Every operation is one transaction on the blocking pool; a batch is one transaction.
//!
//! One table, `messages`, a row per message; `body` (the message, with the customer's number) is
//! set to NULL once the message ends. A claim is a lease (`lease_until`) under a token: a worker
//! that dies holds nothing once it runs out.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::store::{
    Accepted, Cancel, Claimed, Error, Finish, INTERRUPTED, NewMessage, Record, State, Stats,
};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    account TEXT NOT NULL,
    body TEXT,
    reference TEXT,
    key_sha256 TEXT,
    fingerprint TEXT,
    state TEXT NOT NULL,
    send_at INTEGER,
    due_at INTEGER NOT NULL,
    valid_until INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    qikchat_id TEXT,
    error_code TEXT,
    error_detail TEXT,
    token TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0,
    accepted_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_key ON messages (caller, key_sha256)
    WHERE key_sha256 IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_due ON messages (state, caller, due_at);
CREATE INDEX IF NOT EXISTS messages_lease ON messages (state, lease_until);
CREATE INDEX IF NOT EXISTS messages_ended ON messages (updated_at);
";

/// Columns of a [`Record`], in [`record`]'s order.
const RECORD: &str = "id, caller, account, state, qikchat_id, reference, send_at, due_at, \
                      valid_until, attempts, error_code, error_detail, accepted_at, updated_at";

/// The states a message waits in before a worker holds it.
const WAITING: &str = "('scheduled', 'accepted')";

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

    /// Runs `work` in one transaction on the blocking pool, with the time now in ms.
    async fn run<T, F>(self: &Arc<Self>, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, i64) -> rusqlite::Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = crate::lock(&store.db);
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
        self.run(move |tx, _| {
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
        self.run(move |tx, _| by_key(tx, &caller, &key)).await
    }

    pub async fn claim(
        self: &Arc<Self>,
        limit: usize,
        lease_ms: u64,
        token: &str,
    ) -> Result<Vec<Claimed>, Error> {
        let token = token.to_owned();
        self.run(move |tx, now| {
            // Callers with something due, how much, and since when: each gets its share of
            // `limit` in turn, the longest waiting first, so that a large backlog of one never
            // holds back another's messages.
            let mut callers: Vec<(i64, String, usize)> = tx
                .prepare(&format!(
                    "SELECT min(due_at), caller, count(*) FROM messages
                     WHERE (state IN {WAITING} AND due_at <= ?1)
                        OR (state = 'claimed' AND lease_until <= ?1)
                     GROUP BY caller"
                ))?
                .query_map(params![now], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)? as usize))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let shares = fair_shares(&mut callers, limit);
            let mut claimed = Vec::new();
            let mut select = tx.prepare(&format!(
                "SELECT id, caller, account, body, reference, attempts, valid_until, accepted_at
                 FROM messages
                 WHERE caller = ?1 AND ((state IN {WAITING} AND due_at <= ?2)
                    OR (state = 'claimed' AND lease_until <= ?2))
                 ORDER BY due_at LIMIT ?3"
            ))?;
            for (caller, share) in shares {
                let rows = select.query_map(params![caller, now, share as i64], |row| {
                    Ok(Claimed {
                        id: row.get(0)?,
                        caller: row.get(1)?,
                        account: row.get(2)?,
                        body: row.get::<_, Option<String>>(3)?.unwrap_or_default(),
                        reference: row.get(4)?,
                        attempts: row.get(5)?,
                        valid_until_ms: u(row.get(6)?),
                        accepted_at_ms: u(row.get(7)?),
                    })
                })?;
                for row in rows {
                    claimed.push(row?);
                }
            }
            let lease_until = now.saturating_add(ms(lease_ms));
            for message in &claimed {
                tx.execute(
                    "UPDATE messages SET state = 'claimed', token = ?2, lease_until = ?3
                     WHERE id = ?1",
                    params![message.id, token, lease_until],
                )?;
            }
            Ok(claimed)
        })
        .await
    }

    pub async fn renew(
        self: &Arc<Self>,
        id: &str,
        token: &str,
        lease_ms: u64,
    ) -> Result<bool, Error> {
        let (id, token) = (id.to_owned(), token.to_owned());
        self.run(move |tx, now| {
            let changed = tx.execute(
                "UPDATE messages SET lease_until = ?3
                 WHERE id = ?1 AND token = ?2 AND state IN ('claimed', 'sending')
                   AND lease_until > ?4",
                params![id, token, now.saturating_add(ms(lease_ms)), now],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    pub async fn start(
        self: &Arc<Self>,
        id: &str,
        token: &str,
        lease_ms: u64,
    ) -> Result<bool, Error> {
        let (id, token) = (id.to_owned(), token.to_owned());
        self.run(move |tx, now| {
            let changed = tx.execute(
                "UPDATE messages SET state = 'sending', lease_until = ?3, updated_at = ?4
                 WHERE id = ?1 AND token = ?2 AND state = 'claimed' AND lease_until > ?4",
                params![id, token, now.saturating_add(ms(lease_ms)), now],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    pub async fn retry(
        self: &Arc<Self>,
        id: &str,
        token: &str,
        due_at_ms: u64,
        error: (String, String),
    ) -> Result<bool, Error> {
        let (id, token) = (id.to_owned(), token.to_owned());
        self.run(move |tx, now| {
            let changed = tx.execute(
                "UPDATE messages SET state = 'accepted', due_at = ?3, attempts = attempts + 1,
                     error_code = ?4, error_detail = ?5, token = NULL, lease_until = 0,
                     updated_at = ?6
                 WHERE id = ?1 AND token = ?2 AND state IN ('claimed', 'sending')",
                params![id, token, ms(due_at_ms), error.0, error.1, now],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    pub async fn finish(
        self: &Arc<Self>,
        id: &str,
        token: &str,
        finish: Finish,
    ) -> Result<bool, Error> {
        let (id, token) = (id.to_owned(), token.to_owned());
        self.run(move |tx, now| {
            let (code, detail) = finish.error.unzip();
            let changed = tx.execute(
                "UPDATE messages SET state = ?3, qikchat_id = ?4, error_code = ?5,
                     error_detail = ?6, body = NULL, token = NULL, lease_until = 0,
                     updated_at = ?7
                 WHERE id = ?1 AND token = ?2 AND state IN ('claimed', 'sending')",
                params![
                    id,
                    token,
                    finish.state.as_str(),
                    finish.qikchat_id,
                    code,
                    detail,
                    now
                ],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    pub async fn get(self: &Arc<Self>, id: &str) -> Result<Option<Record>, Error> {
        let id = id.to_owned();
        self.run(move |tx, _| get(tx, &id)).await
    }

    pub async fn cancel(self: &Arc<Self>, caller: &str, id: &str) -> Result<Cancel, Error> {
        let (caller, id) = (caller.to_owned(), id.to_owned());
        self.run(move |tx, now| {
            let Some(record) = get(tx, &id)?.filter(|r| r.caller == caller) else {
                return Ok(Cancel::NotFound);
            };
            if !record.state.is_cancelable() {
                return Ok(Cancel::NotCancelable(record));
            }
            tx.execute(
                "UPDATE messages SET state = 'canceled', body = NULL, token = NULL,
                     lease_until = 0, updated_at = ?2
                 WHERE id = ?1",
                params![id, now],
            )?;
            Ok(get(tx, &id)?.map_or(Cancel::NotFound, Cancel::Canceled))
        })
        .await
    }

    pub async fn sweep(self: &Arc<Self>, retention_ms: u64) -> Result<Vec<Record>, Error> {
        self.run(move |tx, now| {
            let lost: Vec<String> = tx
                .prepare("SELECT id FROM messages WHERE state = 'sending' AND lease_until <= ?1")?
                .query_map(params![now], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut ended = Vec::with_capacity(lost.len());
            for id in lost {
                tx.execute(
                    "UPDATE messages SET state = 'unknown', error_code = ?2, error_detail = ?3,
                         body = NULL, token = NULL, lease_until = 0, updated_at = ?4
                     WHERE id = ?1",
                    params![id, INTERRUPTED.0, INTERRUPTED.1, now],
                )?;
                ended.extend(get(tx, &id)?);
            }
            tx.execute(
                "DELETE FROM messages WHERE state IN
                     ('queued', 'failed', 'expired', 'canceled', 'unknown') AND updated_at <= ?1",
                params![now.saturating_sub(ms(retention_ms))],
            )?;
            Ok(ended)
        })
        .await
    }

    pub async fn stats(self: &Arc<Self>) -> Result<Stats, Error> {
        self.run(|tx, now| {
            let waiting = waiting(tx)?;
            let oldest: Option<i64> = tx.query_row(
                &format!(
                    "SELECT min(due_at) FROM messages WHERE state IN {WAITING} AND due_at <= ?1"
                ),
                params![now],
                |row| row.get(0),
            )?;
            Ok(Stats {
                waiting,
                oldest_due_ms: oldest.map(u),
            })
        })
        .await
    }

    pub async fn dead_letters(self: &Arc<Self>, limit: usize) -> Result<Vec<Record>, Error> {
        self.run(move |tx, _| {
            tx.prepare(&format!(
                "SELECT {RECORD} FROM messages WHERE state IN ('failed', 'unknown')
                 ORDER BY updated_at DESC LIMIT ?1"
            ))?
            .query_map(params![limit as i64], record)?
            .collect()
        })
        .await
    }
}

/// Splits `limit` between callers in turn, one each per round while they have messages due,
/// the longest waiting (the oldest `due_at`) first. Returns each caller with its share, in that
/// order.
fn fair_shares(callers: &mut [(i64, String, usize)], limit: usize) -> Vec<(String, usize)> {
    callers.sort();
    let mut shares: Vec<(String, usize)> = callers.iter().map(|(_, c, _)| (c.clone(), 0)).collect();
    let mut left = limit;
    while left > 0 {
        let mut gave = false;
        for ((_, _, due), (_, share)) in callers.iter().zip(shares.iter_mut()) {
            if left > 0 && *share < *due {
                *share += 1;
                left -= 1;
                gave = true;
            }
        }
        if !gave {
            break;
        }
    }
    shares.retain(|(_, share)| *share > 0);
    shares
}

fn waiting(tx: &Transaction<'_>) -> rusqlite::Result<u64> {
    tx.query_row(
        "SELECT count(*) FROM messages
         WHERE state IN ('scheduled', 'accepted', 'claimed', 'sending')",
        [],
        |row| row.get::<_, i64>(0),
    )
    .map(u)
}

fn get(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<Option<Record>> {
    tx.query_row(
        &format!("SELECT {RECORD} FROM messages WHERE id = ?1"),
        params![id],
        record,
    )
    .optional()
}

fn by_key(
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

fn record(row: &Row<'_>) -> rusqlite::Result<Record> {
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

fn sql(e: rusqlite::Error) -> Error {
    Error(e.to_string())
}

/// Times are kept as SQLite integers: milliseconds since the Unix epoch.
fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn u(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::fair_shares;

    #[test]
    fn each_caller_gets_its_turn_before_any_gets_more() {
        let mut callers = vec![(5, "big".to_owned(), 1000), (9, "small".to_owned(), 2)];
        assert_eq!(
            fair_shares(&mut callers, 10),
            vec![("big".to_owned(), 8), ("small".to_owned(), 2)]
        );
        let mut one = vec![(1, "only".to_owned(), 3)];
        assert_eq!(fair_shares(&mut one, 10), vec![("only".to_owned(), 3)]);
        // More callers than the limit: the longest waiting go first.
        let mut many = vec![
            (7, "a".to_owned(), 1),
            (3, "b".to_owned(), 1),
            (5, "c".to_owned(), 1),
        ];
        assert_eq!(
            fair_shares(&mut many, 2),
            vec![("b".to_owned(), 1), ("c".to_owned(), 1)]
        );
    }
}
