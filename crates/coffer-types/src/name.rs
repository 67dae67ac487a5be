//! Store and secret names. Cloudflare (and wrangler) accept `^[A-Za-z0-9_-]+$`; the maximum
//! length is unpublished, so Coffer sets one and names it in the error.

use std::fmt;

/// The longest name Coffer accepts, in bytes (names are ASCII, so also in characters).
pub const NAME_MAX_LEN: usize = 255;

/// Which kind of name failed to parse, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Store,
    Secret,
}

/// Why a string is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {NAME_MAX_LEN} characters (got {0})")]
    TooLong(usize),
    #[error("may only contain letters, digits, underscores and dashes")]
    BadCharacter,
}

fn validate(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > NAME_MAX_LEN {
        return Err(NameError::TooLong(s.len()));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(NameError::BadCharacter);
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, NameError> {
                validate(s).map(|()| Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// The name of a store, unique within its account.
    StoreName
);
name_type!(
    /// The name of a secret, unique within its store. This is what services bind to.
    SecretName
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_wrangler_names() {
        for ok in [
            "a",
            "OPENAI_KEY",
            "openai-key",
            "x_1-Y",
            &"z".repeat(NAME_MAX_LEN),
        ] {
            assert_eq!(SecretName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(StoreName::parse(""), Err(NameError::Empty));
        assert_eq!(
            StoreName::parse(&"z".repeat(NAME_MAX_LEN + 1)),
            Err(NameError::TooLong(NAME_MAX_LEN + 1))
        );
        for bad in ["a b", "a.b", "a/b", "é", "a\0", "[x]", "a`b"] {
            assert_eq!(
                SecretName::parse(bad),
                Err(NameError::BadCharacter),
                "{bad:?}"
            );
        }
    }
}
