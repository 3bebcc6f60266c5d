//! Reading what the scripts answer: a message's fields in a fixed order, as strings, into
//! [`Record`]s; anything malformed is an [`Error`], never a panic.

use super::RECORD_LEN;
use crate::outbox::store::{Error, Record, State};

/// Records one after another, as the scripts give lists of them.
pub(super) fn records(flat: &[Option<String>]) -> Result<Vec<Record>, Error> {
    if flat.len() % RECORD_LEN != 0 {
        return Err(malformed("a list of messages"));
    }
    flat.chunks_exact(RECORD_LEN).map(record).collect()
}

/// A record from its id and the preamble's `FIELDS`. A field missing or not what the scripts
/// write is an error: the hash was changed by something else than this store.
pub(super) fn record(f: &[Option<String>]) -> Result<Record, Error> {
    let [
        id,
        caller,
        account,
        state_field,
        qikchat_id,
        reference,
        send_at_ms,
        due_at_ms,
        valid_until_ms,
        attempts,
        error_code,
        error_detail,
        accepted_at_ms,
        updated_at_ms,
    ] = f
    else {
        return Err(malformed("a message"));
    };
    Ok(Record {
        id: required(id, "id")?.to_owned(),
        caller: required(caller, "caller")?.to_owned(),
        account: required(account, "account")?.to_owned(),
        state: state(required(state_field, "state")?)?,
        qikchat_id: qikchat_id.clone(),
        reference: reference.clone(),
        send_at_ms: send_at_ms
            .is_some()
            .then(|| number(send_at_ms, "send_at_ms"))
            .transpose()?,
        due_at_ms: number(due_at_ms, "due_at_ms")?,
        valid_until_ms: number(valid_until_ms, "valid_until_ms")?,
        attempts: number(attempts, "attempts")?,
        error: error_code.clone().zip(error_detail.clone()),
        accepted_at_ms: number(accepted_at_ms, "accepted_at_ms")?,
        updated_at_ms: number(updated_at_ms, "updated_at_ms")?,
    })
}

pub(super) fn required<'a>(field: &'a Option<String>, name: &str) -> Result<&'a str, Error> {
    field
        .as_deref()
        .ok_or_else(|| Error(format!("a stored message has no {name}")))
}

pub(super) fn number<T: std::str::FromStr>(field: &Option<String>, name: &str) -> Result<T, Error> {
    required(field, name)?
        .parse()
        .map_err(|_| Error(format!("a stored message's {name} is not a number")))
}

pub(super) fn state(value: &str) -> Result<State, Error> {
    State::parse(value)
        .ok_or_else(|| Error(format!("a stored message's state {value:?} is unknown")))
}

/// A sorted set's score in whole ms. Some Redis versions give a large score as `1.7e+12`, so it
/// is read as a float; the scores written here are whole ms, exact in a double.
pub(super) fn score(value: &str) -> Result<u64, Error> {
    match value.parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms >= 0.0 => Ok(ms as u64),
        _ => Err(malformed("a due time")),
    }
}

pub(super) fn malformed(what: &str) -> Error {
    Error(format!("Redis gave {what} this relay does not read"))
}

/// The error without the URL (a Redis error names the failure, not the server's address).
pub(super) fn redis_error(e: redis::RedisError) -> Error {
    Error(e.to_string())
}
