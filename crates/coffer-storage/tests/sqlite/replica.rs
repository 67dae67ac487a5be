//! Edge replicas: a snapshot installed into a fresh replica, then the feed applied, must answer
//! every runtime read like the source and hold the source's log byte for byte; a bad feed, a
//! failed install or a dropped one changes nothing; a restarted replica resumes.

use std::path::Path;

use coffer_storage::{
    Change, ChangeRecord, DekRecord, Direction, LogState, NewSecret, REPLICATED_KEY_PURPOSES,
    SecretBindingRecord, SecretOrder, SecretQuery, SecretRecord, SecretUpdate, ServiceQuery,
    ServiceRecord, ServiceTokenRecord, SnapshotPart, SqliteStorage, Storage, StorageError,
    StoreBindingRecord, VersionRecord, WrappedKeyRecord,
};
use coffer_types::{
    AccountId, BindingName, DekId, Scope, Scopes, SecretId, SecretName, ServiceId, ServiceName,
    StoreId, Timestamp, TokenId, Version,
};
use rusqlite::{OptionalExtension, TransactionBehavior};
use tokio::sync::mpsc;

use super::{World, deploy, id, new_secret, store_record, ts, world};

// ---- moving snapshots ----

/// Streams `from`'s snapshot straight into an install on `to` and commits it.
pub(super) async fn copy_snapshot(
    from: &SqliteStorage,
    to: &SqliteStorage,
) -> coffer_storage::Result<()> {
    let (tx, mut rx) = mpsc::channel(8);
    let consume = async {
        let Some(SnapshotPart::Header {
            cluster_id,
            seq,
            hash,
            count,
        }) = rx.recv().await
        else {
            panic!("a snapshot starts with its header");
        };
        let mut install = to.install_snapshot(cluster_id, seq, hash, count);
        while let Some(part) = rx.recv().await {
            let SnapshotPart::Item(item) = part else {
                panic!("one header per snapshot");
            };
            install.push(item).await?;
        }
        install.commit().await
    };
    let (produced, installed) = tokio::join!(from.snapshot(tx), consume);
    produced?;
    installed
}

/// A snapshot taken whole (test sizes only).
struct Taken {
    cluster_id: [u8; 16],
    seq: u64,
    hash: [u8; 32],
    items: Vec<Vec<u8>>,
}

async fn take(from: &SqliteStorage) -> Taken {
    let (tx, mut rx) = mpsc::channel(8);
    let consume = async {
        let mut parts = Vec::new();
        while let Some(part) = rx.recv().await {
            parts.push(part);
        }
        parts
    };
    let (produced, parts) = tokio::join!(from.snapshot(tx), consume);
    produced.unwrap();
    let mut parts = parts.into_iter();
    let Some(SnapshotPart::Header {
        cluster_id,
        seq,
        hash,
        count,
    }) = parts.next()
    else {
        panic!("a snapshot starts with its header");
    };
    let items: Vec<Vec<u8>> = parts
        .map(|p| match p {
            SnapshotPart::Item(item) => item,
            SnapshotPart::Header { .. } => panic!("one header per snapshot"),
        })
        .collect();
    assert_eq!(items.len() as u64, count);
    Taken {
        cluster_id,
        seq,
        hash,
        items,
    }
}

/// Installs `items` under the given header.
async fn install(
    to: &SqliteStorage,
    cluster_id: [u8; 16],
    seq: u64,
    hash: [u8; 32],
    items: &[Vec<u8>],
) -> coffer_storage::Result<()> {
    let mut install = to.install_snapshot(cluster_id, seq, hash, items.len() as u64);
    for item in items {
        install.push(item.clone()).await?;
    }
    install.commit().await
}

// ---- what the other agent's node registry does, in raw SQL ----

/// Appends `change` to the log of the database at `path` exactly as the writer would (next
/// seq, chained hash), in `tx`.
fn raw_append(tx: &rusqlite::Transaction<'_>, change: &Change) {
    let last: Option<(i64, Vec<u8>)> = tx
        .query_row(
            "SELECT seq, hash FROM changes ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .unwrap();
    let (seq, prev) = match last {
        Some(last) => last,
        None => tx
            .query_row(
                "SELECT base_seq, base_hash FROM replication WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .unwrap()
            .unwrap_or((0, vec![0; 32])),
    };
    let prev: [u8; 32] = prev.try_into().unwrap();
    let seq = seq as u64 + 1;
    let payload = serde_json::to_vec(change).unwrap();
    let hash = ChangeRecord::chain_hash(&prev, seq, &payload);
    tx.execute(
        "INSERT INTO changes (seq, at, hash, payload) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![seq as i64, Timestamp::now().unix_micros(), hash, payload],
    )
    .unwrap();
}

/// Registers a node as the control plane does: the row and its `NodePut`, in one transaction.
fn raw_node_put(path: &Path, node: TokenId, name: &str, hash: [u8; 32]) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    tx.execute(
        "INSERT INTO nodes (id, name, hash, created) VALUES (?1, ?2, ?3, 1)",
        rusqlite::params![node.as_bytes(), name, hash],
    )
    .unwrap();
    raw_append(
        &tx,
        &Change::NodePut {
            node_id: node,
            name: name.into(),
            hash_hex: hex::encode(hash),
        },
    );
    tx.commit().unwrap();
}

fn raw_node_revoke(path: &Path, node: TokenId) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    tx.execute(
        "UPDATE nodes SET revoked = 2 WHERE id = ?1",
        [node.as_bytes()],
    )
    .unwrap();
    raw_append(&tx, &Change::NodeRevoked { node_id: node });
    tx.commit().unwrap();
}

/// The active nodes (id, name, hash), by id.
fn active_nodes(path: &Path) -> Vec<(Vec<u8>, String, Vec<u8>)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, name, hash FROM nodes WHERE revoked IS NULL ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Entries chained onto `state`'s head, as an upstream would send them.
pub(super) fn chained(state: &LogState, changes: &[Change]) -> Vec<ChangeRecord> {
    let (mut seq, mut prev) = (state.head_seq, state.head_hash);
    changes
        .iter()
        .map(|change| {
            seq += 1;
            let payload = serde_json::to_vec(change).unwrap();
            let hash = ChangeRecord::chain_hash(&prev, seq, &payload);
            prev = hash;
            ChangeRecord {
                seq,
                at: ts(seq as i64),
                hash,
                payload,
            }
        })
        .collect()
}

// ---- comparing answers ----

/// What is probed: everything the test made, deleted things included (they must be gone on
/// both sides).
#[derive(Default)]
struct Probe {
    accounts: Vec<AccountId>,
    stores: Vec<(AccountId, StoreId)>,
    secrets: Vec<(AccountId, StoreId, SecretName)>,
    services: Vec<(AccountId, ServiceId, ServiceName)>,
    tokens: Vec<TokenId>,
    deks: Vec<DekId>,
}

impl Probe {
    fn world(&mut self, w: &World) {
        self.accounts.push(w.account);
        self.stores.push((w.account, w.store));
        self.deks.push(w.dek);
    }

    fn secret(&mut self, new: &NewSecret) {
        self.secrets.push((
            new.record.account_id,
            new.record.store_id,
            new.record.name.clone(),
        ));
    }

    fn service(&mut self, service: &ServiceRecord, token: &ServiceTokenRecord) {
        self.services
            .push((service.account_id, service.id, service.name.clone()));
        self.tokens.push(token.id);
    }
}

/// The replicated part of a secret (times and comments are the control plane's own).
#[derive(Debug, PartialEq)]
struct SecretView {
    id: SecretId,
    store: StoreId,
    account: AccountId,
    name: SecretName,
    scopes: Scopes,
    version: Version,
}

fn secret_view(r: &SecretRecord) -> SecretView {
    SecretView {
        id: r.id,
        store: r.store_id,
        account: r.account_id,
        name: r.name.clone(),
        scopes: r.scopes.clone(),
        version: r.version,
    }
}

#[derive(Debug, PartialEq)]
struct ServiceView {
    id: ServiceId,
    account: AccountId,
    name: ServiceName,
    kind: Scope,
    secrets: Vec<SecretBindingRecord>,
    stores: Vec<StoreBindingRecord>,
}

fn service_view(r: &ServiceRecord) -> ServiceView {
    ServiceView {
        id: r.id,
        account: r.account_id,
        name: r.name.clone(),
        kind: r.kind,
        secrets: r.secrets.clone(),
        stores: r.stores.clone(),
    }
}

type ValueView = (SecretView, DekId, Vec<u8>);
type Key = (DekId, String, Vec<u8>);
type TokenView = (TokenId, AccountId, ServiceId, [u8; 32]);
type DekView = (DekId, AccountId, String, Vec<u8>);

#[derive(Debug, PartialEq)]
struct View {
    values: Vec<Option<ValueView>>,
    by_name: Vec<Option<SecretView>>,
    listings: Vec<Option<Vec<String>>>,
    services: Vec<Option<ServiceView>>,
    services_by_name: Vec<Option<ServiceView>>,
    service_lists: Vec<Vec<String>>,
    valid_tokens: Vec<Option<TokenView>>,
    deks: Vec<Option<DekView>>,
    nodes: Vec<(Vec<u8>, String, Vec<u8>)>,
    keys: Vec<Option<Key>>,
}

/// The secrets every binding of the source's services resolves to (store bindings through the
/// store's listing), plus the probed ones.
async fn lookups(source: &SqliteStorage, probe: &Probe) -> Vec<(AccountId, StoreId, SecretName)> {
    let mut out = probe.secrets.clone();
    for (account, id, _) in &probe.services {
        let Some(service) = source.get_service(*account, *id).await.unwrap() else {
            continue;
        };
        for b in &service.secrets {
            out.push((*account, b.store_id, b.secret_name.clone()));
        }
        for b in &service.stores {
            if let Ok(page) = source.list_secrets(*account, b.store_id, &by_name()).await {
                out.extend(
                    page.items
                        .into_iter()
                        .map(|s| (*account, b.store_id, s.name)),
                );
            }
        }
    }
    out
}

fn by_name() -> SecretQuery {
    SecretQuery {
        page: 1,
        per_page: 1000,
        order: SecretOrder::Name,
        direction: Direction::Asc,
        search: None,
        scopes: Scopes::default(),
    }
}

async fn view(
    s: &SqliteStorage,
    probe: &Probe,
    lookups: &[(AccountId, StoreId, SecretName)],
) -> View {
    let mut v = View {
        values: Vec::new(),
        by_name: Vec::new(),
        listings: Vec::new(),
        services: Vec::new(),
        services_by_name: Vec::new(),
        service_lists: Vec::new(),
        valid_tokens: Vec::new(),
        deks: Vec::new(),
        nodes: active_nodes(s.path()),
        keys: Vec::new(),
    };
    for (account, store, name) in lookups {
        v.values
            .push(
                s.current_value(*account, *store, name)
                    .await
                    .unwrap()
                    .map(|(secret, value)| {
                        assert_eq!(value.version, secret.version);
                        (secret_view(&secret), value.dek_id, value.sealed)
                    }),
            );
        v.by_name.push(
            s.get_secret_by_name(*account, *store, name)
                .await
                .unwrap()
                .as_ref()
                .map(secret_view),
        );
    }
    for (account, store) in &probe.stores {
        v.listings.push(
            s.list_secrets(*account, *store, &by_name())
                .await
                .ok()
                .map(|page| {
                    page.items
                        .into_iter()
                        .map(|s| s.name.as_str().to_owned())
                        .collect()
                }),
        );
    }
    for (account, id, name) in &probe.services {
        v.services.push(
            s.get_service(*account, *id)
                .await
                .unwrap()
                .as_ref()
                .map(service_view),
        );
        v.services_by_name.push(
            s.get_service_by_name(*account, name)
                .await
                .unwrap()
                .as_ref()
                .map(service_view),
        );
    }
    for account in &probe.accounts {
        let page = s
            .list_services(
                *account,
                &ServiceQuery {
                    page: 1,
                    per_page: 100,
                    name: None,
                },
            )
            .await
            .unwrap();
        v.service_lists.push(
            page.items
                .iter()
                .map(|s| s.name.as_str().to_owned())
                .collect(),
        );
    }
    for token in &probe.tokens {
        // Runtime reads accept unrevoked tokens only; a revoked token may be absent from a
        // replica (snapshots carry live tokens only), which it refuses just the same.
        v.valid_tokens.push(
            s.get_service_token(*token)
                .await
                .unwrap()
                .filter(|t| t.revoked.is_none())
                .map(|t| (t.id, t.account_id, t.service_id, t.hash)),
        );
    }
    for dek in &probe.deks {
        v.deks.push(
            s.get_dek(*dek)
                .await
                .unwrap()
                .map(|d| (d.key.id, d.account_id, d.key.kek_id, d.key.wrapped)),
        );
    }
    for purpose in REPLICATED_KEY_PURPOSES {
        v.keys.push(
            s.get_instance_key(purpose)
                .await
                .unwrap()
                .map(|k| (k.id, k.kek_id, k.wrapped)),
        );
    }
    v
}

async fn assert_same(source: &SqliteStorage, replica: &SqliteStorage, probe: &Probe, when: &str) {
    let lookups = lookups(source, probe).await;
    let expected = view(source, probe, &lookups).await;
    let got = view(replica, probe, &lookups).await;
    assert_eq!(got, expected, "{when}: the replica answers like its source");
    // The comparison is not vacuous.
    assert!(expected.values.iter().any(Option::is_some), "{when}");
    assert!(expected.services.iter().any(Option::is_some), "{when}");
    assert!(expected.valid_tokens.iter().any(Option::is_some), "{when}");
}

// ---- the source ----

pub(super) fn key(tag: u8) -> WrappedKeyRecord {
    WrappedKeyRecord {
        id: DekId::from_bytes(id()),
        kek_id: format!("kek-{tag}"),
        wrapped: vec![tag; 40],
        created: ts(i64::from(tag)),
    }
}

fn service(
    w: &World,
    name: &str,
    secrets: &[(&str, StoreId, &str)],
    stores: &[(&str, StoreId)],
) -> ServiceRecord {
    ServiceRecord {
        id: ServiceId::from_bytes(id()),
        account_id: w.account,
        name: ServiceName::parse(name).unwrap(),
        kind: Scope::Workers,
        secrets: secrets
            .iter()
            .map(|(binding, store, secret)| SecretBindingRecord {
                binding: BindingName::parse(binding).unwrap(),
                store_id: *store,
                secret_name: SecretName::parse(secret).unwrap(),
            })
            .collect(),
        stores: stores
            .iter()
            .map(|(binding, store)| StoreBindingRecord {
                binding: BindingName::parse(binding).unwrap(),
                store_id: *store,
            })
            .collect(),
        created: ts(6),
        modified: ts(6),
    }
}

fn token(service: &ServiceRecord, tag: u8) -> ServiceTokenRecord {
    ServiceTokenRecord {
        id: TokenId::from_bytes(id()),
        account_id: service.account_id,
        service_id: service.id,
        hash: [tag; 32],
        created: ts(7),
        revoked: None,
    }
}

fn value(secret: &NewSecret, version: u32, dek: DekId, sealed: &[u8]) -> VersionRecord {
    VersionRecord {
        secret_id: secret.record.id,
        version: Version(version),
        dek_id: dek,
        sealed: sealed.to_vec(),
        created: ts(100 + i64::from(version)),
    }
}

fn set_value(
    secret: &NewSecret,
    expected: u32,
    value: VersionRecord,
    dek: Option<DekRecord>,
) -> SecretUpdate {
    SecretUpdate {
        account_id: secret.record.account_id,
        store_id: secret.record.store_id,
        secret_id: secret.record.id,
        expected_version: Version(expected),
        value: Some(value),
        dek,
        scopes: None,
        comment: None,
        modified: ts(200),
    }
}

struct Fixture {
    a: World,
    b: World,
    dev: StoreId,
    secret_a: NewSecret,
    secret_b: NewSecret,
    api: ServiceRecord,
    api_token: ServiceTokenRecord,
    jobs: ServiceRecord,
    nodes: [TokenId; 2],
}

/// Two accounts with DEKs, stores, secrets (one with three versions under two DEKs), services
/// with secret and store bindings, service tokens (one revoked), nodes (one revoked) and all
/// four instance keys.
async fn populate(s: &SqliteStorage, probe: &mut Probe) -> Fixture {
    for (n, purpose) in [
        "token-mac",
        "audit-mac",
        "service-token-mac",
        "node-token-mac",
    ]
    .into_iter()
    .enumerate()
    {
        s.put_instance_key_if_absent(purpose, key(n as u8 + 50))
            .await
            .unwrap();
    }
    let a = world(s, "acme").await;
    let b = world(s, "beta").await;
    probe.world(&a);
    probe.world(&b);
    let dev = StoreId::from_bytes(id());
    s.create_store(store_record(a.account, dev, "dev"), 100, &[])
        .await
        .unwrap();
    probe.stores.push((a.account, dev));

    let secret_a = new_secret(&a, "A");
    let secret_b = new_secret(&a, "B");
    let secret_c = new_secret(&a, "C");
    let mut secret_d = new_secret(&a, "D");
    secret_d.record.store_id = dev;
    let secret_ba = new_secret(&b, "A");
    s.create_secrets(
        a.account,
        a.store,
        vec![secret_a.clone(), secret_b.clone(), secret_c.clone()],
        100,
        &[],
    )
    .await
    .unwrap();
    s.create_secrets(a.account, dev, vec![secret_d.clone()], 100, &[])
        .await
        .unwrap();
    s.create_secrets(b.account, b.store, vec![secret_ba.clone()], 100, &[])
        .await
        .unwrap();
    for new in [&secret_a, &secret_b, &secret_c, &secret_d, &secret_ba] {
        probe.secret(new);
    }
    s.update_secret(
        set_value(&secret_a, 1, value(&secret_a, 2, a.dek, b"a2"), None),
        &[],
    )
    .await
    .unwrap();
    let dek2 = DekRecord {
        account_id: a.account,
        key: key(60),
        rk: None,
    };
    probe.deks.push(dek2.key.id);
    s.update_secret(
        set_value(
            &secret_a,
            2,
            value(&secret_a, 3, dek2.key.id, b"a3"),
            Some(dek2),
        ),
        &[],
    )
    .await
    .unwrap();

    let (api, api_token) = deploy(s, &a, "api").await;
    probe.service(&api, &api_token);
    let revoked = token(&api, 2);
    s.create_service_token(revoked.clone(), None, &[])
        .await
        .unwrap();
    s.revoke_service_tokens(a.account, api.id, Some(revoked.id), ts(8), &[])
        .await
        .unwrap();
    probe.tokens.push(revoked.id);
    let jobs = service(
        &a,
        "jobs",
        &[("D", dev, "D"), ("NOPE", dev, "NOPE")],
        &[("DEV", dev)],
    );
    let jobs_token = token(&jobs, 3);
    s.create_service(jobs.clone(), jobs_token.clone(), &[])
        .await
        .unwrap();
    probe.service(&jobs, &jobs_token);
    let (web, web_token) = deploy(s, &b, "web").await;
    probe.service(&web, &web_token);

    let nodes = [TokenId::from_bytes(id()), TokenId::from_bytes(id())];
    raw_node_put(s.path(), nodes[0], "edge-1", [0x11; 32]);
    raw_node_put(s.path(), nodes[1], "edge-2", [0x22; 32]);
    raw_node_revoke(s.path(), nodes[1]);
    Fixture {
        a,
        b,
        dev,
        secret_a,
        secret_b,
        api,
        api_token,
        jobs,
        nodes,
    }
}

/// Every kind of change after the snapshot: a value under a new DEK, a deleted secret, token
/// revocations and rotation, a service rebound and one deleted, a store deleted with force, an
/// account deleted, new secrets, nodes registered and revoked.
async fn more_writes(s: &SqliteStorage, fx: &Fixture, probe: &mut Probe) {
    let dek3 = DekRecord {
        account_id: fx.a.account,
        key: key(70),
        rk: None,
    };
    probe.deks.push(dek3.key.id);
    s.update_secret(
        set_value(
            &fx.secret_a,
            3,
            value(&fx.secret_a, 4, dek3.key.id, b"a4"),
            Some(dek3),
        ),
        &[],
    )
    .await
    .unwrap();
    s.delete_secrets(fx.a.account, fx.a.store, &[fx.secret_b.record.id], &[])
        .await
        .unwrap();
    s.revoke_service_tokens(fx.a.account, fx.api.id, Some(fx.api_token.id), ts(9), &[])
        .await
        .unwrap();
    let rotated = token(&fx.api, 4);
    s.create_service_token(rotated.clone(), Some(ts(10)), &[])
        .await
        .unwrap();
    probe.tokens.push(rotated.clone().id);
    let rotated_again = token(&fx.api, 5);
    s.create_service_token(rotated_again.clone(), Some(ts(11)), &[])
        .await
        .unwrap();
    probe.tokens.push(rotated_again.id);
    let mut rebound = service(
        &fx.a,
        "api",
        &[
            ("C", fx.a.store, "C"),
            ("B", fx.a.store, "B"),
            ("D", fx.dev, "D"),
        ],
        &[("DEV", fx.dev), ("MAIN", fx.a.store)],
    );
    rebound.id = fx.api.id;
    s.update_service(rebound, &[]).await.unwrap();
    s.delete_service(fx.a.account, fx.jobs.id, &[])
        .await
        .unwrap();
    s.delete_store(fx.a.account, fx.dev, true, &[])
        .await
        .unwrap();
    s.delete_account(fx.b.account, &[]).await.unwrap();
    let e = new_secret(&fx.a, "E");
    s.create_secrets(fx.a.account, fx.a.store, vec![e.clone()], 100, &[])
        .await
        .unwrap();
    probe.secret(&e);
    // Writes edges never hear of.
    s.set_account_quota(fx.a.account, Some(7), &[])
        .await
        .unwrap();
    let node = TokenId::from_bytes(id());
    raw_node_put(s.path(), node, "edge-3", [0x33; 32]);
    raw_node_revoke(s.path(), fx.nodes[0]);
}

pub(super) fn open(path: &Path) -> SqliteStorage {
    SqliteStorage::open(path).unwrap()
}

// ---- the tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_answers_like_its_source_after_snapshot_and_feed() {
    let dir = tempfile::tempdir().unwrap();
    let (source_path, replica_path) = (dir.path().join("source.db"), dir.path().join("edge.db"));
    let source = open(&source_path);
    let cluster = source.ensure_cluster_id().await.unwrap();
    let mut probe = Probe::default();
    let fx = populate(&source, &mut probe).await;

    let replica = open(&replica_path);
    assert_eq!(replica.log_state().await.unwrap().cluster_id, None);
    replica
        .outbox_put([1; 16], b"pending".to_vec())
        .await
        .unwrap();
    let mut head = replica.subscribe_head();
    let committed = replica.committed_head();
    copy_snapshot(&source, &replica).await.unwrap();

    let at_snapshot = source.log_state().await.unwrap();
    assert_eq!(
        replica.log_state().await.unwrap(),
        LogState {
            cluster_id: Some(cluster),
            base_seq: at_snapshot.head_seq,
            base_hash: at_snapshot.head_hash,
            head_seq: at_snapshot.head_seq,
            head_hash: at_snapshot.head_hash,
        },
        "the replica adopts the cluster id and starts its log at the snapshot's position"
    );
    assert!(head.has_changed().unwrap());
    assert_eq!(*head.borrow_and_update(), at_snapshot.head_seq);
    assert_ne!(replica.committed_head(), committed);
    assert_eq!(replica.change_head().await.unwrap(), at_snapshot.head_seq);
    assert_same(&source, &replica, &probe, "after the snapshot").await;
    assert_eq!(
        active_nodes(&replica_path),
        vec![(
            fx.nodes[0].as_bytes().to_vec(),
            "edge-1".into(),
            vec![0x11; 32]
        )]
    );
    for purpose in ["token-mac", "audit-mac"] {
        assert!(source.get_instance_key(purpose).await.unwrap().is_some());
        assert_eq!(
            replica.get_instance_key(purpose).await.unwrap(),
            None,
            "the {purpose} key never reaches an edge"
        );
    }
    assert_eq!(
        replica.outbox_list(10).await.unwrap(),
        vec![([1; 16], b"pending".to_vec())],
        "an install leaves the outbox alone"
    );
    assert!(
        replica
            .changes_after(at_snapshot.head_seq, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        replica.changes_after(at_snapshot.head_seq - 1, 10).await,
        Err(StorageError::Compacted { base }) if base == at_snapshot.head_seq
    ));

    // The feed, applied a few entries at a time.
    more_writes(&source, &fx, &mut probe).await;
    let feed = source
        .changes_after(at_snapshot.head_seq, usize::MAX)
        .await
        .unwrap();
    assert!(feed.len() > 15, "{}", feed.len());
    for chunk in feed.chunks(3) {
        replica.apply_entries(chunk.to_vec()).await.unwrap();
    }
    assert_same(&source, &replica, &probe, "after the feed").await;
    assert_eq!(
        replica
            .changes_after(at_snapshot.head_seq, usize::MAX)
            .await
            .unwrap(),
        feed,
        "the replica holds the source's entries byte for byte"
    );
    let now = source.log_state().await.unwrap();
    assert_eq!(replica.log_state().await.unwrap().head_hash, now.head_hash);
    assert_eq!(replica.change_head().await.unwrap(), now.head_seq);
    assert_eq!(*head.borrow_and_update(), now.head_seq);
    assert_eq!(replica.committed_head(), now.head_seq);
    assert_eq!(
        replica.secret_count(fx.a.account).await.unwrap(),
        source.secret_count(fx.a.account).await.unwrap(),
        "the secret counters follow"
    );
    assert_eq!(
        active_nodes(&replica_path),
        active_nodes(&source_path),
        "nodes registered and revoked through the feed"
    );
    assert_eq!(active_nodes(&replica_path).len(), 1);
    // Edges keep the current version only.
    assert_eq!(
        replica
            .get_version(fx.secret_a.record.id, Version(3))
            .await
            .unwrap(),
        None
    );
    assert!(
        source
            .get_version(fx.secret_a.record.id, Version(3))
            .await
            .unwrap()
            .is_some()
    );

    // A relay: a second replica bootstraps from the first and follows its feed.
    let child_path = dir.path().join("child.db");
    let child = open(&child_path);
    copy_snapshot(&replica, &child).await.unwrap();
    assert_same(&source, &child, &probe, "a relay's snapshot").await;
    let relay_base = child.log_state().await.unwrap();
    assert_eq!(relay_base.head_seq, now.head_seq);
    assert_eq!(relay_base.cluster_id, Some(cluster));
    let extra = new_secret(&fx.a, "F");
    source
        .create_secrets(fx.a.account, fx.a.store, vec![extra.clone()], 100, &[])
        .await
        .unwrap();
    probe.secret(&extra);
    let world_c = world(&source, "gamma").await;
    probe.world(&world_c);
    let upstream = source.changes_after(now.head_seq, 100).await.unwrap();
    replica.apply_entries(upstream.clone()).await.unwrap();
    let relayed = replica.changes_after(now.head_seq, 100).await.unwrap();
    assert_eq!(
        relayed, upstream,
        "a relay re-serves the entries as received"
    );
    child.apply_entries(relayed).await.unwrap();
    assert_same(&source, &child, &probe, "a relay's feed").await;

    // Restart: the position and the data are durable together; following resumes.
    let state = replica.log_state().await.unwrap();
    replica.close().await;
    drop(replica);
    let replica = open(&replica_path);
    assert_eq!(replica.log_state().await.unwrap(), state);
    assert_eq!(*replica.subscribe_head().borrow(), state.head_seq);
    assert_same(&source, &replica, &probe, "after a restart").await;
    source
        .update_secret(
            set_value(
                &fx.secret_a,
                4,
                value(&fx.secret_a, 5, fx.a.dek, b"a5"),
                None,
            ),
            &[],
        )
        .await
        .unwrap();
    replica
        .apply_entries(source.changes_after(state.head_seq, 100).await.unwrap())
        .await
        .unwrap();
    assert_same(&source, &replica, &probe, "resumed after the restart").await;
    assert_eq!(
        replica
            .current_value(fx.a.account, fx.a.store, &fx.secret_a.record.name)
            .await
            .unwrap()
            .unwrap()
            .1
            .sealed,
        b"a5"
    );
}

/// Everything a refused call must leave as it was.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    state: LogState,
    log: Vec<ChangeRecord>,
    committed: u64,
    view: View,
}

async fn fingerprint(s: &SqliteStorage, source: &SqliteStorage, probe: &Probe) -> Fingerprint {
    let state = s.log_state().await.unwrap();
    Fingerprint {
        state,
        log: s.changes_after(state.base_seq, usize::MAX).await.unwrap(),
        committed: s.committed_head(),
        view: view(s, probe, &lookups(source, probe).await).await,
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    source: SqliteStorage,
    replica: SqliteStorage,
    fx: Fixture,
    probe: Probe,
}

/// A source with data, and a replica installed from it that has applied one more entry (so
/// its log is not empty).
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let source = open(&dir.path().join("source.db"));
    source.ensure_cluster_id().await.unwrap();
    let mut probe = Probe::default();
    let fx = populate(&source, &mut probe).await;
    let replica = open(&dir.path().join("edge.db"));
    copy_snapshot(&source, &replica).await.unwrap();
    let base = replica.change_head().await.unwrap();
    let g = new_secret(&fx.a, "G");
    source
        .create_secrets(fx.a.account, fx.a.store, vec![g.clone()], 100, &[])
        .await
        .unwrap();
    probe.secret(&g);
    replica
        .apply_entries(source.changes_after(base, 100).await.unwrap())
        .await
        .unwrap();
    assert_eq!(replica.change_head().await.unwrap(), base + 1);
    Setup {
        _dir: dir,
        source,
        replica,
        fx,
        probe,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refuses_bad_feeds_and_keeps_its_state() {
    let Setup {
        _dir,
        source,
        replica,
        fx,
        mut probe,
    } = setup().await;
    let position = replica.change_head().await.unwrap();
    more_writes(&source, &fx, &mut probe).await;
    let feed = source.changes_after(position, usize::MAX).await.unwrap();
    let before = fingerprint(&replica, &source, &probe).await;
    let state = before.state;

    let flip_hash = {
        let mut r = feed[0].clone();
        r.hash[5] ^= 1;
        r
    };
    let flip_payload = {
        let mut r = feed[1].clone();
        r.payload[3] ^= 0x20;
        r
    };
    // Chained correctly, but not a change.
    let not_a_change = chained(&state, &[]).into_iter().chain({
        let payload = b"{\"type\":\"no_such_change\"}".to_vec();
        let seq = state.head_seq + 1;
        [ChangeRecord {
            seq,
            at: ts(1),
            hash: ChangeRecord::chain_hash(&state.head_hash, seq, &payload),
            payload,
        }]
    });
    let cases: Vec<(&str, Vec<ChangeRecord>)> = vec![
        ("a gap", feed[1..3].to_vec()),
        ("an entry already applied", {
            let mut old = replica.changes_after(position - 1, 1).await.unwrap();
            old.extend(feed[..2].iter().cloned());
            old
        }),
        ("a bad hash", vec![flip_hash]),
        (
            "a good entry, then one whose payload does not match its hash",
            vec![feed[0].clone(), flip_payload],
        ),
        ("a payload that is not a change", not_a_change.collect()),
        ("an entry twice", vec![feed[0].clone(), feed[0].clone()]),
        (
            "entries of another history",
            chained(
                &LogState {
                    head_hash: [7; 32],
                    ..state
                },
                &[Change::AccountPut {
                    account_id: AccountId::from_bytes(id()),
                    name: "x".into(),
                }],
            ),
        ),
        (
            "an instance key that is never replicated",
            chained(
                &state,
                &[Change::InstanceKeyPut {
                    purpose: "token-mac".into(),
                    key_id: DekId::from_bytes(id()),
                    kek_id: "k".into(),
                    wrapped_hex: "00".into(),
                }],
            ),
        ),
    ];
    for (what, records) in cases {
        let err = replica.apply_entries(records).await.unwrap_err();
        assert!(
            matches!(err, StorageError::Invalid(_)),
            "{what} is Invalid: {err:?}"
        );
        assert_eq!(
            fingerprint(&replica, &source, &probe).await,
            before,
            "{what} changes nothing"
        );
    }

    // A valid entry the replica cannot apply: a value under a DEK it does not hold.
    let missing = chained(
        &state,
        &[
            Change::AccountPut {
                account_id: fx.a.account,
                name: "acme".into(),
            },
            Change::SecretPut {
                account_id: fx.a.account,
                store_id: fx.a.store,
                secret_id: SecretId::from_bytes(id()),
                name: "H".into(),
                scopes: vec!["workers".into()],
                version: 1,
                dek_id: DekId::from_bytes(id()),
                sealed_hex: "00".into(),
            },
        ],
    );
    let err = replica.apply_entries(missing.clone()).await.unwrap_err();
    match err {
        StorageError::Corrupted(m) => assert!(
            m.contains(&format!("change {}", missing[1].seq)),
            "the error names the entry: {m}"
        ),
        other => panic!("a missing DEK is Corrupted: {other:?}"),
    }
    assert_eq!(fingerprint(&replica, &source, &probe).await, before);

    // The real feed still applies.
    replica.apply_entries(feed.clone()).await.unwrap();
    assert_same(&source, &replica, &probe, "after the refusals").await;

    // A change that would move a secret's version backwards is refused, however well it
    // chains (an upstream replaying an older `SecretPut`); the same version (a change of
    // metadata) is not.
    let newest = feed
        .iter()
        .rev()
        .filter_map(|e| match e.change().unwrap() {
            c @ Change::SecretPut { version, .. } if version >= 2 => Some(c),
            _ => None,
        })
        .next()
        .expect("the feed updates a secret's value");
    let Change::SecretPut {
        secret_id, version, ..
    } = &newest
    else {
        unreachable!()
    };
    let (secret_id, version) = (*secret_id, *version);
    let older = match newest.clone() {
        Change::SecretPut {
            account_id,
            store_id,
            name,
            scopes,
            dek_id,
            sealed_hex,
            ..
        } => Change::SecretPut {
            account_id,
            store_id,
            secret_id,
            name,
            scopes,
            version: version - 1,
            dek_id,
            sealed_hex,
        },
        _ => unreachable!(),
    };
    let state = replica.log_state().await.unwrap();
    let before = fingerprint(&replica, &source, &probe).await;
    match replica
        .apply_entries(chained(&state, &[older]))
        .await
        .unwrap_err()
    {
        StorageError::Corrupted(m) => assert!(m.contains("backwards"), "{m}"),
        other => panic!("a version moving backwards is Corrupted: {other:?}"),
    }
    assert_eq!(fingerprint(&replica, &source, &probe).await, before);
    replica
        .apply_entries(chained(&state, &[newest]))
        .await
        .unwrap();

    // Entries need a cluster id: a fresh database is not a replica yet.
    let fresh = open(&_dir.path().join("fresh.db"));
    let base = source.log_state().await.unwrap().base_seq;
    let first = source.changes_after(base, 1).await.unwrap();
    assert!(matches!(
        fresh.apply_entries(first).await,
        Err(StorageError::Invalid(_))
    ));
    assert_eq!(fresh.change_head().await.unwrap(), 0);
}

/// Pushes `items` into an install whose header says `count`, then commits.
async fn install_counted(
    to: &SqliteStorage,
    cluster_id: [u8; 16],
    seq: u64,
    hash: [u8; 32],
    count: u64,
    items: &[Vec<u8>],
) -> coffer_storage::Result<()> {
    let mut install = to.install_snapshot(cluster_id, seq, hash, count);
    for item in items {
        install.push(item.clone()).await?;
    }
    install.commit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_snapshot_installs_change_nothing() {
    let Setup {
        _dir,
        source,
        replica,
        fx,
        mut probe,
    } = setup().await;
    more_writes(&source, &fx, &mut probe).await;
    let snap = take(&source).await;
    let n = snap.items.len();
    assert!(n > 10);
    let before = fingerprint(&replica, &source, &probe).await;

    // Dropped half way.
    {
        let mut install = replica.install_snapshot(snap.cluster_id, snap.seq, snap.hash, n as u64);
        for item in &snap.items[..n / 2] {
            install.push(item.clone()).await.unwrap();
        }
    }
    assert_eq!(
        fingerprint(&replica, &source, &probe).await,
        before,
        "an install dropped before its commit"
    );

    let is_dek = |item: &Vec<u8>| {
        matches!(
            serde_json::from_slice::<Change>(item).unwrap(),
            Change::DekPut { .. }
        )
    };
    let without_deks: Vec<Vec<u8>> = snap.items.iter().filter(|i| !is_dek(i)).cloned().collect();
    let mut garbage = snap.items.clone();
    garbage[3] = b"garbage".to_vec();
    let mut with_api_key = snap.items.clone();
    with_api_key.insert(
        0,
        serde_json::to_vec(&Change::InstanceKeyPut {
            purpose: "token-mac".into(),
            key_id: DekId::from_bytes(id()),
            kek_id: "k".into(),
            wrapped_hex: "00".into(),
        })
        .unwrap(),
    );
    let (c, seq, hash) = (snap.cluster_id, snap.seq, snap.hash);
    let cases: Vec<(&str, coffer_storage::Result<()>)> = vec![
        (
            "fewer items than the header's count",
            install_counted(&replica, c, seq, hash, n as u64, &snap.items[..n - 1]).await,
        ),
        (
            "more items than the header's count",
            install_counted(&replica, c, seq, hash, n as u64 - 1, &snap.items).await,
        ),
        (
            "another cluster's snapshot",
            install_counted(&replica, [9; 16], seq, hash, n as u64, &snap.items).await,
        ),
        (
            "an item that is not a change",
            install_counted(&replica, c, seq, hash, n as u64, &garbage).await,
        ),
        (
            "an instance key that is never replicated",
            install_counted(&replica, c, seq, hash, n as u64 + 1, &with_api_key).await,
        ),
        (
            "seq 0 with a hash other than the genesis",
            install_counted(&replica, c, 0, [1; 32], n as u64, &snap.items).await,
        ),
    ];
    for (what, result) in cases {
        assert!(
            matches!(result, Err(StorageError::Invalid(_))),
            "{what} is Invalid: {result:?}"
        );
        assert_eq!(
            fingerprint(&replica, &source, &probe).await,
            before,
            "{what} changes nothing"
        );
    }
    let result = install_counted(
        &replica,
        c,
        seq,
        hash,
        without_deks.len() as u64,
        &without_deks,
    )
    .await;
    assert!(
        matches!(&result, Err(StorageError::Corrupted(m)) if m.contains("snapshot item")),
        "values under DEKs the snapshot does not carry: {result:?}"
    );
    assert_eq!(fingerprint(&replica, &source, &probe).await, before);

    // Nothing is visible to readers before the commit.
    let mut open_install = replica.install_snapshot(c, seq, hash, n as u64);
    for item in &snap.items[..n - 1] {
        open_install.push(item.clone()).await.unwrap();
    }
    assert_eq!(
        fingerprint(&replica, &source, &probe).await,
        before,
        "an install in progress is invisible"
    );
    open_install.push(snap.items[n - 1].clone()).await.unwrap();
    open_install.commit().await.unwrap();
    assert_same(&source, &replica, &probe, "after the install").await;
    assert_eq!(replica.change_head().await.unwrap(), seq);

    // The writer is free again.
    replica.outbox_put([3; 16], b"x".to_vec()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_replaces_a_diverged_history_at_any_seq() {
    let Setup {
        _dir,
        source,
        replica,
        fx: _,
        probe,
    } = setup().await;
    let snap = take(&source).await;
    let state = replica.log_state().await.unwrap();
    assert_eq!(
        (snap.seq, snap.hash),
        (state.head_seq, state.head_hash),
        "the replica is current"
    );
    let mut head = replica.subscribe_head();
    head.borrow_and_update();

    // Same seq, another hash (another history at the same length): replaced.
    let committed = replica.committed_head();
    install(&replica, snap.cluster_id, snap.seq, [0xAB; 32], &snap.items)
        .await
        .unwrap();
    assert_ne!(
        replica.committed_head(),
        committed,
        "caches keyed on committed_head must see the replacement"
    );
    assert!(head.has_changed().unwrap(), "the watch announces it");
    assert_eq!(*head.borrow_and_update(), snap.seq);
    let replaced = replica.log_state().await.unwrap();
    assert_eq!(
        (replaced.head_seq, replaced.head_hash),
        (snap.seq, [0xAB; 32])
    );
    assert_eq!(
        (replaced.base_seq, replaced.base_hash),
        (snap.seq, [0xAB; 32])
    );
    assert!(
        replica
            .changes_after(snap.seq, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_same(&source, &replica, &probe, "replaced at the same seq").await;
    // The source's next entry does not chain onto the replaced history.
    world(&source, "delta").await;
    let next = source.changes_after(snap.seq, 10).await.unwrap();
    assert!(matches!(
        replica.apply_entries(next).await,
        Err(StorageError::Invalid(_))
    ));

    // A lower seq: the replica goes back, and committed_head still moves on.
    let committed = replica.committed_head();
    install(&replica, snap.cluster_id, 3, [0xCD; 32], &snap.items)
        .await
        .unwrap();
    assert!(replica.committed_head() > committed);
    assert!(head.has_changed().unwrap());
    assert_eq!(*head.borrow_and_update(), 3);
    assert_eq!(replica.change_head().await.unwrap(), 3);

    // And the real one again: the replica follows the source.
    copy_snapshot(&source, &replica).await.unwrap();
    let now = source.log_state().await.unwrap();
    let state = replica.log_state().await.unwrap();
    assert_eq!(
        (state.head_seq, state.head_hash),
        (now.head_seq, now.head_hash)
    );
    assert_same(&source, &replica, &probe, "after reinstalling").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_entries_apply_even_out_of_order() {
    let Setup {
        _dir,
        source: _,
        replica,
        fx,
        probe: _,
    } = setup().await;
    let path = replica.path().to_owned();
    let successor = TokenId::from_bytes(id());
    // The name's new holder before the old one's revocation.
    let entries = chained(
        &replica.log_state().await.unwrap(),
        &[Change::NodePut {
            node_id: successor,
            name: "edge-1".into(),
            hash_hex: hex::encode([0x44; 32]),
        }],
    );
    assert_eq!(
        replica.apply_entries(entries).await.unwrap(),
        vec![],
        "a registration revokes no node the caller is told of"
    );
    assert_eq!(
        active_nodes(&path),
        vec![(
            successor.as_bytes().to_vec(),
            "edge-1".into(),
            vec![0x44; 32]
        )],
        "the previous holder of the name is revoked, the new one active"
    );
    let entries = chained(
        &replica.log_state().await.unwrap(),
        &[
            Change::NodeRevoked {
                node_id: fx.nodes[0],
            },
            Change::NodeRevoked { node_id: successor },
        ],
    );
    assert_eq!(
        replica.apply_entries(entries).await.unwrap(),
        vec![fx.nodes[0], successor],
        "the nodes the entries revoked, in order"
    );
    assert!(active_nodes(&path).is_empty());
}

/// A snapshot carries revoked nodes as revoked (their token hashes included), so that a relay
/// bootstrapped from it still recognises a revoked node's real token and can tell it so; a
/// name revoked and registered again leaves its new holder active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_nodes_travel_in_snapshots_as_revoked() {
    let Setup {
        _dir,
        source,
        replica: _,
        fx: _,
        probe: _,
    } = setup().await;
    let path = source.path().to_owned();
    let gone = TokenId::from_bytes(id());
    let again = TokenId::from_bytes(id());
    raw_node_put(&path, gone, "edge-9", [0x19; 32]);
    raw_node_revoke(&path, gone);
    raw_node_put(&path, again, "edge-9", [0x29; 32]);

    let fresh_path = _dir.path().join("fresh.db");
    let fresh = open(&fresh_path);
    copy_snapshot(&source, &fresh).await.unwrap();
    let revoked = fresh
        .get_node(gone)
        .await
        .unwrap()
        .expect("the revoked node");
    assert!(revoked.revoked.is_some(), "{revoked:?}");
    assert_eq!(revoked.hash, [0x19; 32]);
    let active = fresh
        .get_node(again)
        .await
        .unwrap()
        .expect("the new holder");
    assert!(active.revoked.is_none(), "{active:?}");
    assert_eq!(active_nodes(&fresh_path), active_nodes(&path));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_keeps_batches_in_order_until_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.db");
    let s = open(&path);
    assert!(s.outbox_list(10).await.unwrap().is_empty());
    for (id, body) in [([3u8; 16], "c"), ([1; 16], "a"), ([2; 16], "b")] {
        s.outbox_put(id, body.into()).await.unwrap();
    }
    s.outbox_put([1; 16], b"again".to_vec()).await.unwrap();
    let all = |v: &[([u8; 16], &str)]| -> Vec<([u8; 16], Vec<u8>)> {
        v.iter()
            .map(|(id, b)| (*id, b.as_bytes().to_vec()))
            .collect()
    };
    assert_eq!(
        s.outbox_list(10).await.unwrap(),
        all(&[([3; 16], "c"), ([1; 16], "a"), ([2; 16], "b")]),
        "oldest first; a second put of one id keeps the first"
    );
    assert_eq!(
        s.outbox_list(2).await.unwrap(),
        all(&[([3; 16], "c"), ([1; 16], "a")])
    );
    assert!(s.outbox_list(0).await.unwrap().is_empty());
    s.outbox_delete(vec![[3; 16], [9; 16]]).await.unwrap();
    s.outbox_put([4; 16], b"d".to_vec()).await.unwrap();
    assert_eq!(
        s.outbox_list(10).await.unwrap(),
        all(&[([1; 16], "a"), ([2; 16], "b"), ([4; 16], "d")])
    );
    assert_eq!(
        s.change_head().await.unwrap(),
        0,
        "the outbox is not logged"
    );
    s.close().await;
    drop(s);
    let s = open(&path);
    assert_eq!(
        s.outbox_list(10).await.unwrap(),
        all(&[([1; 16], "a"), ([2; 16], "b"), ([4; 16], "d")]),
        "kept across a restart"
    );
    s.outbox_delete(vec![[1; 16], [2; 16], [4; 16]])
        .await
        .unwrap();
    assert!(s.outbox_list(10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_id_and_compaction_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.db");
    let s = open(&path);
    let w = world(&s, "acme").await;
    let id = s.ensure_cluster_id().await.unwrap();
    let head = s.log_state().await.unwrap();
    s.compact_log(head.head_seq).await.unwrap();
    s.close().await;
    drop(s);

    let s = open(&path);
    assert_eq!(s.ensure_cluster_id().await.unwrap(), id, "the id is stored");
    let state = s.log_state().await.unwrap();
    assert_eq!(state.cluster_id, Some(id));
    assert_eq!(
        (
            state.base_seq,
            state.base_hash,
            state.head_seq,
            state.head_hash
        ),
        (head.head_seq, head.head_hash, head.head_seq, head.head_hash)
    );
    assert_eq!(
        *s.subscribe_head().borrow(),
        head.head_seq,
        "the watch starts at the head found at open, also with every entry compacted"
    );
    assert_eq!(s.committed_head(), head.head_seq);
    s.create_secrets(w.account, w.store, vec![new_secret(&w, "A")], 10, &[])
        .await
        .unwrap();
    let next = s.changes_after(head.head_seq, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].seq, head.head_seq + 1);
    assert!(
        next[0].follows(&head.head_hash),
        "appends chain on from the base"
    );
    assert!(matches!(
        s.changes_after(0, 10).await,
        Err(StorageError::Compacted { base }) if base == head.head_seq
    ));
    // The trigger still keeps entries above the base.
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert!(conn.execute("DELETE FROM changes", []).is_err());
}

/// A driver runs an install from a spawned task: the value and its futures must be `Send`.
#[test]
fn snapshot_installs_can_move_between_tasks() {
    fn assert_send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("edge.db"));
    let mut install = s.install_snapshot([1; 16], 0, ChangeRecord::GENESIS_HASH, 0);
    assert_send(&install);
    let push = install.push(Vec::new());
    assert_send(&push);
    drop(push);
    let commit = install.commit();
    assert_send(&commit);
}

/// Creates secret `name` on the source, applies the feed entries to the replica, and checks
/// that the replica's count trigger counted it as the source's did.
async fn secret_by_feed(
    source: &SqliteStorage,
    replica: &SqliteStorage,
    world: &World,
    name: &str,
    probe: &mut Probe,
    when: &str,
) {
    let head = replica.change_head().await.unwrap();
    let new = new_secret(world, name);
    probe.secret(&new);
    source
        .create_secrets(world.account, world.store, vec![new], 10_000, &[])
        .await
        .unwrap();
    replica
        .apply_entries(source.changes_after(head, 100).await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        replica.secret_count(world.account).await.unwrap(),
        source.secret_count(world.account).await.unwrap(),
        "the count trigger counts a secret from the feed {when}"
    );
    assert_eq!(
        store_total(replica, world.account, world.store).await,
        store_total(source, world.account, world.store).await,
        "the count trigger counts a store's secret from the feed {when}"
    );
}

/// The store's `total_count` in an unfiltered list (its maintained count), checked against a
/// count of its rows (a search for "" matches every secret and is counted over the rows).
async fn store_total(s: &SqliteStorage, account: AccountId, store: StoreId) -> u64 {
    let mut query = SecretQuery {
        page: 1,
        per_page: 1,
        order: SecretOrder::Created,
        direction: Direction::Asc,
        search: None,
        scopes: Scopes::default(),
    };
    let stored = s.list_secrets(account, store, &query).await.unwrap();
    query.search = Some(String::new());
    let rows = s.list_secrets(account, store, &query).await.unwrap();
    assert_eq!(
        stored.total_count, rows.total_count,
        "the store's count matches its rows"
    );
    stored.total_count
}

/// Installs hand items to the writer in batches, secrets arrive in id order, skip the lookups
/// an entry needs and are counted without the count trigger: an install of several batches
/// still holds exactly its source's state (counters included, and the trigger counts the
/// next secret again), the WAL the install wrote is emptied by the time its commit returns,
/// an install dropped after batches reached the writer changes nothing and frees it, a bad
/// item in an early batch fails a later push, and a snapshot naming a secret twice is refused
/// whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_install_matches_its_source_and_leaves_no_wal() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(&dir.path().join("source.db"));
    source.ensure_cluster_id().await.unwrap();
    let mut probe = Probe::default();
    let fx = populate(&source, &mut probe).await;
    // More batches of items than the install queues (so a push waits for the writer), written
    // in chunks like a bulk import.
    for chunk in 0..16 {
        let secrets: Vec<NewSecret> = (0..100)
            .map(|i| new_secret(&fx.a, &format!("bulk-{chunk}-{i:03}")))
            .collect();
        for new in &secrets {
            probe.secret(new);
        }
        source
            .create_secrets(fx.a.account, fx.a.store, secrets, 10_000, &[])
            .await
            .unwrap();
    }
    let snap = take(&source).await;
    let n = snap.items.len();
    assert!(n > 1_600, "{n} items");
    let secret_ids: Vec<SecretId> = snap
        .items
        .iter()
        .filter_map(|i| match serde_json::from_slice::<Change>(i).unwrap() {
            Change::SecretPut { secret_id, .. } => Some(secret_id),
            _ => None,
        })
        .collect();
    assert!(secret_ids.len() > 1_600);
    assert!(
        secret_ids.windows(2).all(|w| w[0] < w[1]),
        "a snapshot lists secrets in id order"
    );

    let path = dir.path().join("edge.db");
    let wal = dir.path().join("edge.db-wal");
    let replica = open(&path);
    let (c, seq, hash) = (snap.cluster_id, snap.seq, snap.hash);
    install_counted(&replica, c, seq, hash, n as u64, &snap.items)
        .await
        .unwrap();
    assert_same(&source, &replica, &probe, "after a large install").await;
    for w in [&fx.a, &fx.b] {
        assert_eq!(
            replica.secret_count(w.account).await.unwrap(),
            source.secret_count(w.account).await.unwrap(),
            "secrets counted by the install"
        );
        assert_eq!(
            store_total(&replica, w.account, w.store).await,
            store_total(&source, w.account, w.store).await,
            "a store's secrets counted by the install"
        );
    }
    assert_eq!(
        std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0),
        0,
        "the install's WAL is checkpointed and truncated by the time its commit returns"
    );
    // The count trigger is back: a secret arriving by the feed is counted.
    secret_by_feed(
        &source,
        &replica,
        &fx.a,
        "late",
        &mut probe,
        "after an install",
    )
    .await;
    let before = fingerprint(&replica, &source, &probe).await;

    // Dropped after several batches reached the writer: nothing changed, the writer is free
    // and the trigger is still there.
    {
        let mut install = replica.install_snapshot(c, seq, hash, n as u64);
        for item in &snap.items[..n / 2] {
            install.push(item.clone()).await.unwrap();
        }
    }
    assert_eq!(fingerprint(&replica, &source, &probe).await, before);
    replica.outbox_put([4; 16], b"x".to_vec()).await.unwrap();

    // A secret of a store the snapshot does not carry, early on: a later push fails (the
    // items after it are refused without waiting for the commit), then the commit.
    let first_secret = snap
        .items
        .iter()
        .position(|i| {
            matches!(
                serde_json::from_slice::<Change>(i).unwrap(),
                Change::SecretPut { .. }
            )
        })
        .unwrap();
    let mut strayed = snap.items.clone();
    let mut change: Change = serde_json::from_slice(&strayed[first_secret]).unwrap();
    let Change::SecretPut { store_id, .. } = &mut change else {
        unreachable!("found as a secret")
    };
    *store_id = StoreId::from_bytes(id());
    strayed[first_secret] = serde_json::to_vec(&change).unwrap();
    let mut install = replica.install_snapshot(c, seq, hash, n as u64);
    let mut refused_at = None;
    for (i, item) in strayed.iter().enumerate() {
        if let Err(e) = install.push(item.clone()).await {
            assert!(
                matches!(&e, StorageError::Corrupted(m) if m.contains("snapshot item")),
                "{e:?}"
            );
            refused_at = Some(i);
            break;
        }
    }
    // Only the batches the install queues can be pushed past a failed one.
    assert!(
        refused_at.is_some_and(|i| i < first_secret + 5 * 256),
        "a push after the bad item's batch reached the writer fails: {refused_at:?}"
    );
    assert!(install.commit().await.is_err());
    assert_eq!(fingerprint(&replica, &source, &probe).await, before);

    // The same snapshot with one secret twice (the header counting it): the duplicate's id
    // is refused by the replica's rows and nothing of the install stays.
    let mut twice = snap.items.clone();
    twice.push(snap.items[first_secret].clone());
    let result = install_counted(&replica, c, seq, hash, n as u64 + 1, &twice).await;
    assert!(
        matches!(&result, Err(StorageError::Corrupted(m)) if m.contains("snapshot item")),
        "a secret named twice: {result:?}"
    );
    assert_eq!(fingerprint(&replica, &source, &probe).await, before);
    // Failed and dropped installs rolled the trigger's suspension back with the rest.
    secret_by_feed(
        &source,
        &replica,
        &fx.a,
        "later",
        &mut probe,
        "after failed installs",
    )
    .await;
    assert_same(
        &source,
        &replica,
        &probe,
        "after failed installs and the feed",
    )
    .await;
}
