use serde_json::json;

use std::collections::BTreeMap;

use super::super::{ButtonKind, Mode, TemplateRefusal, Templates};
use super::*;
use crate::message::{Content, Message};

fn order_update() -> Declaration {
    Declaration {
        name: "order_update".into(),
        languages: vec!["en".into(), "hi".into()],
        body: BodyShape::Names(vec!["name".into(), "order".into()]),
        header: HeaderKind::Document,
        buttons: vec![ButtonKind::Url],
        account: None,
    }
}

fn template(value: serde_json::Value) -> Template {
    let message =
        Message::parse(&json!({"to": "+918080808080", "type": "template", "template": value}))
            .expect("a valid template");
    match message.content {
        Content::Template(template) => template,
        _ => unreachable!("parsed as a template"),
    }
}

fn fields(errors: &[FieldError]) -> Vec<&str> {
    errors.iter().map(|e| e.field.as_str()).collect()
}

const HEADER: &str = "https://cdn.example.com/o.pdf";

#[test]
fn a_send_that_fits_passes_and_a_named_body_is_put_in_the_declared_order() {
    let mut sent = template(json!({"name": "order_update", "language": "hi",
        "header": {"type": "document", "link": HEADER},
        "body": {"order": "#1234", "name": "Siva"}, "buttons": [{"type": "url", "text": "1234"}]}));
    assert_eq!(check(&order_update(), &mut sent), []);
    let TemplateParameters::Simple { body, .. } = &sent.parameters else {
        unreachable!("the simplified form")
    };
    assert_eq!(
        body,
        &TemplateBody::Positional(vec!["Siva".into(), "#1234".into()])
    );
}

#[test]
fn every_wrong_part_is_named_at_once() {
    let mut sent = template(json!({"name": "order_update", "language": "fr",
        "header": {"type": "image", "link": HEADER},
        "body": ["a", "b", "c"], "buttons": [{"type": "quick_reply", "payload": "x"}]}));
    let errors = check(&order_update(), &mut sent);
    assert_eq!(
        fields(&errors),
        [
            "template.language",
            "template.body",
            "template.header",
            "template.buttons"
        ]
    );
    assert_eq!(
        errors[0].message,
        "order_update is declared in en, hi; got fr"
    );
    assert_eq!(
        errors[1].message,
        "order_update takes 2 body parameters (name, order); got 3"
    );
    assert_eq!(
        errors[2].message,
        "order_update takes a document header; got image"
    );
    assert_eq!(
        errors[3].message,
        "order_update takes the dynamic buttons url; got quick_reply"
    );
}

#[test]
fn a_missing_or_unknown_name_is_named_with_a_hint_and_nothing_is_reordered() {
    let body = json!({"name": "Siva", "ordr": "#1234"});
    let mut sent = template(json!({"name": "order_update", "language": "en",
        "header": {"type": "document", "link": HEADER}, "body": body,
        "buttons": [{"type": "url", "text": "1"}]}));
    let errors = check(&order_update(), &mut sent);
    assert_eq!(
        fields(&errors),
        ["template.body.order", "template.body.ordr"]
    );
    assert_eq!(
        errors[0].message,
        "is missing: order_update takes name, order"
    );
    assert!(
        errors[1].message.ends_with("did you mean order?"),
        "{}",
        errors[1].message
    );
    assert!(matches!(
        &sent.parameters,
        TemplateParameters::Simple {
            body: TemplateBody::Named(_),
            ..
        }
    ));
}

#[test]
fn a_body_by_name_needs_names_in_the_declaration() {
    let mut declaration = order_update();
    declaration.body = BodyShape::Count(2);
    let mut sent = template(json!({"name": "order_update", "language": "en",
        "header": {"type": "document", "link": HEADER}, "body": {"a": "1", "b": "2"},
        "buttons": [{"type": "url", "text": "1"}]}));
    assert_eq!(fields(&check(&declaration, &mut sent)), ["template.body"]);
}

#[test]
fn the_raw_components_are_checked_for_the_same_parts() {
    let fits = json!({"name": "order_update", "language": "en", "components": [
        {"type": "header", "parameters": [{"type": "document", "document": {"link": HEADER}}]},
        {"type": "body", "parameters": [{"type": "text", "text": "Siva"}, {"type": "text", "text": "#1"}]},
        {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "1"}]}]});
    assert_eq!(check(&order_update(), &mut template(fits)), []);
    let wrong = json!({"name": "order_update", "language": "en", "components": [
        {"type": "body", "parameters": [{"type": "text", "text": "Siva"}]},
        {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": []}]});
    let errors = check(&order_update(), &mut template(wrong));
    assert_eq!(
        fields(&errors),
        ["template.body", "template.header", "template.buttons"]
    );
    assert_eq!(
        errors[1].message,
        "order_update takes a document header; got none"
    );
}

#[test]
fn a_template_without_parts_takes_none() {
    let declaration = Declaration {
        name: "hello".into(),
        languages: vec!["en".into()],
        body: BodyShape::Count(0),
        header: HeaderKind::None,
        buttons: Vec::new(),
        account: None,
    };
    assert_eq!(
        check(
            &declaration,
            &mut template(json!({"name": "hello", "language": "en"}))
        ),
        []
    );
    let errors = check(
        &declaration,
        &mut template(json!({"name": "hello", "language": "en", "body": ["x"],
            "header": {"type": "text", "text": "Hi"}, "buttons": [{"type": "url", "text": "a"}]})),
    );
    assert_eq!(
        errors
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        [
            "hello takes no body parameters; got 1",
            "hello takes no header; got text",
            "hello takes no dynamic buttons; got url"
        ]
    );
}

fn send(value: serde_json::Value) -> Message {
    Message::parse(&json!({"to": "+918080808080", "type": "template", "template": value}))
        .expect("a valid template")
}

#[test]
fn declared_mode_refuses_an_undeclared_template_and_open_mode_sends_it() {
    let mut declared = BTreeMap::new();
    declared.insert("order_update".to_owned(), order_update());
    let mut templates = Templates {
        mode: Mode::Open,
        declared,
    };
    let other = json!({"name": "order_updte", "language": "en", "body": ["x"]});
    assert!(templates.resolve("default", send(other.clone())).is_ok());
    templates.mode = Mode::Declared;
    let Err(TemplateRefusal::Unknown { errors, .. }) = templates.resolve("default", send(other))
    else {
        panic!("refused as unknown")
    };
    assert_eq!(fields(&errors), ["template.name"]);
    assert!(errors[0].message.ends_with("did you mean order_update?"));
}

#[test]
fn a_declaration_for_one_account_is_undeclared_for_the_others() {
    let mut declaration = order_update();
    declaration.account = Some("brand2".into());
    let mut declared = BTreeMap::new();
    declared.insert("order_update".to_owned(), declaration);
    let templates = Templates {
        mode: Mode::Open,
        declared,
    };
    let wrong = json!({"name": "order_update", "language": "fr", "body": ["x"]});
    assert!(templates.resolve("default", send(wrong.clone())).is_ok());
    assert!(matches!(
        templates.resolve("brand2", send(wrong)),
        Err(TemplateRefusal::Mismatch(_))
    ));
}

#[test]
fn a_body_by_name_for_an_undeclared_template_is_refused() {
    let templates = Templates::default();
    let named = json!({"name": "promo", "language": "en", "body": {"a": "1"}});
    let Err(TemplateRefusal::Mismatch(errors)) = templates.resolve("default", send(named)) else {
        panic!("refused")
    };
    assert_eq!(fields(&errors), ["template.body"]);
}

#[test]
fn did_you_mean_only_suggests_what_is_close() {
    let names = ["order".to_owned(), "name".to_owned()];
    assert_eq!(did_you_mean("ordr", &names), "; did you mean order?");
    assert_eq!(did_you_mean("total", &names), "");
    assert_eq!(distance("kitten", "sitting"), 3);
}
