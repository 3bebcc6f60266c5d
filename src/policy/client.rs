//! One `[clients.<name>]` of the callers file, as written ([`FileClient`]) and checked into a
//! caller: the SHA-256 of its token and its [`Rules`].

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::check::{MIN_TOKEN_LEN, positive_u32, valid_name};
use super::subscriber::{FileWebhooks, subscriber};
use super::{AccountSpec, DEFAULT_ACCOUNT, PolicyError, Rules, problem};
use crate::{message::MessageType, ratelimit::Rate};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileClient {
    token: Option<String>,
    token_sha256: Option<String>,
    account: Option<String>,
    types: Option<Vec<String>>,
    templates: Option<Vec<String>>,
    destinations: Option<Vec<String>>,
    rate_per_minute: Option<u32>,
    burst: Option<u32>,
    daily_quota: Option<u64>,
    max_in_flight: Option<u32>,
    read_any_status: Option<bool>,
    ignore_opt_out: Option<bool>,
    webhooks: Option<FileWebhooks>,
}

/// Checks `[clients.<client>]` into its token's hash and its rules. `at` names a field of the
/// callers file; `tokens` holds the hashes of the clients checked before (a token is one
/// client's), and takes this one's; a webhook `secret_file` goes into the fingerprint.
pub(super) fn caller(
    client: &str,
    spec: FileClient,
    accounts: &BTreeMap<String, AccountSpec>,
    tokens: &mut BTreeSet<[u8; 32]>,
    at: &dyn Fn(String) -> String,
    fingerprint: &mut Sha256,
) -> Result<([u8; 32], Rules), PolicyError> {
    let field = |f: &str| at(format!("clients.{client}.{f}"));
    if !valid_name(client) {
        return Err(problem(
            at(format!("clients.{client}")),
            "a caller's name is 1 to 64 of A-Z a-z 0-9 - _ .",
        ));
    }
    let token_sha256: [u8; 32] = match (&spec.token, &spec.token_sha256) {
        (Some(_), Some(_)) => {
            return Err(problem(
                field("token"),
                "set token or token_sha256, not both",
            ));
        }
        (Some(token), None) => {
            if token.trim().len() < MIN_TOKEN_LEN {
                return Err(problem(field("token"), "must be at least 16 characters"));
            }
            Sha256::digest(token.trim().as_bytes()).into()
        }
        (None, Some(hex)) => parse_sha256(hex)
            .ok_or_else(|| problem(field("token_sha256"), "must be 64 hexadecimal digits"))?,
        (None, None) => {
            return Err(problem(
                field("token"),
                "every client needs token or token_sha256",
            ));
        }
    };
    if !tokens.insert(token_sha256) {
        return Err(problem(
            field("token"),
            "the same token is given to another client",
        ));
    }
    let account = spec.account.unwrap_or_else(|| DEFAULT_ACCOUNT.to_owned());
    if !accounts.contains_key(&account) {
        let hint = if account == DEFAULT_ACCOUNT {
            "there is no default account: set QIKCHAT_API_KEY(_FILE) or [accounts.default]"
                .to_owned()
        } else {
            format!("there is no [accounts.{account}]")
        };
        return Err(problem(field("account"), hint));
    }
    let types = spec
        .types
        .map(|names| {
            names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    MessageType::ALL
                        .into_iter()
                        .find(|t| t.as_str() == name)
                        .ok_or_else(|| {
                            problem(
                                field(&format!("types[{i}]")),
                                format!(
                                    "{name:?} is not a message type; one of {}",
                                    MessageType::ALL.map(MessageType::as_str).join(", ")
                                ),
                            )
                        })
                })
                .collect::<Result<BTreeSet<_>, _>>()
        })
        .transpose()?;
    let destinations = spec
        .destinations
        .map(|prefixes| {
            prefixes
                .into_iter()
                .enumerate()
                .map(|(i, prefix)| {
                    let digits = prefix.strip_prefix('+').unwrap_or_default();
                    if digits.is_empty()
                        || digits.len() > 15
                        || !digits.bytes().all(|b| b.is_ascii_digit())
                    {
                        return Err(problem(
                            field(&format!("destinations[{i}]")),
                            "must be + and 1 to 15 digits, e.g. +91",
                        ));
                    }
                    Ok(prefix)
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let rate = match (spec.rate_per_minute, spec.burst) {
        (None, None) => None,
        (Some(per_minute), burst) => {
            let per_minute = positive_u32(&field("rate_per_minute"), per_minute)?;
            let burst = positive_u32(&field("burst"), burst.unwrap_or(per_minute))?;
            Some(Rate::per_minute(per_minute, burst))
        }
        (None, Some(_)) => {
            return Err(problem(field("rate_per_minute"), "is required with burst"));
        }
    };
    if spec.daily_quota == Some(0) {
        return Err(problem(field("daily_quota"), "must be at least 1"));
    }
    let max_in_flight = spec
        .max_in_flight
        .map(|n| positive_u32(&field("max_in_flight"), n))
        .transpose()?;
    let webhooks = match spec.webhooks {
        None => None,
        Some(hooks) => Some(subscriber(hooks, &field, fingerprint)?),
    };
    Ok((
        token_sha256,
        Rules {
            name: Arc::from(client),
            account,
            types,
            templates: spec.templates.map(|t| t.into_iter().collect()),
            destinations,
            rate,
            daily_quota: spec.daily_quota,
            max_in_flight,
            read_any_status: spec.read_any_status.unwrap_or(false),
            ignore_opt_out: spec.ignore_opt_out.unwrap_or(false),
            webhooks,
        },
    ))
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
