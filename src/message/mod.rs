//! The domain: a validated [`Message`] parsed from a caller's `/send` body.
//!
//! Parsing collects every problem with the path of its field (`template.header.link`), so a caller
//! fixes a request in one round trip; whatever comes out as a `Message` is safe to send. What a
//! message looks like on Qikchat's wire is `qikchat`'s business, not this module's.

use std::fmt;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;
use utoipa::ToSchema;

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, ToSchema)]
pub struct FieldError {
    /// The field's path, e.g. `to` or `template.header.link`.
    #[schema(examples("to"))]
    pub field: String,
    #[schema(examples("must start with + and the country code, e.g. +918080808080"))]
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A request that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub to: Recipient,
    pub content: Content,
    /// The caller's own id for the message ([`REFERENCE_RULE`]): never sent to Qikchat, kept
    /// with the sender's record so that status reads and status webhooks can name it.
    pub reference: Option<String>,
}

/// The most characters a `reference` may have.
pub const MAX_REFERENCE_CHARS: usize = 128;

/// What a `reference` may be, as error messages and the OpenAPI document say it: printable ASCII
/// only, so that it survives every header, log line and client it is copied into unchanged, and
/// no look-alike or invisible character makes two references that read the same differ.
pub const REFERENCE_RULE: &str =
    "must be 1 to 128 printable ASCII characters (space to ~), not only spaces";

#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text {
        body: String,
        preview_url: bool,
    },
    Media {
        kind: MediaKind,
        link: Url,
        caption: Option<String>,
        /// Only ever set for documents.
        filename: Option<String>,
    },
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
        address: Option<String>,
    },
    /// Qikchat's contact object; fields the relay does not know are passed on unchanged.
    Contact(Map<String, Value>),
    /// Qikchat's interactive object; fields the relay does not know are passed on unchanged.
    Interactive(Map<String, Value>),
    Template(Template),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub name: String,
    pub language: String,
    pub parameters: TemplateParameters,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TemplateParameters {
    /// The relay's simplified form.
    Simple {
        header: Option<TemplateHeader>,
        body: TemplateBody,
        buttons: Vec<TemplateButton>,
    },
    /// Qikchat's own `components`, passed on unchanged (without `null`s).
    Raw(Vec<Value>),
}

/// A template's body parameters: a list in order, or (for a template declared in the callers
/// file) an object by name, which only the declaration can put in order. The relay turns a named
/// body into the list before anything is claimed or sent (`policy::Templates::resolve`), so that
/// a named body and its list are the same request to Qikchat and to idempotency.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateBody {
    Positional(Vec<String>),
    /// Name and value, in the caller's order (names are unique: they were a JSON object's keys).
    Named(Vec<(String, String)>),
}

impl TemplateBody {
    /// How many parameters the body holds, in either form.
    pub fn len(&self) -> usize {
        match self {
            Self::Positional(values) => values.len(),
            Self::Named(pairs) => pairs.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TemplateHeader {
    Text(String),
    Media {
        /// Image, video or document.
        kind: MediaKind,
        link: Url,
        filename: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum TemplateButton {
    /// The dynamic suffix of a URL button.
    Url(String),
    QuickReply(String),
}

/// The ten message types, as named on the wire by callers and by Qikchat alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MessageType {
    Text,
    Image,
    Video,
    Audio,
    Document,
    Sticker,
    Location,
    Contact,
    Interactive,
    Template,
}

impl MessageType {
    pub const ALL: [MessageType; 10] = [
        Self::Text,
        Self::Image,
        Self::Video,
        Self::Audio,
        Self::Document,
        Self::Sticker,
        Self::Location,
        Self::Contact,
        Self::Interactive,
        Self::Template,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Document => "document",
            Self::Sticker => "sticker",
            Self::Location => "location",
            Self::Contact => "contact",
            Self::Interactive => "interactive",
            Self::Template => "template",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The top-level fields a request of this type may carry besides `to` and `type`.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Text => &["text", "preview_url"],
            Self::Image | Self::Video => &["link", "caption"],
            Self::Document => &["link", "caption", "filename"],
            Self::Audio | Self::Sticker => &["link"],
            Self::Location => &["location"],
            Self::Contact => &["contact"],
            Self::Interactive => &["interactive"],
            Self::Template => &["template"],
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl MediaKind {
    pub fn message_type(self) -> MessageType {
        match self {
            Self::Image => MessageType::Image,
            Self::Video => MessageType::Video,
            Self::Audio => MessageType::Audio,
            Self::Document => MessageType::Document,
            Self::Sticker => MessageType::Sticker,
        }
    }
}

impl Content {
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Text { .. } => MessageType::Text,
            Self::Media { kind, .. } => kind.message_type(),
            Self::Location { .. } => MessageType::Location,
            Self::Contact(_) => MessageType::Contact,
            Self::Interactive(_) => MessageType::Interactive,
            Self::Template(_) => MessageType::Template,
        }
    }
}

/// A customer's number, normalised to `+` and 8 to 15 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Recipient(String);

impl Recipient {
    /// Strips spaces, dashes, dots and parentheses, then requires `+` and 8 to 15 digits.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let compact: String = raw
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        let Some(digits) = compact.strip_prefix('+') else {
            return Err("must start with + and the country code, e.g. +918080808080");
        };
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(
                "may only hold digits after the + (spaces, dashes, dots and parentheses are ignored)",
            );
        }
        if !(8..=15).contains(&digits.len()) {
            return Err("must have 8 to 15 digits after the +");
        }
        if digits.starts_with('0') {
            return Err("must start with a country code after the +, and none starts with 0");
        }
        Ok(Self(compact))
    }

    /// A number as Qikchat writes it in webhooks: with or without the `+`.
    pub fn from_qikchat(raw: &str) -> Option<Self> {
        Self::parse(raw)
            .or_else(|_| Self::parse(&format!("+{raw}")))
            .ok()
    }

    /// What stores keep instead of the number: the first 16 bytes of its SHA-256, in hex. The
    /// same number gives the same pseudonym, whichever way it was written.
    pub fn pseudonym(&self) -> String {
        hex::encode(&Sha256::digest(self.0.as_bytes())[..16])
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form logs use: `+`, the first two digits, the last four, e.g. `+91******8080`.
    pub fn masked(&self) -> String {
        let digits = &self.0[1..];
        let hidden = digits.len() - 6;
        format!(
            "+{}{}{}",
            &digits[..2],
            "*".repeat(hidden),
            &digits[hidden + 2..]
        )
    }
}

mod json;
mod parse;
#[cfg(test)]
pub(crate) mod properties;
mod template;
#[cfg(test)]
mod tests;
pub(crate) mod whatsapp;
