//! Caller policy: who may call, what each caller may send, through which Qikchat account, how
//! fast. It comes from `RELAY_CLIENTS` (names and tokens only) or from the callers file
//! `RELAY_CLIENTS_FILE`, plus the key files, and it can change while the relay runs.
//!
//! [`Sources`] says where it comes from; [`load`] reads and checks it into a [`Spec`];
//! [`Policy::build`] turns a spec into what requests use (one Qikchat client per account).
//! [`Live`] holds the current policy and swaps in a new one when a file changes or on SIGHUP. A
//! request takes the policy of the moment it arrived ([`Live::current`]), so a send in flight
//! finishes with the key it started with.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use arc_swap::ArcSwap;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};
use url::Url;

use crate::{
    message::{Content, Message, MessageType},
    qikchat::{Qikchat, Upstream},
    ratelimit::Rate,
};

pub mod limits;
mod rule;

pub use rule::{Refusal, Rule};

/// The account `QIKCHAT_API_KEY` / `QIKCHAT_API_KEY_FILE` configure, and callers' default.
pub const DEFAULT_ACCOUNT: &str = "default";

/// Where the policy comes from; everything in it is read again on a reload.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `RELAY_CLIENTS_FILE`: when set, `RELAY_CLIENTS` is not.
    pub clients_file: Option<PathBuf>,
    /// `RELAY_CLIENTS`, already parsed (it cannot change without a restart).
    pub clients: Vec<CallerToken>,
    pub allow_anonymous: bool,
    /// The default account's key: `QIKCHAT_API_KEY` (fixed) or `QIKCHAT_API_KEY_FILE` (re-read).
    pub default_key: KeySource,
    pub base_url: Url,
    pub timeout: Duration,
    /// Sandbox mode: no keys are read and Qikchat is never called.
    pub sandbox: bool,
    /// The environment at start, for `key_env` (values are secrets).
    pub env: Arc<BTreeMap<String, SecretString>>,
}

#[derive(Debug, Clone)]
pub enum KeySource {
    None,
    Inline(SecretString),
    File(PathBuf),
}

/// One caller from `RELAY_CLIENTS`: its name and the SHA-256 of its token (the token itself is not
/// kept, so it cannot leak from memory dumps or `Debug` output).
#[derive(Clone, PartialEq, Eq)]
pub struct CallerToken {
    pub name: String,
    pub token_sha256: [u8; 32],
}

impl std::fmt::Debug for CallerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerToken")
            .field("name", &self.name)
            .field("token_sha256", &"[redacted]")
            .finish()
    }
}

/// What a caller may do. An absent rule allows everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub name: Arc<str>,
    pub account: String,
    pub types: Option<BTreeSet<MessageType>>,
    pub templates: Option<BTreeSet<String>>,
    pub destinations: Option<Vec<String>>,
    pub rate: Option<Rate>,
    pub daily_quota: Option<u64>,
    /// This caller's sends in flight at most (`max_in_flight`), counted by [`InFlight`].
    pub max_in_flight: Option<u32>,
    /// `GET /messages/{id}` answers for every message of the caller's account, not only its own
    /// (`read_any_status`, for a support tool).
    pub read_any_status: bool,
    /// Where this caller receives statuses of its messages and customers' messages.
    pub webhooks: Option<Subscriber>,
}

/// A caller's webhook subscriber: its URLs and its signing secret (`whsec_` + base64).
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub statuses: Option<Url>,
    pub inbound: Option<Url>,
    /// Which of its account's customer messages `inbound` gets.
    pub inbound_filter: InboundFilter,
    /// The HMAC key: the secret's base64 part, decoded.
    pub key: SecretBytes,
}

/// Narrows the customer messages an inbound subscriber gets (`inbound_keywords`,
/// `inbound_replies`). Without either, it gets every message to its account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundFilter {
    /// Messages whose first word is one of these, as [`InboundFilter::word`] reads it.
    pub keywords: BTreeSet<String>,
    /// Messages from customers this caller was the last to send to (within
    /// `RELAY_MESSAGE_OWNER_TTL_S`).
    pub replies: bool,
}

impl InboundFilter {
    /// Whether a message with `first_word`, from a customer this caller was (or was not) the
    /// last to send to, is for this subscriber.
    pub fn wants(&self, first_word: Option<&str>, replies_to_this_caller: bool) -> bool {
        if self.keywords.is_empty() && !self.replies {
            return true;
        }
        first_word.is_some_and(|word| self.keywords.contains(word))
            || (self.replies && replies_to_this_caller)
    }

    /// A text's first word, the way keywords are compared: punctuation around it dropped,
    /// lowercase (`"STOP!"`, `"Stop please"` and `"stop"` all give `stop`).
    pub fn word(text: &str) -> Option<String> {
        let word = text
            .split_whitespace()
            .next()?
            .trim_matches(|c: char| c.is_ascii_punctuation());
        (!word.is_empty()).then(|| word.to_lowercase())
    }
}

/// Key bytes that `Debug` does not print.
#[derive(Clone)]
pub struct SecretBytes(pub Arc<[u8]>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl PartialEq for Subscriber {
    fn eq(&self, other: &Self) -> bool {
        self.statuses == other.statuses
            && self.inbound == other.inbound
            && self.inbound_filter == other.inbound_filter
            && self.key.0 == other.key.0
    }
}

impl Eq for Subscriber {}

/// Reads `[clients.<name>.webhooks]`; a `secret_file` goes into the fingerprint (re-read on change).
fn subscriber(
    hooks: FileWebhooks,
    field: &dyn Fn(&str) -> String,
    fingerprint: &mut Sha256,
) -> Result<Subscriber, PolicyError> {
    let url = |key: &str, value: Option<String>| -> Result<Option<Url>, PolicyError> {
        value
            .map(|v| {
                Url::parse(&v)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        problem(
                            field(&format!("webhooks.{key}")),
                            "must be an http or https URL",
                        )
                    })
            })
            .transpose()
    };
    let statuses = url("statuses", hooks.statuses)?;
    let inbound = url("inbound", hooks.inbound)?;
    let secret = match (hooks.secret, hooks.secret_file) {
        (Some(_), Some(_)) => {
            return Err(problem(
                field("webhooks.secret"),
                "set secret or secret_file, not both",
            ));
        }
        (Some(secret), None) => secret,
        (None, Some(path)) => {
            let source = field("webhooks.secret_file");
            let content = std::fs::read(&path)
                .map_err(|e| problem(&source, format!("cannot read {}: {e}", path.display())))?;
            fingerprint.update(path.as_os_str().as_encoded_bytes());
            fingerprint.update(&content);
            String::from_utf8(content)
                .map_err(|_| problem(&source, "is not UTF-8"))?
                .trim()
                .to_owned()
        }
        (None, None) => {
            return Err(problem(
                field("webhooks.secret"),
                "subscribers need secret or secret_file, to verify what the relay sends",
            ));
        }
    };
    use base64::Engine as _;
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .filter(|key| (16..=64).contains(&key.len()))
        .ok_or_else(|| {
            problem(
                field("webhooks.secret"),
                "must be whsec_ followed by 16 to 64 bytes in base64 (Standard Webhooks)",
            )
        })?;
    if statuses.is_none() && inbound.is_none() {
        return Err(problem(field("webhooks"), "set statuses, inbound or both"));
    }
    if hooks.inbound_keywords.as_ref().is_some_and(Vec::is_empty) {
        // An empty list would read as "no message"; without the key, every message is meant.
        return Err(problem(
            field("webhooks.inbound_keywords"),
            "needs at least one keyword; leave it out for every message",
        ));
    }
    let mut keywords = BTreeSet::new();
    for keyword in hooks.inbound_keywords.unwrap_or_default() {
        match InboundFilter::word(&keyword) {
            Some(word) if keyword.split_whitespace().count() == 1 && word.chars().count() <= 64 => {
                keywords.insert(word);
            }
            _ => {
                return Err(problem(
                    field("webhooks.inbound_keywords"),
                    format!("{keyword:?} is not a keyword: one word of at most 64 characters"),
                ));
            }
        }
    }
    let inbound_filter = InboundFilter {
        keywords,
        replies: hooks.inbound_replies.unwrap_or(false),
    };
    if inbound.is_none() && inbound_filter != InboundFilter::default() {
        return Err(problem(
            field("webhooks.inbound"),
            "is needed by inbound_keywords and inbound_replies: they narrow what it gets",
        ));
    }
    Ok(Subscriber {
        statuses,
        inbound,
        inbound_filter,
        key: SecretBytes(Arc::from(key)),
    })
}

impl Rules {
    fn unrestricted(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            account: DEFAULT_ACCOUNT.to_owned(),
            types: None,
            templates: None,
            destinations: None,
            rate: None,
            daily_quota: None,
            max_in_flight: None,
            read_any_status: false,
            webhooks: None,
        }
    }

    /// Refuses a message outside the caller's types, templates or destinations, naming the rule.
    pub fn permit(&self, message: &Message) -> Result<(), Refusal> {
        let message_type = message.content.message_type();
        if let Some(types) = &self.types {
            if !types.contains(&message_type) {
                return Err(self.forbidden(
                    Rule::Types,
                    format!("may not send {} messages", message_type.as_str()),
                ));
            }
        }
        if let (Some(templates), Content::Template(template)) = (&self.templates, &message.content)
        {
            if !templates.contains(&template.name) {
                return Err(self.forbidden(
                    Rule::Templates,
                    format!("may not use the template {:?}", template.name),
                ));
            }
        }
        if let Some(prefixes) = &self.destinations {
            let to = message.to.as_str();
            if !prefixes
                .iter()
                .any(|prefix| to.starts_with(prefix.as_str()))
            {
                return Err(self.forbidden(
                    Rule::Destinations,
                    format!(
                        "may not send to {} (allowed: numbers starting with {})",
                        message.to.masked(),
                        prefixes.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn forbidden(&self, rule: Rule, what: String) -> Refusal {
        Refusal::Forbidden {
            rule,
            detail: format!("caller {} {what} (rule: {rule})", self.name),
        }
    }
}

/// A Qikchat account as the callers file describes it, its key read.
#[derive(Debug, Clone)]
pub struct AccountSpec {
    pub name: String,
    /// `None` in sandbox mode.
    pub key: Option<SecretString>,
    pub base_url: Url,
    /// WhatsApp's per-number throughput: sends per second through this account.
    pub rate: Option<Rate>,
    /// WhatsApp's pair rate: sends to one recipient.
    pub recipient_rate: Option<Rate>,
}

impl PartialEq for AccountSpec {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.key.as_ref().map(ExposeSecret::expose_secret)
                == other.key.as_ref().map(ExposeSecret::expose_secret)
            && self.base_url == other.base_url
            && self.rate == other.rate
            && self.recipient_rate == other.recipient_rate
    }
}

/// A checked policy: callers with their token hashes and rules, and the accounts they use.
#[derive(Debug, Clone)]
pub struct Spec {
    pub callers: Vec<([u8; 32], Rules)>,
    pub allow_anonymous: bool,
    pub accounts: BTreeMap<String, AccountSpec>,
}

/// Why a policy could not be loaded, worded for one log or start-up line. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {problem}")]
pub struct PolicyError {
    /// The variable or file the problem is in.
    pub source_name: String,
    pub problem: String,
}

fn problem(source: impl Into<String>, problem: impl Into<String>) -> PolicyError {
    PolicyError {
        source_name: source.into(),
        problem: problem.into(),
    }
}

/// Identifies the content of every file a policy was read from: a reload happens when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

/// The callers file, as written (README, "Callers and limits").
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    accounts: BTreeMap<String, FileAccount>,
    #[serde(default)]
    clients: BTreeMap<String, FileClient>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAccount {
    key_file: Option<PathBuf>,
    key_env: Option<String>,
    base_url: Option<String>,
    rate_per_second: Option<u32>,
    recipient_burst: Option<u32>,
    recipient_interval_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWebhooks {
    statuses: Option<String>,
    inbound: Option<String>,
    inbound_keywords: Option<Vec<String>>,
    inbound_replies: Option<bool>,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileClient {
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
    webhooks: Option<FileWebhooks>,
}

/// Reads and checks everything the sources name.
pub fn load(sources: &Sources) -> Result<(Spec, Fingerprint), PolicyError> {
    let mut fingerprint = Sha256::new();
    let default_key = match &sources.default_key {
        _ if sources.sandbox => None,
        KeySource::None => None,
        KeySource::Inline(key) => Some(key.clone()),
        KeySource::File(path) => Some(read_key("QIKCHAT_API_KEY_FILE", path, &mut fingerprint)?),
    };
    let default_account = |key| AccountSpec {
        name: DEFAULT_ACCOUNT.to_owned(),
        key,
        base_url: sources.base_url.clone(),
        rate: None,
        recipient_rate: None,
    };

    let Some(path) = &sources.clients_file else {
        let callers: Vec<_> = sources
            .clients
            .iter()
            .map(|c| (c.token_sha256, Rules::unrestricted(&c.name)))
            .collect();
        check_some_caller(callers.is_empty(), sources.allow_anonymous, "RELAY_CLIENTS")?;
        let mut accounts = BTreeMap::new();
        if default_key.is_some() || sources.sandbox {
            accounts.insert(DEFAULT_ACCOUNT.to_owned(), default_account(default_key));
        } else {
            return Err(problem(
                "QIKCHAT_API_KEY",
                "is required (or QIKCHAT_API_KEY_FILE, or RELAY_SANDBOX=true to run without Qikchat)",
            ));
        }
        let spec = Spec {
            callers,
            allow_anonymous: sources.allow_anonymous,
            accounts,
        };
        return Ok((spec, Fingerprint(fingerprint.finalize().into())));
    };

    let name = "RELAY_CLIENTS_FILE";
    let text = std::fs::read_to_string(path)
        .map_err(|e| problem(name, format!("cannot read {}: {e}", path.display())))?;
    fingerprint.update(path.as_os_str().as_encoded_bytes());
    fingerprint.update(text.as_bytes());
    let at = |field: String| format!("{name} ({}): {field}", path.display());
    let file: File = toml::from_str(&text).map_err(|e| {
        // toml's message quotes the offending line, which could hold an inline token.
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        problem(
            at(line.map_or_else(String::new, |l| format!("line {l}"))),
            e.message().to_owned(),
        )
    })?;

    let mut accounts = BTreeMap::new();
    for (account, spec) in file.accounts {
        let field = |f: &str| at(format!("accounts.{account}.{f}"));
        let key = match (&spec.key_file, &spec.key_env) {
            _ if sources.sandbox => None,
            (Some(_), Some(_)) => {
                return Err(problem(
                    field("key_file"),
                    "set key_file or key_env, not both",
                ));
            }
            (Some(path), None) => Some(read_key(&field("key_file"), path, &mut fingerprint)?),
            (None, Some(variable)) => {
                let key = sources
                    .env
                    .get(variable)
                    .ok_or_else(|| problem(field("key_env"), format!("{variable} is not set")))?;
                Some(check_key(&field("key_env"), key.expose_secret())?)
            }
            (None, None) if account == DEFAULT_ACCOUNT && default_key.is_some() => {
                default_key.clone()
            }
            (None, None) => {
                return Err(problem(
                    field("key_file"),
                    "every account needs key_file or key_env",
                ));
            }
        };
        if account == DEFAULT_ACCOUNT
            && (spec.key_file.is_some() || spec.key_env.is_some())
            && !matches!(sources.default_key, KeySource::None)
        {
            return Err(problem(
                field("key_file"),
                "the default account's key is set here and by QIKCHAT_API_KEY(_FILE); keep one",
            ));
        }
        let base_url = match &spec.base_url {
            None => sources.base_url.clone(),
            Some(url) => Url::parse(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| problem(field("base_url"), "must be an http or https URL"))?,
        };
        let rate = spec
            .rate_per_second
            .map(|n| positive_u32(&field("rate_per_second"), n).map(Rate::per_second))
            .transpose()?;
        let recipient_rate = match (spec.recipient_burst, spec.recipient_interval_ms) {
            (None, None) => None,
            (burst, Some(interval)) => {
                let burst = positive_u32(&field("recipient_burst"), burst.unwrap_or(1))?;
                if interval == 0 {
                    return Err(problem(
                        field("recipient_interval_ms"),
                        "must be at least 1",
                    ));
                }
                Some(Rate::every(Duration::from_millis(interval), burst))
            }
            (Some(_), None) => {
                return Err(problem(
                    field("recipient_interval_ms"),
                    "is required with recipient_burst",
                ));
            }
        };
        accounts.insert(
            account.clone(),
            AccountSpec {
                name: account,
                key,
                base_url,
                rate,
                recipient_rate,
            },
        );
    }
    if !accounts.contains_key(DEFAULT_ACCOUNT) && (default_key.is_some() || sources.sandbox) {
        accounts.insert(DEFAULT_ACCOUNT.to_owned(), default_account(default_key));
    }

    let mut callers = Vec::new();
    let mut tokens = BTreeSet::new();
    for (client, spec) in file.clients {
        let field = |f: &str| at(format!("clients.{client}.{f}"));
        if !valid_name(&client) {
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
            Some(hooks) => Some(subscriber(hooks, &field, &mut fingerprint)?),
        };
        callers.push((
            token_sha256,
            Rules {
                name: Arc::from(client.as_str()),
                account,
                types,
                templates: spec.templates.map(|t| t.into_iter().collect()),
                destinations,
                rate,
                daily_quota: spec.daily_quota,
                max_in_flight,
                read_any_status: spec.read_any_status.unwrap_or(false),
                webhooks,
            },
        ));
    }
    check_some_caller(callers.is_empty(), sources.allow_anonymous, name)?;
    if sources.allow_anonymous && !accounts.contains_key(DEFAULT_ACCOUNT) {
        return Err(problem(
            "RELAY_ALLOW_ANONYMOUS",
            "anonymous callers send through the default account, and there is none",
        ));
    }
    let spec = Spec {
        callers,
        allow_anonymous: sources.allow_anonymous,
        accounts,
    };
    Ok((spec, Fingerprint(fingerprint.finalize().into())))
}

fn check_some_caller(none: bool, anonymous: bool, source: &str) -> Result<(), PolicyError> {
    if none && !anonymous {
        return Err(problem(
            source,
            "no callers are configured; set RELAY_CLIENTS=name:token,... (or clients in RELAY_CLIENTS_FILE) or RELAY_ALLOW_ANONYMOUS=true",
        ));
    }
    Ok(())
}

/// Reads a key file; the file's path and content go into the fingerprint.
fn read_key(
    source: &str,
    path: &Path,
    fingerprint: &mut Sha256,
) -> Result<SecretString, PolicyError> {
    let content = std::fs::read(path)
        .map_err(|e| problem(source, format!("cannot read {}: {e}", path.display())))?;
    fingerprint.update(path.as_os_str().as_encoded_bytes());
    fingerprint.update(&content);
    let content = String::from_utf8(content)
        .map_err(|_| problem(source, format!("{} is not UTF-8", path.display())))?;
    check_key(source, &content)
}

/// A key must travel in an HTTP header: printable ASCII without spaces, once trimmed.
pub fn check_key(source: &str, key: &str) -> Result<SecretString, PolicyError> {
    let key = key.trim();
    if key.is_empty() {
        return Err(problem(source, "the key is empty"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(problem(
            source,
            "the key must be printable ASCII without spaces",
        ));
    }
    Ok(SecretString::from(key))
}

/// The shortest token a caller or the operator may be given (caller tokens, `RELAY_ADMIN_TOKEN`).
pub const MIN_TOKEN_LEN: usize = 16;

/// A caller's name, in `RELAY_CLIENTS` or the callers file: 1 to 64 of `A-Z a-z 0-9 - _ .`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
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

fn positive_u32(source: &str, value: u32) -> Result<u32, PolicyError> {
    if value == 0 {
        return Err(problem(source, "must be at least 1"));
    }
    Ok(value)
}

/// An account ready to send: its spec and its upstream.
pub struct Account {
    pub spec: AccountSpec,
    pub upstream: Upstream,
}

/// Who sends, with the policy in force when the send arrived: a reload in the middle of a send
/// changes nothing for it.
#[derive(Clone)]
pub struct Caller {
    pub name: Arc<str>,
    pub rules: Arc<Rules>,
    pub policy: Arc<Policy>,
}

impl Caller {
    /// The Qikchat account this caller sends through.
    pub fn account(&self) -> Result<Arc<Account>, Refusal> {
        self.policy.account(&self.rules)
    }
}

/// The name logged for requests in `RELAY_ALLOW_ANONYMOUS` mode that carry no token.
pub const ANONYMOUS: &str = "anonymous";

/// What requests use: the callers, and one upstream per account.
pub struct Policy {
    pub callers: Vec<([u8; 32], Arc<Rules>)>,
    pub anonymous: Option<Arc<Rules>>,
    pub accounts: BTreeMap<String, Arc<Account>>,
    /// Callers' sends in flight, handed from each policy to the next one a reload builds.
    pub in_flight: Arc<InFlight>,
}

/// The sends in flight of each caller that has `max_in_flight`, by name. One count outlives every
/// reload (each new [`Policy`] takes it over), so a send that started before a reload gives its
/// slot back to the count the next policy checks, and a caller whose limit was lowered is held to
/// it at once.
#[derive(Debug, Default)]
pub struct InFlight {
    counts: Mutex<HashMap<Arc<str>, u32>>,
}

impl InFlight {
    /// One more send of `caller`, or `None` when it has `max` in flight already.
    pub fn take(self: &Arc<Self>, caller: &Arc<str>, max: u32) -> Option<Slot> {
        let mut counts = self.lock();
        let count = counts.entry(caller.clone()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            counts: self.clone(),
            caller: caller.clone(),
        })
    }

    /// The caller's sends in flight now.
    pub fn of(&self, caller: &str) -> u32 {
        self.lock().get(caller).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, u32>> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One send in flight of a caller; dropping it gives the slot back (the entry goes with the last
/// one, so callers removed by a reload leave nothing behind).
#[derive(Debug)]
pub struct Slot {
    counts: Arc<InFlight>,
    caller: Arc<str>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(&self.caller) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.caller);
            }
        }
    }
}

impl Policy {
    /// Builds the upstreams; an account whose spec did not change keeps its client (and its
    /// pooled connections) from `previous`.
    pub fn build(
        spec: Spec,
        previous: Option<&Policy>,
        timeout: Duration,
    ) -> Result<Self, PolicyError> {
        let mut accounts = BTreeMap::new();
        for (name, account) in spec.accounts {
            let kept = previous
                .and_then(|p| p.accounts.get(&name))
                .filter(|old| old.spec == account)
                .cloned();
            let account = match kept {
                Some(kept) => kept,
                None => {
                    let upstream = match &account.key {
                        Some(key) => Upstream::Live(
                            Qikchat::new(account.base_url.clone(), key.clone(), timeout).map_err(
                                |e| {
                                    problem(
                                        format!("accounts.{name}"),
                                        format!("cannot create the HTTP client: {e}"),
                                    )
                                },
                            )?,
                        ),
                        None => Upstream::Sandbox,
                    };
                    Arc::new(Account {
                        spec: account,
                        upstream,
                    })
                }
            };
            accounts.insert(name, account);
        }
        Ok(Self {
            callers: spec
                .callers
                .into_iter()
                .map(|(hash, rules)| (hash, Arc::new(rules)))
                .collect(),
            anonymous: spec
                .allow_anonymous
                .then(|| Arc::new(Rules::unrestricted(ANONYMOUS))),
            accounts,
            in_flight: previous.map(|p| p.in_flight.clone()).unwrap_or_default(),
        })
    }

    /// The caller called `name`, as a token would authenticate it: for sends made without a
    /// request (a worker, a test).
    pub fn caller(self: &Arc<Self>, name: &str) -> Option<Caller> {
        let rules = self
            .callers
            .iter()
            .map(|(_, rules)| rules)
            .chain(&self.anonymous)
            .find(|rules| &*rules.name == name)?;
        Some(Caller {
            name: rules.name.clone(),
            rules: rules.clone(),
            policy: self.clone(),
        })
    }

    /// The account a caller sends through. Checked when the policy was loaded, so missing only
    /// if a reload removed it between authentication and use.
    pub fn account(&self, rules: &Rules) -> Result<Arc<Account>, Refusal> {
        self.accounts
            .get(&rules.account)
            .cloned()
            .ok_or_else(|| Refusal::Forbidden {
                rule: Rule::Account,
                detail: format!(
                    "caller {} sends through account {}, which is not configured (rule: {})",
                    rules.name,
                    rules.account,
                    Rule::Account
                ),
            })
    }
}

/// The policy in force, and how to replace it.
pub struct Live {
    current: ArcSwap<Policy>,
    sources: Sources,
    timeout: Duration,
    state: std::sync::Mutex<Reloads>,
}

/// What the last reloads saw, so an unchanged file is not rebuilt and a broken one is logged once.
struct Reloads {
    fingerprint: Fingerprint,
    last_error: Option<PolicyError>,
}

impl Live {
    /// Loads the policy for the first time; an error here stops the relay.
    pub fn start(sources: Sources, timeout: Duration) -> Result<Self, PolicyError> {
        let (spec, fingerprint) = load(&sources)?;
        let policy = Policy::build(spec, None, timeout)?;
        Ok(Self {
            current: ArcSwap::from_pointee(policy),
            sources,
            timeout,
            state: std::sync::Mutex::new(Reloads {
                fingerprint,
                last_error: None,
            }),
        })
    }

    /// The policy of this moment. A request keeps it to its end, whatever reloads meanwhile.
    pub fn current(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Reads the sources again and swaps in the result if anything changed. A source that fails
    /// to load leaves the running policy in place; the failure is logged once, not on every try.
    pub fn reload(&self, reason: &'static str) {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        let loaded = load(&self.sources).and_then(|(spec, fingerprint)| {
            if fingerprint == state.fingerprint {
                return Ok(None);
            }
            let current = self.current();
            Policy::build(spec, Some(&current), self.timeout).map(|p| Some((p, fingerprint)))
        });
        match loaded {
            Ok(Some((policy, fingerprint))) => {
                let accounts: Vec<&str> = policy.accounts.keys().map(String::as_str).collect();
                info!(
                    reason,
                    callers = policy.callers.len(),
                    accounts = accounts.join(","),
                    "configuration reloaded"
                );
                self.current.store(Arc::new(policy));
                state.fingerprint = fingerprint;
                state.last_error = None;
            }
            Ok(None) => {
                if reason == "SIGHUP" {
                    info!(reason, "configuration unchanged");
                }
                state.last_error = None;
            }
            Err(e) => {
                if state.last_error.as_ref() != Some(&e) || reason == "SIGHUP" {
                    error!(reason, error = %e, "configuration not reloaded; the previous one stays in force");
                }
                state.last_error = Some(e);
            }
        }
    }

    /// Whether anything can change: files to watch.
    pub fn watches_files(&self) -> bool {
        self.sources.clients_file.is_some()
            || matches!(self.sources.default_key, KeySource::File(_))
    }

    /// Re-reads the sources every `every` and on SIGHUP, on `tasks`, until `stop` is cancelled.
    /// Polling reads the files through their path, so a Kubernetes secret update (a symlink
    /// swapped to a new directory) is seen like any other change.
    pub fn watch(
        self: Arc<Self>,
        every: Duration,
        tasks: &tokio_util::task::TaskTracker,
        stop: tokio_util::sync::CancellationToken,
    ) {
        // Installed before this returns: from then on SIGHUP reloads, instead of ending the
        // process as it does by default.
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(e) => {
                warn!(error = %e, "no SIGHUP handler; files are still re-read when they change");
                None
            }
        };
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                let reason = tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => "changed",
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(signal) => signal.recv().await,
                            None => std::future::pending().await,
                        }
                    } => "SIGHUP",
                };
                if reason == "changed" && !self.watches_files() {
                    continue;
                }
                let live = self.clone();
                // File reads and building HTTP clients block; keep them off the request threads.
                let _ = tokio::task::spawn_blocking(move || live.reload(reason)).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{InFlight, InboundFilter};

    #[test]
    fn a_callers_slots_are_its_own_and_each_comes_back_when_its_send_is_over() {
        let in_flight = Arc::new(InFlight::default());
        let billing: Arc<str> = Arc::from("billing");
        let alerts: Arc<str> = Arc::from("alerts");
        let first = in_flight.take(&billing, 2).expect("one of two");
        let second = in_flight.take(&billing, 2).expect("two of two");
        assert!(in_flight.take(&billing, 2).is_none(), "a third is refused");
        let other = in_flight
            .take(&alerts, 1)
            .expect("another caller has its own");
        assert_eq!(in_flight.of("billing"), 2);
        drop(first);
        let third = in_flight.take(&billing, 2).expect("a slot came back");
        drop((second, third, other));
        assert_eq!(in_flight.of("billing"), 0);
        assert!(
            in_flight.counts.lock().expect("lock").is_empty(),
            "no entry is left behind"
        );
    }

    #[test]
    fn a_keyword_is_the_first_word_without_case_or_surrounding_punctuation() {
        for text in ["STOP", "stop!", "  Stop, please", "\"stop\"\nthanks"] {
            assert_eq!(
                InboundFilter::word(text).as_deref(),
                Some("stop"),
                "{text:?}"
            );
        }
        assert_eq!(InboundFilter::word("É bom").as_deref(), Some("é"));
        for text in ["", "   ", "!!!"] {
            assert_eq!(InboundFilter::word(text), None, "{text:?}");
        }
    }

    #[test]
    fn a_subscriber_without_a_filter_gets_everything_and_with_one_what_matches_either_part() {
        let all = InboundFilter::default();
        assert!(all.wants(None, false));
        let keywords = InboundFilter {
            keywords: ["stop".to_owned()].into(),
            replies: false,
        };
        assert!(keywords.wants(Some("stop"), false));
        assert!(!keywords.wants(Some("hello"), true));
        assert!(!keywords.wants(None, false));
        let replies = InboundFilter {
            replies: true,
            ..keywords.clone()
        };
        assert!(replies.wants(Some("hello"), true));
        assert!(replies.wants(Some("stop"), false));
        assert!(!replies.wants(Some("hello"), false));
    }
}
