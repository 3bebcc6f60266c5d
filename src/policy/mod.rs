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
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::{
    message::{Content, Message, MessageType},
    qikchat::{Qikchat, Upstream},
    ratelimit::Rate,
};

mod check;
mod client;
mod in_flight;
pub mod limits;
mod live;
mod rule;
mod sources;
mod subscriber;
mod templates;

pub use check::{MIN_TOKEN_LEN, check_key, valid_name};
pub use in_flight::{InFlight, Slot};
pub use live::Live;
pub use rule::{Refusal, Rule};
pub use sources::{CallerToken, Fingerprint, KeySource, Sources, load};
pub use subscriber::{InboundFilter, SecretBytes, Subscriber};
pub use templates::{
    BodyShape, ButtonKind, Declaration, HeaderKind, Mode as TemplateMode, TemplateRefusal,
    Templates,
};

/// The account `QIKCHAT_API_KEY` / `QIKCHAT_API_KEY_FILE` configure, and callers' default.
pub const DEFAULT_ACCOUNT: &str = "default";

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
    /// Sends to customers on the account's opt-out list too (`ignore_opt_out`): for a caller
    /// that sends only what the customer asked for, such as one-time passwords.
    pub ignore_opt_out: bool,
    /// Where this caller receives statuses of its messages and customers' messages.
    pub webhooks: Option<Subscriber>,
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
            ignore_opt_out: false,
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
    /// What a customer writes to leave or rejoin the account's messages (`opt_out_keywords`,
    /// `opt_in_keywords`).
    pub keywords: OptKeywords,
}

/// An account's opt-out and opt-in keywords, kept trimmed and in lower case: a customer's
/// message opts them out or in when all of it, trimmed and without case, is one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptKeywords {
    pub opt_out: BTreeSet<String>,
    pub opt_in: BTreeSet<String>,
}

impl Default for OptKeywords {
    /// WhatsApp's own advice: STOP and UNSUBSCRIBE to leave, START to come back.
    fn default() -> Self {
        Self {
            opt_out: ["stop", "unsubscribe"].map(str::to_owned).into(),
            opt_in: ["start"].map(str::to_owned).into(),
        }
    }
}

impl OptKeywords {
    /// What a customer's message `text` does to their place on the list: `Some(true)` opts them
    /// out, `Some(false)` in, `None` neither (any other message, even one that contains a
    /// keyword: "please don't stop" is not a STOP).
    pub fn change(&self, text: &str) -> Option<bool> {
        let said = text.trim().to_lowercase();
        if self.opt_out.contains(&said) {
            Some(true)
        } else if self.opt_in.contains(&said) {
            Some(false)
        } else {
            None
        }
    }
}

impl PartialEq for AccountSpec {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.key.as_ref().map(ExposeSecret::expose_secret)
                == other.key.as_ref().map(ExposeSecret::expose_secret)
            && self.base_url == other.base_url
            && self.rate == other.rate
            && self.recipient_rate == other.recipient_rate
            && self.keywords == other.keywords
    }
}

/// A checked policy: callers with their token hashes and rules, and the accounts they use.
#[derive(Debug, Clone)]
pub struct Spec {
    pub callers: Vec<([u8; 32], Rules)>,
    pub allow_anonymous: bool,
    pub accounts: BTreeMap<String, AccountSpec>,
    /// The callers file's `[templates.*]`, and `RELAY_TEMPLATES`.
    pub templates: Templates,
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
    /// What each declared template takes: a send is checked against the policy it arrived in.
    pub templates: Templates,
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
            templates: spec.templates,
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
