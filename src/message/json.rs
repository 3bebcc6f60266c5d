//! Reading a JSON body field by field: every getter records what is wrong with its field's path
//! and returns `None`, so parsing goes on and names every bad field at once.

use serde_json::{Map, Value};
use url::Url;

use super::{FieldError, whatsapp};

/// Every problem found so far.
#[derive(Default)]
pub(super) struct Errors(pub(super) Vec<FieldError>);

impl Errors {
    pub(super) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    pub(super) fn into_vec(self) -> Vec<FieldError> {
        self.0
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    Required,
    Optional,
}

/// A JSON value and the path that names it in error messages.
pub(super) struct At<'a> {
    pub(super) value: &'a Value,
    pub(super) path: String,
}

impl<'a> At<'a> {
    pub(super) fn as_object(&self, errors: &mut Errors) -> Option<Obj<'a>> {
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

    pub(super) fn string(&self, max_chars: usize, errors: &mut Errors) -> Option<String> {
        checked_string(self.value, &self.path, max_chars, Need::Required, errors)
    }
}

/// A JSON object and its path. Getters treat `null` as absent, record problems in `errors` and
/// return `None` for anything absent or wrong.
pub(super) struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    pub(super) fn root(map: &'a Map<String, Value>) -> Self {
        Self {
            map,
            path: String::new(),
        }
    }

    pub(super) fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Every member that is set (`null` counts as absent), with its path.
    pub(super) fn entries(&self) -> impl Iterator<Item = (&'a str, At<'a>)> + '_ {
        self.map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(key, value)| {
                (
                    key.as_str(),
                    At {
                        value,
                        path: self.path(key),
                    },
                )
            })
    }

    pub(super) fn missing(&self, key: &str, need: Need, errors: &mut Errors) {
        if need == Need::Required {
            errors.add(self.path(key), "is required");
        }
    }

    /// Rejects fields other than `known`, whatever their value: for the relay's own objects, where
    /// a typo must not silently drop data.
    pub(super) fn strict(&self, known: &[&str], errors: &mut Errors) {
        for key in self.map.keys() {
            if !known.contains(&key.as_str()) {
                errors.add(self.path(key), "is not a known field");
            }
        }
    }

    pub(super) fn string(
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

    pub(super) fn bool(&self, key: &str, errors: &mut Errors) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            _ => {
                errors.add(self.path(key), "must be true or false");
                None
            }
        }
    }

    pub(super) fn number(
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

    pub(super) fn link(&self, key: &str, need: Need, errors: &mut Errors) -> Option<Url> {
        let raw = self.string(key, whatsapp::ANY, need, errors)?;
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

    pub(super) fn object(&self, key: &str, need: Need, errors: &mut Errors) -> Option<Obj<'a>> {
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

    pub(super) fn array(&self, key: &str, need: Need, errors: &mut Errors) -> Option<Vec<At<'a>>> {
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

    pub(super) fn without_unset(&self) -> Map<String, Value> {
        self.map
            .iter()
            .filter(|(_, v)| is_set(v))
            .map(|(k, v)| (k.clone(), without_unset(v)))
            .collect()
    }
}

/// A string of 1 to `max_chars` characters. An empty optional string counts as absent, so it is
/// never passed on to Qikchat.
pub(super) fn checked_string(
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
pub(super) fn without_unset(value: &Value) -> Value {
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

pub(super) fn is_set(value: &Value) -> bool {
    !(value.is_null() || value.as_str() == Some(""))
}
