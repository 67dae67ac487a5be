//! What edge replication reads from a backend: the log's identity, base and head, the head
//! watch, compaction, snapshots, and the control plane's record of access batches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use coffer_types::{Scope, Scopes, TokenId, Version};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::audit::{chain, entry};
use super::fixtures::{
    Tenant, account_record, all_changes, create_secret, id_bytes, secret, store, store_record,
    tenant, token_record, ts, wrapped_key,
};
use super::services::{put_of, service_record, token_of};
use crate::{
    AuditCheckpoint, Change, ChangeRecord, DekRecord, LogState, SecretUpdate, SnapshotPart,
    Storage, StorageError, VersionRecord,
};

/// Every part `snapshot` sends, or its error.
pub(super) async fn take_snapshot(s: &dyn Storage) -> crate::Result<Vec<SnapshotPart>> {
    // A small channel, so the producer has to wait for the consumer (as with a slow edge).
    let (tx, mut rx) = mpsc::channel(2);
    let consume = async {
        let mut parts = Vec::new();
        while let Some(part) = rx.recv().await {
            parts.push(part);
        }
        parts
    };
    let (result, parts) = tokio::join!(s.snapshot(tx), consume);
    result.map(|()| parts)
}

/// The header's fields and the items decoded, after checking that the parts are one header
/// followed by exactly `count` items, each the log's own serialization of its change.
pub(super) fn split_snapshot(parts: Vec<SnapshotPart>) -> ([u8; 16], u64, [u8; 32], Vec<Change>) {
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
    let items: Vec<Change> = parts
        .map(|part| match part {
            SnapshotPart::Item(bytes) => {
                let change: Change =
                    serde_json::from_slice(&bytes).expect("a snapshot item is a Change");
                assert_eq!(
                    serde_json::to_vec(&change).unwrap(),
                    bytes,
                    "a snapshot item is serialized exactly like a log payload"
                );
                change
            }
            SnapshotPart::Header { .. } => panic!("a snapshot has one header"),
        })
        .collect();
    assert_eq!(
        items.len() as u64,
        count,
        "the header counts the items that follow"
    );
    (cluster_id, seq, hash, items)
}

pub(super) async fn log_state_and_cluster_id(s: Arc<dyn Storage>) {
    assert_eq!(
        s.log_state().await.unwrap(),
        LogState {
            cluster_id: None,
            base_seq: 0,
            base_hash: ChangeRecord::GENESIS_HASH,
            head_seq: 0,
            head_hash: ChangeRecord::GENESIS_HASH,
        },
        "a fresh log has no identity and nothing in it"
    );
    let t = tenant(&*s, "acme").await;
    store(&*s, t, "prod").await;
    let log = all_changes(&*s).await;
    let last = log.last().unwrap();
    let state = s.log_state().await.unwrap();
    assert_eq!(state.cluster_id, None, "writes do not make a cluster id");
    assert_eq!((state.base_seq, state.base_hash), (0, [0; 32]));
    assert_eq!((state.head_seq, state.head_hash), (last.seq, last.hash));

    // Racing initialisers agree on one id.
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let s = Arc::clone(&s);
        tasks.spawn(async move { s.ensure_cluster_id().await.unwrap() });
    }
    let ids = tasks.join_all().await;
    let id = ids[0];
    assert!(
        ids.iter().all(|i| *i == id),
        "every racing ensure_cluster_id gets the one id stored: {ids:?}"
    );
    assert_ne!(id, [0; 16], "the cluster id is random");
    assert_eq!(s.ensure_cluster_id().await.unwrap(), id, "and stays");
    let state = s.log_state().await.unwrap();
    assert_eq!(state.cluster_id, Some(id));
    assert_eq!(
        (state.head_seq, state.head_hash),
        (last.seq, last.hash),
        "ensure_cluster_id appends nothing"
    );
    assert_eq!((state.base_seq, state.base_hash), (0, [0; 32]));
    assert_eq!(s.change_head().await.unwrap(), last.seq);

    // Later writes keep the identity.
    tenant(&*s, "beta").await;
    let state = s.log_state().await.unwrap();
    assert_eq!(state.head_seq, last.seq + 2);
    assert_eq!(state.cluster_id, Some(id));
}

pub(super) async fn subscribe_head_announces_log_commits_only(s: Arc<dyn Storage>) {
    let s = &*s;
    let mut head = s.subscribe_head();
    assert_eq!(
        *head.borrow_and_update(),
        0,
        "starts at the head (empty log)"
    );
    let t = tenant(s, "acme").await;
    assert!(
        head.has_changed().unwrap(),
        "appending writes announce the head"
    );
    assert_eq!(*head.borrow_and_update(), 2);
    assert_eq!(s.change_head().await.unwrap(), 2);

    // Writes that append nothing to the log leave the watch alone; each is checked right
    // after it was acknowledged, by which time an announcement would have been made.
    let token = token_record(t.account);
    let mut quiet: Vec<(&str, crate::Result<()>)> = Vec::new();
    quiet.push((
        "append_audit",
        s.append_audit(&[entry(t.account, "login", "quiet")]).await,
    ));
    quiet.push(("create_token", s.create_token(token.clone(), &[]).await));
    quiet.push((
        "touch_tokens",
        s.touch_tokens(vec![(token.id, ts(9))]).await,
    ));
    quiet.push((
        "revoke_token",
        s.revoke_token(t.account, token.id, ts(10), &[])
            .await
            .map(drop),
    ));
    quiet.push((
        "set_account_quota",
        s.set_account_quota(t.account, Some(5), &[]).await,
    ));
    quiet.push((
        "put_instance_key_if_absent",
        s.put_instance_key_if_absent("token-mac", wrapped_key(3))
            .await
            .map(drop),
    ));
    quiet.push(("ensure_cluster_id", s.ensure_cluster_id().await.map(drop)));
    quiet.push((
        "record_access_batch",
        s.record_access_batch(
            id_bytes(),
            TokenId::from_bytes(id_bytes()),
            &[entry(t.account, "read", "batch")],
        )
        .await
        .map(drop),
    ));
    quiet.push((
        "put_audit_checkpoint",
        s.put_audit_checkpoint(AuditCheckpoint {
            account_id: t.account,
            seq: 1,
            hash: [1; 32],
            mac: vec![2; 32],
            at: ts(11),
        })
        .await,
    ));
    let committed = s.committed_head();
    quiet.push(("compact_log", s.compact_log(1).await));
    assert_eq!(
        s.committed_head(),
        committed,
        "compaction does not move committed_head"
    );
    quiet.push((
        "a refused create_store (over the limit)",
        match s.create_store(store_record(t.account, "x"), 0, &[]).await {
            Err(StorageError::LimitExceeded { .. }) => Ok(()),
            other => panic!("expected LimitExceeded: {other:?}"),
        },
    ));
    for (what, result) in quiet {
        result.unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert!(
            !head.has_changed().unwrap(),
            "{what} appends nothing and must not announce a head"
        );
    }
    assert_eq!(*head.borrow(), 2);

    store(s, t, "prod").await;
    assert!(head.has_changed().unwrap());
    assert_eq!(*head.borrow_and_update(), 3);
    let fresh = s.subscribe_head();
    assert_eq!(*fresh.borrow(), 3, "a new subscriber starts at the head");
}

pub(super) async fn compact_log_moves_the_base(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let st = store(s, t, "prod").await;
    for i in 0..5 {
        create_secret(s, t, st, &format!("S{i}")).await;
    }
    let log = all_changes(s).await;
    assert_eq!(log.len(), 8);

    assert!(
        s.compact_log(0).await.is_ok(),
        "compacting nothing is fine without a cluster id"
    );
    assert!(
        matches!(s.compact_log(3).await, Err(StorageError::Invalid(_))),
        "a log without a cluster id is not compacted"
    );
    let id = s.ensure_cluster_id().await.unwrap();
    assert!(
        matches!(s.compact_log(9).await, Err(StorageError::Invalid(_))),
        "not beyond the head"
    );
    assert_eq!(
        all_changes(s).await,
        log,
        "refused compactions delete nothing"
    );

    s.compact_log(3).await.unwrap();
    assert_eq!(
        s.log_state().await.unwrap(),
        LogState {
            cluster_id: Some(id),
            base_seq: 3,
            base_hash: log[2].hash,
            head_seq: 8,
            head_hash: log[7].hash,
        }
    );
    for after in 0..3 {
        match s.changes_after(after, 100).await {
            Err(StorageError::Compacted { base: 3 }) => {}
            other => panic!("changes_after({after}) below the base: {other:?}"),
        }
    }
    assert_eq!(
        s.changes_after(3, 100).await.unwrap(),
        log[3..].to_vec(),
        "from the base on, the entries are as they were"
    );
    assert_eq!(s.changes_after(3, 2).await.unwrap(), log[3..5].to_vec());
    assert_eq!(s.changes_after(5, 2).await.unwrap(), log[5..7].to_vec());
    assert!(s.changes_after(8, 10).await.unwrap().is_empty());
    assert!(s.changes_after(100, 10).await.unwrap().is_empty());
    assert!(
        matches!(s.compact_log(2).await, Err(StorageError::Invalid(_))),
        "the base never moves back"
    );
    s.compact_log(3).await.unwrap();
    assert_eq!(s.change_head().await.unwrap(), 8);

    // Everything: the head stays, now as the base, and appends chain on from it.
    s.compact_log(8).await.unwrap();
    let state = s.log_state().await.unwrap();
    assert_eq!((state.base_seq, state.base_hash), (8, log[7].hash));
    assert_eq!((state.head_seq, state.head_hash), (8, log[7].hash));
    assert_eq!(s.change_head().await.unwrap(), 8);
    assert!(s.changes_after(8, 10).await.unwrap().is_empty());
    assert!(matches!(
        s.changes_after(7, 10).await,
        Err(StorageError::Compacted { base: 8 })
    ));
    assert!(matches!(
        s.changes_after(0, 10).await,
        Err(StorageError::Compacted { base: 8 })
    ));
    create_secret(s, t, st, "AFTER").await;
    let next = s.changes_after(8, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].seq, 9, "seqs go on after the base");
    assert!(
        next[0].follows(&log[7].hash),
        "the first entry after compacting everything chains onto the base"
    );
    assert!(matches!(
        next[0].change().unwrap(),
        Change::SecretPut { ref name, .. } if name == "AFTER"
    ));
    assert_eq!(s.change_head().await.unwrap(), 9);

    // A snapshot of a compacted log is at its head.
    let (cluster, seq, hash, items) = split_snapshot(take_snapshot(s).await.unwrap());
    assert_eq!((cluster, seq, hash), (id, 9, next[0].hash));
    assert_eq!(
        items.len(),
        1 + 1 + 1 + 6,
        "account, DEK, store, six secrets"
    );
}

/// The rank of a change's kind in a snapshot's order.
fn rank(change: &Change) -> u8 {
    match change {
        Change::InstanceKeyPut { .. } => 0,
        Change::AccountPut { .. } => 1,
        Change::DekPut { .. } => 2,
        Change::StorePut { .. } => 3,
        Change::SecretPut { .. } => 4,
        Change::ServicePut { .. } => 5,
        Change::ServiceTokenPut { .. } => 6,
        Change::NodePut { .. } => 7,
        other => panic!("a snapshot holds puts only, not {other:?}"),
    }
}

fn dek_put(dek: &DekRecord) -> Change {
    Change::DekPut {
        account_id: dek.account_id,
        dek_id: dek.key.id,
        kek_id: dek.key.kek_id.clone(),
        wrapped_hex: hex::encode(&dek.key.wrapped),
    }
}

fn secret_put(record: &crate::SecretRecord, value: &VersionRecord) -> Change {
    Change::SecretPut {
        account_id: record.account_id,
        store_id: record.store_id,
        secret_id: record.id,
        name: record.name.as_str().to_owned(),
        scopes: record.scopes.to_strings(),
        version: record.version.0,
        dek_id: value.dek_id,
        sealed_hex: hex::encode(&value.sealed),
    }
}

fn token_put(token: &crate::ServiceTokenRecord) -> Change {
    Change::ServiceTokenPut {
        account_id: token.account_id,
        service_id: token.service_id,
        token_id: token.id,
        hash_hex: hex::encode(token.hash),
    }
}

/// Sorted by their JSON, so two lists compare as multisets.
fn sorted(changes: &[Change]) -> Vec<String> {
    let mut out: Vec<String> = changes
        .iter()
        .map(|c| serde_json::to_string(c).unwrap())
        .collect();
    out.sort();
    out
}

pub(super) async fn snapshot_holds_exactly_the_live_replicated_rows(s: Arc<dyn Storage>) {
    let s = &*s;
    assert!(
        matches!(take_snapshot(s).await, Err(StorageError::Invalid(_))),
        "no snapshot of a log without a cluster id"
    );

    let mut keys = BTreeMap::new();
    for (n, purpose) in [
        "token-mac",
        "audit-mac",
        "service-token-mac",
        "node-token-mac",
    ]
    .into_iter()
    .enumerate()
    {
        let key = s
            .put_instance_key_if_absent(purpose, wrapped_key(n as u8 + 20))
            .await
            .unwrap();
        keys.insert(purpose, key);
    }
    let a = tenant(s, "acme").await;
    let b = tenant(s, "beta").await;
    let gone = tenant(s, "gone").await;
    let prod = store(s, a, "prod").await;
    let dev = store(s, a, "dev").await;
    let old = store(s, a, "old").await;
    let main = store(s, b, "main").await;
    let x = create_secret(s, a, prod, "X").await;
    let y = create_secret(s, a, prod, "Y").await;
    let z = create_secret(s, a, prod, "Z").await;
    let d = create_secret(s, a, dev, "D").await;
    create_secret(s, a, old, "O").await;
    let w = create_secret(s, b, main, "W").await;

    // X: version 2 under the first DEK, version 3 under a second one carried by the update.
    let update =
        |expected: u32, value: Option<VersionRecord>, dek: Option<DekRecord>| SecretUpdate {
            account_id: a.account,
            store_id: prod,
            secret_id: x.record.id,
            expected_version: Version(expected),
            value,
            dek,
            scopes: None,
            comment: None,
            modified: ts(500),
        };
    let v2 = VersionRecord {
        version: Version(2),
        sealed: b"x2".to_vec(),
        ..x.value.clone()
    };
    s.update_secret(update(1, Some(v2), None), &[])
        .await
        .unwrap();
    let dek2 = DekRecord {
        account_id: a.account,
        key: wrapped_key(7),
        rk: None,
    };
    let v3 = VersionRecord {
        version: Version(3),
        sealed: b"x3".to_vec(),
        dek_id: dek2.key.id,
        ..x.value.clone()
    };
    let x3 = s
        .update_secret(update(2, Some(v3.clone()), Some(dek2.clone())), &[])
        .await
        .unwrap();
    // Y: new scopes, same value.
    let y2 = s
        .update_secret(
            SecretUpdate {
                account_id: a.account,
                store_id: prod,
                secret_id: y.record.id,
                expected_version: Version::FIRST,
                value: None,
                dek: None,
                scopes: Some(Scopes::new([Scope::AiGateway, Scope::Workers])),
                comment: Some("rescoped".into()),
                modified: ts(501),
            },
            &[],
        )
        .await
        .unwrap();
    s.delete_secrets(a.account, prod, &[z.record.id], &[])
        .await
        .unwrap();
    s.delete_store(a.account, old, true, &[]).await.unwrap();

    let api = service_record(a.account, "api");
    let api_first = token_of(&api, 31);
    s.create_service(api.clone(), api_first.clone(), &[])
        .await
        .unwrap();
    let api_second = token_of(&api, 32);
    s.create_service_token(api_second.clone(), None, &[])
        .await
        .unwrap();
    s.revoke_service_tokens(a.account, api.id, Some(api_second.id), ts(40), &[])
        .await
        .unwrap();
    let retired = service_record(a.account, "retired");
    s.create_service(retired.clone(), token_of(&retired, 31), &[])
        .await
        .unwrap();
    s.delete_service(a.account, retired.id, &[]).await.unwrap();
    let web = service_record(b.account, "web");
    let web_token = token_of(&web, 33);
    s.create_service(web.clone(), web_token.clone(), &[])
        .await
        .unwrap();
    let gone_store = store(s, gone, "doomed").await;
    create_secret(s, gone, gone_store, "G").await;
    let gone_service = service_record(gone.account, "doomed");
    s.create_service(gone_service.clone(), token_of(&gone_service, 31), &[])
        .await
        .unwrap();
    s.delete_account(gone.account, &[]).await.unwrap();

    let id = s.ensure_cluster_id().await.unwrap();
    let state = s.log_state().await.unwrap();
    let (cluster, seq, hash, items) = split_snapshot(take_snapshot(s).await.unwrap());
    assert_eq!(cluster, id, "the header names the cluster");
    assert_eq!(
        (seq, hash),
        (state.head_seq, state.head_hash),
        "the header is the log head"
    );
    for pair in items.windows(2) {
        assert!(
            rank(&pair[0]) <= rank(&pair[1]),
            "items come in the documented order: {:?} before {:?}",
            pair[0],
            pair[1]
        );
    }

    let dek = |t: Tenant| async move { s.get_dek(t.dek).await.unwrap().unwrap() };
    let key_put = |purpose: &str| {
        let key = &keys[purpose];
        Change::InstanceKeyPut {
            purpose: purpose.to_owned(),
            key_id: key.id,
            kek_id: key.kek_id.clone(),
            wrapped_hex: hex::encode(&key.wrapped),
        }
    };
    let expected = vec![
        key_put("service-token-mac"),
        key_put("node-token-mac"),
        Change::AccountPut {
            account_id: a.account,
            name: "acme".into(),
        },
        Change::AccountPut {
            account_id: b.account,
            name: "beta".into(),
        },
        dek_put(&dek(a).await),
        dek_put(&dek2),
        dek_put(&dek(b).await),
        Change::StorePut {
            account_id: a.account,
            store_id: prod,
            name: "prod".into(),
        },
        Change::StorePut {
            account_id: a.account,
            store_id: dev,
            name: "dev".into(),
        },
        Change::StorePut {
            account_id: b.account,
            store_id: main,
            name: "main".into(),
        },
        secret_put(&x3, &v3),
        secret_put(&y2, &y.value),
        secret_put(&d.record, &d.value),
        secret_put(&w.record, &w.value),
        put_of(&api),
        put_of(&web),
        token_put(&api_first),
        token_put(&web_token),
    ];
    assert_eq!(
        sorted(&items),
        sorted(&expected),
        "a snapshot holds exactly the live replicated rows: current versions only, no \
         deleted secret, store, service or account, no revoked token, and only the service- \
         and node-token MAC keys"
    );
    for item in &items {
        if let Change::InstanceKeyPut { purpose, .. } = item {
            assert!(
                purpose == "service-token-mac" || purpose == "node-token-mac",
                "the {purpose} key must never leave the control plane"
            );
        }
    }

    // Nothing about the snapshot is written.
    assert_eq!(s.log_state().await.unwrap(), state);
}

pub(super) async fn snapshot_fails_when_its_receiver_goes(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let st = store(s, t, "prod").await;
    for i in 0..10 {
        create_secret(s, t, st, &format!("S{i}")).await;
    }
    s.ensure_cluster_id().await.unwrap();
    let (tx, mut rx) = mpsc::channel(1);
    let consume = async {
        let first = rx.recv().await;
        drop(rx);
        first
    };
    let (result, first) = tokio::join!(s.snapshot(tx), consume);
    assert!(matches!(
        first,
        Some(SnapshotPart::Header { count: 13, .. })
    ));
    assert!(
        matches!(result, Err(StorageError::Unavailable(_))),
        "a snapshot whose receiver went away fails: {result:?}"
    );
    // The backend is fine afterwards.
    create_secret(s, t, st, "AFTER").await;
    assert!(take_snapshot(s).await.is_ok());
}

pub(super) async fn record_access_batch_is_idempotent(s: Arc<dyn Storage>) {
    let s = &*s;
    let account = account_record("acme").id;
    let node = TokenId::from_bytes(id_bytes());
    let batch = id_bytes();
    let head = s.change_head().await.unwrap();
    assert!(
        s.record_access_batch(batch, node, &[entry(account, "read", "first")])
            .await
            .unwrap(),
        "a new batch is recorded"
    );
    let records = chain(s, account).await;
    assert_eq!(records.len(), 1, "with its audit entries");
    assert_eq!(records[0].entry, entry(account, "read", "first"));
    assert!(
        !s.record_access_batch(batch, node, &[entry(account, "read", "retry")])
            .await
            .unwrap(),
        "a retried delivery of the same batch is not recorded again"
    );
    assert_eq!(
        chain(s, account).await,
        records,
        "and appends no audit entry"
    );

    // A batch whose audit entries are refused is not recorded, so its retry goes through.
    let other = id_bytes();
    let mut bad = entry(account, "read", "bad");
    bad.outcome.clear();
    assert!(matches!(
        s.record_access_batch(other, node, &[bad]).await,
        Err(StorageError::Invalid(_))
    ));
    assert_eq!(chain(s, account).await, records);
    assert!(
        s.record_access_batch(
            other,
            node,
            &[
                entry(account, "read", "second-a"),
                entry(account, "read", "second-b")
            ]
        )
        .await
        .unwrap()
    );
    let records = chain(s, account).await;
    assert_eq!(records.len(), 3);
    assert_eq!(records[2].entry, entry(account, "read", "second-b"));
    // The batch id is global, not per node.
    assert!(
        !s.record_access_batch(other, TokenId::from_bytes(id_bytes()), &[])
            .await
            .unwrap()
    );
    assert!(
        s.record_access_batch(id_bytes(), node, &[]).await.unwrap(),
        "a batch without entries is recorded too"
    );
    assert_eq!(
        s.change_head().await.unwrap(),
        head,
        "access batches append nothing to the change log"
    );
}

/// The race: many writers through the public API while a follower tails the log with
/// `subscribe_head` and `changes_after`. It must see every entry exactly once, in order,
/// gap-free and chained, and whatever the watch announces must already be readable.
pub(super) async fn a_follower_sees_every_entry_once_in_order(s: Arc<dyn Storage>) {
    const WRITERS: usize = 16;
    const WRITES: usize = 50;
    let mut head = s.subscribe_head();
    let start = *head.borrow_and_update();
    let start_hash = s.log_state().await.unwrap().head_hash;
    let total = start + (WRITERS * WRITES) as u64;

    let follower = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            let (mut last, mut prev) = (start, start_hash);
            let mut seen = 0u64;
            loop {
                // Catch up with what is committed, in small pages.
                loop {
                    let page = s.changes_after(last, 37).await.unwrap();
                    if page.is_empty() {
                        break;
                    }
                    for record in page {
                        assert_eq!(
                            record.seq,
                            last + 1,
                            "the follower sees every seq once, in order, without gaps"
                        );
                        assert!(
                            record.follows(&prev),
                            "entry {} chains onto the one before",
                            record.seq
                        );
                        prev = record.hash;
                        last = record.seq;
                        seen += 1;
                    }
                }
                if last >= total {
                    return (last, seen);
                }
                let announced = tokio::time::timeout(Duration::from_secs(60), async {
                    head.changed().await.expect("the head watch stays open");
                    *head.borrow_and_update()
                })
                .await
                .expect("a commit after the follower's position is announced");
                let readable = s.change_head().await.unwrap();
                assert!(
                    readable >= announced,
                    "the watch announced {announced} before it was readable ({readable})"
                );
            }
        })
    };

    let mut writers = JoinSet::new();
    for w in 0..WRITERS {
        let s = Arc::clone(&s);
        writers.spawn(async move {
            // Account and DEK, store, then one secret per write: WRITES entries in all.
            let t = tenant(&*s, &format!("tenant-{w}")).await;
            let st = store(&*s, t, "prod").await;
            for i in 0..WRITES - 3 {
                s.create_secrets(
                    t.account,
                    st,
                    vec![secret(t, st, &format!("S{i}"))],
                    1000,
                    &[],
                )
                .await
                .unwrap();
            }
        });
    }
    writers.join_all().await;
    let (last, seen) = tokio::time::timeout(Duration::from_secs(60), follower)
        .await
        .expect("the follower reaches the head")
        .unwrap();
    assert_eq!(last, total);
    assert_eq!(seen, total - start, "each entry exactly once");
    assert_eq!(s.change_head().await.unwrap(), total);
    let announced = *s.subscribe_head().borrow();
    assert_eq!(announced, total, "the watch ends at the head");
}
