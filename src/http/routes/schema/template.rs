//! A template as `POST /send` accepts it: the simplified `header`/`body`/`buttons`, or Qikchat's
//! raw `components`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{Link, tag};

fn text_tag() -> utoipa::openapi::Object {
    tag("text")
}
fn image_tag() -> utoipa::openapi::Object {
    tag("image")
}
fn video_tag() -> utoipa::openapi::Object {
    tag("video")
}
fn document_tag() -> utoipa::openapi::Object {
    tag("document")
}
fn url_tag() -> utoipa::openapi::Object {
    tag("url")
}
fn quick_reply_tag() -> utoipa::openapi::Object {
    tag("quick_reply")
}

/// A template: `name` and `language`, then either the simplified `header`/`body`/`buttons` or
/// Qikchat's raw `components`, not both (each form refuses the other's fields; the relay takes a
/// field set to `null` as absent).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Template {
    Parameters(TemplateWithParameters),
    Components(TemplateWithComponents),
}

/// The simplified form; all three parts are optional (a template without variables has none).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateWithParameters {
    #[schema(min_length = 1, max_length = 512, examples("order_update"))]
    pub name: String,
    /// A plain language code such as `en` or `en_US`.
    #[schema(min_length = 1, max_length = 4096, examples("en"))]
    pub language: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub header: Option<TemplateHeader>,
    /// The body parameters: a list, in order; or, for a template declared in the callers file
    /// with named parameters, an object by name that the relay puts in the declared order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub body: Option<TemplateBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, max_items = 10)]
    pub buttons: Option<Vec<TemplateButton>>,
}

/// Qikchat's own components, passed on unchanged.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateWithComponents {
    #[schema(min_length = 1, max_length = 512, examples("order_update"))]
    pub name: String,
    #[schema(min_length = 1, max_length = 4096, examples("en_US"))]
    pub language: String,
    pub components: Vec<TemplateComponent>,
}

/// A template's body parameters, either way. A body by name is only for a template declared in
/// the callers file (`[templates.<name>]` with `body = [names]`): the declaration gives the order,
/// and a missing or unknown name is refused (422) naming it.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TemplateBody {
    /// The parameters, in the template's order.
    List(Vec<BodyParameter>),
    /// The parameters by the names the declaration gives them.
    ByName(BTreeMap<String, BodyParameter>),
}

/// One template body parameter.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(min_length = 1, max_length = 4096, examples("Siva"))]
pub struct BodyParameter(String);

/// A component as Qikchat takes it: `header`, `body` or `button`, with its `parameters`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TemplateComponent {
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 4096, examples("body"))]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, value_type = Option<Vec<Object>>)]
    pub parameters: Option<Vec<Value>>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(discriminator(property_name = "type", mapping(
    ("text" = "#/components/schemas/TextHeader"),
    ("image" = "#/components/schemas/ImageHeader"),
    ("video" = "#/components/schemas/VideoHeader"),
    ("document" = "#/components/schemas/DocumentHeader"),
)))]
pub enum TemplateHeader {
    Text(TextHeader),
    Image(ImageHeader),
    Video(VideoHeader),
    Document(DocumentHeader),
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextHeader {
    #[serde(rename = "type")]
    #[schema(schema_with = text_tag)]
    pub kind: String,
    #[schema(min_length = 1, max_length = 4096)]
    pub text: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageHeader {
    #[serde(rename = "type")]
    #[schema(schema_with = image_tag)]
    pub kind: String,
    #[schema(value_type = Link)]
    pub link: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VideoHeader {
    #[serde(rename = "type")]
    #[schema(schema_with = video_tag)]
    pub kind: String,
    #[schema(value_type = Link)]
    pub link: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentHeader {
    #[serde(rename = "type")]
    #[schema(schema_with = document_tag)]
    pub kind: String,
    #[schema(value_type = Link)]
    pub link: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, max_length = 4096)]
    pub filename: Option<String>,
}

/// A button parameter, in the template's button order.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(discriminator(property_name = "type", mapping(
    ("url" = "#/components/schemas/UrlButton"),
    ("quick_reply" = "#/components/schemas/QuickReplyButton"),
)))]
pub enum TemplateButton {
    Url(UrlButton),
    QuickReply(QuickReplyButton),
}

/// The dynamic suffix of a URL button.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UrlButton {
    #[serde(rename = "type")]
    #[schema(schema_with = url_tag)]
    pub kind: String,
    #[schema(min_length = 1, max_length = 4096, examples("orders/1234"))]
    pub text: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuickReplyButton {
    #[serde(rename = "type")]
    #[schema(schema_with = quick_reply_tag)]
    pub kind: String,
    #[schema(min_length = 1, max_length = 4096)]
    pub payload: String,
}
