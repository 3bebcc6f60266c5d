//! What the store knows of conversations: when each customer last wrote to an account, since
//! when the account's webhooks have been received, and the account's opt-out list. Customers are
//! kept by pseudonym, with the masked number for the operator's list: never the number.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::{
    conversation::{CustomerFacts, OptChange, OptOut, OptOutHow},
    message::Recipient,
    rfc3339_ms,
    webhooks::Error,
};

/// How long a customer's last message is kept: long after every window has closed. Past it the
/// window still reads as closed (the account has been watched for longer than the window), only
/// without the date.
const KEEP_LAST_INBOUND_MS: i64 = 90 * 86_400_000;

impl SqliteStore {
    pub async fn observe(
        self: &Arc<Self>,
        account: &str,
        at_ms: u64,
        inbound: Option<(&Recipient, Option<OptChange>)>,
    ) -> Result<(), Error> {
        let account = account.to_owned();
        let at = i64::try_from(at_ms).unwrap_or(i64::MAX);
        let inbound =
            inbound.map(|(customer, change)| (customer.pseudonym(), customer.masked(), change));
        self.run(move |tx, _| {
            tx.execute(
                "INSERT INTO watched_accounts (account, since) VALUES (?1, ?2)
                 ON CONFLICT (account) DO UPDATE SET since = min(since, excluded.since)",
                params![account, at],
            )?;
            let Some((customer, masked, change)) = inbound else {
                return Ok(());
            };
            tx.execute(
                "DELETE FROM customer_windows WHERE last_inbound_at < ?1",
                params![at - KEEP_LAST_INBOUND_MS],
            )?;
            tx.execute(
                "INSERT INTO customer_windows (account, customer, last_inbound_at)
                 VALUES (?1, ?2, ?3)
                 ON CONFLICT (account, customer)
                 DO UPDATE SET last_inbound_at = max(last_inbound_at, excluded.last_inbound_at)",
                params![account, customer, at],
            )?;
            if let Some(change) = change {
                change_opt_out(tx, &account, &customer, &masked, change)?;
            }
            Ok(())
        })
        .await
    }

    pub async fn customer_facts(
        self: &Arc<Self>,
        account: &str,
        customer: &Recipient,
    ) -> Result<CustomerFacts, Error> {
        let (account, customer) = (account.to_owned(), customer.pseudonym());
        // Read on every send: on the owners' connection, which never waits behind the durable
        // one's fsync of a webhook event (WAL: it reads what that one committed).
        self.run_on(true, move |tx, _| {
            let last_inbound_ms = tx
                .query_row(
                    "SELECT last_inbound_at FROM customer_windows WHERE account = ?1 AND customer = ?2",
                    params![account, customer],
                    |row| row.get::<_, i64>(0),
                )
                .optional()?;
            let watched_since_ms = tx
                .query_row(
                    "SELECT since FROM watched_accounts WHERE account = ?1",
                    params![account],
                    |row| row.get::<_, i64>(0),
                )
                .optional()?;
            let opt_out = tx
                .query_row(
                    "SELECT masked, how, changed_at FROM opt_outs
                     WHERE account = ?1 AND customer = ?2 AND opted_out = 1",
                    params![account, customer],
                    opt_out_row,
                )
                .optional()?;
            Ok(CustomerFacts {
                last_inbound_ms: last_inbound_ms.map(unsigned),
                watched_since_ms: watched_since_ms.map(unsigned),
                opt_out,
            })
        })
        .await
    }

    pub async fn opt_outs(
        self: &Arc<Self>,
        account: &str,
        limit: usize,
    ) -> Result<Vec<OptOut>, Error> {
        let account = account.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |tx, _| {
            let mut query = tx.prepare(
                "SELECT masked, how, changed_at FROM opt_outs
                 WHERE account = ?1 AND opted_out = 1 ORDER BY changed_at DESC LIMIT ?2",
            )?;
            query
                .query_map(params![account, limit], opt_out_row)?
                .collect()
        })
        .await
    }

    pub async fn change_opt_out(
        self: &Arc<Self>,
        account: &str,
        customer: &Recipient,
        change: OptChange,
    ) -> Result<Option<OptOut>, Error> {
        let (account, pseudonym, masked) =
            (account.to_owned(), customer.pseudonym(), customer.masked());
        self.run(move |tx, _| {
            change_opt_out(tx, &account, &pseudonym, &masked, change)?;
            tx.query_row(
                "SELECT masked, how, changed_at FROM opt_outs
                 WHERE account = ?1 AND customer = ?2 AND opted_out = 1",
                params![account, pseudonym],
                opt_out_row,
            )
            .optional()
        })
        .await
    }
}

/// Applies `change` unless a later one is in force or it changes nothing. A customer taken off
/// the list keeps a row (`opted_out = 0`) with the date, so that an older STOP routed late
/// cannot put them back.
fn change_opt_out(
    tx: &rusqlite::Transaction<'_>,
    account: &str,
    customer: &str,
    masked: &str,
    change: OptChange,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO opt_outs (account, customer, masked, opted_out, how, changed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (account, customer) DO UPDATE
         SET opted_out = excluded.opted_out, how = excluded.how, changed_at = excluded.changed_at
         WHERE excluded.changed_at >= opt_outs.changed_at
           AND excluded.opted_out != opt_outs.opted_out",
        params![
            account,
            customer,
            masked,
            change.opted_out,
            change.how.as_str(),
            i64::try_from(change.at_ms).unwrap_or(i64::MAX)
        ],
    )?;
    Ok(())
}

fn opt_out_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<OptOut> {
    Ok(OptOut {
        customer: row.get(0)?,
        how: OptOutHow::parse(&row.get::<_, String>(1)?),
        since: rfc3339_ms(unsigned(row.get(2)?)),
    })
}

fn unsigned(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}
