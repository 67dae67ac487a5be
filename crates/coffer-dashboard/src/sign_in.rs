//! Signing in and out, [`Signed`]: the session of a request, its token authenticated again, and
//! [`SignedForm`]: a form posted by one, its CSRF token and origin checked.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use coffer_core::{CoreError, Permission, Principal};
use zeroize::Zeroizing;

use crate::errors::{failure_page, forged, message_page};
use crate::forms::Form;
use crate::security::{
    cleared_cookie, cross_origin, csrf_matches, request_host, session_cookie, session_id,
    sign_in_forged,
};
use crate::session::{Owner, Refused, SessionId};
use crate::views::{Layout, SignIn, Who, page};
use crate::{BASE, Inner, State};

/// The longest `next` path kept across sign-in.
const MAX_NEXT: usize = 2048;

/// A signed-in request: who the session's token is now, and the session's CSRF token.
#[derive(Debug)]
pub(crate) struct Signed {
    pub who: Principal,
    /// The session, for its single-use form nonces.
    pub session: SessionId,
    pub csrf: String,
    /// The host the request was sent to ([`request_host`]).
    pub host: Option<String>,
}

impl Signed {
    /// The header's view of the caller.
    pub(crate) fn who(&self) -> Who {
        Who {
            token_name: self.who.token_name.clone(),
            role: self.who.role.as_str(),
            account: self.who.account_id.to_string(),
            csrf: self.csrf.clone(),
            operator: self.who.operator,
            can_manage: self.who.role.allows(Permission::ManageAccount),
        }
    }

    /// A single-use nonce for a form that mints a token ([`crate::session::Sessions::issue_once`]).
    pub(crate) fn once(&self, d: &Inner) -> String {
        d.sessions.issue_once(&self.session).unwrap_or_default()
    }

    /// The refusal (409) of a form that mints a token sent a second time (a reload of its
    /// answer, the back button, a second click): nothing is minted again; `None` for a form
    /// sent the first time, whose nonce is now used up. A request without the field goes on:
    /// the nonce keeps a browser from sending the dashboard's own form twice (which always
    /// carries it), while the CSRF check has already tied the request to the session, whose
    /// token may mint tokens through the API anyway.
    pub(crate) fn replayed(&self, d: &Inner, form: &Form) -> Option<Response> {
        let nonce = form.get("once")?;
        (!d.sessions.redeem_once(&self.session, Some(nonce))).then(|| {
            message_page(
                StatusCode::CONFLICT,
                "Already sent",
                "This form was sent already (a reload, the back button or a second click), so nothing was made again. A token's value is shown once only: if it was not copied, revoke that token and make another.".to_owned(),
                Some(self.who()),
            )
        })
    }
}

impl FromRequestParts<Arc<Inner>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, d: &Arc<Inner>) -> Result<Signed, Response> {
        let Some(id) = session_id(&parts.headers, d.secure(parts)) else {
            return Err(to_sign_in(parts, d, false));
        };
        let Some(live) = d.sessions.get(&id) else {
            return Err(to_sign_in(parts, d, true));
        };
        let (_, context) = d.guard.context(parts);
        match d.coffer.authenticate(&live.token, context).await {
            Ok(who) => Ok(Signed {
                who,
                session: id.clone(),
                csrf: live.csrf,
                host: request_host(parts),
            }),
            // Revoked (or its account deleted): the session ends with it.
            Err(CoreError::Unauthenticated(_) | CoreError::WrongTokenKind(_)) => {
                d.sessions.end(&id);
                Err(to_sign_in(parts, d, true))
            }
            Err(e) => Err(failure_page(&e, None)),
        }
    }
}

/// A form posted by a signed-in session: [`Signed`], then refused (403) if another site sent
/// it, then the body read and parsed, then refused unless it carries the session's CSRF token.
/// Every state-changing handler takes one, so none can skip the check.
#[derive(Debug)]
pub(crate) struct SignedForm {
    pub s: Signed,
    pub form: Form,
}

impl FromRequest<Arc<Inner>> for SignedForm {
    type Rejection = Response;

    async fn from_request(req: Request, d: &Arc<Inner>) -> Result<SignedForm, Response> {
        let (mut parts, body) = req.into_parts();
        let s = Signed::from_request_parts(&mut parts, d).await?;
        // Another site's form is refused before its body is read.
        if cross_origin(&parts.headers, s.host.as_deref()) {
            return Err(forged(Some(s.who())));
        }
        let body = Bytes::from_request(Request::from_parts(parts, body), d)
            .await
            .map_err(IntoResponse::into_response)?;
        let form = Form::parse(&body);
        if !csrf_matches(&s.csrf, form.get("csrf")) {
            return Err(forged(Some(s.who())));
        }
        Ok(SignedForm { s, form })
    }
}

/// The redirect of a request without a live session: to sign-in, keeping the page asked for
/// (a GET's), and clearing a cookie that names no live session.
fn to_sign_in(parts: &Parts, d: &Inner, clear: bool) -> Response {
    let mut target = format!("{BASE}/sign-in");
    if parts.method == Method::GET {
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map_or(&parts.uri, |o| &o.0);
        let asked = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
        if let Some(next) = safe_next(asked) {
            target.push_str("?next=");
            target.extend(form_urlencoded::byte_serialize(next.as_bytes()));
        }
    }
    let mut response = Redirect::to(&target).into_response();
    if clear && let Ok(v) = cleared_cookie(d.secure(parts)).parse() {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// `next` if it is a dashboard page of this server (never another site: no scheme, no `//`).
fn safe_next(next: &str) -> Option<&str> {
    let ok = next.len() <= MAX_NEXT
        && next.starts_with(&format!("{BASE}/"))
        && !next.contains("//")
        && !next.contains('\\')
        && !next.starts_with(&format!("{BASE}/sign-"))
        && next.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(next)
}

fn sign_in_page(status: StatusCode, next: Option<&str>, error: Option<String>) -> Response {
    page(
        status,
        &SignIn {
            layout: Layout {
                title: "Sign in".to_owned(),
                nav: "",
                who: None,
            },
            next: next.and_then(safe_next).map(str::to_owned),
            error,
        },
    )
}

/// `GET /sign-in`: the form, or the stores for a live session.
pub(crate) async fn show(
    axum::extract::State(d): State,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    request: axum::extract::Request,
) -> Response {
    let (parts, _) = request.into_parts();
    if session_id(&parts.headers, d.secure(&parts)).is_some_and(|id| d.sessions.get(&id).is_some())
    {
        return Redirect::to(&format!("{BASE}/stores")).into_response();
    }
    let q = Form::query(query.as_deref());
    sign_in_page(StatusCode::OK, q.get("next"), None)
}

/// `POST /sign-in`: the token is authenticated like an API call, failures count against the
/// API's failed-authentication limit, and a valid one opens a session.
pub(crate) async fn submit(
    axum::extract::State(d): State,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, crate::MAX_FORM_BYTES).await else {
        return sign_in_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            Some("the form is too large".to_owned()),
        );
    };
    let mut form = Form::parse(&body);
    let next = form.get("next").and_then(safe_next).map(str::to_owned);
    if sign_in_forged(&parts.headers, request_host(&parts).as_deref()) {
        return forged(None);
    }
    let token: Zeroizing<String> = match form.take("token") {
        Some(t) if !t.trim().is_empty() => Zeroizing::new(t.trim().to_owned()),
        _ => {
            return sign_in_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                next.as_deref(),
                Some("enter an API token".to_owned()),
            );
        }
    };
    let (client, context) = d.guard.context(&parts);
    match d.coffer.authenticate(&token, context).await {
        Ok(who) => {
            let owner = Owner {
                token,
                token_id: who.token_id,
                account: who.account_id,
            };
            let id = match d.sessions.open(owner) {
                Ok(id) => id,
                Err(refused) => {
                    let limits = d.sessions.limits();
                    // The process's cap is the server's condition (503); an account's is the
                    // tenant's own quota (429), which no load balancer should take for an outage.
                    let (status, why) = match refused {
                        Refused::Full => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(
                                "the dashboard keeps at most {} sessions and has that many open; try again later",
                                limits.max_sessions
                            ),
                        ),
                        Refused::AccountFull => (
                            StatusCode::TOO_MANY_REQUESTS,
                            format!(
                                "this account has {} dashboard sessions open, the most it may; sign out of some, or wait for them to expire",
                                limits.per_account
                            ),
                        ),
                    };
                    return sign_in_page(status, next.as_deref(), Some(why));
                }
            };
            let target = next.unwrap_or_else(|| format!("{BASE}/stores"));
            let mut response = Redirect::to(&target).into_response();
            if let Ok(v) = session_cookie(&id, d.secure(&parts)).parse() {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            response
        }
        Err(CoreError::Unauthenticated(_)) => {
            // As the API does: only a failure consults the limit, so a valid token is never
            // refused because of others' failures from the same address.
            if let Some(ip) = client {
                if let Some(wait) = d.guard.blocked(ip) {
                    let secs = wait.as_secs().max(1);
                    return sign_in_page(
                        StatusCode::TOO_MANY_REQUESTS,
                        next.as_deref(),
                        Some(format!(
                            "too many failed sign-ins from this address; retry in {secs} s"
                        )),
                    );
                }
                if let Some(budget) = d.guard.failed(ip) {
                    tracing::warn!(client = %ip, "too many failed authentications; refusing this address's failures for a while");
                    d.coffer.record_rate_limited(&ip.to_string(), budget).await;
                }
            }
            sign_in_page(
                StatusCode::UNAUTHORIZED,
                next.as_deref(),
                Some("this API token was not accepted (unknown, revoked or expired)".to_owned()),
            )
        }
        Err(e @ CoreError::WrongTokenKind(_)) => {
            sign_in_page(StatusCode::FORBIDDEN, next.as_deref(), Some(e.to_string()))
        }
        Err(e) => failure_page(&e, None),
    }
}

/// `POST /sign-out`: ends the session (with its CSRF token, so another site cannot sign a
/// user out).
pub(crate) async fn sign_out(
    axum::extract::State(d): State,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, crate::MAX_FORM_BYTES).await else {
        return forged(None);
    };
    let headers = &parts.headers;
    let secure = d.secure(&parts);
    let form = Form::parse(&body);
    // Another site's form is refused even without a session (its answer would clear the
    // cookie: a sign-out another site could make).
    if cross_origin(headers, request_host(&parts).as_deref()) {
        return forged(None);
    }
    if let Some(id) = session_id(headers, secure)
        && let Some(live) = d.sessions.get(&id)
    {
        if !csrf_matches(&live.csrf, form.get("csrf")) {
            return forged(None);
        }
        d.sessions.end(&id);
    }
    let mut response = Redirect::to(&format!("{BASE}/sign-in")).into_response();
    if let Ok(v) = cleared_cookie(secure).parse() {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}
