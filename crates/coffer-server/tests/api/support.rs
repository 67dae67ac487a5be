//! The test harness: a fresh data dir per test (and, on PostgreSQL, a database of its own), the
//! router called in-process with `oneshot`, and assertions over the v4 envelope.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use coffer_api::ErrorCode;
use coffer_core::{Coffer, Limits};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub use crate::backend::{Backend, Backing, SqliteOnly, backend};

pub const V4: &str = "/client/v4/accounts";

/// One instance: its data dir, the domain service, the router and the operator token.
pub struct Harness {
    /// Held so the directory lives as long as the harness.
    _dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub coffer: Arc<Coffer>,
    pub app: Router,
    pub token: String,
    pub account: String,
    /// Every response's headers and body, for secrecy checks.
    transcript: Mutex<Vec<u8>>,
    /// Last, so that the service (and its connections) goes before its database.
    pub backing: Backing,
}

/// The router over `coffer` set up as `options` say, as a server sets it up (on PostgreSQL,
/// `/healthz` covers the database, as the storage says).
pub fn app(coffer: Arc<Coffer>, options: coffer_server::AppOptions) -> Router {
    coffer_server::app_with_options(coffer, options)
}

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Resp {
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!(
                "response ({}) is not JSON: {e}: {}",
                self.status,
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// A random, well-formed 32-hex id that names nothing.
pub fn random_id() -> String {
    hex::encode(coffer_crypto::random_array::<16>())
}

/// A short random suffix for distinctive test values.
pub fn random_tag() -> String {
    hex::encode(coffer_crypto::random_array::<8>())
}

pub fn secret_item(name: &str, value: &str, scopes: &[&str]) -> Value {
    json!({ "name": name, "value": value, "scopes": scopes })
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::with_limits(Limits::default()).await
    }

    pub async fn with_limits(limits: Limits) -> Harness {
        Harness::with_options(limits, coffer_server::KeyOptions::default()).await
    }

    /// An instance whose keys are handled as `keys` says (DEK refresh, KEK rewrap pace).
    pub async fn with_keys(keys: coffer_server::KeyOptions) -> Harness {
        Harness::with_options(Limits::default(), keys).await
    }

    async fn with_options(limits: Limits, keys: coffer_server::KeyOptions) -> Harness {
        let backing = Backing::new().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let init = backing.init(&data_dir).await;
        let coffer = Arc::new(backing.open(&data_dir, limits, keys).await.coffer);
        Harness {
            _dir: dir,
            data_dir,
            app: app(coffer.clone(), coffer_server::AppOptions::default()),
            coffer,
            token: init.api_token.expose_secret().to_owned(),
            account: init.account_id.to_string(),
            transcript: Mutex::new(Vec::new()),
            backing,
        }
    }

    pub fn limits(quota: u64, max_stores: u64) -> Limits {
        Limits {
            default_secrets_quota: quota,
            max_stores,
        }
    }

    /// The full path of `rel` under this account's `secrets_store`.
    pub fn api(&self, rel: &str) -> String {
        format!("{V4}/{}/secrets_store{rel}", self.account)
    }

    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// A request builder with this instance's token.
    pub fn request(&self, method: Method, uri: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, self.bearer())
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let res = self.app.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res
            .into_body()
            .collect()
            .await
            .expect("response body")
            .to_bytes()
            .to_vec();
        let mut t = self.transcript.lock().unwrap();
        for (name, value) in &headers {
            t.extend_from_slice(name.as_str().as_bytes());
            t.extend_from_slice(b": ");
            t.extend_from_slice(value.as_bytes());
            t.push(b'\n');
        }
        t.extend_from_slice(&bytes);
        t.push(b'\n');
        Resp {
            status,
            headers,
            bytes,
        }
    }

    /// Everything every response so far carried (headers and bodies).
    pub fn transcript(&self) -> Vec<u8> {
        self.transcript.lock().unwrap().clone()
    }

    /// `method` on an absolute URI with a raw body.
    pub async fn raw_abs(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Resp {
        let mut b = self.request(method, uri);
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        self.send(b.body(body.into()).unwrap()).await
    }

    /// Every entry of `account`'s audit log, oldest first (all pages, as this harness's
    /// token), and the raw response bodies.
    pub async fn audit_entries_all(&self, account: &str) -> (Vec<Value>, Vec<u8>) {
        let mut out = Vec::new();
        let mut raw = Vec::new();
        for page in 1.. {
            let r = self
                .raw_abs(
                    Method::GET,
                    &format!("{V4}/{account}/audit_logs?direction=asc&per_page=100&page={page}"),
                    None,
                    "",
                )
                .await;
            raw.extend_from_slice(&r.bytes);
            let (items, (_, _, _, total)) = assert_ok_list(&r);
            let done = items.is_empty();
            out.extend(items);
            if done || out.len() as u64 >= total {
                break;
            }
        }
        (out, raw)
    }

    /// `method` on `rel` (under the account's secrets_store) with a raw body.
    pub async fn raw(
        &self,
        method: Method,
        rel: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Resp {
        self.raw_abs(method, &self.api(rel), content_type, body)
            .await
    }

    pub async fn json_abs(&self, method: Method, uri: &str, body: &Value) -> Resp {
        self.raw_abs(
            method,
            uri,
            Some("application/json"),
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    pub async fn json(&self, method: Method, rel: &str, body: &Value) -> Resp {
        self.json_abs(method, &self.api(rel), body).await
    }

    pub async fn get(&self, rel: &str) -> Resp {
        self.raw(Method::GET, rel, None, Body::empty()).await
    }

    pub async fn delete(&self, rel: &str) -> Resp {
        self.raw(Method::DELETE, rel, None, Body::empty()).await
    }

    pub async fn post(&self, rel: &str, body: &Value) -> Resp {
        self.json(Method::POST, rel, body).await
    }

    pub async fn patch(&self, rel: &str, body: &Value) -> Resp {
        self.json(Method::PATCH, rel, body).await
    }

    // ---- fixtures ----

    pub async fn create_store(&self, name: &str) -> String {
        let r = self.post("/stores", &json!({ "name": name })).await;
        assert_ok(&r)["id"].as_str().unwrap().to_owned()
    }

    /// Creates secrets and returns their wire objects.
    pub async fn create_secrets(&self, store: &str, items: &[Value]) -> Vec<Value> {
        let r = self
            .post(
                &format!("/stores/{store}/secrets"),
                &Value::Array(items.to_vec()),
            )
            .await;
        assert_ok(&r).as_array().unwrap().clone()
    }

    pub async fn create_secret(&self, store: &str, name: &str, value: &str) -> Value {
        self.create_secrets(store, &[secret_item(name, value, &["workers"])])
            .await
            .remove(0)
    }

    pub async fn get_secret(&self, store: &str, id: &str) -> Value {
        assert_ok(&self.get(&format!("/stores/{store}/secrets/{id}")).await).clone()
    }

    /// `(quota, usage)`.
    pub async fn quota(&self) -> (u64, u64) {
        let r = self.get("/quota").await;
        let q = assert_ok(&r);
        (
            q["secrets"]["quota"].as_u64().unwrap(),
            q["secrets"]["usage"].as_u64().unwrap(),
        )
    }

    /// The names of a store's secrets on one listing page (`query` without the `?`).
    pub async fn secret_names(&self, store: &str, query: &str) -> Vec<String> {
        let r = self.get(&format!("/stores/{store}/secrets?{query}")).await;
        let (items, _) = assert_ok_list(&r);
        items
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn change_head(&self) -> u64 {
        self.coffer.storage().change_head().await.unwrap()
    }

    /// Everything observable about the account's data: the change log head, every store and
    /// every secret's metadata, and the quota.
    pub async fn snapshot(&self) -> Snapshot {
        let head = self.change_head().await;
        let stores = assert_ok_list(&self.get("/stores?per_page=100").await).0;
        let mut secrets = Vec::new();
        for s in &stores {
            let id = s["id"].as_str().unwrap();
            let r = self
                .get(&format!("/stores/{id}/secrets?per_page=100"))
                .await;
            secrets.push(assert_ok_list(&r).0);
        }
        let quota = self.quota().await;
        let services = self.services_state().await;
        Snapshot {
            head,
            stores,
            secrets,
            quota,
            services,
        }
    }

    /// Asserts nothing was written since `before`; `what` names the request in the failure.
    pub async fn assert_unchanged(&self, before: &Snapshot, what: &str) {
        let after = self.snapshot().await;
        assert_eq!(&after, before, "{what}: something was written");
    }

    /// Every file of the data dir, concatenated (database, WAL, shared memory, KEK).
    pub fn data_dir_bytes(&self) -> Vec<(PathBuf, Vec<u8>)> {
        read_dir_files(&self.data_dir)
    }

    /// Everything this instance keeps at rest, each part labelled: the data dir's files (on
    /// SQLite `coffer.db` and its WAL among them) and, on PostgreSQL, every table of its
    /// database as `table NAME`, its rows as `COPY ... (FORMAT binary)` writes them (text and
    /// bytea columns as their raw bytes, so a value stored in clear would show). Asserts that
    /// `known` (something stored, such as a secret's name) is in there, so that a check of
    /// what is absent cannot pass by looking at the wrong bytes.
    pub async fn at_rest_bytes(&self, known: &str) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = self
            .data_dir_bytes()
            .into_iter()
            .map(|(path, bytes)| (path.display().to_string(), bytes))
            .collect();
        if let Some(client) = self.backing.client().await {
            out.extend(dump_tables(&client).await);
        }
        assert!(
            out.iter()
                .any(|(_, bytes)| contains(bytes, known.as_bytes())),
            "{known:?} is not at rest: are these the right bytes? ({:?})",
            out.iter().map(|(label, _)| label).collect::<Vec<_>>()
        );
        out
    }
}

/// Every table of `client`'s database (but the system catalogs), as `("table NAME", rows)`.
async fn dump_tables(client: &tokio_postgres::Client) -> Vec<(String, Vec<u8>)> {
    use futures_util::TryStreamExt as _;
    let tables = client
        .query(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
            &[],
        )
        .await
        .expect("listing the tables");
    assert!(!tables.is_empty(), "the instance's database has tables");
    let mut out = Vec::new();
    for row in tables {
        let table: String = row.get(0);
        let stream = client
            .copy_out(&format!("COPY {table} TO STDOUT (FORMAT binary)"))
            .await
            .expect("COPY TO STDOUT");
        let chunks: Vec<_> = stream.try_collect().await.expect("COPY's rows");
        let bytes = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        out.push((format!("table {table}"), bytes));
    }
    out
}

fn read_dir_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            out.push((path, bytes));
        }
    }
    out
}

#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub head: u64,
    pub stores: Vec<Value>,
    pub secrets: Vec<Vec<Value>>,
    pub quota: (u64, u64),
    /// Every service of the account with its tokens' metadata: `{"service", "tokens"}`.
    pub services: Vec<Value>,
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

// ---- envelope assertions ----

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

#[track_caller]
pub fn assert_keys(v: &Value, expected: &[&str]) {
    let mut e: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    e.sort();
    assert_eq!(keys(v), e, "field names of {v}");
}

/// Every response carries `Cache-Control: no-store`, a request id and a JSON content type.
#[track_caller]
pub fn assert_common_headers(r: &Resp) {
    assert_eq!(
        r.headers
            .get(header::CACHE_CONTROL)
            .map(|v| v.to_str().unwrap()),
        Some("no-store"),
        "cache-control"
    );
    assert!(r.headers.contains_key("x-request-id"), "x-request-id");
    let ct = r
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(ct.as_deref(), Some("application/json"), "content-type");
}

/// A success envelope without `result_info`; returns `result`.
#[track_caller]
pub fn assert_ok(r: &Resp) -> Value {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_common_headers(r);
    let v = r.json();
    assert_keys(&v, &["success", "errors", "messages", "result"]);
    assert_eq!(v["success"], json!(true));
    assert_eq!(v["errors"], json!([]));
    assert_eq!(v["messages"], json!([]));
    v["result"].clone()
}

/// A delete's success envelope: `result: null`.
#[track_caller]
pub fn assert_deleted(r: &Resp) {
    let result = assert_ok(r);
    assert_eq!(result, Value::Null, "delete result");
}

/// A list's success envelope; returns the items and `result_info` as
/// `(page, per_page, count, total_count)`.
#[track_caller]
pub fn assert_ok_list(r: &Resp) -> (Vec<Value>, (u64, u64, u64, u64)) {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_common_headers(r);
    let v = r.json();
    assert_keys(
        &v,
        &["success", "errors", "messages", "result", "result_info"],
    );
    assert_eq!(v["success"], json!(true));
    assert_eq!(v["errors"], json!([]));
    assert_eq!(v["messages"], json!([]));
    let info = &v["result_info"];
    assert_keys(info, &["page", "per_page", "count", "total_count"]);
    let items = v["result"].as_array().expect("result is an array").clone();
    let n = |k: &str| info[k].as_u64().unwrap();
    let info = (n("page"), n("per_page"), n("count"), n("total_count"));
    assert_eq!(info.2, items.len() as u64, "count is the page's length");
    (items, info)
}

/// An error envelope with `code`; the message must contain `needle`. Returns the error item.
#[track_caller]
pub fn assert_err(r: &Resp, code: ErrorCode, needle: &str) -> Value {
    assert_eq!(
        r.status.as_u16(),
        code.http_status(),
        "status for {code:?}: {}",
        r.text()
    );
    assert_common_headers(r);
    let v = r.json();
    assert_keys(&v, &["success", "errors", "messages", "result"]);
    assert_eq!(v["success"], json!(false));
    assert_eq!(v["messages"], json!([]));
    assert_eq!(v["result"], Value::Null);
    let errors = v["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), 1, "one error: {v}");
    let e = errors[0].clone();
    assert_eq!(
        e["code"].as_u64(),
        Some(u64::from(code.code())),
        "code for {code:?} ({}): {v}",
        code.name()
    );
    let message = e["message"].as_str().expect("message");
    assert!(
        message.contains(needle),
        "message {message:?} should contain {needle:?}"
    );
    if let Some(u) = e.get("documentation_url") {
        assert!(u.is_string());
    }
    e
}

/// [`assert_err`] that also checks the error's `source.pointer`.
#[track_caller]
pub fn assert_err_at(r: &Resp, code: ErrorCode, pointer: &str) -> Value {
    let e = assert_err(r, code, pointer);
    assert_eq!(
        e["source"]["pointer"].as_str(),
        Some(pointer),
        "source.pointer of {e}"
    );
    e
}

#[track_caller]
pub fn assert_hex_id(v: &Value) -> String {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("id is not a string: {v}"));
    assert_eq!(s.len(), 32, "id {s:?}");
    assert!(
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "id {s:?} is not lowercase hex"
    );
    s.to_owned()
}

#[track_caller]
pub fn timestamp(v: &Value) -> coffer_types::Timestamp {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    coffer_types::Timestamp::parse_rfc3339(s).unwrap_or_else(|| panic!("not RFC 3339: {s:?}"))
}

/// A secret's metadata object: exact field names and well-formed fields.
#[track_caller]
pub fn assert_secret_shape(s: &Value) {
    assert_keys(
        s,
        &[
            "id", "store_id", "name", "comment", "scopes", "status", "created", "modified",
        ],
    );
    assert_hex_id(&s["id"]);
    assert_hex_id(&s["store_id"]);
    assert!(s["name"].is_string());
    assert!(s["comment"].is_string());
    let scopes = s["scopes"].as_array().expect("scopes array");
    assert!(!scopes.is_empty());
    assert!(scopes.iter().all(Value::is_string));
    assert_eq!(s["status"], json!("active"));
    assert!(timestamp(&s["modified"]) >= timestamp(&s["created"]));
}

/// A store object: exact field names and well-formed fields.
#[track_caller]
pub fn assert_store_shape(s: &Value, account: &str) {
    assert_keys(s, &["id", "name", "created", "modified", "account_id"]);
    assert_hex_id(&s["id"]);
    assert!(s["name"].is_string());
    assert_eq!(s["account_id"], json!(account));
    assert!(timestamp(&s["modified"]) >= timestamp(&s["created"]));
}

/// A sorted copy of a secret's scopes.
pub fn scopes_of(s: &Value) -> Vec<String> {
    let mut v: Vec<String> = s["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

pub fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

/// An instance holding one store with one secret (so the account already has a DEK, and a
/// failed request that seals values still writes nothing).
pub struct Fx {
    pub h: Harness,
    pub store: String,
    pub secret: String,
}

pub async fn fixture() -> Fx {
    fixture_with(coffer_core::Limits::default()).await
}

pub async fn fixture_with(limits: coffer_core::Limits) -> Fx {
    let h = Harness::with_limits(limits).await;
    let store = h.create_store("fixture").await;
    let secret = h.create_secret(&store, "EXISTING", "existing-value").await;
    let secret = secret["id"].as_str().unwrap().to_owned();
    Fx { h, store, secret }
}

/// An endpoint that takes a JSON body, with a body it accepts.
pub struct BodyEndpoint {
    pub name: &'static str,
    pub method: Method,
    /// Relative to the account's `secrets_store`.
    pub path: String,
    pub valid: Value,
}

impl Fx {
    /// The endpoints with a JSON body that needs one: the five of the secrets store, then
    /// deploy. (A token rotation's body is optional, so it is tested on its own.)
    pub fn body_endpoints(&self) -> Vec<BodyEndpoint> {
        let (s, x) = (&self.store, &self.secret);
        vec![
            BodyEndpoint {
                name: "create store",
                method: Method::POST,
                path: "/stores".into(),
                valid: json!({ "name": "fresh" }),
            },
            BodyEndpoint {
                name: "create secrets",
                method: Method::POST,
                path: format!("/stores/{s}/secrets"),
                valid: json!([{ "name": "fresh", "value": "v", "scopes": ["workers"] }]),
            },
            BodyEndpoint {
                name: "bulk delete",
                method: Method::DELETE,
                path: format!("/stores/{s}/secrets"),
                valid: json!([x]),
            },
            BodyEndpoint {
                name: "update",
                method: Method::PATCH,
                path: format!("/stores/{s}/secrets/{x}"),
                valid: json!({ "comment": "changed" }),
            },
            BodyEndpoint {
                name: "duplicate",
                method: Method::POST,
                path: format!("/stores/{s}/secrets/{x}/duplicate"),
                valid: json!({ "name": "fresh", "scopes": ["workers"] }),
            },
            BodyEndpoint {
                name: "deploy",
                method: Method::POST,
                path: "/services".into(),
                valid: json!({
                    "name": "fresh",
                    "secrets_store_secrets": [secret_binding("BOUND", s, "EXISTING")],
                    "secrets_store_stores": [store_binding("ALL", s)],
                }),
            },
        ]
    }
}

/// One of the 12 operations, as a URI template over `{a}` (account), `{s}` (store) and `{x}`
/// (secret), with a body it accepts.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: &'static str,
    pub method: Method,
    pub template: &'static str,
    pub body: Option<Value>,
}

impl Endpoint {
    pub fn uri(&self, a: &str, s: &str, x: &str) -> String {
        format!(
            "{V4}/{}",
            self.template
                .replace("{a}", a)
                .replace("{s}", s)
                .replace("{x}", x)
        )
    }

    pub fn has(&self, placeholder: &str) -> bool {
        self.template.contains(placeholder)
    }
}

/// All 12 operations.
pub fn all_endpoints() -> Vec<Endpoint> {
    let ep = |name, method, template, body| Endpoint {
        name,
        method,
        template,
        body,
    };
    vec![
        ep("list stores", Method::GET, "{a}/secrets_store/stores", None),
        ep(
            "create store",
            Method::POST,
            "{a}/secrets_store/stores",
            Some(json!({ "name": "fresh" })),
        ),
        ep(
            "get store",
            Method::GET,
            "{a}/secrets_store/stores/{s}",
            None,
        ),
        ep(
            "delete store",
            Method::DELETE,
            "{a}/secrets_store/stores/{s}",
            None,
        ),
        ep(
            "list secrets",
            Method::GET,
            "{a}/secrets_store/stores/{s}/secrets",
            None,
        ),
        ep(
            "create secrets",
            Method::POST,
            "{a}/secrets_store/stores/{s}/secrets",
            Some(json!([{ "name": "fresh", "value": "v", "scopes": ["workers"] }])),
        ),
        ep(
            "bulk delete",
            Method::DELETE,
            "{a}/secrets_store/stores/{s}/secrets",
            Some(json!([])),
        ),
        ep(
            "get secret",
            Method::GET,
            "{a}/secrets_store/stores/{s}/secrets/{x}",
            None,
        ),
        ep(
            "update secret",
            Method::PATCH,
            "{a}/secrets_store/stores/{s}/secrets/{x}",
            Some(json!({ "comment": "changed" })),
        ),
        ep(
            "delete secret",
            Method::DELETE,
            "{a}/secrets_store/stores/{s}/secrets/{x}",
            None,
        ),
        ep(
            "duplicate",
            Method::POST,
            "{a}/secrets_store/stores/{s}/secrets/{x}/duplicate",
            Some(json!({ "name": "fresh", "scopes": ["workers"] })),
        ),
        ep("quota", Method::GET, "{a}/secrets_store/quota", None),
    ]
}

impl Harness {
    /// Calls `ep` at `uri` with the given Authorization header (or none), and its body with a
    /// JSON content type. The bulk delete body names `x`.
    pub async fn call_as(
        &self,
        ep: &Endpoint,
        uri: &str,
        x: &str,
        authorization: Option<&str>,
    ) -> Resp {
        let mut b = Request::builder().method(ep.method.clone()).uri(uri);
        if let Some(a) = authorization {
            b = b.header(header::AUTHORIZATION, a);
        }
        let body = match &ep.body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                let v = if ep.name == "bulk delete" {
                    json!([x])
                } else {
                    v.clone()
                };
                Body::from(serde_json::to_vec(&v).unwrap())
            }
            None => Body::empty(),
        };
        self.send(b.body(body).unwrap()).await
    }

    /// Calls `ep` with this instance's token.
    pub async fn call(&self, ep: &Endpoint, a: &str, s: &str, x: &str) -> Resp {
        let auth = self.bearer();
        self.call_as(ep, &ep.uri(a, s, x), x, Some(&auth)).await
    }
}

// ---- identity: accounts and tokens ----

/// The four roles, in the contract's order.
pub const ROLES: [&str; 4] = [
    "super_admin",
    "secrets_store_admin",
    "secrets_store_deployer",
    "secrets_store_reporter",
];

/// `/client/v4/accounts/{account}`.
pub fn account_uri(account: &str) -> String {
    format!("{V4}/{account}")
}

/// `/client/v4/accounts/{account}/tokens[/{token}]`.
pub fn tokens_uri(account: &str, token: Option<&str>) -> String {
    match token {
        Some(t) => format!("{V4}/{account}/tokens/{t}"),
        None => format!("{V4}/{account}/tokens"),
    }
}

/// The token a successful create answered with.
pub fn issued(r: &Resp) -> IssuedToken {
    let t = assert_ok(r);
    IssuedToken {
        id: assert_hex_id(&t["id"]),
        value: t["value"].as_str().expect("value").to_owned(),
    }
}

/// A token made through the API: its id and its value (shown once).
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub id: String,
    pub value: String,
}

impl IssuedToken {
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.value)
    }
}

impl Harness {
    /// `method` on `uri` with `authorization` (or none) and an optional JSON body.
    pub async fn send_as(
        &self,
        method: Method,
        uri: &str,
        authorization: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(a) = authorization {
            b = b.header(header::AUTHORIZATION, a);
        }
        let body = match body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(v).unwrap())
            }
            None => Body::empty(),
        };
        self.send(b.body(body).unwrap()).await
    }

    /// `GET uri` as `token` (a full token value).
    pub async fn get_as(&self, token: &str, uri: &str) -> Resp {
        let auth = format!("Bearer {token}");
        self.send_as(Method::GET, uri, Some(&auth), None).await
    }

    /// Creates an account as the operator; returns its id.
    pub async fn create_account(&self, name: &str) -> String {
        let r = self
            .json_abs(Method::POST, V4, &json!({ "name": name }))
            .await;
        assert_hex_id(&assert_ok(&r)["id"])
    }

    /// Creates a token in `account` as the operator.
    /// A second account with a super_admin token, a store `b-store` and one secret `one`
    /// (scope workers) holding `value`: `(account, its admin, store id)`.
    pub async fn other_account_with_secret(&self, value: &str) -> (String, IssuedToken, String) {
        let b = self.create_account("bee").await;
        let admin = self.issue_token(&b, "bee-admin", "super_admin").await;
        let uri = |rel: &str| format!("{V4}/{b}/secrets_store{rel}");
        let r = self
            .send_as(
                Method::POST,
                &uri("/stores"),
                Some(&admin.bearer()),
                Some(&json!({ "name": "b-store" })),
            )
            .await;
        let store = assert_hex_id(&assert_ok(&r)["id"]);
        let r = self
            .send_as(
                Method::POST,
                &uri(&format!("/stores/{store}/secrets")),
                Some(&admin.bearer()),
                Some(&json!([secret_item("one", value, &["workers"])])),
            )
            .await;
        assert_ok(&r);
        (b, admin, store)
    }

    /// Creates a token in `account` as the operator: any token in its own account, only the
    /// first (a super_admin) in another; make the others with [`Harness::issue_token_by`].
    pub async fn issue_token(&self, account: &str, name: &str, role: &str) -> IssuedToken {
        let r = self
            .json_abs(
                Method::POST,
                &tokens_uri(account, None),
                &json!({ "name": name, "role": role }),
            )
            .await;
        issued(&r)
    }

    /// Creates a token in `account` as `by` (a super_admin of that account).
    pub async fn issue_token_by(
        &self,
        by: &IssuedToken,
        account: &str,
        name: &str,
        role: &str,
    ) -> IssuedToken {
        let r = self
            .send_as(
                Method::POST,
                &tokens_uri(account, None),
                Some(&by.bearer()),
                Some(&json!({ "name": name, "role": role })),
            )
            .await;
        issued(&r)
    }

    /// Every account the operator sees with its tokens' metadata, minus `last_used_on` (which
    /// reading changes): what an identity write would change.
    pub async fn identity_snapshot(&self) -> Value {
        let (accounts, _) = assert_ok_list(&self.raw_abs(Method::GET, V4, None, "").await);
        let mut out = Vec::new();
        for a in accounts {
            let id = a["id"].as_str().unwrap();
            let r = self
                .raw_abs(Method::GET, &tokens_uri(id, None), None, "")
                .await;
            let mut tokens = assert_ok_list(&r).0;
            for t in &mut tokens {
                t.as_object_mut().unwrap().remove("last_used_on");
            }
            out.push(json!({ "account": a, "tokens": tokens }));
        }
        Value::Array(out)
    }
}

// ---- services, bindings and the runtime API ----

/// The runtime API's root.
pub const RUNTIME: &str = "/runtime/v1";

/// A `[[secrets_store_secrets]]` item.
pub fn secret_binding(binding: &str, store: &str, secret_name: &str) -> Value {
    json!({ "binding": binding, "store_id": store, "secret_name": secret_name })
}

/// A `[[secrets_store_stores]]` item.
pub fn store_binding(binding: &str, store: &str) -> Value {
    json!({ "binding": binding, "store_id": store })
}

/// A deploy body with secret bindings `(binding, store, secret name)` and no type.
pub fn deploy_body(name: &str, secrets: &[(&str, &str, &str)]) -> Value {
    let items: Vec<Value> = secrets
        .iter()
        .map(|(b, s, n)| secret_binding(b, s, n))
        .collect();
    json!({ "name": name, "secrets_store_secrets": items })
}

/// The id part of a service token (`coffersvc_<32 hex id>_<43 base64url>`).
#[track_caller]
pub fn service_token_id(value: &str) -> String {
    let id = value
        .strip_prefix("coffersvc_")
        .unwrap_or_else(|| panic!("not a service token: {value:?}"));
    id[..32].to_owned()
}

/// The secret part of a service token.
pub fn service_token_secret(value: &str) -> String {
    value["coffersvc_".len() + 33..].to_owned()
}

/// A service token value: `coffersvc_<32 hex id>_<43 base64url>`.
#[track_caller]
pub fn assert_service_token(v: &Value) -> String {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("service_token is not a string: {v}"));
    assert_eq!(s.len(), "coffersvc_".len() + 32 + 1 + 43, "token {s:?}");
    let rest = s.strip_prefix("coffersvc_").expect("coffersvc_ prefix");
    assert_hex_id(&json!(&rest[..32]));
    assert_eq!(&rest[32..33], "_");
    assert!(
        rest[33..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "the secret part is base64url"
    );
    s.to_owned()
}

/// A service object: exact field names and well-formed fields.
#[track_caller]
pub fn assert_service_shape(s: &Value) {
    assert_keys(
        s,
        &[
            "id",
            "name",
            "type",
            "secrets_store_secrets",
            "secrets_store_stores",
            "created",
            "modified",
        ],
    );
    assert_hex_id(&s["id"]);
    assert!(s["name"].is_string());
    assert!(s["type"].is_string());
    for b in s["secrets_store_secrets"].as_array().expect("array") {
        assert_keys(b, &["binding", "store_id", "secret_name"]);
        assert_hex_id(&b["store_id"]);
    }
    for b in s["secrets_store_stores"].as_array().expect("array") {
        assert_keys(b, &["binding", "store_id"]);
        assert_hex_id(&b["store_id"]);
    }
    assert!(timestamp(&s["modified"]) >= timestamp(&s["created"]));
}

/// A service token's metadata: exact field names and well-formed fields.
#[track_caller]
pub fn assert_service_token_shape(t: &Value, service: &str) {
    assert_keys(
        t,
        &["id", "service_id", "status", "issued_on", "revoked_on"],
    );
    assert_hex_id(&t["id"]);
    assert_eq!(t["service_id"], json!(service), "{t}");
    timestamp(&t["issued_on"]);
    match t["status"].as_str() {
        Some("active") => assert_eq!(t["revoked_on"], Value::Null, "{t}"),
        Some("revoked") => assert!(timestamp(&t["revoked_on"]) >= timestamp(&t["issued_on"])),
        other => panic!("status {other:?}: {t}"),
    }
}

/// The first key that appears twice in one JSON object of `bytes`, if any (serde_json's
/// `Value` keeps the last one silently; strict parsers refuse the document).
pub fn duplicate_key(bytes: &[u8]) -> Option<String> {
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

    struct Strict;
    struct StrictVisitor;

    impl<'de> Visitor<'de> for StrictVisitor {
        type Value = Strict;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_unit<E>(self) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
            while seq.next_element::<Strict>()?.is_some() {}
            Ok(Strict)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(de::Error::custom(format!("duplicate key {key:?}")));
                }
                map.next_value::<Strict>()?;
            }
            Ok(Strict)
        }
    }

    impl<'de> Deserialize<'de> for Strict {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
            d.deserialize_any(StrictVisitor)
        }
    }

    serde_json::from_slice::<Strict>(bytes)
        .err()
        .map(|e| e.to_string())
}

/// A deployed service, as the deploy answered.
#[derive(Debug, Clone)]
pub struct Svc {
    pub id: String,
    /// The deploy's `result`.
    pub result: Value,
    /// The service token, on the deploy that created the service.
    pub token: Option<String>,
}

impl Svc {
    #[track_caller]
    pub fn token(&self) -> &str {
        self.token.as_deref().expect("the deploy that created it")
    }
}

impl Harness {
    /// `POST .../services` as the operator.
    pub async fn deploy(&self, body: &Value) -> Resp {
        self.post("/services", body).await
    }

    /// A deploy that must succeed.
    pub async fn deploy_ok(&self, body: &Value) -> Svc {
        let r = self.deploy(body).await;
        let result = assert_ok(&r);
        let id = assert_hex_id(&result["id"]);
        let token = result.get("service_token").map(assert_service_token);
        assert_eq!(
            result["first_deploy"],
            json!(token.is_some()),
            "a token exactly on creation: {result}"
        );
        // The service's fields, the flag, and the token on creation.
        let mut expected = vec![
            "id",
            "name",
            "type",
            "secrets_store_secrets",
            "secrets_store_stores",
            "created",
            "modified",
            "first_deploy",
        ];
        if token.is_some() {
            expected.push("service_token");
        }
        assert_keys(&result, &expected);
        assert_eq!(duplicate_key(&r.bytes), None, "{}", r.text());
        timestamp(&result["modified"]);
        Svc { id, result, token }
    }

    /// Deploys `name` with secret bindings `(binding, store, secret name)`.
    pub async fn deploy_secrets(&self, name: &str, secrets: &[(&str, &str, &str)]) -> Svc {
        self.deploy_ok(&deploy_body(name, secrets)).await
    }

    /// `GET .../services/{id}`'s result.
    pub async fn get_service(&self, id: &str) -> Value {
        let s = assert_ok(&self.get(&format!("/services/{id}")).await);
        assert_service_shape(&s);
        s
    }

    /// `GET .../services/{id}/tokens`'s items.
    pub async fn service_tokens(&self, id: &str) -> Vec<Value> {
        let r = self.get(&format!("/services/{id}/tokens")).await;
        let items = assert_ok_list(&r).0;
        for t in &items {
            assert_service_token_shape(t, id);
        }
        items
    }

    /// `POST .../services/{id}/tokens` with `body` (none: an empty body); the result.
    pub async fn rotate(&self, id: &str, body: Option<&Value>) -> Value {
        let rel = format!("/services/{id}/tokens");
        let r = match body {
            Some(b) => self.post(&rel, b).await,
            None => self.raw(Method::POST, &rel, None, Body::empty()).await,
        };
        assert_ok(&r)
    }

    /// Every service with its tokens, by name.
    pub async fn services_state(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for page in 1.. {
            let r = self
                .get(&format!("/services?per_page=100&page={page}"))
                .await;
            let (items, (_, _, _, total)) = assert_ok_list(&r);
            let done = items.is_empty();
            for s in items {
                let id = s["id"].as_str().unwrap().to_owned();
                let r = self.get(&format!("/services/{id}/tokens")).await;
                let tokens = assert_ok_list(&r).0;
                out.push(json!({ "service": s, "tokens": tokens }));
            }
            if done || out.len() as u64 >= total {
                break;
            }
        }
        out
    }

    /// `GET /runtime/v1{path}` with `authorization` (a full header value, or none).
    pub async fn runtime_as(&self, authorization: Option<&str>, path: &str) -> Resp {
        self.send_as(
            Method::GET,
            &format!("{RUNTIME}{path}"),
            authorization,
            None,
        )
        .await
    }

    /// `GET /runtime/v1{path}` with the service token `token`.
    pub async fn runtime(&self, token: &str, path: &str) -> Resp {
        self.runtime_as(Some(&format!("Bearer {token}")), path)
            .await
    }

    /// `GET /runtime/v1/bindings/{binding}` with `token`.
    pub async fn read_binding(&self, token: &str, binding: &str) -> Resp {
        self.runtime(token, &format!("/bindings/{binding}")).await
    }

    /// The value bound as `binding`, which must be readable.
    pub async fn read_value(&self, token: &str, binding: &str) -> String {
        assert_plain(&self.read_binding(token, binding).await)
    }
}

/// A runtime read's success: 200, `text/plain; charset=utf-8`, `Cache-Control: no-store`, a
/// request id. Returns the body.
#[track_caller]
pub fn assert_plain(r: &Resp) -> String {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap()),
        Some("text/plain; charset=utf-8"),
        "content-type"
    );
    assert_eq!(
        r.headers
            .get(header::CACHE_CONTROL)
            .map(|v| v.to_str().unwrap()),
        Some("no-store"),
        "cache-control"
    );
    assert!(r.headers.contains_key("x-request-id"), "x-request-id");
    String::from_utf8(r.bytes.clone()).expect("UTF-8 body")
}

// ---- edge nodes ----

/// The API root above accounts: instance-level routes (nodes) live here.
pub const API: &str = "/client/v4";

/// `/client/v4/nodes[/{node}]`.
pub fn nodes_uri(node: Option<&str>) -> String {
    match node {
        Some(n) => format!("{API}/nodes/{n}"),
        None => format!("{API}/nodes"),
    }
}

/// A node registered through the API: its id, its token (shown once) and the create's result.
#[derive(Debug, Clone)]
pub struct IssuedNode {
    pub id: String,
    pub token: String,
    pub result: Value,
}

/// A node token value: `coffernode_<32 hex id>_<43 base64url>`.
#[track_caller]
pub fn assert_node_token(v: &Value) -> String {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("node_token is not a string: {v}"));
    assert_eq!(s.len(), "coffernode_".len() + 32 + 1 + 43, "token {s:?}");
    let rest = s.strip_prefix("coffernode_").expect("coffernode_ prefix");
    assert_hex_id(&json!(&rest[..32]));
    assert_eq!(&rest[32..33], "_");
    assert!(
        rest[33..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "the secret part is base64url"
    );
    s.to_owned()
}

/// A node object: exact field names and well-formed fields.
#[track_caller]
pub fn assert_node_shape(n: &Value) {
    // `contact` only once the node asked this instance for the feed.
    match n.get("contact") {
        None => assert_keys(n, &["id", "name", "created", "revoked"]),
        Some(c) => {
            assert_keys(n, &["id", "name", "created", "revoked", "contact"]);
            assert_keys(c, &["last_seen", "applied_seq", "head_seq", "lag"]);
            timestamp(&c["last_seen"]);
            let (applied, head) = (c["applied_seq"].as_u64(), c["head_seq"].as_u64());
            assert_eq!(
                c["lag"].as_u64(),
                head.zip(applied).map(|(h, a)| h.saturating_sub(a)),
                "{c}"
            );
        }
    }
    assert_hex_id(&n["id"]);
    assert!(n["name"].is_string());
    let created = timestamp(&n["created"]);
    if !n["revoked"].is_null() {
        assert!(timestamp(&n["revoked"]) >= created, "{n}");
    }
}

impl Harness {
    /// `POST /client/v4/nodes` as the operator, which must succeed.
    pub async fn create_node(&self, name: &str) -> IssuedNode {
        let r = self
            .json_abs(Method::POST, &nodes_uri(None), &json!({ "name": name }))
            .await;
        let result = assert_ok(&r);
        assert_keys(
            &result,
            &[
                "id",
                "name",
                "created",
                "revoked",
                "node_token",
                "feed_public_key",
            ],
        );
        assert_eq!(duplicate_key(&r.bytes), None, "{}", r.text());
        let id = assert_hex_id(&result["id"]);
        let token = assert_node_token(&result["node_token"]);
        assert_eq!(&token["coffernode_".len().."coffernode_".len() + 32], id);
        IssuedNode { id, token, result }
    }

    /// Every node, as the operator lists them.
    pub async fn nodes_state(&self) -> Vec<Value> {
        let r = self
            .raw_abs(Method::GET, &nodes_uri(None), None, Body::empty())
            .await;
        let items = assert_ok_list(&r).0;
        for n in &items {
            assert_node_shape(n);
        }
        items
    }
}
