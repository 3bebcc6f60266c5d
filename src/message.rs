//! The domain: a validated [`Message`] parsed from a caller's `/send` body.
//!
//! Parsing collects every problem with the path of its field (`template.header.link`), so a caller
//! fixes a request in one round trip; whatever comes out as a `Message` is safe to send. What a
//! message looks like on Qikchat's wire is `qikchat.rs`'s business, not this module's.

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
}

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
        body: Vec<String>,
        buttons: Vec<TemplateButton>,
    },
    /// Qikchat's own `components`, passed on unchanged (without `null`s).
    Raw(Vec<Value>),
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

/// Limits from Qikchat's reference and the WhatsApp platform (shared/qikchat-api.md).
mod limits {
    pub const TEXT: usize = 4096;
    pub const CAPTION: usize = 1024;
    pub const INTERACTIVE_BODY: usize = 1024;
    pub const INTERACTIVE_HEADER: usize = 60;
    pub const INTERACTIVE_FOOTER: usize = 60;
    pub const REPLY_BUTTONS: usize = 3;
    pub const BUTTON_TITLE: usize = 20;
    pub const BUTTON_ID: usize = 256;
    pub const LIST_BUTTON: usize = 20;
    pub const LIST_ROWS: usize = 10;
    pub const SECTION_TITLE: usize = 24;
    pub const ROW_ID: usize = 200;
    pub const ROW_TITLE: usize = 24;
    pub const ROW_DESCRIPTION: usize = 72;
    pub const TEMPLATE_NAME: usize = 512;
    pub const TEMPLATE_BUTTONS: usize = 10;
    /// Anything without a documented limit is still bounded, so no field can be unreasonable.
    pub const ANY: usize = 4096;
}

const TOP_LEVEL_FIELDS: [&str; 11] = [
    "to",
    "type",
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
                let belongs =
                    matches!(key.as_str(), "to" | "type") || t.fields().contains(&key.as_str());
                // A generated client sends every unset optional field as null; only values count.
                if !belongs && !value.is_null() {
                    errors.add(key.clone(), format!("is not a field of type {t}"));
                }
            }
        }

        let content = message_type.and_then(|t| parse_content(t, &root, &mut errors));
        match (to, content) {
            (Some(to), Some(content)) if errors.0.is_empty() => Ok(Self { to, content }),
            _ => Err(errors.into_vec()),
        }
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
            root.string("caption", limits::CAPTION, Need::Optional, errors)
        } else {
            None
        };
        let filename = if kind == MediaKind::Document {
            root.string("filename", limits::ANY, Need::Optional, errors)
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
            let body = root.string("text", limits::TEXT, Need::Required, errors);
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
    let name = location.string("name", limits::ANY, Need::Optional, errors);
    let address = location.string("address", limits::ANY, Need::Optional, errors);
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
        name.string("formatted_name", limits::ANY, Need::Required, errors);
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
    let kind = interactive.string("type", limits::ANY, Need::Required, errors);
    if let Some(body) = interactive.object("body", Need::Required, errors) {
        body.string("text", limits::INTERACTIVE_BODY, Need::Required, errors);
    }
    if let Some(header) = interactive.object("header", Need::Optional, errors) {
        if header.get("type").and_then(Value::as_str) == Some("text") {
            header.string("text", limits::INTERACTIVE_HEADER, Need::Required, errors);
        }
    }
    if let Some(footer) = interactive.object("footer", Need::Optional, errors) {
        footer.string("text", limits::INTERACTIVE_FOOTER, Need::Required, errors);
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
    if !(1..=limits::REPLY_BUTTONS).contains(&buttons.len()) {
        errors.add(
            action.path("buttons"),
            format!("must hold 1 to {} reply buttons", limits::REPLY_BUTTONS),
        );
    }
    let mut ids = Vec::new();
    for item in &buttons {
        let Some(button) = item.as_object(errors) else {
            continue;
        };
        if let Some(kind) = button.string("type", limits::ANY, Need::Required, errors) {
            if kind != "reply" {
                errors.add(button.path("type"), "must be reply");
            }
        }
        if let Some(reply) = button.object("reply", Need::Required, errors) {
            if let Some(id) = reply.string("id", limits::BUTTON_ID, Need::Required, errors) {
                if ids.contains(&id) {
                    errors.add(reply.path("id"), "must be unique among the buttons");
                }
                ids.push(id);
            }
            reply.string("title", limits::BUTTON_TITLE, Need::Required, errors);
        }
    }
}

fn check_list(action: &Obj<'_>, errors: &mut Errors) {
    action.string("button", limits::LIST_BUTTON, Need::Required, errors);
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
        section.string("title", limits::SECTION_TITLE, need_title, errors);
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
            row.string("id", limits::ROW_ID, Need::Required, errors);
            row.string("title", limits::ROW_TITLE, Need::Required, errors);
            row.string(
                "description",
                limits::ROW_DESCRIPTION,
                Need::Optional,
                errors,
            );
        }
    }
    if !sections.is_empty() && !(1..=limits::LIST_ROWS).contains(&rows_in_all) {
        errors.add(
            action.path("sections"),
            format!(
                "must hold 1 to {} rows in all, not {rows_in_all}",
                limits::LIST_ROWS
            ),
        );
    }
}

fn parse_template(template: &Obj<'_>, errors: &mut Errors) -> Option<Content> {
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
    let name = template.string("name", limits::TEMPLATE_NAME, Need::Required, errors);
    let language = match template.get("language") {
        Some(Value::Object(_)) => {
            errors.add(
                template.path("language"),
                "must be a plain string such as \"en\" or \"en_US\"",
            );
            None
        }
        _ => template.string("language", limits::ANY, Need::Required, errors),
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
            component.string("type", limits::ANY, Need::Required, errors);
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
        let body = template
            .array("body", Need::Optional, errors)
            .unwrap_or_default()
            .iter()
            .filter_map(|param| param.string(limits::ANY, errors))
            .collect();
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

fn parse_template_header(header: &Obj<'_>, errors: &mut Errors) -> Option<TemplateHeader> {
    header.strict(&["type", "text", "link", "filename"], errors);
    let kind = header.string("type", limits::ANY, Need::Required, errors)?;
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
            header.string("filename", limits::ANY, Need::Optional, errors)
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
                .string("text", limits::ANY, Need::Required, errors)
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
    if buttons.len() > limits::TEMPLATE_BUTTONS {
        errors.add(
            template.path("buttons"),
            format!("must hold at most {} buttons", limits::TEMPLATE_BUTTONS),
        );
    }
    let mut parsed = Vec::new();
    for item in &buttons {
        let Some(button) = item.as_object(errors) else {
            continue;
        };
        button.strict(&["type", "text", "payload"], errors);
        let Some(kind) = button.string("type", limits::ANY, Need::Required, errors) else {
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
        if let Some(value) = button.string(needed, limits::ANY, Need::Required, errors) {
            parsed.push(if kind == "url" {
                TemplateButton::Url(value)
            } else {
                TemplateButton::QuickReply(value)
            });
        }
    }
    parsed
}

/// Every problem found so far.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    fn into_vec(self) -> Vec<FieldError> {
        self.0
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
}

/// A JSON value and the path that names it in error messages.
struct At<'a> {
    value: &'a Value,
    path: String,
}

impl<'a> At<'a> {
    fn as_object(&self, errors: &mut Errors) -> Option<Obj<'a>> {
        match self.value {
            Value::Object(map) => Some(Obj {
                map,
                path: self.path.clone(),
            }),
            _ => {
                errors.add(self.path.clone(), "must be an object");
                None
            }
        }
    }

    fn string(&self, max_chars: usize, errors: &mut Errors) -> Option<String> {
        checked_string(self.value, &self.path, max_chars, Need::Required, errors)
    }
}

/// A JSON object and its path. Getters treat `null` as absent, record problems in `errors` and
/// return `None` for anything absent or wrong.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    fn root(map: &'a Map<String, Value>) -> Self {
        Self {
            map,
            path: String::new(),
        }
    }

    fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn missing(&self, key: &str, need: Need, errors: &mut Errors) {
        if need == Need::Required {
            errors.add(self.path(key), "is required");
        }
    }

    /// Rejects fields other than `known`, whatever their value: for the relay's own objects, where
    /// a typo must not silently drop data.
    fn strict(&self, known: &[&str], errors: &mut Errors) {
        for key in self.map.keys() {
            if !known.contains(&key.as_str()) {
                errors.add(self.path(key), "is not a known field");
            }
        }
    }

    fn string(
        &self,
        key: &str,
        max_chars: usize,
        need: Need,
        errors: &mut Errors,
    ) -> Option<String> {
        match self.get(key) {
            None => {
                self.missing(key, need, errors);
                None
            }
            Some(value) => checked_string(value, &self.path(key), max_chars, need, errors),
        }
    }

    fn bool(&self, key: &str, errors: &mut Errors) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            _ => {
                errors.add(self.path(key), "must be true or false");
                None
            }
        }
    }

    fn number(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<f64>,
        errors: &mut Errors,
    ) -> Option<f64> {
        let Some(value) = self.get(key) else {
            self.missing(key, Need::Required, errors);
            return None;
        };
        match value.as_f64() {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                errors.add(
                    self.path(key),
                    format!("must be a number from {} to {}", range.start(), range.end()),
                );
                None
            }
        }
    }

    fn link(&self, key: &str, need: Need, errors: &mut Errors) -> Option<Url> {
        let raw = self.string(key, limits::ANY, need, errors)?;
        match Url::parse(&raw) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(url)
            }
            _ => {
                errors.add(self.path(key), "must be an absolute http or https URL");
                None
            }
        }
    }

    fn object(&self, key: &str, need: Need, errors: &mut Errors) -> Option<Obj<'a>> {
        match self.get(key) {
            None => {
                self.missing(key, need, errors);
                None
            }
            Some(value) => At {
                value,
                path: self.path(key),
            }
            .as_object(errors),
        }
    }

    fn array(&self, key: &str, need: Need, errors: &mut Errors) -> Option<Vec<At<'a>>> {
        match self.get(key) {
            None => {
                self.missing(key, need, errors);
                None
            }
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, value)| At {
                        value,
                        path: format!("{}[{i}]", self.path(key)),
                    })
                    .collect(),
            ),
            Some(_) => {
                errors.add(self.path(key), "must be an array");
                None
            }
        }
    }

    fn without_unset(&self) -> Map<String, Value> {
        self.map
            .iter()
            .filter(|(_, v)| is_set(v))
            .map(|(k, v)| (k.clone(), without_unset(v)))
            .collect()
    }
}

/// A string of 1 to `max_chars` characters. An empty optional string counts as absent, so it is
/// never passed on to Qikchat.
fn checked_string(
    value: &Value,
    path: &str,
    max_chars: usize,
    need: Need,
    errors: &mut Errors,
) -> Option<String> {
    let Value::String(s) = value else {
        errors.add(path, "must be a string");
        return None;
    };
    let chars = s.chars().count();
    if chars == 0 {
        if need == Need::Required {
            errors.add(path, "must not be empty");
        }
        return None;
    }
    if chars > max_chars {
        errors.add(
            path,
            format!("must be at most {max_chars} characters, not {chars}"),
        );
        return None;
    }
    Some(s.clone())
}

/// Qikchat's own objects are passed on as given, minus unset fields: `null` (generated clients
/// send it for every unset field) and `""` (an empty optional field). Required fields were checked
/// to be non-empty before this runs.
fn without_unset(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| is_set(v))
                .map(|(k, v)| (k.clone(), without_unset(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_unset).collect()),
        other => other.clone(),
    }
}

fn is_set(value: &Value) -> bool {
    !(value.is_null() || value.as_str() == Some(""))
}

#[cfg(test)]
mod tests {
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
        assert!(
            Message::parse(&json!({"to": "+918080808080", "type": "text", "text": max})).is_ok()
        );
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
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::qikchat::send_body;

    /// Any JSON value, biased towards the relay's own field names so that deep paths get explored.
    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("to".to_owned()),
            Just("type".to_owned()),
            Just("text".to_owned()),
            Just("link".to_owned()),
            Just("caption".to_owned()),
            Just("template".to_owned()),
            Just("interactive".to_owned()),
            Just("action".to_owned()),
            Just("buttons".to_owned()),
            Just("name".to_owned()),
            Just("language".to_owned()),
            "[a-z_]{1,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>().prop_map(|f| json!(f)),
            any::<i64>().prop_map(|i| json!(i)),
            prop_oneof![
                Just("+918080808080".to_owned()),
                Just("https://cdn.example.com/a.png".to_owned()),
                Just("text".to_owned()),
                Just("template".to_owned()),
                Just(String::new()),
                ".{0,12}",
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    fn has_null(value: &Value) -> bool {
        match value {
            Value::Null => true,
            Value::Array(items) => items.iter().any(has_null),
            Value::Object(map) => map.values().any(has_null),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn recipient_parsing_never_panics_and_accepts_only_plus_and_8_to_15_digits(raw in ".{0,24}") {
            if let Ok(recipient) = Recipient::parse(&raw) {
                let digits = &recipient.as_str()[1..];
                prop_assert!(recipient.as_str().starts_with('+'));
                prop_assert!((8..=15).contains(&digits.len()));
                prop_assert!(digits.bytes().all(|b| b.is_ascii_digit()));
                let masked = recipient.masked();
                prop_assert_eq!(masked.len(), recipient.as_str().len());
                prop_assert!(masked.ends_with(&digits[digits.len() - 4..]));
            }
        }

        #[test]
        fn formatted_numbers_normalise_to_their_digits(digits in "[1-9][0-9]{7,14}", separators in prop::collection::vec(prop_oneof![Just(" "), Just("-"), Just("."), Just("("), Just(")")], 0..4)) {
            let mut formatted = format!("+{digits}");
            for (i, separator) in separators.iter().enumerate() {
                formatted.insert_str((2 + i * 3).min(formatted.len()), separator);
            }
            prop_assert_eq!(Recipient::parse(&formatted).map(|r| r.as_str().to_owned()), Ok(format!("+{digits}")));
        }

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
