//! JSON parsed into a [`Value`] as serde_json parses it, except that an object with the same key
//! twice is refused, naming the key's path (`to`, `template.header.type`, `contact.phones[0].type`).
//!
//! serde_json keeps the last of two equal keys, other parsers the first: a validator in front of
//! the relay and the relay itself would then read two different messages from one body.

use std::cell::RefCell;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

#[derive(Debug)]
pub enum Error {
    Syntax(serde_json::Error),
    /// The path of the first key found twice in its object.
    DuplicateKey(String),
}

pub fn parse(bytes: &[u8]) -> Result<Value, Error> {
    let duplicate = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = Node {
        at: Path::Root,
        duplicate: &duplicate,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    parsed.map_err(|e| match duplicate.take() {
        Some(path) => Error::DuplicateKey(path),
        None => Error::Syntax(e),
    })
}

/// Where a value sits, built only when a duplicate must be named.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn render(&self) -> String {
        match self {
            Path::Root => String::new(),
            Path::Key(Path::Root, key) => (*key).to_owned(),
            Path::Key(parent, key) => format!("{}.{key}", parent.render()),
            Path::Index(parent, index) => format!("{}[{index}]", parent.render()),
        }
    }
}

struct Node<'a> {
    at: Path<'a>,
    duplicate: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Node {
            at: Path::Index(&self.at, items.len()),
            duplicate: self.duplicate,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                *self.duplicate.borrow_mut() = Some(Path::Key(&self.at, &key).render());
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            let value = access.next_value_seed(Node {
                at: Path::Key(&self.at, &key),
                duplicate: self.duplicate,
            })?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplicate(body: &str) -> Option<String> {
        match parse(body.as_bytes()) {
            Err(Error::DuplicateKey(path)) => Some(path),
            _ => None,
        }
    }

    #[test]
    fn parses_what_serde_json_parses_the_same_way() {
        let body = r#"{"to":"+918080808080","type":"template","n":-1.5,"big":18446744073709551615,
            "template":{"body":["a",{"b":null}],"t":true}}"#;
        let strict = parse(body.as_bytes()).expect("valid");
        let plain: Value = serde_json::from_str(body).expect("valid");
        assert_eq!(strict, plain);
        assert_eq!(
            serde_json::to_string(&strict).ok(),
            serde_json::to_string(&plain).ok(),
            "key order is kept"
        );
    }

    #[test]
    fn a_key_twice_is_named_by_its_path() {
        assert_eq!(duplicate(r#"{"to":"+1","to":"+2"}"#).as_deref(), Some("to"));
        assert_eq!(
            duplicate(r#"{"template":{"header":{"type":"text","type":"image"}}}"#).as_deref(),
            Some("template.header.type")
        );
        assert_eq!(
            duplicate(r#"{"contact":{"phones":[{},{"phone":"1","phone":"2"}]}}"#).as_deref(),
            Some("contact.phones[1].phone")
        );
        assert_eq!(
            duplicate(r#"[{"a":1},{"a":2}]"#),
            None,
            "equal keys in different objects"
        );
    }

    #[test]
    fn bad_json_and_trailing_bytes_are_syntax_errors() {
        for body in ["{", r#"{"a":1} x"#, "", r#"{"a":}"#] {
            assert!(
                matches!(parse(body.as_bytes()), Err(Error::Syntax(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let body = "[".repeat(100_000);
        assert!(matches!(parse(body.as_bytes()), Err(Error::Syntax(_))));
    }
}
