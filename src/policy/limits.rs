//! A send against the limits of its caller and its account, before Qikchat is called:
//! the caller's rate (`rate_per_minute`, `burst`) and daily quota (`daily_quota`), then the
//! account's WhatsApp pacing (`rate_per_second`, and `recipient_burst` + `recipient_interval_ms`
//! per recipient). The counting itself is [`crate::ratelimit`]: in memory, or in Redis for all
//! replicas.

use std::time::Duration;

use super::{AccountSpec, Refusal, Rule, Rules};
use crate::{
    message::Recipient,
    ratelimit::{self, Decision, Limiter, Rate},
};

/// The caller's limit as it stands after this request: `RateLimit-Limit`, `RateLimit-Remaining`
/// and `RateLimit-Reset` (seconds), on every answer to a send by a caller with limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitHeaders {
    pub limit: u64,
    pub remaining: u64,
    pub reset_s: u64,
}

impl RateLimitHeaders {
    fn from(decision: &Decision) -> Self {
        Self {
            limit: decision.limit,
            remaining: decision.remaining,
            reset_s: seconds(decision.reset),
        }
    }
}

/// Of two limits, the one closer to running out.
fn tighter(a: Option<RateLimitHeaders>, b: Option<RateLimitHeaders>) -> Option<RateLimitHeaders> {
    match (a, b) {
        (Some(a), Some(b)) if b.remaining < a.remaining => Some(b),
        (Some(a), _) => Some(a),
        (None, b) => b,
    }
}

/// Whole seconds, rounded up: a caller that waits `Retry-After` must find room.
fn seconds(duration: Duration) -> u64 {
    duration.as_millis().div_ceil(1000) as u64
}

/// A refusal and the caller's rate headers as they stand after it.
type Refused = (Refusal, Option<RateLimitHeaders>);

/// Takes one unit from every limit that applies; the first that refuses answers 429 with
/// `Retry-After` and the rule's name. The rates (the caller's, the account's, the recipient's)
/// are taken all together or not at all, so a send refused by one does not use up the others;
/// the daily quota is given back when a rate refuses, so it counts only sends that went on.
pub async fn check(
    limiter: &Limiter,
    rules: &Rules,
    account: &AccountSpec,
    to: &Recipient,
) -> Result<Option<RateLimitHeaders>, Refused> {
    take(limiter, rules, Some((account, to))).await
}

/// The caller's own limits alone (rate and daily quota), as [`check`] takes them: what a message
/// accepted into the outbox counts at acceptance. The account's pacing is its delivery's
/// ([`pace`]).
pub async fn check_caller(
    limiter: &Limiter,
    rules: &Rules,
) -> Result<Option<RateLimitHeaders>, Refused> {
    take(limiter, rules, None).await
}

/// What the account's pacing says of a message the outbox delivers ([`pace`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// It may go now: the pace is taken.
    Go,
    /// It must wait this long first (nothing was taken); `recipient` when the customer's own
    /// interval is what holds it (a wait of seconds, not of one message's turn).
    Wait { wait: Duration, recipient: bool },
}

/// The account's pacing alone (`rate_per_second`, the recipient's interval) for a message the
/// outbox delivers. A paced message waits; it is never refused.
pub async fn pace(
    limiter: &Limiter,
    account: &AccountSpec,
    to: &Recipient,
) -> Result<Pace, Refusal> {
    let paced = pacing(account, to);
    let limits: Vec<(&str, Rate, Rule)> = paced
        .iter()
        .filter_map(|(key, rate, rule)| rate.map(|rate| (key.as_str(), rate, *rule)))
        .collect();
    if limits.is_empty() {
        return Ok(Pace::Go);
    }
    let rates: Vec<(&str, Rate)> = limits.iter().map(|(key, rate, _)| (*key, *rate)).collect();
    let decisions = limiter
        .take_all(&rates)
        .await
        .map_err(|e| unavailable(e).0)?;
    let refused = limits.iter().zip(&decisions).filter(|(_, d)| !d.allowed);
    let mut pace = Pace::Go;
    for ((_, _, rule), decision) in refused {
        let (wait, recipient) = match pace {
            Pace::Wait { wait, recipient } => (wait, recipient),
            Pace::Go => (Duration::ZERO, false),
        };
        pace = Pace::Wait {
            wait: wait.max(decision.retry_after),
            recipient: recipient || *rule == Rule::RecipientIntervalMs,
        };
    }
    Ok(pace)
}

/// [`check`], with the account's pacing only when `account` is given.
async fn take(
    limiter: &Limiter,
    rules: &Rules,
    account: Option<(&AccountSpec, &Recipient)>,
) -> Result<Option<RateLimitHeaders>, Refused> {
    let caller_key = format!("caller:{}", rules.name);
    // The quota's headers and the caller rate's; answers carry the tighter of the two.
    let mut quota_seen = None;

    if let Some(quota) = rules.daily_quota {
        let decision = limiter
            .take_daily(&caller_key, quota)
            .await
            .map_err(unavailable)?;
        quota_seen = Some(RateLimitHeaders::from(&decision));
        if !decision.allowed {
            let detail = format!(
                "caller {} has used its daily quota of {quota}; it resets at 00:00 UTC",
                rules.name
            );
            return Err((limited(Rule::DailyQuota, &decision, detail), quota_seen));
        }
    }

    let paced = account.map(|(account, to)| pacing(account, to));
    let mut rates: Vec<(&str, Rate, Rule)> = Vec::new();
    if let Some(rate) = rules.rate {
        rates.push((&caller_key, rate, Rule::RatePerMinute));
    }
    for (key, rate, rule) in paced.iter().flatten() {
        if let Some(rate) = rate {
            rates.push((key, *rate, *rule));
        }
    }
    if rates.is_empty() {
        return Ok(quota_seen);
    }
    let limits: Vec<(&str, Rate)> = rates.iter().map(|(key, rate, _)| (*key, *rate)).collect();
    let decisions = match limiter.take_all(&limits).await {
        Ok(decisions) => decisions,
        Err(e) => {
            give_back(limiter, rules, &caller_key).await;
            return Err((unavailable(e).0, None));
        }
    };
    let refused = rates
        .iter()
        .zip(&decisions)
        .find(|(_, decision)| !decision.allowed);
    let mut rate_seen = rules
        .rate
        .and(decisions.first())
        .map(RateLimitHeaders::from);
    let Some(((_, rate, rule), decision)) = refused else {
        return Ok(tighter(rate_seen, quota_seen));
    };
    // Nothing was taken after all: what each limit would have taken is still there.
    give_back(limiter, rules, &caller_key).await;
    if let Some(seen) = quota_seen.as_mut() {
        seen.remaining += 1;
    }
    if let (Some(seen), Some(first)) = (rate_seen.as_mut(), decisions.first()) {
        if first.allowed {
            seen.remaining += 1;
        }
    }
    let headers = tighter(rate_seen, quota_seen);
    let detail = match *rule {
        Rule::RatePerMinute => format!(
            "caller {} may send {} a minute (burst {})",
            rules.name,
            per_minute(*rate),
            rate.burst
        ),
        Rule::RatePerSecond => format!(
            "account {} may send {} messages a second",
            account.map_or("", |(account, _)| account.name.as_str()),
            rate.burst
        ),
        _ => format!(
            "{} was sent {} messages in a burst; WhatsApp allows one every {} ms after that",
            account.map_or_else(String::new, |(_, to)| to.masked()),
            rate.burst,
            rate.interval.as_millis()
        ),
    };
    Err((limited(*rule, decision, detail), headers))
}

/// The account's pacing of a send to `to`: its rate and the recipient's, each with its key in the
/// limits store and its rule. Recipients are kept as hashes: the limits store holds no numbers.
fn pacing(account: &AccountSpec, to: &Recipient) -> [(String, Option<Rate>, Rule); 2] {
    [
        (
            format!("account:{}", account.name),
            account.rate,
            Rule::RatePerSecond,
        ),
        (
            format!("recipient:{}:{}", account.name, to.pseudonym()),
            account.recipient_rate,
            Rule::RecipientIntervalMs,
        ),
    ]
}

/// Returns the unit of daily quota a refused send took.
async fn give_back(limiter: &Limiter, rules: &Rules, caller_key: &str) {
    if rules.daily_quota.is_some() {
        // Best effort: if Redis fails here too, the quota counts one send too many.
        if let Err(e) = limiter.give_back_daily(caller_key).await {
            tracing::warn!(error = %e, "a refused send still counts towards its caller's daily quota");
        }
    }
}

fn per_minute(rate: Rate) -> u64 {
    let interval = rate.interval.as_millis().max(1);
    (60_000 + interval / 2).div_euclid(interval) as u64
}

/// `detail` says what was used up; the rule's name is added to it.
fn limited(rule: Rule, decision: &Decision, detail: String) -> Refusal {
    Refusal::Limited {
        retry_after_s: seconds(decision.retry_after).max(1),
        detail: format!("{detail} (rule: {rule})"),
        rule,
    }
}

fn unavailable(e: ratelimit::Error) -> Refused {
    tracing::warn!(error = %e, "refusing a send: its limits cannot be checked");
    (Refusal::LimitsUnavailable, None)
}

/// The caller's rate and quota as they stand, taking nothing: the `RateLimit-*` headers of an
/// answer that sent nothing (a refused or invalid request, a replay, a status lookup). `None`
/// for a caller without limits, or when the store cannot say.
pub async fn current(limiter: &Limiter, rules: &Rules) -> Option<RateLimitHeaders> {
    let caller_key = format!("caller:{}", rules.name);
    let mut rate_seen = None;
    if let Some(rate) = rules.rate {
        let decision = limiter
            .peek_all(&[(caller_key.as_str(), rate)])
            .await
            .ok()?
            .into_iter()
            .next()?;
        rate_seen = Some(as_it_stands(&decision, rate.interval));
    }
    let mut quota_seen = None;
    if let Some(quota) = rules.daily_quota {
        let decision = limiter.peek_daily(&caller_key, quota).await.ok()?;
        quota_seen = Some(as_it_stands(&decision, Duration::ZERO));
    }
    tighter(rate_seen, quota_seen)
}

/// A peeked decision says what taking one would leave; the headers say what is left now.
fn as_it_stands(decision: &Decision, interval: Duration) -> RateLimitHeaders {
    let mut seen = RateLimitHeaders::from(decision);
    if decision.allowed {
        seen.remaining += 1;
        seen.reset_s = seconds(decision.reset.saturating_sub(interval));
    }
    seen
}
