//! Typed async HTTP client for Coffer's Cloudflare-compatible Secrets Store API, and the SDK a
//! bound service uses to read its secrets at runtime.
//!
//! # Control plane: [`Client`]
//!
//! One method per API operation; every response is read as a v4 envelope, and failures become
//! one [`Error`] whose `Display` is a single line fit for a person.
//!
//! ```no_run
//! # async fn demo() -> Result<(), coffer_client::Error> {
//! let client = coffer_client::Client::new("http://127.0.0.1:8080", "coffer_...", "0123...")?;
//! let store = client.create_store("prod").await?;
//! let page = client.list_stores(None, None, None, None).await?;
//! # Ok(()) }
//! ```
//!
//! Secret values only ever travel from the caller to the server (in [`CreateSecret`] and
//! [`UpdateSecret`] bodies); the client never logs them, keeps them, or puts a request body in an
//! error. The values that travel the other way, a new API token's (in [`CreatedToken`]), a new
//! service token's (in [`DeployedService`] and [`RotatedServiceToken`]) and a new node token's
//! (in [`CreatedNode`]), are read straight into a [`SecretValue`] and never put in an error
//! either.
//!
//! # Runtime: [`Env`]
//!
//! A service deployed with `coffer deploy` reads the secrets bound to it with its service token,
//! the way a Worker calls `env.OPENAI_KEY.get()`:
//!
//! ```no_run
//! # async fn demo() -> Result<(), coffer_client::RuntimeError> {
//! // COFFER_SERVICE_TOKEN (required) and COFFER_API_URL (default http://127.0.0.1:8080).
//! let env = coffer_client::Env::from_env()?;
//! let key = env.secret("OPENAI_KEY").get().await?;
//! let header = format!("Bearer {}", key.expose_secret());
//! // Every secret binding at once, and one secret through a store binding.
//! let all = env.get_all().await?;
//! let shared = env.store("SHARED").secret("stripe-key").get().await?;
//! # Ok(()) }
//! ```
//!
//! Values are [`SecretValue`]s: wiped from memory when dropped, and printed as `[redacted]` by
//! `Debug` and `Display`. [`Env::builder`] adds an in-process cache refreshed in the background
//! (see [`EnvBuilder::cache_ttl`]).

mod base_url;
mod error;
mod params;
mod runtime;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue, LOCATION};
use reqwest::{Method, RequestBuilder, Url};
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

pub use coffer_api::{
    Account, AccountKek, AccountKekUsage, ApiMessage, AuditLogEntry, AuditProblem,
    AuditVerification, CreateSecret, CreatedNode, CreatedToken, DeployService, DeployedService,
    DuplicateSecret, KekReseal, KekRotation, KekRotationStarted, KekStatus, KekVersion, Membership,
    MembershipAccount, Node, NodeContact, PermissionGrant, Quota, QuotaDetail, ResultInfo,
    RotatedServiceToken, Secret, SecretBinding, SecretValue, Service, ServiceToken, Store,
    StoreBinding, Token, TokenVerification, UpdateSecret,
};
use coffer_api::{
    CreateAccount, CreateNode, CreateStore, CreateToken, Envelope, RotateServiceToken,
    SetAccountKek, UpdateAccount,
};
pub use error::{Error, code_name};
pub use params::{AuditFilter, Direction, ListSecrets, ListServices, SecretOrder, StoreOrder};
pub use runtime::{
    API_URL_VAR, AllBindings, BoundSecret, BoundStore, CA_CERT_VAR, DEFAULT_API_URL, Env,
    EnvBuilder, RuntimeError, SERVICE_TOKEN_VAR, StoreSecret,
};

use crate::error::{connect_reason, snippet};
use crate::params::ListQuery;

/// One page of a list endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub result_info: ResultInfo,
}

/// Settings of a [`Client`] beyond the three required ones.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    account_id: String,
    auth: Result<HeaderValue, ()>,
    root_ca: Option<PathBuf>,
    connect_timeout: Duration,
    timeout: Duration,
}

impl ClientBuilder {
    /// Trusts only the certificates in this PEM file (one or more), for a server whose
    /// certificate is self-signed or issued by a private CA. The system roots are then not used.
    pub fn root_ca_pem(mut self, path: impl Into<PathBuf>) -> ClientBuilder {
        self.root_ca = Some(path.into());
        self
    }

    /// How long to wait for a connection (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// How long a whole request may take (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.timeout = timeout;
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let root = base_url::normalize(&self.base_url)?;
        let auth = self.auth.map_err(|()| Error::InvalidToken)?;
        let mut http = reqwest::Client::builder()
            .user_agent(concat!("coffer-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            // An API server has no reason to redirect, and following a 307 would resend a body
            // holding secret values to wherever the redirect points.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &self.root_ca {
            http = http.tls_certs_only(read_certificates(path)?);
        }
        Ok(Client {
            http: http.build().map_err(Error::Setup)?,
            root,
            account_id: self.account_id,
            auth,
        })
    }
}

fn read_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, Error> {
    let fail = |message: String| Error::RootCertificate {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate found".to_owned()));
    }
    Ok(certs)
}

/// A connection to one account of one Coffer server.
///
/// Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Server root, normalised by [`base_url::normalize`].
    root: Url,
    account_id: String,
    /// `Bearer <token>`, marked sensitive so that HTTP internals never print it.
    auth: HeaderValue,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.root.as_str())
            .field("account_id", &self.account_id)
            .field("token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with default settings. `base_url` is the server root (`http://host:8080`; a
    /// trailing `/` or `/client/v4` is accepted and removed). `token` is the API token in clear
    /// (`coffer_crypto::Token::expose_secret()`).
    pub fn new(base_url: &str, token: &str, account_id: &str) -> Result<Client, Error> {
        Client::builder(base_url, token, account_id).build()
    }

    pub fn builder(base_url: &str, token: &str, account_id: &str) -> ClientBuilder {
        let auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map(|mut v| {
                v.set_sensitive(true);
                v
            })
            .map_err(|_| ());
        ClientBuilder {
            base_url: base_url.to_owned(),
            account_id: account_id.to_owned(),
            auth,
            root_ca: None,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
        }
    }

    /// The normalised server root, e.g. `http://127.0.0.1:8080`.
    pub fn base_url(&self) -> String {
        base_url::display(&self.root)
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The same connection (server, token, settings, pool) for another account: e.g. the
    /// token's own, found with [`Client::memberships`].
    pub fn with_account(&self, account_id: &str) -> Client {
        Client {
            account_id: account_id.to_owned(),
            ..self.clone()
        }
    }

    /// `GET /healthz`: succeeds when the server answers 2xx.
    pub async fn healthz(&self) -> Result<(), Error> {
        let url = base_url::join(&self.root, &["healthz"]);
        let (status, body) = self.send(self.http.get(url)).await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(Error::Decode {
                status,
                detail: snippet(&body),
            })
        }
    }

    // ---- the account ----

    /// `GET /client/v4/accounts/{account_id}`.
    pub async fn get_account(&self) -> Result<Account, Error> {
        self.one(self.account_request(Method::GET, &[])).await
    }

    /// `PATCH /client/v4/accounts/{account_id}`: sets the account's own secrets quota, or with
    /// `None` returns it to the server default. Only the instance operator's token may.
    pub async fn set_secrets_quota(&self, quota: Option<u64>) -> Result<Account, Error> {
        let body = UpdateAccount {
            secrets_quota: Some(quota),
        };
        let req = self.account_request(Method::PATCH, &[]).json(&body);
        self.one(req).await
    }

    // ---- the token itself ----

    /// `GET /client/v4/user/tokens/verify`: the token's id, status and expiry, and (Coffer's)
    /// its name, role, operator flag and account. Any valid API token may call it.
    pub async fn verify_token(&self) -> Result<TokenVerification, Error> {
        self.one(self.v4_request(Method::GET, &["user", "tokens", "verify"]))
            .await
    }

    /// `GET /client/v4/memberships`: one page of the token's memberships. A Coffer token has
    /// exactly one (its account; the operator's is its own, first account).
    pub async fn memberships(&self, page: Option<u32>) -> Result<Page<Membership>, Error> {
        let mut req = self.v4_request(Method::GET, &["memberships"]);
        if let Some(page) = page {
            req = req.query(&[("page", page)]);
        }
        self.page(req).await
    }

    // ---- accounts of the instance (instance operator) ----
    //
    // These act on the instance, not on the client's own account: `account_id` is not used, and
    // the id given to `delete_account` is the account to delete.

    /// `POST /client/v4/accounts`: a new, empty account. Only the instance operator's token may.
    pub async fn create_account(&self, name: &str) -> Result<Account, Error> {
        let body = CreateAccount {
            name: name.to_owned(),
        };
        let req = self.instance_request(Method::POST, &[]).json(&body);
        self.one(req).await
    }

    /// `GET /client/v4/accounts`: every account for the instance operator; for any other token,
    /// its own account only.
    pub async fn list_accounts(&self) -> Result<Page<Account>, Error> {
        self.page(self.instance_request(Method::GET, &[])).await
    }

    /// `DELETE /client/v4/accounts/{account_id}` of the account `account_id` (which need not be
    /// the client's own), with its stores, secrets and tokens. Only the instance operator may.
    pub async fn delete_account(&self, account_id: &str) -> Result<(), Error> {
        self.none(self.instance_request(Method::DELETE, &[account_id]))
            .await
    }

    /// `GET /client/v4/accounts/{account_id}/kek` of the account `account_id`: which KEK wraps
    /// its DEKs (its own or the instance's). Only the instance operator may.
    pub async fn account_kek(&self, account_id: &str) -> Result<AccountKek, Error> {
        self.one(self.instance_request(Method::GET, &[account_id, "kek"]))
            .await
    }

    /// `PUT /client/v4/accounts/{account_id}/kek`: gives the account a KEK of its own (`file`,
    /// `file:/path` or a `pkcs11:` URI). Only the instance operator may.
    pub async fn set_account_kek(&self, account_id: &str, kek: &str) -> Result<AccountKek, Error> {
        let body = SetAccountKek {
            kek: kek.to_owned(),
        };
        let req = self
            .instance_request(Method::PUT, &[account_id, "kek"])
            .json(&body);
        self.one(req).await
    }

    // ---- API tokens of the account ----

    /// `POST /tokens`: a new token of the client's account. `role` is one of `super_admin`,
    /// `secrets_store_admin`, `secrets_store_deployer`, `secrets_store_reporter` (checked by the
    /// server); `expires_on` is an RFC 3339 date-time, or `None` for a token that does not
    /// expire.
    ///
    /// The answer holds the token's value, the only time the server ever shows it. It is read
    /// straight into a [`SecretValue`] (redacted in `Debug`, wiped on drop) and, whatever goes
    /// wrong, never appears in an [`Error`].
    pub async fn create_token(
        &self,
        name: &str,
        role: &str,
        expires_on: Option<String>,
    ) -> Result<CreatedToken, Error> {
        let body = CreateToken {
            name: name.to_owned(),
            role: role.to_owned(),
            expires_on,
        };
        let req = self.account_request(Method::POST, &["tokens"]).json(&body);
        let (status, body) = self.send(req).await?;
        decode_created_token(status, Zeroizing::new(body))
    }

    /// `GET /tokens`: the account's tokens, metadata only.
    pub async fn list_tokens(&self) -> Result<Page<Token>, Error> {
        self.page(self.account_request(Method::GET, &["tokens"]))
            .await
    }

    /// `GET /tokens/{token_id}`: one token's metadata.
    pub async fn get_token(&self, token_id: &str) -> Result<Token, Error> {
        self.one(self.account_request(Method::GET, &["tokens", token_id]))
            .await
    }

    /// `DELETE /tokens/{token_id}`: revokes the token, from the very next request on. Returns
    /// the token, now `revoked`.
    pub async fn revoke_token(&self, token_id: &str) -> Result<Token, Error> {
        self.one(self.account_request(Method::DELETE, &["tokens", token_id]))
            .await
    }

    // ---- services and their tokens ----

    /// `POST /services`: deploys a service, creating the one named `deploy.name` or replacing
    /// its type and bindings, atomically. A deploy with a binding the caller's role may not make,
    /// or whose secret is missing or lacks the service's type among its scopes, is refused whole
    /// (`10021`, the message names the binding).
    ///
    /// On the first deploy the answer holds the service token, the only time the server shows
    /// it: like a created API token, it is read straight into a [`SecretValue`] and never appears
    /// in an [`Error`].
    pub async fn deploy_service(&self, deploy: &DeployService) -> Result<DeployedService, Error> {
        let req = self.request(Method::POST, &["services"]).json(deploy);
        let (status, body) = self.send(req).await?;
        decode_secret_bearing(
            status,
            Zeroizing::new(body),
            "a deployed service",
            "the service token",
        )
    }

    /// `GET /services`: the account's services, ordered by name.
    pub async fn list_services(&self, params: &ListServices) -> Result<Page<Service>, Error> {
        let req = self.request(Method::GET, &["services"]).query(params);
        self.page(req).await
    }

    /// `GET /services/{service_id}`: one service with its bindings.
    pub async fn get_service(&self, service_id: &str) -> Result<Service, Error> {
        self.one(self.request(Method::GET, &["services", service_id]))
            .await
    }

    /// `DELETE /services/{service_id}`: deletes the service, its bindings and its tokens.
    pub async fn delete_service(&self, service_id: &str) -> Result<(), Error> {
        self.none(self.request(Method::DELETE, &["services", service_id]))
            .await
    }

    /// `GET /services/{service_id}/tokens`: the service's tokens, metadata only.
    pub async fn list_service_tokens(&self, service_id: &str) -> Result<Page<ServiceToken>, Error> {
        self.page(self.request(Method::GET, &["services", service_id, "tokens"]))
            .await
    }

    /// `POST /services/{service_id}/tokens`: issues a new service token. With
    /// `revoke_previous`, every other active token of the service is revoked in the same
    /// transaction (the answer lists them); without it they keep working, for a rollout that
    /// replaces the token before revoking the old one.
    ///
    /// The new token's value is read straight into a [`SecretValue`] and never appears in an
    /// [`Error`].
    pub async fn rotate_service_token(
        &self,
        service_id: &str,
        revoke_previous: bool,
    ) -> Result<RotatedServiceToken, Error> {
        let body = RotateServiceToken {
            revoke_previous: Some(revoke_previous),
        };
        let req = self
            .request(Method::POST, &["services", service_id, "tokens"])
            .json(&body);
        let (status, body) = self.send(req).await?;
        decode_secret_bearing(
            status,
            Zeroizing::new(body),
            "a rotated service token",
            "the new service token",
        )
    }

    /// `DELETE /services/{service_id}/tokens`: revokes every active token of the service, from
    /// the very next request on. Returns the tokens it revoked (none if the server answers
    /// `null`).
    pub async fn revoke_service_tokens(
        &self,
        service_id: &str,
    ) -> Result<Vec<ServiceToken>, Error> {
        let req = self.request(Method::DELETE, &["services", service_id, "tokens"]);
        let (status, body) = self.send(req).await?;
        Ok(decode::<Vec<ServiceToken>>(status, &body)?
            .result
            .unwrap_or_default())
    }

    /// `DELETE /services/{service_id}/tokens/{token_id}`: revokes one token. Returns what it
    /// revoked: that token, now `revoked`. A token the service does not have is an
    /// [`Error::Api`] with status 404, and one already revoked an [`Error::Api`] with status 409
    /// (`token_already_revoked`); neither is an empty success.
    pub async fn revoke_service_token(
        &self,
        service_id: &str,
        token_id: &str,
    ) -> Result<Vec<ServiceToken>, Error> {
        let req = self.request(
            Method::DELETE,
            &["services", service_id, "tokens", token_id],
        );
        let (status, body) = self.send(req).await?;
        Ok(decode::<Vec<ServiceToken>>(status, &body)?
            .result
            .unwrap_or_default())
    }

    // ---- edge nodes of the instance (instance operator) ----
    //
    // Like the instance's accounts, these do not use the client's `account_id`.

    /// `POST /client/v4/nodes`: registers an edge node. Only the instance operator's token may.
    ///
    /// The answer holds the node's token, the only time the server shows it: like a created
    /// API token, it is read straight into a [`SecretValue`] and never appears in an [`Error`].
    pub async fn create_node(&self, name: &str) -> Result<CreatedNode, Error> {
        let body = CreateNode {
            name: name.to_owned(),
        };
        let req = self.nodes_request(Method::POST, &[]).json(&body);
        let (status, body) = self.send(req).await?;
        decode_secret_bearing(
            status,
            Zeroizing::new(body),
            "a created node",
            "the node token",
        )
    }

    /// `GET /client/v4/nodes`: every node, revoked ones included, oldest first.
    pub async fn list_nodes(&self) -> Result<Page<Node>, Error> {
        self.page(self.nodes_request(Method::GET, &[])).await
    }

    /// `GET /client/v4/nodes/{node_id}`: one node.
    pub async fn get_node(&self, node_id: &str) -> Result<Node, Error> {
        self.one(self.nodes_request(Method::GET, &[node_id])).await
    }

    /// `DELETE /client/v4/nodes/{node_id}`: revokes the node's token. Returns the node, now
    /// with its `revoked` time. A node revoked before is an [`Error::Api`] with status 409
    /// (`token_already_revoked`).
    pub async fn revoke_node(&self, node_id: &str) -> Result<Node, Error> {
        self.one(self.nodes_request(Method::DELETE, &[node_id]))
            .await
    }

    // ---- the KEK ----

    /// `GET /client/v4/kek`: the KEK's versions and the progress of a rotation (instance
    /// operator).
    pub async fn kek_status(&self) -> Result<KekStatus, Error> {
        self.one(self.v4_request(Method::GET, &["kek"])).await
    }

    /// `POST /client/v4/kek/rotations`: makes a new KEK version active; the keys of the previous
    /// one are rewrapped in the background. 409 `kek_rotation_running` while an earlier
    /// rotation has keys left.
    pub async fn rotate_kek(&self) -> Result<KekRotationStarted, Error> {
        self.one(self.v4_request(Method::POST, &["kek", "rotations"]))
            .await
    }

    // ---- the operator token ----

    /// `POST /client/v4/operator/token/rotate` (instance operator): a new operator token; the
    /// one this client holds stops working as soon as the server answers. The value is read
    /// straight into a [`SecretValue`], as for [`Client::create_token`].
    pub async fn rotate_operator_token(&self) -> Result<CreatedToken, Error> {
        let req = self.v4_request(Method::POST, &["operator", "token", "rotate"]);
        let (status, body) = self.send(req).await?;
        decode_created_token(status, Zeroizing::new(body))
    }

    // ---- the audit log ----

    /// `GET /audit_logs`: one page of the account's audit log, newest first unless
    /// `filter.direction` says otherwise. Only a super_admin of the account (or the instance
    /// operator) may read it.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Page<AuditLogEntry>, Error> {
        let req = self
            .account_request(Method::GET, &["audit_logs"])
            .query(filter);
        self.page(req).await
    }

    /// `GET /audit_logs/verify`: checks the account's audit hash chain and its signed
    /// checkpoints. A broken chain is a successful call whose result has `ok: false` and names
    /// the first bad entry; it is up to the caller to treat that as a failure.
    pub async fn verify_audit(&self) -> Result<AuditVerification, Error> {
        self.one(self.account_request(Method::GET, &["audit_logs", "verify"]))
            .await
    }

    // ---- stores ----

    /// `GET /stores`.
    pub async fn list_stores(
        &self,
        page: Option<u32>,
        per_page: Option<u32>,
        order: Option<StoreOrder>,
        direction: Option<Direction>,
    ) -> Result<Page<Store>, Error> {
        let query = ListQuery {
            page,
            per_page,
            order,
            direction,
            search: None,
            scopes: None,
        };
        let req = self.request(Method::GET, &["stores"]).query(&query);
        self.page(req).await
    }

    /// `POST /stores`.
    pub async fn create_store(&self, name: &str) -> Result<Store, Error> {
        let body = CreateStore {
            name: name.to_owned(),
        };
        let req = self.request(Method::POST, &["stores"]).json(&body);
        self.one(req).await
    }

    /// `GET /stores/{store_id}`.
    pub async fn get_store(&self, store_id: &str) -> Result<Store, Error> {
        self.one(self.request(Method::GET, &["stores", store_id]))
            .await
    }

    /// `DELETE /stores/{store_id}`. Without `force`, a store holding secrets is refused
    /// (`store_not_empty`); with it, its secrets are deleted too.
    pub async fn delete_store(&self, store_id: &str, force: bool) -> Result<(), Error> {
        let mut req = self.request(Method::DELETE, &["stores", store_id]);
        if force {
            req = req.query(&[("force", "true")]);
        }
        self.none(req).await
    }

    // ---- secrets ----

    /// `GET /stores/{store_id}/secrets`: metadata only.
    pub async fn list_secrets(
        &self,
        store_id: &str,
        params: &ListSecrets,
    ) -> Result<Page<Secret>, Error> {
        let req = self
            .request(Method::GET, &["stores", store_id, "secrets"])
            .query(&params.query());
        self.page(req).await
    }

    /// `POST /stores/{store_id}/secrets`: creates every secret given, or none.
    pub async fn create_secrets(
        &self,
        store_id: &str,
        secrets: Vec<CreateSecret>,
    ) -> Result<Vec<Secret>, Error> {
        let req = self
            .request(Method::POST, &["stores", store_id, "secrets"])
            .json(&secrets);
        // The typed values are zeroized as soon as the body is built; the serialized body is a
        // plain buffer owned by reqwest until the request is sent.
        drop(secrets);
        self.one(req).await
    }

    /// `DELETE /stores/{store_id}/secrets` with a JSON array of secret ids.
    pub async fn bulk_delete_secrets(
        &self,
        store_id: &str,
        secret_ids: Vec<String>,
    ) -> Result<(), Error> {
        let req = self
            .request(Method::DELETE, &["stores", store_id, "secrets"])
            .json(&secret_ids);
        self.none(req).await
    }

    /// `GET /stores/{store_id}/secrets/{secret_id}`: metadata only.
    pub async fn get_secret(&self, store_id: &str, secret_id: &str) -> Result<Secret, Error> {
        let req = self.request(Method::GET, &["stores", store_id, "secrets", secret_id]);
        self.one(req).await
    }

    /// `PATCH /stores/{store_id}/secrets/{secret_id}`: only the fields given change.
    pub async fn update_secret(
        &self,
        store_id: &str,
        secret_id: &str,
        update: UpdateSecret,
    ) -> Result<Secret, Error> {
        let req = self
            .request(Method::PATCH, &["stores", store_id, "secrets", secret_id])
            .json(&update);
        drop(update);
        self.one(req).await
    }

    /// `DELETE /stores/{store_id}/secrets/{secret_id}`.
    pub async fn delete_secret(&self, store_id: &str, secret_id: &str) -> Result<(), Error> {
        let req = self.request(Method::DELETE, &["stores", store_id, "secrets", secret_id]);
        self.none(req).await
    }

    /// `POST /stores/{store_id}/secrets/{secret_id}/duplicate`: a new secret with the same value.
    pub async fn duplicate_secret(
        &self,
        store_id: &str,
        secret_id: &str,
        duplicate: DuplicateSecret,
    ) -> Result<Secret, Error> {
        let req = self
            .request(
                Method::POST,
                &["stores", store_id, "secrets", secret_id, "duplicate"],
            )
            .json(&duplicate);
        self.one(req).await
    }

    /// `GET /quota`.
    pub async fn quota(&self) -> Result<Quota, Error> {
        self.one(self.request(Method::GET, &["quota"])).await
    }

    // ---- plumbing ----

    /// A request to `/client/v4/accounts/{account_id}/secrets_store/{rest...}`.
    fn request(&self, method: Method, rest: &[&str]) -> RequestBuilder {
        let mut segments = vec!["secrets_store"];
        segments.extend_from_slice(rest);
        self.account_request(method, &segments)
    }

    /// A request to `/client/v4/accounts/{account_id}/{rest...}` (`rest` may be empty: the
    /// account itself).
    fn account_request(&self, method: Method, rest: &[&str]) -> RequestBuilder {
        let mut segments = vec!["client", "v4", "accounts", self.account_id.as_str()];
        segments.extend_from_slice(rest);
        let url = base_url::join(&self.root, &segments);
        self.http
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone())
    }

    /// A request to `/client/v4/accounts/{rest...}`: the instance's accounts, whatever the
    /// client's own account is.
    fn instance_request(&self, method: Method, rest: &[&str]) -> RequestBuilder {
        let mut segments = vec!["client", "v4", "accounts"];
        segments.extend_from_slice(rest);
        let url = base_url::join(&self.root, &segments);
        self.http
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone())
    }

    /// A request to `/client/v4/nodes/{rest...}`: the instance's edge nodes.
    fn nodes_request(&self, method: Method, rest: &[&str]) -> RequestBuilder {
        let mut segments = vec!["nodes"];
        segments.extend_from_slice(rest);
        self.v4_request(method, &segments)
    }

    /// A request to `/client/v4/{rest...}`.
    fn v4_request(&self, method: Method, rest: &[&str]) -> RequestBuilder {
        let mut segments = vec!["client", "v4"];
        segments.extend_from_slice(rest);
        let url = base_url::join(&self.root, &segments);
        self.http
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone())
    }

    /// Sends the request and reads the whole answer.
    async fn send(&self, req: RequestBuilder) -> Result<(u16, Vec<u8>), Error> {
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status();
        if status.is_redirection() {
            let to = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(|s| snippet(s.as_bytes()))
                .unwrap_or_else(|| "nowhere".to_owned());
            return Err(Error::Decode {
                status: status.as_u16(),
                detail: format!(
                    "the server redirects to {to}; point the client at the final URL instead"
                ),
            });
        }
        let body = read_body(resp).await.map_err(|e| self.transport(e))?;
        Ok((status.as_u16(), body))
    }

    fn transport(&self, source: reqwest::Error) -> Error {
        let url = self.base_url();
        if source.is_connect() {
            let mut reason = connect_reason(&source);
            if self.root.scheme() == "https" && reason.contains("InvalidContentType") {
                // What rustls reports when the other side answers in plain HTTP.
                reason.push_str(" (the server does not seem to speak TLS: try http://)");
            }
            Error::Connect {
                url,
                reason,
                source,
            }
        } else if source.is_timeout() {
            Error::Timeout { url, source }
        } else {
            Error::Transport {
                url,
                reason: connect_reason(&source),
                source,
            }
        }
    }

    /// A response whose `result` must be present.
    async fn one<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, Error> {
        let (status, body) = self.send(req).await?;
        let envelope = decode::<T>(status, &body)?;
        envelope.result.ok_or_else(|| Error::Decode {
            status,
            detail: "the response has no result".to_owned(),
        })
    }

    /// A response whose `result` is `null` (deletes).
    async fn none(&self, req: RequestBuilder) -> Result<(), Error> {
        let (status, body) = self.send(req).await?;
        decode::<serde::de::IgnoredAny>(status, &body).map(drop)
    }

    /// A list response: an array `result` and a `result_info`.
    async fn page<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<Page<T>, Error> {
        let (status, body) = self.send(req).await?;
        let envelope = decode::<Vec<T>>(status, &body)?;
        let result_info = envelope.result_info.ok_or_else(|| Error::Decode {
            status,
            detail: "the list response has no result_info".to_owned(),
        })?;
        Ok(Page {
            items: envelope.result.unwrap_or_default(),
            result_info,
        })
    }
}

/// Reads a v4 envelope. A non-2xx status or `success: false` is an [`Error::Api`]; a body that
/// is not an envelope, or a result of the wrong shape, is an [`Error::Decode`].
fn decode<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<Envelope<T>, Error> {
    let envelope: Envelope<serde_json::Value> =
        serde_json::from_slice(body).map_err(|_| Error::Decode {
            status,
            detail: snippet(body),
        })?;
    if !(200..300).contains(&status) || !envelope.success {
        return Err(api_error(status, envelope.errors));
    }
    let result = match envelope.result {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => Some(
            serde_json::from_value::<T>(value).map_err(|e| Error::Decode {
                status,
                detail: format!("the result does not have the expected shape: {e}"),
            })?,
        ),
    };
    Ok(Envelope {
        success: envelope.success,
        errors: envelope.errors,
        messages: envelope.messages,
        result,
        result_info: envelope.result_info,
    })
}

/// The whole body of `resp`, taken over rather than copied: `Vec::from` keeps the buffer the
/// bytes were received in when nothing else shares it, where `to_vec()` would leave that buffer
/// behind, unwiped, next to the copy (the answer to a token create holds the new token).
async fn read_body(resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    Ok(Vec::from(resp.bytes().await?))
}

/// Reads the answer to a token create: see [`decode_secret_bearing`].
fn decode_created_token(status: u16, body: Zeroizing<Vec<u8>>) -> Result<CreatedToken, Error> {
    decode_secret_bearing(status, body, "a created token", "the new token")
}

/// Reads an answer whose result holds a secret (a new API or service token). A success is
/// decoded straight into `T` (no intermediate copy of the value); anything else becomes an
/// error that never quotes the body, since a body that is almost an envelope may still hold the
/// value. `what` names the expected result, `holds` the secret it carries.
fn decode_secret_bearing<T: DeserializeOwned>(
    status: u16,
    body: Zeroizing<Vec<u8>>,
    what: &str,
    holds: &str,
) -> Result<T, Error> {
    let success = (200..300).contains(&status);
    if success
        && let Ok(envelope) = serde_json::from_slice::<Envelope<T>>(&body)
        && envelope.success
    {
        return envelope.result.ok_or_else(|| Error::Decode {
            status,
            detail: "the response has no result".to_owned(),
        });
    }
    let hidden = |problem: String| Error::Decode {
        status,
        detail: format!("{problem} (the body is not shown: it may hold {holds})"),
    };
    match serde_json::from_slice::<Envelope<serde::de::IgnoredAny>>(&body) {
        // An error envelope: codes and messages only, never the value.
        Ok(envelope) if !success || !envelope.success => Err(api_error(status, envelope.errors)),
        Ok(_) => Err(hidden(format!(
            "the result does not have the shape of {what}"
        ))),
        Err(_) => Err(hidden("the response is not a v4 envelope".to_owned())),
    }
}

/// The error of a non-2xx or `success: false` envelope.
fn api_error(status: u16, errors: Vec<ApiMessage>) -> Error {
    let (code, message) = match errors.first() {
        Some(first) => (first.code, first.message.clone()),
        None => (0, format!("HTTP {status} without error details")),
    };
    Error::Api {
        status,
        code,
        message,
        errors,
    }
}

#[cfg(test)]
mod tests;
