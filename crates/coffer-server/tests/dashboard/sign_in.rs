//! Sign-in, sessions, their cookie, their end.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use coffer_core::RequestContext;
use coffer_dashboard::{Dashboard, DashboardOptions, SecureCookies, SessionLimits, SignInGuard};

use crate::support::{Browser, Harness, send};

#[tokio::test]
async fn the_sign_in_page_has_the_token_field_and_button() {
    let h = Harness::new().await;
    let r = h.get(&Browser::default(), "/dashboard/sign-in").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("<label for=\"token\">API token</label>"));
    assert!(r.body.contains("type=\"password\" autocomplete=\"off\""));
    assert!(r.body.contains("<button type=\"submit\">Sign in</button>"));
    assert!(
        r.body
            .contains("<form method=\"post\" action=\"/dashboard/sign-in\">")
    );
    assert!(
        r.body
            .contains("<link rel=\"stylesheet\" href=\"/dashboard/assets/dashboard.css\">")
    );
    assert!(
        r.body
            .contains("<script src=\"/dashboard/assets/dashboard.js\" defer></script>")
    );
    // `/` and `/dashboard` lead there.
    let r = h.get(&Browser::default(), "/").await;
    assert_eq!(r.location(), "/dashboard");
    let r = h.get(&Browser::default(), "/dashboard").await;
    assert_eq!(r.location(), "/dashboard/stores");
    let r = h.get(&Browser::default(), "/dashboard/stores").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.location(),
        "/dashboard/sign-in?next=%2Fdashboard%2Fstores"
    );
}

#[tokio::test]
async fn a_valid_token_opens_a_session_in_a_strict_cookie() {
    let h = Harness::new().await;
    let r = h
        .post(
            &Browser::default(),
            "/dashboard/sign-in",
            &[("token", &h.token), ("next", "/dashboard/stores?page=1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), "/dashboard/stores?page=1");
    let cookie = r.set_cookie().expect("a session cookie");
    let parts: Vec<&str> = cookie.split("; ").collect();
    assert!(parts[0].starts_with("coffer_session="));
    assert_eq!(parts[0].len(), "coffer_session=".len() + 64);
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(parts.contains(&flag), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    assert!(!cookie.contains(&h.token) && !r.body.contains(&h.token));

    let mut b = Browser::default();
    b.keep(&r);
    let page = h.get(&b, "/dashboard/stores").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("super_admin"), "{}", page.body);
    assert!(page.body.contains(&h.account));
    assert!(page.body.contains("Sign out"));
    assert!(!page.body.contains(&h.token), "the token never goes back");
}

#[tokio::test]
async fn a_next_page_elsewhere_is_not_followed() {
    let h = Harness::new().await;
    for next in [
        "https://evil.test/",
        "//evil.test/x",
        "/client/v4/accounts",
        "/dashboard/\\x",
    ] {
        let r = h
            .post(
                &Browser::default(),
                "/dashboard/sign-in",
                &[("token", &h.token), ("next", next)],
            )
            .await;
        assert_eq!(r.location(), "/dashboard/stores", "{next}");
    }
}

#[tokio::test]
async fn a_bad_token_is_refused_and_counts_against_the_api_limit() {
    let h = Harness::new().await;
    let b = Browser {
        peer: Some("192.0.2.7:5000".parse().unwrap()),
        ..Browser::default()
    };
    let bad = format!("cfat_{}", "0".repeat(60));
    let r = h.post(&b, "/dashboard/sign-in", &[("token", "")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("enter an API token"));
    let mut last = StatusCode::OK;
    for _ in 0..20 {
        let r = h.post(&b, "/dashboard/sign-in", &[("token", &bad)]).await;
        assert!(r.set_cookie().is_none());
        last = r.status;
        if last == StatusCode::UNAUTHORIZED {
            assert!(r.body.contains("was not accepted"), "{}", r.body);
            assert!(!r.body.contains(&bad), "what was typed is not echoed");
        }
    }
    assert_eq!(last, StatusCode::UNAUTHORIZED);
    let r = h.post(&b, "/dashboard/sign-in", &[("token", &bad)]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(r.body.contains("too many failed sign-ins"));
    // The same budget as the API's: a bad bearer from that address is limited too.
    let api = h
        .send(
            b.request(Method::GET, "/client/v4/user/tokens/verify")
                .header("authorization", format!("Bearer {bad}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(api.status, StatusCode::TOO_MANY_REQUESTS);
    // A valid token still signs in from there.
    let r = h
        .post(&b, "/dashboard/sign-in", &[("token", &h.token)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sign_out_ends_the_session() {
    let h = Harness::new().await;
    let mut b = h.sign_in(&h.token).await;
    let old = b.clone();
    let page = h.get(&b, "/dashboard/stores").await;
    // Without the CSRF token, sign-out is refused and the session lives on.
    let r = h.post(&b, "/dashboard/sign-out", &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(h.get(&b, "/dashboard/stores").await.status, StatusCode::OK);
    let r = h
        .post(&b, "/dashboard/sign-out", &[("csrf", &page.csrf())])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/dashboard/sign-in");
    assert!(r.set_cookie().unwrap().contains("Max-Age=0"));
    b.keep(&r);
    assert!(b.cookie.is_none());
    let r = h.get(&old, "/dashboard/stores").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "the old cookie is dead");
    assert!(r.location().starts_with("/dashboard/sign-in"));
}

/// Another site's sign-out form, sent without the session cookie (SameSite keeps it off): it
/// is refused and its answer clears no cookie, so another site cannot sign a user out.
#[tokio::test]
async fn another_sites_sign_out_without_the_cookie_clears_nothing() {
    let h = Harness::new().await;
    let b = h.sign_in(&h.token).await;
    let r = h
        .send(
            Browser::default()
                .request(Method::POST, "/dashboard/sign-out")
                .header(header::HOST, "127.0.0.1:8080")
                .header(header::ORIGIN, "https://evil.test")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.set_cookie().is_none(), "{:?}", r.set_cookie());
    assert_eq!(h.get(&b, "/dashboard/stores").await.status, StatusCode::OK);
}

#[tokio::test]
async fn revoking_the_token_ends_its_sessions_at_once() {
    let h = Harness::new().await;
    let (id, value) = h.token_with_role("secrets_store_admin").await;
    let b = h.sign_in(&value).await;
    assert_eq!(h.get(&b, "/dashboard/stores").await.status, StatusCode::OK);
    let (status, v) = h
        .api(
            Method::DELETE,
            &format!("/client/v4/accounts/{}/tokens/{id}", h.account),
            &h.token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let r = h.get(&b, "/dashboard/stores").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.location().starts_with("/dashboard/sign-in"));
    assert!(r.set_cookie().unwrap().contains("Max-Age=0"));
}

/// A guard that limits nothing, for a dashboard built without the server.
#[derive(Debug)]
struct NoLimit;

impl SignInGuard for NoLimit {
    fn context(&self, _: &axum::http::request::Parts) -> (Option<IpAddr>, RequestContext) {
        (None, RequestContext::default())
    }
    fn blocked(&self, _: IpAddr) -> Option<Duration> {
        None
    }
    fn failed(&self, _: IpAddr) -> Option<u32> {
        None
    }
    fn https(&self, _: &axum::http::request::Parts) -> bool {
        false
    }
}

fn mounted(h: &Harness, options: DashboardOptions) -> (Dashboard, Router) {
    let d = Dashboard::new(h.coffer.clone(), Arc::new(NoLimit), options);
    let app = Router::new().nest_service(coffer_dashboard::BASE, d.router());
    (d, app)
}

#[tokio::test]
async fn over_tls_the_cookie_is_secure() {
    let h = Harness::new().await;
    let (_, app) = mounted(
        &h,
        DashboardOptions {
            secure_cookies: SecureCookies::Always,
            ..Default::default()
        },
    );
    let r = send(
        &app,
        Browser::default()
            .request(Method::POST, "/dashboard/sign-in")
            .body(crate::support::form(&[("token", &h.token)]).into())
            .unwrap(),
    )
    .await;
    let set = r.set_cookie().unwrap();
    assert!(
        set.starts_with("__Host-coffer_session=")
            && set.ends_with("; Path=/; HttpOnly; SameSite=Strict; Secure"),
        "{r:?}"
    );
    let mut b = Browser::default();
    b.keep(&r);
    let page = |b: &Browser| {
        b.request(Method::GET, "/dashboard/stores")
            .body(axum::body::Body::empty())
            .unwrap()
    };
    assert_eq!(send(&app, page(&b)).await.status, StatusCode::OK);
    // The plain name is not the secure session's, and a second cookie of the name voids both.
    let plain = Browser {
        cookie: b.cookie.as_ref().map(|c| c.replace("__Host-", "")),
        ..Browser::default()
    };
    assert_eq!(send(&app, page(&plain)).await.status, StatusCode::SEE_OTHER);
    let twice = Browser {
        cookie: b
            .cookie
            .as_ref()
            .map(|c| format!("{c}; __Host-coffer_session={}", "ab".repeat(32))),
        ..Browser::default()
    };
    assert_eq!(send(&app, page(&twice)).await.status, StatusCode::SEE_OTHER);
    // Never: the plain cookie.
    let (_, app) = mounted(
        &h,
        DashboardOptions {
            secure_cookies: SecureCookies::Never,
            ..Default::default()
        },
    );
    let r = send(
        &app,
        Browser::default()
            .request(Method::POST, "/dashboard/sign-in")
            .body(crate::support::form(&[("token", &h.token)]).into())
            .unwrap(),
    )
    .await;
    assert!(
        r.set_cookie().unwrap().starts_with("coffer_session="),
        "{r:?}"
    );
    assert!(!r.set_cookie().unwrap().contains("Secure"), "{r:?}");
}

#[tokio::test]
async fn sessions_expire_when_idle_or_too_old_and_are_bounded() {
    let h = Harness::new().await;
    for limits in [
        SessionLimits {
            idle: Duration::ZERO,
            ..SessionLimits::default()
        },
        SessionLimits {
            absolute: Duration::ZERO,
            ..SessionLimits::default()
        },
    ] {
        let (d, app) = mounted(
            &h,
            DashboardOptions {
                sessions: limits,
                ..Default::default()
            },
        );
        let signed = send(
            &app,
            Browser::default()
                .request(Method::POST, "/dashboard/sign-in")
                .body(crate::support::form(&[("token", &h.token)]).into())
                .unwrap(),
        )
        .await;
        let mut b = Browser::default();
        b.keep(&signed);
        assert_eq!(d.session_count(), 1);
        let r = send(
            &app,
            b.request(Method::GET, "/dashboard/stores?page=2")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert_eq!(
            r.location(),
            "/dashboard/sign-in?next=%2Fdashboard%2Fstores%3Fpage%3D2",
            "back to sign-in, keeping the page asked for"
        );
        assert_eq!(d.session_count(), 0);
    }
    // Signing in again and again keeps at most the token's cap (its oldest session ends).
    let (d, app) = mounted(
        &h,
        DashboardOptions {
            sessions: SessionLimits {
                max_sessions: 3,
                per_token: 2,
                ..SessionLimits::default()
            },
            ..Default::default()
        },
    );
    let mut last = Browser::default();
    for _ in 0..10 {
        let r = send(
            &app,
            Browser::default()
                .request(Method::POST, "/dashboard/sign-in")
                .body(crate::support::form(&[("token", &h.token)]).into())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        last = Browser::default();
        last.keep(&r);
    }
    assert_eq!(d.session_count(), 2);
    // Another token fills the last place; a third is refused, and no one was signed out.
    let (_, admin) = h.token_with_role("secrets_store_admin").await;
    let (_, reader) = h.token_with_role("secrets_store_reporter").await;
    let sign_in = |token: &str| {
        Browser::default()
            .request(Method::POST, "/dashboard/sign-in")
            .body(crate::support::form(&[("token", token)]).into())
            .unwrap()
    };
    assert_eq!(
        send(&app, sign_in(&admin)).await.status,
        StatusCode::SEE_OTHER
    );
    let refused = send(&app, sign_in(&reader)).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        refused.body.contains("keeps at most 3 sessions"),
        "{}",
        refused.body
    );
    assert!(refused.set_cookie().is_none());
    assert_eq!(d.session_count(), 3);
    let still = send(
        &app,
        last.request(Method::GET, "/dashboard/stores")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        still.status,
        StatusCode::OK,
        "the first token's session lives on"
    );
    // An account at its own cap is refused with 429 (its quota, not the server's outage).
    let (d, app) = mounted(
        &h,
        DashboardOptions {
            sessions: SessionLimits {
                per_account: 1,
                ..SessionLimits::default()
            },
            ..Default::default()
        },
    );
    assert_eq!(
        send(&app, sign_in(&admin)).await.status,
        StatusCode::SEE_OTHER
    );
    let refused = send(&app, sign_in(&reader)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.body.contains("the most it may"), "{}", refused.body);
    assert_eq!(d.session_count(), 1);
}
