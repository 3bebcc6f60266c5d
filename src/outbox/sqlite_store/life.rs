//! A message's life after acceptance: claims and their leases, the `sending` mark, retries and
//! ends, cancels, the sweep of what dead replicas left, and the outbox's depth.

use std::sync::Arc;

use rusqlite::params;

use super::{Commit, RECORD, SqliteStore, WAITING, get, ms, record, u, waiting};
use crate::outbox::store::{Cancel, Claimed, Error, Finish, INTERRUPTED, Record, Shares, Stats};

impl SqliteStore {
    pub async fn claim(
        self: &Arc<Self>,
        limit: usize,
        lease_ms: u64,
        token: &str,
        shares: &Shares,
    ) -> Result<Vec<Claimed>, Error> {
        let (token, shares) = (token.to_owned(), shares.clone());
        self.run(Commit::Relaxed, move |tx, now| {
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
            callers.retain(|(_, caller, _)| !shares.skip.contains(caller));
            if let Some(most) = shares.per_caller {
                for (_, _, due) in &mut callers {
                    *due = (*due).min(most);
                }
            }
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
        self.run(Commit::Relaxed, move |tx, now| {
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
        self.run(Commit::Durable, move |tx, now| {
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
        self.run(Commit::Relaxed, move |tx, now| {
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
        self.run(Commit::Relaxed, move |tx, now| {
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

    pub async fn cancel(self: &Arc<Self>, caller: &str, id: &str) -> Result<Cancel, Error> {
        let (caller, id) = (caller.to_owned(), id.to_owned());
        self.run(Commit::Durable, move |tx, now| {
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
        self.run(Commit::Relaxed, move |tx, now| {
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
        self.run(Commit::Relaxed, |tx, now| {
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
        self.run(Commit::Relaxed, move |tx, _| {
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
