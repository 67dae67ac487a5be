//! The test harness: a fresh data dir per test (and, on PostgreSQL, a database of its own), the
//! router called in-process with `oneshot`, and assertions over the v4 envelope.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use coffer_core::{Coffer, Limits};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub use crate::backend::{Backend, Backing, SqliteOnly, backend};

mod endpoints;
mod envelope;
mod identity;
mod nodes;
mod services;

pub use endpoints::*;
pub use envelope::*;
pub use identity::*;
pub use nodes::*;
pub use services::*;

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
