//! Qikchat's wire format for a send: the body of `POST /v1/messages`, written from a [`Message`].

use serde_json::{Map, Value, json};

use crate::message::{
    Content, MediaKind, Message, TemplateBody, TemplateButton, TemplateHeader, TemplateParameters,
};

/// The body of `POST /v1/messages` for a message: `{to_contact, type, <type>: {...}}`, with no
/// `null` or empty optional fields.
pub fn send_body(message: &Message) -> Value {
    let message_type = message.content.message_type().as_str();
    let mut body = Map::new();
    body.insert("to_contact".into(), message.to.as_str().into());
    body.insert("type".into(), message_type.into());
    let object = match &message.content {
        Content::Text {
            body: text,
            preview_url,
        } => {
            if *preview_url {
                body.insert("preview_url".into(), true.into());
            }
            json!({ "body": text })
        }
        Content::Media {
            link,
            caption,
            filename,
            ..
        } => {
            let mut media = Map::new();
            media.insert("link".into(), link.as_str().into());
            insert_some(&mut media, "caption", caption);
            insert_some(&mut media, "filename", filename);
            Value::Object(media)
        }
        Content::Location {
            latitude,
            longitude,
            name,
            address,
        } => {
            let mut location = Map::new();
            location.insert("latitude".into(), json!(latitude));
            location.insert("longitude".into(), json!(longitude));
            insert_some(&mut location, "name", name);
            insert_some(&mut location, "address", address);
            Value::Object(location)
        }
        Content::Contact(contact) => Value::Object(contact.clone()),
        Content::Interactive(interactive) => Value::Object(interactive.clone()),
        Content::Template(template) => {
            let components = match &template.parameters {
                TemplateParameters::Raw(components) => components.clone(),
                TemplateParameters::Simple {
                    header,
                    body,
                    buttons,
                } => template_components(header.as_ref(), &body_values(body), buttons),
            };
            let mut object = Map::new();
            object.insert("name".into(), template.name.as_str().into());
            object.insert("language".into(), template.language.as_str().into());
            if !components.is_empty() {
                object.insert("components".into(), Value::Array(components));
            }
            Value::Object(object)
        }
    };
    body.insert(message_type.into(), object);
    Value::Object(body)
}

fn insert_some(object: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(value) = value {
        object.insert(key.into(), value.as_str().into());
    }
}

/// A body's values in the order they are sent. The relay puts a named body in its declared order
/// before a send gets here (`policy::Templates::resolve`); a named body that had not been would go
/// in the caller's order, the only one it has.
fn body_values(body: &TemplateBody) -> Vec<&str> {
    match body {
        TemplateBody::Positional(values) => values.iter().map(String::as_str).collect(),
        TemplateBody::Named(pairs) => pairs.iter().map(|(_, value)| value.as_str()).collect(),
    }
}

fn template_components(
    header: Option<&TemplateHeader>,
    body: &[&str],
    buttons: &[TemplateButton],
) -> Vec<Value> {
    let mut components = Vec::new();
    if let Some(header) = header {
        let parameter = match header {
            TemplateHeader::Text(text) => json!({"type": "text", "text": text}),
            TemplateHeader::Media {
                kind,
                link,
                filename,
            } => {
                let name = kind.message_type().as_str();
                let mut media = Map::new();
                media.insert("link".into(), link.as_str().into());
                if *kind == MediaKind::Document {
                    insert_some(&mut media, "filename", filename);
                }
                json!({"type": name, name: media})
            }
        };
        components.push(json!({"type": "header", "parameters": [parameter]}));
    }
    if !body.is_empty() {
        let parameters: Vec<Value> = body
            .iter()
            .map(|text| json!({"type": "text", "text": text}))
            .collect();
        components.push(json!({"type": "body", "parameters": parameters}));
    }
    for (index, button) in buttons.iter().enumerate() {
        let (sub_type, parameter) = match button {
            TemplateButton::Url(suffix) => ("url", json!({"type": "text", "text": suffix})),
            TemplateButton::QuickReply(payload) => (
                "quick_reply",
                json!({"type": "payload", "payload": payload}),
            ),
        };
        components.push(json!({
            "type": "button",
            "sub_type": sub_type,
            "index": index.to_string(),
            "parameters": [parameter],
        }));
    }
    components
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::message::properties::{has_null, json_value};
    use crate::message::{Message, MessageType};

    proptest! {
        #[test]
        fn any_json_is_either_a_well_formed_qikchat_body_or_named_errors(body in json_value()) {
            match Message::parse(&body) {
                Ok(message) => {
                    let sent = send_body(&message);
                    let kind = sent["type"].as_str().unwrap_or_default().to_owned();
                    prop_assert!(MessageType::ALL.iter().any(|t| t.as_str() == kind));
                    prop_assert!(sent["to_contact"].as_str().is_some_and(|to| to.starts_with('+')));
                    prop_assert!(sent[kind.as_str()].is_object(), "{}", sent);
                    prop_assert!(!has_null(&sent), "{}", sent);
                }
                Err(errors) => {
                    prop_assert!(!errors.is_empty());
                    prop_assert!(errors.iter().all(|e| !e.field.is_empty() && !e.message.is_empty()));
                }
            }
        }

        #[test]
        fn every_valid_text_is_sent_as_it_was_given(text in "\\PC{1,300}", preview in any::<bool>()) {
            let message = Message::parse(&json!({"to": "+918080808080", "type": "text", "text": text, "preview_url": preview}));
            let sent = send_body(&message.expect("a valid text"));
            prop_assert_eq!(&sent["text"]["body"], &json!(text));
            prop_assert_eq!(sent.get("preview_url").is_some(), preview);
        }
    }
}
