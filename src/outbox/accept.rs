//! Acceptance: a `/messages` body read into a [`Submission`], then checked as `POST /send` would
//! check it (the caller's rules, templates, opt-outs and window: [`crate::relay::Relay::judge`]), counted against
//! the caller's rate and quota, and stored, all of a batch in one transaction.

use serde_json::{Map, Value};

use super::{Accepted, NewMessage, Outbox, State};
use crate::{
    idempotency::{self, Key},
    message::{FieldError, Message},
    policy::{Caller, limits},
    relay::{self, Warning},
};

/// How far ahead `send_at` may be.
pub const MAX_SCHEDULE_AHEAD_MS: u64 = 35 * 86_400_000;

/// A message as a caller submitted it to the outbox.
#[derive(Debug)]
pub struct Submission {
    pub message: Message,
    /// The message's fields as given (without `send_at`, `valid_until`, `idempotency_key`):
    /// what is stored, and parsed again at delivery.
    pub body: Map<String, Value>,
    pub key: Option<Key>,
    pub send_at_ms: Option<u64>,
    pub valid_until_ms: Option<u64>,
}

impl Submission {
    /// Reads one `/messages` body (or one item of a batch, where `idempotency_key` may be
    /// given: `key_field`), naming every bad field at once. `now_ms` is acceptance's time.
    pub fn parse(value: &Value, key_field: bool, now_ms: u64) -> Result<Self, Vec<FieldError>> {
        let Value::Object(object) = value else {
            return Err(vec![FieldError::new("body", "must be a JSON object")]);
        };
        let mut body = object.clone();
        let mut errors = Vec::new();
        let send_at = time_field(body.remove("send_at"), "send_at", &mut errors);
        let valid_until = time_field(body.remove("valid_until"), "valid_until", &mut errors);
        let key = match body.remove("idempotency_key") {
            Some(value) if key_field => match value.as_str().and_then(|k| Key::parse(k.as_bytes()))
            {
                Some(key) => Some(key),
                None => {
                    errors.push(FieldError::new(
                        "idempotency_key",
                        "must be 1 to 255 visible ASCII characters",
                    ));
                    None
                }
            },
            Some(value) => {
                // Not a field of `POST /messages`, which takes the header: refused as unknown,
                // exactly as the message's parser would.
                body.insert("idempotency_key".to_owned(), value);
                None
            }
            None => None,
        };
        if let Some(at) = send_at {
            if at > now_ms.saturating_add(MAX_SCHEDULE_AHEAD_MS) {
                errors.push(FieldError::new("send_at", "must be at most 35 days ahead"));
            }
        }
        if let Some(until) = valid_until {
            let due = send_at.unwrap_or(now_ms).max(now_ms);
            if until <= due {
                errors.push(FieldError::new(
                    "valid_until",
                    "must be later than send_at and than now",
                ));
            }
        }
        let message = Message::parse(&Value::Object(body.clone()));
        match message {
            Ok(message) if errors.is_empty() => Ok(Self {
                message,
                body,
                key,
                send_at_ms: send_at,
                valid_until_ms: valid_until,
            }),
            Ok(_) => Err(errors),
            Err(mut more) => {
                more.append(&mut errors);
                Err(more)
            }
        }
    }
}

/// An RFC 3339 time with its offset, in ms since the Unix epoch.
fn time_field(value: Option<Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<u64> {
    let value = value.filter(|v| !v.is_null())?;
    let parsed = value.as_str().and_then(|text| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
    });
    // A time before 1970 is simply in the past: as early as the relay's clock counts.
    match parsed.map(|at| (at.unix_timestamp_nanos() / 1_000_000).max(0)) {
        Some(ms) => u64::try_from(ms).ok(),
        None => {
            errors.push(FieldError::new(
                field,
                "must be an RFC 3339 time with its offset, e.g. 2026-12-24T09:00:00+05:30",
            ));
            None
        }
    }
}

/// Why one message was not accepted.
#[derive(Debug)]
pub enum Refused {
    /// As `POST /send` would refuse it: rules, templates, opt-outs, the caller's limits.
    Relay(relay::Error),
    /// The key came with a different message before.
    KeyReused,
    /// `RELAY_OUTBOX_MAX` messages are waiting.
    Full,
    /// The outbox cannot be read or written.
    Unavailable,
}

/// A message the outbox holds now.
#[derive(Debug)]
pub struct Taken {
    pub id: String,
    pub state: State,
    /// An earlier request with the same key stored it: nothing new was stored.
    pub replayed: bool,
    /// What was found that may stop it on its way (a closed window, in warn mode).
    pub warnings: Vec<Warning>,
}

/// A submission that passed its checks, waiting for the one transaction that stores them all.
struct Checked {
    index: usize,
    new: NewMessage,
    warnings: Vec<Warning>,
}

impl Outbox {
    /// Accepts `submissions` from `caller`: a result for each, in order. Everything that passes
    /// its checks is stored in one transaction.
    pub async fn accept(
        &self,
        caller: &Caller,
        submissions: Vec<Submission>,
    ) -> Vec<Result<Taken, Refused>> {
        let now = crate::unix_ms();
        let mut results: Vec<Option<Result<Taken, Refused>>> =
            submissions.iter().map(|_| None).collect();
        let mut checked = Vec::new();
        for (index, submission) in submissions.into_iter().enumerate() {
            match self.check(caller, submission, now).await {
                Ok(Ok(ready)) => checked.push(Checked { index, ..ready }),
                Ok(Err(earlier)) => results[index] = Some(Ok(earlier)),
                Err(refused) => results[index] = Some(Err(refused)),
            }
        }
        if !checked.is_empty() {
            let news = checked.iter().map(|c| c.new.clone()).collect();
            match self.store.accept(news, self.settings.max).await {
                Ok(Some(accepted)) => {
                    for (checked, accepted) in checked.into_iter().zip(accepted) {
                        results[checked.index] = Some(taken(accepted, checked.warnings));
                    }
                    self.wake.notify_one();
                }
                Ok(None) => {
                    for checked in checked {
                        results[checked.index] = Some(Err(Refused::Full));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the outbox cannot be written; messages are refused");
                    for checked in checked {
                        results[checked.index] = Some(Err(Refused::Unavailable));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|result| result.unwrap_or(Err(Refused::Unavailable)))
            .collect()
    }

    /// One submission's checks: `Ok(Ok)` ready to store, `Ok(Err)` stored before under its key.
    async fn check(
        &self,
        caller: &Caller,
        submission: Submission,
        now: u64,
    ) -> Result<Result<Checked, Taken>, Refused> {
        let relay = &self.relay;
        if relay.is_draining() {
            return Err(Refused::Relay(relay::Error::Draining));
        }
        let (account, message, warning) = relay
            .judge(caller, submission.message)
            .await
            .map_err(Refused::Relay)?;
        let mut fingerprinted = relay::normalised(&message);
        for time in [submission.send_at_ms, submission.valid_until_ms] {
            fingerprinted.push(0);
            fingerprinted
                .extend_from_slice(time.map(|t| t.to_string()).unwrap_or_default().as_bytes());
        }
        let fingerprint = idempotency::fingerprint(&fingerprinted);
        let key = submission
            .key
            .as_ref()
            .map(|key| (key.sha256(), fingerprint));
        // A retry under the same key takes nothing from the caller's limits.
        if let Some((key, fingerprint)) = &key {
            match self.store.by_key(&caller.name, key).await {
                Ok(Some((record, known))) if known == *fingerprint => {
                    return Ok(Err(Taken {
                        id: record.id,
                        state: record.state,
                        replayed: true,
                        warnings: Vec::new(),
                    }));
                }
                Ok(Some(_)) => return Err(Refused::KeyReused),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the outbox cannot be read; a message with a key is refused");
                    return Err(Refused::Unavailable);
                }
            }
        }
        limits::check_caller(&relay.limiter, &caller.rules)
            .await
            .map_err(|(refusal, _)| Refused::Relay(refusal.into()))?;
        let due = submission.send_at_ms.unwrap_or(now).max(now);
        let valid_until = submission
            .valid_until_ms
            .unwrap_or_else(|| due.saturating_add(millis(self.settings.validity)));
        let state = if due > now {
            State::Scheduled
        } else {
            State::Accepted
        };
        Ok(Ok(Checked {
            index: 0,
            new: NewMessage {
                id: super::new_id(),
                caller: caller.name.to_string(),
                account: account.spec.name.clone(),
                body: Value::Object(submission.body).to_string(),
                reference: message.reference.clone(),
                key,
                state,
                send_at_ms: submission.send_at_ms,
                due_at_ms: due,
                valid_until_ms: valid_until,
                accepted_at_ms: now,
            },
            warnings: warning.into_iter().collect(),
        }))
    }
}

fn taken(accepted: Accepted, warnings: Vec<Warning>) -> Result<Taken, Refused> {
    match accepted {
        Accepted::Stored { id, state } => {
            metrics::counter!(crate::metric::OUTBOX_TRANSITIONS_TOTAL, "status" => state.as_str())
                .increment(1);
            Ok(Taken {
                id,
                state,
                replayed: false,
                warnings,
            })
        }
        Accepted::Existing { id, state } => Ok(Taken {
            id,
            state,
            replayed: true,
            warnings: Vec::new(),
        }),
        Accepted::Reused => Err(Refused::KeyReused),
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_796_000_000_000;

    fn fields(result: Result<Submission, Vec<FieldError>>) -> Vec<String> {
        result
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn times_take_any_offset_and_are_checked_against_now() {
        let body = |extra: Value| {
            let mut body = json!({"to": "+918080808080", "type": "text", "text": "Hi"});
            if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
                body.extend(extra);
            }
            body
        };
        let at = |send_at: &str| Submission::parse(&body(json!({"send_at": send_at})), false, NOW);
        let ist = at("2026-12-01T09:00:00+05:30").map(|s| s.send_at_ms);
        let utc = at("2026-12-01T03:30:00Z").map(|s| s.send_at_ms);
        assert_eq!(ist.ok(), utc.ok(), "the same instant in two offsets");
        assert!(
            at("2026-12-01t03:30:00.250z").is_ok(),
            "RFC 3339 allows lowercase"
        );
        assert_eq!(
            at("1969-12-31T23:59:59Z").ok().and_then(|s| s.send_at_ms),
            Some(0)
        );
        assert_eq!(fields(at("2026-12-01 03:30")), ["send_at"]);
        assert_eq!(
            fields(at("2027-06-01T00:00:00Z")),
            ["send_at"],
            "over 35 days ahead"
        );
        let until =
            |until: &str| Submission::parse(&body(json!({"valid_until": until})), false, NOW);
        assert_eq!(
            fields(until("2020-01-01T00:00:00Z")),
            ["valid_until"],
            "in the past"
        );
        let both = Submission::parse(
            &body(
                json!({"send_at": "2026-12-02T00:00:00Z", "valid_until": "2026-12-01T23:00:00Z"}),
            ),
            false,
            NOW,
        );
        assert_eq!(fields(both), ["valid_until"], "before send_at");
        assert_eq!(fields(at("x").and(at("y"))), ["send_at"]);
    }

    #[test]
    fn an_idempotency_key_is_a_field_only_in_a_batch() {
        let body =
            json!({"to": "+918080808080", "type": "text", "text": "Hi", "idempotency_key": "k-1"});
        let batch = Submission::parse(&body, true, NOW).map(|s| s.key.map(|k| k.sha256()));
        assert!(matches!(batch, Ok(Some(_))));
        assert_eq!(
            fields(Submission::parse(&body, false, NOW)),
            ["idempotency_key"]
        );
        let bad =
            json!({"to": "+918080808080", "type": "text", "text": "Hi", "idempotency_key": ""});
        assert_eq!(
            fields(Submission::parse(&bad, true, NOW)),
            ["idempotency_key"]
        );
        assert_eq!(fields(Submission::parse(&json!([1]), true, NOW)), ["body"]);
    }
}
