//! One type for every secret a config holds: identity API keys, MCP server headers and stdio
//! environment values, session keys, the admin token, Redis URLs (which may carry a password).
//!
//! A [`Secret`] reads like a string from YAML but never writes itself out: `Serialize` (so
//! `/config_dump`), `Debug` and `Display` (so logs and errors) all print `[redacted]`. The value is
//! reached only through [`Secret::expose`], which makes every use greppable.
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secret looks like wherever it is shown.
pub const REDACTED: &str = "[redacted]";

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call only where the value is used (a header sent upstream, a key
    /// hashed, a connection opened), never to print it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "description": "A secret value (never shown in dumps or logs)." })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_its_value() {
        let s: Secret = serde_yaml_ng::from_str("\"hunter2-password\"").unwrap();
        assert_eq!(s.expose(), "hunter2-password");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        let nested: std::collections::BTreeMap<String, Secret> =
            serde_yaml_ng::from_str("Authorization: Bearer tok-123456").unwrap();
        assert!(!format!("{nested:?}").contains("tok-123456"));
        assert!(!serde_json::to_string(&nested).unwrap().contains("tok-123456"));
    }
}
