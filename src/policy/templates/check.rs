//! The checks of one template send against its declaration: pure, so every case is a unit test.
//!
//! Both forms of a template are checked for the same things. The simplified form says them
//! outright; from Qikchat's raw `components` they are read where Qikchat puts them: the body is
//! the `parameters` of the component of type `body`, the header kind the `type` of the header
//! component's first parameter, the buttons the `sub_type` of each `button` component, in order.
//! Errors name the part of the template that is wrong (`template.body`), in either form.

use super::{BodyShape, Declaration, HeaderKind};
use crate::message::{
    FieldError, MediaKind, Template, TemplateBody, TemplateButton, TemplateHeader,
    TemplateParameters,
};

/// What is wrong with `template` for `declaration`; when nothing is, a named body has been put
/// in the declared order.
pub(super) fn check(declaration: &Declaration, template: &mut Template) -> Vec<FieldError> {
    let name = &declaration.name;
    let mut errors = Vec::new();
    if !declaration.languages.contains(&template.language) {
        errors.push(FieldError::new(
            "template.language",
            format!(
                "{name} is declared in {}; got {}",
                declaration.languages.join(", "),
                template.language
            ),
        ));
    }
    let (header, buttons) = match &mut template.parameters {
        TemplateParameters::Simple {
            header,
            body,
            buttons,
        } => {
            check_body(declaration, body, &mut errors);
            let header = match header {
                None => "none",
                Some(TemplateHeader::Text(_)) => "text",
                Some(TemplateHeader::Media { kind, .. }) => media_kind(*kind),
            };
            let buttons = buttons
                .iter()
                .map(|b| match b {
                    TemplateButton::Url(_) => "url",
                    TemplateButton::QuickReply(_) => "quick_reply",
                })
                .collect::<Vec<_>>();
            (header.to_owned(), buttons.join(", "))
        }
        TemplateParameters::Raw(components) => {
            let count = components
                .iter()
                .filter(|c| c["type"] == "body")
                .map(|c| c["parameters"].as_array().map_or(0, Vec::len))
                .sum();
            if count != declaration.body.len() {
                errors.push(count_error(declaration, count));
            }
            let header = components
                .iter()
                .find(|c| c["type"] == "header")
                .and_then(|c| c["parameters"].get(0))
                .map_or("none", |p| p["type"].as_str().unwrap_or("unknown"));
            let buttons = components
                .iter()
                .filter(|c| c["type"] == "button")
                .map(|c| c["sub_type"].as_str().unwrap_or("unknown"))
                .collect::<Vec<_>>();
            (header.to_owned(), buttons.join(", "))
        }
    };
    if header != declaration.header.as_str() {
        let wanted = match declaration.header {
            HeaderKind::None => "no header".to_owned(),
            kind => format!("a {} header", kind.as_str()),
        };
        errors.push(FieldError::new(
            "template.header",
            format!("{name} takes {wanted}; got {header}"),
        ));
    }
    let declared = declaration
        .buttons
        .iter()
        .map(|b| b.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if buttons != declared {
        errors.push(FieldError::new(
            "template.buttons",
            format!(
                "{name} takes {}; got {}",
                or_none(&declared, "no dynamic buttons", "the dynamic buttons "),
                or_none(&buttons, "none", "")
            ),
        ));
    }
    errors
}

/// A template the callers file does not declare passes as before, except a body by name: only a
/// declaration knows the order of its parameters.
pub(super) fn undeclared(template: &Template) -> Vec<FieldError> {
    match &template.parameters {
        TemplateParameters::Simple {
            body: TemplateBody::Named(_),
            ..
        } => vec![FieldError::new(
            "template.body",
            format!(
                "a body by name needs the template declared in the callers file ([templates.{}] with body = [names]); send the parameters as a list",
                template.name
            ),
        )],
        _ => Vec::new(),
    }
}

fn check_body(declaration: &Declaration, body: &mut TemplateBody, errors: &mut Vec<FieldError>) {
    let name = &declaration.name;
    let pairs = match body {
        TemplateBody::Positional(values) => {
            if values.len() != declaration.body.len() {
                errors.push(count_error(declaration, values.len()));
            }
            return;
        }
        TemplateBody::Named(pairs) => pairs,
    };
    let names = match &declaration.body {
        BodyShape::Names(names) => names,
        BodyShape::Count(0) if pairs.is_empty() => {
            *body = TemplateBody::Positional(Vec::new());
            return;
        }
        BodyShape::Count(n) => {
            errors.push(FieldError::new(
                "template.body",
                format!(
                    "{name} declares {n} body parameters by count, not by name; send them as a list"
                ),
            ));
            return;
        }
    };
    let before = errors.len();
    let mut ordered = Vec::with_capacity(names.len());
    for wanted in names {
        match pairs.iter().find(|(key, _)| key == wanted) {
            Some((_, value)) => ordered.push(value.clone()),
            None => errors.push(FieldError::new(
                format!("template.body.{wanted}"),
                format!("is missing: {name} takes {}", names.join(", ")),
            )),
        }
    }
    for (key, _) in pairs.iter() {
        if !names.contains(key) {
            let hint = did_you_mean(key, names);
            errors.push(FieldError::new(
                format!("template.body.{key}"),
                format!(
                    "is not a body parameter of {name} (it takes {}){hint}",
                    names.join(", ")
                ),
            ));
        }
    }
    if errors.len() == before {
        *body = TemplateBody::Positional(ordered);
    }
}

fn count_error(declaration: &Declaration, got: usize) -> FieldError {
    let name = &declaration.name;
    let takes = match &declaration.body {
        BodyShape::Count(0) | BodyShape::Names(_) if declaration.body.is_empty() => {
            "no body parameters".to_owned()
        }
        BodyShape::Names(names) => format!(
            "{} body parameter{} ({})",
            names.len(),
            plural(names.len()),
            names.join(", ")
        ),
        BodyShape::Count(n) => format!("{n} body parameter{}", plural(*n)),
    };
    FieldError::new("template.body", format!("{name} takes {takes}; got {got}"))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn or_none(list: &str, none: &str, prefix: &str) -> String {
    if list.is_empty() {
        none.to_owned()
    } else {
        format!("{prefix}{list}")
    }
}

fn media_kind(kind: MediaKind) -> &'static str {
    kind.message_type().as_str()
}

/// `"; did you mean x?"` for the candidate closest to `given`, when one is close enough to be a
/// typo (at most a third of its letters changed), else `""`.
pub(super) fn did_you_mean<'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a String>,
) -> String {
    candidates
        .into_iter()
        .map(|c| (distance(given, c), c))
        .filter(|(d, c)| *d <= (c.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map_or_else(String::new, |(_, c)| format!("; did you mean {c}?"))
}

/// Levenshtein distance, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests;
