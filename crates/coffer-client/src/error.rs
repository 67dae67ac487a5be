//! The client's error type.
//!
//! No variant carries a request body: create and update bodies hold secret values. Response
//! snippets are kept short, and transport errors come from reqwest, which never includes bodies.

use coffer_api::{ApiMessage, ErrorCode};

/// Longest part of a non-v4 response body kept in [`Error::Decode`], in characters.
pub(crate) const SNIPPET_MAX_CHARS: usize = 120;

/// Everything that can go wrong talking to a Coffer server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server URL given to the client is not usable.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// The token cannot be sent as an HTTP header (it holds control characters or non-ASCII
    /// bytes). The token itself is not repeated here.
    #[error("the API token contains characters that cannot be sent in an HTTP header")]
    InvalidToken,

    /// The custom root certificate could not be read or parsed.
    #[error("root certificate {path}: {message}")]
    RootCertificate { path: String, message: String },

    /// The HTTP client could not be built (TLS setup).
    #[error("cannot set up the HTTP client: {0}")]
    Setup(#[source] reqwest::Error),

    /// No connection could be made to the server (refused, unknown host, TLS handshake...).
    #[error("cannot reach {url}: {reason}")]
    Connect {
        /// The server root that was tried.
        url: String,
        /// The most useful cause, in words (e.g. `connection refused`).
        reason: String,
        #[source]
        source: reqwest::Error,
    },

    /// The server did not answer in time.
    #[error("no answer from {url} in time")]
    Timeout {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// Any other transport failure (connection reset mid-response, HTTP protocol error...).
    #[error("request to {url} failed: {reason}")]
    Transport {
        url: String,
        reason: String,
        #[source]
        source: reqwest::Error,
    },

    /// The server answered with a v4 error envelope. `code` and `message` are those of the first
    /// error; `errors` holds all of them.
    #[error("{}", format_api(*.code, message, errors.len()))]
    Api {
        status: u16,
        code: u32,
        message: String,
        errors: Vec<ApiMessage>,
    },

    /// The server's answer is not the v4 envelope expected (a proxy's HTML page, a truncated
    /// body, a result of the wrong shape).
    #[error("unexpected response from the server (HTTP {status}): {detail}")]
    Decode { status: u16, detail: String },
}

impl Error {
    /// The v4 error code, for API errors.
    pub fn api_code(&self) -> Option<u32> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `[1301 secret_name_taken] a secret named "x" already exists (and 1 more error)`.
fn format_api(code: u32, message: &str, count: usize) -> String {
    let mut out = match code_name(code) {
        Some(name) => format!("[{code} {name}] {message}"),
        None => format!("[{code}] {message}"),
    };
    match count {
        0 | 1 => {}
        2 => out.push_str(" (and 1 more error)"),
        n => out.push_str(&format!(" (and {} more errors)", n - 1)),
    }
    out
}

/// The stable short name of a Coffer error code, if it is one of ours.
pub fn code_name(code: u32) -> Option<&'static str> {
    const KNOWN: [ErrorCode; 42] = [
        ErrorCode::MalformedJson,
        ErrorCode::InvalidField,
        ErrorCode::BodyTooLarge,
        ErrorCode::InvalidId,
        ErrorCode::InvalidName,
        ErrorCode::InvalidScope,
        ErrorCode::InvalidValue,
        ErrorCode::InvalidComment,
        ErrorCode::InvalidQuery,
        ErrorCode::InvalidBatch,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::InvalidRole,
        ErrorCode::InvalidExpiry,
        ErrorCode::InvalidBinding,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::ScopeDenied,
        ErrorCode::WrongTokenKind,
        ErrorCode::BindingAuthorizationFailed,
        ErrorCode::AccountNotFound,
        ErrorCode::StoreNotFound,
        ErrorCode::SecretNotFound,
        ErrorCode::TokenNotFound,
        ErrorCode::ServiceNotFound,
        ErrorCode::BindingNotFound,
        ErrorCode::NodeNotFound,
        ErrorCode::RouteNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::StoreNameTaken,
        ErrorCode::SecretNameTaken,
        ErrorCode::NodeNameTaken,
        ErrorCode::StoreNotEmpty,
        ErrorCode::TokenAlreadyRevoked,
        ErrorCode::OperatorProtected,
        ErrorCode::Conflict,
        ErrorCode::QuotaExceeded,
        ErrorCode::StoreLimitExceeded,
        ErrorCode::AccountKekExists,
        ErrorCode::Unavailable,
        ErrorCode::AccountKekUnavailable,
        ErrorCode::Internal,
    ];
    KNOWN.iter().find(|c| c.code() == code).map(|c| c.name())
}

/// Up to [`SNIPPET_MAX_CHARS`] characters of `body`, on one line, with an ellipsis when cut.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "empty body".to_owned();
    }
    let mut out: String = text
        .chars()
        .take(SNIPPET_MAX_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > SNIPPET_MAX_CHARS {
        out.push('…');
    }
    out
}

/// Words for the innermost cause of a connection failure: `connection refused` rather than
/// reqwest's `error sending request for url (...)`.
pub(crate) fn connect_reason(err: &reqwest::Error) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut deepest = err.to_string();
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                std::io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
                std::io::ErrorKind::TimedOut => "connection timed out".to_owned(),
                std::io::ErrorKind::HostUnreachable => "host unreachable".to_owned(),
                std::io::ErrorKind::NetworkUnreachable => "network unreachable".to_owned(),
                _ => strip_os_error(&io.to_string()),
            };
        }
        deepest = e.to_string();
        cause = e.source();
    }
    deepest
}

/// `Connection refused (os error 111)` -> `Connection refused`.
fn strip_os_error(s: &str) -> String {
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_names_code_and_counts_the_rest() {
        let err = Error::Api {
            status: 409,
            code: 1301,
            message: "a secret named \"x\" already exists".into(),
            errors: vec![],
        };
        assert_eq!(
            err.to_string(),
            "[1301 secret_name_taken] a secret named \"x\" already exists"
        );
        assert_eq!(format_api(9999, "m", 1), "[9999] m");
        assert_eq!(
            format_api(10021, "m", 1),
            "[10021 binding_authorization_failed] m"
        );
        assert_eq!(
            format_api(1005, "m", 2),
            "[1005 invalid_name] m (and 1 more error)"
        );
        assert_eq!(
            format_api(1005, "m", 4),
            "[1005 invalid_name] m (and 3 more errors)"
        );
    }

    #[test]
    fn every_code_has_its_name() {
        assert_eq!(code_name(1001), Some("malformed_json"));
        assert_eq!(code_name(1302), Some("store_not_empty"));
        assert_eq!(code_name(1501), Some("internal_error"));
        assert_eq!(code_name(1012), Some("invalid_role"));
        assert_eq!(code_name(1013), Some("invalid_expiry"));
        assert_eq!(code_name(1205), Some("token_not_found"));
        assert_eq!(code_name(1304), Some("token_already_revoked"));
        assert_eq!(code_name(1014), Some("invalid_binding"));
        assert_eq!(code_name(1208), Some("node_not_found"));
        assert_eq!(code_name(1306), Some("node_name_taken"));
        assert_eq!(code_name(1102), Some("rate_limited"));
        assert_eq!(code_name(1103), Some("scope_denied"));
        assert_eq!(code_name(1104), Some("wrong_token_kind"));
        assert_eq!(code_name(1206), Some("service_not_found"));
        assert_eq!(code_name(1207), Some("binding_not_found"));
        assert_eq!(code_name(1305), Some("operator_protected"));
        assert_eq!(code_name(10021), Some("binding_authorization_failed"));
        assert_eq!(code_name(9999), None);
    }

    #[test]
    fn snippets_are_short_and_on_one_line() {
        assert_eq!(snippet(b"  "), "empty body");
        assert_eq!(
            snippet(b"<html>\n<b>502</b>\n</html>"),
            "<html> <b>502</b> </html>"
        );
        let long = "x".repeat(1000);
        let s = snippet(long.as_bytes());
        assert_eq!(s.chars().count(), SNIPPET_MAX_CHARS + 1);
        assert!(s.ends_with('…'));
        assert_eq!(snippet(&[0xff, b'a']), "\u{fffd}a");
    }

    #[test]
    fn os_error_suffix_is_dropped() {
        assert_eq!(strip_os_error("Broken pipe (os error 32)"), "Broken pipe");
        assert_eq!(strip_os_error("plain"), "plain");
    }
}
