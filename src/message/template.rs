//! A `template` message: its name, language, parameters, header and buttons.

use serde_json::Value;

use super::json::{Errors, Need, Obj, without_unset};
use super::{
    Content, MediaKind, Template, TemplateBody, TemplateButton, TemplateHeader, TemplateParameters,
    whatsapp,
};

pub(super) fn parse_template(template: &Obj<'_>, errors: &mut Errors) -> Option<Content> {
    template.strict(
        &[
            "name",
            "language",
            "header",
            "body",
            "buttons",
            "components",
        ],
        errors,
    );
    let name = template.string("name", whatsapp::TEMPLATE_NAME, Need::Required, errors);
    let language = match template.get("language") {
        Some(Value::Object(_)) => {
            errors.add(
                template.path("language"),
                "must be a plain string such as \"en\" or \"en_US\"",
            );
            None
        }
        _ => template.string("language", whatsapp::ANY, Need::Required, errors),
    };

    let simple = ["header", "body", "buttons"]
        .into_iter()
        .any(|key| template.get(key).is_some());
    let parameters = if template.get("components").is_some() {
        if simple {
            errors.add(
                template.path("components"),
                "cannot be combined with header, body or buttons",
            );
        }
        let components = template.array("components", Need::Required, errors)?;
        for item in &components {
            let Some(component) = item.as_object(errors) else {
                continue;
            };
            component.string("type", whatsapp::ANY, Need::Required, errors);
            for parameter in component
                .array("parameters", Need::Optional, errors)
                .unwrap_or_default()
            {
                parameter.as_object(errors);
            }
        }
        TemplateParameters::Raw(components.iter().map(|c| without_unset(c.value)).collect())
    } else {
        let header = template
            .object("header", Need::Optional, errors)
            .and_then(|header| parse_template_header(&header, errors));
        let body = parse_template_body(template, errors);
        let buttons = parse_template_buttons(template, errors);
        TemplateParameters::Simple {
            header,
            body,
            buttons,
        }
    };
    Some(Content::Template(Template {
        name: name?,
        language: language?,
        parameters,
    }))
}

/// `body`: a list of parameters, or an object of them by name (put in order later, against the
/// template's declaration).
fn parse_template_body(template: &Obj<'_>, errors: &mut Errors) -> TemplateBody {
    if let Some(Value::Object(_)) = template.get("body") {
        let Some(named) = template.object("body", Need::Optional, errors) else {
            return TemplateBody::Named(Vec::new());
        };
        let pairs = named
            .entries()
            .filter_map(|(key, param)| Some((key.to_owned(), param.string(whatsapp::ANY, errors)?)))
            .collect();
        return TemplateBody::Named(pairs);
    }
    TemplateBody::Positional(
        template
            .array("body", Need::Optional, errors)
            .unwrap_or_default()
            .iter()
            .filter_map(|param| param.string(whatsapp::ANY, errors))
            .collect(),
    )
}

fn parse_template_header(header: &Obj<'_>, errors: &mut Errors) -> Option<TemplateHeader> {
    header.strict(&["type", "text", "link", "filename"], errors);
    let kind = header.string("type", whatsapp::ANY, Need::Required, errors)?;
    let refuse = |field: &str, errors: &mut Errors| {
        if header.get(field).is_some() {
            errors.add(
                header.path(field),
                format!("is not used by a {kind} header"),
            );
        }
    };
    let media = |kind: MediaKind, errors: &mut Errors| {
        let link = header.link("link", Need::Required, errors)?;
        let filename = if kind == MediaKind::Document {
            header.string("filename", whatsapp::ANY, Need::Optional, errors)
        } else {
            None
        };
        Some(TemplateHeader::Media {
            kind,
            link,
            filename,
        })
    };
    match kind.as_str() {
        "text" => {
            refuse("link", errors);
            refuse("filename", errors);
            header
                .string("text", whatsapp::ANY, Need::Required, errors)
                .map(TemplateHeader::Text)
        }
        "image" | "video" => {
            refuse("text", errors);
            refuse("filename", errors);
            let kind = if kind == "image" {
                MediaKind::Image
            } else {
                MediaKind::Video
            };
            media(kind, errors)
        }
        "document" => {
            refuse("text", errors);
            media(MediaKind::Document, errors)
        }
        _ => {
            errors.add(
                header.path("type"),
                "must be one of text, image, video, document",
            );
            None
        }
    }
}

fn parse_template_buttons(template: &Obj<'_>, errors: &mut Errors) -> Vec<TemplateButton> {
    let Some(buttons) = template.array("buttons", Need::Optional, errors) else {
        return Vec::new();
    };
    if buttons.len() > whatsapp::TEMPLATE_BUTTONS {
        errors.add(
            template.path("buttons"),
            format!("must hold at most {} buttons", whatsapp::TEMPLATE_BUTTONS),
        );
    }
    let mut parsed = Vec::new();
    for item in &buttons {
        let Some(button) = item.as_object(errors) else {
            continue;
        };
        button.strict(&["type", "text", "payload"], errors);
        let Some(kind) = button.string("type", whatsapp::ANY, Need::Required, errors) else {
            continue;
        };
        let (needed, unused) = match kind.as_str() {
            "url" => ("text", "payload"),
            "quick_reply" => ("payload", "text"),
            _ => {
                errors.add(button.path("type"), "must be url or quick_reply");
                continue;
            }
        };
        if button.get(unused).is_some() {
            errors.add(
                button.path(unused),
                format!("is not used by a {kind} button"),
            );
        }
        if let Some(value) = button.string(needed, whatsapp::ANY, Need::Required, errors) {
            parsed.push(if kind == "url" {
                TemplateButton::Url(value)
            } else {
                TemplateButton::QuickReply(value)
            });
        }
    }
    parsed
}
