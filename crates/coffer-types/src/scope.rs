//! Scopes: the kinds of service allowed to use a secret (the enum in Cloudflare's SDKs).

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Workers,
    AiGateway,
    Dex,
    Access,
    Containers,
    Websearch,
}

/// A string that is not one of the known scopes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scope {0:?} (known scopes: workers, ai_gateway, dex, access, containers, websearch)"
)]
pub struct ScopeError(pub String);

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::Workers,
        Scope::AiGateway,
        Scope::Dex,
        Scope::Access,
        Scope::Containers,
        Scope::Websearch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Workers => "workers",
            Scope::AiGateway => "ai_gateway",
            Scope::Dex => "dex",
            Scope::Access => "access",
            Scope::Containers => "containers",
            Scope::Websearch => "websearch",
        }
    }

    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                // Bound what we echo back: the input is untrusted and may be huge.
                ScopeError(s.chars().take(64).collect())
            })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes, kept sorted and without duplicates so that equal sets compare and store
/// equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Scopes {
        let mut v: Vec<Scope> = scopes.into_iter().collect();
        v.sort();
        v.dedup();
        Scopes(v)
    }

    /// Parses every string, failing on the first unknown scope.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Scopes, ScopeError> {
        items
            .iter()
            .map(|s| Scope::parse(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(Scopes::new)
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.binary_search(&scope).is_ok()
    }

    pub fn contains_all(&self, other: &Scopes) -> bool {
        other.0.iter().all(|s| self.contains(*s))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    /// The scopes as strings, in canonical order.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|s| s.as_str().to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_known_scope_and_canonicalises() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Ok(s));
        }
        let set = Scopes::parse(&["workers", "ai_gateway", "workers"]).unwrap();
        assert_eq!(set.to_strings(), vec!["workers", "ai_gateway"]);
        assert!(set.contains(Scope::AiGateway));
        assert!(!set.contains(Scope::Dex));
    }

    #[test]
    fn unknown_scope_is_named_and_truncated() {
        let err = Scopes::parse(&["workers", "Workers"]).unwrap_err();
        assert_eq!(err, ScopeError("Workers".into()));
        let long = "x".repeat(1000);
        assert_eq!(Scope::parse(&long).unwrap_err().0.len(), 64);
    }
}
