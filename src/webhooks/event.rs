//! Reading Qikchat's webhook bodies, and writing what subscribers receive.
//!
//! Qikchat's bodies are only partly documented (shared/qikchat-api.md), so reading is tolerant:
//! both envelopes (`{event, payload}` and `{message: {event, payload}}`), unknown fields kept,
//! `contacts` optional. What subscribers receive is documented in the OpenAPI document
//! (`WebhookEvent`) and stable.

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{Event, Kind};
use crate::{message::Recipient, qikchat::FailureReason};

/// Why a body is not an event the relay can take.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("the body is not JSON")]
    NotJson,
    #[error("the body has no event and payload (neither at the top nor under message)")]
    NoEnvelope,
    #[error("the event {0:?} is neither a status nor an inbound message")]
    UnknownEvent(String),
}

/// Reads one webhook body received for `account` at `received_at_ms`.
pub fn parse(body: &[u8], account: &str, received_at_ms: u64) -> Result<Event, Unreadable> {
    let json: Value = serde_json::from_slice(body).map_err(|_| Unreadable::NotJson)?;
    let envelope = if json.get("payload").is_some() {
        &json
    } else {
        json.get("message")
            .filter(|m| m.get("payload").is_some())
            .ok_or(Unreadable::NoEnvelope)?
    };
    let payload = envelope.get("payload").cloned().unwrap_or(Value::Null);
    let event = envelope
        .get("event")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let message_id = payload
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let status = payload
        .pointer("/message/status")
        .and_then(Value::as_str)
        .map(str::to_owned);
    // Statuses carry one; `...:in` is a customer's message. Anything else is not for us.
    let kind = if status.is_some() || event.contains("status") || event.ends_with(":dlr") {
        Kind::Status
    } else if event.ends_with(":in") || event.contains("inbound") {
        Kind::Inbound
    } else {
        return Err(Unreadable::UnknownEvent(event));
    };
    let key = match (kind, message_id.is_empty(), &status) {
        (Kind::Status, false, Some(status)) => format!("status:{message_id}:{status}"),
        (Kind::Inbound, false, _) => format!("inbound:{message_id}"),
        // Nothing names it: the body itself does (Qikchat resends the same bytes).
        _ => format!("body:{}", hex::encode(Sha256::digest(body))),
    };
    Ok(Event {
        key: format!("{account}:{key}"),
        kind,
        message_id,
        status,
        account: account.to_owned(),
        received_at_ms,
        event,
        payload,
    })
}

/// The event name (`data.event`) of the statuses the relay tells itself: an outbox message's.
pub const RELAY_STATUS_EVENT: &str = "relay:outbox:status";

/// The event a status change of the outbox message `id` is stored as. Its key makes a change
/// posted twice (a router that died, a sweep on two replicas) one event; `attempts` tells one
/// retry's `accepted` from the next.
pub fn relay_status(
    id: &str,
    account: &str,
    status: &str,
    attempts: u32,
    qikchat_id: Option<&str>,
    error: Option<(&str, &str)>,
    at_ms: u64,
) -> Event {
    let mut payload = json!({"id": id, "status": status});
    if let Some(qikchat_id) = qikchat_id {
        payload["qikchat_id"] = qikchat_id.into();
    }
    if let Some((code, detail)) = error {
        payload["error"] = json!({"code": code, "message": detail});
    }
    Event {
        key: format!("{account}:outbox:{id}:{status}:{attempts}"),
        kind: Kind::Status,
        message_id: id.to_owned(),
        status: Some(status.to_owned()),
        account: account.to_owned(),
        received_at_ms: at_ms,
        event: RELAY_STATUS_EVENT.to_owned(),
        payload,
    }
}

/// Qikchat's status `event` of a message the outbox sent (as `relay_id`), told as the outbox
/// message's own: `data.id` the relay's id, Qikchat's as `qikchat_id`, its failure reason kept.
pub fn as_relay_status(event: &Event, relay_id: &str) -> Option<Event> {
    let status = event.status.as_deref()?;
    let error = FailureReason::from_payload(&event.payload);
    Some(relay_status(
        relay_id,
        &event.account,
        status,
        0,
        Some(&event.message_id),
        error.as_ref().map(|e| (e.code.as_str(), e.detail.as_str())),
        event.received_at_ms,
    ))
}

/// What a subscriber receives (Standard Webhooks' `{type, timestamp, data}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEvent {
    /// `message.status` (a message this caller sent changed status) or `message.inbound` (a
    /// customer wrote to this caller's account).
    #[schema(examples("message.status"))]
    #[serde(rename = "type")]
    pub kind: String,
    /// When the relay received it from Qikchat, RFC 3339.
    #[schema(examples("2026-11-25T10:15:02.123Z"))]
    pub timestamp: String,
    pub data: WebhookData,
}

/// The event's content.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookData {
    /// Qikchat's message id: the id `POST /send` answered with, for a status.
    #[schema(examples("52JH6WmuSruAVyXvBBYemd0Ia"))]
    pub id: String,
    /// For `message.status`: `sent`, `delivered`, `read`, `failed`, ... as Qikchat names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, examples("delivered"))]
    pub status: Option<String>,
    /// For `message.inbound`: the customer's number, as Qikchat gives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, examples("+918080808080"))]
    pub from: Option<String>,
    /// The Qikchat account (WhatsApp number) it concerns.
    #[schema(examples("default"))]
    pub account: String,
    /// Qikchat's event name.
    #[schema(examples("whatsapp:message:status"))]
    pub event: String,
    /// For `message.status` of a message sent through the outbox (`POST /messages`, whose id
    /// `data.id` is): Qikchat's id for it, once Qikchat took it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, examples("52JH6WmuSruAVyXvBBYemd0Ia"))]
    pub qikchat_id: Option<String>,
    /// For `message.status`: the `reference` the sender gave with `POST /send`, when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, examples("invoice-2026-0042"))]
    pub reference: Option<String>,
    /// For `message.status`: why the message failed, when the status says so (`errors[0]`,
    /// `error` or `reason` in Qikchat's payload).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<FailureReason>,
    /// Qikchat's payload, unchanged but for any text that carried the relay's key (replaced by a
    /// fixed sentence): every field it sent, known or not.
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// A delivery's body: built from its event's JSON and the reference the router stored with it,
/// or, for a delivery stored by an older relay (no event with it), the body it kept.
pub fn delivery_body(event_json: Option<&str>, kept: &str, reference: Option<&str>) -> String {
    match event_json.and_then(|json| serde_json::from_str::<Event>(json).ok()) {
        Some(event) => body(&event, reference),
        None => kept.to_owned(),
    }
}

/// The body a subscriber receives for `event`, as JSON text (signed and sent as is); a status
/// names the sender's `reference` for the message, when it gave one.
pub fn body(event: &Event, reference: Option<&str>) -> String {
    let (from, reference, error) = match event.kind {
        Kind::Inbound => (from(event).map(str::to_owned), None, None),
        Kind::Status => (
            None,
            reference.map(str::to_owned),
            FailureReason::from_payload(&event.payload),
        ),
    };
    let kind = match event.kind {
        Kind::Status => "message.status",
        Kind::Inbound => "message.inbound",
    };
    let at = UNIX_EPOCH + Duration::from_millis(event.received_at_ms);
    let qikchat_id = (event.event == RELAY_STATUS_EVENT)
        .then(|| event.payload.get("qikchat_id").and_then(Value::as_str))
        .flatten()
        .map(str::to_owned);
    let data = WebhookData {
        id: event.message_id.clone(),
        qikchat_id,
        status: event.status.clone(),
        from,
        account: event.account.clone(),
        event: event.event.clone(),
        reference,
        error,
        payload: event.payload.clone(),
    };
    serde_json::to_string(&WebhookEvent {
        kind: kind.to_owned(),
        timestamp: humantime::format_rfc3339_millis(at).to_string(),
        data,
    })
    .unwrap_or_else(|_| json!({"type": kind}).to_string())
}

/// The customer's number as Qikchat gives it in an inbound message.
fn from(event: &Event) -> Option<&str> {
    event
        .payload
        .pointer("/contacts/0/to")
        .or_else(|| event.payload.pointer("/contacts/0/wa_id"))
        .or_else(|| event.payload.get("from"))
        .and_then(Value::as_str)
}

/// The customer an inbound message is from: for ordering a conversation's messages, and for
/// finding who last wrote to them.
pub fn customer(event: &Event) -> Option<Recipient> {
    from(event).and_then(Recipient::from_qikchat)
}

/// What the customer wrote: a text's body, or the title of the button or list row they chose.
pub fn text(event: &Event) -> Option<&str> {
    let message = event.payload.get("message")?;
    [
        "/text/body",
        "/interactive/button_reply/title",
        "/interactive/list_reply/title",
        "/button/text",
    ]
    .iter()
    .find_map(|pointer| message.pointer(pointer))
    .and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_envelopes_give_the_same_event_and_unknown_fields_are_kept() {
        let payload = json!({"id": "m-1", "extra": {"kept": true},
            "message": {"type": "text", "status": "delivered", "deliveredAt": "2026-11-25T10:00:00Z"}});
        let flat = json!({"event": "whatsapp:message:status", "payload": payload});
        let wrapped = json!({"status": true, "message": {"event": "whatsapp:message:status", "payload": payload}});
        let a = parse(flat.to_string().as_bytes(), "default", 1).expect("flat");
        let b = parse(wrapped.to_string().as_bytes(), "default", 1).expect("wrapped");
        assert_eq!(a, b);
        assert_eq!(a.kind, Kind::Status);
        assert_eq!(a.key, "default:status:m-1:delivered");
        assert_eq!(a.payload["extra"]["kept"], true);
    }

    #[test]
    fn what_a_customer_wrote_is_a_text_or_the_title_of_what_they_chose() {
        let inbound = |message: Value| {
            let body = json!({"event": "whatsapp:message:in",
                "payload": {"id": "in-1", "from": "918080808080", "message": message}});
            parse(body.to_string().as_bytes(), "default", 0).expect("an event")
        };
        let texts = [
            (
                json!({"type": "text", "text": {"body": "STOP now"}}),
                Some("STOP now"),
            ),
            (
                json!({"type": "interactive", "interactive": {"type": "button_reply",
                    "button_reply": {"id": "b1", "title": "Unsubscribe"}}}),
                Some("Unsubscribe"),
            ),
            (
                json!({"type": "interactive", "interactive": {"type": "list_reply",
                    "list_reply": {"id": "r1", "title": "Talk to us"}}}),
                Some("Talk to us"),
            ),
            (
                json!({"type": "button", "button": {"text": "Yes", "payload": "y"}}),
                Some("Yes"),
            ),
            (
                json!({"type": "image", "image": {"url": "https://x/y.png"}}),
                None,
            ),
        ];
        for (message, expected) in texts {
            let event = inbound(message.clone());
            assert_eq!(text(&event), expected, "{message}");
            assert_eq!(
                customer(&event).map(|c| c.as_str().to_owned()).as_deref(),
                Some("+918080808080")
            );
        }
    }

    #[test]
    fn an_inbound_message_without_contacts_is_still_read() {
        let body = json!({"event": "whatsapp:message:in", "payload": {"id": "in-1",
            "message": {"type": "text", "text": {"body": "STOP"}}}});
        let event = parse(body.to_string().as_bytes(), "brand2", 5).expect("read");
        assert_eq!(
            (event.kind, event.key.as_str()),
            (Kind::Inbound, "brand2:inbound:in-1")
        );
        let sent: Value = serde_json::from_str(&body_of(&event)).expect("json");
        assert_eq!(sent["type"], "message.inbound");
        assert_eq!(sent["data"]["payload"]["message"]["text"]["body"], "STOP");
        assert!(sent["data"].get("from").is_none());
        assert_eq!(sent["timestamp"], "1970-01-01T00:00:00.005Z");
    }

    fn body_of(event: &Event) -> String {
        body(event, Some("not for an inbound message"))
    }

    #[test]
    fn what_is_not_an_event_is_refused_with_a_reason() {
        assert_eq!(parse(b"nope", "default", 0), Err(Unreadable::NotJson));
        assert_eq!(
            parse(b"{\"a\":1}", "default", 0),
            Err(Unreadable::NoEnvelope)
        );
        assert!(matches!(
            parse(
                br#"{"event":"whatsapp:template:approved","payload":{}}"#,
                "default",
                0
            ),
            Err(Unreadable::UnknownEvent(_))
        ));
    }
}
