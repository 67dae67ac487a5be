//! Normalisation of the server URL a user gives us.
//!
//! People paste whatever they have at hand: `http://host:8080`, `http://host:8080/`, or the
//! `CLOUDFLARE_API_BASE_URL` they gave wrangler (`http://host:8080/client/v4`). All of them mean
//! the same server root, so they normalise to one [`Url`] whose path has no trailing slash.
//! A path prefix other than `/client/v4` (a reverse proxy mounting Coffer under `/coffer`) is kept.

use reqwest::Url;

use crate::Error;

/// Parses `input` into the server root: scheme `http` or `https`, no query, no fragment, no
/// credentials, path without a trailing slash and without a trailing `/client/v4`.
pub(crate) fn normalize(input: &str) -> Result<Url, Error> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: input.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = input.trim();
    if !trimmed.contains("://") {
        return Err(invalid("the URL must start with http:// or https://"));
    }
    let mut url = Url::parse(trimmed).map_err(|e| invalid(&e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("the URL must not have a query or a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in a URL end up in logs and error messages; the token has its own flag.
        return Err(invalid("the URL must not carry a user name or password"));
    }

    let mut path = url.path().trim_end_matches('/').to_owned();
    if let Some(prefix) = path.strip_suffix(coffer_api::API_PREFIX) {
        path = prefix.trim_end_matches('/').to_owned();
    }
    url.set_path(&path);
    Ok(url)
}

/// The root URL with `segments` appended, each percent-encoded as one path segment (so an id
/// holding `/` or `..` cannot address another route).
pub(crate) fn join(root: &Url, segments: &[&str]) -> Url {
    let mut url = root.clone();
    // A URL with scheme http(s) always has a hierarchical path, so `path_segments_mut` succeeds
    // (`normalize` only accepts http and https).
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// The URL as shown to people: the root without its trailing slash.
pub(crate) fn display(root: &Url) -> String {
    root.as_str().trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        display(&normalize(s).unwrap())
    }

    #[test]
    fn trailing_slashes_and_api_prefix_are_removed() {
        for input in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080//",
            "http://127.0.0.1:8080/client/v4",
            "http://127.0.0.1:8080/client/v4/",
            " http://127.0.0.1:8080/ ",
        ] {
            assert_eq!(norm(input), "http://127.0.0.1:8080", "{input:?}");
        }
    }

    #[test]
    fn other_path_prefixes_are_kept() {
        assert_eq!(
            norm("https://example.com/coffer/"),
            "https://example.com/coffer"
        );
        assert_eq!(
            norm("https://example.com/coffer/client/v4"),
            "https://example.com/coffer"
        );
        // Only a whole trailing `/client/v4` is the API prefix.
        assert_eq!(
            norm("https://example.com/myclient/v4"),
            "https://example.com/myclient/v4"
        );
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for (input, reason) in [
            ("127.0.0.1:8080", "must start with http://"),
            ("ftp://example.com", "scheme"),
            ("not a url", "must start with http://"),
            ("http://", "empty host"),
            ("http://example.com/?a=b", "query"),
            ("http://example.com/#x", "fragment"),
            ("http://user:pw@example.com/", "password"),
        ] {
            let err = normalize(input).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(reason), "{input:?}: {msg}");
            assert!(matches!(err, Error::InvalidUrl { .. }));
        }
    }

    #[test]
    fn join_encodes_each_segment() {
        let root = normalize("http://h:1/pre/").unwrap();
        let url = join(&root, &["client", "v4", "accounts", "a/../b", "x y"]);
        assert_eq!(
            url.as_str(),
            "http://h:1/pre/client/v4/accounts/a%2F..%2Fb/x%20y"
        );
        let root = normalize("http://h:1").unwrap();
        assert_eq!(join(&root, &["healthz"]).as_str(), "http://h:1/healthz");
    }
}
