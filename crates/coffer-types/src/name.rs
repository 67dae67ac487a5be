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
        "is reserved: an environment variable of that name changes how a program is found, loaded or run (docs/bindings.md lists the reserved names)"
    )]
    Reserved,
}

/// Environment variables that decide which program runs, what it loads before or beside its
/// own code, which hosts and certificates it trusts, or which commands it runs on its own
/// behalf. `coffer run` exports every binding as a variable, so no new binding may have one of
/// these names ([`BindingName::parse_exportable`]). This list, [`RESERVED_BINDING_PREFIXES`]
/// and [`RESERVED_BINDING_SUFFIXES`] are the one place the rule lives: the server's deploy,
/// `coffer deploy` and `coffer run` all ask [`BindingName::is_reserved`], which compares
/// without regard to case (some programs read `http_proxy`, others `HTTP_PROXY`).
pub const RESERVED_BINDING_NAMES: &[&str] = &[
    // Shells: how a command is found and what a shell runs before or around it.
    "PATH",
    "IFS",
    "ENV",
    "BASH_ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PROMPT_COMMAND",
    "PS1",
    "PS2",
    "PS3",
    "PS4",
    "CDPATH",
    "GLOBIGNORE",
    "FPATH",
    "ZDOTDIR",
    "INPUTRC",
    "HOME",
    "SHELL",
    "TMPDIR",
    "TMP",
    "TEMP",
    "TEMPDIR",
    // The C library: files it loads and how it allocates.
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "LOCPATH",
    "NLSPATH",
    "GETCONF_DIR",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "RES_OPTIONS",
    "RESOLV_HOST_CONF",
    // Java and its launchers.
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "JAVA_OPTS",
    "JAVA_HOME",
    "CLASSPATH",
    "MAVEN_OPTS",
    "GRADLE_OPTS",
    // Node.js.
    "NODE_OPTIONS",
    "NODE_PATH",
    "NODE_EXTRA_CA_CERTS",
    "NODE_TLS_REJECT_UNAUTHORIZED",
    "NODE_REPL_EXTERNAL_MODULE",
    // Python.
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "PYTHONINSPECT",
    "PYTHONWARNINGS",
    "PYTHONBREAKPOINT",
    "PYTHONEXECUTABLE",
    "PYTHONPLATLIBDIR",
    // Perl, Ruby, PHP.
    "PERL5LIB",
    "PERL5OPT",
    "PERLLIB",
    "PERL5DB",
    "RUBYLIB",
    "RUBYOPT",
    "GEM_PATH",
    "GEM_HOME",
    "BUNDLE_GEMFILE",
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    // Go, .NET, Erlang and Elixir.
    "GOFLAGS",
    "GOROOT",
    "GOTOOLCHAIN",
    "DOTNET_STARTUP_HOOKS",
    "DOTNET_ROOT",
    "COR_ENABLE_PROFILING",
    "COR_PROFILER",
    "COR_PROFILER_PATH",
    "ERL_LIBS",
    "ERL_FLAGS",
    "ERL_AFLAGS",
    "ERL_ZFLAGS",
    "ELIXIR_ERL_OPTIONS",
    // Which certificates are trusted, and where TLS secrets or engines come from.
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "SSLKEYLOGFILE",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    "OPENSSL_MODULES",
    // Git and SSH: commands they run and where they read their configuration.
    "SSH_ASKPASS",
    // Commands that programs start for the user.
    "EDITOR",
    "VISUAL",
    "PAGER",
    "MANPAGER",
    "BROWSER",
    "LESSOPEN",
    "LESSCLOSE",
    // Where packages are installed from.
    // Commands that privileged and everyday tools start on their own, build tools, package
    // sources and the hosts and clusters clients talk to.
    "SUDO_ASKPASS",
    "SUDO_EDITOR",
    "EXINIT",
    "VIMINIT",
    "RUSTC",
    "RUSTC_WRAPPER",
    "CARGO_HOME",
    "RUSTDOC",
    "CC",
    "CXX",
    "GOPROXY",
    "GONOSUMDB",
    "GONOSUMCHECK",
    "GOPRIVATE",
    "GOINSECURE",
    "GOSUMDB",
    "KUBECONFIG",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "CURL_HOME",
    "TERMINFO",
];

/// Prefixes of reserved names: the dynamic loaders' variables (`LD_PRELOAD`,
/// `DYLD_INSERT_LIBRARIES`), the C library's allocator settings (`MALLOC_CHECK_`), the .NET
/// profiler's, every Git setting (`GIT_CONFIG_KEY_0`, `GIT_TRACE` writes to any path...), the
/// package tools' (npm, pip, uv, and Cargo's build and registry settings: where packages come
/// from and what builds them; `CARGO_REGISTRY_TOKEN` stays a plain secret), Lua's
/// search paths and start-up code in every version (`LUA_PATH_5_4`), and the XDG base
/// directories, where programs find their configuration.
pub const RESERVED_BINDING_PREFIXES: &[&str] = &[
    "LD_",
    "DYLD_",
    "MALLOC_",
    "CORECLR_",
    "GIT_",
    "NPM_CONFIG_",
    "PIP_",
    "UV_",
    "CARGO_BUILD_",
    "CARGO_REGISTRIES_",
    "LUA_PATH",
    "LUA_CPATH",
    "LUA_INIT",
    "XDG_",
];

/// Suffixes of reserved names: the proxies nearly every HTTP client obeys (`HTTPS_PROXY`,
/// `ALL_PROXY`, `NO_PROXY`...).
pub const RESERVED_BINDING_SUFFIXES: &[&str] = &["_PROXY"];

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

    /// Whether `s` is a reserved name: one of [`RESERVED_BINDING_NAMES`], or a name starting
    /// with one of [`RESERVED_BINDING_PREFIXES`] or ending with one of
    /// [`RESERVED_BINDING_SUFFIXES`], in any case (`http_proxy` as well as `HTTP_PROXY`: programs
    /// read one or the other, some both).
    pub fn is_reserved(s: &str) -> bool {
        let starts = |p: &str| s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
        let ends = |p: &str| {
            s.len() >= p.len()
                && s.get(s.len() - p.len()..)
                    .is_some_and(|t| t.eq_ignore_ascii_case(p))
        };
        RESERVED_BINDING_NAMES
            .iter()
            .any(|n| n.eq_ignore_ascii_case(s))
            || RESERVED_BINDING_PREFIXES.iter().any(|p| starts(p))
            || RESERVED_BINDING_SUFFIXES.iter().any(|p| ends(p))
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
            "PROMPT_COMMAND",
            "HOME",
            "SHELL",
            "TMPDIR",
            "NODE_OPTIONS",
            "NODE_PATH",
            "NODE_EXTRA_CA_CERTS",
            "PYTHONPATH",
            "PYTHONHOME",
            "PYTHONSTARTUP",
            "PERL5LIB",
            "PERL5OPT",
            "RUBYLIB",
            "RUBYOPT",
            "GEM_PATH",
            "GEM_HOME",
            "JAVA_TOOL_OPTIONS",
            "_JAVA_OPTIONS",
            "JDK_JAVA_OPTIONS",
            "CLASSPATH",
            "GCONV_PATH",
            "GLIBC_TUNABLES",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "GIT_SSH_COMMAND",
            "GIT_TRACE",
            "PIP_TRUSTED_HOST",
            "UV_INDEX_URL",
            "CARGO_HOME",
            "CARGO_BUILD_RUSTC_WRAPPER",
            "CARGO_REGISTRIES_CRATES_IO_INDEX",
            "GIT_TOKEN",
            "SUDO_ASKPASS",
            "RUSTC_WRAPPER",
            "CC",
            "GOPROXY",
            "KUBECONFIG",
            "DOCKER_HOST",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "LD_",
            "DYLD_INSERT_LIBRARIES",
            "MALLOC_CHECK_",
            "GIT_CONFIG_KEY_0",
            "LUA_PATH",
            "LUA_INIT_5_4",
            "XDG_CONFIG_HOME",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "NO_PROXY",
            // In any case: programs read `http_proxy` as readily as `HTTP_PROXY`.
            "http_proxy",
            "Https_Proxy",
            "path",
            "Ld_x",
            "java_tool_options",
            "npm_config_registry",
        ] {
            assert!(BindingName::parse(reserved).is_ok(), "{reserved}");
            assert!(BindingName::is_reserved(reserved), "{reserved}");
            assert_eq!(
                BindingName::parse_exportable(reserved),
                Err(BindingNameError::Reserved),
                "{reserved}"
            );
        }
        // Names that merely look alike are ordinary names.
        for ok in [
            "MY_PATH",
            "PATHS",
            "OLD_LD",
            "ENVIRONMENT",
            "HOMEPAGE_KEY",
            "LD",
            "PROXY",
            "PROXY_URL",
            "JAVA_KEY",
            "NODE_ENV_SECRET",
            "GITHUB_TOKEN",
            "CARGO_REGISTRY_TOKEN",
            "OPENAI_KEY",
        ] {
            assert_eq!(BindingName::parse_exportable(ok).unwrap().as_str(), ok);
        }
        // Every listed name and prefix is a well-formed, upper-case name: a typo would be a
        // hole in the list.
        for n in RESERVED_BINDING_NAMES
            .iter()
            .chain(RESERVED_BINDING_PREFIXES)
            .chain(RESERVED_BINDING_SUFFIXES)
        {
            assert!(BindingName::parse(n).is_ok(), "{n}");
            assert_eq!(n.to_ascii_uppercase(), *n, "{n}");
        }
        // Malformed names keep their own error.
        assert_eq!(
            BindingName::parse_exportable("LD-X"),
            Err(BindingNameError::BadCharacter)
        );
        assert_eq!(
            BindingNameError::Reserved.to_string(),
            "is reserved: an environment variable of that name changes how a program is found, \
             loaded or run (docs/bindings.md lists the reserved names)"
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
