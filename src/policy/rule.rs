//! What a caller's policy refuses, and by which rule: one [`Rule`] per setting of the callers file
//! that can turn a send away (and the account's opt-out list), named as callers see it in a problem's `rule`, in logs and in
//! `relay_rejections_total{reason}`.

/// A setting of the callers file that can refuse a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The caller's `types`.
    Types,
    /// The caller's `templates`.
    Templates,
    /// The caller's `destinations` (number prefixes).
    Destinations,
    /// The caller's `account`, gone from the policy after a reload.
    Account,
    /// The caller's `max_in_flight`.
    MaxInFlight,
    /// The caller's `rate_per_minute` (and `burst`).
    RatePerMinute,
    /// The caller's `daily_quota`.
    DailyQuota,
    /// The account's `rate_per_second`.
    RatePerSecond,
    /// The account's `recipient_interval_ms` (WhatsApp's pacing per customer).
    RecipientIntervalMs,
    /// The customer is on the account's opt-out list (they wrote an `opt_out_keywords` word,
    /// or an operator put them there); callers with `ignore_opt_out` are not held by it.
    OptedOut,
}

impl Rule {
    /// The rules that answer 429: the relay's own limits.
    pub const LIMITS: [Rule; 4] = [
        Rule::RatePerMinute,
        Rule::DailyQuota,
        Rule::RatePerSecond,
        Rule::RecipientIntervalMs,
    ];

    /// Its name in the callers file, which is also what callers, logs and metrics see.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Types => "types",
            Rule::Templates => "templates",
            Rule::Destinations => "destinations",
            Rule::Account => "account",
            Rule::MaxInFlight => "max_in_flight",
            Rule::RatePerMinute => "rate_per_minute",
            Rule::DailyQuota => "daily_quota",
            Rule::RatePerSecond => "rate_per_second",
            Rule::RecipientIntervalMs => "recipient_interval_ms",
            Rule::OptedOut => "opted_out",
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the policy turned a send away. Nothing was sent; the HTTP layer answers 403, 429 or 503.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// The caller may not send this message.
    #[error("{detail}")]
    Forbidden { rule: Rule, detail: String },
    /// One of the relay's limits is used up for now.
    #[error("{detail}")]
    Limited {
        rule: Rule,
        retry_after_s: u64,
        detail: String,
    },
    /// The limits cannot be checked (Redis does not answer): refused rather than unlimited.
    #[error("the rate limit store is unreachable; nothing was sent")]
    LimitsUnavailable,
}
