//! The permission matrix: every endpoint × every caller (the operator and the four roles), then
//! every endpoint with a token of another account.
//!
//! The table of routes is data: a new endpoint is one row of [`routes`], with the permission it
//! needs. The role table itself is written out here from the contract (section 7) rather than
//! taken from core, so a change to core's policy that breaks the contract fails here.

use axum::http::{Method, StatusCode};
use coffer_api::ErrorCode;
use serde_json::{Value, json};

use crate::support::*;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any member of the account (the answer is scoped to the caller, never refused).
    Member,
    /// View the account itself: its record and its quota.
    Account,
    /// View stores' and secrets' metadata.
    Read,
    /// Create, update, duplicate, delete stores and secrets.
    Edit,
    /// Deploy services (bind secrets to them), delete them, rotate and revoke their tokens.
    Bind,
    /// Manage the account's tokens.
    Manage,
    /// The instance operator only.
    Operator,
}

impl Need {
    /// The permission a refusal names.
    pub fn permission(self) -> &'static str {
        match self {
            Need::Member | Need::Read => "secrets_store:read",
            Need::Account => "account:read",
            Need::Edit => "secrets_store:edit",
            Need::Bind => "secrets_store:bind",
            Need::Manage => "account:manage",
            Need::Operator => "instance:operator",
        }
    }
}

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The token `coffer init` printed.
    Operator,
    /// A token of the account made through the API with this role.
    Role(&'static str),
}

/// The contract's role table (section 7): reporter views metadata; deployer views and binds;
/// secrets_store_admin creates, updates, duplicates, deletes and views (but does not bind);
/// super_admin does everything in its account, tokens included. Only the operator manages
/// accounts.
pub fn allowed(caller: Caller, need: Need) -> bool {
    let Caller::Role(role) = caller else {
        return true;
    };
    match need {
        Need::Member | Need::Account | Need::Read => true,
        Need::Edit => matches!(role, "super_admin" | "secrets_store_admin"),
        Need::Bind => matches!(role, "super_admin" | "secrets_store_deployer"),
        Need::Manage => role == "super_admin",
        Need::Operator => false,
    }
}

/// The decision on the instance operator's reach (docs/threat-model.md), written out here
/// rather than taken from core: in an account other than its own, the operator administers the
/// account (sees it and its quota, manages its tokens, reads its audit log; creates, deletes and
/// sets quotas of accounts), never its contents: no store, secret or service, read or written,
/// and no binding. Of tokens it creates only an account's first, a super_admin.
pub fn operator_reaches(need: Need) -> bool {
    matches!(
        need,
        Need::Member | Need::Account | Need::Manage | Need::Operator
    )
}

/// What a successful call consumes, so every allowed call gets its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fresh {
    Nothing,
    /// `{x}` is a new secret in the shared store.
    Secret,
    /// `{s}` is a new, empty store.
    Store,
    /// `{t}` is a new token of the account.
    Token,
    /// `{v}` is a new service (bound to the shared secret) and `{w}` its token.
    Service,
    /// `{d}` is a new edge node.
    Node,
}

/// A response check beyond the status, for an allowed call: `(response, is_operator,
/// caller's account)`.
pub type Verify = fn(&Resp, bool, &str) -> Result<(), String>;

/// One endpoint.
#[derive(Clone)]
pub struct Route {
    pub name: &'static str,
    pub method: Method,
    /// What `template` is under: `/client/v4/accounts` ([`V4`]), or `/client/v4` for the
    /// instance-level routes (nodes).
    pub root: &'static str,
    /// Under `root`, over `{a}` (account), `{s}` (store), `{x}` (secret), `{t}` (token), `{v}`
    /// (service), `{w}` (service token), `{d}` (node) and `{n}` (a fresh name).
    pub template: &'static str,
    /// A JSON body over the same placeholders.
    pub body: Option<&'static str>,
    pub need: Need,
    /// The answer an allowed caller gets where the fixture makes a 2xx impossible.
    pub allowed_answer: Option<ErrorCode>,
    pub fresh: Fresh,
    pub verify: Option<Verify>,
    /// How a caller the route's need refuses is answered, when not 403 `forbidden` naming the
    /// permission: a deploy answers 403 10021 naming its first binding and the caller's role.
    pub refusal: Refusal,
}

/// How a refused call is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 403 1101 `forbidden`, naming the permission.
    Forbidden,
    /// 403 10021 `binding_authorization_failed`, naming this binding and the caller's role.
    Binding(&'static str),
}

/// The ids a call fills the placeholders with.
#[derive(Debug, Clone)]
pub struct Ids {
    pub a: String,
    pub s: String,
    pub x: String,
    pub t: String,
    pub v: String,
    pub w: String,
    pub d: String,
    pub n: String,
}

impl Ids {
    fn fill(&self, text: &str) -> String {
        text.replace("{a}", &self.a)
            .replace("{s}", &self.s)
            .replace("{x}", &self.x)
            .replace("{t}", &self.t)
            .replace("{v}", &self.v)
            .replace("{w}", &self.w)
            .replace("{d}", &self.d)
            .replace("{n}", &self.n)
    }

    /// Random ids that name nothing, in account `a`.
    pub fn random(a: &str) -> Ids {
        Ids {
            a: a.to_owned(),
            s: random_id(),
            x: random_id(),
            t: random_id(),
            v: random_id(),
            w: random_id(),
            d: random_id(),
            n: format!("n{}", random_tag()),
        }
    }
}

impl Route {
    pub fn uri(&self, ids: &Ids) -> String {
        format!("{}{}", self.root, ids.fill(self.template))
    }

    pub fn body(&self, ids: &Ids) -> Option<Value> {
        self.body
            .map(|b| serde_json::from_str(&ids.fill(b)).expect("route body template"))
    }

    /// Whether the route names an account (and so can be aimed at another one).
    pub fn has_account(&self) -> bool {
        self.template.contains("{a}")
    }

    /// Calls the route with `authorization`.
    pub async fn call(&self, h: &Harness, ids: &Ids, authorization: Option<&str>) -> Resp {
        h.send_as(
            self.method.clone(),
            &self.uri(ids),
            authorization,
            self.body(ids).as_ref(),
        )
        .await
    }
}

fn sees_only_its_own_account(r: &Resp, operator: bool, account: &str) -> Result<(), String> {
    let items = r.json()["result"].as_array().cloned().unwrap_or_default();
    let ids: Vec<&str> = items.iter().filter_map(|a| a["id"].as_str()).collect();
    if operator {
        if ids.len() >= 2 && ids.contains(&account) {
            return Ok(());
        }
        return Err(format!(
            "the operator should see every account, saw {ids:?}"
        ));
    }
    if ids == [account] {
        Ok(())
    } else {
        Err(format!(
            "should see only its own account {account}, saw {ids:?}"
        ))
    }
}

/// Every endpoint, with the permission it needs.
pub fn routes() -> Vec<Route> {
    let row = |name, method, template, body, need, fresh| Route {
        name,
        method,
        root: V4,
        template,
        body,
        need,
        allowed_answer: None,
        fresh,
        verify: None,
        refusal: Refusal::Forbidden,
    };
    use Fresh::*;
    use Need::*;
    vec![
        // ---- accounts ----
        Route {
            verify: Some(sees_only_its_own_account),
            ..row("list accounts", Method::GET, "", None, Member, Nothing)
        },
        row(
            "create account",
            Method::POST,
            "",
            Some(r#"{"name": "{n}"}"#),
            Operator,
            Nothing,
        ),
        row("get account", Method::GET, "/{a}", None, Account, Nothing),
        row(
            "set account quota",
            Method::PATCH,
            "/{a}",
            Some(r#"{"secrets_quota": null}"#),
            Operator,
            Nothing,
        ),
        // PATCH is the operator's whatever the body holds: an empty one is no exception.
        row(
            "empty account update",
            Method::PATCH,
            "/{a}",
            Some("{}"),
            Operator,
            Nothing,
        ),
        // The callers' account is the operator's own, which cannot be deleted: 409 for it.
        Route {
            allowed_answer: Some(ErrorCode::OperatorProtected),
            ..row(
                "delete account",
                Method::DELETE,
                "/{a}",
                None,
                Operator,
                Nothing,
            )
        },
        // ---- audit log ----
        row(
            "list audit log",
            Method::GET,
            "/{a}/audit_logs",
            None,
            Manage,
            Nothing,
        ),
        row(
            "verify audit log",
            Method::GET,
            "/{a}/audit_logs/verify",
            None,
            Manage,
            Nothing,
        ),
        // ---- tokens ----
        row(
            "list tokens",
            Method::GET,
            "/{a}/tokens",
            None,
            Manage,
            Nothing,
        ),
        row(
            "create token",
            Method::POST,
            "/{a}/tokens",
            Some(r#"{"name": "{n}", "role": "secrets_store_reporter"}"#),
            Manage,
            Nothing,
        ),
        row(
            "get token",
            Method::GET,
            "/{a}/tokens/{t}",
            None,
            Manage,
            Nothing,
        ),
        row(
            "revoke token",
            Method::DELETE,
            "/{a}/tokens/{t}",
            None,
            Manage,
            Token,
        ),
        // ---- secrets store ----
        row(
            "list stores",
            Method::GET,
            "/{a}/secrets_store/stores",
            None,
            Read,
            Nothing,
        ),
        row(
            "create store",
            Method::POST,
            "/{a}/secrets_store/stores",
            Some(r#"{"name": "{n}"}"#),
            Edit,
            Nothing,
        ),
        row(
            "get store",
            Method::GET,
            "/{a}/secrets_store/stores/{s}",
            None,
            Read,
            Nothing,
        ),
        row(
            "delete store",
            Method::DELETE,
            "/{a}/secrets_store/stores/{s}",
            None,
            Edit,
            Store,
        ),
        row(
            "list secrets",
            Method::GET,
            "/{a}/secrets_store/stores/{s}/secrets",
            None,
            Read,
            Nothing,
        ),
        row(
            "create secrets",
            Method::POST,
            "/{a}/secrets_store/stores/{s}/secrets",
            Some(r#"[{"name": "{n}", "value": "v", "scopes": ["workers"]}]"#),
            Edit,
            Nothing,
        ),
        row(
            "bulk delete secrets",
            Method::DELETE,
            "/{a}/secrets_store/stores/{s}/secrets",
            Some(r#"["{x}"]"#),
            Edit,
            Secret,
        ),
        row(
            "get secret",
            Method::GET,
            "/{a}/secrets_store/stores/{s}/secrets/{x}",
            None,
            Read,
            Nothing,
        ),
        row(
            "update secret",
            Method::PATCH,
            "/{a}/secrets_store/stores/{s}/secrets/{x}",
            Some(r#"{"comment": "changed {n}"}"#),
            Edit,
            Secret,
        ),
        row(
            "delete secret",
            Method::DELETE,
            "/{a}/secrets_store/stores/{s}/secrets/{x}",
            None,
            Edit,
            Secret,
        ),
        row(
            "duplicate secret",
            Method::POST,
            "/{a}/secrets_store/stores/{s}/secrets/{x}/duplicate",
            Some(r#"{"name": "{n}", "scopes": ["workers"]}"#),
            Edit,
            Nothing,
        ),
        row(
            "quota",
            Method::GET,
            "/{a}/secrets_store/quota",
            None,
            Account,
            Nothing,
        ),
        // ---- services, bindings and service tokens ----
        Route {
            refusal: Refusal::Binding("BOUND"),
            ..row(
                "deploy service",
                Method::POST,
                "/{a}/secrets_store/services",
                Some(
                    r#"{"name": "{n}", "secrets_store_secrets": [{"binding": "BOUND", "store_id": "{s}", "secret_name": "SHARED"}], "secrets_store_stores": [{"binding": "ALL", "store_id": "{s}"}]}"#,
                ),
                Bind,
                Nothing,
            )
        },
        row(
            "list services",
            Method::GET,
            "/{a}/secrets_store/services",
            None,
            Read,
            Nothing,
        ),
        row(
            "get service",
            Method::GET,
            "/{a}/secrets_store/services/{v}",
            None,
            Read,
            Nothing,
        ),
        row(
            "delete service",
            Method::DELETE,
            "/{a}/secrets_store/services/{v}",
            None,
            Bind,
            Service,
        ),
        row(
            "list service tokens",
            Method::GET,
            "/{a}/secrets_store/services/{v}/tokens",
            None,
            Read,
            Nothing,
        ),
        row(
            "rotate service token",
            Method::POST,
            "/{a}/secrets_store/services/{v}/tokens",
            Some(r#"{"revoke_previous": false}"#),
            Bind,
            Nothing,
        ),
        row(
            "revoke service tokens",
            Method::DELETE,
            "/{a}/secrets_store/services/{v}/tokens",
            None,
            Bind,
            Service,
        ),
        row(
            "revoke service token",
            Method::DELETE,
            "/{a}/secrets_store/services/{v}/tokens/{w}",
            None,
            Bind,
            Service,
        ),
        // ---- edge nodes (instance-level) ----
        Route {
            root: API,
            ..row("list nodes", Method::GET, "/nodes", None, Operator, Nothing)
        },
        Route {
            root: API,
            ..row(
                "create node",
                Method::POST,
                "/nodes",
                Some(r#"{"name": "{n}"}"#),
                Operator,
                Nothing,
            )
        },
        Route {
            root: API,
            ..row(
                "get node",
                Method::GET,
                "/nodes/{d}",
                None,
                Operator,
                Nothing,
            )
        },
        Route {
            root: API,
            ..row(
                "revoke node",
                Method::DELETE,
                "/nodes/{d}",
                None,
                Operator,
                Fresh::Node,
            )
        },
    ]
}

/// The instance of the matrix: account A (the operator's) with a token per role, account B with
/// a super_admin, and in each a store holding a secret.
pub struct World {
    pub h: Harness,
    pub b: String,
    /// A's callers: the operator and one token per role.
    pub callers: Vec<(Caller, String)>,
    pub b_admin: IssuedToken,
    /// Ids in A of things that exist.
    pub a_ids: Ids,
    /// Ids in B of things that exist.
    pub b_ids: Ids,
}

pub async fn world() -> World {
    let h = Harness::new().await;
    let b = h.create_account("b").await;
    let mut callers = vec![(Caller::Operator, h.token.clone())];
    for role in ROLES {
        let t = h.issue_token(&h.account, role, role).await;
        callers.push((Caller::Role(role), t.value));
    }
    let b_admin = h.issue_token(&b, "b admin", "super_admin").await;

    let store = h.create_store("shared").await;
    let secret = h.create_secret(&store, "SHARED", "shared-value").await;
    let target = h
        .issue_token(&h.account, "target", "secrets_store_reporter")
        .await;
    let service = h
        .deploy_secrets("shared-service", &[("BOUND", &store, "SHARED")])
        .await;
    let node = h.create_node("shared-node").await;
    let a_ids = Ids {
        a: h.account.clone(),
        s: store,
        x: secret["id"].as_str().unwrap().to_owned(),
        t: target.id,
        v: service.id.clone(),
        w: service_token_id(service.token()),
        d: node.id,
        n: "unused".into(),
    };

    // B's store and secret, made with B's own token.
    let r = h
        .send_as(
            Method::POST,
            &format!("{V4}/{b}/secrets_store/stores"),
            Some(&b_admin.bearer()),
            Some(&json!({ "name": "b-store" })),
        )
        .await;
    let b_store = assert_hex_id(&assert_ok(&r)["id"]);
    let r = h
        .send_as(
            Method::POST,
            &format!("{V4}/{b}/secrets_store/stores/{b_store}/secrets"),
            Some(&b_admin.bearer()),
            Some(&json!([secret_item("B_SECRET", "b-value", &["workers"])])),
        )
        .await;
    let b_secret = assert_hex_id(&assert_ok(&r)[0]["id"]);
    let r = h
        .send_as(
            Method::POST,
            &format!("{V4}/{b}/secrets_store/services"),
            Some(&b_admin.bearer()),
            Some(&deploy_body(
                "b-service",
                &[("B_BOUND", &b_store, "B_SECRET")],
            )),
        )
        .await;
    let b_service = assert_ok(&r);
    let b_ids = Ids {
        a: b.clone(),
        s: b_store,
        x: b_secret,
        t: b_admin.id.clone(),
        v: assert_hex_id(&b_service["id"]),
        w: service_token_id(b_service["service_token"].as_str().expect("service_token")),
        // Nodes belong to the instance, not to B: routes naming one never name an account.
        d: random_id(),
        n: "unused".into(),
    };
    World {
        h,
        b,
        callers,
        b_admin,
        a_ids,
        b_ids,
    }
}

impl World {
    /// Ids for one call of `route` in A: fresh ones where a success consumes them.
    async fn ids_for(&self, route: &Route) -> Ids {
        let h = &self.h;
        let mut ids = Ids {
            n: format!("n{}", random_tag()),
            ..self.a_ids.clone()
        };
        match route.fresh {
            Fresh::Nothing => {}
            Fresh::Secret => {
                let s = h.create_secret(&ids.s, &ids.n, "fresh-value").await;
                ids.x = s["id"].as_str().unwrap().to_owned();
                ids.n = format!("n{}", random_tag());
            }
            Fresh::Store => ids.s = h.create_store(&format!("fresh-{}", random_tag())).await,
            Fresh::Token => {
                ids.t = h
                    .issue_token(&h.account, "to revoke", "secrets_store_reporter")
                    .await
                    .id;
            }
            Fresh::Service => {
                let svc = h
                    .deploy_secrets(
                        &format!("fresh-{}", random_tag()),
                        &[("BOUND", &ids.s, "SHARED")],
                    )
                    .await;
                ids.v = svc.id.clone();
                ids.w = service_token_id(svc.token());
            }
            Fresh::Node => ids.d = h.create_node(&format!("fresh-{}", random_tag())).await.id,
        }
        ids
    }

    /// Everything a write could change: A's stores, secrets, services (with their tokens) and
    /// quota, the change log head, every account and every token, and every node.
    pub async fn state(&self) -> (Snapshot, Value) {
        let mut identity = self.h.identity_snapshot().await;
        if let Value::Array(items) = &mut identity {
            items.push(json!({ "nodes": self.h.nodes_state().await }));
        }
        (self.h.snapshot().await, identity)
    }
}

/// `(status, code, message)` of an error envelope.
fn error_of(r: &Resp) -> Option<(StatusCode, u64, String)> {
    let v: Value = serde_json::from_slice(&r.bytes).ok()?;
    if v["success"] != json!(false) {
        return None;
    }
    let e = &v["errors"][0];
    Some((
        r.status,
        e["code"].as_u64()?,
        e["message"].as_str()?.to_owned(),
    ))
}

fn describe(r: &Resp) -> String {
    format!("{} {}", r.status.as_u16(), r.text())
}

#[tokio::test]
async fn every_role_on_every_endpoint() {
    let w = world().await;
    let h = &w.h;
    let mut failures = Vec::new();
    for route in routes() {
        for (caller, token) in &w.callers {
            let ids = w.ids_for(&route).await;
            let expect_allowed = allowed(*caller, route.need);
            let before = if expect_allowed {
                None
            } else {
                Some(w.state().await)
            };
            let r = route.call(h, &ids, Some(&format!("Bearer {token}"))).await;
            let case = format!(
                "{caller:?} on {} ({} {})",
                route.name, route.method, route.template
            );
            if expect_allowed {
                let ok = match route.allowed_answer {
                    None => r.status.is_success(),
                    Some(code) => error_of(&r).is_some_and(|(status, c, _)| {
                        status.as_u16() == code.http_status() && c == u64::from(code.code())
                    }),
                };
                if !ok {
                    let want = route.allowed_answer.map_or("2xx".to_owned(), |c| {
                        format!("{} {}", c.http_status(), c.code())
                    });
                    failures.push(format!("{case}: expected {want}, got {}", describe(&r)));
                } else if let Some(verify) = route.verify
                    && let Err(e) = verify(&r, *caller == Caller::Operator, &h.account)
                {
                    failures.push(format!("{case}: {e}"));
                }
            } else {
                let permission = route.need.permission();
                let (code, needles) = match (route.refusal, caller) {
                    (Refusal::Forbidden, _) => (1101, vec![permission.to_owned()]),
                    (Refusal::Binding(binding), Caller::Role(role)) => (
                        ErrorCode::BindingAuthorizationFailed.code(),
                        vec![format!("binding {binding}"), (*role).to_owned()],
                    ),
                    (Refusal::Binding(_), Caller::Operator) => unreachable!("never refused"),
                };
                let denied = error_of(&r).is_some_and(|(status, c, message)| {
                    status == StatusCode::FORBIDDEN
                        && c == u64::from(code)
                        && needles.iter().all(|n| message.contains(n.as_str()))
                });
                if !denied {
                    failures.push(format!(
                        "{case}: expected 403 {code} naming {needles:?}, got {}",
                        describe(&r)
                    ));
                }
                if let Some(before) = before
                    && w.state().await != before
                {
                    failures.push(format!("{case}: a refused request wrote something"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the role × endpoint cases are wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What the operator could change in B, as B's super_admin sees it.
async fn b_state(w: &World) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for rel in [
        "/secrets_store/stores".to_owned(),
        format!("/secrets_store/stores/{}/secrets", w.b_ids.s),
        "/secrets_store/services".to_owned(),
        "/tokens".to_owned(),
    ] {
        let r =
            w.h.get_as(&w.b_admin.value, &format!("{V4}/{}{rel}", w.b))
                .await;
        let mut items = assert_ok_list(&r).0;
        for t in &mut items {
            if let Some(o) = t.as_object_mut() {
                o.remove("last_used_on");
            }
        }
        out.push(items);
    }
    out
}

/// Every endpoint that names an account, as the operator on another account (B, with its own
/// super_admin, store, secret and service): what the operator may do there succeeds, the rest is
/// refused with 403 naming the permission (a deploy: 10021 naming the binding) and writes
/// nothing. Creating a token is the one special case: the operator makes an account's first
/// token, a super_admin, and no other.
#[tokio::test]
async fn the_operator_administers_other_accounts_not_their_contents() {
    let w = world().await;
    let h = &w.h;
    let operator = format!("Bearer {}", h.token);
    let mut failures = Vec::new();
    for route in routes().into_iter().filter(Route::has_account) {
        let mut ids = Ids {
            n: format!("n{}", random_tag()),
            ..w.b_ids.clone()
        };
        match (route.name, route.fresh) {
            // B itself stays: delete a fresh account instead.
            ("delete account", _) => ids.a = h.create_account("to-delete").await,
            (_, Fresh::Token) => {
                ids.t = h
                    .issue_token_by(&w.b_admin, &w.b, "to revoke", "secrets_store_reporter")
                    .await
                    .id;
            }
            _ => {}
        }
        let case = format!(
            "operator on B: {} ({} {})",
            route.name, route.method, route.template
        );
        let before = (w.state().await, b_state(&w).await);
        let r = route.call(h, &ids, Some(&operator)).await;
        if route.name == "create token" {
            // B has tokens already: the operator makes no more of them.
            let refused = error_of(&r).is_some_and(|(status, c, message)| {
                status == StatusCode::FORBIDDEN && c == 1101 && message.contains("first token")
            });
            if !refused {
                failures.push(format!(
                    "{case}: expected 403 1101 (first token only), got {}",
                    describe(&r)
                ));
            }
        } else if operator_reaches(route.need) {
            if !r.status.is_success() {
                failures.push(format!("{case}: expected 2xx, got {}", describe(&r)));
            }
            continue;
        } else {
            let (code, needles) = match route.refusal {
                Refusal::Forbidden => (1101, vec![route.need.permission().to_owned()]),
                Refusal::Binding(binding) => (
                    ErrorCode::BindingAuthorizationFailed.code(),
                    vec![format!("binding {binding}"), "instance operator".to_owned()],
                ),
            };
            let denied = error_of(&r).is_some_and(|(status, c, message)| {
                status == StatusCode::FORBIDDEN
                    && c == u64::from(code)
                    && needles.iter().all(|n| message.contains(n.as_str()))
            });
            if !denied {
                failures.push(format!(
                    "{case}: expected 403 {code} naming {needles:?}, got {}",
                    describe(&r)
                ));
            }
        }
        if (w.state().await, b_state(&w).await) != before {
            failures.push(format!("{case}: a refused request wrote something"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the operator-on-another-account cases are wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // A new account gets its first token from the operator: a super_admin only, and only once.
    let c = h.create_account("fresh").await;
    let create = |role: &str| {
        let body = json!({ "name": format!("first {role}"), "role": role });
        let uri = tokens_uri(&c, None);
        let auth = operator.clone();
        async move {
            h.send_as(Method::POST, &uri, Some(&auth), Some(&body))
                .await
        }
    };
    let r = create("secrets_store_deployer").await;
    assert_err(&r, ErrorCode::Forbidden, "first token, a super_admin");
    let first = issued(&create("super_admin").await);
    let r = create("super_admin").await;
    assert_err(&r, ErrorCode::Forbidden, "first token, a super_admin");
    // That super_admin makes the rest, and works in its account.
    let deployer = h
        .issue_token_by(&first, &c, "deployer", "secrets_store_deployer")
        .await;
    let r = h
        .get_as(&deployer.value, &format!("{V4}/{c}/secrets_store/stores"))
        .await;
    assert_ok_list(&r);
}

/// Every endpoint that names an account, with a token of another account: 404 account_not_found
/// whether the account exists or not, with the same message, and nothing written.
#[tokio::test]
async fn another_accounts_token_learns_nothing() {
    let w = world().await;
    let h = &w.h;
    // B's super_admin on A, and each of A's roles on B; the operator reaches both, so it only
    // meets missing accounts.
    let mut probes: Vec<(String, String, Option<Ids>)> = vec![(
        "B's super_admin".into(),
        w.b_admin.value.clone(),
        Some(w.a_ids.clone()),
    )];
    for (caller, token) in &w.callers {
        let target = match caller {
            Caller::Operator => None,
            Caller::Role(_) => Some(w.b_ids.clone()),
        };
        probes.push((format!("A's {caller:?}"), token.clone(), target));
    }

    let before = w.state().await;
    let mut failures = Vec::new();
    for route in routes().into_iter().filter(Route::has_account) {
        for (who, token, existing) in &probes {
            let auth = format!("Bearer {token}");
            let missing = route.call(h, &Ids::random(&random_id()), Some(&auth)).await;
            let case = format!(
                "{who} on {} ({} {})",
                route.name, route.method, route.template
            );
            match error_of(&missing) {
                Some((StatusCode::NOT_FOUND, 1200, _)) => {}
                _ => failures.push(format!(
                    "{case}, missing account: expected 404 1200, got {}",
                    describe(&missing)
                )),
            }
            let Some(ids) = existing else { continue };
            let ids = Ids {
                n: format!("n{}", random_tag()),
                ..ids.clone()
            };
            let r = route.call(h, &ids, Some(&auth)).await;
            match error_of(&r) {
                Some((StatusCode::NOT_FOUND, 1200, _)) => {}
                _ => failures.push(format!(
                    "{case}, existing account: expected 404 1200, got {}",
                    describe(&r)
                )),
            }
            if (r.status, error_of(&r).map(|e| (e.1, e.2)))
                != (missing.status, error_of(&missing).map(|e| (e.1, e.2)))
            {
                failures.push(format!(
                    "{case}: an existing account answers differently from a missing one: {} vs {}",
                    describe(&r),
                    describe(&missing)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the cross-account cases are wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        w.state().await == before,
        "a request on another account wrote something"
    );
    // B is as it was, and its token still works there.
    let r = h
        .get_as(
            &w.b_admin.value,
            &format!("{V4}/{}/secrets_store/stores/{}/secrets", w.b, w.b_ids.s),
        )
        .await;
    assert_eq!(names(&assert_ok_list(&r).0), ["B_SECRET"]);
}

/// Every row is a route the router serves: it answers something other than
/// "no such route" or "method not allowed" for the operator.
#[tokio::test]
async fn every_row_is_a_route() {
    let w = world().await;
    let rows = routes();
    assert!(rows.len() >= 30, "{} rows", rows.len());
    for route in &rows {
        let ids = w.ids_for(route).await;
        let r = route.call(&w.h, &ids, Some(&w.h.bearer())).await;
        let code = error_of(&r).map(|e| e.1);
        assert!(
            !matches!(code, Some(1203 | 1204)),
            "{}: {}",
            route.name,
            describe(&r)
        );
    }
}

/// A service token on every control-plane endpoint: 403 wrong_token_kind, whatever the route
/// needs, and an unknown or forged service token 401; nothing is written.
#[tokio::test]
async fn a_service_token_is_refused_on_every_endpoint() {
    let w = world().await;
    let h = &w.h;
    let svc = h
        .deploy_secrets("probe", &[("BOUND", &w.a_ids.s, "SHARED")])
        .await;
    let token = svc.token().to_owned();
    let forged = format!("{}{}", &token[.."coffersvc_".len() + 33], "A".repeat(43));
    let unknown = format!("coffersvc_{}_{}", random_id(), "A".repeat(43));
    let before = w.state().await;
    let mut failures = Vec::new();
    for route in routes() {
        let ids = Ids {
            n: format!("n{}", random_tag()),
            ..w.a_ids.clone()
        };
        let case = format!("{} ({} {})", route.name, route.method, route.template);
        let r = route.call(h, &ids, Some(&format!("Bearer {token}"))).await;
        match error_of(&r) {
            Some((StatusCode::FORBIDDEN, 1104, _)) => {}
            _ => failures.push(format!(
                "{case}, service token: expected 403 1104, got {}",
                describe(&r)
            )),
        }
        for (what, bad) in [("forged", &forged), ("unknown", &unknown)] {
            let r = route.call(h, &ids, Some(&format!("Bearer {bad}"))).await;
            match error_of(&r) {
                Some((StatusCode::UNAUTHORIZED, 1100, _)) => {}
                _ => failures.push(format!(
                    "{case}, {what} service token: expected 401 1100, got {}",
                    describe(&r)
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the service-token cases are wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        w.state().await == before,
        "a request with a service token wrote something"
    );
}

/// A node token on every control-plane endpoint: 403 wrong_token_kind, whatever the route
/// needs, and an unknown, forged or revoked node token 401; nothing is written.
#[tokio::test]
async fn a_node_token_is_refused_on_every_endpoint() {
    let w = world().await;
    let h = &w.h;
    let token = h.create_node("probe").await.token;
    let revoked = h.create_node("revoked-probe").await;
    assert_ok(
        &h.raw_abs(Method::DELETE, &nodes_uri(Some(&revoked.id)), None, "")
            .await,
    );
    let forged = format!("{}{}", &token[.."coffernode_".len() + 33], "A".repeat(43));
    let unknown = format!("coffernode_{}_{}", random_id(), "A".repeat(43));
    let before = w.state().await;
    let mut failures = Vec::new();
    for route in routes() {
        let ids = Ids {
            n: format!("n{}", random_tag()),
            ..w.a_ids.clone()
        };
        let case = format!("{} ({} {})", route.name, route.method, route.template);
        let r = route.call(h, &ids, Some(&format!("Bearer {token}"))).await;
        match error_of(&r) {
            Some((StatusCode::FORBIDDEN, 1104, message)) if message.contains("node token") => {}
            _ => failures.push(format!(
                "{case}, node token: expected 403 1104, got {}",
                describe(&r)
            )),
        }
        for (what, bad) in [
            ("forged", &forged),
            ("unknown", &unknown),
            ("revoked", &revoked.token),
        ] {
            let r = route.call(h, &ids, Some(&format!("Bearer {bad}"))).await;
            match error_of(&r) {
                Some((StatusCode::UNAUTHORIZED, 1100, _)) => {}
                _ => failures.push(format!(
                    "{case}, {what} node token: expected 401 1100, got {}",
                    describe(&r)
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the node-token cases are wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        w.state().await == before,
        "a request with a node token wrote something"
    );
}
