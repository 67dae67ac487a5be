//! 128-bit identifiers rendered as 32 lowercase hex characters, the form Cloudflare's API uses
//! for account, store and secret ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be 32 lowercase hexadecimal characters")]
pub struct IdError;

fn parse_hex32(s: &str) -> Result<[u8; 16], IdError> {
    let bytes = s.as_bytes();
    if bytes.len() != 32 {
        return Err(IdError);
    }
    let mut out = [0u8; 16];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = nibble(pair[0])?;
        let lo = nibble(pair[1])?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

fn nibble(c: u8) -> Result<u8, IdError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(IdError),
    }
}

/// The 32 lowercase hex characters of an id. One table lookup a nibble: ids are formatted on
/// every API answer and every replicated change (a snapshot of a million secrets formats
/// millions of them), where per-byte `write!` showed up in profiles.
fn hex32(bytes: &[u8; 16]) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
    out
}

fn write_hex(bytes: &[u8; 16], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let hex = hex32(bytes);
    // Only ASCII digits were written.
    f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
}

macro_rules! hex_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; 16]);

        impl $name {
            /// Wraps 16 bytes; callers pass bytes from a CSPRNG to make a fresh id.
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(bytes)
            }

            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }

            /// Parses exactly 32 lowercase hex characters.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                parse_hex32(s).map(Self)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                write_hex(&self.0, f)?;
                f.write_str(")")
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let hex = hex32(&self.0);
                s.serialize_str(std::str::from_utf8(&hex).map_err(serde::ser::Error::custom)?)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(
    /// An account: the unit of tenancy, quota and key separation.
    AccountId
);
hex_id!(
    /// A store: a named collection of secrets in an account.
    StoreId
);
hex_id!(
    /// A secret: a name, metadata and a chain of immutable value versions.
    SecretId
);
hex_id!(
    /// An API token. The id is public (it appears in token lists and audit entries); the
    /// token's secret part is not.
    TokenId
);
hex_id!(
    /// A service: a named consumer of secrets (the analogue of a Worker) with its bindings.
    ServiceId
);
hex_id!(
    /// A data-encryption key. Bound into the AAD of every value sealed under it.
    DekId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text_and_json() {
        let id = StoreId::from_bytes([0xab; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        assert_eq!(StoreId::parse(&id.to_string()), Ok(id));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(16)));
        assert_eq!(serde_json::from_str::<StoreId>(&json).unwrap(), id);
    }

    #[test]
    fn formats_every_nibble_in_order() {
        let bytes = [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54,
            0x32, 0x10,
        ];
        let id = SecretId::from_bytes(bytes);
        let text = "0123456789abcdeffedcba9876543210";
        assert_eq!(id.to_string(), text);
        assert_eq!(format!("{id:?}"), format!("SecretId({text})"));
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{text}\""));
        assert_eq!(SecretId::parse(text), Ok(id));
    }

    #[test]
    fn rejects_wrong_length_case_and_characters() {
        for bad in [
            "",
            "abc",
            &"a".repeat(31),
            &"a".repeat(33),
            &"A".repeat(32),
            &"g".repeat(32),
            &format!("{}é", "a".repeat(30)),
        ] {
            assert_eq!(SecretId::parse(bad), Err(IdError), "{bad:?}");
        }
        assert!(serde_json::from_str::<SecretId>("\"xyz\"").is_err());
    }

    #[test]
    fn debug_names_the_kind() {
        let id = DekId::from_bytes([1; 16]);
        assert_eq!(format!("{id:?}"), format!("DekId({})", "01".repeat(16)));
    }
}
