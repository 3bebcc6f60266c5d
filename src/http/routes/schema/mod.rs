//! The body `POST /send` accepts, as the OpenAPI document describes it. These types are never
//! deserialised by the relay: `message` parses requests, so that every bad field is named.
//!
//! The two must agree both ways: whatever this schema accepts, the parser accepts, and the reverse.
//! schemathesis checks that in CI (tests/external/run.sh). The few rules JSON Schema cannot state
//! (at most 10 list rows in all, unique button ids, section titles once there are several, a text
//! header's length) are in the descriptions and in tests/external/hooks.py.
//!
//! The relay takes a known field set to `null` as absent, but the document does not say `null`:
//! optional fields are `nullable = false` and a form's fields that belong to another form are left
//! out, so that generators give `Option<T>` (not `Option<Option<T>>` or a `Null` type).
//! Discriminators are `const` ([`tag`]) and every variant has a schema of its own, so that each
//! generator's union has one literal-typed member per `type`.
//!
//! This module holds the message schemas and their simple parts; `interactive` holds Qikchat's
//! interactive object and `template` the two forms of a template.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

mod interactive;
mod template;

pub use interactive::{
    ButtonsAction, Interactive, InteractiveBody, InteractiveButtons, InteractiveFooter,
    InteractiveList, ListAction, ListRow, ListSection, Reply, ReplyButton,
};
pub use template::{
    BodyParameter, DocumentHeader, ImageHeader, QuickReplyButton, Template, TemplateBody,
    TemplateButton, TemplateComponent, TemplateHeader, TemplateWithComponents,
    TemplateWithParameters, TextHeader, UrlButton, VideoHeader,
};

/// One message to send, discriminated by `type`. Fields of other types are refused unless
/// `null`; unknown fields are refused.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(discriminator(property_name = "type", mapping(
    ("text" = "#/components/schemas/TextMessage"),
    ("image" = "#/components/schemas/ImageMessage"),
    ("video" = "#/components/schemas/VideoMessage"),
    ("audio" = "#/components/schemas/AudioMessage"),
    ("document" = "#/components/schemas/DocumentMessage"),
    ("sticker" = "#/components/schemas/StickerMessage"),
    ("location" = "#/components/schemas/LocationMessage"),
    ("contact" = "#/components/schemas/ContactMessage"),
    ("interactive" = "#/components/schemas/InteractiveMessage"),
    ("template" = "#/components/schemas/TemplateMessage"),
)))]
pub enum SendRequest {
    Text(TextMessage),
    Image(ImageMessage),
    Video(VideoMessage),
    Audio(AudioMessage),
    Document(DocumentMessage),
    Sticker(StickerMessage),
    Location(LocationMessage),
    Contact(ContactMessage),
    Interactive(InteractiveMessage),
    Template(TemplateMessage),
}

/// One message for `POST /messages`: a `POST /send` body, plus `send_at` and `valid_until`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(discriminator(property_name = "type", mapping(
    ("text" = "#/components/schemas/QueuedTextMessage"),
    ("image" = "#/components/schemas/QueuedImageMessage"),
    ("video" = "#/components/schemas/QueuedVideoMessage"),
    ("audio" = "#/components/schemas/QueuedAudioMessage"),
    ("document" = "#/components/schemas/QueuedDocumentMessage"),
    ("sticker" = "#/components/schemas/QueuedStickerMessage"),
    ("location" = "#/components/schemas/QueuedLocationMessage"),
    ("contact" = "#/components/schemas/QueuedContactMessage"),
    ("interactive" = "#/components/schemas/QueuedInteractiveMessage"),
    ("template" = "#/components/schemas/QueuedTemplateMessage"),
)))]
pub enum QueueRequest {
    Text(QueuedTextMessage),
    Image(QueuedImageMessage),
    Video(QueuedVideoMessage),
    Audio(QueuedAudioMessage),
    Document(QueuedDocumentMessage),
    Sticker(QueuedStickerMessage),
    Location(QueuedLocationMessage),
    Contact(QueuedContactMessage),
    Interactive(QueuedInteractiveMessage),
    Template(QueuedTemplateMessage),
}

/// The customer's number: `+`, country code and number, 8 to 15 digits (the first not 0); spaces,
/// dashes, dots and parentheses after the `+` are ignored. Exactly what `Recipient::parse` accepts.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(
    pattern = r"^\+[ ().\-]*[1-9]([ ().\-]*[0-9]){7,14}[ ().\-]*$",
    examples("+918080808080", "+91 80808 08080")
)]
pub struct Recipient(String);

/// The schema of a discriminator: a string that is exactly `value`. `const` gives generators a
/// literal type (`type: Literal["text"]`, `"text"`) where a pattern gives a plain string; utoipa 6
/// has no attribute for it, so the keyword is added as a raw key.
fn tag(value: &'static str) -> utoipa::openapi::Object {
    // The builder would prefix the key with `x-`; the map itself takes it as it is.
    let mut keywords = utoipa::openapi::extensions::Extensions::default();
    keywords.insert("const".to_owned(), value.into());
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .examples([value])
        .extensions(Some(keywords))
        .build()
}

/// Declares one message schema: `to`, a `type` that takes exactly one value, the caller's
/// `reference` (every type has one), and its fields; and its `POST /messages` twin, `$queued`,
/// which also takes `send_at` and `valid_until`.
macro_rules! message_schema {
    ($(#[$doc:meta])* $name:ident, $queued:ident, $tag:literal, { $($fields:tt)* }) => {
        $(#[$doc])*
        #[derive(Serialize, Deserialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            #[schema(value_type = Recipient)]
            pub to: String,
            #[serde(rename = "type")]
            #[schema(schema_with = Self::kind_schema)]
            pub kind: String,
            /// The caller's own id for the message: never sent to Qikchat, returned by
            /// `GET /messages/{id}` and in every status webhook of it (`data.reference`). 1 to 128
            /// printable ASCII characters (space to `~`), not only spaces.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schema(nullable = false, min_length = 1, max_length = 128,
                pattern = r"^[\x20-\x7E]*[\x21-\x7E][\x20-\x7E]*$", examples("invoice-2026-0042"))]
            pub reference: Option<String>,
            $($fields)*
        }

        impl $name {
            fn kind_schema() -> utoipa::openapi::Object {
                tag($tag)
            }
        }

        $(#[$doc])*
        /// Queued with `POST /messages`: sent when due, at the account's pace.
        #[derive(Serialize, Deserialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $queued {
            #[schema(value_type = Recipient)]
            pub to: String,
            #[serde(rename = "type")]
            #[schema(schema_with = $name::kind_schema)]
            pub kind: String,
            /// The caller's own id for the message: never sent to Qikchat, returned by
            /// `GET /messages/{id}` and in every status webhook of it (`data.reference`). 1 to 128
            /// printable ASCII characters (space to `~`), not only spaces.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schema(nullable = false, min_length = 1, max_length = 128,
                pattern = r"^[\x20-\x7E]*[\x21-\x7E][\x20-\x7E]*$", examples("invoice-2026-0042"))]
            pub reference: Option<String>,
            /// Not sent before this time (RFC 3339 with its offset), at most 35 days ahead.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schema(nullable = false, format = DateTime, examples("2026-12-24T09:00:00+05:30"))]
            pub send_at: Option<String>,
            /// Never sent after this time (RFC 3339 with its offset): if it could not be sent by
            /// then it ends `expired`. Later than `send_at` and than now. Default: `send_at` (or
            /// acceptance) plus `RELAY_OUTBOX_VALIDITY_S` (4 hours).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schema(nullable = false, format = DateTime, examples("2026-12-24T13:00:00+05:30"))]
            pub valid_until: Option<String>,
            $($fields)*
        }
    };
}

message_schema!(
    /// A text message.
    TextMessage, QueuedTextMessage, "text", {
    /// The text, 1 to 4096 characters.
    #[schema(min_length = 1, max_length = 4096)]
    pub text: String,
    /// Show a preview of the first URL in the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub preview_url: Option<bool>,
});

message_schema!(
    /// An image (JPEG or PNG, at most 5 MB) Qikchat downloads from `link`.
    ImageMessage, QueuedImageMessage, "image", {
    #[schema(value_type = Link)]
    pub link: String,
    /// At most 1024 characters; empty counts as absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, max_length = 1024)]
    pub caption: Option<String>,
});

message_schema!(
    /// A video (MP4 or 3GPP, at most 16 MB): a direct link to the file, not a player page.
    VideoMessage, QueuedVideoMessage, "video", {
    #[schema(value_type = Link)]
    pub link: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, max_length = 1024)]
    pub caption: Option<String>,
});

message_schema!(
    /// An audio file (AAC, MP4, AMR, MPEG or OGG/Opus, at most 16 MB); no caption.
    AudioMessage, QueuedAudioMessage, "audio", {
    #[schema(value_type = Link)]
    pub link: String,
});

message_schema!(
    /// A document of any type, at most 100 MB.
    DocumentMessage, QueuedDocumentMessage, "document", {
    #[schema(value_type = Link)]
    pub link: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, max_length = 1024)]
    pub caption: Option<String>,
    /// The file name the customer sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, max_length = 4096)]
    pub filename: Option<String>,
});

message_schema!(
    /// A WebP sticker (100 KB static, 500 KB animated, 512x512); no caption.
    StickerMessage, QueuedStickerMessage, "sticker", {
    #[schema(value_type = Link)]
    pub link: String,
});

message_schema!(
    /// A location pin.
    LocationMessage, QueuedLocationMessage, "location", {
    pub location: Location,
});

message_schema!(
    /// A contact card, in Qikchat's contact object.
    ContactMessage, QueuedContactMessage, "contact", {
    pub contact: Contact,
});

message_schema!(
    /// Reply buttons (1 to 3) or a list (at most 10 rows in all), in Qikchat's interactive object.
    InteractiveMessage, QueuedInteractiveMessage, "interactive", {
    pub interactive: Interactive,
});

message_schema!(
    /// A pre-approved template: the only way to start a conversation outside the 24-hour window.
    TemplateMessage, QueuedTemplateMessage, "template", {
    pub template: Template,
});

/// An absolute http or https URL to the file itself; Qikchat downloads it.
#[derive(Serialize, Deserialize, ToSchema)]
// The host's last label starts with a letter: a numeric one makes the host an IPv4 address
// (WHATWG URL), and a link to an address is not what a media link should be.
#[schema(
    pattern = r"^https?://([A-Za-z0-9]([A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9\-]*[A-Za-z0-9])?(/[A-Za-z0-9._~%/\-]*)?$",
    max_length = 4096,
    examples("https://cdn.example.com/invoice.png")
)]
pub struct Link(String);

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Location {
    #[schema(minimum = -90, maximum = 90, examples(19.076))]
    pub latitude: f64,
    #[schema(minimum = -180, maximum = 180, examples(72.8777))]
    pub longitude: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, max_length = 4096)]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, max_length = 4096)]
    pub address: Option<String>,
}

/// Qikchat's contact object (`birthday`, ... besides the fields below); fields the relay does not
/// know are passed on unchanged.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Contact {
    pub name: ContactName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, value_type = Option<Vec<Object>>)]
    pub phones: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, value_type = Option<Vec<Object>>)]
    pub emails: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, value_type = Option<Vec<Object>>)]
    pub addresses: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, value_type = Option<Vec<Object>>)]
    pub urls: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, value_type = Option<Object>)]
    pub org: Option<Value>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ContactName {
    #[schema(min_length = 1, max_length = 4096, examples("Support Desk"))]
    pub formatted_name: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}
