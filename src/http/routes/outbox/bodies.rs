//! What the outbox's endpoints take and answer, as the OpenAPI document describes them, and
//! their Swagger UI examples.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::{
    http::error::Problem,
    outbox::{self, Record, State as Stored, Taken},
    qikchat::{FailureReason, MessageStatus},
    relay::Warning,
};

/// The outbox took the message: it is sent when due, at the account's pace.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// The relay's id for the message: read it with `GET /messages/{id}`, cancel it with
    /// `DELETE /messages/{id}`; its status webhooks name it as `data.id`.
    #[schema(
        examples("msg_01JEX3Q6Z9T4M8V2K7RWC5N0BD"),
        pattern = "^msg_[0-9A-Z]{26}$"
    )]
    pub id: String,
    /// `scheduled` (its `send_at` is later) or `accepted` (waiting for its turn); for a retry
    /// with the same key, where the message is now.
    #[schema(examples("accepted"))]
    pub status: String,
    /// As on `POST /send`: what was found that may stop it on its way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// A batch's body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 1000 messages, each a `POST /messages` body that may also carry `idempotency_key`.
    #[schema(min_items = 1, max_items = 1000, value_type = Vec<Object>)]
    pub messages: Vec<Value>,
}

/// One result per message of a batch, in the same order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResults {
    pub results: Vec<BatchResult>,
}

/// A message of a batch: accepted (`id`, `status`) or refused (`error`) as `POST /messages`
/// would have refused it alone.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchResult {
    Accepted(Accepted),
    Refused { error: Problem },
}

/// A record as callers read it; `later` is Qikchat's status after `queued`, with the payload of
/// its event (its failure reason is read from it).
pub(super) fn view(record: &Record, later: Option<(String, Value)>) -> MessageStatus {
    let now = crate::unix_ms();
    let mut status = outbox::status::public_status(record.state).to_owned();
    // A scheduled message whose time has come waits for its turn like any other.
    if record.state == Stored::Scheduled && record.due_at_ms <= now {
        status = Stored::Accepted.as_str().to_owned();
    }
    let mut read = MessageStatus {
        error: record.error.as_ref().map(|(code, detail)| FailureReason {
            code: code.clone(),
            detail: detail.clone(),
        }),
        ..MessageStatus::default()
    };
    if let Some((later, payload)) = later {
        // The outbox's own event of Qikchat's status: its reason, when it failed.
        if let Some(reason) = FailureReason::from_payload(&payload) {
            read.error = Some(reason);
        }
        status = later;
    }
    MessageStatus {
        id: record.id.clone(),
        status,
        qikchat_id: record.qikchat_id.clone(),
        reference: record.reference.clone(),
        send_at: record.send_at_ms.map(crate::rfc3339_ms),
        valid_until: Some(crate::rfc3339_ms(record.valid_until_ms)),
        attempts: Some(record.attempts),
        accepted_at: Some(crate::rfc3339_ms(record.accepted_at_ms)),
        updated_at: Some(crate::rfc3339_ms(record.updated_at_ms)),
        ..read
    }
}

pub(super) fn accepted_body(taken: Taken) -> Accepted {
    Accepted {
        id: taken.id,
        status: outbox::status::public_status(taken.state).to_owned(),
        warnings: taken.warnings,
    }
}

/// Ready `POST /messages` requests, shown in Swagger UI and checked by the tests.
pub fn examples() -> Vec<(&'static str, Value)> {
    use serde_json::json;
    vec![
        (
            "now",
            json!({"to": "+918080808080", "type": "text", "text": "Your order #1234 has shipped", "reference": "order-1234-shipped"}),
        ),
        (
            "scheduled",
            json!({"to": "+918080808080", "type": "template", "template": {
                "name": "order_update", "language": "en", "body": ["Siva", "#1234"]},
                "send_at": "2026-12-24T09:00:00+05:30", "valid_until": "2026-12-24T13:00:00+05:30",
                "reference": "order-1234-reminder"}),
        ),
    ]
}

/// A ready `POST /messages/batch` request.
pub fn batch_examples() -> Vec<(&'static str, Value)> {
    use serde_json::json;
    vec![(
        "two_messages",
        json!({"messages": [
            {"to": "+918080808080", "type": "text", "text": "Your OTP is 4711", "idempotency_key": "otp-4711"},
            {"to": "+918080808081", "type": "text", "text": "Your order #1234 has shipped", "reference": "order-1234"}
        ]}),
    )]
}
