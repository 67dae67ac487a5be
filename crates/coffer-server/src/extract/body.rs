//! What a request sends: its query parameters and its JSON body (bounded, UTF-8, every bad
//! field reported as a JSON pointer, never echoing a value).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use coffer_api::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Request bodies larger than this are refused before parsing.
pub const MAX_BODY_BYTES: usize = coffer_core::MAX_REQUEST_BODY_BYTES;

/// Query parameters as decoded pairs, in order. Unknown parameters are ignored, as Cloudflare
/// does; known ones are validated by the handler's query parser.
#[derive(Debug, Default)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<QueryPairs, ApiError> {
        let raw = parts.uri.query().unwrap_or("");
        Ok(QueryPairs(
            form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        ))
    }
}

/// A JSON body: at most [`MAX_BODY_BYTES`], UTF-8, and
/// deserialized with the path of any bad field reported as a JSON pointer.
///
/// The bytes may hold secret values, so `Debug` shows only their length.
pub struct JsonBody(pub Bytes);

impl std::fmt::Debug for JsonBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JsonBody([redacted; {} bytes])", self.0.len())
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<JsonBody, ApiError> {
        // wrangler labels its JSON bodies `text/plain;charset=UTF-8`, some SDKs send no content
        // type, and `curl -d` says form-urlencoded: the body is parsed as JSON whatever it
        // claims to be. Only multipart, which is certainly not JSON, is refused.
        let is_multipart = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/")
            });
        if is_multipart {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "request body must be JSON, not multipart",
            ));
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::BodyTooLarge,
                    format!("request body exceeds {MAX_BODY_BYTES} bytes"),
                )
            })?;
        Ok(JsonBody(bytes))
    }
}

impl JsonBody {
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|b| b.is_ascii_whitespace())
    }

    fn text(&self) -> Result<&str, ApiError> {
        if self.is_empty() {
            return Err(ApiError::new(
                ErrorCode::MalformedJson,
                "request body is empty; expected JSON",
            ));
        }
        std::str::from_utf8(&self.0)
            .map_err(|_| ApiError::new(ErrorCode::MalformedJson, "request body is not valid UTF-8"))
    }

    /// Any JSON document of type `T` (used for arrays of ids).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        parse_at(self.text()?, "")
    }

    /// A JSON object of type `T`. serde's derived structs would also accept a positional array
    /// (`["name", ...]`); request bodies must be objects, so anything else is refused.
    pub fn object<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        object_at(self.text()?, "")
    }

    /// One object, or an array of objects. Returns the items and whether the body was an array.
    pub fn objects<T: DeserializeOwned>(&self) -> Result<(Vec<T>, bool), ApiError> {
        let text = self.text()?;
        if first_char(text) != Some('[') {
            return Ok((vec![object_at(text, "")?], false));
        }
        // Borrowed raw items: each is parsed (and checked to be an object) on its own, with
        // its index in the error pointer, and no copy of the body is made.
        let raw: Vec<&serde_json::value::RawValue> = parse_at(text, "")?;
        let items = raw
            .iter()
            .enumerate()
            .map(|(i, item)| object_at(item.get(), &format!("/{i}")))
            .collect::<Result<Vec<T>, _>>()?;
        Ok((items, true))
    }
}

fn first_char(text: &str) -> Option<char> {
    text.chars().find(|c| !c.is_ascii_whitespace())
}

fn object_at<'de, T: serde::Deserialize<'de>>(text: &'de str, prefix: &str) -> Result<T, ApiError> {
    if first_char(text) != Some('{') {
        // Say "malformed" for what is not JSON at all, "wrong type" for JSON that is not an object.
        parse_at::<serde::de::IgnoredAny>(text, prefix)?;
        let place = if prefix.is_empty() { "body" } else { prefix };
        let kind = match first_char(text) {
            Some('"') => "string",
            Some('[') => "sequence",
            Some('t' | 'f') => "boolean",
            Some('n') => "null",
            _ => "number",
        };
        return Err(ApiError::at(
            ErrorCode::InvalidField,
            place,
            format!("{place}: invalid type: {kind}, expected a JSON object"),
        ));
    }
    parse_at(text, prefix)
}

fn parse_at<'de, T: serde::Deserialize<'de>>(text: &'de str, prefix: &str) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(e, prefix))?;
    de.end()
        .map_err(|e| ApiError::new(ErrorCode::MalformedJson, format!("malformed JSON: {e}")))?;
    Ok(value)
}

fn json_error(e: serde_path_to_error::Error<serde_json::Error>, prefix: &str) -> ApiError {
    let pointer = format!("{prefix}{}", pointer_of(e.path()));
    let inner = e.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let place = if pointer.is_empty() {
                "body".to_owned()
            } else {
                pointer.clone()
            };
            let message = scrub_literal(&strip_position(&inner));
            ApiError::at(
                ErrorCode::InvalidField,
                place.clone(),
                format!("{place}: {message}"),
            )
        }
        _ => ApiError::new(ErrorCode::MalformedJson, format!("malformed JSON: {inner}")),
    }
}

/// serde_json appends " at line L column C"; the pointer says more, so drop it.
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// serde's type errors quote the offending input (`invalid type: integer `1234`, expected a
/// string`). A mistyped value may be a secret, so keep only its kind and what was expected.
fn scrub_literal(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let kind_end = rest.find(['`', '"', ',']).unwrap_or(rest.len());
            let kind = rest[..kind_end].trim();
            let expected = rest.rfind(", expected").map_or("", |i| &rest[i..]);
            return format!("{prefix}{kind}{expected}");
        }
    }
    message.to_owned()
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => {
                out.push('/');
                out.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Enum { variant } => {
                out.push('/');
                out.push_str(variant);
            }
            Segment::Unknown => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_do_not_echo_input() {
        for (json, expected) in [
            (
                r#"{"name": 123456}"#,
                "invalid type: integer, expected a string",
            ),
            (r#"{"name": "hunter2"}"#, "invalid type: string, expected"),
            (
                r#"{"name": 1.5}"#,
                "invalid type: floating point, expected a string",
            ),
            (
                r#"{"name": true}"#,
                "invalid type: boolean, expected a string",
            ),
        ] {
            #[derive(Debug, serde::Deserialize)]
            #[allow(dead_code)]
            struct Named {
                name: Vec<String>,
            }
            #[derive(Debug, serde::Deserialize)]
            #[allow(dead_code)]
            struct Strict {
                name: String,
            }
            let body = JsonBody(Bytes::from(json));
            let err = if json.contains("hunter2") {
                body.parse::<Named>().unwrap_err()
            } else {
                body.parse::<Strict>().unwrap_err()
            };
            assert_eq!(err.code, ErrorCode::InvalidField);
            assert!(err.message.contains(expected), "{}", err.message);
            for literal in ["123456", "hunter2", "1.5", "true"] {
                assert!(
                    !err.message.contains(literal),
                    "{} echoes {literal}",
                    err.message
                );
            }
            assert_eq!(err.pointer.as_deref(), Some("/name"));
        }
    }

    #[test]
    fn body_debug_shows_only_the_length() {
        let body = JsonBody(Bytes::from_static(
            br#"[{"name":"k","value":"hunter2","scopes":["workers"]}]"#,
        ));
        let debug = format!("{body:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("redacted"), "{debug}");
    }
}
