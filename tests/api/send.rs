//! `POST /send`: the exact body Qikchat receives for every message type, and the caller's answer.
//!
//! Every request is sent with `to` as a person types it (`+91 80808 08080`), many with a null or
//! empty optional field; Qikchat must get the normalised number and neither of those.

use qikchat_relay::http::routes::send::examples;
use serde_json::{Value, json};

use crate::helpers::{
    KEY, RECIPIENT, TOKEN, TempDir, TestApp, named_fields, problem, spawn_app, spawn_app_with,
    text_message,
};

/// The id the fake Qikchat gives every message; the relay must answer with it.
const QIKCHAT_ID: &str = "52JH6WmuSruAVyXvBBYemd0Ia";

/// `helpers::RECIPIENT` as a person types it.
const TO_AS_TYPED: &str = "+91 80808 08080";

/// Sends `request` through a fresh relay whose Qikchat accepts it and returns the one body
/// Qikchat received, after checking what every accepted send must satisfy: the answer is
/// `200 {"id": <Qikchat's id>, "status": "queued"}`, Qikchat was called exactly once, with the key
/// in `QIKCHAT-API-KEY` and without the caller's `Authorization`.
async fn relayed(request: Value) -> Value {
    let app = spawn_app().await;
    app.qikchat_accepts(QIKCHAT_ID, 1).await;

    let response = app.send(&request).await;
    let status = response.status();
    let answer = response.text().await.expect("an answer body");
    assert_eq!(status, 200, "the relay refused {request}: {answer}");
    let answer: Value = serde_json::from_str(&answer).expect("a JSON answer");
    assert_eq!(answer["id"], QIKCHAT_ID, "{answer}");
    assert_eq!(answer["status"], "queued", "{answer}");

    let calls = app
        .qikchat
        .received_requests()
        .await
        .expect("wiremock records requests");
    assert_eq!(calls.len(), 1, "Qikchat is called exactly once");
    let call = &calls[0];
    assert_eq!(
        call.headers
            .get("QIKCHAT-API-KEY")
            .and_then(|v| v.to_str().ok()),
        Some(KEY),
        "the key travels in QIKCHAT-API-KEY"
    );
    assert!(
        call.headers.get("authorization").is_none(),
        "the caller's Authorization must not reach Qikchat"
    );
    assert!(
        call.headers
            .values()
            .all(|v| !v.to_str().unwrap_or_default().contains(TOKEN)),
        "the caller's token must not reach Qikchat"
    );
    call.body_json().expect("the relay sends JSON to Qikchat")
}

// --- text -----------------------------------------------------------------------------------

#[tokio::test]
async fn send_passes_a_text_to_qikchat_without_preview_url() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "text", "text": "Your OTP is 4711", "preview_url": null
    }))
    .await;
    assert_eq!(
        sent,
        json!({"to_contact": RECIPIENT, "type": "text", "text": {"body": "Your OTP is 4711"}})
    );
}

#[tokio::test]
async fn send_leaves_preview_url_out_when_it_is_false() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "text", "text": "See https://example.com", "preview_url": false
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "text", "text": {"body": "See https://example.com"}
        })
    );
}

#[tokio::test]
async fn send_puts_preview_url_at_the_top_level_when_it_is_true() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "text", "text": "See https://example.com", "preview_url": true
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "text", "preview_url": true,
            "text": {"body": "See https://example.com"}
        })
    );
}

// --- media ----------------------------------------------------------------------------------

#[tokio::test]
async fn send_passes_an_image_with_its_caption_to_qikchat() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "image",
        "link": "https://cdn.example.com/invoice.png", "caption": "Your invoice"
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "image",
            "image": {"link": "https://cdn.example.com/invoice.png", "caption": "Your invoice"}
        })
    );
}

#[tokio::test]
async fn send_leaves_an_empty_caption_and_null_fields_out_of_an_image() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "image", "link": "https://cdn.example.com/invoice.png",
        "caption": "", "filename": null, "text": null, "preview_url": null, "template": null
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "image",
            "image": {"link": "https://cdn.example.com/invoice.png"}
        })
    );
}

#[tokio::test]
async fn send_passes_a_presigned_media_link_to_qikchat_unchanged() {
    let link = concat!(
        "https://bucket.s3.amazonaws.com/invoice.png",
        "?X-Amz-Expires=300&X-Amz-Signature=ab%2Fcd%3D&x=1"
    );
    let sent = relayed(json!({"to": TO_AS_TYPED, "type": "image", "link": link})).await;
    assert_eq!(
        sent,
        json!({"to_contact": RECIPIENT, "type": "image", "image": {"link": link}})
    );
}

#[tokio::test]
async fn send_passes_a_video_with_its_caption_to_qikchat() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "video",
        "link": "https://cdn.example.com/welcome.mp4", "caption": "Welcome aboard"
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "video",
            "video": {"link": "https://cdn.example.com/welcome.mp4", "caption": "Welcome aboard"}
        })
    );
}

#[tokio::test]
async fn send_passes_an_audio_link_only_to_qikchat() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "audio", "link": "https://cdn.example.com/note.ogg",
        "caption": null
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "audio",
            "audio": {"link": "https://cdn.example.com/note.ogg"}
        })
    );
}

#[tokio::test]
async fn send_passes_a_document_with_its_caption_and_filename_to_qikchat() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "document", "link": "https://cdn.example.com/order.pdf",
        "caption": "Your order", "filename": "order-1234.pdf"
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "document",
            "document": {
                "link": "https://cdn.example.com/order.pdf",
                "caption": "Your order",
                "filename": "order-1234.pdf"
            }
        })
    );
}

#[tokio::test]
async fn send_passes_a_document_without_caption_or_filename_to_qikchat() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "document", "link": "https://cdn.example.com/order.pdf"
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "document",
            "document": {"link": "https://cdn.example.com/order.pdf"}
        })
    );
}

#[tokio::test]
async fn send_leaves_an_empty_caption_and_a_null_filename_out_of_a_document() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "document", "link": "https://cdn.example.com/order.pdf",
        "caption": "", "filename": null
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "document",
            "document": {"link": "https://cdn.example.com/order.pdf"}
        })
    );
}

#[tokio::test]
async fn send_passes_a_sticker_link_only_to_qikchat() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "sticker", "link": "https://cdn.example.com/thanks.webp"
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "sticker",
            "sticker": {"link": "https://cdn.example.com/thanks.webp"}
        })
    );
}

// --- location and contact -------------------------------------------------------------------

#[tokio::test]
async fn send_passes_a_location_with_its_name_and_address_to_qikchat() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "location",
        "location": {
            "latitude": 19.076, "longitude": 72.8777,
            "name": "Head office", "address": "Nariman Point, Mumbai"
        }
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "location",
            "location": {
                "latitude": 19.076, "longitude": 72.8777,
                "name": "Head office", "address": "Nariman Point, Mumbai"
            }
        })
    );
}

#[tokio::test]
async fn send_leaves_empty_and_null_location_fields_out() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "location",
        "location": {"latitude": -33.8688, "longitude": 151.2093, "name": "", "address": null}
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "location",
            "location": {"latitude": -33.8688, "longitude": 151.2093}
        })
    );
}

#[tokio::test]
async fn send_passes_a_contact_with_unknown_fields_unchanged_and_nulls_stripped() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "contact",
        "contact": {
            "name": {"formatted_name": "Support Desk", "first_name": "Support", "last_name": null},
            "phones": [{"phone": "+918080808081", "type": "WORK", "wa_id": null}],
            "emails": [{"email": "help@example.com", "type": "WORK"}],
            "org": {"company": "Example Ltd", "department": null},
            "birthday": null,
            "nickname": "Desk"
        }
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "contact",
            "contact": {
                "name": {"formatted_name": "Support Desk", "first_name": "Support"},
                "phones": [{"phone": "+918080808081", "type": "WORK"}],
                "emails": [{"email": "help@example.com", "type": "WORK"}],
                "org": {"company": "Example Ltd"},
                "nickname": "Desk"
            }
        })
    );
}

// --- interactive ----------------------------------------------------------------------------

#[tokio::test]
async fn send_passes_an_interactive_button_message_to_qikchat_unchanged() {
    let interactive = json!({
        "type": "button",
        "header": {"type": "text", "text": "Appointment"},
        "body": {"text": "Confirm your appointment on Friday?"},
        "footer": {"text": "Reply by Thursday"},
        "action": {"buttons": [
            {"type": "reply", "reply": {"id": "confirm", "title": "Confirm"}},
            {"type": "reply", "reply": {"id": "reschedule", "title": "Reschedule"}}
        ]}
    });
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "interactive", "interactive": interactive
    }))
    .await;
    assert_eq!(
        sent,
        json!({"to_contact": RECIPIENT, "type": "interactive", "interactive": interactive})
    );
}

#[tokio::test]
async fn send_passes_an_interactive_list_to_qikchat_without_its_nulls() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "interactive",
        "interactive": {
            "type": "list",
            "header": null,
            "body": {"text": "Which plan are you interested in?"},
            "footer": null,
            "action": {"button": "See plans", "sections": [{"title": "Plans", "rows": [
                {"id": "basic", "title": "Basic", "description": "For one person"},
                {"id": "family", "title": "Family", "description": null}
            ]}]}
        }
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "interactive",
            "interactive": {
                "type": "list",
                "body": {"text": "Which plan are you interested in?"},
                "action": {"button": "See plans", "sections": [{"title": "Plans", "rows": [
                    {"id": "basic", "title": "Basic", "description": "For one person"},
                    {"id": "family", "title": "Family"}
                ]}]}
            }
        })
    );
}

#[tokio::test]
async fn send_leaves_empty_optional_list_fields_out_of_an_interactive_list() {
    // The contract: no null or empty optional fields go to Qikchat. A single section's title and
    // a row's description are optional fields the relay knows and checks.
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "interactive",
        "interactive": {
            "type": "list",
            "body": {"text": "Which plan are you interested in?"},
            "action": {"button": "See plans", "sections": [{"title": "", "rows": [
                {"id": "basic", "title": "Basic", "description": ""}
            ]}]}
        }
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "interactive",
            "interactive": {
                "type": "list",
                "body": {"text": "Which plan are you interested in?"},
                "action": {"button": "See plans", "sections": [{"rows": [
                    {"id": "basic", "title": "Basic"}
                ]}]}
            }
        })
    );
}

// --- template -------------------------------------------------------------------------------

#[tokio::test]
async fn send_turns_a_template_text_header_and_body_parameters_into_components() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "template",
        "template": {
            "name": "order_update", "language": "en",
            "header": {"type": "text", "text": "Order #1234", "link": null},
            "body": ["Siva", "#1234"],
            "buttons": null
        }
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "template",
            "template": {
                "name": "order_update", "language": "en",
                "components": [
                    {"type": "header", "parameters": [{"type": "text", "text": "Order #1234"}]},
                    {"type": "body", "parameters": [
                        {"type": "text", "text": "Siva"},
                        {"type": "text", "text": "#1234"}
                    ]}
                ]
            }
        })
    );
}

#[tokio::test]
async fn send_turns_a_template_image_header_into_an_image_parameter() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "template",
        "template": {
            "name": "spring_sale", "language": "en_US",
            "header": {"type": "image", "link": "https://cdn.example.com/banner.png"}
        }
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "template",
            "template": {
                "name": "spring_sale", "language": "en_US",
                "components": [{"type": "header", "parameters": [
                    {"type": "image", "image": {"link": "https://cdn.example.com/banner.png"}}
                ]}]
            }
        })
    );
}

#[tokio::test]
async fn send_turns_a_template_video_header_into_a_video_parameter() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "template",
        "template": {
            "name": "welcome", "language": "en",
            "header": {"type": "video", "link": "https://cdn.example.com/welcome.mp4"}
        }
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "template",
            "template": {
                "name": "welcome", "language": "en",
                "components": [{"type": "header", "parameters": [
                    {"type": "video", "video": {"link": "https://cdn.example.com/welcome.mp4"}}
                ]}]
            }
        })
    );
}

#[tokio::test]
async fn send_passes_a_template_document_header_with_its_filename() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "template",
        "template": {
            "name": "order_update", "language": "en",
            "header": {
                "type": "document", "link": "https://cdn.example.com/o.pdf", "filename": "order.pdf"
            },
            "body": ["Siva"]
        }
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "template",
            "template": {
                "name": "order_update", "language": "en",
                "components": [
                    {"type": "header", "parameters": [{
                        "type": "document",
                        "document": {
                            "link": "https://cdn.example.com/o.pdf", "filename": "order.pdf"
                        }
                    }]},
                    {"type": "body", "parameters": [{"type": "text", "text": "Siva"}]}
                ]
            }
        })
    );
}

#[tokio::test]
async fn send_leaves_an_empty_filename_out_of_a_template_document_header() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "template",
        "template": {
            "name": "order_update", "language": "en",
            "header": {"type": "document", "link": "https://cdn.example.com/o.pdf", "filename": ""}
        }
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "template",
            "template": {
                "name": "order_update", "language": "en",
                "components": [{"type": "header", "parameters": [{
                    "type": "document", "document": {"link": "https://cdn.example.com/o.pdf"}
                }]}]
            }
        })
    );
}

#[tokio::test]
async fn send_turns_template_buttons_into_button_components_indexed_by_position() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "template",
        "template": {
            "name": "order_shipped", "language": "en",
            "buttons": [
                {"type": "url", "text": "orders/1234", "payload": null},
                {"type": "quick_reply", "payload": "STOP_UPDATES"}
            ]
        }
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "template",
            "template": {
                "name": "order_shipped", "language": "en",
                "components": [
                    {"type": "button", "sub_type": "url", "index": "0",
                     "parameters": [{"type": "text", "text": "orders/1234"}]},
                    {"type": "button", "sub_type": "quick_reply", "index": "1",
                     "parameters": [{"type": "payload", "payload": "STOP_UPDATES"}]}
                ]
            }
        })
    );
}

#[tokio::test]
async fn send_passes_raw_template_components_unchanged_without_their_nulls() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "template",
        "template": {
            "name": "order_update", "language": "en_US", "header": null,
            "components": [
                {"type": "header", "parameters": [
                    {"type": "image",
                     "image": {"link": "https://cdn.example.com/banner.png", "caption": null}}
                ]},
                {"type": "body", "parameters": [
                    {"type": "text", "text": "Siva"},
                    {"type": "currency",
                     "currency": {"fallback_value": "$10", "code": "USD", "amount_1000": 10000}}
                ]},
                {"type": "button", "sub_type": "url", "index": "0",
                 "parameters": [{"type": "text", "text": "orders/1234"}]}
            ]
        }
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "template",
            "template": {
                "name": "order_update", "language": "en_US",
                "components": [
                    {"type": "header", "parameters": [
                        {"type": "image", "image": {"link": "https://cdn.example.com/banner.png"}}
                    ]},
                    {"type": "body", "parameters": [
                        {"type": "text", "text": "Siva"},
                        {"type": "currency",
                         "currency": {"fallback_value": "$10", "code": "USD", "amount_1000": 10000}}
                    ]},
                    {"type": "button", "sub_type": "url", "index": "0",
                     "parameters": [{"type": "text", "text": "orders/1234"}]}
                ]
            }
        })
    );
}

#[tokio::test]
async fn send_leaves_components_out_of_a_template_without_parameters() {
    let sent = relayed(json!({
        "to": TO_AS_TYPED, "type": "template",
        "template": {"name": "hello_world", "language": "en_US"}
    }))
    .await;
    assert_eq!(
        sent,
        json!({
            "to_contact": RECIPIENT, "type": "template",
            "template": {"name": "hello_world", "language": "en_US"}
        })
    );
}

// --- the documented examples, and sandbox mode ----------------------------------------------

/// A relay whose callers file declares what the `template_named` example needs (a body by name
/// is only for a declared template); the directory must outlive the relay's reloads.
async fn relay_for_the_examples(extra: &[(&str, &str)]) -> (TempDir, TestApp) {
    let dir = TempDir::new();
    let file = dir.write(
        "clients.toml",
        &format!(
            "[clients.billing]\ntoken = \"{TOKEN}\"\n\n[templates.delivery_slot]\n\
             languages = [\"en\"]\nbody = [\"name\", \"order\", \"day\"]\n"
        ),
    );
    let mut settings = vec![("RELAY_CLIENTS_FILE", file.as_str())];
    settings.extend_from_slice(extra);
    let app = spawn_app_with(&settings).await;
    (dir, app)
}

#[tokio::test]
async fn send_accepts_every_documented_example_with_one_qikchat_call_each() {
    let (_dir, app) = relay_for_the_examples(&[]).await;
    let examples = examples();
    app.qikchat_accepts(QIKCHAT_ID, examples.len() as u64).await;

    for (sent_so_far, (name, example)) in examples.iter().enumerate() {
        let response = app.send(example).await;
        let status = response.status();
        let answer = response.text().await.expect("an answer body");
        assert_eq!(status, 200, "example {name}: {answer}");
        let answer: Value = serde_json::from_str(&answer).expect("a JSON answer");
        assert_eq!(answer["id"], QIKCHAT_ID, "example {name}: {answer}");
        assert_eq!(answer["status"], "queued", "example {name}: {answer}");

        let bodies = app.qikchat_bodies().await;
        assert_eq!(
            bodies.len(),
            sent_so_far + 1,
            "example {name} calls Qikchat once"
        );
        let body = &bodies[sent_so_far];
        assert_eq!(body["type"], example["type"], "example {name}: {body}");
        assert_eq!(body["to_contact"], RECIPIENT, "example {name}: {body}");
    }
}

#[tokio::test]
async fn sandbox_mode_answers_with_a_sandbox_id_and_never_calls_qikchat() {
    let (_dir, app) = relay_for_the_examples(&[("RELAY_SANDBOX", "true")]).await;
    app.qikchat_expects_no_call().await;

    let mut ids = Vec::new();
    for (name, example) in examples() {
        let response = app.send(&example).await;
        let status = response.status();
        let answer = response.text().await.expect("an answer body");
        assert_eq!(status, 200, "example {name}: {answer}");
        let answer: Value = serde_json::from_str(&answer).expect("a JSON answer");
        let id = answer["id"].as_str().unwrap_or_default().to_owned();
        assert!(id.starts_with("sandbox-"), "example {name}: {answer}");
        assert_eq!(answer["status"], "queued", "example {name}: {answer}");
        assert!(!ids.contains(&id), "example {name} got a fresh id: {id}");
        ids.push(id);
    }
    assert!(
        app.qikchat_bodies().await.is_empty(),
        "the sandbox never calls Qikchat"
    );
}

#[tokio::test]
async fn sandbox_mode_still_refuses_invalid_requests() {
    let app = spawn_app_with(&[("RELAY_SANDBOX", "true")]).await;
    app.qikchat_expects_no_call().await;

    let mut request = text_message();
    request["to"] = json!("8080808080");
    request["caption"] = json!("not on a text");
    let response = app.send(&request).await;

    let problem = problem(response, 422, "invalid_request").await;
    assert_eq!(named_fields(&problem), ["caption", "to"], "{problem}");
    assert!(app.qikchat_bodies().await.is_empty());
}
