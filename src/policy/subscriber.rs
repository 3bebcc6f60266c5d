//! A caller's webhook subscriber ([`Subscriber`]: its URLs, its [`InboundFilter`], its signing
//! key) and how the callers file declares it, in `[clients.<name>.webhooks]`.

use std::{collections::BTreeSet, path::PathBuf, sync::Arc};

use serde::Deserialize;
use sha2::Sha256;
use url::Url;

use super::check::{http_url, read_file};
use super::{PolicyError, problem};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileWebhooks {
    statuses: Option<String>,
    inbound: Option<String>,
    inbound_keywords: Option<Vec<String>>,
    inbound_replies: Option<bool>,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
}

/// Reads `[clients.<name>.webhooks]`; a `secret_file` goes into the fingerprint (re-read on change).
pub(super) fn subscriber(
    hooks: FileWebhooks,
    field: &dyn Fn(&str) -> String,
    fingerprint: &mut Sha256,
) -> Result<Subscriber, PolicyError> {
    let url = |key: &str, value: Option<String>| -> Result<Option<Url>, PolicyError> {
        value
            .map(|v| {
                http_url(&v).ok_or_else(|| {
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
            let content = read_file(&source, &path, fingerprint)?;
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

#[cfg(test)]
mod tests {
    use super::InboundFilter;

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
