//! Where the policy comes from ([`Sources`], which the configuration hands over) and [`load`],
//! which reads and checks it into a [`Spec`]: the default key, `RELAY_CLIENTS` or the callers
//! file with its `[accounts]` (each of its `[clients]` is checked in `client.rs`), and the
//! [`Fingerprint`] of every file read.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use url::Url;

use super::check::{check_key, http_url, positive_u32, read_key};
use super::client::{self, FileClient};
use super::templates::{self, FileTemplate, Mode as TemplateMode, Templates};
use super::{AccountSpec, DEFAULT_ACCOUNT, OptKeywords, PolicyError, Rules, Spec, problem};
use crate::ratelimit::Rate;

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
    /// `RELAY_TEMPLATES`: whether a template the callers file does not declare is sent.
    pub templates: TemplateMode,
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

/// Identifies the content of every file a policy was read from: a reload happens when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

/// The callers file, as written (docs/callers-and-limits.md).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    accounts: BTreeMap<String, FileAccount>,
    #[serde(default)]
    clients: BTreeMap<String, FileClient>,
    #[serde(default)]
    templates: BTreeMap<String, FileTemplate>,
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
    opt_out_keywords: Option<Vec<String>>,
    opt_in_keywords: Option<Vec<String>>,
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
        keywords: OptKeywords::default(),
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
            templates: Templates {
                mode: sources.templates,
                declared: BTreeMap::new(),
            },
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
            Some(url) => http_url(url)
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
        let keywords = opt_keywords(&spec, &field)?;
        accounts.insert(
            account.clone(),
            AccountSpec {
                name: account,
                key,
                base_url,
                rate,
                recipient_rate,
                keywords,
            },
        );
    }
    if !accounts.contains_key(DEFAULT_ACCOUNT) && (default_key.is_some() || sources.sandbox) {
        accounts.insert(DEFAULT_ACCOUNT.to_owned(), default_account(default_key));
    }

    let mut callers = Vec::new();
    let mut tokens = BTreeSet::new();
    for (client, spec) in file.clients {
        callers.push(client::caller(
            &client,
            spec,
            &accounts,
            &mut tokens,
            &at,
            &mut fingerprint,
        )?);
    }
    check_some_caller(callers.is_empty(), sources.allow_anonymous, name)?;
    if sources.allow_anonymous && !accounts.contains_key(DEFAULT_ACCOUNT) {
        return Err(problem(
            "RELAY_ALLOW_ANONYMOUS",
            "anonymous callers send through the default account, and there is none",
        ));
    }
    let mut declared = BTreeMap::new();
    for (template, spec) in file.templates {
        let declaration = templates::declaration(&template, spec, &accounts, &at)?;
        declared.insert(template, declaration);
    }
    let spec = Spec {
        callers,
        allow_anonymous: sources.allow_anonymous,
        accounts,
        templates: Templates {
            mode: sources.templates,
            declared,
        },
    };
    Ok((spec, Fingerprint(fingerprint.finalize().into())))
}

/// An account's `opt_out_keywords` and `opt_in_keywords`, each the default when absent: words or
/// short phrases, none in both lists.
fn opt_keywords(
    spec: &FileAccount,
    field: &dyn Fn(&str) -> String,
) -> Result<OptKeywords, PolicyError> {
    let read = |name: &str, given: &Option<Vec<String>>, default: BTreeSet<String>| {
        let Some(given) = given else {
            return Ok(default);
        };
        given
            .iter()
            .map(|keyword| {
                let keyword = keyword.trim().to_lowercase();
                if keyword.is_empty() || keyword.chars().count() > 64 {
                    Err(problem(
                        field(name),
                        "each keyword is 1 to 64 characters (compared trimmed, without case)",
                    ))
                } else {
                    Ok(keyword)
                }
            })
            .collect()
    };
    let defaults = OptKeywords::default();
    let keywords = OptKeywords {
        opt_out: read("opt_out_keywords", &spec.opt_out_keywords, defaults.opt_out)?,
        opt_in: read("opt_in_keywords", &spec.opt_in_keywords, defaults.opt_in)?,
    };
    if let Some(both) = keywords.opt_out.intersection(&keywords.opt_in).next() {
        return Err(problem(
            field("opt_in_keywords"),
            format!("{both:?} is also in opt_out_keywords: a keyword opts out or in, not both"),
        ));
    }
    Ok(keywords)
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
