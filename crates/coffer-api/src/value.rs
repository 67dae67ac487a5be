use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// A secret on the wire: the `value` field of secret create and update requests (deserialized
/// by the server, serialized by the client) and of the token-create response (the one place the
/// server sends a secret: a new API token, once). `Debug` prints `[redacted]`; there is no
/// `Display` or `Clone`.
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    pub fn new(value: String) -> SecretValue {
        SecretValue(Zeroizing::new(value))
    }

    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Moves the value out without copying it, leaving an empty (zeroized) string behind.
    pub fn into_bytes(mut self) -> Vec<u8> {
        std::mem::take(&mut *self.0).into_bytes()
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for SecretValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretValue::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_and_json_round_trips() {
        let v: SecretValue = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(format!("{v:?}"), "[redacted]");
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"hunter2\"");
        assert_eq!(v.into_bytes(), b"hunter2");
    }
}
