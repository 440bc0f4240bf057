//! Whole numbers as JSON Schema defines them: `"type": "integer"` is any number without a fractional part,
//! so `3.0` is as valid as `3` in a request our OpenAPI describes. serde's integer types refuse `3.0`; the
//! request fields typed integer deserialize through [`i64`] instead.

use serde::Deserializer;
use serde::de::{Error, Visitor};

/// An `i64` from a JSON integer, or from a number with no fractional part within `i64`'s range. Asked for
/// as an `i64`: serde_json then hands over whatever number it parsed (a float included), and a URL path
/// segment is parsed as one; a JSON string stays refused.
pub fn i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    deserializer.deserialize_i64(WholeVisitor)
}

/// An optional [`i64`]: absent (with `#[serde(default)]`) or `null` is `None`.
pub fn option_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Whole(#[serde(deserialize_with = "i64")] i64);
    Ok(<Option<Whole> as serde::Deserialize>::deserialize(deserializer)?.map(|Whole(value)| value))
}

struct WholeVisitor;

impl Visitor<'_> for WholeVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: Error>(self, value: i64) -> Result<i64, E> {
        Ok(value)
    }

    fn visit_u64<E: Error>(self, value: u64) -> Result<i64, E> {
        i64::try_from(value).map_err(|_| E::custom(format_args!("{value} is out of range")))
    }

    fn visit_f64<E: Error>(self, value: f64) -> Result<i64, E> {
        // 2^63 is exactly representable; every f64 below it with no fraction is an exact i64.
        if value.fract() == 0.0 && value >= -(2f64.powi(63)) && value < 2f64.powi(63) {
            Ok(value as i64)
        } else {
            Err(E::custom(format_args!("{value} is not an integer in range")))
        }
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct Amount {
        #[serde(deserialize_with = "super::i64")]
        amount: i64,
    }

    fn amount(json: &str) -> Result<i64, serde_json::Error> {
        serde_json::from_str::<Amount>(json).map(|a| a.amount)
    }

    #[test]
    fn integers_and_numbers_without_a_fraction_are_whole_and_nothing_else_is() {
        assert_eq!(amount(r#"{"amount": 3}"#).unwrap(), 3);
        assert_eq!(amount(r#"{"amount": -3}"#).unwrap(), -3);
        assert_eq!(amount(r#"{"amount": 3.0}"#).unwrap(), 3);
        assert_eq!(amount(r#"{"amount": 1e3}"#).unwrap(), 1000);
        assert!(amount(r#"{"amount": 3.5}"#).is_err());
        assert!(amount(r#"{"amount": 9223372036854775808}"#).is_err());
        assert!(amount(r#"{"amount": 1e19}"#).is_err());
        assert!(amount(r#"{"amount": "3"}"#).is_err());
    }
}
