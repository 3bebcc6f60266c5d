//! What Qikchat's answers mean: a [`Reply`] classified into [`Accepted`], a [`MessageStatus`] or an
//! [`Error`], with Qikchat's own words passed on short and never with the key.

use reqwest::{StatusCode, header::RETRY_AFTER};
use serde_json::Value;

use super::{Accepted, Error, MessageStatus, Qikchat, transport::Reply};

/// Qikchat's own message is passed on to callers, cut to this many characters.
const MAX_DETAIL_CHARS: usize = 300;

impl Qikchat {
    /// Success is HTTP 2xx with `status` not `false` and an id at `data[0].id`.
    pub(super) fn parse_send_answer(&self, answer: &Reply) -> Result<Accepted, Error> {
        // Fast path for the usual success document: no serde_json::Value built; anything else
        // falls through to the full classification below.
        if answer.status.is_success() {
            #[derive(serde::Deserialize)]
            struct Sent<'a> {
                #[serde(default)]
                status: Option<bool>,
                #[serde(borrow)]
                data: Vec<SentId<'a>>,
            }
            #[derive(serde::Deserialize)]
            struct SentId<'a> {
                #[serde(borrow)]
                id: std::borrow::Cow<'a, str>,
            }
            if let Ok(sent) = serde_json::from_slice::<Sent<'_>>(&answer.body) {
                if sent.status != Some(false) {
                    if let Some(first) = sent.data.first().filter(|d| !d.id.is_empty()) {
                        return Ok(Accepted {
                            id: first.id.clone().into_owned(),
                            http_status: Some(answer.status.as_u16()),
                        });
                    }
                }
            }
        }
        let json = self.classify(answer)?;
        let json = json.ok_or_else(|| Error::Failed {
            status: Some(answer.status.as_u16()),
            reason: "the answer is not JSON".to_owned(),
        })?;
        let id = json
            .pointer("/data/0/id")
            .or_else(|| json.pointer("/data/id"))
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty());
        match id {
            Some(id) => Ok(Accepted {
                id: id.to_owned(),
                http_status: Some(answer.status.as_u16()),
            }),
            None => Err(Error::Failed {
                status: Some(answer.status.as_u16()),
                reason: "the answer carries no message id".to_owned(),
            }),
        }
    }

    pub(super) fn parse_status_answer(
        &self,
        id: &str,
        answer: &Reply,
    ) -> Result<MessageStatus, Error> {
        // Qikchat answers an unknown id with 400 {"error": "Invalid request"}.
        if matches!(
            answer.status,
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND
        ) {
            return Err(Error::NotFound);
        }
        let json = match self.classify(answer) {
            Err(Error::Rejected { .. }) => return Err(Error::NotFound),
            other => other?,
        };
        let unreadable = |reason: &str| Error::Failed {
            status: Some(answer.status.as_u16()),
            reason: reason.to_owned(),
        };
        let json = json.ok_or_else(|| unreadable("the answer is not JSON"))?;
        let payload = json
            .pointer("/message/payload")
            .or_else(|| json.get("payload"))
            .ok_or_else(|| unreadable("the answer carries no payload"))?;
        let status = MessageStatus::from_payload(id, payload)
            .ok_or_else(|| unreadable("the answer carries no status"))?;
        let text = |value: String| self.passed_on(&value);
        let maybe = |value: Option<String>| value.map(text);
        Ok(MessageStatus {
            id: text(status.id),
            status: text(status.status),
            message_type: maybe(status.message_type),
            sent_at: maybe(status.sent_at),
            delivered_at: maybe(status.delivered_at),
            read_at: maybe(status.read_at),
            updated_at: maybe(status.updated_at),
            error: status
                .error
                .map(|error| error.passed_on(|t| self.passed_on(t))),
            ..MessageStatus::default()
        })
    }

    /// The shared part of reading any answer: HTTP status, then `status: false`. Returns the JSON
    /// body of a successful answer, if it is JSON.
    fn classify(&self, answer: &Reply) -> Result<Option<Value>, Error> {
        let status = answer.status;
        let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
        let code = status.as_u16();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(Error::KeyRefused { status: code });
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after_s = answer
                .headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1)
                .clamp(1, 3600);
            return Err(Error::RateLimited { retry_after_s });
        }
        if status.is_client_error() {
            return Err(Error::Rejected {
                status: code,
                message: self.detail(json.as_ref(), code),
            });
        }
        if !status.is_success() {
            return Err(Error::Failed {
                status: Some(code),
                reason: format!("HTTP {code}"),
            });
        }
        if json
            .as_ref()
            .and_then(|j| j.get("status"))
            .and_then(Value::as_bool)
            == Some(false)
        {
            return Err(Error::Rejected {
                status: code,
                message: self.detail(json.as_ref(), code),
            });
        }
        Ok(json)
    }

    /// Qikchat's own words about a refusal, safe to show a caller: short, and never the key.
    fn detail(&self, json: Option<&Value>, status: u16) -> String {
        let said = json.and_then(|j| {
            ["/message", "/error", "/error/message", "/errors/0/message"]
                .into_iter()
                .find_map(|pointer| j.pointer(pointer).and_then(Value::as_str))
        });
        match said.map(str::trim).filter(|s| !s.is_empty()) {
            Some(text) => self
                .passed_on(text)
                .chars()
                .take(MAX_DETAIL_CHARS)
                .collect(),
            None => format!("HTTP {status} without a message"),
        }
    }
}

#[cfg(test)]
mod properties {
    use bytes::Bytes;
    use proptest::prelude::*;
    use reqwest::header::HeaderMap;
    use serde_json::json;

    use super::*;
    use crate::qikchat::{
        WITHHELD,
        fixtures::{KEY, qikchat},
    };

    fn answer(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            headers: HeaderMap::new(),
            body: Bytes::from(body),
        }
    }

    /// Bodies that look like Qikchat's, and bytes that do not.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            any::<Vec<u8>>(),
            (
                any::<Option<bool>>(),
                ".{0,20}",
                prop::option::of("[A-Za-z0-9]{0,25}")
            )
                .prop_map(|(status, message, id)| {
                    let mut json = serde_json::Map::new();
                    if let Some(status) = status {
                        json.insert("status".into(), status.into());
                    }
                    json.insert("message".into(), format!("{message} {KEY}").into());
                    if let Some(id) = id {
                        json.insert("data".into(), json!([{"id": id}]));
                    }
                    serde_json::to_vec(&json).unwrap_or_default()
                }),
        ]
    }

    #[test]
    fn a_refusal_and_a_status_that_quote_the_key_reach_nobody() {
        let refusal =
            json!({"status": false, "message": format!("bad key {}", KEY.to_uppercase())});
        let refused = qikchat()
            .parse_send_answer(&answer(
                400,
                serde_json::to_vec(&refusal).unwrap_or_default(),
            ))
            .expect_err("refused");
        assert!(
            matches!(&refused, Error::Rejected { message, .. } if message == WITHHELD),
            "{refused}"
        );
        let lookup = json!({"status": true, "message": {"payload": {"id": "abc", "message": {
            "status": format!("failed for {}", &KEY[3..12]), "type": "text"}}}});
        let found = qikchat()
            .parse_status_answer(
                "abc",
                &answer(200, serde_json::to_vec(&lookup).unwrap_or_default()),
            )
            .expect("a status");
        assert_eq!(found.status, WITHHELD);
        assert_eq!(found.message_type.as_deref(), Some("text"));
    }

    proptest! {
        #[test]
        fn any_send_answer_is_classified_without_panicking_or_leaking_the_key(status in 100u16..600, body in body()) {
            match qikchat().parse_send_answer(&answer(status, body)) {
                Ok(accepted) => {
                    prop_assert!((200..300).contains(&status));
                    prop_assert!(!accepted.id.is_empty());
                }
                Err(e) => prop_assert!(!e.to_string().contains(KEY), "{}", e),
            }
        }

        #[test]
        fn any_status_answer_is_classified_without_panicking(status in 100u16..600, body in body()) {
            if let Ok(found) = qikchat().parse_status_answer("abc", &answer(status, body)) {
                prop_assert!((200..300).contains(&status));
                prop_assert!(!found.status.is_empty());
            }
        }
    }
}
