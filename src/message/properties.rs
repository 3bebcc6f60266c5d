use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// Any JSON value (also used by qikchat's body properties), biased towards the relay's own field names so that deep paths get explored.
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
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

pub(crate) fn has_null(value: &Value) -> bool {
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
}
