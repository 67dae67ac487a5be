use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// A secret on the wire: the `value` field of secret create and update requests (deserialized
/// by the server, serialized by the client), of the token-create, deploy and token-rotate
/// responses (a new API or service token, shown once), and a bound service's runtime reads.
/// `Debug` and `Display` print `[redacted]` (the value is only reachable through
/// [`SecretValue::expose_secret`]); there is no `Clone`, so every copy is deliberate.
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

impl std::fmt::Display for SecretValue {
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
        assert_eq!(format!("{v}"), "[redacted]");
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"hunter2\"");
        assert_eq!(v.into_bytes(), b"hunter2");
    }
}
