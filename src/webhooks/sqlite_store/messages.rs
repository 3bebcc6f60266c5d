//! What the store knows of the messages sent: who sent each (its owner), who last wrote to a
//! number, and each message's latest status.

use std::{sync::Arc, time::Duration};

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, millis};
use crate::{
    message::Recipient,
    webhooks::{Error, LatestStatus, Owner},
};

impl SqliteStore {
    pub async fn remember_owner(
        self: &Arc<Self>,
        message_id: &str,
        owner: &Owner,
        to: Option<&Recipient>,
        ttl: Duration,
    ) -> Result<(), Error> {
        let (message_id, owner) = (message_id.to_owned(), owner.clone());
        let customer = to.map(Recipient::pseudonym);
        self.run_on(true, move |tx, now| {
            let expires_at = now + millis(ttl);
            tx.execute("DELETE FROM owners WHERE expires_at <= ?1", params![now])?;
            tx.execute(
                "INSERT OR REPLACE INTO owners
                     (message_id, caller, account, expires_at, reference, relay_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    message_id,
                    owner.caller,
                    owner.account,
                    expires_at,
                    owner.reference,
                    owner.relay_id
                ],
            )?;
            let Some(customer) = customer else {
                return Ok(());
            };
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
                "SELECT caller, account, reference, relay_id FROM owners
                 WHERE message_id = ?1 AND expires_at > ?2",
                params![message_id, now],
                |row| {
                    Ok(Owner {
                        caller: row.get(0)?,
                        account: row.get(1)?,
                        reference: row.get(2)?,
                        relay_id: row.get(3)?,
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
