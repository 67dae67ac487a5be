//! Fixed header values of answers, made at compile time (`HeaderValue::from_static` checks
//! every byte when it runs, which showed in a runtime read's profile).

use axum::http::HeaderValue;

/// `Cache-Control` of every answer: responses about secrets are not cached.
pub(crate) fn no_store() -> HeaderValue {
    const { HeaderValue::from_static("no-store") }
}

/// `Content-Type` of a single value read.
pub(crate) fn text_plain() -> HeaderValue {
    const { HeaderValue::from_static("text/plain; charset=utf-8") }
}

/// `Content-Type` of a batch read.
pub(crate) fn application_json() -> HeaderValue {
    const { HeaderValue::from_static("application/json") }
}
