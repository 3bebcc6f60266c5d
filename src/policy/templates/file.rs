//! One `[templates.<name>]` of the callers file, as written ([`FileTemplate`]) and checked into a
//! [`Declaration`]. A wrong entry fails the whole file, naming the field, like a wrong client:
//! a declaration that is silently dropped would let through the sends it was written to stop.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, de};

use super::{BodyShape, ButtonKind, Declaration, HeaderKind};
use crate::message::whatsapp;
use crate::policy::{AccountSpec, PolicyError, problem};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::policy) struct FileTemplate {
    languages: Option<Vec<String>>,
    #[serde(default)]
    body: Option<FileBody>,
    header: Option<String>,
    buttons: Option<Vec<String>>,
    account: Option<String>,
}

/// `body = 2` or `body = ["name", "order"]`; a negative count is read, then refused by name.
enum FileBody {
    Count(i64),
    Names(Vec<String>),
}

impl<'de> Deserialize<'de> for FileBody {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = FileBody;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a count such as 2 or a list of names such as [\"name\", \"order\"]")
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<FileBody, E> {
                Ok(FileBody::Count(n))
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<FileBody, E> {
                Ok(FileBody::Count(i64::try_from(n).unwrap_or(i64::MAX)))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<FileBody, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(FileBody::Names(names))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The most body parameters a declaration may have: far more than any approved template has, so
/// that a typo such as `body = 20000` is caught, and checking a send by name stays cheap.
const MAX_BODY: usize = 100;

/// Checks `[templates.<template>]`. `at` names a field of the callers file; the account a
/// declaration is limited to must be one of `accounts`.
pub(in crate::policy) fn declaration(
    template: &str,
    spec: FileTemplate,
    accounts: &BTreeMap<String, AccountSpec>,
    at: &dyn Fn(String) -> String,
) -> Result<Declaration, PolicyError> {
    let field = |f: &str| at(format!("templates.{template}.{f}"));
    let chars = template.chars().count();
    if chars == 0
        || chars > whatsapp::TEMPLATE_NAME
        || template
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(problem(
            at(format!("templates.{template}")),
            "a template's name is 1 to 512 characters without spaces, as approved in WhatsApp",
        ));
    }
    let languages = spec.languages.filter(|l| !l.is_empty()).ok_or_else(|| {
        problem(
            field("languages"),
            "is required: the languages the template is approved in, e.g. [\"en\"]",
        )
    })?;
    if let Some(i) = languages.iter().position(|l| l.trim().is_empty()) {
        return Err(problem(
            field(&format!("languages[{i}]")),
            "must not be empty",
        ));
    }
    let body = match spec.body {
        None => BodyShape::Count(0),
        Some(FileBody::Count(n)) => match usize::try_from(n) {
            Ok(n) if n <= MAX_BODY => BodyShape::Count(n),
            _ => {
                return Err(problem(
                    field("body"),
                    format!("must be a count from 0 to {MAX_BODY}, or a list of names; got {n}"),
                ));
            }
        },
        Some(FileBody::Names(names)) => {
            if names.len() > MAX_BODY {
                return Err(problem(
                    field("body"),
                    format!("a template has at most {MAX_BODY} body parameters"),
                ));
            }
            for (i, name) in names.iter().enumerate() {
                if !valid_parameter(name) {
                    return Err(problem(
                        field(&format!("body[{i}]")),
                        "a parameter's name is 1 to 64 of A-Z a-z 0-9 _ -",
                    ));
                }
                if names[..i].contains(name) {
                    return Err(problem(
                        field(&format!("body[{i}]")),
                        format!("{name} is named twice"),
                    ));
                }
            }
            BodyShape::Names(names)
        }
    };
    let header = match spec.header.as_deref() {
        None => HeaderKind::None,
        Some(kind) => HeaderKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(|| {
                problem(
                    field("header"),
                    format!(
                        "{kind:?} is not a header kind; one of {}",
                        HeaderKind::ALL.map(HeaderKind::as_str).join(", ")
                    ),
                )
            })?,
    };
    let buttons = spec.buttons.unwrap_or_default();
    if buttons.len() > whatsapp::TEMPLATE_BUTTONS {
        return Err(problem(
            field("buttons"),
            format!(
                "a template has at most {} buttons",
                whatsapp::TEMPLATE_BUTTONS
            ),
        ));
    }
    let buttons = buttons
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            ButtonKind::ALL
                .into_iter()
                .find(|k| k.as_str() == kind)
                .ok_or_else(|| {
                    problem(
                        field(&format!("buttons[{i}]")),
                        format!("{kind:?} is not a dynamic button; one of url, quick_reply"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(account) = &spec.account {
        if !accounts.contains_key(account) {
            return Err(problem(
                field("account"),
                format!("there is no [accounts.{account}]"),
            ));
        }
    }
    Ok(Declaration {
        name: template.to_owned(),
        languages,
        body,
        header,
        buttons,
        account: spec.account,
    })
}

/// A body parameter's name goes into error paths (`template.body.<name>`), so it is kept plain.
fn valid_parameter(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}
