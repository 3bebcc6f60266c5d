//! The scripts, each a `.lua` file beside this module, run after `preamble.lua`.

use std::sync::LazyLock;

/// Put before every script: effects replication (only needed before Redis 5, where a script that
/// reads `TIME` may not write otherwise), the prefix, Redis's clock in ms, and the helpers the
/// scripts share: a record's fields, a caller's place in `callers`, whether a token holds a
/// message, and a message's end.
const PREAMBLE_LUA: &str = include_str!("preamble.lua");

/// A script as Redis runs it: [`PREAMBLE_LUA`] and then `body`, the text of one of the `.lua`
/// files beside this module, exactly as they are (the files start with an empty line).
fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{PREAMBLE_LUA}{body}"))
}

/// Stores a batch, or nothing when the outbox would be too full. KEYS: `waiting`. ARGV: prefix,
/// the most waiting, then per message its 12 fields (`W` in the script: id, caller, account, body,
/// reference, key SHA-256, fingerprint, state, send_at_ms, due_at_ms, valid_until_ms,
/// accepted_at_ms; `''` for none). Returns false
/// when full, else {kind, id, state} per message, kind `stored`, `existing` or `reused` (id and
/// state `''`). Every key is looked up before anything is written, so a refused batch leaves no
/// trace, and a key seen earlier in the batch answers as the message stored for it.
const ACCEPT_LUA: &str = include_str!("accept.lua");

/// The message under a caller's key. KEYS: its `key:` record. ARGV: prefix.
/// Returns false, or a record and the key's fingerprint.
const BY_KEY_LUA: &str = include_str!("by_key.lua");

/// KEYS: the message's hash. ARGV: prefix, id. Returns false or a record.
const GET_LUA: &str = include_str!("get.lua");

/// Claims due messages. KEYS: `leases`. ARGV: prefix, limit, lease (ms), token, the most per
/// caller, then the callers to skip.
/// Returns {id, caller, account, body, reference, attempts, valid_until_ms, accepted_at_ms, ...}.
const CLAIM_LUA: &str = include_str!("claim.lua");

/// Extends a claim's or a send's lease. KEYS: the message's hash. ARGV: prefix, id, token, lease
/// (ms). Returns 1 when the token held it.
const RENEW_LUA: &str = include_str!("renew.lua");

/// A claim within its lease becomes a send. KEYS: the message's hash. ARGV: prefix, id, token,
/// lease (ms). Returns 1 when the token held it.
const START_LUA: &str = include_str!("start.lua");

/// A held message waits again. KEYS: the message's hash. ARGV: prefix, id, token, due (ms),
/// error code, error detail. Returns 1 when the token held it.
const RETRY_LUA: &str = include_str!("retry.lua");

/// A held message ends. KEYS: the message's hash. ARGV: prefix, id, token, state, Qikchat's id,
/// error code, error detail (`''` for none). Returns 1 when the token held it.
const FINISH_LUA: &str = include_str!("finish.lua");

/// KEYS: the message's hash. ARGV: prefix, id, caller.
/// Returns {`canceled` | `not_cancelable`, record} or {`not_found`}.
const CANCEL_LUA: &str = include_str!("cancel.lua");

/// KEYS: `sending`. ARGV: prefix, retention (ms), error code and detail for an interrupted send.
/// Returns the records made `unknown`. At most 1000 of each kind a call: the rest at the next.
const SWEEP_LUA: &str = include_str!("sweep.lua");

/// KEYS: `callers`. ARGV: prefix. Returns {waiting, the oldest due time due now or false}.
const STATS_LUA: &str = include_str!("stats.lua");

/// KEYS: `dead`. ARGV: prefix, limit. Returns the records, newest first.
const DEAD_LETTERS_LUA: &str = include_str!("dead_letters.lua");

/// Hashed once: `redis::Script` sends EVALSHA and loads the script only when Redis lacks it.
pub(super) static ACCEPT: LazyLock<redis::Script> = LazyLock::new(|| script(ACCEPT_LUA));
pub(super) static BY_KEY: LazyLock<redis::Script> = LazyLock::new(|| script(BY_KEY_LUA));
pub(super) static GET: LazyLock<redis::Script> = LazyLock::new(|| script(GET_LUA));
pub(super) static CLAIM: LazyLock<redis::Script> = LazyLock::new(|| script(CLAIM_LUA));
pub(super) static RENEW: LazyLock<redis::Script> = LazyLock::new(|| script(RENEW_LUA));
pub(super) static START: LazyLock<redis::Script> = LazyLock::new(|| script(START_LUA));
pub(super) static RETRY: LazyLock<redis::Script> = LazyLock::new(|| script(RETRY_LUA));
pub(super) static FINISH: LazyLock<redis::Script> = LazyLock::new(|| script(FINISH_LUA));
pub(super) static CANCEL: LazyLock<redis::Script> = LazyLock::new(|| script(CANCEL_LUA));
pub(super) static SWEEP: LazyLock<redis::Script> = LazyLock::new(|| script(SWEEP_LUA));
pub(super) static STATS: LazyLock<redis::Script> = LazyLock::new(|| script(STATS_LUA));
pub(super) static DEAD_LETTERS: LazyLock<redis::Script> =
    LazyLock::new(|| script(DEAD_LETTERS_LUA));
