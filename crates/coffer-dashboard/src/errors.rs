//! What the pages say when something fails: the API's message for what the user can fix, a
//! fixed sentence for what they cannot (the detail goes to the log only).

use axum::http::StatusCode;
use axum::response::Response;
use coffer_core::{CoreError, Resource};

use crate::views::{Layout, Message, Who, page};

/// The status and the message a failed core operation shows: core's status (an invalid form
/// is 422, as every re-shown form is) and core's public message, never an internal detail
/// (that goes to the log); a few said in the dashboard's own words.
pub(crate) fn describe(e: &CoreError) -> (StatusCode, String) {
    let status = match e {
        CoreError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        e => StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    };
    let message = match e {
        CoreError::Forbidden(p) => format!("this token's role lacks the {p} permission"),
        CoreError::NotFound(what) => {
            let what = match what {
                Resource::Account => "account",
                Resource::Store => "store",
                Resource::Secret => "secret",
                Resource::Token | Resource::ServiceToken => "token",
                Resource::Service => "service",
                Resource::Node => "node",
            };
            format!("{what} not found")
        }
        CoreError::StoreNotEmpty => "the store still holds secrets: tick \u{201c}Also delete the secrets it holds\u{201d} to delete them with it".to_owned(),
        CoreError::Internal(_) => {
            format!("{}; the server's log has the details", e.public_message())
        }
        e => e.public_message(),
    };
    (status, message)
}

/// A page saying what went wrong, with the layout of the signed-in caller (if any).
pub(crate) fn message_page(
    status: StatusCode,
    heading: &str,
    message: String,
    who: Option<Who>,
) -> Response {
    page(
        status,
        &Message {
            layout: Layout {
                title: heading.to_owned(),
                nav: "",
                who,
            },
            heading: heading.to_owned(),
            message,
        },
    )
}

/// The page of a failed operation that has no form to show the message beside.
/// Its detail goes to the log here, once (`describe` does not log).
pub(crate) fn failure_page(e: &CoreError, who: Option<Who>) -> Response {
    match e {
        CoreError::Unavailable(detail) => {
            tracing::warn!(error = %detail, "dashboard: service unavailable");
        }
        CoreError::Internal(detail) => {
            tracing::error!(error = %detail, "dashboard: internal error");
        }
        _ => {}
    }
    let (status, message) = describe(e);
    let heading = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        s if s.is_server_error() => "Something went wrong",
        _ => "Cannot do that",
    };
    message_page(status, heading, message, who)
}

/// Any path the dashboard does not have. Says nothing of what exists.
pub(crate) async fn not_found() -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no such page in the dashboard.".to_owned(),
        None,
    )
}

/// A state-changing request without this session's CSRF token, or from another site.
pub(crate) fn forged(who: Option<Who>) -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        "Request refused",
        "The form did not come from this dashboard session (or the session changed since the page was loaded). Reload the page and try again.".to_owned(),
        who,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_internal_detail_reaches_a_page() {
        for (e, status) in [
            (
                CoreError::Internal("sqlite: disk I/O at /var/lib/x".into()),
                500,
            ),
            (CoreError::Unavailable("pg 10.0.0.5 refused".into()), 503),
        ] {
            let (s, message) = describe(&e);
            assert_eq!(s.as_u16(), status);
            assert!(
                !message.contains("/var/lib/x") && !message.contains("10.0.0.5"),
                "{message}"
            );
            assert!(message.starts_with(&e.public_message()), "{message}");
        }
        let (s, _) = describe(&CoreError::AlreadyRevoked);
        assert_eq!(s, StatusCode::CONFLICT, "core's status, not a fallback 400");
    }

    #[tokio::test]
    async fn a_5xx_page_says_something_went_wrong_and_nothing_more() {
        use http_body_util::BodyExt;
        let r = failure_page(&CoreError::Internal("row 42 of /var/lib/x".into()), None);
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("Something went wrong"), "{body}");
        assert!(
            body.contains("<p>internal error; the server&#39;s log has the details</p>"),
            "{body}"
        );
        assert!(
            !body.contains("/var/lib/x") && !body.contains("row 42"),
            "{body}"
        );
    }
}
