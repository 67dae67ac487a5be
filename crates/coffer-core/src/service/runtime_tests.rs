//! Deploys and runtime reads at the core level: the two permission checks, the exactness of
//! the runtime cache, and the aggregation of access events.

use std::sync::Arc;

use coffer_crypto::{FileKek, KekProvider, Plaintext};
use coffer_storage::{SecretBindingRecord, SqliteStorage, Storage, StoreBindingRecord};
use coffer_types::{
    AccountId, BindingName, Scope, Scopes, SecretName, ServiceName, StoreId, StoreName,
};

use crate::{
    Coffer, Comment, CoreError, CreateSecretItem, DekPolicy, Deploy, Limits, Principal, Role,
    UpdateSecret,
};

struct Fx {
    _dir: tempfile::TempDir,
    coffer: Coffer,
    op: Principal,
    account: AccountId,
    store: StoreId,
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
        .authenticate(token.expose_secret(), Default::default())
        .await
        .unwrap();
    let store = coffer
        .create_store(&op, account, StoreName::parse("prod").unwrap())
        .await
        .unwrap()
        .id;
    Fx {
        _dir: dir,
        coffer,
        op,
        account,
        store,
    }
}

impl Fx {
    async fn secret(
        &self,
        name: &str,
        value: &str,
        scopes: &[Scope],
    ) -> coffer_storage::SecretRecord {
        self.coffer
            .create_secrets(
                &self.op,
                self.account,
                self.store,
                vec![CreateSecretItem {
                    name: SecretName::parse(name).unwrap(),
                    value: Plaintext::new(value.as_bytes().to_vec()),
                    scopes: Scopes::new(scopes.iter().copied()),
                    comment: Comment::default(),
                }],
            )
            .await
            .unwrap()
            .remove(0)
    }

    fn deploy(&self, name: &str, secrets: &[(&str, &str)]) -> Deploy {
        Deploy {
            name: ServiceName::parse(name).unwrap(),
            kind: Scope::Workers,
            secrets: secrets
                .iter()
                .map(|(b, s)| SecretBindingRecord {
                    binding: BindingName::parse(b).unwrap(),
                    store_id: self.store,
                    secret_name: SecretName::parse(s).unwrap(),
                })
                .collect(),
            stores: vec![],
        }
    }

    async fn read(&self, token: &str, binding: &str) -> Result<String, CoreError> {
        let who = self
            .coffer
            .authenticate_service(token, crate::RequestContext::default)
            .await?;
        let v = self.coffer.read_binding(&who, binding).await?;
        Ok(String::from_utf8(v.expose_secret().to_vec()).unwrap())
    }
}

#[tokio::test]
async fn deploy_then_read_then_update_is_seen_on_the_next_read() {
    let f = fx().await;
    let s = f.secret("openai", "v1", &[Scope::Workers]).await;
    let d = f
        .coffer
        .deploy_service(
            &f.op,
            f.account,
            f.deploy("gw", &[("OPENAI_KEY", "openai")]),
        )
        .await
        .unwrap();
    assert!(d.created);
    let token = d.token.unwrap();
    let token = token.expose_secret();
    assert_eq!(f.read(token, "OPENAI_KEY").await.unwrap(), "v1");
    // Cached now; an update must still be visible on the very next read.
    for i in 2..6 {
        f.coffer
            .update_secret(
                &f.op,
                f.account,
                f.store,
                s.id,
                UpdateSecret {
                    value: Some(Plaintext::new(format!("v{i}").into_bytes())),
                    ..UpdateSecret::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(f.read(token, "OPENAI_KEY").await.unwrap(), format!("v{i}"));
    }
    // Scope removed: refused at read time, although the deploy had allowed it.
    f.coffer
        .update_secret(
            &f.op,
            f.account,
            f.store,
            s.id,
            UpdateSecret {
                scopes: Some(Scopes::new([Scope::AiGateway])),
                ..UpdateSecret::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        f.read(token, "OPENAI_KEY").await,
        Err(CoreError::ScopeDenied(_))
    ));
    assert!(matches!(
        f.read(token, "NOPE").await,
        Err(CoreError::BindingNotFound(n)) if n == "NOPE"
    ));
}

#[tokio::test]
async fn a_rotated_or_revoked_token_fails_on_the_next_read() {
    let f = fx().await;
    f.secret("k", "v", &[Scope::Workers]).await;
    let d = f
        .coffer
        .deploy_service(&f.op, f.account, f.deploy("svc", &[("K", "k")]))
        .await
        .unwrap();
    let old = d.token.unwrap();
    assert_eq!(f.read(old.expose_secret(), "K").await.unwrap(), "v");
    let (_, new, revoked) = f
        .coffer
        .rotate_service_token(&f.op, f.account, d.service.id, true)
        .await
        .unwrap();
    assert_eq!(revoked.len(), 1);
    assert!(matches!(
        f.read(old.expose_secret(), "K").await,
        Err(CoreError::Unauthenticated(_))
    ));
    assert_eq!(f.read(new.expose_secret(), "K").await.unwrap(), "v");
    f.coffer
        .revoke_service_tokens(&f.op, f.account, d.service.id, None)
        .await
        .unwrap();
    assert!(matches!(
        f.read(new.expose_secret(), "K").await,
        Err(CoreError::Unauthenticated(_))
    ));
}

#[tokio::test]
async fn deploy_is_refused_by_role_missing_secret_and_scope_and_writes_nothing() {
    let f = fx().await;
    f.secret("gw-only", "v", &[Scope::AiGateway]).await;
    let admin = Principal {
        role: Role::SecretsStoreAdmin,
        operator: false,
        ..f.op.clone()
    };
    let head = f.coffer.storage().change_head().await.unwrap();
    let refused = [
        (
            admin.clone(),
            f.deploy("a", &[("K", "gw-only")]),
            "may not bind",
        ),
        (
            f.op.clone(),
            f.deploy("b", &[("K", "missing")]),
            "not found",
        ),
        (
            f.op.clone(),
            f.deploy("c", &[("K", "gw-only")]),
            "does not carry the scope",
        ),
    ];
    for (who, deploy, why) in refused {
        match f.coffer.deploy_service(&who, f.account, deploy).await {
            Err(e @ CoreError::BindingDenied { .. }) => {
                let m = e.to_string();
                assert!(m.starts_with("binding K: "), "{m}");
                assert!(m.contains(why), "{m}");
            }
            other => panic!("expected a binding denial, got {other:?}"),
        }
    }
    assert_eq!(f.coffer.storage().change_head().await.unwrap(), head);
    // A deployer may bind.
    let deployer = Principal {
        role: Role::SecretsStoreDeployer,
        operator: false,
        ..f.op.clone()
    };
    let mut ok = f.deploy("d", &[("K", "gw-only")]);
    ok.kind = Scope::AiGateway;
    f.coffer
        .deploy_service(&deployer, f.account, ok)
        .await
        .unwrap();
}

#[tokio::test]
async fn duplicate_binding_names_are_refused() {
    let f = fx().await;
    f.secret("k", "v", &[Scope::Workers]).await;
    let mut d = f.deploy("svc", &[("K", "k")]);
    d.stores.push(StoreBindingRecord {
        binding: BindingName::parse("K").unwrap(),
        store_id: f.store,
    });
    let e = f
        .coffer
        .deploy_service(&f.op, f.account, d)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CoreError::Invalid(i) if i.field == "/secrets_store_stores/0/binding"),
        "{e:?}"
    );
}

#[tokio::test]
async fn reads_are_aggregated_into_one_access_entry_per_binding() {
    let f = fx().await;
    let s = f.secret("k", "v", &[Scope::Workers]).await;
    let d = f
        .coffer
        .deploy_service(&f.op, f.account, f.deploy("svc", &[("K", "k")]))
        .await
        .unwrap();
    let token = d.token.unwrap();
    for _ in 0..25 {
        f.read(token.expose_secret(), "K").await.unwrap();
    }
    assert!(f.read(token.expose_secret(), "NOPE").await.is_err());
    let before = f
        .coffer
        .storage()
        .audit_head(f.account)
        .await
        .unwrap()
        .unwrap()
        .0;
    let written = f.coffer.flush_access_events().await.unwrap();
    // 25 reads of K make one entry; the refused read of a binding the service lacks another.
    assert_eq!(written, 2);
    let entries = f
        .coffer
        .storage()
        .audit_entries(f.account, before, 10)
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    let mut entries = entries;
    entries.sort_by_key(|e| e.entry.outcome.clone());
    let denied: serde_json::Value = serde_json::from_slice(&entries[0].entry.payload).unwrap();
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(
        denied["resource"].get("binding"),
        None,
        "made-up names are not keys"
    );
    assert_eq!(denied["reason"], "no such binding");
    assert_eq!(denied["reads"], 1);
    let entries = &entries[1..];
    let payload: serde_json::Value = serde_json::from_slice(&entries[0].entry.payload).unwrap();
    assert_eq!(payload["action"], "access");
    assert_eq!(payload["outcome"], "success");
    assert_eq!(payload["reads"], 25);
    assert_eq!(payload["resource"]["binding"], "K");
    assert_eq!(payload["resource"]["secret_id"], s.id.to_string());
    assert_eq!(payload["resource"]["service_name"], "svc");
    assert!(!String::from_utf8_lossy(&entries[0].entry.payload).contains(token.expose_secret()));
    // Nothing left to write.
    assert_eq!(f.coffer.flush_access_events().await.unwrap(), 0);
}

#[tokio::test]
async fn an_api_token_is_refused_on_the_runtime_and_a_service_token_on_the_control_plane() {
    let f = fx().await;
    f.secret("k", "v", &[Scope::Workers]).await;
    let d = f
        .coffer
        .deploy_service(&f.op, f.account, f.deploy("svc", &[("K", "k")]))
        .await
        .unwrap();
    let svc = d.token.unwrap();
    assert!(matches!(
        f.coffer
            .authenticate(svc.expose_secret(), Default::default())
            .await,
        Err(CoreError::WrongTokenKind(_))
    ));
    let (_, api) = f
        .coffer
        .create_token(
            &f.op,
            f.account,
            crate::NewToken {
                name: "ci".into(),
                role: Role::SuperAdmin,
                expires: None,
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        f.coffer
            .authenticate_service(api.expose_secret(), crate::RequestContext::default)
            .await,
        Err(CoreError::WrongTokenKind(_))
    ));
    // Forged tokens of either shape are plain authentication failures.
    let forged = svc.expose_secret().replace("coffersvc_", "coffer_");
    let forged = &forged[..forged.len() - 3];
    assert!(matches!(
        f.coffer
            .authenticate_service(forged, crate::RequestContext::default)
            .await,
        Err(CoreError::Unauthenticated(_))
    ));
}

#[tokio::test]
async fn the_operator_binds_only_in_its_own_account() {
    let f = fx().await;
    let other = f.coffer.create_account(&f.op, "team-b").await.unwrap().id;
    // The operator gives the new account its first token, a super_admin, and no more.
    let (_, admin) = f
        .coffer
        .create_token(
            &f.op,
            other,
            crate::NewToken {
                name: "b-admin".into(),
                role: Role::SuperAdmin,
                expires: None,
            },
        )
        .await
        .unwrap();
    let admin = f
        .coffer
        .authenticate(admin.expose_secret(), crate::RequestContext::default())
        .await
        .unwrap();
    for role in [Role::SuperAdmin, Role::SecretsStoreDeployer] {
        let second = f
            .coffer
            .create_token(
                &f.op,
                other,
                crate::NewToken {
                    name: "second".into(),
                    role,
                    expires: None,
                },
            )
            .await;
        assert!(
            matches!(second, Err(CoreError::OperatorFirstTokenOnly)),
            "{second:?}"
        );
    }
    let store = f
        .coffer
        .create_store(&admin, other, StoreName::parse("b").unwrap())
        .await
        .unwrap()
        .id;
    f.coffer
        .create_secrets(
            &admin,
            other,
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
        name: ServiceName::parse("steal").unwrap(),
        kind: Scope::Workers,
        secrets: vec![SecretBindingRecord {
            binding: BindingName::parse("K").unwrap(),
            store_id: store,
            secret_name: SecretName::parse("k").unwrap(),
        }],
        stores: vec![],
    };
    let e = f
        .coffer
        .deploy_service(&f.op, other, deploy.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CoreError::BindingDenied { .. })
            && e.to_string().contains("instance operator"),
        "{e}"
    );
    // A missing account is still a plain 404 for the operator.
    let missing = AccountId::from_bytes(coffer_crypto::random_id());
    assert!(matches!(
        f.coffer.deploy_service(&f.op, missing, deploy).await,
        Err(CoreError::NotFound(crate::Resource::Account))
    ));
    // Nor does it see the account's stores or services.
    assert!(matches!(
        f.coffer
            .list_services(
                &f.op,
                other,
                crate::ServiceListQuery {
                    page: 1,
                    per_page: 10,
                    name: None
                }
            )
            .await,
        Err(CoreError::OutsideOperatorReach(crate::Permission::Read))
    ));
    assert!(matches!(
        f.coffer
            .create_store(&f.op, other, StoreName::parse("c").unwrap())
            .await,
        Err(CoreError::OutsideOperatorReach(crate::Permission::Edit))
    ));
    // The account's own super_admin binds there.
    let d = Deploy {
        name: ServiceName::parse("own").unwrap(),
        kind: Scope::Workers,
        secrets: vec![SecretBindingRecord {
            binding: BindingName::parse("K").unwrap(),
            store_id: store,
            secret_name: SecretName::parse("k").unwrap(),
        }],
        stores: vec![],
    };
    assert!(f.coffer.deploy_service(&admin, other, d).await.is_ok());
}

#[tokio::test]
async fn a_store_binding_hides_secrets_without_the_type() {
    let f = fx().await;
    f.secret("ok", "v1", &[Scope::Workers]).await;
    f.secret("gw", "v2", &[Scope::AiGateway]).await;
    let mut d = f.deploy("svc", &[]);
    d.stores.push(StoreBindingRecord {
        binding: BindingName::parse("ALL").unwrap(),
        store_id: f.store,
    });
    let token = f
        .coffer
        .deploy_service(&f.op, f.account, d)
        .await
        .unwrap()
        .token
        .unwrap();
    let who = f
        .coffer
        .authenticate_service(token.expose_secret(), crate::RequestContext::default)
        .await
        .unwrap();
    let v = f
        .coffer
        .read_store_binding(&who, "ALL", "ok")
        .await
        .unwrap();
    assert_eq!(v.expose_secret(), b"v1");
    for name in ["gw", "missing"] {
        assert!(matches!(
            f.coffer.read_store_binding(&who, "ALL", name).await,
            Err(CoreError::BoundSecretNotFound(n)) if n == name
        ));
    }
    // Many made-up names make one access key, not one each.
    for i in 0..50 {
        let _ = f
            .coffer
            .read_store_binding(&who, "ALL", &format!("made-up-{i}"))
            .await;
    }
    let before = f
        .coffer
        .storage()
        .audit_head(f.account)
        .await
        .unwrap()
        .unwrap()
        .0;
    f.coffer.flush_access_events().await.unwrap();
    let entries = f
        .coffer
        .storage()
        .audit_entries(f.account, before, 100)
        .await
        .unwrap();
    // ok (success), gw (denied: lacks the scope), and one key for every missing name.
    assert_eq!(entries.len(), 3, "{entries:?}");
    // A store binding the service does not have is a missing binding, not a missing secret.
    assert!(matches!(
        f.coffer.read_store_binding(&who, "NOPE", "ok").await,
        Err(CoreError::BindingNotFound(n)) if n == "NOPE"
    ));
}

/// Through a store binding, a secret without the service's type and a name that does not
/// exist are answered alike, and the metrics' counters move alike for them: reading either
/// (twice, so a cached value would count a hit) changes the runtime stats the same way.
#[tokio::test]
async fn store_binding_counters_do_not_tell_which_names_exist() {
    let f = fx().await;
    f.secret("gw", "v2", &[Scope::AiGateway]).await;
    let mut d = f.deploy("svc", &[]);
    d.stores.push(StoreBindingRecord {
        binding: BindingName::parse("ALL").unwrap(),
        store_id: f.store,
    });
    let token = f
        .coffer
        .deploy_service(&f.op, f.account, d)
        .await
        .unwrap()
        .token
        .unwrap();
    let who = f
        .coffer
        .authenticate_service(token.expose_secret(), crate::RequestContext::default)
        .await
        .unwrap();
    // Warms the token and service look-ups, which both reads share.
    let _ = f.coffer.read_store_binding(&who, "ALL", "warm-up").await;
    let mut deltas = Vec::new();
    for name in ["gw", "missing"] {
        let before = f.coffer.runtime_stats();
        for _ in 0..2 {
            assert!(matches!(
                f.coffer.read_store_binding(&who, "ALL", name).await,
                Err(CoreError::BoundSecretNotFound(_))
            ));
        }
        let after = f.coffer.runtime_stats();
        deltas.push((
            after.served - before.served,
            after.denied - before.denied,
            after.not_found - before.not_found,
            after.cache_hits - before.cache_hits,
            after.cache_misses - before.cache_misses,
        ));
    }
    assert_eq!(
        deltas[0], deltas[1],
        "(served, denied, not_found, hits, misses)"
    );
    assert_eq!(deltas[0].2, 2, "both counted not found");
}
