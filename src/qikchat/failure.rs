//! Why a message failed, as Qikchat says it in a status: read from wherever its payload has it,
//! so that a caller learns the reason without reading Qikchat's payload itself.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The most characters of Qikchat's text a reason passes on: enough for WhatsApp's titles and
/// details, short enough that a status read or webhook stays small whatever Qikchat sends.
const MAX_DETAIL_CHARS: usize = 1024;
/// WhatsApp's codes are numbers of 6 digits at most; a string code longer than this is cut.
const MAX_CODE_CHARS: usize = 64;
/// The code of a reason that came without one (a bare `reason` text).
const NO_CODE: &str = "unknown";
/// The detail of a reason that came with a code and no text.
const NO_DETAIL: &str = "Qikchat gave no text for this error";

/// Why a message failed: Qikchat's (or WhatsApp's) error code and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FailureReason {
    /// The error's code as a string (WhatsApp's numbers in decimal), `unknown` when Qikchat gave
    /// none.
    #[schema(examples("131047"))]
    pub code: String,
    /// Qikchat's text for it (`title`, `message` or `reason`), at most 1024 characters; a fixed
    /// sentence instead when it repeated the relay's key.
    #[schema(examples("Re-engagement message"))]
    pub detail: String,
}

impl FailureReason {
    /// The reason in a status payload, if it carries one: `errors[0].code`/`title`,
    /// `error.code`/`message` or `reason`, in `payload.message` first (where Qikchat puts the
    /// status itself), then in `payload`. Text only bounded here: the key is withheld by whoever
    /// passes it on (the lookup's answer, or the webhook when it is received).
    pub fn from_payload(payload: &Value) -> Option<Self> {
        [payload.get("message"), Some(payload)]
            .into_iter()
            .flatten()
            .filter(|place| place.is_object())
            .find_map(in_place)
    }

    /// This reason with `pass_on` applied to its text, as Qikchat's text goes on to callers.
    pub(super) fn passed_on(self, pass_on: impl Fn(&str) -> String) -> Self {
        Self {
            code: pass_on(&self.code),
            detail: pass_on(&self.detail),
        }
    }
}

/// The reason in one object of the payload.
fn in_place(place: &Value) -> Option<FailureReason> {
    let (code, detail) = if let Some(first) = place.pointer("/errors/0") {
        (first.get("code"), text_of(first, &["title", "message"]))
    } else if let Some(error) = place.get("error").filter(|e| !e.is_null()) {
        match error {
            Value::Object(_) => (error.get("code"), text_of(error, &["message", "title"])),
            other => (None, text(other)),
        }
    } else {
        let reason = place.get("reason").filter(|r| !r.is_null())?;
        match reason {
            Value::Object(_) => (reason.get("code"), text_of(reason, &["message", "title"])),
            other => (None, text(other)),
        }
    };
    let code = code.and_then(code_of);
    if code.is_none() && detail.is_none() {
        return None;
    }
    Some(FailureReason {
        code: code.unwrap_or_else(|| NO_CODE.to_owned()),
        detail: detail.unwrap_or_else(|| NO_DETAIL.to_owned()),
    })
}

/// A code as a string: a number in decimal, a string trimmed and bounded.
fn code_of(code: &Value) -> Option<String> {
    match code {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => bounded(s, MAX_CODE_CHARS),
        _ => None,
    }
}

/// The first of `keys` in `object` that holds text.
fn text_of(object: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|key| object.get(*key).and_then(text))
}

fn text(value: &Value) -> Option<String> {
    value.as_str().and_then(|s| bounded(s, MAX_DETAIL_CHARS))
}

/// `s` trimmed and cut to `max` characters; `None` when nothing is left.
fn bounded(s: &str, max: usize) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.chars().take(max).collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reason(payload: Value) -> Option<(String, String)> {
        FailureReason::from_payload(&payload).map(|r| (r.code, r.detail))
    }

    fn of(code: &str, detail: &str) -> Option<(String, String)> {
        Some((code.to_owned(), detail.to_owned()))
    }

    #[test]
    fn each_shape_qikchat_uses_gives_a_code_and_a_detail() {
        assert_eq!(
            reason(json!({"id": "m", "message": {"status": "failed",
                "errors": [{"code": 131047, "title": "Re-engagement message"}]}})),
            of("131047", "Re-engagement message")
        );
        assert_eq!(
            reason(json!({"message": {"status": "failed",
                "error": {"code": "E42", "message": " Template not approved "}}})),
            of("E42", "Template not approved")
        );
        assert_eq!(
            reason(json!({"message": {"status": "failed"}, "reason": "Number not on WhatsApp"})),
            of("unknown", "Number not on WhatsApp")
        );
        assert_eq!(
            reason(json!({"errors": [{"code": 131026}]})),
            of("131026", NO_DETAIL)
        );
        assert_eq!(
            reason(json!({"message": {"error": "credits exhausted"}})),
            of("unknown", "credits exhausted")
        );
        // The status's own object comes first.
        assert_eq!(
            reason(json!({"reason": "outer", "message": {"reason": "inner"}})),
            of("unknown", "inner")
        );
    }

    #[test]
    fn a_status_without_an_error_has_no_reason_and_text_is_bounded() {
        for payload in [
            json!({"message": {"status": "delivered"}}),
            json!({"message": {"status": "failed", "error": null, "reason": ""}}),
            json!({"errors": [{"code": null, "title": "  "}]}),
            json!("not an object"),
            json!({"message": "a string"}),
        ] {
            assert_eq!(reason(payload.clone()), None, "{payload}");
        }
        let long =
            reason(json!({"errors": [{"code": "c".repeat(100), "title": "t".repeat(5000)}]}));
        let (code, detail) = long.unwrap_or_default();
        assert_eq!(
            (code.chars().count(), detail.chars().count()),
            (MAX_CODE_CHARS, MAX_DETAIL_CHARS)
        );
    }
}
