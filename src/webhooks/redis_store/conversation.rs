//! What the store knows of conversations, in Redis: `watched:<account>` (when its first event
//! arrived), `window:<account>:<pseudonym>` (when the customer last wrote) and `opt-outs:<account>`
//! (a hash, pseudonym to `{masked, opted_out, how, at}`), all under the store's prefix.

use std::{sync::LazyLock, time::Duration};

use serde::Deserialize;

use super::{PREFIX, RedisStore, delay_ms, redis_error, script};
use crate::{
    conversation::{CustomerFacts, OptChange, OptOut, OptOutHow},
    message::Recipient,
    rfc3339_ms,
    webhooks::Error,
};

/// How long a customer's last message is kept: long after every window has closed. Past it the
/// window still reads as closed (the account has been watched for longer than the window), only
/// without the date.
const KEEP_LAST_INBOUND: Duration = Duration::from_secs(90 * 86_400);

const OBSERVE_LUA: &str = include_str!("observe.lua");
const OPT_OUT_LUA: &str = include_str!("opt_out.lua");
static OBSERVE: LazyLock<redis::Script> = LazyLock::new(|| script(OBSERVE_LUA));
static OPT_OUT: LazyLock<redis::Script> = LazyLock::new(|| script(OPT_OUT_LUA));

/// An entry of `opt-outs:<account>`, as `opt_out.lua` writes it.
#[derive(Deserialize)]
struct Stored {
    masked: String,
    opted_out: bool,
    how: String,
    at: String,
}

impl RedisStore {
    pub async fn observe(
        &self,
        account: &str,
        at_ms: u64,
        inbound: Option<(&Recipient, Option<OptChange>)>,
    ) -> Result<(), Error> {
        let customer = inbound.map_or_else(String::new, |(customer, _)| customer.pseudonym());
        let mut observe = OBSERVE.prepare_invoke();
        observe
            .arg(PREFIX)
            .arg(account)
            .arg(at_ms)
            .arg(customer)
            .arg(delay_ms(KEEP_LAST_INBOUND));
        observe
            .invoke_async::<()>(&mut self.redis.clone())
            .await
            .map_err(|e| self.write_error(e))?;
        if let Some((customer, Some(change))) = inbound {
            self.change_opt_out(account, customer, change).await?;
        }
        self.wrote();
        Ok(())
    }

    pub async fn customer_facts(
        &self,
        account: &str,
        customer: &Recipient,
    ) -> Result<CustomerFacts, Error> {
        let pseudonym = customer.pseudonym();
        let (last, since, stored): (Option<u64>, Option<u64>, Option<String>) = redis::pipe()
            .cmd("GET")
            .arg(format!("{PREFIX}window:{account}:{pseudonym}"))
            .cmd("GET")
            .arg(format!("{PREFIX}watched:{account}"))
            .cmd("HGET")
            .arg(format!("{PREFIX}opt-outs:{account}"))
            .arg(&pseudonym)
            .query_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        let opt_out = stored
            .map(|json| read(&json))
            .transpose()?
            .and_then(|stored| stored.opted_out.then(|| opt_out(stored)));
        Ok(CustomerFacts {
            last_inbound_ms: last,
            watched_since_ms: since,
            opt_out,
        })
    }

    /// The account's list is one hash, read whole: an opt-out list is thousands of entries, not
    /// millions.
    pub async fn opt_outs(&self, account: &str, limit: usize) -> Result<Vec<OptOut>, Error> {
        let entries: Vec<String> = redis::cmd("HVALS")
            .arg(format!("{PREFIX}opt-outs:{account}"))
            .query_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        let mut list = Vec::new();
        for json in entries {
            let stored = read(&json)?;
            if stored.opted_out {
                list.push((stored.at.parse::<u64>().unwrap_or(0), opt_out(stored)));
            }
        }
        list.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        Ok(list.into_iter().take(limit).map(|(_, o)| o).collect())
    }

    pub async fn change_opt_out(
        &self,
        account: &str,
        customer: &Recipient,
        change: OptChange,
    ) -> Result<Option<OptOut>, Error> {
        let state: Vec<String> = OPT_OUT
            .arg(PREFIX)
            .arg(account)
            .arg(customer.pseudonym())
            .arg(customer.masked())
            .arg(if change.opted_out { "1" } else { "0" })
            .arg(change.how.as_str())
            .arg(change.at_ms)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(|e| self.write_error(e))?;
        self.wrote();
        Ok(match <[String; 3]>::try_from(state) {
            Ok([masked, how, at]) => Some(opt_out(Stored {
                masked,
                opted_out: true,
                how,
                at,
            })),
            Err(_) => None,
        })
    }
}

fn read(json: &str) -> Result<Stored, Error> {
    serde_json::from_str(json).map_err(|e| Error(format!("an opt-out cannot be read: {e}")))
}

fn opt_out(stored: Stored) -> OptOut {
    OptOut {
        customer: stored.masked,
        since: rfc3339_ms(stored.at.parse().unwrap_or(0)),
        how: OptOutHow::parse(&stored.how),
    }
}
