//! Qikchat's interactive object as `POST /send` accepts it: reply buttons or a list.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::tag;

fn button_tag() -> utoipa::openapi::Object {
    tag("button")
}
fn list_tag() -> utoipa::openapi::Object {
    tag("list")
}
fn reply_tag() -> utoipa::openapi::Object {
    tag("reply")
}

/// Qikchat's interactive object: reply buttons or a list. `header` (an object; a `text` header
/// holds at most 60 characters) and fields the relay does not know are passed on unchanged.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(discriminator(property_name = "type", mapping(
    ("button" = "#/components/schemas/InteractiveButtons"),
    ("list" = "#/components/schemas/InteractiveList"),
)))]
pub enum Interactive {
    Buttons(InteractiveButtons),
    List(InteractiveList),
}

/// 1 to 3 reply buttons, with unique ids.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct InteractiveButtons {
    #[serde(rename = "type")]
    #[schema(schema_with = button_tag)]
    pub kind: String,
    pub body: InteractiveBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub footer: Option<InteractiveFooter>,
    pub action: ButtonsAction,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A menu of at most 10 rows in all; every section has a title when there are several.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct InteractiveList {
    #[serde(rename = "type")]
    #[schema(schema_with = list_tag)]
    pub kind: String,
    pub body: InteractiveBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub footer: Option<InteractiveFooter>,
    pub action: ListAction,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct InteractiveBody {
    #[schema(min_length = 1, max_length = 1024)]
    pub text: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct InteractiveFooter {
    #[schema(min_length = 1, max_length = 60)]
    pub text: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ButtonsAction {
    #[schema(min_items = 1, max_items = 3)]
    pub buttons: Vec<ReplyButton>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ReplyButton {
    #[serde(rename = "type")]
    #[schema(schema_with = reply_tag)]
    pub kind: String,
    pub reply: Reply,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Reply {
    /// Unique among the message's buttons.
    #[schema(min_length = 1, max_length = 256)]
    pub id: String,
    #[schema(min_length = 1, max_length = 20)]
    pub title: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ListAction {
    /// The label of the button that opens the list.
    #[schema(min_length = 1, max_length = 20)]
    pub button: String,
    #[schema(min_items = 1, max_items = 10)]
    pub sections: Vec<ListSection>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ListSection {
    /// Required when there are several sections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, max_length = 24)]
    pub title: Option<String>,
    #[schema(min_items = 1, max_items = 10)]
    pub rows: Vec<ListRow>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ListRow {
    #[schema(min_length = 1, max_length = 200)]
    pub id: String,
    #[schema(min_length = 1, max_length = 24)]
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, max_length = 72)]
    pub description: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}
