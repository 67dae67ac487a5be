//! `/client/v4/accounts/{account_id}/tokens`: create (the value shown once), list, get, revoke,
//! expiry, last-used times, and bad input.

use std::time::{Duration, Instant};

use axum::http::{Method, header};
use coffer_api::ErrorCode;
use coffer_types::Timestamp;
use serde_json::{Value, json};

use crate::permissions::{Ids, routes};
use crate::support::*;

const TOKEN_FIELDS: [&str; 9] = [
    "id",
    "name",
    "role",
    "status",
    "issued_on",
    "expires_on",
    "last_used_on",
    "revoked_on",
    "operator",
];

fn sorted(keys: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut k: Vec<String> = keys.into_iter().collect();
    k.sort();
    k
}

/// A token's metadata: exactly the documented fields, well formed.
#[track_caller]
fn assert_token_shape(t: &Value) {
    let expected = sorted(TOKEN_FIELDS.map(str::to_owned));
    assert_eq!(
        sorted(t.as_object().expect("object").keys().cloned()),
        expected,
        "{t}"
    );
    assert_hex_id(&t["id"]);
    assert!(ROLES.contains(&t["role"].as_str().unwrap()), "{t}");
    assert!(
        matches!(t["status"].as_str(), Some("active" | "revoked" | "expired")),
        "{t}"
    );
    timestamp(&t["issued_on"]);
    for k in ["expires_on", "last_used_on", "revoked_on"] {
        if !t[k].is_null() {
            timestamp(&t[k]);
        }
    }
}

/// `coffer_<32 lowercase hex: the token id>_<43 base64url characters>`.
#[track_caller]
fn assert_value_shape(value: &str, id: &str) {
    let rest = value.strip_prefix("coffer_").expect("coffer_ prefix");
    let (hex, secret) = rest.split_at(32);
    assert_eq!(hex, id, "the value carries the token's id");
    let secret = secret.strip_prefix('_').expect("_ separator");
    assert_eq!(secret.len(), 43, "{value}");
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "base64url: {secret}"
    );
}

async fn post_token(h: &Harness, account: &str, body: &Value) -> Resp {
    h.json_abs(Method::POST, &tokens_uri(account, None), body)
        .await
}

async fn get_token(h: &Harness, account: &str, id: &str) -> Resp {
    h.raw_abs(Method::GET, &tokens_uri(account, Some(id)), None, "")
        .await
}

async fn revoke(h: &Harness, account: &str, id: &str) -> Resp {
    h.raw_abs(Method::DELETE, &tokens_uri(account, Some(id)), None, "")
        .await
}

async fn list_tokens(h: &Harness, account: &str) -> Vec<Value> {
    let r = h
        .raw_abs(Method::GET, &tokens_uri(account, None), None, "")
        .await;
    assert_ok_list(&r).0
}

/// A request as `token` that any role may make.
async fn use_token(h: &Harness, token: &str) -> Resp {
    h.get_as(token, &h.api("/stores")).await
}

#[tokio::test]
async fn the_value_is_shown_once_and_authenticates() {
    let h = Harness::new().await;
    let r = post_token(
        &h,
        &h.account,
        &json!({ "name": "ci deploy", "role": "secrets_store_deployer" }),
    )
    .await;
    let created = assert_ok(&r);
    let value = created["value"].as_str().unwrap().to_owned();
    let mut meta = created.clone();
    meta.as_object_mut().unwrap().remove("value");
    assert_token_shape(&meta);
    let id = meta["id"].as_str().unwrap().to_owned();
    assert_value_shape(&value, &id);
    assert_eq!(meta["name"], json!("ci deploy"));
    assert_eq!(meta["role"], json!("secrets_store_deployer"));
    assert_eq!(meta["status"], json!("active"));
    assert_eq!(meta["expires_on"], Value::Null);
    assert_eq!(meta["last_used_on"], Value::Null);
    assert_eq!(meta["revoked_on"], Value::Null);
    let issued = timestamp(&meta["issued_on"]);
    assert!(issued <= Timestamp::now());

    // It authenticates, as the role it was given.
    assert_ok_list(&use_token(&h, &value).await);
    let r = h
        .send_as(
            Method::POST,
            &h.api("/stores"),
            Some(&format!("Bearer {value}")),
            Some(&json!({ "name": "nope" })),
        )
        .await;
    assert_err(&r, ErrorCode::Forbidden, "secrets_store:edit");

    // list, get and revoke carry the metadata and never the value.
    let listed = list_tokens(&h, &h.account).await;
    let mine = listed
        .iter()
        .find(|t| t["id"] == json!(id))
        .expect("listed");
    assert_token_shape(mine);
    for t in &listed {
        assert_token_shape(t);
    }
    let got = assert_ok(&get_token(&h, &h.account, &id).await);
    assert_token_shape(&got);
    assert_eq!(got["name"], json!("ci deploy"));
    assert_eq!(got["issued_on"], meta["issued_on"]);
    let revoked = assert_ok(&revoke(&h, &h.account, &id).await);
    assert_token_shape(&revoked);

    // The secret part was in exactly one response: the create.
    let secret = &value["coffer_".len() + 33..];
    let transcript = h.transcript();
    let times = transcript
        .windows(secret.len())
        .filter(|w| *w == secret.as_bytes())
        .count();
    assert_eq!(times, 1, "the token's value appeared in {times} responses");
}

#[tokio::test]
async fn list_holds_every_token_of_the_account_only() {
    let h = Harness::new().await;
    let b = h.create_account("b").await;
    let mut made = Vec::new();
    for role in ROLES {
        made.push(
            h.issue_token(&h.account, &format!("t-{role}"), role)
                .await
                .id,
        );
    }
    let in_b = h.issue_token(&b, "b-token", "super_admin").await;
    let listed = list_tokens(&h, &h.account).await;
    let ids: Vec<&str> = listed.iter().map(|t| t["id"].as_str().unwrap()).collect();
    for id in &made {
        assert!(ids.contains(&id.as_str()), "{id} missing from {ids:?}");
    }
    assert!(!ids.contains(&in_b.id.as_str()), "B's token listed in A");
    // The operator token counts among A's tokens: the four made plus it.
    assert_eq!(listed.len(), 5, "{listed:?}");
    // Ordered by creation: the operator's first, then the four in the order made.
    assert_eq!(listed[0]["id"].as_str(), Some(&h.token[7..39]));
    for ((t, id), role) in listed[1..].iter().zip(&made).zip(ROLES) {
        assert_eq!(t["id"], json!(id));
        assert_eq!(t["role"], json!(role));
        assert_eq!(t["name"], json!(format!("t-{role}")));
        assert_eq!(t["status"], json!("active"));
    }
    let in_b_list = list_tokens(&h, &b).await;
    assert_eq!(in_b_list.len(), 1);
    assert_eq!(in_b_list[0]["id"], json!(in_b.id));

    // A super_admin of the account sees the same list; it is metadata only.
    let sa = h.issue_token(&h.account, "sa", "super_admin").await;
    let r = h.get_as(&sa.value, &tokens_uri(&h.account, None)).await;
    let (items, info) = assert_ok_list(&r);
    assert_eq!(items.len(), 6);
    assert_eq!(info.3, 6);
    for t in &items {
        assert_token_shape(t);
    }
    assert!(!contains(&r.bytes, sa.value.as_bytes()));
    assert!(!contains(&r.bytes, h.token.as_bytes()));
}

#[tokio::test]
async fn revocation_takes_effect_on_the_next_request() {
    let h = Harness::new().await;
    let t = h
        .issue_token(&h.account, "short-lived", "secrets_store_admin")
        .await;
    assert_ok_list(&use_token(&h, &t.value).await);

    let r = revoke(&h, &h.account, &t.id).await;
    let revoked = assert_ok(&r);
    assert_eq!(revoked["id"], json!(t.id));
    assert_eq!(revoked["status"], json!("revoked"));
    let revoked_on = timestamp(&revoked["revoked_on"]);
    assert!(revoked_on >= timestamp(&revoked["issued_on"]));
    assert!(revoked.get("value").is_none());
    assert!(!contains(&r.bytes, t.value.as_bytes()));

    let r = use_token(&h, &t.value).await;
    assert_err(&r, ErrorCode::Unauthenticated, "revoked");
    assert_eq!(
        r.headers
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap()),
        Some("Bearer")
    );
    // Everywhere, not only on the secrets store.
    let r = h.get_as(&t.value, &account_uri(&h.account)).await;
    assert_err(&r, ErrorCode::Unauthenticated, "");

    // The record stays, as revoked.
    let got = assert_ok(&get_token(&h, &h.account, &t.id).await);
    assert_eq!(got["status"], json!("revoked"));
    assert_eq!(got["revoked_on"], revoked["revoked_on"]);

    // Revoking again: 409, and the first revocation time stays.
    let before = h.identity_snapshot().await;
    let head = h.change_head().await;
    let r = revoke(&h, &h.account, &t.id).await;
    assert_err(&r, ErrorCode::TokenAlreadyRevoked, "revoked");
    assert_eq!(
        r.headers.get("x-should-retry").map(|v| v.to_str().unwrap()),
        Some("false")
    );
    assert_eq!(h.identity_snapshot().await, before);
    assert_eq!(h.change_head().await, head);
    let got = assert_ok(&get_token(&h, &h.account, &t.id).await);
    assert_eq!(got["revoked_on"], revoked["revoked_on"]);
}

#[tokio::test]
async fn a_token_may_revoke_itself() {
    let h = Harness::new().await;
    let sa = h.issue_token(&h.account, "self", "super_admin").await;
    let r = h
        .send_as(
            Method::DELETE,
            &tokens_uri(&h.account, Some(&sa.id)),
            Some(&sa.bearer()),
            None,
        )
        .await;
    assert_eq!(assert_ok(&r)["status"], json!("revoked"));
    assert_err(
        &use_token(&h, &sa.value).await,
        ErrorCode::Unauthenticated,
        "revoked",
    );
}

#[tokio::test]
async fn unknown_and_foreign_token_ids_are_not_found() {
    let h = Harness::new().await;
    let b = h.create_account("b").await;
    let in_b = h.issue_token(&b, "b-token", "super_admin").await;
    let a_admin = h.issue_token(&h.account, "a-admin", "super_admin").await;
    let before = h.identity_snapshot().await;

    for id in [random_id(), in_b.id.clone()] {
        // The operator and A's own super_admin, both on A's tokens path.
        for auth in [h.bearer(), a_admin.bearer()] {
            for method in [Method::GET, Method::DELETE] {
                let r = h
                    .send_as(
                        method.clone(),
                        &tokens_uri(&h.account, Some(&id)),
                        Some(&auth),
                        None,
                    )
                    .await;
                assert_err(&r, ErrorCode::TokenNotFound, "token");
                assert_eq!(r.json()["errors"][0]["message"], json!("token not found"));
            }
        }
    }
    // A's super_admin on B's path: the account itself is not there for it.
    for method in [Method::GET, Method::DELETE] {
        let r = h
            .send_as(
                method,
                &tokens_uri(&b, Some(&in_b.id)),
                Some(&a_admin.bearer()),
                None,
            )
            .await;
        assert_err(&r, ErrorCode::AccountNotFound, "account");
    }
    assert_eq!(h.identity_snapshot().await, before);
    // B's token was touched by none of it.
    let r = h.get_as(&in_b.value, &tokens_uri(&b, Some(&in_b.id))).await;
    assert_eq!(assert_ok(&r)["status"], json!("active"));

    // A malformed id is a bad request, not a lookup.
    for bad in ["xyz", &random_id().to_uppercase(), &random_id()[..31]] {
        let r = get_token(&h, &h.account, bad).await;
        assert_err_at(&r, ErrorCode::InvalidId, "token_id");
    }
}

#[tokio::test]
async fn the_operator_makes_tokens_in_any_account() {
    let h = Harness::new().await;
    let b = h.create_account("b").await;
    let first = h.issue_token(&b, "first admin", "super_admin").await;
    // B's first super_admin manages B's tokens itself.
    let r = h
        .send_as(
            Method::POST,
            &tokens_uri(&b, None),
            Some(&first.bearer()),
            Some(&json!({ "name": "reporter", "role": "secrets_store_reporter" })),
        )
        .await;
    let reporter = assert_ok(&r);
    assert_eq!(reporter["role"], json!("secrets_store_reporter"));
    let value = reporter["value"].as_str().unwrap();
    let r = h
        .get_as(value, &format!("{V4}/{b}/secrets_store/stores"))
        .await;
    assert_ok_list(&r);
    // A token made by a super_admin is no operator: it manages nothing outside its account.
    let r = h
        .send_as(
            Method::POST,
            V4,
            Some(&first.bearer()),
            Some(&json!({ "name": "c" })),
        )
        .await;
    assert_err(&r, ErrorCode::Forbidden, "instance:operator");
}

#[tokio::test]
async fn expiry_in_the_past_or_unparseable_is_refused() {
    let h = Harness::new().await;
    let before = h.identity_snapshot().await;
    let past = Timestamp::now().plus_seconds(-60).to_rfc3339();
    let cases = [
        json!(past),
        json!("1970-01-01T00:00:00Z"),
        json!("tomorrow"),
        json!("2030-01-01"),
        json!("2030-13-01T00:00:00Z"),
        json!("2030-01-01 00:00:00"),
        json!(""),
    ];
    for expires in cases {
        let body = json!({ "name": "n", "role": "super_admin", "expires_on": expires });
        let r = post_token(&h, &h.account, &body).await;
        assert_err_at(&r, ErrorCode::InvalidExpiry, "/expires_on");
        assert!(!contains(&r.bytes, b"coffer_"), "{expires}: {}", r.text());
    }
    // A wrong type is a field error.
    let r = post_token(
        &h,
        &h.account,
        &json!({ "name": "n", "role": "super_admin", "expires_on": 1_900_000_000 }),
    )
    .await;
    assert_err_at(&r, ErrorCode::InvalidField, "/expires_on");
    assert_eq!(h.identity_snapshot().await, before);
}

/// An expiry is rendered back as given (in UTC). One past 9999-12-31T23:59:59Z (reachable
/// through a negative offset) cannot be rendered: it must be refused, not shown as 1970.
#[tokio::test]
async fn expiry_round_trips_or_is_refused() {
    let h = Harness::new().await;
    for (given, shown) in [
        ("2030-01-01t00:00:00z", "2030-01-01T00:00:00Z"),
        ("2030-01-01T05:30:00.25+05:30", "2030-01-01T00:00:00.25Z"),
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
    ] {
        let body = json!({ "name": "n", "role": "super_admin", "expires_on": given });
        let r = post_token(&h, &h.account, &body).await;
        assert_eq!(assert_ok(&r)["expires_on"], json!(shown), "{given}");
    }
    let before = h.identity_snapshot().await;
    let body = json!({ "name": "n", "role": "super_admin",
                       "expires_on": "9999-12-31T23:59:59-23:59" });
    let r = post_token(&h, &h.account, &body).await;
    assert!(
        !contains(&r.bytes, b"1970-01-01"),
        "an expiry in the year 10000 is shown as 1970: {}",
        r.text()
    );
    assert_err_at(&r, ErrorCode::InvalidExpiry, "/expires_on");
    assert_eq!(h.identity_snapshot().await, before);
}

#[tokio::test]
async fn a_token_stops_working_when_it_expires() {
    let h = Harness::new().await;
    let expires = Timestamp::now().plus_seconds(1);
    let r = post_token(
        &h,
        &h.account,
        &json!({ "name": "brief", "role": "secrets_store_reporter",
                 "expires_on": expires.to_rfc3339() }),
    )
    .await;
    let created = assert_ok(&r);
    assert_eq!(timestamp(&created["expires_on"]), expires);
    assert_eq!(created["status"], json!("active"));
    let value = created["value"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let first = use_token(&h, &value).await;
    assert!(
        first.status.is_success() || Timestamp::now() >= expires,
        "{}",
        first.text()
    );

    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = use_token(&h, &value).await;
        if !r.status.is_success() {
            assert!(Timestamp::now() >= expires, "refused before its expiry");
            assert_err(&r, ErrorCode::Unauthenticated, "expired");
            break;
        }
        assert!(Instant::now() < deadline, "still accepted after its expiry");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = assert_ok(&get_token(&h, &h.account, &id).await);
    assert_eq!(got["status"], json!("expired"));
    assert_forgery_is_invalid(&h, &id).await;
    // An expired token can still be revoked (it is a record like any other).
    let r = revoke(&h, &h.account, &id).await;
    assert_eq!(assert_ok(&r)["status"], json!("revoked"));
}

#[tokio::test]
async fn unknown_roles_are_refused_naming_the_known_ones() {
    let h = Harness::new().await;
    let before = h.identity_snapshot().await;
    for role in [
        json!("admin"),
        json!("Super_Admin"),
        json!("super_admin "),
        json!(""),
        json!("operator"),
    ] {
        let r = post_token(&h, &h.account, &json!({ "name": "n", "role": role })).await;
        let e = assert_err_at(&r, ErrorCode::InvalidRole, "/role");
        let message = e["message"].as_str().unwrap();
        for known in ROLES {
            assert!(message.contains(known), "{message} should name {known}");
        }
    }
    for body in [
        json!({ "name": "n" }),
        json!({ "name": "n", "role": 1 }),
        json!({ "name": "n", "role": ["super_admin"] }),
    ] {
        let r = post_token(&h, &h.account, &body).await;
        assert_err(&r, ErrorCode::InvalidField, "role");
    }
    let r = post_token(
        &h,
        &h.account,
        &json!({ "name": "n", "role": "super_admin", "operator": true }),
    )
    .await;
    assert_err(&r, ErrorCode::InvalidField, "operator");
    assert_eq!(h.identity_snapshot().await, before);
}

#[tokio::test]
async fn bad_token_names_are_refused() {
    let h = Harness::new().await;
    let before = h.identity_snapshot().await;
    for name in [
        String::new(),
        "   ".into(),
        "a\u{0}b".into(),
        "line\nbreak".into(),
        "tab\there".into(),
        "esc\u{1b}[31m".into(),
        "del\u{7f}".into(),
        "x".repeat(256),
    ] {
        let r = post_token(
            &h,
            &h.account,
            &json!({ "name": name, "role": "super_admin" }),
        )
        .await;
        assert_err_at(&r, ErrorCode::InvalidName, "/name");
    }
    let r = post_token(&h, &h.account, &json!({ "role": "super_admin" })).await;
    assert_err(&r, ErrorCode::InvalidField, "name");
    assert_eq!(h.identity_snapshot().await, before);
    // The longest name and non-ASCII text are fine.
    for name in ["x".repeat(255), "déploiement – prod".to_owned()] {
        let r = post_token(
            &h,
            &h.account,
            &json!({ "name": name, "role": "super_admin" }),
        )
        .await;
        assert_eq!(assert_ok(&r)["name"], json!(name));
    }
}

#[tokio::test]
async fn last_used_is_null_until_used_then_set_at_once() {
    let h = Harness::new().await;
    let t = h
        .issue_token(&h.account, "watched", "secrets_store_reporter")
        .await;
    let got = assert_ok(&get_token(&h, &h.account, &t.id).await);
    assert_eq!(got["last_used_on"], Value::Null);

    // A failed attempt with the token's id but a wrong secret is no use.
    let forged = format!("coffer_{}_{}", t.id, "A".repeat(43));
    assert_err(
        &use_token(&h, &forged).await,
        ErrorCode::Unauthenticated,
        "invalid API token",
    );
    let got = assert_ok(&get_token(&h, &h.account, &t.id).await);
    assert_eq!(got["last_used_on"], Value::Null);

    let before_use = Timestamp::now();
    assert_ok_list(&use_token(&h, &t.value).await);
    // Shown right away, by get and by list, before any flush.
    let got = assert_ok(&get_token(&h, &h.account, &t.id).await);
    let used = timestamp(&got["last_used_on"]);
    assert!(used >= before_use && used <= Timestamp::now(), "{got}");
    let listed = list_tokens(&h, &h.account).await;
    let entry = listed.iter().find(|x| x["id"] == json!(t.id)).unwrap();
    assert_eq!(entry["last_used_on"], got["last_used_on"]);

    // Written by the flush, and still the same afterwards; a later use moves it forward.
    h.coffer.flush_token_usage().await.unwrap();
    let got = assert_ok(&get_token(&h, &h.account, &t.id).await);
    assert_eq!(timestamp(&got["last_used_on"]), used);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_ok_list(&use_token(&h, &t.value).await);
    let later = timestamp(&assert_ok(&get_token(&h, &h.account, &t.id).await)["last_used_on"]);
    assert!(later > used);
    h.coffer.flush_token_usage().await.unwrap();
    let flushed = timestamp(&assert_ok(&get_token(&h, &h.account, &t.id).await)["last_used_on"]);
    assert_eq!(flushed, later);

    // A revoked token's failed attempts do not count as uses.
    assert_ok(&revoke(&h, &h.account, &t.id).await);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_err(
        &use_token(&h, &t.value).await,
        ErrorCode::Unauthenticated,
        "revoked",
    );
    let got = assert_ok(&get_token(&h, &h.account, &t.id).await);
    assert_eq!(timestamp(&got["last_used_on"]), later);
}

/// Extends `auth.rs` to the identity endpoints and to tokens made through the API: every
/// route refuses bad credentials with 401, and a revoked or expired token's id with a wrong
/// secret is "invalid", never "revoked" (the state of a token is no oracle for a forger).
#[tokio::test]
async fn bad_credentials_on_identity_routes_and_api_tokens() {
    let h = Harness::new().await;
    let t = h.issue_token(&h.account, "api", "super_admin").await;
    let (id, secret) = (&t.value[..39], &t.value[40..]);
    let mut upper = t.value.clone();
    upper.replace_range(7..39, &t.id.to_uppercase());
    // The secret's last character changed to one that is not canonical base64url for 32 bytes.
    let last = secret.as_bytes()[42];
    let non_canonical = format!(
        "{id}_{}{}",
        &secret[..42],
        if last == b'B' { 'C' } else { 'B' }
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("basic", Some(format!("Basic {}", t.value))),
        ("token scheme", Some(format!("Token {}", t.value))),
        ("tab separator", Some(format!("Bearer\t{}", t.value))),
        ("no scheme", Some(t.value.clone())),
        ("upper-case id", Some(format!("Bearer {upper}"))),
        (
            "other prefix",
            Some(format!("Bearer cofer_{}", &t.value[7..])),
        ),
        ("missing separator", Some(format!("Bearer {id}{secret}"))),
        (
            "short secret",
            Some(format!("Bearer {id}_{}", &secret[1..])),
        ),
        ("long secret", Some(format!("Bearer {}A", t.value))),
        (
            "non-canonical secret",
            Some(format!("Bearer {non_canonical}")),
        ),
        (
            "padding",
            Some(format!("Bearer {}=", &t.value[..t.value.len() - 1])),
        ),
        ("quoted", Some(format!("Bearer \"{}\"", t.value))),
    ];
    let before = h.identity_snapshot().await;
    let a = Ids::random(&h.account);
    let a = Ids {
        t: t.id.clone(),
        ..a
    };
    for route in routes() {
        for (what, auth) in &cases {
            let r = route.call(&h, &a, auth.as_deref()).await;
            eprintln!("case: {} with {what}", route.name);
            assert_err(&r, ErrorCode::Unauthenticated, "");
            assert!(
                !contains(&r.bytes, secret.as_bytes()),
                "{} with {what}: echoed the token",
                route.name
            );
        }
    }
    assert_eq!(h.identity_snapshot().await, before);
    // The token is fine after all that.
    assert_ok_list(&use_token(&h, &t.value).await);

    // A forged secret on a revoked token's id says "invalid", like any forgery (the expired
    // case is in `a_token_stops_working_when_it_expires`).
    assert_ok(&revoke(&h, &h.account, &t.id).await);
    assert_forgery_is_invalid(&h, &t.id).await;
}

/// A forged secret on `id` is "invalid API token", saying nothing of the token's state.
async fn assert_forgery_is_invalid(h: &Harness, id: &str) {
    let forged = format!("coffer_{id}_{}", "A".repeat(43));
    let r = use_token(h, &forged).await;
    let e = assert_err(&r, ErrorCode::Unauthenticated, "invalid API token");
    let m = e["message"].as_str().unwrap();
    assert!(!m.contains("revoked") && !m.contains("expired"), "{m}");
}

/// The operator token lives in account A; A's super_admin sees it among A's tokens but cannot
/// revoke it: that would lock the instance out (no API call makes another operator token), the
/// very reason the operator's account cannot be deleted.
#[tokio::test]
async fn a_super_admin_cannot_revoke_the_operator_token() {
    let h = Harness::new().await;
    let sa = h.issue_token(&h.account, "sa", "super_admin").await;
    let operator_id = h.token["coffer_".len().."coffer_".len() + 32].to_owned();
    let before = h.identity_snapshot().await;
    let r = h
        .send_as(
            Method::DELETE,
            &tokens_uri(&h.account, Some(&operator_id)),
            Some(&sa.bearer()),
            None,
        )
        .await;
    let refused = r.status.as_u16() == 403;
    // Whatever it answered, the operator must still be able to work.
    let still_works = use_token(&h, &h.token).await.status.is_success();
    assert!(
        refused && still_works,
        "A's super_admin revoked the operator token (answer {}; operator token works after: \
         {still_works})",
        r.text()
    );
    assert_err(&r, ErrorCode::Forbidden, "instance:operator");
    assert_eq!(h.identity_snapshot().await, before);
}

#[tokio::test]
async fn the_operator_cannot_revoke_its_own_token() {
    let h = Harness::new().await;
    let operator_id = h.token["coffer_".len().."coffer_".len() + 32].to_owned();
    let before = h.identity_snapshot().await;
    let r = h
        .send_as(
            Method::DELETE,
            &tokens_uri(&h.account, Some(&operator_id)),
            Some(&h.bearer()),
            None,
        )
        .await;
    assert_err(
        &r,
        ErrorCode::OperatorProtected,
        "operator token cannot be revoked",
    );
    assert!(use_token(&h, &h.token).await.status.is_success());
    assert_eq!(h.identity_snapshot().await, before);
}
