//! The harness: a fresh data dir, the whole server's router in-process (so the dashboard is
//! tested as mounted, behind the server's frame and failed-authentication limit), a browser-ish
//! client that keeps the session cookie, and the API beside it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use coffer_core::Coffer;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub struct Harness {
    _dir: tempfile::TempDir,
    /// The data dir (its `coffer.db`, for tests that edit the file behind the server's back).
    pub data_dir: std::path::PathBuf,
    pub coffer: Arc<Coffer>,
    pub app: Router,
    /// The operator's token (a super_admin of its own account).
    pub token: String,
    pub account: String,
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn set_cookie(&self) -> Option<&str> {
        self.headers
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
    }

    /// The value a page shows once (a new token's), if it has one.
    pub fn once_value(&self) -> Option<String> {
        let marker = "class=\"once-value mono\" value=\"";
        let at = self.body.find(marker)? + marker.len();
        let rest = &self.body[at..];
        Some(rest[..rest.find('"')?].to_owned())
    }

    /// The value of the first `name="csrf"` field of the page.
    pub fn csrf(&self) -> String {
        self.hidden("csrf")
    }

    /// The single-use nonce of the page's form that mints a token (`name="once"`).
    pub fn once(&self) -> String {
        self.hidden("once")
    }

    /// The value of the first hidden field `name` of the page.
    fn hidden(&self, name: &str) -> String {
        let field = format!("name=\"{name}\" value=\"");
        let at = self
            .body
            .find(&field)
            .unwrap_or_else(|| panic!("no {name} field in: {}", self.body));
        let rest = &self.body[at + field.len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

/// A browser: the session cookie it was given, if any.
#[derive(Debug, Clone, Default)]
pub struct Browser {
    pub cookie: Option<String>,
    /// The peer address requests come from (the failed-authentication limit keys on it).
    pub peer: Option<SocketAddr>,
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

impl Harness {
    pub async fn new() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let init = coffer_server::init_data_dir(&data_dir)
            .await
            .expect("init data dir");
        let coffer = Arc::new(
            coffer_server::open_data_dir(&data_dir, Default::default())
                .await
                .expect("open data dir")
                .coffer,
        );
        Harness {
            _dir: dir,
            data_dir,
            app: coffer_server::app(coffer.clone()),
            coffer,
            token: init.api_token.expose_secret().to_owned(),
            account: init.account_id.to_string(),
        }
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        send(&self.app, req).await
    }

    /// `GET path` as `browser`.
    pub async fn get(&self, b: &Browser, path: &str) -> Resp {
        self.send(b.request(Method::GET, path).body(Body::empty()).unwrap())
            .await
    }

    /// A form POST as `browser`.
    pub async fn post(&self, b: &Browser, path: &str, pairs: &[(&str, &str)]) -> Resp {
        self.send(
            b.request(Method::POST, path)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form(pairs)))
                .unwrap(),
        )
        .await
    }

    /// Signs in with `token`; the browser keeps the cookie it is given.
    pub async fn sign_in(&self, token: &str) -> Browser {
        let mut b = Browser::default();
        let r = self
            .post(&b, "/dashboard/sign-in", &[("token", token)])
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        b.keep(&r);
        b
    }

    /// An API call with `token` (JSON body if given).
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let r = self.send(req.body(body).unwrap()).await;
        let json = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        (r.status, json)
    }

    /// A new token of the operator's account with `role`: (id, value).
    pub async fn token_with_role(&self, role: &str) -> (String, String) {
        self.named_token(&format!("{role} token"), role).await
    }

    /// A new token of the operator's account named `name` with `role`: (id, value).
    pub async fn named_token(&self, name: &str, role: &str) -> (String, String) {
        let (status, v) = self
            .api(
                Method::POST,
                &format!("/client/v4/accounts/{}/tokens", self.account),
                &self.token,
                Some(serde_json::json!({ "name": name, "role": role })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        (
            v["result"]["id"].as_str().unwrap().to_owned(),
            v["result"]["value"].as_str().unwrap().to_owned(),
        )
    }

    /// Whether `token` is accepted by the API now.
    pub async fn token_works(&self, token: &str) -> bool {
        let (status, _) = self
            .api(Method::GET, "/client/v4/user/tokens/verify", token, None)
            .await;
        status == StatusCode::OK
    }

    /// The account's tokens through the API: (id, name, status).
    pub async fn tokens(&self) -> Vec<(String, String, String)> {
        let (_, v) = self
            .api(
                Method::GET,
                &format!("/client/v4/accounts/{}/tokens", self.account),
                &self.token,
                None,
            )
            .await;
        v["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let s = |k: &str| t[k].as_str().unwrap().to_owned();
                (s("id"), s("name"), s("status"))
            })
            .collect()
    }

    /// The stores' names, through the API.
    pub async fn store_names(&self) -> Vec<String> {
        let (_, v) = self
            .api(
                Method::GET,
                &format!(
                    "/client/v4/accounts/{}/secrets_store/stores?per_page=100",
                    self.account
                ),
                &self.token,
                None,
            )
            .await;
        v["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Creates a store through the API: its id.
    pub async fn create_store(&self, name: &str) -> String {
        let (status, v) = self
            .api(
                Method::POST,
                &format!("/client/v4/accounts/{}/secrets_store/stores", self.account),
                &self.token,
                Some(serde_json::json!({ "name": name })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["result"]["id"].as_str().unwrap().to_owned()
    }

    /// The secrets of `store`, through the API: (name, comment).
    pub async fn secrets(&self, store: &str) -> Vec<(String, String)> {
        let (_, v) = self
            .api(
                Method::GET,
                &format!(
                    "/client/v4/accounts/{}/secrets_store/stores/{store}/secrets?per_page=100",
                    self.account
                ),
                &self.token,
                None,
            )
            .await;
        v["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_owned(),
                    s["comment"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

pub async fn send(app: &Router, req: Request<Body>) -> Resp {
    let res = app.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

impl Browser {
    pub fn request(&self, method: Method, path: &str) -> axum::http::request::Builder {
        // What every current browser sends with its own page's requests.
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("sec-fetch-site", "same-origin");
        if let Some(c) = &self.cookie {
            b = b.header(header::COOKIE, c);
        }
        if let Some(peer) = self.peer {
            b = b.extension(ConnectInfo(peer));
        }
        b
    }

    /// Keeps (or drops) the cookie a response sets, as a browser would.
    pub fn keep(&mut self, r: &Resp) {
        if let Some(set) = r.set_cookie() {
            let pair = set.split(';').next().unwrap().trim();
            let cleared = set.contains("Max-Age=0");
            self.cookie = (!cleared).then(|| pair.to_owned());
        }
    }
}
