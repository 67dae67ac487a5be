//! Stores, secrets, services and nodes on PostgreSQL, beyond the conformance suite:
//! - names stay unique when two instances on one database create them at once: of concurrent
//!   creates of one store, secret, service or node name, spread over two `PgStorage`s, exactly
//!   one succeeds and every other gets `NameTaken` naming the entity; two creates of one id get
//!   one success and `AlreadyExists`; the log holds one entry per success, chained;
//! - queued secret updates apply in the order queued, whether or not their outcome is awaited,
//!   and one queued behind a failed one fails with `Conflict`.

use std::sync::Arc;

use coffer_postgres::testing::{TestDatabase, cluster_url};
use coffer_storage::{
    AccountRecord, ChangeRecord, DekRecord, Entity, NewSecret, NodeRecord, SecretRecord,
    SecretUpdate, ServiceRecord, ServiceTokenRecord, Storage, StorageError, StoreRecord,
    VersionRecord, WrappedKeyRecord,
};
use coffer_types::{
    AccountId, DekId, Scope, Scopes, SecretId, SecretName, ServiceId, ServiceName, StoreId,
    StoreName, Timestamp, TokenId, Version,
};
use tokio::task::JoinSet;

/// Concurrent creates per name, alternating between the two instances.
const TASKS: u8 = 8;

fn id(tag: u8, n: u8) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[0] = tag;
    id[15] = n;
    id
}

fn store(account: AccountId, n: u8, name: &str) -> StoreRecord {
    let now = Timestamp::now();
    StoreRecord {
        id: StoreId::from_bytes(id(2, n)),
        account_id: account,
        name: StoreName::parse(name).unwrap(),
        created: now,
        modified: now,
    }
}

fn secret(account: AccountId, store: StoreId, dek: DekId, n: u8) -> NewSecret {
    let now = Timestamp::now();
    let secret_id = SecretId::from_bytes(id(3, n));
    NewSecret {
        record: SecretRecord {
            id: secret_id,
            store_id: store,
            account_id: account,
            name: SecretName::parse("CONTESTED").unwrap(),
            comment: String::new(),
            scopes: Scopes::new([Scope::Workers]),
            created: now,
            modified: now,
            version: Version(1),
        },
        value: VersionRecord {
            secret_id,
            version: Version(1),
            dek_id: dek,
            sealed: vec![n; 24],
            created: now,
        },
        dek: None,
    }
}

fn service(account: AccountId, n: u8) -> (ServiceRecord, ServiceTokenRecord) {
    let now = Timestamp::now();
    let service_id = ServiceId::from_bytes(id(4, n));
    (
        ServiceRecord {
            id: service_id,
            account_id: account,
            name: ServiceName::parse("contested").unwrap(),
            kind: Scope::Workers,
            secrets: Vec::new(),
            stores: Vec::new(),
            created: now,
            modified: now,
        },
        ServiceTokenRecord {
            id: TokenId::from_bytes(id(5, n)),
            account_id: account,
            service_id,
            hash: [n; 32],
            created: now,
            revoked: None,
        },
    )
}

fn node(n: u8) -> NodeRecord {
    NodeRecord {
        id: TokenId::from_bytes(id(6, n)),
        name: "edge-contested".into(),
        hash: [n; 32],
        created: Timestamp::now(),
        revoked: None,
    }
}

/// Exactly one `Ok`; every error `NameTaken` of `entity`.
fn one_wins(what: &str, entity: Entity, results: &[&Result<(), StorageError>]) {
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "exactly one of {TASKS} concurrent creates of one {what} name succeeds: {results:?}"
    );
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(e, StorageError::NameTaken { entity: got, .. } if *got == entity),
            "the losers of a {what} name race get NameTaken: {e:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_name_on_two_instances_admit_one() {
    let Some(cluster) = cluster_url("concurrent_creates_of_one_name_on_two_instances") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let a: Arc<dyn Storage> = Arc::new(db.storage().await);
    let b: Arc<dyn Storage> = Arc::new(db.storage().await);
    let instance = |n: u8| Arc::clone(if n.is_multiple_of(2) { &a } else { &b });

    let account = AccountId::from_bytes(id(1, 0));
    a.create_account(
        AccountRecord {
            id: account,
            name: "acme".into(),
            created: Timestamp::now(),
            secrets_quota: None,
        },
        &[],
    )
    .await
    .unwrap();
    let dek = DekId::from_bytes(id(7, 0));
    a.put_dek(DekRecord {
        account_id: account,
        key: WrappedKeyRecord {
            id: dek,
            kek_id: "kek-1".into(),
            wrapped: vec![1; 40],
            created: Timestamp::now(),
        },
        rk: None,
    })
    .await
    .unwrap();
    let home = store(account, 0, "home");
    b.create_store(home.clone(), 1000, &[]).await.unwrap();

    let mut tasks = JoinSet::new();
    for n in 1..=TASKS {
        let s = instance(n);
        tasks.spawn(async move {
            let (service, token) = service(account, n);
            (
                s.create_store(store(account, n, "contested"), 1000, &[])
                    .await,
                s.create_secrets(
                    account,
                    home.id,
                    vec![secret(account, home.id, dek, n)],
                    1000,
                    &[],
                )
                .await,
                s.create_service(service, token, &[]).await,
                s.create_node(node(n), &[]).await,
            )
        });
    }
    let results = tasks.join_all().await;
    one_wins(
        "store",
        Entity::Store,
        &results.iter().map(|r| &r.0).collect::<Vec<_>>(),
    );
    one_wins(
        "secret",
        Entity::Secret,
        &results.iter().map(|r| &r.1).collect::<Vec<_>>(),
    );
    one_wins(
        "service",
        Entity::Service,
        &results.iter().map(|r| &r.2).collect::<Vec<_>>(),
    );
    one_wins(
        "node",
        Entity::Node,
        &results.iter().map(|r| &r.3).collect::<Vec<_>>(),
    );
    assert_eq!(a.secret_count(account).await.unwrap(), 1);

    // One id, two names, from both instances at once: one store, the other `AlreadyExists`.
    let (x, y) = (
        a.create_store(store(account, 100, "twin-a"), 1000, &[]),
        b.create_store(store(account, 100, "twin-b"), 1000, &[]),
    );
    let (x, y) = tokio::join!(x, y);
    let mut outcomes = [x, y];
    outcomes.sort_by_key(|r| r.is_err());
    assert!(outcomes[0].is_ok(), "{outcomes:?}");
    assert!(
        matches!(outcomes[1], Err(StorageError::AlreadyExists(Entity::Store))),
        "{outcomes:?}"
    );

    // account, DEK, home store; then one entry per winner: store, secret, service (+ its
    // token), node, twin store. Chained, gap-free, the same from either instance.
    let log = b.changes_after(0, usize::MAX).await.unwrap();
    assert_eq!(log.len(), 3 + 6, "{log:?}");
    let mut prev = ChangeRecord::GENESIS_HASH;
    for (i, record) in log.iter().enumerate() {
        assert_eq!(record.seq, i as u64 + 1);
        assert!(
            record.follows(&prev),
            "entry {} breaks the chain",
            record.seq
        );
        prev = record.hash;
    }
    assert_eq!(a.changes_after(0, usize::MAX).await.unwrap(), log);
}

/// An account with one DEK and one store ("home") holding one secret (`n`) at version 1.
async fn world(s: &dyn Storage, n: u8) -> (AccountId, StoreId, DekId, SecretId) {
    let account = AccountId::from_bytes(id(1, n));
    s.create_account(
        AccountRecord {
            id: account,
            name: format!("account {n}"),
            created: Timestamp::now(),
            secrets_quota: None,
        },
        &[],
    )
    .await
    .unwrap();
    let dek = DekId::from_bytes(id(7, n));
    s.put_dek(DekRecord {
        account_id: account,
        key: WrappedKeyRecord {
            id: dek,
            kek_id: "kek-1".into(),
            wrapped: vec![1; 40],
            created: Timestamp::now(),
        },
        rk: None,
    })
    .await
    .unwrap();
    let home = store(account, n, "home");
    s.create_store(home.clone(), 1000, &[]).await.unwrap();
    let new = secret(account, home.id, dek, n);
    let secret_id = new.record.id;
    s.create_secrets(account, home.id, vec![new], 1000, &[])
        .await
        .unwrap();
    (account, home.id, dek, secret_id)
}

/// An update of `secret` expecting `expected` and writing value `expected + 1`.
fn chained(world: (AccountId, StoreId, DekId, SecretId), expected: u32) -> SecretUpdate {
    let (account, store, dek, secret) = world;
    SecretUpdate {
        account_id: account,
        store_id: store,
        secret_id: secret,
        expected_version: Version(expected),
        value: Some(VersionRecord {
            secret_id: secret,
            version: Version(expected + 1),
            dek_id: dek,
            sealed: vec![9; 24],
            created: Timestamp::now(),
        }),
        dek: None,
        scopes: None,
        comment: Some(format!("after {expected}")),
        modified: Timestamp::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_updates_apply_in_order_whether_or_not_awaited() {
    let Some(cluster) = cluster_url("queued_updates_apply_in_order") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let s = db.storage().await;
    let w = world(&s, 1).await;
    let head = s.change_head().await.unwrap();

    let mut pending = Vec::new();
    for expected in 1..=5 {
        pending.push(
            s.queue_update_secret(chained(w, expected), &[])
                .await
                .unwrap(),
        );
    }
    let mut versions = Vec::new();
    for p in pending {
        versions.push(p.await.unwrap().version.0);
    }
    assert_eq!(versions, [2, 3, 4, 5, 6]);

    // Applied though its outcome is dropped unawaited: the update queued behind it, which
    // expects the version it makes, succeeds.
    drop(s.queue_update_secret(chained(w, 6), &[]).await.unwrap());
    let after = s
        .queue_update_secret(chained(w, 7), &[])
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(after.version, Version(8));
    assert_eq!(after.comment, "after 7");

    // A failing update (it expects a version that is not current) takes down the one queued
    // behind it, not the one before.
    let ok = s.queue_update_secret(chained(w, 8), &[]).await.unwrap();
    let bad = s.queue_update_secret(chained(w, 11), &[]).await.unwrap();
    let behind = s.queue_update_secret(chained(w, 12), &[]).await.unwrap();
    assert_eq!(ok.await.unwrap().version, Version(9));
    assert!(matches!(bad.await, Err(StorageError::Conflict)));
    assert!(matches!(behind.await, Err(StorageError::Conflict)));
    let current = s.get_secret(w.0, w.1, w.3).await.unwrap().unwrap();
    assert_eq!(current.version, Version(9));
    let (_, value) = s
        .current_value(w.0, w.1, &SecretName::parse("CONTESTED").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(value.version, Version(9));
    assert_eq!(s.change_head().await.unwrap(), head + 8);
}
