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
    #[error("must be at most {max} characters (got {len})")]
    TooLong { len: usize, max: usize },
    #[error("may only contain letters, digits, underscores and dashes")]
    BadCharacter,
}

fn validate(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > NAME_MAX_LEN {
        return Err(NameError::TooLong {
            len: s.len(),
            max: NAME_MAX_LEN,
        });
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

/// The longest service name: a DNS label, as Workers' names are.
pub const SERVICE_NAME_MAX_LEN: usize = 63;

/// The name of a service (the analogue of a Worker's name), unique within its account: the
/// letters, digits, underscores and dashes of store and secret names, at most
/// [`SERVICE_NAME_MAX_LEN`] characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName(String);

impl ServiceName {
    pub fn parse(s: &str) -> Result<ServiceName, NameError> {
        if s.len() > SERVICE_NAME_MAX_LEN {
            return Err(NameError::TooLong {
                len: s.len(),
                max: SERVICE_NAME_MAX_LEN,
            });
        }
        validate(s).map(|()| ServiceName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest node name, in characters (names are ASCII): a DNS label.
pub const NODE_NAME_MAX_LEN: usize = 63;

/// Why a string is not a valid node name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeNameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {NODE_NAME_MAX_LEN} characters (got {0})")]
    TooLong(usize),
    #[error("may only contain ASCII letters, digits, '-', '_' and '.'")]
    BadCharacter,
}

/// The name of an edge node, unique among the nodes that are not revoked: 1 to
/// [`NODE_NAME_MAX_LEN`] ASCII letters, digits, `-`, `_` and `.` (so a host name such as
/// `edge-1.fra` fits).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(String);

impl NodeName {
    pub fn parse(s: &str) -> Result<NodeName, NodeNameError> {
        if s.is_empty() {
            return Err(NodeNameError::Empty);
        }
        if s.len() > NODE_NAME_MAX_LEN {
            return Err(NodeNameError::TooLong(s.len()));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(NodeNameError::BadCharacter);
        }
        Ok(NodeName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why a string is not a valid binding name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingNameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {NAME_MAX_LEN} characters (got {0})")]
    TooLong(usize),
    #[error(
        "must be a valid environment variable name: letters, digits and underscores, not starting with a digit"
    )]
    BadCharacter,
    /// A well-formed name that [`BindingName::parse_exportable`] refuses.
    #[error(
        "is reserved: an environment variable of that name would change how a command is found or loaded ({})",
        reserved_list()
    )]
    Reserved,
}

/// Environment variables that decide which program runs, or what it loads before its own code.
/// `coffer run` exports every binding as a variable, so no new binding may have one of these
/// names ([`BindingName::parse_exportable`]). This list and [`RESERVED_BINDING_PREFIXES`] are
/// the one place the rule lives: the server's deploy, `coffer deploy` and `coffer run` all ask
/// [`BindingName::is_reserved`].
pub const RESERVED_BINDING_NAMES: &[&str] = &[
    "PATH",
    "IFS",
    "ENV",
    "BASH_ENV",
    "NODE_OPTIONS",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PERL5OPT",
    "RUBYOPT",
];

/// Prefixes of reserved names: the dynamic loaders' variables (`LD_PRELOAD`, `DYLD_INSERT_...`).
pub const RESERVED_BINDING_PREFIXES: &[&str] = &["LD_", "DYLD_"];

/// `PATH, IFS, ..., LD_*, DYLD_*`, for messages.
fn reserved_list() -> String {
    RESERVED_BINDING_NAMES
        .iter()
        .map(|n| (*n).to_owned())
        .chain(RESERVED_BINDING_PREFIXES.iter().map(|p| format!("{p}*")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The name under which a service sees a secret (`env.OPENAI_KEY`, or the environment variable
/// `OPENAI_KEY` under `coffer run`). Because both uses must work, it must be a portable
/// environment variable name (POSIX: `[A-Za-z_][A-Za-z0-9_]*`), which is also a JavaScript
/// identifier; at most [`NAME_MAX_LEN`] characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BindingName(String);

impl BindingName {
    pub fn parse(s: &str) -> Result<BindingName, BindingNameError> {
        let Some(first) = s.bytes().next() else {
            return Err(BindingNameError::Empty);
        };
        if s.len() > NAME_MAX_LEN {
            return Err(BindingNameError::TooLong(s.len()));
        }
        if first.is_ascii_digit() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(BindingNameError::BadCharacter);
        }
        Ok(BindingName(s.to_owned()))
    }

    /// A name for a new binding: well-formed ([`BindingName::parse`]) and not reserved
    /// ([`BindingName::is_reserved`]), so that `coffer run` can export it. Deploys are checked
    /// with this; names already stored are read back with `parse` alone, so that a name added
    /// to the reserved list later does not make an existing service unreadable (its `coffer
    /// run` refuses it, and its next deploy must rename it).
    pub fn parse_exportable(s: &str) -> Result<BindingName, BindingNameError> {
        let name = BindingName::parse(s)?;
        if BindingName::is_reserved(s) {
            return Err(BindingNameError::Reserved);
        }
        Ok(name)
    }

    /// Whether `s` is a reserved name ([`RESERVED_BINDING_NAMES`], or a name starting with one
    /// of [`RESERVED_BINDING_PREFIXES`]). Case-sensitive, like environment variables.
    pub fn is_reserved(s: &str) -> bool {
        RESERVED_BINDING_NAMES.contains(&s)
            || RESERVED_BINDING_PREFIXES.iter().any(|p| s.starts_with(p))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for BindingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for BindingName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_and_binding_names() {
        assert!(ServiceName::parse("my-worker_2").is_ok());
        assert_eq!(
            ServiceName::parse(&"w".repeat(64)),
            Err(NameError::TooLong { len: 64, max: 63 })
        );
        assert_eq!(ServiceName::parse("a.b"), Err(NameError::BadCharacter));
        assert_eq!(ServiceName::parse(""), Err(NameError::Empty));
        for ok in ["OPENAI_KEY", "_x", "a1", "open_AI_key"] {
            assert_eq!(BindingName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["1KEY", "MY-KEY", "a b", "'open_AI_KEY'", "é", "A$"] {
            assert_eq!(
                BindingName::parse(bad),
                Err(BindingNameError::BadCharacter),
                "{bad:?}"
            );
        }
        assert_eq!(BindingName::parse(""), Err(BindingNameError::Empty));
        assert_eq!(
            BindingName::parse(&"K".repeat(256)),
            Err(BindingNameError::TooLong(256))
        );
    }

    #[test]
    fn reserved_binding_names_are_well_formed_but_not_exportable() {
        for reserved in [
            "PATH",
            "IFS",
            "ENV",
            "BASH_ENV",
            "NODE_OPTIONS",
            "PYTHONPATH",
            "PYTHONSTARTUP",
            "PERL5OPT",
            "RUBYOPT",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "LD_",
            "DYLD_INSERT_LIBRARIES",
        ] {
            assert!(BindingName::parse(reserved).is_ok(), "{reserved}");
            assert!(BindingName::is_reserved(reserved), "{reserved}");
            assert_eq!(
                BindingName::parse_exportable(reserved),
                Err(BindingNameError::Reserved),
                "{reserved}"
            );
        }
        // Names that merely look alike, and other cases, are ordinary names.
        for ok in [
            "MY_PATH",
            "PATHS",
            "OLD_LD",
            "ENVIRONMENT",
            "path",
            "Ld_x",
            "LD",
        ] {
            assert_eq!(BindingName::parse_exportable(ok).unwrap().as_str(), ok);
        }
        // Malformed names keep their own error.
        assert_eq!(
            BindingName::parse_exportable("LD-X"),
            Err(BindingNameError::BadCharacter)
        );
        let text = BindingNameError::Reserved.to_string();
        assert!(
            text.starts_with("is reserved: an environment variable of that name would change"),
            "{text}"
        );
        assert!(
            text.ends_with("(PATH, IFS, ENV, BASH_ENV, NODE_OPTIONS, PYTHONPATH, PYTHONSTARTUP, PERL5OPT, RUBYOPT, LD_*, DYLD_*)"),
            "{text}"
        );
    }

    #[test]
    fn node_names() {
        for ok in ["edge-1", "edge_1.fra", "a", "EDGE.2", "1", &"n".repeat(63)] {
            assert_eq!(NodeName::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(NodeName::parse(""), Err(NodeNameError::Empty));
        assert_eq!(
            NodeName::parse(&"n".repeat(64)),
            Err(NodeNameError::TooLong(64))
        );
        // A multi-byte character counts by bytes, so it cannot sneak past the length check.
        assert_eq!(
            NodeName::parse(&"é".repeat(32)),
            Err(NodeNameError::TooLong(64))
        );
        for bad in [
            "a b", "a/b", "é", "a\0", "edge:1", "a\n", "[x]", "a`b", "a@b",
        ] {
            assert_eq!(
                NodeName::parse(bad),
                Err(NodeNameError::BadCharacter),
                "{bad:?}"
            );
        }
        // The message names the problem and the allowed characters.
        assert_eq!(
            NodeNameError::BadCharacter.to_string(),
            "may only contain ASCII letters, digits, '-', '_' and '.'"
        );
        assert_eq!(
            NodeNameError::TooLong(64).to_string(),
            "must be at most 63 characters (got 64)"
        );
    }

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
            Err(NameError::TooLong {
                len: NAME_MAX_LEN + 1,
                max: NAME_MAX_LEN
            })
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
