use serde_json::json;

use super::*;

fn fields(body: Value) -> Vec<String> {
    let mut fields: Vec<String> = Message::parse(&body)
        .expect_err("the request should be refused")
        .into_iter()
        .map(|e| e.field)
        .collect();
    fields.sort();
    fields
}

#[test]
fn recipients_are_normalised() {
    for raw in [
        "+918080808080",
        "+91 80808 08080",
        "+91-8080-808-080",
        "+91 (808) 080.8080",
    ] {
        assert_eq!(Recipient::parse(raw).expect(raw).as_str(), "+918080808080");
    }
}

#[test]
fn recipients_without_plus_or_with_a_wrong_length_are_refused() {
    for raw in [
        "918080808080",
        "+1234567",
        "+1234567890123456",
        "+91 80a08",
        "+0918080808080",
        "",
        "+",
    ] {
        assert!(Recipient::parse(raw).is_err(), "{raw} should be refused");
    }
    assert!(
        Recipient::parse("+12345678").is_ok(),
        "8 digits is the minimum"
    );
    assert!(
        Recipient::parse("+123456789012345").is_ok(),
        "15 digits is the maximum"
    );
}

#[test]
fn recipients_are_masked_to_two_leading_and_four_trailing_digits() {
    let masked = |raw| Recipient::parse(raw).expect(raw).masked();
    assert_eq!(masked("+918080808080"), "+91******8080");
    assert_eq!(masked("+12345678"), "+12**5678");
    assert_eq!(masked("+123456789012345"), "+12*********2345");
}

#[test]
fn a_number_has_one_pseudonym_however_qikchat_writes_it() {
    let sent = Recipient::parse("+91 80808 08080").expect("valid");
    for raw in ["+918080808080", "918080808080"] {
        let from_qikchat = Recipient::from_qikchat(raw).expect(raw);
        assert_eq!(from_qikchat.pseudonym(), sent.pseudonym(), "{raw}");
    }
    assert_eq!(sent.pseudonym().len(), 32);
    assert_ne!(
        Recipient::from_qikchat("918080808081").map(|r| r.pseudonym()),
        Some(sent.pseudonym())
    );
    assert_eq!(Recipient::from_qikchat("unknown user"), None);
    assert_eq!(Recipient::from_qikchat(""), None);
}

#[test]
fn a_text_message_is_parsed() {
    let message = Message::parse(
        &json!({"to": "+91 80808 08080", "type": "text", "text": "Hi", "preview_url": true}),
    )
    .expect("valid");
    assert_eq!(message.to.as_str(), "+918080808080");
    assert_eq!(
        message.content,
        Content::Text {
            body: "Hi".into(),
            preview_url: true
        }
    );
}

#[test]
fn every_bad_field_is_named_at_once() {
    assert_eq!(
        fields(
            json!({"to": "12", "type": "image", "link": "ftp://x", "caption": 5, "captoin": "x"})
        ),
        ["caption", "captoin", "link", "to"]
    );
}

#[test]
fn null_counts_as_absent_but_a_value_on_the_wrong_type_is_refused() {
    let ok = json!({"to": "+918080808080", "type": "audio", "link": "https://x.example/a.ogg", "caption": null, "text": null});
    assert!(Message::parse(&ok).is_ok());
    let bad = json!({"to": "+918080808080", "type": "audio", "link": "https://x.example/a.ogg", "caption": "hi"});
    assert_eq!(fields(bad), ["caption"]);
}

#[test]
fn text_length_is_counted_in_characters() {
    let max = "é".repeat(4096);
    assert!(Message::parse(&json!({"to": "+918080808080", "type": "text", "text": max})).is_ok());
    let over = "a".repeat(4097);
    assert_eq!(
        fields(json!({"to": "+918080808080", "type": "text", "text": over})),
        ["text"]
    );
    assert_eq!(
        fields(json!({"to": "+918080808080", "type": "text", "text": ""})),
        ["text"]
    );
}

#[test]
fn a_missing_or_unknown_type_is_named() {
    assert_eq!(fields(json!({"to": "+918080808080"})), ["type"]);
    assert_eq!(
        fields(json!({"to": "+918080808080", "type": "fax"})),
        ["type"]
    );
    assert_eq!(fields(json!([1, 2])), ["body"]);
}

#[test]
fn location_coordinates_are_range_checked() {
    let body = json!({"to": "+918080808080", "type": "location", "location": {"latitude": 91, "longitude": "72", "nmae": "x"}});
    assert_eq!(
        fields(body),
        ["location.latitude", "location.longitude", "location.nmae"]
    );
}

#[test]
fn an_unknown_field_is_refused_even_when_null_inside_the_relays_own_objects() {
    let body = json!({"to": "+918080808080", "type": "template", "template": {
        "name": "t", "language": "en", "nmae": null, "header": {"type": "text", "text": "Hi", "lnik": null}}});
    assert_eq!(fields(body), ["template.header.lnik", "template.nmae"]);
}

#[test]
fn every_list_section_holds_a_row_and_qikchat_objects_hold_objects() {
    let body = json!({"to": "+918080808080", "type": "interactive", "interactive": {
        "type": "list", "body": {"text": "Pick"}, "action": {"button": "Menu", "sections": [
            {"title": "A", "rows": [{"id": "a", "title": "A"}]}, {"title": "B", "rows": []}]}}});
    assert_eq!(fields(body), ["interactive.action.sections[1].rows"]);
    let body = json!({"to": "+918080808080", "type": "contact", "contact": {"name": {"formatted_name": "S"}, "phones": ["+91"]}});
    assert_eq!(fields(body), ["contact.phones[0]"]);
    let body = json!({"to": "+918080808080", "type": "template", "template": {"name": "t", "language": "en",
        "components": [{"type": "body", "parameters": [["x"]]}]}});
    assert_eq!(fields(body), ["template.components[0].parameters[0]"]);
}

#[test]
fn interactive_limits_are_checked() {
    let buttons: Vec<Value> = (0..4)
        .map(|i| json!({"type": "reply", "reply": {"id": format!("b{i}"), "title": "a title that is far too long"}}))
        .collect();
    let body = json!({"to": "+918080808080", "type": "interactive", "interactive": {
        "type": "button", "body": {"text": "Pick"}, "action": {"buttons": buttons}}});
    let named = fields(body);
    assert!(named.contains(&"interactive.action.buttons".to_owned()));
    assert!(named.contains(&"interactive.action.buttons[3].reply.title".to_owned()));

    let rows: Vec<Value> = (0..11)
        .map(|i| json!({"id": format!("r{i}"), "title": "Row"}))
        .collect();
    let body = json!({"to": "+918080808080", "type": "interactive", "interactive": {
        "type": "list", "body": {"text": "Pick"}, "action": {"button": "Menu", "sections": [{"rows": rows}]}}});
    assert_eq!(fields(body), ["interactive.action.sections"]);
}

#[test]
fn unknown_fields_inside_qikchat_objects_pass_through() {
    let body = json!({"to": "+918080808080", "type": "contact", "contact": {
        "name": {"formatted_name": "Siva", "suffix": "Jr"}, "nickname": "S", "org": null}});
    let Content::Contact(contact) = Message::parse(&body).expect("valid").content else {
        panic!("a contact");
    };
    assert_eq!(
        Value::Object(contact),
        json!({"name": {"formatted_name": "Siva", "suffix": "Jr"}, "nickname": "S"})
    );
}

#[test]
fn template_simple_and_raw_forms_cannot_be_mixed() {
    let body = json!({"to": "+918080808080", "type": "template", "template": {
        "name": "t", "language": {"code": "en"}, "body": ["x"], "components": []}});
    assert_eq!(fields(body), ["template.components", "template.language"]);
}

#[test]
fn template_headers_take_the_fields_of_their_type() {
    let body = json!({"to": "+918080808080", "type": "template", "template": {
        "name": "t", "language": "en", "header": {"type": "image", "text": "x"},
        "buttons": [{"type": "url", "payload": "p"}]}});
    assert_eq!(
        fields(body),
        [
            "template.buttons[0].payload",
            "template.buttons[0].text",
            "template.header.link",
            "template.header.text"
        ]
    );
}

#[test]
fn a_reference_is_one_to_128_printable_ascii_characters_on_every_type_and_null_is_none() {
    let text = |reference: Value| json!({"to": "+918080808080", "type": "text", "text": "Hi", "reference": reference});
    let ok = |reference: Value| Message::parse(&text(reference)).map(|m| m.reference);
    assert_eq!(ok(json!("invoice-42")), Ok(Some("invoice-42".to_owned())));
    assert_eq!(ok(json!(" a b ")), Ok(Some(" a b ".to_owned())));
    assert_eq!(ok(json!("~".repeat(128))), Ok(Some("~".repeat(128))));
    assert_eq!(ok(Value::Null), Ok(None));
    assert_eq!(
        Message::parse(&json!({"to": "+918080808080", "type": "text", "text": "Hi"}))
            .map(|m| m.reference),
        Ok(None)
    );
    for bad in [
        json!(""),
        json!("   "),
        json!("x".repeat(129)),
        json!("tab\there"),
        json!("new\nline"),
        json!("nul\u{0}"),
        json!("del\u{7f}"),
        json!("zero\u{200b}width"),
        json!("caf\u{e9}"),
        json!(42),
        json!(["a"]),
    ] {
        assert_eq!(fields(text(bad.clone())), ["reference"], "{bad}");
    }
    let audio = json!({"to": "+918080808080", "type": "audio",
        "link": "https://cdn.example.com/a.ogg", "reference": "r-1"});
    assert_eq!(
        Message::parse(&audio).map(|m| m.reference),
        Ok(Some("r-1".to_owned()))
    );
}
