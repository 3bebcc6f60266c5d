//! Keeping the key out of Qikchat's text: any of it that carries the key, in any form, goes on to
//! callers and logs as a fixed sentence instead.

use secrecy::ExposeSecret;
use serde_json::Value;
use tracing::warn;

use super::Qikchat;

/// Said instead of Qikchat's text when that text carries the key in any form.
pub const WITHHELD: &str = "Qikchat's text is withheld: it repeated the relay's key";
/// Consecutive characters of the key that count as the key.
const KEY_RUN: usize = 8;
/// Fewest letters and digits of a run that count once case, whitespace and punctuation are
/// dropped (a run of a key thick with punctuation folds to fewer; it is still compared as
/// written, and the whole key always is).
const MIN_FOLDED_RUN: usize = 6;

impl Qikchat {
    /// Qikchat's `text` as it may go on to a caller or a log: the one way any of it does.
    pub(super) fn passed_on(&self, text: &str) -> String {
        match withheld(self.key_text.expose_secret(), text) {
            Some(sentence) => {
                warn!("Qikchat's text withheld: it carried the relay's key");
                sentence.to_owned()
            }
            None => text.to_owned(),
        }
    }

    /// [`Qikchat::passed_on`] for every string of a JSON value, object keys included.
    pub(super) fn withhold_in(&self, value: &mut Value) {
        match value {
            Value::String(text) => {
                if withheld(self.key_text.expose_secret(), text).is_some() {
                    *text = self.passed_on(text);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.withhold_in(item)),
            Value::Object(map) => {
                let key = self.key_text.expose_secret();
                if map.keys().any(|name| withheld(key, name).is_some()) {
                    *map = std::mem::take(map)
                        .into_iter()
                        .map(|(name, value)| (self.passed_on(&name), value))
                        .collect();
                }
                map.values_mut().for_each(|item| self.withhold_in(item));
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// [`WITHHELD`] when `text` carries `key` in any form: the whole key, or any run of
/// [`KEY_RUN`] consecutive characters of it, compared without case and without whitespace or
/// punctuation (`QK_ABC…`, `q k _ a b c …`, `q.k.a.b.c…`), and as written without case or
/// whitespace. `None` when the text may go on as it is.
fn withheld(key: &str, text: &str) -> Option<&'static str> {
    let folded_text = fold(text);
    let squeezed_text: String = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect();
    let folded_key = fold(key);
    if folded_key.chars().count() >= MIN_FOLDED_RUN && folded_text.contains(&folded_key) {
        return Some(WITHHELD);
    }
    let key: Vec<char> = key.chars().collect();
    let carried = key.windows(KEY_RUN.min(key.len()).max(1)).any(|run| {
        let run: String = run.iter().collect();
        let folded = fold(&run);
        squeezed_text.contains(&run.to_lowercase())
            || (folded.chars().count() >= MIN_FOLDED_RUN && folded_text.contains(&folded))
    });
    carried.then_some(WITHHELD)
}

/// Text as it is compared with the key: its letters and digits, lowercase.
fn fold(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::qikchat::fixtures::{KEY, qikchat};

    #[test]
    fn qikchat_text_that_quotes_the_key_in_a_changed_form_is_replaced_by_a_fixed_sentence() {
        let spaced: Vec<String> = KEY.to_uppercase().chars().map(String::from).collect();
        let dotted: Vec<String> = KEY.chars().map(String::from).collect();
        for text in [
            format!("invalid key {KEY}"),
            format!("invalid key {}", KEY.to_uppercase()),
            format!("invalid key {}", spaced.join(" ")),
            format!("invalid key {}", dotted.join(".")),
            format!("key starts with {}", &KEY[..KEY_RUN]),
            format!("key ends with {}", &KEY[KEY.len() - KEY_RUN..]),
        ] {
            assert_eq!(qikchat().passed_on(&text), WITHHELD, "{text}");
        }
        assert_eq!(
            qikchat().passed_on("Template not approved"),
            "Template not approved"
        );
    }

    #[test]
    fn every_text_of_a_payload_that_carries_the_key_is_withheld_and_the_rest_kept() {
        let mut payload = serde_json::json!({"id": "m-1", "count": 3, "message": {
            "status": "failed",
            "errors": [{"code": 131047, "title": format!("bad key {}", KEY.to_uppercase())}]},
            KEY: "a field named by the key"});
        qikchat().withhold_in(&mut payload);
        assert_eq!(payload["message"]["errors"][0]["title"], WITHHELD);
        assert_eq!(payload["message"]["errors"][0]["code"], 131047);
        assert_eq!(payload["message"]["status"], "failed");
        assert_eq!(payload["id"], "m-1");
        assert_eq!(payload[WITHHELD], "a field named by the key");
        assert!(!payload.to_string().contains(&KEY[..KEY_RUN]));
    }

    proptest! {
        #[test]
        fn any_run_of_eight_key_characters_in_any_case_spacing_or_punctuation_is_withheld(
            start in 0..KEY.len() - KEY_RUN,
            length in KEY_RUN..=KEY.len(),
            upper in any::<bool>(),
            between in prop::sample::select(vec!["", " ", ".", "-", " _ ", "\n", "*"]),
            before in "[A-Za-z ,.:]{0,40}",
            after in "[A-Za-z ,.:]{0,40}",
        ) {
            let run = &KEY[start..(start + length).min(KEY.len())];
            let run = if upper { run.to_uppercase() } else { run.to_owned() };
            let changed: Vec<String> = run.chars().map(String::from).collect();
            let text = format!("{before}{}{after}", changed.join(between));
            prop_assert_eq!(withheld(KEY, &text), Some(WITHHELD), "{}", text);
        }

        #[test]
        fn text_without_the_key_goes_on_as_it_is(text in "[A-Za-z ,.:()]{0,200}") {
            // Seven characters of the key are too few to count; nothing else in it matches.
            let text = format!("{text} {}", &KEY[..7]);
            prop_assert_eq!(withheld(KEY, &text), None, "{}", text);
        }
    }
}
