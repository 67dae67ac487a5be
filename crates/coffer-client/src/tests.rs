//! Unit tests: envelope decoding, and each method's request against a one-shot HTTP responder.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;

use super::*;

const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";
const STORE: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SECRET: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn store_json() -> serde_json::Value {
    serde_json::json!({"id": STORE, "name": "s", "created": "2025-01-01T00:00:00Z",
        "modified": "2025-01-01T00:00:00Z"})
}

fn secret_json() -> serde_json::Value {
    serde_json::json!({"id": SECRET, "store_id": STORE, "name": "n", "comment": "",
        "scopes": ["workers"], "status": "active", "created": "2025-01-01T00:00:00Z",
        "modified": "2025-01-01T00:00:00Z"})
}

fn account_json(secrets_quota: Option<u64>) -> serde_json::Value {
    serde_json::json!({"id": ACCOUNT, "name": "default", "created": "2025-01-01T00:00:00Z",
        "secrets_quota": secrets_quota})
}

fn ok(result: serde_json::Value) -> String {
    serde_json::json!({"success": true, "errors": [], "messages": [], "result": result}).to_string()
}

fn ok_page(result: serde_json::Value) -> String {
    serde_json::json!({"success": true, "errors": [], "messages": [], "result": result,
        "result_info": {"page": 1, "per_page": 20, "count": 1, "total_count": 1}})
    .to_string()
}

/// What the responder saw.
#[derive(Debug)]
struct Seen {
    request_line: String,
    headers: String,
    body: String,
}

/// Serves one HTTP/1.1 request on a fresh loopback port with `status` and `body`, and returns
/// the request it saw.
fn respond_once(status: u16, body: String) -> (String, JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = conn.read(&mut chunk).unwrap();
            assert!(n > 0, "client closed before sending headers");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let length = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let n = conn.read(&mut chunk).unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        }
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(response.as_bytes()).unwrap();
        let (request_line, headers) = head.split_once("\r\n").unwrap();
        Seen {
            request_line: request_line.to_owned(),
            headers: headers.to_ascii_lowercase(),
            body: String::from_utf8(buf[head_end..].to_vec()).unwrap(),
        }
    });
    (url, handle)
}

fn client(url: &str) -> Client {
    Client::new(url, "coffer_tok", ACCOUNT).unwrap()
}

const PREFIX: &str = "/client/v4/accounts/0123456789abcdef0123456789abcdef/secrets_store";

#[tokio::test]
async fn create_store_posts_name_with_bearer_token() {
    let (url, seen) = respond_once(200, ok(store_json()));
    // A wrangler-style base URL works too.
    let store = client(&format!("{url}/client/v4/"))
        .create_store("s")
        .await
        .unwrap();
    assert_eq!(store.id, STORE);
    let seen = seen.join().unwrap();
    assert_eq!(seen.request_line, format!("POST {PREFIX}/stores HTTP/1.1"));
    assert!(seen.headers.contains("authorization: bearer coffer_tok"));
    assert!(seen.headers.contains("content-type: application/json"));
    assert_eq!(seen.body, r#"{"name":"s"}"#);
}

#[tokio::test]
async fn list_stores_sends_only_given_parameters() {
    let (url, seen) = respond_once(200, ok_page(serde_json::json!([store_json()])));
    let page = client(&url)
        .list_stores(
            Some(2),
            None,
            Some(StoreOrder::Created),
            Some(Direction::Desc),
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.result_info.total_count, 1);
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET {PREFIX}/stores?page=2&order=created&direction=desc HTTP/1.1")
    );

    let (url, seen) = respond_once(200, ok_page(serde_json::json!([])));
    let page = client(&url)
        .list_stores(None, None, None, None)
        .await
        .unwrap();
    assert!(page.items.is_empty());
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET {PREFIX}/stores HTTP/1.1")
    );
}

#[tokio::test]
async fn list_without_result_info_is_a_decode_error() {
    let (url, seen) = respond_once(200, ok(serde_json::json!([])));
    let err = client(&url)
        .list_stores(None, None, None, None)
        .await
        .unwrap_err();
    seen.join().unwrap();
    assert!(matches!(err, Error::Decode { status: 200, .. }), "{err:?}");
}

#[tokio::test]
async fn list_secrets_joins_scopes_and_encodes_search() {
    let (url, seen) = respond_once(200, ok_page(serde_json::json!([secret_json()])));
    let params = ListSecrets {
        per_page: Some(5),
        search: Some("a b&c".into()),
        scopes: Some(vec!["workers".into(), "ai_gateway".into()]),
        order: Some(SecretOrder::Name),
        ..ListSecrets::default()
    };
    let page = client(&url).list_secrets(STORE, &params).await.unwrap();
    assert_eq!(page.items[0].scopes, ["workers"]);
    assert_eq!(
        seen.join().unwrap().request_line,
        format!(
            "GET {PREFIX}/stores/{STORE}/secrets?per_page=5&order=name&search=a+b%26c\
             &scopes=workers%2Cai_gateway HTTP/1.1"
        )
    );
}

#[tokio::test]
async fn create_secrets_sends_an_array_and_returns_it() {
    let (url, seen) = respond_once(200, ok(serde_json::json!([secret_json()])));
    let created = client(&url)
        .create_secrets(
            STORE,
            vec![CreateSecret {
                name: "n".into(),
                value: SecretValue::new("v1".into()),
                scopes: vec!["workers".into()],
                comment: None,
            }],
        )
        .await
        .unwrap();
    assert_eq!(created.len(), 1);
    let seen = seen.join().unwrap();
    assert_eq!(
        seen.request_line,
        format!("POST {PREFIX}/stores/{STORE}/secrets HTTP/1.1")
    );
    assert_eq!(
        seen.body,
        r#"[{"name":"n","value":"v1","scopes":["workers"]}]"#
    );
}

#[tokio::test]
async fn deletes_accept_null_results() {
    let (url, seen) = respond_once(200, ok(serde_json::Value::Null));
    client(&url).delete_store(STORE, true).await.unwrap();
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("DELETE {PREFIX}/stores/{STORE}?force=true HTTP/1.1")
    );

    let (url, seen) = respond_once(200, ok(serde_json::Value::Null));
    client(&url).delete_store(STORE, false).await.unwrap();
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("DELETE {PREFIX}/stores/{STORE} HTTP/1.1")
    );

    let (url, seen) = respond_once(200, ok(serde_json::Value::Null));
    client(&url)
        .bulk_delete_secrets(STORE, vec![SECRET.into(), "c".repeat(32)])
        .await
        .unwrap();
    let seen = seen.join().unwrap();
    assert_eq!(
        seen.request_line,
        format!("DELETE {PREFIX}/stores/{STORE}/secrets HTTP/1.1")
    );
    assert_eq!(seen.body, format!(r#"["{SECRET}","{}"]"#, "c".repeat(32)));

    let (url, seen) = respond_once(200, ok(serde_json::Value::Null));
    client(&url).delete_secret(STORE, SECRET).await.unwrap();
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("DELETE {PREFIX}/stores/{STORE}/secrets/{SECRET} HTTP/1.1")
    );
}

#[tokio::test]
async fn update_sends_only_given_fields() {
    let (url, seen) = respond_once(200, ok(secret_json()));
    let update = UpdateSecret {
        comment: Some("c".into()),
        ..UpdateSecret::default()
    };
    client(&url)
        .update_secret(STORE, SECRET, update)
        .await
        .unwrap();
    let seen = seen.join().unwrap();
    assert_eq!(
        seen.request_line,
        format!("PATCH {PREFIX}/stores/{STORE}/secrets/{SECRET} HTTP/1.1")
    );
    assert_eq!(seen.body, r#"{"comment":"c"}"#);
}

#[tokio::test]
async fn duplicate_get_and_quota_hit_their_paths() {
    let (url, seen) = respond_once(200, ok(secret_json()));
    let dup = DuplicateSecret {
        name: "copy".into(),
        scopes: vec!["workers".into()],
        comment: None,
    };
    client(&url)
        .duplicate_secret(STORE, SECRET, dup)
        .await
        .unwrap();
    let seen = seen.join().unwrap();
    assert_eq!(
        seen.request_line,
        format!("POST {PREFIX}/stores/{STORE}/secrets/{SECRET}/duplicate HTTP/1.1")
    );
    assert_eq!(seen.body, r#"{"name":"copy","scopes":["workers"]}"#);

    let (url, seen) = respond_once(200, ok(secret_json()));
    client(&url).get_secret(STORE, SECRET).await.unwrap();
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET {PREFIX}/stores/{STORE}/secrets/{SECRET} HTTP/1.1")
    );

    let (url, seen) = respond_once(200, ok(store_json()));
    client(&url).get_store(STORE).await.unwrap();
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET {PREFIX}/stores/{STORE} HTTP/1.1")
    );

    let (url, seen) = respond_once(
        200,
        ok(serde_json::json!({"secrets": {"quota": 100, "usage": 3}})),
    );
    let quota = client(&url).quota().await.unwrap();
    assert_eq!((quota.secrets.quota, quota.secrets.usage), (100, 3));
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET {PREFIX}/quota HTTP/1.1")
    );
}

#[tokio::test]
async fn account_routes_are_the_account_path_itself() {
    let account_path = "/client/v4/accounts/0123456789abcdef0123456789abcdef";
    assert_eq!(PREFIX, format!("{account_path}/secrets_store"));

    let (url, seen) = respond_once(200, ok(account_json(None)));
    let account = client(&url).get_account().await.unwrap();
    assert_eq!(account.id, ACCOUNT);
    assert_eq!(account.secrets_quota, None);
    let seen = seen.join().unwrap();
    assert_eq!(seen.request_line, format!("GET {account_path} HTTP/1.1"));
    assert!(seen.headers.contains("authorization: bearer coffer_tok"));
    assert_eq!(seen.body, "");
}

#[tokio::test]
async fn set_secrets_quota_sends_a_number_or_null() {
    let account_path = "/client/v4/accounts/0123456789abcdef0123456789abcdef";

    let (url, seen) = respond_once(200, ok(account_json(Some(3))));
    // The account path is built from the normalised root, whatever base URL was given.
    let account = client(&format!("{url}/client/v4/"))
        .set_secrets_quota(Some(3))
        .await
        .unwrap();
    assert_eq!(account.secrets_quota, Some(3));
    let seen = seen.join().unwrap();
    assert_eq!(seen.request_line, format!("PATCH {account_path} HTTP/1.1"));
    assert!(seen.headers.contains("content-type: application/json"));
    assert_eq!(seen.body, r#"{"secrets_quota":3}"#);

    let (url, seen) = respond_once(200, ok(account_json(None)));
    let account = client(&url).set_secrets_quota(None).await.unwrap();
    assert_eq!(account.secrets_quota, None);
    let seen = seen.join().unwrap();
    assert_eq!(seen.request_line, format!("PATCH {account_path} HTTP/1.1"));
    assert_eq!(seen.body, r#"{"secrets_quota":null}"#);
}

#[tokio::test]
async fn a_refused_quota_change_is_an_api_error() {
    let body = serde_json::json!({"success": false, "result": null, "messages": [],
        "errors": [{"code": 1101, "message": "not allowed"}]});
    let (url, seen) = respond_once(403, body.to_string());
    let err = client(&url).set_secrets_quota(Some(1)).await.unwrap_err();
    seen.join().unwrap();
    assert_eq!((err.status(), err.api_code()), (Some(403), Some(1101)));
    assert!(err.to_string().starts_with("[1101 forbidden] "), "{err}");
}

#[tokio::test]
async fn ids_cannot_escape_their_path_segment() {
    let (url, seen) = respond_once(200, ok(store_json()));
    client(&url).get_store("../../x").await.unwrap();
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET {PREFIX}/stores/..%2F..%2Fx HTTP/1.1")
    );
}

#[tokio::test]
async fn healthz_is_outside_the_api_prefix() {
    let (url, seen) = respond_once(200, "ok".into());
    client(&format!("{url}/client/v4")).healthz().await.unwrap();
    assert_eq!(seen.join().unwrap().request_line, "GET /healthz HTTP/1.1");
}

#[tokio::test]
async fn api_errors_carry_status_code_and_every_message() {
    let body = serde_json::json!({"success": false, "result": null, "messages": [],
        "errors": [{"code": 1301, "message": "taken"}, {"code": 1005, "message": "bad"}]});
    let (url, seen) = respond_once(409, body.to_string());
    let err = client(&url).create_store("s").await.unwrap_err();
    seen.join().unwrap();
    match &err {
        Error::Api {
            status,
            code,
            message,
            errors,
        } => {
            assert_eq!((*status, *code, message.as_str()), (409, 1301, "taken"));
            assert_eq!(errors.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "[1301 secret_name_taken] taken (and 1 more error)"
    );
    assert_eq!(err.api_code(), Some(1301));
    assert_eq!(err.status(), Some(409));
}

#[tokio::test]
async fn non_envelope_bodies_are_decode_errors_with_a_snippet() {
    let (url, seen) = respond_once(502, format!("<html>Bad gateway{}</html>", "!".repeat(500)));
    let err = client(&url).quota().await.unwrap_err();
    seen.join().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::Decode { status: 502, .. }), "{err:?}");
    assert!(msg.contains("HTTP 502"), "{msg}");
    assert!(msg.contains("<html>Bad gateway"), "{msg}");
    assert!(msg.len() < 300, "snippet not truncated: {msg}");
}

#[tokio::test]
async fn a_result_of_the_wrong_shape_is_a_decode_error() {
    let (url, seen) = respond_once(200, ok(serde_json::json!({"id": 5})));
    let err = client(&url).get_store(STORE).await.unwrap_err();
    seen.join().unwrap();
    assert!(matches!(err, Error::Decode { status: 200, .. }), "{err:?}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf).unwrap();
        conn.write_all(
            b"HTTP/1.1 307 X\r\nlocation: https://elsewhere.example/\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap();
    });
    let err = client(&url).create_store("s").await.unwrap_err();
    handle.join().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("https://elsewhere.example/"), "{msg}");
    assert_eq!(err.status(), Some(307));
}

#[tokio::test]
async fn connection_refused_names_the_url() {
    let url = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let err = client(&format!("{url}/")).quota().await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot reach {url}: connection refused")
    );
}

#[test]
fn decode_treats_success_false_on_200_as_an_api_error() {
    let body = br#"{"success": false, "errors": [], "messages": [], "result": null}"#;
    let err = decode::<serde_json::Value>(200, body).unwrap_err();
    assert!(matches!(err, Error::Api { code: 0, .. }), "{err:?}");
    assert!(err.to_string().contains("HTTP 200"));
}

#[test]
fn debug_never_shows_the_token() {
    let c = Client::new("http://h:1", "coffer_topsecret", ACCOUNT).unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("topsecret"), "{dbg}");
    assert!(dbg.contains("[redacted]"));
    let b = Client::builder("http://h:1", "coffer_topsecret", ACCOUNT);
    assert!(!format!("{b:?}").contains("topsecret"));
}

#[test]
fn tokens_that_cannot_be_headers_are_refused_without_echo() {
    let err = Client::new("http://h:1", "bad\ntoken", ACCOUNT).unwrap_err();
    assert!(matches!(err, Error::InvalidToken));
    assert!(!err.to_string().contains("bad"));
}

#[test]
fn root_ca_problems_name_the_file() {
    let err = Client::builder("https://h:1", "t", ACCOUNT)
        .root_ca_pem("/nonexistent/ca.pem")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");

    let dir = std::env::temp_dir().join(format!("coffer-client-ca-{}", std::process::id()));
    std::fs::write(&dir, "not a certificate").unwrap();
    let err = Client::builder("https://h:1", "t", ACCOUNT)
        .root_ca_pem(&dir)
        .build()
        .unwrap_err();
    std::fs::remove_file(&dir).unwrap();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
}

#[tokio::test]
async fn https_to_a_plain_http_server_suggests_http() {
    // A plain HTTP server answers a TLS ClientHello with an HTTP error.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let https = format!("https://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf).unwrap();
        let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
    });
    let err = client(&https).get_store(STORE).await.unwrap_err();
    handle.join().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(msg.starts_with(&format!("cannot reach {https}: ")), "{msg}");
    assert!(msg.contains("try http://"), "{msg}");
}

// ---- accounts of the instance and API tokens ----

const OTHER_ACCOUNT: &str = "cccccccccccccccccccccccccccccccc";
const TOKEN: &str = "dddddddddddddddddddddddddddddddd";
const TOKEN_VALUE: &str = "coffer_dddddddddddddddddddddddddddddddd_s3cr3tV4lue";

fn token_json(status: &str) -> serde_json::Value {
    serde_json::json!({"id": TOKEN, "name": "ci", "role": "secrets_store_reporter",
        "status": status, "issued_on": "2025-01-01T00:00:00Z",
        "expires_on": "2025-02-01T00:00:00Z", "last_used_on": null, "operator": false,
        "revoked_on": if status == "revoked" { Some("2025-01-02T00:00:00Z") } else { None }})
}

fn created_token_json() -> serde_json::Value {
    let mut v = token_json("active");
    v["value"] = TOKEN_VALUE.into();
    v
}

#[tokio::test]
async fn account_admin_acts_on_the_instance_not_on_the_own_account() {
    let (url, seen) = respond_once(200, ok(account_json(None)));
    let account = client(&format!("{url}/client/v4/"))
        .create_account("team-b")
        .await
        .unwrap();
    assert_eq!(account.id, ACCOUNT);
    let seen = seen.join().unwrap();
    assert_eq!(seen.request_line, "POST /client/v4/accounts HTTP/1.1");
    assert!(seen.headers.contains("authorization: bearer coffer_tok"));
    assert!(seen.headers.contains("content-type: application/json"));
    assert_eq!(seen.body, r#"{"name":"team-b"}"#);

    let (url, seen) = respond_once(200, ok_page(serde_json::json!([account_json(Some(9))])));
    let page = client(&url).list_accounts().await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].secrets_quota, Some(9));
    assert_eq!(page.result_info.total_count, 1);
    let seen = seen.join().unwrap();
    assert_eq!(seen.request_line, "GET /client/v4/accounts HTTP/1.1");
    assert_eq!(seen.body, "");

    // The id in the path is the account to delete, not the client's own.
    let (url, seen) = respond_once(200, ok(serde_json::Value::Null));
    client(&url).delete_account(OTHER_ACCOUNT).await.unwrap();
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("DELETE /client/v4/accounts/{OTHER_ACCOUNT} HTTP/1.1")
    );

    let (url, seen) = respond_once(200, ok(serde_json::Value::Null));
    client(&url).delete_account("../x").await.unwrap();
    assert_eq!(
        seen.join().unwrap().request_line,
        "DELETE /client/v4/accounts/..%2Fx HTTP/1.1"
    );
}

#[tokio::test]
async fn a_refused_account_create_is_an_api_error() {
    let body = serde_json::json!({"success": false, "result": null, "messages": [],
        "errors": [{"code": 1101, "message": "missing permission instance:operator"}]});
    let (url, seen) = respond_once(403, body.to_string());
    let err = client(&url).create_account("x").await.unwrap_err();
    seen.join().unwrap();
    assert_eq!((err.status(), err.api_code()), (Some(403), Some(1101)));
    assert_eq!(
        err.to_string(),
        "[1101 forbidden] missing permission instance:operator"
    );
}

#[tokio::test]
async fn create_token_sends_name_role_and_expiry_and_redacts_the_value() {
    let account_path = format!("/client/v4/accounts/{ACCOUNT}");
    let (url, seen) = respond_once(200, ok(created_token_json()));
    let created = client(&url)
        .create_token(
            "ci",
            "secrets_store_reporter",
            Some("2025-02-01T00:00:00Z".to_owned()),
        )
        .await
        .unwrap();
    let seen = seen.join().unwrap();
    assert_eq!(
        seen.request_line,
        format!("POST {account_path}/tokens HTTP/1.1")
    );
    assert!(seen.headers.contains("content-type: application/json"));
    assert_eq!(
        seen.body,
        r#"{"name":"ci","role":"secrets_store_reporter","expires_on":"2025-02-01T00:00:00Z"}"#
    );
    assert_eq!(created.token.id, TOKEN);
    assert_eq!(created.token.status, "active");
    assert_eq!(
        created.token.expires_on.as_deref(),
        Some("2025-02-01T00:00:00Z")
    );
    assert_eq!(created.value.expose_secret(), TOKEN_VALUE);
    let dbg = format!("{created:?}");
    assert!(!dbg.contains("s3cr3tV4lue"), "{dbg}");
    assert!(dbg.contains("[redacted]"), "{dbg}");

    // No expiry: the field is not sent at all.
    let (url, seen) = respond_once(200, ok(created_token_json()));
    client(&url)
        .create_token("ci", "super_admin", None)
        .await
        .unwrap();
    assert_eq!(
        seen.join().unwrap().body,
        r#"{"name":"ci","role":"super_admin"}"#
    );
}

#[tokio::test]
async fn a_body_is_taken_over_not_copied() {
    // The buffer the answer arrived in is the one returned: no unwiped copy of a new token's
    // answer is left behind when it is wrapped to be wiped on drop.
    let sent = ok(created_token_json()).into_bytes();
    let at = sent.as_ptr();
    let resp = reqwest::Response::from(http::Response::new(reqwest::Body::from(sent)));
    let body = read_body(resp).await.unwrap();
    assert_eq!(body.as_ptr(), at);
    assert_eq!(body, ok(created_token_json()).into_bytes());
}

#[tokio::test]
async fn a_created_token_never_reaches_an_error() {
    // A result of the wrong shape, a truncated body and a body that is not JSON at all: each
    // holds the value, and no error (message or Debug) repeats it.
    let mut wrong_shape = created_token_json();
    wrong_shape["id"] = 5.into();
    let full = ok(created_token_json());
    let bodies = [
        (200, ok(wrong_shape)),
        (200, full[..full.len() - 10].to_owned()),
        (200, format!("value={TOKEN_VALUE}")),
        (502, format!("<html>{TOKEN_VALUE}</html>")),
        (
            200,
            serde_json::json!({"success": true, "errors": [], "messages": [],
                "result": {"value": TOKEN_VALUE}})
            .to_string(),
        ),
    ];
    for (status, body) in bodies {
        let (url, seen) = respond_once(status, body.clone());
        let err = client(&url)
            .create_token("ci", "super_admin", None)
            .await
            .unwrap_err();
        seen.join().unwrap();
        assert!(matches!(err, Error::Decode { .. }), "{body}: {err:?}");
        assert_eq!(err.status(), Some(status));
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("s3cr3tV4lue"), "{body}: {text}");
            assert!(text.contains("not shown"), "{body}: {text}");
        }
    }

    // An error envelope is still reported as the server put it.
    let body = serde_json::json!({"success": false, "result": null, "messages": [],
        "errors": [{"code": 1012, "message": "/role: unknown role"}]});
    let (url, seen) = respond_once(400, body.to_string());
    let err = client(&url)
        .create_token("ci", "reporter-typo", None)
        .await
        .unwrap_err();
    seen.join().unwrap();
    assert_eq!(err.to_string(), "[1012 invalid_role] /role: unknown role");
    // Even with a 200 status, `success: false` is an API error.
    let body = serde_json::json!({"success": false, "result": null, "messages": [],
        "errors": [{"code": 1013, "message": "/expires_on: in the past"}]});
    let (url, seen) = respond_once(200, body.to_string());
    let err = client(&url)
        .create_token("ci", "super_admin", Some("2000-01-01T00:00:00Z".into()))
        .await
        .unwrap_err();
    seen.join().unwrap();
    assert_eq!(err.api_code(), Some(1013));
    // And a success without a result is a decode error.
    let (url, seen) = respond_once(200, ok(serde_json::Value::Null));
    let err = client(&url)
        .create_token("ci", "super_admin", None)
        .await
        .unwrap_err();
    seen.join().unwrap();
    assert!(err.to_string().contains("no result"), "{err}");
}

#[tokio::test]
async fn token_list_get_and_revoke_hit_the_account_token_paths() {
    let tokens = format!("/client/v4/accounts/{ACCOUNT}/tokens");

    let (url, seen) = respond_once(200, ok_page(serde_json::json!([token_json("active")])));
    let page = client(&url).list_tokens().await.unwrap();
    assert_eq!(page.items[0].role, "secrets_store_reporter");
    assert_eq!(page.items[0].last_used_on, None);
    assert!(!page.items[0].operator);
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET {tokens} HTTP/1.1")
    );

    let (url, seen) = respond_once(200, ok(token_json("active")));
    let token = client(&url).get_token(TOKEN).await.unwrap();
    assert_eq!(token.id, TOKEN);
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET {tokens}/{TOKEN} HTTP/1.1")
    );

    let (url, seen) = respond_once(200, ok(token_json("revoked")));
    let token = client(&url).revoke_token(TOKEN).await.unwrap();
    assert_eq!(token.status, "revoked");
    assert_eq!(token.revoked_on.as_deref(), Some("2025-01-02T00:00:00Z"));
    let seen = seen.join().unwrap();
    assert_eq!(
        seen.request_line,
        format!("DELETE {tokens}/{TOKEN} HTTP/1.1")
    );
    assert_eq!(seen.body, "");

    let body = serde_json::json!({"success": false, "result": null, "messages": [],
        "errors": [{"code": 1304, "message": "the token is already revoked"}]});
    let (url, seen) = respond_once(409, body.to_string());
    let err = client(&url).revoke_token(TOKEN).await.unwrap_err();
    seen.join().unwrap();
    assert!(
        err.to_string().starts_with("[1304 token_already_revoked] "),
        "{err}"
    );

    let (url, seen) = respond_once(200, ok(token_json("active")));
    client(&url).get_token("a/b").await.unwrap();
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET {tokens}/a%2Fb HTTP/1.1")
    );
}

fn audit_entry_json() -> serde_json::Value {
    serde_json::json!({"seq": 7, "hash": "ab".repeat(32), "time": "2025-01-01T00:00:00Z",
        "account_id": ACCOUNT, "actor": {"token_id": TOKEN, "token_name": "init", "operator": true},
        "action": "create", "outcome": "success",
        "resource": {"type": "store", "store_id": STORE, "store_name": "prod"},
        "request_id": "req-1"})
}

#[tokio::test]
async fn list_audit_hits_the_account_path_and_sends_only_given_filters() {
    let audit = format!("/client/v4/accounts/{ACCOUNT}/audit_logs");

    let (url, seen) = respond_once(200, ok_page(serde_json::json!([audit_entry_json()])));
    let page = client(&url)
        .list_audit(&AuditFilter::default())
        .await
        .unwrap();
    let seen = seen.join().unwrap();
    assert_eq!(seen.request_line, format!("GET {audit} HTTP/1.1"));
    assert!(seen.headers.contains("authorization: bearer coffer_tok"));
    assert_eq!(page.result_info.total_count, 1);
    let entry = &page.items[0];
    assert_eq!(entry.seq, 7);
    assert_eq!(entry.hash, "ab".repeat(32));
    // Everything but seq and hash is the event, kept as the server sent it.
    assert_eq!(entry.event["actor"]["token_name"], "init");
    assert_eq!(entry.event["resource"]["store_name"], "prod");
    assert!(!entry.event.contains_key("seq"));

    let (url, seen) = respond_once(200, ok_page(serde_json::json!([])));
    let filter = AuditFilter {
        from: Some("2025-01-01T00:00:00+02:00".into()),
        to: Some("2025-01-02T00:00:00Z".into()),
        actor: Some(TOKEN.into()),
        action: Some("create".into()),
        outcome: Some("denied".into()),
        store_id: Some(STORE.into()),
        secret_id: Some(SECRET.into()),
        page: Some(2),
        per_page: Some(50),
        direction: Some(Direction::Asc),
    };
    let page = client(&url).list_audit(&filter).await.unwrap();
    assert!(page.items.is_empty());
    assert_eq!(
        seen.join().unwrap().request_line,
        format!(
            "GET {audit}?from=2025-01-01T00%3A00%3A00%2B02%3A00&to=2025-01-02T00%3A00%3A00Z\
             &actor={TOKEN}&action=create&outcome=denied&store_id={STORE}&secret_id={SECRET}\
             &page=2&per_page=50&direction=asc HTTP/1.1"
        )
    );

    // Text that is not a word still travels as one parameter (the server refuses it).
    let (url, seen) = respond_once(200, ok_page(serde_json::json!([])));
    let filter = AuditFilter {
        action: Some("a&b=c d".into()),
        ..AuditFilter::default()
    };
    client(&url).list_audit(&filter).await.unwrap();
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET {audit}?action=a%26b%3Dc+d HTTP/1.1")
    );
}

#[tokio::test]
async fn a_refused_audit_read_is_an_api_error() {
    let body = serde_json::json!({"success": false, "result": null, "messages": [],
        "errors": [{"code": 1101, "message": "this token may not do that"}]});
    let (url, seen) = respond_once(403, body.to_string());
    let err = client(&url)
        .list_audit(&AuditFilter::default())
        .await
        .unwrap_err();
    seen.join().unwrap();
    assert_eq!(err.api_code(), Some(1101));
    assert!(err.to_string().starts_with("[1101 forbidden] "), "{err}");
}

#[tokio::test]
async fn verify_audit_reads_a_good_and_a_broken_chain() {
    let verify = format!("/client/v4/accounts/{ACCOUNT}/audit_logs/verify");

    let good = serde_json::json!({"ok": true, "entries_checked": 12, "checkpoints_checked": 2,
        "head_seq": 12, "head_hash": "cd".repeat(32), "first_bad": null});
    let (url, seen) = respond_once(200, ok(good));
    let v = client(&url).verify_audit().await.unwrap();
    let seen = seen.join().unwrap();
    assert_eq!(seen.request_line, format!("GET {verify} HTTP/1.1"));
    assert_eq!(seen.body, "");
    assert_eq!(
        v,
        AuditVerification {
            ok: true,
            entries_checked: 12,
            checkpoints_checked: 2,
            head_seq: Some(12),
            head_hash: Some("cd".repeat(32)),
            first_bad: None,
        }
    );

    let bad = serde_json::json!({"ok": false, "entries_checked": 4, "checkpoints_checked": 0,
        "head_seq": null, "head_hash": null,
        "first_bad": {"seq": 3, "problem": "hash mismatch"}});
    let (url, seen) = respond_once(200, ok(bad));
    let v = client(&url).verify_audit().await.unwrap();
    seen.join().unwrap();
    assert!(!v.ok);
    assert_eq!(
        v.first_bad,
        Some(AuditProblem {
            seq: 3,
            problem: "hash mismatch".into()
        })
    );
    assert_eq!(v.head_seq, None);
}

const SERVICE: &str = "cccccccccccccccccccccccccccccccc";
const SERVICE_TOKEN_ID: &str = "dddddddddddddddddddddddddddddddd";
const SERVICE_TOKEN_VALUE: &str = "coffersvc_dddddddddddddddddddddddddddddddd_sv4lueZ";

fn service_json() -> serde_json::Value {
    serde_json::json!({"id": SERVICE, "name": "ai-gateway", "type": "workers",
        "secrets_store_secrets": [{"binding": "OPENAI_KEY", "store_id": STORE,
            "secret_name": "openai-key"}],
        "secrets_store_stores": [{"binding": "SHARED", "store_id": STORE}],
        "created": "2025-01-01T00:00:00Z", "modified": "2025-01-02T00:00:00Z"})
}

fn service_token_json(status: &str) -> serde_json::Value {
    let revoked = (status == "revoked").then_some("2025-01-02T00:00:00Z");
    serde_json::json!({"id": SERVICE_TOKEN_ID, "service_id": SERVICE, "status": status,
        "issued_on": "2025-01-01T00:00:00Z", "revoked_on": revoked})
}

fn deploy_body() -> DeployService {
    DeployService {
        name: "ai-gateway".into(),
        kind: Some("ai_gateway".into()),
        secrets_store_secrets: vec![SecretBinding {
            binding: "OPENAI_KEY".into(),
            store_id: STORE.into(),
            secret_name: "openai-key".into(),
        }],
        secrets_store_stores: vec![StoreBinding {
            binding: "SHARED".into(),
            store_id: STORE.into(),
        }],
    }
}

#[tokio::test]
async fn deploy_posts_the_bindings_and_reads_the_token_once() {
    let mut result = service_json();
    result["first_deploy"] = true.into();
    result["service_token"] = SERVICE_TOKEN_VALUE.into();
    let (url, seen) = respond_once(200, ok(result));
    let deployed = client(&url).deploy_service(&deploy_body()).await.unwrap();
    assert!(deployed.created);
    assert_eq!(deployed.service.id, SERVICE);
    assert_eq!(deployed.service.kind, "workers");
    assert_eq!(
        deployed.service.secrets_store_secrets[0].binding,
        "OPENAI_KEY"
    );
    assert_eq!(deployed.service.secrets_store_stores[0].binding, "SHARED");
    assert_eq!(
        deployed.service_token.as_ref().unwrap().expose_secret(),
        SERVICE_TOKEN_VALUE
    );
    assert!(!format!("{deployed:?}").contains("sv4lueZ"));
    let seen = seen.join().unwrap();
    assert_eq!(
        seen.request_line,
        format!("POST {PREFIX}/services HTTP/1.1")
    );
    assert!(seen.headers.contains("authorization: bearer coffer_tok"));
    let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"name": "ai-gateway", "type": "ai_gateway",
            "secrets_store_secrets": [{"binding": "OPENAI_KEY", "store_id": STORE,
                "secret_name": "openai-key"}],
            "secrets_store_stores": [{"binding": "SHARED", "store_id": STORE}]})
    );

    // A redeploy: no token, and no `type` sent when none is given.
    let mut result = service_json();
    result["first_deploy"] = false.into();
    let (url, seen) = respond_once(200, ok(result));
    let deploy = DeployService {
        kind: None,
        secrets_store_stores: vec![],
        ..deploy_body()
    };
    let deployed = client(&url).deploy_service(&deploy).await.unwrap();
    assert!(!deployed.created);
    assert!(deployed.service_token.is_none());
    let body: serde_json::Value = serde_json::from_str(&seen.join().unwrap().body).unwrap();
    assert!(body.get("type").is_none(), "{body}");
    assert_eq!(body["secrets_store_stores"], serde_json::json!([]));
}

#[tokio::test]
async fn a_refused_deploy_is_an_api_error_and_a_bad_answer_never_shows_the_token() {
    let body = serde_json::json!({"success": false, "result": null, "messages": [],
        "errors": [{"code": 10021, "message": "binding OPENAI_KEY: secret \"openai-key\" does \
            not carry the scope \"workers\""}]});
    let (url, seen) = respond_once(403, body.to_string());
    let err = client(&url)
        .deploy_service(&deploy_body())
        .await
        .unwrap_err();
    seen.join().unwrap();
    assert_eq!(err.api_code(), Some(10021));
    assert!(
        err.to_string()
            .starts_with("[10021 binding_authorization_failed] binding OPENAI_KEY: "),
        "{err}"
    );

    let mut wrong = service_json();
    wrong["service_token"] = SERVICE_TOKEN_VALUE.into();
    wrong["first_deploy"] = "yes".into();
    let (url, seen) = respond_once(200, ok(wrong));
    let err = client(&url)
        .deploy_service(&deploy_body())
        .await
        .unwrap_err();
    seen.join().unwrap();
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("sv4lueZ"), "{text}");
        assert!(text.contains("not shown"), "{text}");
    }

    let mut wrong = service_token_json("active");
    wrong["service_token"] = SERVICE_TOKEN_VALUE.into();
    let (url, seen) = respond_once(200, format!("{}xx", ok(wrong)));
    let err = client(&url)
        .rotate_service_token(SERVICE, true)
        .await
        .unwrap_err();
    seen.join().unwrap();
    assert!(!format!("{err} {err:?}").contains("sv4lueZ"), "{err:?}");
}

#[tokio::test]
async fn service_list_get_and_delete_hit_the_service_paths() {
    let (url, seen) = respond_once(200, ok_page(serde_json::json!([service_json()])));
    let params = ListServices {
        name: Some("ai gateway&x".into()),
        per_page: Some(5),
        ..ListServices::default()
    };
    let page = client(&url).list_services(&params).await.unwrap();
    assert_eq!(page.items[0].name, "ai-gateway");
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET {PREFIX}/services?per_page=5&name=ai+gateway%26x HTTP/1.1")
    );
    let (url, seen) = respond_once(200, ok_page(serde_json::json!([])));
    client(&url)
        .list_services(&ListServices::default())
        .await
        .unwrap();
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET {PREFIX}/services HTTP/1.1")
    );

    let (url, seen) = respond_once(200, ok(service_json()));
    let service = client(&url).get_service(SERVICE).await.unwrap();
    assert_eq!(service.secrets_store_secrets.len(), 1);
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET {PREFIX}/services/{SERVICE} HTTP/1.1")
    );

    let (url, seen) = respond_once(200, ok(serde_json::Value::Null));
    client(&url).delete_service(SERVICE).await.unwrap();
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("DELETE {PREFIX}/services/{SERVICE} HTTP/1.1")
    );

    let body = serde_json::json!({"success": false, "result": null, "messages": [],
        "errors": [{"code": 1206, "message": "no such service"}]});
    let (url, seen) = respond_once(404, body.to_string());
    let err = client(&url).get_service("a/b").await.unwrap_err();
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET {PREFIX}/services/a%2Fb HTTP/1.1")
    );
    assert_eq!(err.to_string(), "[1206 service_not_found] no such service");
}

#[tokio::test]
async fn service_tokens_are_listed_rotated_and_revoked() {
    let tokens = format!("{PREFIX}/services/{SERVICE}/tokens");

    let (url, seen) = respond_once(
        200,
        ok_page(serde_json::json!([service_token_json("active")])),
    );
    let page = client(&url).list_service_tokens(SERVICE).await.unwrap();
    assert_eq!(page.items[0].status, "active");
    assert_eq!(page.items[0].revoked_on, None);
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET {tokens} HTTP/1.1")
    );

    for (revoke_previous, sent) in [
        (true, r#"{"revoke_previous":true}"#),
        (false, r#"{"revoke_previous":false}"#),
    ] {
        let mut result = service_token_json("active");
        result["service_token"] = SERVICE_TOKEN_VALUE.into();
        result["revoked"] = serde_json::json!([service_token_json("revoked")]);
        let (url, seen) = respond_once(200, ok(result));
        let rotated = client(&url)
            .rotate_service_token(SERVICE, revoke_previous)
            .await
            .unwrap();
        assert_eq!(rotated.service_token.expose_secret(), SERVICE_TOKEN_VALUE);
        assert_eq!(rotated.token.id, SERVICE_TOKEN_ID);
        assert_eq!(rotated.revoked[0].status, "revoked");
        assert!(!format!("{rotated:?}").contains("sv4lueZ"));
        let seen = seen.join().unwrap();
        assert_eq!(seen.request_line, format!("POST {tokens} HTTP/1.1"));
        assert_eq!(seen.body, sent);
    }

    let (url, seen) = respond_once(200, ok(serde_json::json!([service_token_json("revoked")])));
    let revoked = client(&url).revoke_service_tokens(SERVICE).await.unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("DELETE {tokens} HTTP/1.1")
    );
    let (url, seen) = respond_once(200, ok(serde_json::Value::Null));
    assert!(
        client(&url)
            .revoke_service_tokens(SERVICE)
            .await
            .unwrap()
            .is_empty()
    );
    seen.join().unwrap();

    let (url, seen) = respond_once(
        200,
        ok_page(serde_json::json!([service_token_json("revoked")])),
    );
    let revoked = client(&url)
        .revoke_service_token(SERVICE, SERVICE_TOKEN_ID)
        .await
        .unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].status, "revoked");
    let seen = seen.join().unwrap();
    assert_eq!(
        seen.request_line,
        format!("DELETE {tokens}/{SERVICE_TOKEN_ID} HTTP/1.1")
    );
    assert_eq!(seen.body, "");
    // Nothing to revoke: an empty list.
    let (url, seen) = respond_once(200, ok_page(serde_json::json!([])));
    assert!(
        client(&url)
            .revoke_service_token(SERVICE, SERVICE_TOKEN_ID)
            .await
            .unwrap()
            .is_empty()
    );
    seen.join().unwrap();
}

const NODE: &str = "dddddddddddddddddddddddddddddddd";
const NODE_TOKEN: &str = "coffernode_dddddddddddddddddddddddddddddddd_n0d3s3cr3t";

fn node_json(revoked: Option<&str>) -> serde_json::Value {
    serde_json::json!({"id": NODE, "name": "edge-1", "created": "2025-01-01T00:00:00Z",
        "revoked": revoked})
}

#[tokio::test]
async fn node_methods_hit_the_instance_node_paths() {
    // Not under the account: nodes belong to the instance.
    let nodes = "/client/v4/nodes";

    let mut created = node_json(None);
    created["node_token"] = NODE_TOKEN.into();
    let (url, seen) = respond_once(200, ok(created));
    let node = client(&url).create_node("edge-1").await.unwrap();
    let seen = seen.join().unwrap();
    assert_eq!(seen.request_line, format!("POST {nodes} HTTP/1.1"));
    assert!(seen.headers.contains("content-type: application/json"));
    assert_eq!(seen.body, r#"{"name":"edge-1"}"#);
    assert_eq!(node.node.id, NODE);
    assert_eq!(node.node.revoked, None);
    assert_eq!(node.node_token.expose_secret(), NODE_TOKEN);
    let dbg = format!("{node:?}");
    assert!(!dbg.contains("n0d3s3cr3t"), "{dbg}");

    let (url, seen) = respond_once(200, ok_page(serde_json::json!([node_json(None)])));
    let page = client(&url).list_nodes().await.unwrap();
    assert_eq!(
        page.items,
        vec![serde_json::from_value(node_json(None)).unwrap()]
    );
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET {nodes} HTTP/1.1")
    );

    let (url, seen) = respond_once(200, ok(node_json(None)));
    assert_eq!(client(&url).get_node(NODE).await.unwrap().name, "edge-1");
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET {nodes}/{NODE} HTTP/1.1")
    );

    let (url, seen) = respond_once(200, ok(node_json(Some("2025-01-02T00:00:00Z"))));
    let revoked = client(&url).revoke_node(NODE).await.unwrap();
    assert_eq!(revoked.revoked.as_deref(), Some("2025-01-02T00:00:00Z"));
    let seen = seen.join().unwrap();
    assert_eq!(seen.request_line, format!("DELETE {nodes}/{NODE} HTTP/1.1"));
    assert_eq!(seen.body, "");

    let body = serde_json::json!({"success": false, "result": null, "messages": [],
        "errors": [{"code": 1306, "message": "a node named \"edge-1\" already exists"}]});
    let (url, seen) = respond_once(409, body.to_string());
    let err = client(&url).create_node("edge-1").await.unwrap_err();
    seen.join().unwrap();
    assert!(
        err.to_string().starts_with("[1306 node_name_taken] "),
        "{err}"
    );
}

#[tokio::test]
async fn a_created_node_token_never_reaches_an_error() {
    let mut wrong_shape = node_json(None);
    wrong_shape["node_token"] = NODE_TOKEN.into();
    wrong_shape["id"] = 5.into();
    for (status, body) in [
        (200, ok(wrong_shape)),
        (200, format!("token={NODE_TOKEN}")),
        (502, format!("<html>{NODE_TOKEN}</html>")),
    ] {
        let (url, seen) = respond_once(status, body.clone());
        let err = client(&url).create_node("edge-1").await.unwrap_err();
        seen.join().unwrap();
        assert!(matches!(err, Error::Decode { .. }), "{body}: {err:?}");
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("n0d3s3cr3t"), "{body}: {text}");
            assert!(text.contains("node token"), "{body}: {text}");
        }
    }
}

#[tokio::test]
async fn verify_and_memberships_are_outside_the_account() {
    let account = serde_json::json!({"id": ACCOUNT, "name": "default", "type": "standard",
        "created_on": "2025-01-01T00:00:00Z"});
    let verified = serde_json::json!({"id": STORE, "status": "active", "name": "ci",
        "role": "super_admin", "operator": false, "account": account});
    let (url, seen) = respond_once(200, ok(verified));
    // The account in the client plays no part: these describe the token.
    let t = Client::new(&url, "coffer_tok", "").unwrap();
    let v = t.verify_token().await.unwrap();
    assert_eq!((v.name.as_str(), v.expires_on), ("ci", None));
    assert_eq!(v.account.id, ACCOUNT);
    let seen = seen.join().unwrap();
    assert_eq!(
        seen.request_line,
        "GET /client/v4/user/tokens/verify HTTP/1.1"
    );
    assert!(seen.headers.contains("authorization: bearer coffer_tok"));

    let membership = serde_json::json!({"id": STORE, "account": account, "status": "accepted",
        "roles": ["Secrets Store Admin"],
        "permissions": {"secrets_store": {"read": true, "write": true}}});
    let (url, seen) = respond_once(200, ok_page(serde_json::json!([membership])));
    let page = Client::new(&url, "coffer_tok", "")
        .unwrap()
        .memberships(Some(2))
        .await
        .unwrap();
    assert_eq!(page.items[0].account.name, "default");
    assert!(page.items[0].permissions["secrets_store"].write);
    assert_eq!(
        seen.join().unwrap().request_line,
        "GET /client/v4/memberships?page=2 HTTP/1.1"
    );

    // Another account on the same connection.
    let (url, seen) = respond_once(200, ok(account_json(None)));
    let other = Client::new(&url, "coffer_tok", "")
        .unwrap()
        .with_account(ACCOUNT);
    assert_eq!(other.account_id(), ACCOUNT);
    other.get_account().await.unwrap();
    assert_eq!(
        seen.join().unwrap().request_line,
        format!("GET /client/v4/accounts/{ACCOUNT} HTTP/1.1")
    );
}
