//! What a delivery's failure leads to, and a message's end: retried with backoff while nothing
//! can have reached Qikchat (until `valid_until`), or ended and posted.

use std::time::Duration;

use tracing::{info, warn};

use super::{Claimed, Finish, Outbox, State};
use crate::{
    metric, qikchat,
    relay::{Delivery, Error},
};

/// The first retry's delay; each further one doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A retry that would fall after `valid_until` is made this long before it instead: the last try.
const LAST_TRY_BEFORE_MS: u64 = 200;

impl Outbox {
    /// What `delivery` leads to for `message` (see the worker's module).
    pub(super) async fn conclude(&self, message: &Claimed, delivery: Delivery) {
        match delivery {
            Delivery::NotStarted => {}
            Delivery::Called(Ok(sent)) => {
                self.end(message, State::Queued, Some(sent.id), None).await;
            }
            Delivery::Called(Err(e)) if !e.may_have_been_sent() && !is_internal(&e) => {
                self.retry_or_expire(message, &e).await;
            }
            Delivery::Called(Err(e)) => {
                // Qikchat's refusal is an answer; anything else may have gone out.
                let state = match e {
                    Error::Qikchat(
                        qikchat::Error::Rejected { .. } | qikchat::Error::KeyRefused { .. },
                    ) => State::Failed,
                    _ => State::Unknown,
                };
                let error = (self.relay.describe)(&e);
                self.end(message, state, None, Some(error)).await;
            }
            Delivery::NotSent(e) if is_transient(&e) => self.retry_or_expire(message, &e).await,
            Delivery::NotSent(e) => {
                let error = (self.relay.describe)(&e);
                self.end(message, State::Failed, None, Some(error)).await;
            }
        }
    }

    /// Ends `message` as `expired`: its `valid_until` passed before it could be sent.
    pub(super) async fn expire(&self, message: &Claimed) {
        let error = expired(message.attempts);
        self.end(message, State::Expired, None, Some(error)).await;
    }

    /// Due again after a backoff; when that would be past `valid_until`, one last try just
    /// before it; `expired` once even that is past.
    pub(super) async fn retry_or_expire(&self, message: &Claimed, e: &Error) {
        let attempts = message.attempts + 1;
        let mut wait = backoff(attempts);
        if let Error::Qikchat(qikchat::Error::RateLimited { retry_after_s }) = e {
            wait = wait.max(Duration::from_secs(*retry_after_s));
        }
        let now = crate::unix_ms();
        let last_try = message.valid_until_ms.saturating_sub(LAST_TRY_BEFORE_MS);
        let error = (self.relay.describe)(e);
        if now >= last_try {
            return self.end(message, State::Expired, None, Some(error)).await;
        }
        let due = now.saturating_add(millis(wait)).min(last_try);
        metrics::counter!(metric::OUTBOX_RETRIES_TOTAL).increment(1);
        match self
            .store
            .retry(&message.id, &self.token, due, error.clone())
            .await
        {
            Ok(true) => {
                info!(attempts, wait_ms = millis(wait), error = %error.0, "an outbox message will be tried again");
                self.publish(message, State::Accepted, None, Some(error))
                    .await;
            }
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, "the outbox cannot record a retry; the message is taken for unknown once its lease runs out");
            }
        }
    }

    /// Records the message's end and posts it.
    pub(super) async fn end(
        &self,
        message: &Claimed,
        state: State,
        qikchat_id: Option<String>,
        error: Option<(String, String)>,
    ) {
        let finish = Finish {
            state,
            qikchat_id: qikchat_id.clone(),
            error: error.clone(),
        };
        match self.store.finish(&message.id, &self.token, finish).await {
            Ok(true) => {
                metrics::counter!(metric::OUTBOX_TRANSITIONS_TOTAL, "status" => state.as_str())
                    .increment(1);
                info!(
                    status = state.as_str(),
                    qikchat_id = qikchat_id.as_deref(),
                    "an outbox message ended"
                );
                self.publish(message, state, qikchat_id.as_deref(), error)
                    .await;
            }
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, status = state.as_str(), "the outbox cannot record how a message ended; if it was sending it is taken for unknown once its lease runs out");
            }
        }
    }
}

/// Errors after which nothing reached Qikchat and trying later may succeed.
fn is_transient(e: &Error) -> bool {
    use crate::policy::Refusal;
    matches!(
        e,
        Error::Draining
            | Error::Overloaded
            | Error::KeysUnavailable
            | Error::OptOutsUnavailable
            | Error::Refused(Refusal::LimitsUnavailable)
            | Error::Qikchat(qikchat::Error::Unreachable(_) | qikchat::Error::RateLimited { .. })
    )
}

/// The send's task failed: whether it reached Qikchat cannot be known.
fn is_internal(e: &Error) -> bool {
    matches!(e, Error::Internal)
}

fn expired(attempts: u32) -> (String, String) {
    (
        "expired".to_owned(),
        format!(
            "valid_until passed before the message could be sent ({attempts} attempts reached no one); it was not sent"
        ),
    )
}

/// Exponential, with full jitter over its upper half, so that replicas retrying after one outage
/// do not all come back at once.
fn backoff(attempts: u32) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1 << attempts.saturating_sub(1).min(16));
    let ceiling = doubled.min(MAX_BACKOFF);
    ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_ceiling_with_jitter() {
        for attempts in 1..40 {
            let wait = backoff(attempts);
            assert!(wait <= MAX_BACKOFF, "{attempts}: {wait:?}");
            assert!(wait >= FIRST_BACKOFF / 2, "{attempts}: {wait:?}");
        }
        assert!(backoff(1) <= FIRST_BACKOFF);
        assert!(backoff(30) >= MAX_BACKOFF / 2);
    }
}
