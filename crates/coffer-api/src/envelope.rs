use serde::{Deserialize, Serialize};

/// Cloudflare's v4 response envelope, used for every response, success or error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub success: bool,
    #[serde(default)]
    pub errors: Vec<ApiMessage>,
    #[serde(default)]
    pub messages: Vec<ApiMessage>,
    pub result: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_info: Option<ResultInfo>,
}

impl<T> Envelope<T> {
    pub fn ok(result: T) -> Envelope<T> {
        Envelope {
            success: true,
            errors: vec![],
            messages: vec![],
            result: Some(result),
            result_info: None,
        }
    }

    pub fn ok_page(result: T, info: ResultInfo) -> Envelope<T> {
        Envelope {
            result_info: Some(info),
            ..Envelope::ok(result)
        }
    }

    pub fn error(errors: Vec<ApiMessage>) -> Envelope<T> {
        Envelope {
            success: false,
            errors,
            messages: vec![],
            result: None,
            result_info: None,
        }
    }
}

/// An item of `errors[]` or `messages[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiMessage {
    pub code: u32,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ErrorSource>,
}

/// Where in the request an error was found, as a JSON pointer (`/0/name`) or a query parameter
/// name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorSource {
    pub pointer: String,
}

/// Pagination details of a list response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultInfo {
    pub page: u32,
    pub per_page: u32,
    /// Items in this page.
    pub count: u64,
    /// Items across all pages.
    pub total_count: u64,
}
