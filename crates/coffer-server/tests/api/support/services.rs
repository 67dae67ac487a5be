//! Services, bindings and the runtime API: deploy bodies, service tokens and their shapes, and
//! the harness's calls that deploy and read through them.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::*;

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
pub struct DeployedService {
    pub id: String,
    /// The deploy's `result`.
    pub result: Value,
    /// The service token, on the deploy that created the service.
    pub token: Option<String>,
}

impl DeployedService {
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
    pub async fn deploy_ok(&self, body: &Value) -> DeployedService {
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
        DeployedService { id, result, token }
    }

    /// Deploys `name` with secret bindings `(binding, store, secret name)`.
    pub async fn deploy_secrets(
        &self,
        name: &str,
        secrets: &[(&str, &str, &str)],
    ) -> DeployedService {
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
