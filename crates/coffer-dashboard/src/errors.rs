//! What the pages say when something fails: the API's message for what the user can fix, a
//! fixed sentence for what they cannot (the detail goes to the log only).

use axum::http::StatusCode;
use axum::response::Response;
use coffer_core::{CoreError, Resource};

use crate::views::{Layout, Message, Who, page};

/// The status and the message a failed core operation shows.
pub(crate) fn describe(e: &CoreError) -> (StatusCode, String) {
    let status = match e {
        CoreError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        CoreError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        CoreError::Forbidden(p) => {
            return (
                StatusCode::FORBIDDEN,
                format!("this token's role lacks the {p} permission"),
            );
        }
        CoreError::OutsideOperatorReach(_)
        | CoreError::OperatorFirstTokenOnly
        | CoreError::WrongTokenKind(_) => StatusCode::FORBIDDEN,
        CoreError::NotFound(what) => {
            let what = match what {
                Resource::Account => "account",
                Resource::Store => "store",
                Resource::Secret => "secret",
                Resource::Token | Resource::ServiceToken => "token",
                Resource::Service => "service",
                Resource::Node => "node",
            };
            return (StatusCode::NOT_FOUND, format!("{what} not found"));
        }
        CoreError::StoreNotEmpty => {
            return (
                StatusCode::CONFLICT,
                "the store still holds secrets: tick \u{201c}Also delete the secrets it holds\u{201d} to delete them with it".to_owned(),
            );
        }
        CoreError::NameTaken { .. }
        | CoreError::QuotaExceeded { .. }
        | CoreError::StoreLimitExceeded { .. }
        | CoreError::Conflict => StatusCode::CONFLICT,
        CoreError::Unavailable(detail) => {
            tracing::warn!(error = %detail, "dashboard: service unavailable");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the service is unavailable for now; try again shortly".to_owned(),
            );
        }
        CoreError::AccountKekUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        CoreError::Internal(detail) => {
            tracing::error!(error = %detail, "dashboard: internal error");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; the server's log has the details".to_owned(),
            );
        }
        _ => StatusCode::BAD_REQUEST,
    };
    (status, e.to_string())
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
pub(crate) fn failure_page(e: &CoreError, who: Option<Who>) -> Response {
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
