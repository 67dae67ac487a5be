//! Authentication on every endpoint, and accounts the token does not reach.

use axum::http::header;
use coffer_api::ErrorCode;

use crate::support::*;

/// A token of the right shape (`coffer_<32 hex id>_<43 base64url>`) that was never issued.
fn unknown_token() -> String {
    format!("coffer_{}_{}", random_id(), "A".repeat(43))
}

#[tokio::test]
async fn bad_credentials_are_401_on_every_endpoint() {
    let fx = fixture().await;
    let h = &fx.h;
    let (a, s, x) = (h.account.clone(), fx.store.clone(), fx.secret.clone());
    // The real token with its secret part replaced: right id, wrong secret.
    let prefix = &h.token[.."coffer_".len() + 33];
    let forged = format!("{prefix}{}", "A".repeat(43));
    assert_ne!(forged, h.token);
    let truncated = h.token[..h.token.len() - 1].to_owned();
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("empty", Some(String::new())),
        ("basic scheme", Some(format!("Basic {}", h.token))),
        ("token without scheme", Some(h.token.clone())),
        ("scheme only", Some("Bearer".into())),
        ("scheme and blank", Some("Bearer   ".into())),
        ("malformed token", Some("Bearer not-a-token".into())),
        ("truncated token", Some(format!("Bearer {truncated}"))),
        ("token with extra", Some(format!("Bearer {}x", h.token))),
        ("unknown token", Some(format!("Bearer {}", unknown_token()))),
        ("forged secret", Some(format!("Bearer {forged}"))),
        (
            "two tokens",
            Some(format!("Bearer {} {}", h.token, h.token)),
        ),
    ];
    let before = h.snapshot().await;
    for ep in all_endpoints() {
        for (what, auth) in &cases {
            eprintln!("case: {} with {what}", ep.name);
            let r = h
                .call_as(&ep, &ep.uri(&a, &s, &x), &x, auth.as_deref())
                .await;
            assert_err(&r, ErrorCode::Unauthenticated, "");
            assert_eq!(
                r.headers
                    .get(header::WWW_AUTHENTICATE)
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "WWW-Authenticate"
            );
            assert!(
                !contains(&r.bytes, h.token.as_bytes()) && !contains(&r.bytes, forged.as_bytes()),
                "the token was echoed: {}",
                r.text()
            );
        }
    }
    h.assert_unchanged(&before, "bad credentials").await;
}

#[tokio::test]
async fn messages_say_what_is_wrong_with_the_credentials() {
    let fx = fixture().await;
    let h = &fx.h;
    let uri = h.api("/stores");
    let ep = &all_endpoints()[0];
    let r = h.call_as(ep, &uri, "", None).await;
    assert_err(&r, ErrorCode::Unauthenticated, "Authorization");
    let r = h.call_as(ep, &uri, "", Some("Basic abc")).await;
    assert_err(&r, ErrorCode::Unauthenticated, "Bearer");
    let r = h
        .call_as(ep, &uri, "", Some(&format!("Bearer {}", unknown_token())))
        .await;
    assert_err(&r, ErrorCode::Unauthenticated, "invalid API token");
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let h = Harness::new().await;
    let ep = &all_endpoints()[0];
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = h
            .call_as(
                ep,
                &h.api("/stores"),
                "",
                Some(&format!("{scheme} {}", h.token)),
            )
            .await;
        assert_ok_list(&r);
    }
}

/// The instance's token used on an account that does not exist: 404 account_not_found on every
/// endpoint, and nothing written.
#[tokio::test]
async fn another_account_is_not_found_on_every_endpoint() {
    let fx = fixture().await;
    let h = &fx.h;
    let before = h.snapshot().await;
    let other = random_id();
    assert_ne!(other, h.account);
    for ep in all_endpoints() {
        for (s, x) in [
            (fx.store.clone(), fx.secret.clone()),
            (random_id(), random_id()),
        ] {
            eprintln!("case: {} on another account", ep.name);
            let r = h.call(&ep, &other, &s, &x).await;
            assert_err(&r, ErrorCode::AccountNotFound, "account");
        }
    }
    h.assert_unchanged(&before, "another account").await;
}

/// Two instances: one's token means nothing to the other.
#[tokio::test]
async fn a_token_of_another_instance_is_refused() {
    let h1 = Harness::new().await;
    let h2 = Harness::new().await;
    let ep = &all_endpoints()[0];
    let r = h2
        .call_as(ep, &h2.api("/stores"), "", Some(&h1.bearer()))
        .await;
    assert_err(&r, ErrorCode::Unauthenticated, "");
    let r = h1
        .call_as(ep, &h1.api("/stores"), "", Some(&h2.bearer()))
        .await;
    assert_err(&r, ErrorCode::Unauthenticated, "");
}
