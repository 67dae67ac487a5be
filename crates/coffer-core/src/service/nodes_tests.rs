//! Edge nodes at the core level: operator-only management (audited, denials too), and node
//! tokens that authenticate only as nodes.

use std::sync::Arc;

use coffer_crypto::{FileKek, KekProvider, Plaintext, Token, TokenKind};
use coffer_storage::{Change, SqliteStorage, Storage};
use coffer_types::{
    AccountId, BindingName, NodeName, Scope, Scopes, SecretName, ServiceName, StoreName, TokenId,
};

use crate::{
    Coffer, Comment, CoreError, CreateSecretItem, DekPolicy, Deploy, Limits, NewToken, Permission,
    Principal, RequestContext, Resource, Role,
};

struct Fx {
    _dir: tempfile::TempDir,
    coffer: Coffer,
    op: Principal,
    account: AccountId,
    /// A super_admin of each other account, made by the operator as that account's first
    /// token (all the operator may create there).
    admins: tokio::sync::Mutex<std::collections::HashMap<AccountId, Principal>>,
}

async fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let kek: Arc<dyn KekProvider> = Arc::new(FileKek::create(&dir.path().join("kek")).unwrap());
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&dir.path().join("db")).unwrap());
    let coffer = Coffer::open(storage, kek, Limits::default(), DekPolicy::default())
        .await
        .unwrap();
    let (account, token) = coffer.bootstrap("acme").await.unwrap();
    let op = coffer
        .authenticate(token.expose_secret(), RequestContext::default())
        .await
        .unwrap();
    Fx {
        _dir: dir,
        coffer,
        op,
        account,
        admins: Default::default(),
    }
}

fn name(s: &str) -> NodeName {
    NodeName::parse(s).unwrap()
}

fn ctx() -> RequestContext {
    RequestContext {
        request_id: "req-1".into(),
        client: Some("192.0.2.7".into()),
    }
}

impl Fx {
    async fn node(&self, n: &str) -> (coffer_storage::NodeRecord, Token) {
        self.coffer.create_node(&self.op, name(n)).await.unwrap()
    }

    /// A real API token of `account` with `role` (never an operator), authenticated.
    async fn api_token(&self, account: AccountId, role: Role) -> (Token, Principal) {
        let creator = if account == self.account {
            self.op.clone()
        } else {
            self.admin_of(account).await
        };
        self.token_by(&creator, account, role).await
    }

    /// The super_admin of another account that makes its tokens.
    async fn admin_of(&self, account: AccountId) -> Principal {
        let mut admins = self.admins.lock().await;
        if let Some(admin) = admins.get(&account) {
            return admin.clone();
        }
        let admin = self.token_by(&self.op, account, Role::SuperAdmin).await.1;
        admins.insert(account, admin.clone());
        admin
    }

    async fn token_by(
        &self,
        creator: &Principal,
        account: AccountId,
        role: Role,
    ) -> (Token, Principal) {
        let (_, token) = self
            .coffer
            .create_token(
                creator,
                account,
                NewToken {
                    name: format!("t-{}", role.as_str()),
                    role,
                    expires: None,
                },
            )
            .await
            .unwrap();
        let who = self
            .coffer
            .authenticate(token.expose_secret(), ctx())
            .await
            .unwrap();
        (token, who)
    }

    /// A service token of a freshly deployed service.
    async fn service_token(&self) -> Token {
        let store = self
            .coffer
            .create_store(&self.op, self.account, StoreName::parse("prod").unwrap())
            .await
            .unwrap()
            .id;
        self.coffer
            .create_secrets(
                &self.op,
                self.account,
                store,
                vec![CreateSecretItem {
                    name: SecretName::parse("k").unwrap(),
                    value: Plaintext::new(b"v".to_vec()),
                    scopes: Scopes::new([Scope::Workers]),
                    comment: Comment::default(),
                }],
            )
            .await
            .unwrap();
        let deploy = Deploy {
            name: ServiceName::parse("svc").unwrap(),
            kind: Scope::Workers,
            secrets: vec![coffer_storage::SecretBindingRecord {
                binding: BindingName::parse("K").unwrap(),
                store_id: store,
                secret_name: SecretName::parse("k").unwrap(),
            }],
            stores: vec![],
        };
        self.coffer
            .deploy_service(&self.op, self.account, deploy)
            .await
            .unwrap()
            .token
            .unwrap()
    }

    async fn audit_payloads(&self, account: AccountId) -> Vec<serde_json::Value> {
        self.coffer
            .storage()
            .audit_entries(account, 0, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|r| serde_json::from_slice(&r.entry.payload).unwrap())
            .collect()
    }

    async fn head(&self) -> u64 {
        self.coffer.storage().change_head().await.unwrap()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The same token text with another secret part (same id, same length, canonical encoding).
fn with_other_secret(token: &Token) -> String {
    let text = token.expose_secret();
    let (head, secret) = text.split_at(text.len() - 43);
    let replacement = if secret.starts_with('A') { "B" } else { "A" };
    format!("{head}{replacement}{}", &secret[1..])
}

#[tokio::test]
async fn the_operator_registers_lists_reads_and_revokes_nodes() {
    let f = fx().await;
    let head = f.head().await;
    let (a, token) = f.node("edge-1.fra").await;
    assert_eq!(token.kind(), TokenKind::Node);
    assert_eq!(token.id(), a.id);
    assert!(token.expose_secret().starts_with("coffernode_"));
    assert_eq!(a.name, "edge-1.fra");
    assert_eq!(a.revoked, None);
    assert_eq!(
        a.hash,
        f.coffer.keys.node_mac().hash_token(&token).0,
        "stored: the HMAC under the node-token key"
    );
    assert_ne!(a.hash, f.coffer.keys.token_mac().hash_token(&token).0);
    assert_ne!(a.hash, f.coffer.keys.service_mac().hash_token(&token).0);

    // The change log carries the hash, never the token.
    let log = f.coffer.storage().changes_after(head, 100).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].change().unwrap(),
        Change::NodePut {
            node_id: a.id,
            name: "edge-1.fra".into(),
            hash_hex: hex(&a.hash),
        }
    );
    assert!(!String::from_utf8_lossy(&log[0].payload).contains(token.expose_secret()));

    let (b, _) = f.node("edge-2").await;
    assert_eq!(
        f.coffer.list_nodes(&f.op).await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(f.coffer.get_node(&f.op, a.id).await.unwrap(), a);

    // One active node per name; the name is free again once it is revoked.
    match f.coffer.create_node(&f.op, name("edge-2")).await {
        Err(
            e @ CoreError::NameTaken {
                resource: Resource::Node,
                ..
            },
        ) => {
            assert!(e.to_string().contains("\"edge-2\""), "{e}");
        }
        other => panic!("a second active edge-2: {other:?}"),
    }
    let revoked = f.coffer.revoke_node(&f.op, b.id).await.unwrap();
    assert!(revoked.revoked.is_some());
    assert_eq!(f.coffer.get_node(&f.op, b.id).await.unwrap(), revoked);
    let (again, _) = f.node("edge-2").await;
    assert_ne!(again.id, b.id);
    assert!(matches!(
        f.coffer.revoke_node(&f.op, b.id).await,
        Err(CoreError::AlreadyRevoked)
    ));
    let unknown = TokenId::from_bytes([0x42; 16]);
    assert!(matches!(
        f.coffer.get_node(&f.op, unknown).await,
        Err(CoreError::NotFound(Resource::Node))
    ));
    assert!(matches!(
        f.coffer.revoke_node(&f.op, unknown).await,
        Err(CoreError::NotFound(Resource::Node))
    ));

    // Audited in the operator's account: ids and names, never the token or its hash.
    let entries = f.audit_payloads(f.account).await;
    let nodes: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["resource"]["type"] == "node")
        .collect();
    let actions: Vec<(&str, &str)> = nodes
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["resource"]["node_name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("create", "edge-1.fra"),
            ("create", "edge-2"),
            ("revoke", "edge-2"),
            ("create", "edge-2"),
        ],
        "one entry per change; reads and refused writes record nothing"
    );
    assert_eq!(nodes[0]["resource"]["node_id"], a.id.to_string());
    assert_eq!(nodes[2]["resource"]["node_id"], b.id.to_string());
    assert_eq!(nodes[0]["actor"]["operator"], true);
    assert_eq!(nodes[0]["outcome"], "success");
    let all = serde_json::to_string(&entries).unwrap();
    assert!(!all.contains(token.expose_secret()));
    assert!(!all.contains(&token.expose_secret()["coffernode_".len() + 33..]));
    assert!(!all.contains(&hex(&a.hash)));
}

#[tokio::test]
async fn everyone_but_the_operator_is_refused_and_the_refusal_audited() {
    let f = fx().await;
    let (node, _) = f.node("edge-1").await;
    let other = f.coffer.create_account(&f.op, "team-b").await.unwrap().id;
    let mut callers = Vec::new();
    for role in Role::ALL {
        callers.push(f.api_token(f.account, role).await.1);
        callers.push(f.api_token(other, role).await.1);
    }
    // An operator flag on a lesser role does not make an operator.
    callers.push(Principal {
        operator: true,
        role: Role::SecretsStoreAdmin,
        ..f.op.clone()
    });
    let head = f.head().await;
    let before = f.coffer.list_nodes(&f.op).await.unwrap();
    for who in &callers {
        let denied = |r: Result<_, CoreError>| {
            assert!(
                matches!(r, Err(CoreError::Forbidden(Permission::Operator))),
                "{:?}/{}: {:?}",
                who.role,
                who.account_id,
                r.map(|_| ())
            );
        };
        let audited_before = f.audit_payloads(who.account_id).await.len();
        denied(f.coffer.create_node(who, name("sneaky")).await.map(drop));
        denied(f.coffer.list_nodes(who).await.map(drop));
        denied(f.coffer.get_node(who, node.id).await.map(drop));
        denied(f.coffer.revoke_node(who, node.id).await.map(drop));
        let entries = f.audit_payloads(who.account_id).await;
        let denials: Vec<(&str, &str)> = entries[audited_before..]
            .iter()
            .map(|e| {
                assert_eq!(e["resource"]["type"], "node", "{e}");
                assert_eq!(e["reason"], "missing permission instance:operator", "{e}");
                assert_eq!(e["actor"]["token_id"], who.token_id.to_string());
                (
                    e["action"].as_str().unwrap(),
                    e["outcome"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            denials,
            [
                ("create", "denied"),
                ("list", "denied"),
                ("read", "denied"),
                ("revoke", "denied"),
            ],
            "each refusal is recorded in the caller's own account"
        );
    }
    assert_eq!(f.head().await, head, "nothing was written");
    assert_eq!(f.coffer.list_nodes(&f.op).await.unwrap(), before);
}

#[tokio::test]
async fn node_tokens_authenticate_only_as_nodes() {
    let f = fx().await;
    let (node, token) = f.node("edge-1").await;
    let text = token.expose_secret();

    assert_eq!(f.coffer.authenticate_node(text, ctx()).await.unwrap(), node);

    // Garbage, a made-up id and a wrong secret are plain failures.
    for bad in [
        "".to_owned(),
        "garbage".to_owned(),
        format!("coffernode_{}_{}", "ab".repeat(16), "A".repeat(43)),
        with_other_secret(&token),
        text.replace("coffernode_", "coffernode"),
    ] {
        let err = f.coffer.authenticate_node(&bad, ctx()).await.unwrap_err();
        assert!(
            matches!(err, CoreError::Unauthenticated(_)),
            "{bad:?}: {err:?}"
        );
        assert!(!err.to_string().contains(&text[20..]));
    }

    // Valid tokens of the other kinds: WrongTokenKind; invalid ones: Unauthenticated.
    let (api, _) = f.api_token(f.account, Role::SuperAdmin).await;
    let svc = f.service_token().await;
    for (other, what) in [(&api, "API token"), (&svc, "service token")] {
        let err = f
            .coffer
            .authenticate_node(other.expose_secret(), ctx())
            .await
            .unwrap_err();
        assert!(
            matches!(err, CoreError::WrongTokenKind(_)),
            "{what}: {err:?}"
        );
        assert!(err.to_string().contains("node token"), "{err}");
        let forged = with_other_secret(other);
        assert!(
            matches!(
                f.coffer.authenticate_node(&forged, ctx()).await,
                Err(CoreError::Unauthenticated(_))
            ),
            "a forged {what}"
        );
    }

    // And the other way round: a valid node token is the wrong kind elsewhere, a forged one
    // is just invalid.
    let err = f.coffer.authenticate(text, ctx()).await.unwrap_err();
    assert!(matches!(err, CoreError::WrongTokenKind(_)), "{err:?}");
    assert!(err.to_string().contains("replication feed"), "{err}");
    let err = f.coffer.authenticate_service(text, ctx).await.unwrap_err();
    assert!(matches!(err, CoreError::WrongTokenKind(_)), "{err:?}");
    let forged = with_other_secret(&token);
    assert!(matches!(
        f.coffer.authenticate(&forged, ctx()).await,
        Err(CoreError::Unauthenticated(_))
    ));
    assert!(matches!(
        f.coffer.authenticate_service(&forged, ctx).await,
        Err(CoreError::Unauthenticated(_))
    ));

    // Revocation acts on the very next authentication, cached or not.
    f.coffer.revoke_node(&f.op, node.id).await.unwrap();
    let err = f.coffer.authenticate_node(text, ctx()).await.unwrap_err();
    assert!(matches!(err, CoreError::NodeRevoked), "{err:?}");
    assert!(err.to_string().contains("revoked"), "{err}");
    // Only the holder of the real token learns that it was revoked.
    assert!(matches!(
        f.coffer
            .authenticate_node(&with_other_secret(&token), ctx())
            .await,
        Err(CoreError::Unauthenticated(_))
    ));
    // A revoked node token is no longer "valid", so other APIs say only that it is invalid.
    assert!(matches!(
        f.coffer.authenticate(text, ctx()).await,
        Err(CoreError::Unauthenticated(_))
    ));
    assert!(matches!(
        f.coffer.authenticate_service(text, ctx).await,
        Err(CoreError::Unauthenticated(_))
    ));
    // A node registered again under the name has a new token; the old one stays refused.
    let (_, fresh) = f.node("edge-1").await;
    assert!(
        f.coffer
            .authenticate_node(fresh.expose_secret(), ctx())
            .await
            .is_ok()
    );
    assert!(f.coffer.authenticate_node(text, ctx()).await.is_err());
}

/// The fleet view: a node's last feed request, as this process saw it, for the operator only;
/// a revoked node's goes with its revocation.
#[tokio::test]
async fn the_fleet_shows_each_nodes_last_feed_request_until_it_is_revoked() {
    let f = fx().await;
    let (seen, _) = f.node("seen").await;
    let (silent, _) = f.node("silent").await;
    f.coffer.note_feed_request(seen.id, 3, 10);
    f.coffer.note_feed_request(seen.id, 7, 12);
    let fleet = f.coffer.fleet(&f.op).await.unwrap();
    let contact_of = |id| {
        fleet
            .iter()
            .find(|(n, _)| n.id == id)
            .map(|(_, c)| *c)
            .unwrap()
    };
    let c = contact_of(seen.id).expect("the node that asked is seen");
    assert_eq!(
        (c.applied_seq, c.head_seq, c.lag()),
        (7, 12, 5),
        "the last request counts"
    );
    assert_eq!(contact_of(silent.id), None);

    let (_, reporter) = f.api_token(f.account, Role::SecretsStoreReporter).await;
    assert!(matches!(
        f.coffer.fleet(&reporter).await,
        Err(CoreError::Forbidden(Permission::Operator))
    ));

    f.coffer.revoke_node(&f.op, seen.id).await.unwrap();
    let fleet = f.coffer.fleet(&f.op).await.unwrap();
    let (n, c) = fleet.iter().find(|(n, _)| n.id == seen.id).unwrap();
    assert!(n.revoked.is_some());
    assert_eq!(*c, None, "a revoked node's contact is forgotten");
}
