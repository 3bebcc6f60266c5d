//! `Message::parse`: a caller's `/send` body to a [`Message`], every bad field named at once.

use serde_json::Value;

use super::json::{Errors, Need, Obj};
use super::template::parse_template;
use super::{
    Content, FieldError, MAX_REFERENCE_CHARS, MediaKind, Message, MessageType, REFERENCE_RULE,
    Recipient, whatsapp,
};

const TOP_LEVEL_FIELDS: [&str; 12] = [
    "to",
    "type",
    "reference",
    "text",
    "preview_url",
    "link",
    "caption",
    "filename",
    "location",
    "contact",
    "interactive",
    "template",
];

impl Message {
    /// Parses a `/send` body, naming every bad field at once.
    pub fn parse(body: &Value) -> Result<Self, Vec<FieldError>> {
        let mut errors = Errors::default();
        let Some(map) = body.as_object() else {
            return Err(vec![FieldError::new("body", "must be a JSON object")]);
        };
        let root = Obj::root(map);

        let message_type = match root.get("type") {
            None => {
                errors.add("type", "is required");
                None
            }
            Some(Value::String(name)) => {
                let parsed = MessageType::parse(name);
                if parsed.is_none() {
                    errors.add("type", one_of_types());
                }
                parsed
            }
            Some(_) => {
                errors.add("type", one_of_types());
                None
            }
        };

        let to = root
            .string("to", usize::MAX, Need::Required, &mut errors)
            .and_then(|raw| Recipient::parse(&raw).map_err(|e| errors.add("to", e)).ok());

        for (key, value) in map {
            if !TOP_LEVEL_FIELDS.contains(&key.as_str()) {
                errors.add(key.clone(), "is not a known field");
            } else if let Some(t) = message_type {
                let belongs = matches!(key.as_str(), "to" | "type" | "reference")
                    || t.fields().contains(&key.as_str());
                // A generated client sends every unset optional field as null; only values count.
                if !belongs && !value.is_null() {
                    errors.add(key.clone(), format!("is not a field of type {t}"));
                }
            }
        }

        let reference = parse_reference(root.get("reference"), &mut errors);
        let content = message_type.and_then(|t| parse_content(t, &root, &mut errors));
        match (to, content) {
            (Some(to), Some(content)) if errors.0.is_empty() => Ok(Self {
                to,
                content,
                reference,
            }),
            _ => Err(errors.into_vec()),
        }
    }
}

/// The caller's `reference`, when it gave one (`null` is none): [`REFERENCE_RULE`]. Unlike
/// Qikchat's optional fields, an empty one is refused rather than dropped: it is the caller's own
/// id, and an id that silently went missing would make its statuses unmatchable.
fn parse_reference(value: Option<&Value>, errors: &mut Errors) -> Option<String> {
    let Some(Value::String(reference)) = value else {
        if value.is_some() {
            errors.add("reference", REFERENCE_RULE);
        }
        return None;
    };
    let printable = reference.bytes().all(|b| matches!(b, b' '..=b'~'));
    let visible = reference.bytes().any(|b| b != b' ');
    if printable && visible && reference.len() <= MAX_REFERENCE_CHARS {
        Some(reference.clone())
    } else {
        errors.add("reference", REFERENCE_RULE);
        None
    }
}

fn one_of_types() -> String {
    let names: Vec<&str> = MessageType::ALL.iter().map(|t| t.as_str()).collect();
    format!("must be one of {}", names.join(", "))
}

fn parse_content(t: MessageType, root: &Obj<'_>, errors: &mut Errors) -> Option<Content> {
    let media = |kind: MediaKind, errors: &mut Errors| {
        let link = root.link("link", Need::Required, errors);
        let caption = if matches!(
            kind,
            MediaKind::Image | MediaKind::Video | MediaKind::Document
        ) {
            root.string("caption", whatsapp::CAPTION, Need::Optional, errors)
        } else {
            None
        };
        let filename = if kind == MediaKind::Document {
            root.string("filename", whatsapp::ANY, Need::Optional, errors)
        } else {
            None
        };
        Some(Content::Media {
            kind,
            link: link?,
            caption,
            filename,
        })
    };
    match t {
        MessageType::Text => {
            let body = root.string("text", whatsapp::TEXT, Need::Required, errors);
            let preview_url = root.bool("preview_url", errors).unwrap_or(false);
            Some(Content::Text {
                body: body?,
                preview_url,
            })
        }
        MessageType::Image => media(MediaKind::Image, errors),
        MessageType::Video => media(MediaKind::Video, errors),
        MessageType::Audio => media(MediaKind::Audio, errors),
        MessageType::Document => media(MediaKind::Document, errors),
        MessageType::Sticker => media(MediaKind::Sticker, errors),
        MessageType::Location => {
            parse_location(&root.object("location", Need::Required, errors)?, errors)
        }
        MessageType::Contact => {
            parse_contact(&root.object("contact", Need::Required, errors)?, errors)
        }
        MessageType::Interactive => {
            parse_interactive(&root.object("interactive", Need::Required, errors)?, errors)
        }
        MessageType::Template => {
            parse_template(&root.object("template", Need::Required, errors)?, errors)
        }
    }
}

fn parse_location(location: &Obj<'_>, errors: &mut Errors) -> Option<Content> {
    location.strict(&["latitude", "longitude", "name", "address"], errors);
    let latitude = location.number("latitude", -90.0..=90.0, errors);
    let longitude = location.number("longitude", -180.0..=180.0, errors);
    let name = location.string("name", whatsapp::ANY, Need::Optional, errors);
    let address = location.string("address", whatsapp::ANY, Need::Optional, errors);
    Some(Content::Location {
        latitude: latitude?,
        longitude: longitude?,
        name,
        address,
    })
}

fn parse_contact(contact: &Obj<'_>, errors: &mut Errors) -> Option<Content> {
    let name = contact.object("name", Need::Required, errors);
    if let Some(name) = &name {
        name.string("formatted_name", whatsapp::ANY, Need::Required, errors);
    }
    for list in ["phones", "emails", "addresses", "urls"] {
        for entry in contact
            .array(list, Need::Optional, errors)
            .unwrap_or_default()
        {
            entry.as_object(errors);
        }
    }
    contact.object("org", Need::Optional, errors);
    name?;
    Some(Content::Contact(contact.without_unset()))
}

fn parse_interactive(interactive: &Obj<'_>, errors: &mut Errors) -> Option<Content> {
    let kind = interactive.string("type", whatsapp::ANY, Need::Required, errors);
    if let Some(body) = interactive.object("body", Need::Required, errors) {
        body.string("text", whatsapp::INTERACTIVE_BODY, Need::Required, errors);
    }
    if let Some(header) = interactive.object("header", Need::Optional, errors) {
        if header.get("type").and_then(Value::as_str) == Some("text") {
            header.string("text", whatsapp::INTERACTIVE_HEADER, Need::Required, errors);
        }
    }
    if let Some(footer) = interactive.object("footer", Need::Optional, errors) {
        footer.string("text", whatsapp::INTERACTIVE_FOOTER, Need::Required, errors);
    }
    let action = interactive.object("action", Need::Required, errors);
    match (kind.as_deref(), &action) {
        (Some("button"), Some(action)) => check_reply_buttons(action, errors),
        (Some("list"), Some(action)) => check_list(action, errors),
        (Some("button" | "list"), None) | (None, _) => {}
        (Some(_), _) => errors.add(interactive.path("type"), "must be button or list"),
    }
    kind.and(action)
        .map(|_| Content::Interactive(interactive.without_unset()))
}

fn check_reply_buttons(action: &Obj<'_>, errors: &mut Errors) {
    let Some(buttons) = action.array("buttons", Need::Required, errors) else {
        return;
    };
    if !(1..=whatsapp::REPLY_BUTTONS).contains(&buttons.len()) {
        errors.add(
            action.path("buttons"),
            format!("must hold 1 to {} reply buttons", whatsapp::REPLY_BUTTONS),
        );
    }
    let mut ids = Vec::new();
    for item in &buttons {
        let Some(button) = item.as_object(errors) else {
            continue;
        };
        if let Some(kind) = button.string("type", whatsapp::ANY, Need::Required, errors) {
            if kind != "reply" {
                errors.add(button.path("type"), "must be reply");
            }
        }
        if let Some(reply) = button.object("reply", Need::Required, errors) {
            if let Some(id) = reply.string("id", whatsapp::BUTTON_ID, Need::Required, errors) {
                if ids.contains(&id) {
                    errors.add(reply.path("id"), "must be unique among the buttons");
                }
                ids.push(id);
            }
            reply.string("title", whatsapp::BUTTON_TITLE, Need::Required, errors);
        }
    }
}

fn check_list(action: &Obj<'_>, errors: &mut Errors) {
    action.string("button", whatsapp::LIST_BUTTON, Need::Required, errors);
    let Some(sections) = action.array("sections", Need::Required, errors) else {
        return;
    };
    if sections.is_empty() {
        errors.add(action.path("sections"), "must hold at least one section");
    }
    let several = sections.len() > 1;
    let mut rows_in_all = 0;
    for item in &sections {
        let Some(section) = item.as_object(errors) else {
            continue;
        };
        let need_title = if several {
            Need::Required
        } else {
            Need::Optional
        };
        section.string("title", whatsapp::SECTION_TITLE, need_title, errors);
        let Some(rows) = section.array("rows", Need::Required, errors) else {
            continue;
        };
        if rows.is_empty() {
            errors.add(section.path("rows"), "must hold at least one row");
        }
        rows_in_all += rows.len();
        for item in &rows {
            let Some(row) = item.as_object(errors) else {
                continue;
            };
            row.string("id", whatsapp::ROW_ID, Need::Required, errors);
            row.string("title", whatsapp::ROW_TITLE, Need::Required, errors);
            row.string(
                "description",
                whatsapp::ROW_DESCRIPTION,
                Need::Optional,
                errors,
            );
        }
    }
    if !sections.is_empty() && !(1..=whatsapp::LIST_ROWS).contains(&rows_in_all) {
        errors.add(
            action.path("sections"),
            format!(
                "must hold 1 to {} rows in all, not {rows_in_all}",
                whatsapp::LIST_ROWS
            ),
        );
    }
}
