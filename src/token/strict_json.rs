//! Strict JSON: a header or claims object read with duplicate keys refused at every
//! depth.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::errors::{LicenseError, shorten};

pub(super) fn strict_object(part: &str, bytes: &[u8]) -> Result<Map<String, Value>, LicenseError> {
    let value: StrictValue = serde_json::from_slice(bytes)
        .map_err(|e| LicenseError::malformed(format!("the {part} is not acceptable JSON: {e}")))?;
    match value.0 {
        Value::Object(map) => Ok(map),
        _ => Err(LicenseError::malformed(format!(
            "the {part} is not a JSON object"
        ))),
    }
}

/// A JSON value parsed with duplicate object keys refused at every depth. serde_json keeps
/// the last duplicate silently, which lets `{"tier":"basic","tier":"enterprise"}` mean
/// different things to different parsers (RFC 7515 §5.2).
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
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
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        let mut seen = HashSet::new();
        while let Some(key) = access.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{}`",
                    shorten(&key)
                )));
            }
            let StrictValue(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Map<String, Value>, LicenseError> {
        strict_object("claims", text.as_bytes())
    }
    #[test]
    fn strict_json_refuses_duplicates_at_any_depth() {
        assert!(parse(r#"{"a":1,"b":{"c":[1,{"d":2}]}}"#).is_ok());
        for dup in [
            r#"{"exp":1,"exp":2}"#,
            r#"{"tier":"basic","tier":"enterprise"}"#,
            r#"{"a":{"b":1,"b":1}}"#,
            r#"{"a":[{"b":1,"b":2}]}"#,
        ] {
            let err = parse(dup).unwrap_err();
            assert_eq!(err.reason(), "malformed", "{dup}");
            assert!(err.to_string().contains("duplicate key"), "{err}");
        }
    }

    #[test]
    fn strict_json_refuses_non_objects_and_trailing_garbage() {
        for bad in [
            "[]",
            "1",
            "\"x\"",
            "null",
            "{} x",
            "{",
            "{\"a\":\"\\ud800\"}",
        ] {
            assert_eq!(parse(bad).unwrap_err().reason(), "malformed", "{bad}");
        }
    }

    #[test]
    fn strict_json_limits_nesting() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let text = format!(r#"{{"a":{deep}}}"#);
        assert_eq!(parse(&text).unwrap_err().reason(), "malformed");
    }
}
