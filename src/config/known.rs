//! The settings the relay knows, and the refusal of a `RELAY_` variable that is none of them: a
//! misspelt setting (`RELAY_MAX_INFLIGHT`) would otherwise start the relay as if it were unset.
//!
//! The known names are read off [`Env`] itself, not kept in a list of their own: its
//! `Deserialize` derive hands serde the names of its fields, and [`settings`] asks for them. A
//! field added to `Env` is a known setting at once, and there is nothing to keep in step.
//! (`serde_ignored` would report the keys envy skips, but envy keeps its deserializer private.)
//! The one variable read outside `Env`, `RELAY_LISTEN_ADDR` by `qikchat-relay healthcheck`, is a
//! field of `Env` too.
//!
//! Only names are looked at and printed, never values: the value of a misspelt
//! `RELAY_WEBHOOK_SECRET` is still a secret.

use serde::{
    Deserialize,
    de::{self, Visitor},
};

use super::{ConfigError, env::Env};

/// The prefix of the relay's own settings: a variable that has it must be one of them.
const PREFIX: &str = "RELAY_";

/// How alike a known name must be to be offered as the one meant: the normalised
/// Damerau-Levenshtein similarity (1 is the same) of the names after `RELAY_`. 0.75 takes one or
/// two slips in a name of ten characters or so (`MAX_INFLIGHT` for `MAX_IN_FLIGHT`: 0.92,
/// `SANDBOXED` for `SANDBOX`: 0.78), and leaves a name that only shares a word with a setting
/// (`REDIS_CLUSTER_NODES` and `REDIS_URL`) without a hint.
const HINT_SIMILARITY: f64 = 0.75;

/// Every variable of [`Env`], as the operator spells it (upper case; envy reads it lower case).
pub(super) fn settings() -> Vec<String> {
    let mut fields: &'static [&'static str] = &[];
    // The error is expected: the derive stops once it has named its fields to `FieldNames`.
    let _ = Env::deserialize(FieldNames(&mut fields));
    fields.iter().map(|f| f.to_ascii_uppercase()).collect()
}

/// Refuses the environment when a `RELAY_` variable in `names` is neither a setting nor a
/// Kubernetes service link: the error names the first such variable (in name order), the setting
/// closest to it when one is close enough, and the other unknown ones.
pub(super) fn refuse_unknown<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), ConfigError> {
    let known = settings();
    let mut unknown: Vec<&str> = names
        .filter(|name| name.starts_with(PREFIX))
        .filter(|name| !known.iter().any(|k| k == name) && !service_link(name))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    let Some((first, others)) = unknown.split_first() else {
        return Ok(());
    };
    let mut problem = "is not a setting of the relay".to_owned();
    if let Some(meant) = closest(first, &known) {
        problem.push_str("; did you mean ");
        problem.push_str(meant);
        problem.push('?');
    }
    if !others.is_empty() {
        problem.push_str(" (nor is ");
        problem.push_str(&others.join(", "));
        problem.push(')');
    }
    Err(ConfigError::new(*first, problem))
}

/// The `RELAY_` setting in `known` most like `name`, when one is alike enough to be the one meant.
pub(super) fn closest<'k>(name: &str, known: &'k [String]) -> Option<&'k str> {
    let stem = name.strip_prefix(PREFIX).unwrap_or(name);
    known
        .iter()
        .filter_map(|k| Some((k.as_str(), k.strip_prefix(PREFIX)?)))
        .map(|(k, known_stem)| (k, strsim::normalized_damerau_levenshtein(stem, known_stem)))
        .filter(|(_, similarity)| *similarity >= HINT_SIMILARITY)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(k, _)| k)
}

/// Whether `name` is one of the variables Kubernetes puts in every container of a pod for a
/// Service named `relay` in its namespace (service links, on unless the pod spec says
/// `enableServiceLinks: false`, as deploy/kubernetes does): `RELAY_SERVICE_HOST`,
/// `RELAY_SERVICE_PORT`, `RELAY_SERVICE_PORT_<PORT NAME>`, `RELAY_PORT`, `RELAY_PORT_<N>_<PROTO>`,
/// and the latter with `_PROTO`, `_PORT` or `_ADDR`. Told by the name's shape alone, which no
/// setting has; a Service named `relay-<x>` gives `RELAY_<X>_SERVICE_HOST` and so on, which are
/// not recognised (they could as well be slips) and need `enableServiceLinks: false`.
pub(super) fn service_link(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    if matches!(rest, "SERVICE_HOST" | "SERVICE_PORT" | "PORT") {
        return true;
    }
    if let Some(port_name) = rest.strip_prefix("SERVICE_PORT_") {
        return !port_name.is_empty()
            && port_name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    }
    let Some(port) = rest.strip_prefix("PORT_") else {
        return false;
    };
    let mut parts = port.split('_');
    let number = parts.next().unwrap_or_default();
    let protocol = parts.next().unwrap_or_default();
    let field = parts.next();
    (1..=5).contains(&number.len())
        && number.bytes().all(|b| b.is_ascii_digit())
        && matches!(protocol, "TCP" | "UDP" | "SCTP")
        && matches!(field, None | Some("PROTO" | "PORT" | "ADDR"))
        && parts.next().is_none()
}

/// A deserializer that only records the field names a struct's `Deserialize` asks it for.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only a struct's field names are read"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("the field names are read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests;
