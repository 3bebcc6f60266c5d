//! `POST /send` refuses what it cannot send: 422 `invalid_request` naming every bad field, 400
//! for a body that is not JSON, 413 for one over the limit; Qikchat is never called for any of
//! them.
//!
//! Most tests are tables: each case has a name that failures report, a request, and the exact
//! field paths the answer must name.

use serde_json::{Value, json};

use crate::helpers::{
    RECIPIENT, TOKEN, TestApp, named_fields, problem, spawn_app, spawn_app_with, text_message,
};

/// A request the relay must refuse, and every field its answer must name (in any order).
type Refused = (&'static str, Value, &'static [&'static str]);

/// Sends every case to one relay whose Qikchat must not be called, and checks each answer is a
/// 422 `invalid_request` naming exactly the case's fields.
async fn assert_refused(cases: &[Refused]) {
    let app = spawn_app().await;
    app.qikchat_expects_no_call().await;
    for (case, request, fields) in cases {
        let response = app.send(request).await;
        assert_eq!(response.status(), 422, "{case}: {request}");
        let problem = problem(response, 422, "invalid_request").await;
        let mut expected: Vec<&str> = fields.to_vec();
        expected.sort_unstable();
        assert_eq!(named_fields(&problem), expected, "{case}: {problem}");
        assert_no_qikchat_call(&app, case).await;
    }
}

/// Sends every case to one relay whose Qikchat accepts them, and checks each is sent, once.
async fn assert_accepted(cases: &[(&str, Value)]) {
    let app = spawn_app().await;
    app.qikchat_accepts("52JH6WmuSruAVyXvBBYemd0Ia", cases.len() as u64)
        .await;
    for (sent_so_far, (case, request)) in cases.iter().enumerate() {
        let response = app.send(request).await;
        let status = response.status();
        let answer = response.text().await.expect("an answer body");
        assert_eq!(status, 200, "{case}: {answer}");
        let calls = app.qikchat_bodies().await.len();
        assert_eq!(calls, sent_so_far + 1, "{case} calls Qikchat once");
    }
}

async fn assert_no_qikchat_call(app: &TestApp, case: &str) {
    assert_eq!(
        app.qikchat_bodies().await,
        Vec::<Value>::new(),
        "{case}: Qikchat must not be called"
    );
}

/// `count` ASCII characters, so also `count` bytes.
fn chars(count: usize) -> String {
    "a".repeat(count)
}

/// `request` with `field` set to `value`.
fn with(mut request: Value, field: &str, value: Value) -> Value {
    request[field] = value;
    request
}

fn image() -> Value {
    json!({"to": RECIPIENT, "type": "image", "link": "https://cdn.example.com/a.png"})
}

fn audio() -> Value {
    json!({"to": RECIPIENT, "type": "audio", "link": "https://cdn.example.com/a.ogg"})
}

fn location(location: Value) -> Value {
    json!({"to": RECIPIENT, "type": "location", "location": location})
}

fn contact(contact: Value) -> Value {
    json!({"to": RECIPIENT, "type": "contact", "contact": contact})
}

fn interactive(interactive: Value) -> Value {
    json!({"to": RECIPIENT, "type": "interactive", "interactive": interactive})
}

fn template(template: Value) -> Value {
    json!({"to": RECIPIENT, "type": "template", "template": template})
}

fn reply(id: &str, title: &str) -> Value {
    json!({"type": "reply", "reply": {"id": id, "title": title}})
}

/// A reply-button message with these buttons.
fn buttons(buttons: Value) -> Value {
    interactive(
        json!({"type": "button", "body": {"text": "Pick one"}, "action": {"buttons": buttons}}),
    )
}

fn row(id: &str) -> Value {
    json!({"id": id, "title": "A row"})
}

/// A list message with these sections behind a "Choose" button.
fn list(sections: Value) -> Value {
    interactive(json!({
        "type": "list", "body": {"text": "Pick one"},
        "action": {"button": "Choose", "sections": sections}
    }))
}

/// A simplified template named `order_update` in `en`, with these extra fields.
fn simple_template(extra: Value) -> Value {
    let mut object = json!({"name": "order_update", "language": "en"});
    for (key, value) in extra.as_object().expect("an object") {
        object[key] = value.clone();
    }
    template(object)
}

fn url_buttons(count: usize) -> Value {
    (0..count)
        .map(|i| json!({"type": "url", "text": format!("orders/{i}")}))
        .collect()
}

// --- type, to and the top-level fields ------------------------------------------------------

#[tokio::test]
async fn send_refuses_a_missing_unknown_or_non_string_type() {
    let typed = |kind: Value| json!({"to": RECIPIENT, "type": kind, "text": "Hi"});
    assert_refused(&[
        (
            "missing type",
            json!({"to": RECIPIENT, "text": "Hi"}),
            &["type"],
        ),
        ("null type", typed(Value::Null), &["type"]),
        ("unknown type", typed(json!("fax")), &["type"]),
        ("type in capitals", typed(json!("TEXT")), &["type"]),
        ("numeric type", typed(json!(1)), &["type"]),
        ("array type", typed(json!(["text"])), &["type"]),
    ])
    .await;
}

#[tokio::test]
async fn send_refuses_a_recipient_that_is_not_in_international_form() {
    let to = |to: Value| with(text_message(), "to", to);
    assert_refused(&[
        ("missing to", json!({"type": "text", "text": "Hi"}), &["to"]),
        ("empty to", to(json!("")), &["to"]),
        ("numeric to", to(json!(918_080_808_080_u64)), &["to"]),
        ("to without +", to(json!("918080808080")), &["to"]),
        (
            "to with 00 instead of +",
            to(json!("00918080808080")),
            &["to"],
        ),
        ("to with 7 digits", to(json!("+1234567")), &["to"]),
        ("to with 16 digits", to(json!("+1234567890123456")), &["to"]),
        ("to with letters", to(json!("+91 80a08 08080")), &["to"]),
        ("to with a + only", to(json!("+")), &["to"]),
        ("to starting with 0", to(json!("+0918080808080")), &["to"]),
    ])
    .await;
}

#[tokio::test]
async fn send_refuses_unknown_fields_and_fields_of_another_type_that_carry_a_value() {
    assert_refused(&[
        (
            "typo captoin",
            with(image(), "captoin", json!("Your invoice")),
            &["captoin"],
        ),
        (
            "unknown field",
            with(text_message(), "priority", json!("high")),
            &["priority"],
        ),
        (
            "caption on audio",
            with(audio(), "caption", json!("Listen")),
            &["caption"],
        ),
        (
            "caption on sticker",
            json!({"to": RECIPIENT, "type": "sticker",
                   "link": "https://cdn.example.com/a.webp", "caption": "Thanks"}),
            &["caption"],
        ),
        (
            "text on image",
            with(image(), "text", json!("Hi")),
            &["text"],
        ),
        (
            "filename on image",
            with(image(), "filename", json!("a.png")),
            &["filename"],
        ),
        (
            "preview_url on image",
            with(image(), "preview_url", json!(true)),
            &["preview_url"],
        ),
        (
            "link on text",
            with(text_message(), "link", json!("https://x.example/a")),
            &["link"],
        ),
        (
            "template on text",
            with(
                text_message(),
                "template",
                json!({"name": "t", "language": "en"}),
            ),
            &["template"],
        ),
    ])
    .await;
}

#[tokio::test]
async fn send_accepts_fields_of_another_type_set_to_null() {
    assert_accepted(&[
        (
            "caption null on audio",
            with(audio(), "caption", Value::Null),
        ),
        ("text null on image", with(image(), "text", Value::Null)),
        (
            "every field of other types null on text",
            json!({
                "to": RECIPIENT, "type": "text", "text": "Hi", "preview_url": null,
                "link": null, "caption": null, "filename": null, "location": null,
                "contact": null, "interactive": null, "template": null
            }),
        ),
    ])
    .await;
}

#[tokio::test]
async fn send_refuses_a_body_that_is_not_a_json_object() {
    assert_refused(&[
        ("array", json!([1, 2]), &["body"]),
        ("array of a message", json!([text_message()]), &["body"]),
        ("string", json!("hello"), &["body"]),
        ("number", json!(42), &["body"]),
        ("null", Value::Null, &["body"]),
    ])
    .await;
}

#[tokio::test]
async fn send_names_every_bad_field_in_one_answer() {
    assert_refused(&[
        (
            "four bad top-level fields",
            json!({"to": "12", "type": "image", "link": "ftp://x", "caption": 5, "captoin": "x"}),
            &["caption", "captoin", "link", "to"],
        ),
        (
            "bad fields at several depths",
            json!({"to": "+91", "type": "template", "template": {
                "name": "", "language": {"code": "en"},
                "header": {"type": "image", "text": "x"},
                "buttons": [{"type": "url", "payload": "p"}]
            }}),
            &[
                "to",
                "template.name",
                "template.language",
                "template.header.text",
                "template.header.link",
                "template.buttons[0].payload",
                "template.buttons[0].text",
            ],
        ),
    ])
    .await;
}

// --- text and media -------------------------------------------------------------------------

#[tokio::test]
async fn send_refuses_text_that_is_missing_empty_too_long_or_not_a_string() {
    let text = text_message;
    assert_refused(&[
        (
            "missing text",
            json!({"to": RECIPIENT, "type": "text"}),
            &["text"],
        ),
        ("empty text", with(text(), "text", json!("")), &["text"]),
        (
            "4097 characters",
            with(text(), "text", json!(chars(4097))),
            &["text"],
        ),
        ("numeric text", with(text(), "text", json!(4711)), &["text"]),
        (
            "text as an object",
            with(text(), "text", json!({"body": "Hi"})),
            &["text"],
        ),
        (
            "preview_url a string",
            with(text(), "preview_url", json!("yes")),
            &["preview_url"],
        ),
        (
            "preview_url a number",
            with(text(), "preview_url", json!(1)),
            &["preview_url"],
        ),
    ])
    .await;
}

#[tokio::test]
async fn send_refuses_media_without_an_absolute_http_link_or_with_a_long_caption() {
    assert_refused(&[
        (
            "missing link",
            json!({"to": RECIPIENT, "type": "image"}),
            &["link"],
        ),
        ("empty link", with(image(), "link", json!("")), &["link"]),
        (
            "ftp link",
            with(image(), "link", json!("ftp://cdn.example.com/a.png")),
            &["link"],
        ),
        (
            "relative link",
            with(image(), "link", json!("/media/a.png")),
            &["link"],
        ),
        (
            "link without scheme",
            with(image(), "link", json!("cdn.example.com/a.png")),
            &["link"],
        ),
        (
            "data link",
            with(image(), "link", json!("data:image/png;base64,AAAA")),
            &["link"],
        ),
        (
            "file link",
            with(audio(), "link", json!("file:///etc/passwd")),
            &["link"],
        ),
        ("numeric link", with(image(), "link", json!(5)), &["link"]),
        (
            "caption 1025 characters",
            with(image(), "caption", json!(chars(1025))),
            &["caption"],
        ),
        (
            "caption a number",
            with(image(), "caption", json!(5)),
            &["caption"],
        ),
        (
            "document caption 1025 characters",
            json!({"to": RECIPIENT, "type": "document",
                   "link": "https://cdn.example.com/a.pdf", "caption": chars(1025)}),
            &["caption"],
        ),
        (
            "document filename a number",
            json!({"to": RECIPIENT, "type": "document",
                   "link": "https://cdn.example.com/a.pdf", "filename": 7}),
            &["filename"],
        ),
    ])
    .await;
}

// --- location and contact -------------------------------------------------------------------

#[tokio::test]
async fn send_refuses_a_location_out_of_range_not_made_of_numbers_or_with_unknown_fields() {
    assert_refused(&[
        (
            "missing location",
            json!({"to": RECIPIENT, "type": "location"}),
            &["location"],
        ),
        (
            "location a string",
            location(json!("Mumbai")),
            &["location"],
        ),
        (
            "latitude 91",
            location(json!({"latitude": 91, "longitude": 72.8})),
            &["location.latitude"],
        ),
        (
            "latitude -90.5",
            location(json!({"latitude": -90.5, "longitude": 72.8})),
            &["location.latitude"],
        ),
        (
            "longitude 181",
            location(json!({"latitude": 19.0, "longitude": 181})),
            &["location.longitude"],
        ),
        (
            "longitude -180.1",
            location(json!({"latitude": 19.0, "longitude": -180.1})),
            &["location.longitude"],
        ),
        (
            "coordinates as strings",
            location(json!({"latitude": "19.07", "longitude": "72.87"})),
            &["location.latitude", "location.longitude"],
        ),
        (
            "missing longitude",
            location(json!({"latitude": 19.0})),
            &["location.longitude"],
        ),
        (
            "typo nmae",
            location(json!({"latitude": 19.0, "longitude": 72.8, "nmae": "Office"})),
            &["location.nmae"],
        ),
        (
            "name a number",
            location(json!({"latitude": 19.0, "longitude": 72.8, "name": 5})),
            &["location.name"],
        ),
    ])
    .await;
}

#[tokio::test]
async fn send_refuses_a_contact_without_a_formatted_name_or_with_lists_that_are_not_arrays() {
    assert_refused(&[
        (
            "missing contact",
            json!({"to": RECIPIENT, "type": "contact"}),
            &["contact"],
        ),
        (
            "missing name",
            contact(json!({"phones": []})),
            &["contact.name"],
        ),
        (
            "name a string",
            contact(json!({"name": "Siva"})),
            &["contact.name"],
        ),
        (
            "missing formatted_name",
            contact(json!({"name": {"first_name": "Siva"}})),
            &["contact.name.formatted_name"],
        ),
        (
            "empty formatted_name",
            contact(json!({"name": {"formatted_name": ""}})),
            &["contact.name.formatted_name"],
        ),
        (
            "phones not an array",
            contact(json!({"name": {"formatted_name": "Siva"}, "phones": "+918080808081"})),
            &["contact.phones"],
        ),
        (
            "emails not an array",
            contact(
                json!({"name": {"formatted_name": "Siva"}, "emails": {"email": "s@x.example"}}),
            ),
            &["contact.emails"],
        ),
        (
            "org not an object",
            contact(json!({"name": {"formatted_name": "Siva"}, "org": "Example Ltd"})),
            &["contact.org"],
        ),
    ])
    .await;
}

// --- interactive ----------------------------------------------------------------------------

#[tokio::test]
async fn send_refuses_interactive_messages_with_a_wrong_type_body_header_or_footer() {
    let ok_buttons = json!({"buttons": [reply("yes", "Yes")]});
    assert_refused(&[
        (
            "missing interactive",
            json!({"to": RECIPIENT, "type": "interactive"}),
            &["interactive"],
        ),
        (
            "missing type",
            interactive(json!({"body": {"text": "Pick"}, "action": ok_buttons})),
            &["interactive.type"],
        ),
        (
            "unknown type",
            interactive(
                json!({"type": "carousel", "body": {"text": "Pick"}, "action": ok_buttons}),
            ),
            &["interactive.type"],
        ),
        (
            "missing body",
            interactive(json!({"type": "button", "action": ok_buttons})),
            &["interactive.body"],
        ),
        (
            "missing body.text",
            interactive(json!({"type": "button", "body": {}, "action": ok_buttons})),
            &["interactive.body.text"],
        ),
        (
            "body.text 1025 characters",
            interactive(
                json!({"type": "button", "body": {"text": chars(1025)}, "action": ok_buttons}),
            ),
            &["interactive.body.text"],
        ),
        (
            "header text 61 characters",
            interactive(json!({
                "type": "button", "header": {"type": "text", "text": chars(61)},
                "body": {"text": "Pick"}, "action": ok_buttons
            })),
            &["interactive.header.text"],
        ),
        (
            "footer 61 characters",
            interactive(json!({
                "type": "button", "body": {"text": "Pick"}, "footer": {"text": chars(61)},
                "action": ok_buttons
            })),
            &["interactive.footer.text"],
        ),
        (
            "missing action",
            interactive(json!({"type": "button", "body": {"text": "Pick"}})),
            &["interactive.action"],
        ),
    ])
    .await;
}

#[tokio::test]
async fn send_refuses_reply_buttons_that_break_qikchats_limits() {
    assert_refused(&[
        (
            "no buttons",
            buttons(json!([])),
            &["interactive.action.buttons"],
        ),
        (
            "4 buttons",
            buttons(json!([
                reply("a", "A"),
                reply("b", "B"),
                reply("c", "C"),
                reply("d", "D")
            ])),
            &["interactive.action.buttons"],
        ),
        (
            "buttons not an array",
            buttons(json!(reply("a", "A"))),
            &["interactive.action.buttons"],
        ),
        (
            "title 21 characters",
            buttons(json!([reply("a", &chars(21))])),
            &["interactive.action.buttons[0].reply.title"],
        ),
        (
            "duplicate ids",
            buttons(json!([reply("yes", "Yes"), reply("yes", "Sure")])),
            &["interactive.action.buttons[1].reply.id"],
        ),
        (
            "type url instead of reply",
            buttons(json!([{"type": "url", "reply": {"id": "a", "title": "A"}}])),
            &["interactive.action.buttons[0].type"],
        ),
        (
            "missing reply",
            buttons(json!([{"type": "reply"}])),
            &["interactive.action.buttons[0].reply"],
        ),
        (
            "missing id and title",
            buttons(json!([{"type": "reply", "reply": {}}])),
            &[
                "interactive.action.buttons[0].reply.id",
                "interactive.action.buttons[0].reply.title",
            ],
        ),
    ])
    .await;
}

#[tokio::test]
async fn send_refuses_lists_that_break_qikchats_limits() {
    let six: Vec<Value> = (0..6).map(|i| row(&format!("a{i}"))).collect();
    let five: Vec<Value> = (0..5).map(|i| row(&format!("b{i}"))).collect();
    assert_refused(&[
        (
            "11 rows in all",
            list(json!([{"title": "A", "rows": six}, {"title": "B", "rows": five}])),
            &["interactive.action.sections"],
        ),
        (
            "no sections",
            list(json!([])),
            &["interactive.action.sections"],
        ),
        (
            "row title 25 characters",
            list(json!([{"rows": [{"id": "r", "title": chars(25)}]}])),
            &["interactive.action.sections[0].rows[0].title"],
        ),
        (
            "row description 73 characters",
            list(json!([{"rows": [{"id": "r", "title": "R", "description": chars(73)}]}])),
            &["interactive.action.sections[0].rows[0].description"],
        ),
        (
            "row without id",
            list(json!([{"rows": [{"title": "R"}]}])),
            &["interactive.action.sections[0].rows[0].id"],
        ),
        (
            "several sections without titles",
            list(json!([{"rows": [row("a")]}, {"rows": [row("b")]}])),
            &[
                "interactive.action.sections[0].title",
                "interactive.action.sections[1].title",
            ],
        ),
        (
            "section title 25 characters",
            list(json!([{"title": chars(25), "rows": [row("a")]}])),
            &["interactive.action.sections[0].title"],
        ),
        (
            "section without rows",
            list(json!([{"title": "A"}])),
            &[
                "interactive.action.sections",
                "interactive.action.sections[0].rows",
            ],
        ),
        (
            "list button text 21 characters",
            interactive(json!({
                "type": "list", "body": {"text": "Pick one"},
                "action": {"button": chars(21), "sections": [{"rows": [row("a")]}]}
            })),
            &["interactive.action.button"],
        ),
        (
            "missing list button",
            interactive(json!({
                "type": "list", "body": {"text": "Pick one"},
                "action": {"sections": [{"rows": [row("a")]}]}
            })),
            &["interactive.action.button"],
        ),
    ])
    .await;
}

// --- template -------------------------------------------------------------------------------

#[tokio::test]
async fn send_refuses_a_template_without_a_name_or_a_plain_language() {
    assert_refused(&[
        (
            "missing template",
            json!({"to": RECIPIENT, "type": "template"}),
            &["template"],
        ),
        (
            "template a string",
            template(json!("order_update")),
            &["template"],
        ),
        (
            "missing name",
            template(json!({"language": "en"})),
            &["template.name"],
        ),
        (
            "empty name",
            template(json!({"name": "", "language": "en"})),
            &["template.name"],
        ),
        (
            "missing language",
            template(json!({"name": "order_update"})),
            &["template.language"],
        ),
        (
            "language as Meta's object",
            template(json!({"name": "order_update", "language": {"code": "en"}})),
            &["template.language"],
        ),
        (
            "unknown template field",
            template(json!({"name": "order_update", "language": "en", "params": ["Siva"]})),
            &["template.params"],
        ),
    ])
    .await;
}

#[tokio::test]
async fn send_refuses_template_headers_with_the_wrong_fields() {
    let header = |header: Value| simple_template(json!({"header": header}));
    assert_refused(&[
        (
            "header of unknown type",
            header(json!({"type": "audio", "link": "https://x.example/a.ogg"})),
            &["template.header.type"],
        ),
        (
            "header without type",
            header(json!({"text": "Hi"})),
            &["template.header.type"],
        ),
        (
            "image header without link",
            header(json!({"type": "image"})),
            &["template.header.link"],
        ),
        (
            "image header with an ftp link",
            header(json!({"type": "image", "link": "ftp://x.example/a.png"})),
            &["template.header.link"],
        ),
        (
            "text header without text",
            header(json!({"type": "text"})),
            &["template.header.text"],
        ),
        (
            "text header with a link",
            header(json!({"type": "text", "text": "Hi", "link": "https://x.example/a.png"})),
            &["template.header.link"],
        ),
        (
            "image header with a document filename",
            header(
                json!({"type": "image", "link": "https://x.example/a.png", "filename": "a.png"}),
            ),
            &["template.header.filename"],
        ),
        (
            "image header with text",
            header(json!({"type": "image", "link": "https://x.example/a.png", "text": "Hi"})),
            &["template.header.text"],
        ),
        (
            "unknown header field",
            header(json!({"type": "image", "url": "https://x.example/a.png"})),
            &["template.header.link", "template.header.url"],
        ),
    ])
    .await;
}

#[tokio::test]
async fn send_refuses_template_body_parameters_that_are_not_non_empty_strings() {
    assert_refused(&[
        (
            "empty body parameter",
            simple_template(json!({"body": ["Siva", ""]})),
            &["template.body[1]"],
        ),
        (
            "numeric body parameter",
            simple_template(json!({"body": [1234]})),
            &["template.body[0]"],
        ),
        (
            "body a string",
            simple_template(json!({"body": "Siva"})),
            &["template.body"],
        ),
    ])
    .await;
}

#[tokio::test]
async fn send_refuses_template_buttons_with_the_wrong_fields() {
    assert_refused(&[
        (
            "url button with a payload",
            simple_template(
                json!({"buttons": [{"type": "url", "text": "orders/1", "payload": "p"}]}),
            ),
            &["template.buttons[0].payload"],
        ),
        (
            "url button without text",
            simple_template(json!({"buttons": [{"type": "url"}]})),
            &["template.buttons[0].text"],
        ),
        (
            "quick_reply without payload",
            simple_template(json!({"buttons": [{"type": "quick_reply"}]})),
            &["template.buttons[0].payload"],
        ),
        (
            "quick_reply with text",
            simple_template(
                json!({"buttons": [{"type": "quick_reply", "payload": "p", "text": "t"}]}),
            ),
            &["template.buttons[0].text"],
        ),
        (
            "button of unknown type",
            simple_template(json!({"buttons": [{"type": "call", "text": "x"}]})),
            &["template.buttons[0].type"],
        ),
        (
            "unknown button field",
            simple_template(json!({"buttons": [{"type": "url", "text": "x", "index": 0}]})),
            &["template.buttons[0].index"],
        ),
        (
            "11 buttons",
            simple_template(json!({"buttons": url_buttons(11)})),
            &["template.buttons"],
        ),
    ])
    .await;
}

#[tokio::test]
async fn send_refuses_raw_components_mixed_with_the_simplified_form_or_malformed() {
    let raw = |components: Value| simple_template(json!({"components": components}));
    assert_refused(&[
        (
            "components together with body",
            simple_template(json!({"body": ["Siva"], "components": []})),
            &["template.components"],
        ),
        (
            "components together with header",
            simple_template(json!({"header": {"type": "text", "text": "Hi"}, "components": []})),
            &["template.components"],
        ),
        (
            "components not an array",
            raw(json!({"type": "body"})),
            &["template.components"],
        ),
        (
            "component not an object",
            raw(json!(["body"])),
            &["template.components[0]"],
        ),
        (
            "component without type",
            raw(json!([{"parameters": [{"type": "text", "text": "Siva"}]}])),
            &["template.components[0].type"],
        ),
        (
            "component parameters not an array",
            raw(json!([{"type": "body", "parameters": {"type": "text", "text": "Siva"}}])),
            &["template.components[0].parameters"],
        ),
    ])
    .await;
}

// --- what is accepted right at the limits ---------------------------------------------------

#[tokio::test]
async fn send_accepts_requests_right_at_every_limit() {
    let ten: Vec<Value> = (0..10)
        .map(|i| json!({"id": format!("r{i}"), "title": chars(24), "description": chars(72)}))
        .collect();
    let (first, second) = ten.split_at(4);
    assert_accepted(&[
        (
            "4096 multi-byte characters",
            with(text_message(), "text", json!("é".repeat(4096))),
        ),
        ("8 digits", with(text_message(), "to", json!("+12345678"))),
        (
            "15 digits",
            with(text_message(), "to", json!("+123456789012345")),
        ),
        (
            "dashes, dots and parentheses",
            with(text_message(), "to", json!("+91 (808) 080-80.80")),
        ),
        (
            "caption of 1024 characters",
            with(image(), "caption", json!(chars(1024))),
        ),
        (
            "plain http link",
            with(image(), "link", json!("http://cdn.example.com/a.png")),
        ),
        (
            "coordinates at their bounds",
            location(json!({"latitude": -90, "longitude": 180})),
        ),
        (
            "3 reply buttons with 20-character titles, 60-character header and footer",
            interactive(json!({
                "type": "button", "header": {"type": "text", "text": chars(60)},
                "body": {"text": chars(1024)}, "footer": {"text": chars(60)},
                "action": {"buttons": [
                    reply("a", &chars(20)), reply("b", &chars(20)), reply("c", &chars(20))
                ]}
            })),
        ),
        (
            "10 rows in all over two titled sections",
            interactive(json!({
                "type": "list", "body": {"text": "Pick one"},
                "action": {"button": chars(20), "sections": [
                    {"title": chars(24), "rows": first}, {"title": "B", "rows": second}
                ]}
            })),
        ),
        (
            "10 template buttons",
            simple_template(json!({"buttons": url_buttons(10)})),
        ),
        (
            "empty raw components",
            simple_template(json!({"components": []})),
        ),
    ])
    .await;
}

// --- bodies that are not JSON, or too large -------------------------------------------------

#[tokio::test]
async fn send_refuses_bodies_that_are_not_json_with_400_malformed_request() {
    let valid = text_message().to_string();
    let cases: [(&str, Option<&str>, String); 5] = [
        (
            "invalid JSON",
            Some("application/json"),
            r#"{"to": "+918080808080","#.to_owned(),
        ),
        ("empty body", Some("application/json"), String::new()),
        ("missing Content-Type", None, valid.clone()),
        ("text/plain", Some("text/plain"), valid.clone()),
        (
            "form encoded",
            Some("application/x-www-form-urlencoded"),
            valid,
        ),
    ];
    let app = spawn_app().await;
    app.qikchat_expects_no_call().await;
    for (case, content_type, body) in cases {
        let mut request = app
            .http
            .post(app.url("/send"))
            .bearer_auth(TOKEN)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("the relay answers");
        assert_eq!(response.status(), 400, "{case}");
        problem(response, 400, "malformed_request").await;
        assert_no_qikchat_call(&app, case).await;
    }
}

#[tokio::test]
async fn send_accepts_json_with_a_charset_parameter() {
    let app = spawn_app().await;
    app.qikchat_accepts("52JH6WmuSruAVyXvBBYemd0Ia", 1).await;
    let response = app
        .http
        .post(app.url("/send"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json; charset=utf-8")
        .body(text_message().to_string())
        .send()
        .await
        .expect("the relay answers");
    assert_eq!(response.status(), 200);
}

/// A text message whose JSON is exactly `bytes` long.
fn text_of_bytes(bytes: usize) -> Value {
    let overhead = with(text_message(), "text", json!("")).to_string().len();
    let request = with(text_message(), "text", json!(chars(bytes - overhead)));
    assert_eq!(request.to_string().len(), bytes);
    request
}

#[tokio::test]
async fn send_refuses_a_body_one_byte_over_relay_max_body_bytes_with_413() {
    let app = spawn_app_with(&[("RELAY_MAX_BODY_BYTES", "1024")]).await;
    app.qikchat_expects_no_call().await;

    let response = app.send(&text_of_bytes(1025)).await;

    problem(response, 413, "payload_too_large").await;
    assert_no_qikchat_call(&app, "1025 bytes").await;
}

#[tokio::test]
async fn send_accepts_a_body_of_exactly_relay_max_body_bytes() {
    let app = spawn_app_with(&[("RELAY_MAX_BODY_BYTES", "1024")]).await;
    app.qikchat_accepts("52JH6WmuSruAVyXvBBYemd0Ia", 1).await;

    let response = app.send(&text_of_bytes(1024)).await;

    assert_eq!(response.status(), 200);
}
