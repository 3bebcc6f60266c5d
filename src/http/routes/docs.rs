//! The OpenAPI document (`/openapi.json`, and `openapi.yaml` at the repository root) and Swagger UI
//! at `/docs`, served from the relay's own assets.

use axum::Router;
use utoipa::{
    Modify, OpenApi,
    openapi::{
        ContentBuilder, RefOr,
        example::ExampleBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::{
    http::error::{ApiError, Problem},
    http::routes::{conversation, health, messages, outbox, send, webhooks},
    http::state::AppState,
    message::FieldError,
    policy::Rule,
    qikchat::{FailureReason, MessageStatus},
    webhooks::{
        DeadLetter,
        event::{WebhookData, WebhookEvent},
    },
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "qikchat-relay",
        description = "Send WhatsApp messages through Qikchat without holding its key. Authenticate with your caller token (`Authorization: Bearer <token>`). Every error is `application/problem+json` with a stable `code`; every response carries `x-request-id`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    servers((url = "/", description = "This relay")),
    paths(
        send::send,
        outbox::accept,
        outbox::batch,
        messages::status,
        outbox::cancel,
        conversation::window,
        conversation::list,
        conversation::add,
        conversation::remove,
        health::healthz,
        health::readyz,
        health::metrics,
        webhooks::receive,
        webhooks::dead_letters,
        webhooks::replay,
        outbox::dead_letters
    ),
    components(schemas(
        Problem,
        FieldError,
        crate::relay::SendResponse,
        crate::relay::Warning,
        crate::conversation::WindowState,
        conversation::OptOutList,
        conversation::OptOutState,
        crate::conversation::OptOut,
        crate::conversation::OptOutHow,
        MessageStatus,
        outbox::Accepted,
        outbox::BatchResults,
        outbox::BatchResult,
        FailureReason,
        health::Health,
        webhooks::Received,
        DeadLetter,
        WebhookEvent,
        WebhookData
    )),
    modifiers(&Security, &SendExamples, &ProblemExamples),
    tags(
        (name = "messages", description = "Send messages and follow their delivery: `POST /send` waits for Qikchat's answer; `POST /messages` (and `/messages/batch`) queues a message, sent when due at the account's pace, exactly once, with every change posted to the caller's `statuses` webhook"),
        (name = "conversation", description = "The opt-out lists of the accounts, for operators (`RELAY_ADMIN_TOKEN`). A customer who writes an opt-out keyword (`STOP`, `UNSUBSCRIBE` by default) is put on the list; an opt-in keyword (`START`) takes them off. Sends to a customer on the list are refused (403 `forbidden`, rule `opted_out`) unless the caller has `ignore_opt_out`."),
        (name = "operations", description = "Health, readiness and metrics for orchestrators"),
        (name = "webhooks", description = "Qikchat's webhooks, received and passed on to subscribers. What a subscriber receives is the `WebhookEvent` schema, `POST`ed as JSON with the Standard Webhooks headers `webhook-id`, `webhook-timestamp` and `webhook-signature` (`v1,` + base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the subscriber's `whsec_` secret, base64-decoded)."),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The caller token the relay's operator gave you"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`RELAY_ADMIN_TOKEN`, for the operator's endpoints"))
                    .build(),
            ),
        );
    }
}

/// Puts [`send::examples`] on `POST /send` (and the outbox's on `POST /messages` and its batch),
/// so Swagger UI offers ready requests.
struct SendExamples;

impl Modify for SendExamples {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, examples) in [
            ("/send", send::examples()),
            ("/messages", outbox::examples()),
            ("/messages/batch", outbox::batch_examples()),
        ] {
            let Some(body) = openapi
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.post.as_mut())
                .and_then(|op| op.request_body.as_mut())
                .and_then(|body| match body {
                    RefOr::T(body) => Some(body),
                    RefOr::Ref(_) => None,
                })
            else {
                continue;
            };
            let Some(RefOr::T(content)) = body.content.get_mut("application/json") else {
                continue;
            };
            let mut builder = ContentBuilder::new().schema(content.schema.clone());
            // Swagger UI lists examples in key order and preselects the first: number the keys
            // so they keep the order of the list, and show the summary.
            for (index, (name, value)) in examples.into_iter().enumerate() {
                let example = ExampleBuilder::new()
                    .summary(name.replace('_', " "))
                    .value(Some(value))
                    .build();
                builder = builder
                    .examples_from_iter([(format!("{:02}-{name}", index + 1), RefOr::T(example))]);
            }
            *content = builder.build();
        }
    }
}

/// Gives every problem+json response one example per error `code` that answers with its status,
/// built from [`ApiError`] itself, so a 401 does not show a 422's body.
struct ProblemExamples;

impl Modify for ProblemExamples {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let samples = [
            ApiError::Malformed(
                "the body is not valid JSON: expected value at line 1 column 1".to_owned(),
            ),
            ApiError::Unauthorized,
            ApiError::NotFound("no message with this id".to_owned()),
            ApiError::PayloadTooLarge,
            ApiError::Invalid(vec![FieldError::new(
                "to",
                "must start with + and the country code, e.g. +918080808080",
            )]),
            ApiError::RejectedByQikchat("invalid message payload".to_owned()),
            ApiError::Media(vec![crate::preflight::MediaProblem {
                field: "link".to_owned(),
                code: crate::preflight::MediaCode::MediaTypeNotSupported,
                detail: "link answers text/html (a web page?); video accepts video/mp4, video/3gpp"
                    .to_owned(),
            }]),
            ApiError::UnknownTemplate {
                detail: "the template promo_diwali is not declared in the callers file for account default (RELAY_TEMPLATES=declared); nothing was sent".to_owned(),
                errors: vec![FieldError::new(
                    "template.name",
                    "promo_diwali is not a declared template",
                )],
            },
            ApiError::OutsideCustomerWindow("the customer last wrote at 2026-12-02T09:12:44.120Z, longer ago than the customer-service window; WhatsApp delivers only a template message now; nothing was sent".to_owned()),
            ApiError::IdempotencyKeyReused,
            ApiError::IdempotencyKeyInFlight,
            ApiError::RateLimited {
                retry_after_s: 1,
                detail: "caller billing may send 120 a minute (burst 20) (rule: rate_per_minute)"
                    .to_owned(),
                rule: Some(Rule::RatePerMinute),
            },
            ApiError::Forbidden {
                rule: Rule::Templates,
                detail:
                    "caller billing may not use the template \"promo_diwali\" (rule: templates)"
                        .to_owned(),
            },
            ApiError::Internal,
            ApiError::UpstreamError,
            ApiError::UpstreamUnavailable,
            ApiError::Overloaded,
            ApiError::UpstreamTimeout,
            ApiError::OutboxFull,
            ApiError::NotCancelable { status: "sending" },
        ];
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.delete.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                for (status, response) in &mut operation.responses.responses {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    let Some(RefOr::T(content)) =
                        response.content.get_mut(crate::http::error::PROBLEM_JSON)
                    else {
                        continue;
                    };
                    let examples = samples
                        .iter()
                        .filter(|e| e.status().as_str() == status)
                        .map(|e| {
                            let value = serde_json::to_value(
                                e.problem("7c0e1f9a-3b2d-4c5e-8f6a-1b2c3d4e5f60"),
                            )
                            .ok();
                            (
                                e.code().to_owned(),
                                RefOr::T(ExampleBuilder::new().value(value).build()),
                            )
                        });
                    content.examples.extend(examples);
                }
            }
        }
    }
}

/// The document as YAML, exactly as committed in `openapi.yaml`.
pub fn openapi_yaml() -> String {
    match ApiDoc::openapi().to_yaml() {
        Ok(yaml) => quote_yaml11_scalars(&yaml),
        Err(e) => format!("# the OpenAPI document could not be rendered: {e}\n"),
    }
}

/// Quotes the plain scalars a YAML 1.1 loader (PyYAML, most Java and Go tools) would not read as
/// strings: yaml_serde writes YAML 1.2, where `2024-07-02T08:59:21Z` and `on` are strings, but a
/// 1.1 loader makes them a date and `true`, and the document then differs from `/openapi.json`.
/// Only `key: value` and `- value` lines are looked at: yaml_serde writes scalars that way.
fn quote_yaml11_scalars(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len() + 64);
    // The indentation of the line that opened a block scalar (`|`, `>`), while inside it.
    let mut block: Option<usize> = None;
    for line in yaml.lines() {
        let body = line.trim_start();
        let indent = line.len() - body.len();
        match block {
            Some(opener) if indent > opener || body.is_empty() => {
                out.push_str(line);
                out.push('\n');
                continue;
            }
            _ => block = None,
        }
        let last_word = body.rsplit(' ').next().unwrap_or_default();
        if matches!(last_word, "|" | "|-" | "|+" | ">" | ">-" | ">+") {
            block = Some(indent);
        }
        let item = body.strip_prefix("- ");
        let rest = item.unwrap_or(body);
        let value = match rest.split_once(": ") {
            Some((_, value)) => value,
            None if item.is_some() => rest,
            // A mapping key alone, or a line of a block scalar: nothing to quote.
            None => "",
        };
        let prefix_len = line.len() - value.len();
        if retyped_by_yaml11(value) {
            out.push_str(&line[..prefix_len]);
            out.push('\'');
            out.push_str(value);
            out.push('\'');
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Whether a plain scalar is a timestamp, a boolean or a base-60 number in YAML 1.1 (and so not a
/// string, as it is in 1.2). None of them can contain `'`, so quoting is only adding two `'`.
fn retyped_by_yaml11(value: &str) -> bool {
    const BOOLS: [&str; 16] = [
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF",
    ];
    let bytes = value.as_bytes();
    let timestamp = bytes.len() >= 8
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[5].is_ascii_digit()
        && value.bytes().all(|b| b"0123456789-:.TtZz+ ".contains(&b));
    let sexagesimal = value.contains(':')
        && value
            .trim_start_matches(['+', '-'])
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b':' || b == b'_' || b == b'.');
    timestamp || sexagesimal || BOOLS.contains(&value)
}

pub fn router() -> Router<AppState> {
    Router::new().merge(
        SwaggerUi::new("/docs")
            .url("/openapi.json", ApiDoc::openapi())
            .config(
                Config::from("/openapi.json")
                    .persist_authorization(true)
                    .display_request_duration(true),
            ),
    )
}

#[cfg(test)]
mod tests {
    use super::quote_yaml11_scalars;

    #[test]
    fn quotes_only_what_yaml_1_1_would_retype() {
        let yaml = "a:\n  examples:\n  - 2024-07-02T08:59:21.000Z\n  b: on\n  c: 1:20\n  d: 2024-07 was busy\n  e: text\n  - name: off\n";
        let expected = "a:\n  examples:\n  - '2024-07-02T08:59:21.000Z'\n  b: 'on'\n  c: '1:20'\n  d: 2024-07 was busy\n  e: text\n  - name: 'off'\n";
        assert_eq!(quote_yaml11_scalars(yaml), expected);
    }

    #[test]
    fn leaves_block_scalars_as_they_are() {
        let yaml = "description: |-\n  on\n  at: 2024-07-02T08:59:21Z\nnext: on\n";
        let expected = "description: |-\n  on\n  at: 2024-07-02T08:59:21Z\nnext: 'on'\n";
        assert_eq!(quote_yaml11_scalars(yaml), expected);
    }
}
