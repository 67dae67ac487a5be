//! Two control-plane instances on one PostgreSQL database, at the core level: a node's
//! revocation on one is not starved by the other's new DEKs (the DEK gate in storage), and what
//! the other can still do after a store or an account is deleted here (seal under the deleted
//! store's DEK: never; serve the deleted values at runtime: for at most its cache age). Needs
//! `COFFER_TEST_DATABASE_URL`; skips without it, except under `CI=true`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use coffer_core::{
    Coffer, Comment, CoreError, CreateSecretItem, DekPolicy, Deploy, Limits, NewToken, Principal,
    Resource, Role,
};
use coffer_crypto::{FileKek, KekProvider, NodeKey, Plaintext};
use coffer_postgres::testing::{TestDatabase, cluster_url};
use coffer_storage::{SecretBindingRecord, SecretRecord, Storage};
use coffer_types::{
    AccountId, BindingName, DekId, NodeName, Scope, Scopes, SecretName, ServiceName, StoreId,
    StoreName,
};

/// What the server gives `share_database` on PostgreSQL.
const MAX_AGE: Duration = Duration::from_millis(500);

struct Instances {
    _dir: tempfile::TempDir,
    _db: TestDatabase,
    a: Arc<Coffer>,
    b: Arc<Coffer>,
    /// The operator, authenticated on A.
    op_a: Principal,
    storage: Arc<dyn Storage>,
}

/// Two instances with one KEK (`cp -r D D2`); B makes a new DEK for every seal when
/// `b_dek_per_seal` (a DEK refresh per write: the most DEKs a tenant can make).
async fn instances(test: &str, b_dek_per_seal: bool) -> Option<Instances> {
    let b_policy = if b_dek_per_seal {
        DekPolicy {
            max_age: Duration::from_secs(3600),
            max_seals: 1,
        }
    } else {
        DekPolicy::default()
    };
    instances_with(test, DekPolicy::default(), b_policy).await
}

/// Two instances as [`instances`] makes them, with these DEK policies.
async fn instances_with(test: &str, a_policy: DekPolicy, b_policy: DekPolicy) -> Option<Instances> {
    let cluster = cluster_url(test)?;
    let db = TestDatabase::create(&cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let kek: Arc<dyn KekProvider> = Arc::new(FileKek::create(&dir.path().join("kek")).unwrap());
    let storage_a: Arc<dyn Storage> = Arc::new(db.storage().await);
    let storage_b: Arc<dyn Storage> = Arc::new(db.storage().await);
    let a = Coffer::open(
        Arc::clone(&storage_a),
        Arc::clone(&kek),
        Limits::default(),
        a_policy,
    )
    .await
    .unwrap();
    let (_, token) = a.bootstrap("operator").await.unwrap();
    let b = Coffer::open(storage_b, kek, Limits::default(), b_policy)
        .await
        .unwrap();
    a.share_database(MAX_AGE);
    b.share_database(MAX_AGE);
    let op_a = a
        .authenticate(token.expose_secret(), Default::default())
        .await
        .unwrap();
    Some(Instances {
        _dir: dir,
        _db: db,
        a: Arc::new(a),
        b: Arc::new(b),
        op_a,
        storage: storage_a,
    })
}

/// An account made through A with its first token (a super_admin), authenticated on each.
struct Tenant {
    account: AccountId,
    on_a: Principal,
    on_b: Principal,
}

async fn tenant(f: &Instances, name: &str) -> Tenant {
    let account = f.a.create_account(&f.op_a, name).await.unwrap().id;
    let (_, token) =
        f.a.create_token(
            &f.op_a,
            account,
            NewToken {
                name: "admin".into(),
                role: Role::SuperAdmin,
                expires: None,
            },
        )
        .await
        .unwrap();
    let on_a =
        f.a.authenticate(token.expose_secret(), Default::default())
            .await
            .unwrap();
    let on_b =
        f.b.authenticate(token.expose_secret(), Default::default())
            .await
            .unwrap();
    Tenant {
        account,
        on_a,
        on_b,
    }
}

fn item(name: &str, value: &str) -> CreateSecretItem {
    CreateSecretItem {
        name: SecretName::parse(name).unwrap(),
        value: Plaintext::new(value.as_bytes().to_vec()),
        scopes: Scopes::new([Scope::Workers]),
        comment: Comment::default(),
    }
}

async fn dek_of(storage: &dyn Storage, secret: &SecretRecord) -> DekId {
    storage
        .get_version(secret.id, secret.version)
        .await
        .unwrap()
        .unwrap()
        .dek_id
}

/// A node with a registered key, made and revoked through A.
async fn node(f: &Instances, name: &str) -> coffer_storage::NodeRecord {
    let (node, _token) =
        f.a.create_node(&f.op_a, NodeName::parse(name).unwrap())
            .await
            .unwrap();
    let key = NodeKey::create(&f._dir.path().join(format!("{name}.key"))).unwrap();
    let public = hex::encode(key.public_key().as_bytes());
    assert!(f.a.register_node_key(&node, &public).await.unwrap());
    node
}

/// Instance B creates DEKs as fast as it can (a new DEK per write, on several accounts at
/// once) while A revokes nodes: every revocation succeeds, every B write succeeds or gets the
/// retryable 503 (`Unavailable`), and no DEK is left without a wrap by the current replication
/// key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_instances_new_deks_do_not_starve_a_revocation() {
    let Some(f) = instances(
        "another_instances_new_deks_do_not_starve_a_revocation",
        true,
    )
    .await
    else {
        return;
    };
    const WRITERS: usize = 6;
    let mut targets = Vec::new();
    for w in 0..WRITERS {
        let t = tenant(&f, &format!("tenant-{w}")).await;
        let store =
            f.b.create_store(&t.on_b, t.account, StoreName::parse("prod").unwrap())
                .await
                .unwrap()
                .id;
        targets.push((t, store));
    }
    let nodes = [
        node(&f, "e1").await,
        node(&f, "e2").await,
        node(&f, "e3").await,
    ];

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (w, (t, store)) in targets.into_iter().enumerate() {
        let (b, op, account) = (Arc::clone(&f.b), t.on_b, t.account);
        let (stop, written, unavailable) = (
            Arc::clone(&stop),
            Arc::clone(&written),
            Arc::clone(&unavailable),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match b
                    .create_secrets(&op, account, store, vec![item(&format!("S{w}_{n}"), "v")])
                    .await
                {
                    Ok(_) => written.fetch_add(1, Ordering::Relaxed),
                    Err(CoreError::Unavailable(_)) => unavailable.fetch_add(1, Ordering::Relaxed),
                    Err(e) => panic!("a write on B during A's revocations: {e:?}"),
                };
            }
        }));
    }
    // The writers are under way (each write makes a DEK).
    let started = Instant::now();
    while written.load(Ordering::Relaxed) < 30 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "B's writes go on"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for node in &nodes {
        f.a.revoke_node(&f.op_a, node.id)
            .await
            .unwrap_or_else(|e| panic!("A's revocation of {} under B's DEKs: {e:?}", node.name));
    }
    let before_stop = written.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        written.load(Ordering::Relaxed) > before_stop,
        "B writes again after the revocations"
    );
    eprintln!(
        "B: {} writes, {} unavailable",
        written.load(Ordering::Relaxed),
        unavailable.load(Ordering::Relaxed)
    );

    // No DEK is left under a replication key a revoked node held.
    let (current, _) = f.storage.latest_replication_key().await.unwrap().unwrap();
    let deks = f.storage.list_deks().await.unwrap();
    assert!(deks.len() > WRITERS);
    for dek in &deks {
        let rk = dek
            .rk
            .as_ref()
            .unwrap_or_else(|| panic!("DEK {} has no replication-key wrap", dek.key.id));
        assert!(!rk.ark);
        assert_eq!(
            rk.version, current,
            "DEK {} is wrapped by replication key {}, not the current {current}",
            dek.key.id, rk.version
        );
    }
}

/// A store deleted on A (with values: its DEKs are retired, to be destroyed) is not sealed
/// under again by B, which had that account's DEK as its current one: B's next write is
/// refused by storage once, and B seals it under a new DEK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_deleted_on_one_instance_retires_its_dek_on_the_other() {
    let Some(f) = instances(
        "a_store_deleted_on_one_instance_retires_its_dek_on_the_other",
        false,
    )
    .await
    else {
        return;
    };
    let t = tenant(&f, "tenant").await;
    let account = t.account;
    let doomed =
        f.a.create_store(&t.on_a, account, StoreName::parse("doomed").unwrap())
            .await
            .unwrap()
            .id;
    let kept =
        f.a.create_store(&t.on_a, account, StoreName::parse("kept").unwrap())
            .await
            .unwrap()
            .id;
    // B seals in the account first: that DEK is B's current one.
    let first =
        f.b.create_secrets(&t.on_b, account, doomed, vec![item("A", "a")])
            .await
            .unwrap();
    let old = dek_of(&*f.storage, &first[0]).await;
    f.a.delete_store(&t.on_a, account, doomed, true)
        .await
        .unwrap();

    let made =
        f.b.create_secrets(&t.on_b, account, kept, vec![item("B", "b")])
            .await
            .expect("B writes after A deleted the store");
    assert_ne!(
        dek_of(&*f.storage, &made[0]).await,
        old,
        "B must not seal under the deleted store's DEK"
    );
}

async fn deploy(c: &Coffer, op: &Principal, account: AccountId, store: StoreId) -> String {
    let deployed = c
        .deploy_service(
            op,
            account,
            Deploy {
                name: ServiceName::parse("gw").unwrap(),
                kind: Scope::Workers,
                secrets: vec![SecretBindingRecord {
                    binding: BindingName::parse("KEY").unwrap(),
                    store_id: store,
                    secret_name: SecretName::parse("KEY").unwrap(),
                }],
                stores: vec![],
            },
        )
        .await
        .unwrap();
    deployed.token.unwrap().expose_secret().to_owned()
}

async fn read(c: &Coffer, token: &str) -> Result<Vec<u8>, CoreError> {
    let who = c
        .authenticate_service(token, coffer_core::RequestContext::default)
        .await?;
    Ok(c.read_binding(&who, "KEY").await?.expose_secret().to_vec())
}

/// Reads through B until they stop succeeding; how long after `since` they did.
async fn served_for(c: &Coffer, token: &str, since: Instant) -> (Duration, CoreError) {
    loop {
        match read(c, token).await {
            Ok(_) => {
                assert!(
                    since.elapsed() < Duration::from_secs(5),
                    "B serves a deleted value for ever"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => return (since.elapsed(), e),
        }
    }
}

/// B's runtime reads of a store deleted on A, and of an account deleted on A, stop within
/// B's cache age (the bound docs/scaling.md states), although B read them a moment before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_on_one_instance_stop_runtime_reads_on_the_other_within_the_cache_age() {
    let Some(f) = instances(
        "deletions_on_one_instance_stop_runtime_reads_on_the_other_within_the_cache_age",
        false,
    )
    .await
    else {
        return;
    };
    for deleting_account in [false, true] {
        let t = tenant(&f, &format!("tenant-{deleting_account}")).await;
        let account = t.account;
        let store =
            f.a.create_store(&t.on_a, account, StoreName::parse("prod").unwrap())
                .await
                .unwrap()
                .id;
        f.a.create_secrets(&t.on_a, account, store, vec![item("KEY", "value")])
            .await
            .unwrap();
        let token = deploy(&f.a, &t.on_a, account, store).await;
        // B serves it, from its cache from now on.
        assert_eq!(read(&f.b, &token).await.unwrap(), b"value");
        assert_eq!(read(&f.b, &token).await.unwrap(), b"value");

        if deleting_account {
            f.a.delete_account(&f.op_a, account).await.unwrap();
        } else {
            f.a.delete_store(&t.on_a, account, store, true)
                .await
                .unwrap();
        }
        // From the deletion's answer: the bound counts from its commit, and the call's own
        // time on a loaded machine is not B's to serve.
        let deleted = Instant::now();
        let (served, refused) = served_for(&f.b, &token, deleted).await;
        assert!(
            served <= MAX_AGE + Duration::from_millis(200),
            "B served for {served:?} after the deletion (deleting the account: {deleting_account})"
        );
        if deleting_account {
            // The service token went with the account: 401.
            assert!(
                matches!(refused, CoreError::Unauthenticated(_)),
                "{refused:?}"
            );
            // And B writes nothing into the deleted account.
            let err =
                f.b.create_secrets(&t.on_b, account, store, vec![item("LATE", "x")])
                    .await
                    .unwrap_err();
            assert!(
                matches!(
                    err,
                    CoreError::NotFound(Resource::Account | Resource::Store)
                ),
                "{err:?}"
            );
        } else {
            assert!(
                matches!(refused, CoreError::BoundSecretNotFound(_)),
                "{refused:?}"
            );
        }
    }
}

/// The same account on both instances, a store made through B and a node revoked through A
/// after B sealed a value there: the value and its DEK (under the replaced replication key).
async fn value_then_revocation(f: &Instances) -> (Tenant, StoreId, SecretRecord, DekId) {
    let t = tenant(f, "acme").await;
    let store =
        f.b.create_store(&t.on_b, t.account, StoreName::parse("prod").unwrap())
            .await
            .unwrap()
            .id;
    let made =
        f.b.create_secrets(&t.on_b, t.account, store, vec![item("KEY", "b")])
            .await
            .unwrap();
    let first = made.into_iter().next().unwrap();
    let old_dek = dek_of(f.storage.as_ref(), &first).await;
    let n = node(f, "e1").await;
    f.a.revoke_node(&f.op_a, n.id).await.unwrap();
    (t, store, first, old_dek)
}

/// The value of the secret `KEY` of `store` as a runtime read opens it, through A.
async fn value_of(f: &Instances, t: &Tenant, store: StoreId) -> Vec<u8> {
    let token = deploy(&f.a, &t.on_a, t.account, store).await;
    read(&f.a, &token).await.unwrap()
}

/// B's values are due for re-sealing when a node revoked through A rotates the replication
/// key: B's lifecycle pass makes its new DEK under the old key, which storage refuses
/// (`Conflict`); B refreshes as a write does and re-seals on the same pass (as on SQLite, in
/// coffer-core's reseal tests, here on a database two instances share).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reseal_refused_after_another_instances_revocation_recovers_on_the_same_pass() {
    let short = DekPolicy {
        max_age: Duration::from_millis(300),
        max_seals: 1 << 20,
    };
    let Some(f) = instances_with(
        "a_reseal_refused_after_another_instances_revocation_recovers_on_the_same_pass",
        short,
        short,
    )
    .await
    else {
        return;
    };
    let (t, store, first, old_dek) = value_then_revocation(&f).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let settings = coffer_core::ResealSettings {
        batch: 3,
        pause: Duration::ZERO,
        interval: Duration::from_secs(3600),
        keep_versions: 1,
        compaction_gap: Duration::ZERO,
    };
    f.b.run_dek_lifecycle_pass(settings)
        .await
        .expect("B's pass recovers from the refusal");
    let now = f
        .storage
        .get_secret(first.account_id, first.store_id, first.id)
        .await
        .unwrap()
        .unwrap();
    let dek = dek_of(f.storage.as_ref(), &now).await;
    assert_ne!(dek, old_dek, "re-sealed on that pass");
    let stored = f.storage.get_dek(dek).await.unwrap().unwrap();
    let (current, _) = f.storage.latest_replication_key().await.unwrap().unwrap();
    assert_eq!(stored.rk.as_ref().map(|rk| rk.version), Some(current));
    assert_eq!(value_of(&f, &t, store).await, b"b");
}

/// B's first write after a node's revocation through A is a duplicate: storage refuses its
/// DEK (made under the replaced key) once; the duplicate refreshes and tries again, as a
/// create does, instead of answering `Conflict`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_refused_after_another_instances_revocation_is_retried() {
    let Some(f) = instances(
        "a_duplicate_refused_after_another_instances_revocation_is_retried",
        false,
    )
    .await
    else {
        return;
    };
    let (t, store, first, old_dek) = value_then_revocation(&f).await;
    let dup = coffer_core::DuplicateSecret {
        name: SecretName::parse("KEY_COPY").unwrap(),
        scopes: Scopes::new([Scope::Workers]),
        comment: None,
    };
    let copy =
        f.b.duplicate_secret(&t.on_b, t.account, store, first.id, dup)
            .await
            .expect("B duplicates after A's revocation");
    assert_ne!(dek_of(f.storage.as_ref(), &copy).await, old_dek);
    assert_eq!(copy.name.as_str(), "KEY_COPY");
}
