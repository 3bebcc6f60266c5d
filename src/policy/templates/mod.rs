//! Declared templates: what the callers file says each WhatsApp template takes (`[templates.*]`:
//! languages, body parameters, header kind, dynamic buttons), checked before a send is claimed,
//! counted or paid for. WhatsApp refuses a template sent with the wrong shape only after the
//! relay has handed it over, and a brand's team finds out from a failed status minutes later;
//! the declaration turns that into a 422 naming the field, while the caller is still there.
//!
//! [`Templates::resolve`] is the one entry point: it refuses a send that does not fit its
//! declaration ([`TemplateRefusal`]), and turns a body given by name into the declared order.
//! The checks themselves are `check.rs`; the callers file's table is read in `file.rs`.

use std::{collections::BTreeMap, str::FromStr};

use crate::message::{Content, FieldError, Message};

mod check;
mod file;

pub(super) use file::{FileTemplate, declaration};

/// `RELAY_TEMPLATES`: what happens to a template the callers file does not declare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// It is sent as before: declaring templates is opt-in, one at a time.
    #[default]
    Open,
    /// It is refused (422 `unknown_template`): only declared templates go out.
    Declared,
}

impl FromStr for Mode {
    type Err = &'static str;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "open" => Ok(Self::Open),
            "declared" => Ok(Self::Declared),
            _ => Err("must be open or declared"),
        }
    }
}

/// The kind of a template's header parameter; `None` when the send carries no header (the
/// template has none, or a fixed one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    None,
    Text,
    Image,
    Video,
    Document,
}

impl HeaderKind {
    pub const ALL: [HeaderKind; 5] = [
        Self::None,
        Self::Text,
        Self::Image,
        Self::Video,
        Self::Document,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Text => "text",
            Self::Image => "image",
            Self::Video => "video",
            Self::Document => "document",
        }
    }
}

/// A dynamic button's kind, as Qikchat's `sub_type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonKind {
    Url,
    QuickReply,
}

impl ButtonKind {
    pub const ALL: [ButtonKind; 2] = [Self::Url, Self::QuickReply];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Url => "url",
            Self::QuickReply => "quick_reply",
        }
    }
}

/// A template's body parameters: by name (which lets callers send them by name), or a count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyShape {
    Names(Vec<String>),
    Count(usize),
}

impl BodyShape {
    pub fn len(&self) -> usize {
        match self {
            Self::Names(names) => names.len(),
            Self::Count(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One `[templates.<name>]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    pub name: String,
    /// The languages the template is approved in.
    pub languages: Vec<String>,
    pub body: BodyShape,
    pub header: HeaderKind,
    /// The dynamic buttons, in order.
    pub buttons: Vec<ButtonKind>,
    /// Only sends through this account know the declaration; `None`: every account's.
    pub account: Option<String>,
}

/// The declared templates and what to do with the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Templates {
    pub mode: Mode,
    pub declared: BTreeMap<String, Declaration>,
}

/// Why a template send was refused before anything happened; every wrong part is named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateRefusal {
    /// `RELAY_TEMPLATES=declared` and the template is not declared for the send's account.
    #[error("{detail}")]
    Unknown {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// The send does not fit its declaration (or names its body for an undeclared template).
    #[error("the template does not match its declaration")]
    Mismatch(Vec<FieldError>),
}

impl Templates {
    /// The declaration of `name` as sends through `account` see it.
    pub fn declaration(&self, name: &str, account: &str) -> Option<&Declaration> {
        self.declared
            .get(name)
            .filter(|d| d.account.as_deref().is_none_or(|only| only == account))
    }

    /// Checks a template send through `account` against its declaration, and puts a named body
    /// in the declared order. Any other message passes unchanged.
    pub fn resolve(&self, account: &str, mut message: Message) -> Result<Message, TemplateRefusal> {
        let Content::Template(template) = &mut message.content else {
            return Ok(message);
        };
        let errors = match self.declaration(&template.name, account) {
            Some(declaration) => check::check(declaration, template),
            None if self.mode == Mode::Declared => {
                let known = self
                    .declared
                    .keys()
                    .filter(|name| self.declaration(name, account).is_some());
                let hint = check::did_you_mean(&template.name, known);
                return Err(TemplateRefusal::Unknown {
                    detail: format!(
                        "the template {} is not declared in the callers file for account {account} (RELAY_TEMPLATES=declared); nothing was sent",
                        template.name
                    ),
                    errors: vec![FieldError::new(
                        "template.name",
                        format!("{} is not a declared template{hint}", template.name),
                    )],
                });
            }
            None => check::undeclared(template),
        };
        if errors.is_empty() {
            Ok(message)
        } else {
            Err(TemplateRefusal::Mismatch(errors))
        }
    }
}
