//! The audit log: every mutation appends exactly the entries it carries, in its own
//! transaction, and nothing when it fails; chains are per account, gap-free and hash-chained;
//! the log outlives the account.

use std::sync::Arc;

use coffer_types::{AccountId, SecretId, StoreId, TokenId, Version};
use tokio::task::JoinSet;

use super::fixtures::{
    account_record, all_changes, assert_chain, create_secret, id_bytes, secret, store,
    store_record, tenant, token_record, ts,
};
use crate::{
    AuditCheckpoint, AuditEntry, AuditRecord, Entity, SecretUpdate, Storage, StorageError,
};

/// An entry for `account` whose payload makes it unique (so order and identity are checked).
pub(super) fn entry(account: AccountId, action: &str, tag: &str) -> AuditEntry {
    AuditEntry {
        account_id: account,
        at: ts(100),
        action: action.to_owned(),
        outcome: "success".to_owned(),
        actor_token: Some(TokenId::from_bytes([0xA0; 16])),
        store_id: None,
        secret_id: None,
        payload: format!(r#"{{"tag":"{tag}"}}"#).into_bytes(),
    }
}

/// Every record of the account's chain.
pub(super) async fn chain(s: &dyn Storage, account: AccountId) -> Vec<AuditRecord> {
    s.audit_entries(account, 0, 1_000_000)
        .await
        .expect("audit_entries(0)")
}

/// Asserts that `records` is a whole chain: seq 1, 2, 3, ..., seq 1 chained onto 32 zero
/// bytes, each `prev_hash` the previous record's hash, and each hash recomputed here with
/// [`AuditRecord::compute_hash`]; also that `audit_head` names the last record.
pub(super) async fn assert_audit_chain(s: &dyn Storage, account: AccountId) -> Vec<AuditRecord> {
    let records = chain(s, account).await;
    let mut prev = [0u8; 32];
    for (i, r) in records.iter().enumerate() {
        assert_eq!(
            r.seq,
            i as u64 + 1,
            "audit seqs are 1, 2, 3, ... per account, without gaps"
        );
        assert_eq!(
            r.entry.account_id, account,
            "a chain holds its account only"
        );
        assert_eq!(
            r.prev_hash, prev,
            "audit {} must chain onto its predecessor",
            r.seq
        );
        assert_eq!(
            r.hash,
            AuditRecord::compute_hash(&prev, r.seq, &r.entry),
            "audit {} must carry compute_hash(prev_hash, seq, entry)",
            r.seq
        );
        prev = r.hash;
    }
    assert_eq!(
        s.audit_head(account).await.unwrap(),
        records.last().map(|r| (r.seq, r.hash)),
        "audit_head names the last record"
    );
    records
}

fn entries_of(records: &[AuditRecord]) -> Vec<AuditEntry> {
    records.iter().map(|r| r.entry.clone()).collect()
}

/// One of every mutating method, each carrying entries, and the chain holds exactly those, in
/// order. Entries may name another account's chain than the call's.
pub(super) async fn every_mutation_appends_its_entries(s: Arc<dyn Storage>) {
    let s = &*s;
    let operator = AccountId::from_bytes(id_bytes());
    let account = account_record("acme");
    let a = account.id;
    let mut expected: Vec<AuditEntry> = Vec::new();
    let mut expected_operator: Vec<AuditEntry> = Vec::new();

    let e = vec![
        entry(a, "create", "account"),
        entry(operator, "create", "op"),
    ];
    s.create_account(account.clone(), &e).await.unwrap();
    expected.push(e[0].clone());
    expected_operator.push(e[1].clone());

    // The DEK the secrets below need; put_dek carries no audit entries.
    let key = super::fixtures::wrapped_key(2);
    s.put_dek(crate::DekRecord {
        account_id: a,
        key: key.clone(),
        rk: None,
    })
    .await
    .unwrap();
    let t = super::fixtures::Tenant {
        account: a,
        dek: key.id,
    };

    let token = token_record(a);
    let e = [entry(a, "create", "token")];
    s.create_token(token.clone(), &e).await.unwrap();
    expected.extend(e);
    let e = [entry(a, "delete", "revoke")];
    s.revoke_token(a, token.id, ts(9), &e).await.unwrap();
    expected.extend(e);
    let e = [entry(a, "update", "quota")];
    s.set_account_quota(a, Some(10), &e).await.unwrap();
    expected.extend(e);

    let st = store_record(a, "prod");
    let mut e = entry(a, "create", "store");
    e.store_id = Some(st.id);
    s.create_store(st.clone(), 10, std::slice::from_ref(&e))
        .await
        .unwrap();
    expected.push(e);

    let x = secret(t, st.id, "X");
    let y = secret(t, st.id, "Y");
    // Two entries for one bulk create: one per secret.
    let e: Vec<AuditEntry> = [&x, &y]
        .iter()
        .map(|n| AuditEntry {
            store_id: Some(st.id),
            secret_id: Some(n.record.id),
            ..entry(a, "create", n.record.name.as_str())
        })
        .collect();
    s.create_secrets(a, st.id, vec![x.clone(), y.clone()], 10, &e)
        .await
        .unwrap();
    expected.extend(e);

    let e = [entry(a, "update", "secret")];
    s.update_secret(
        SecretUpdate {
            account_id: a,
            store_id: st.id,
            secret_id: x.record.id,
            expected_version: Version::FIRST,
            value: None,
            dek: None,
            scopes: None,
            comment: Some("c".into()),
            modified: ts(30),
        },
        &e,
    )
    .await
    .unwrap();
    expected.extend(e);
    let e = [entry(a, "delete", "secret")];
    s.delete_secrets(a, st.id, &[x.record.id], &e)
        .await
        .unwrap();
    expected.extend(e);
    let e = [entry(a, "delete", "store")];
    s.delete_store(a, st.id, true, &e).await.unwrap();
    expected.extend(e);
    // No entries is allowed too, and appends nothing.
    s.create_store(store_record(a, "quiet"), 10, &[])
        .await
        .unwrap();
    let e = [
        entry(a, "delete", "account"),
        entry(operator, "delete", "op"),
    ];
    s.delete_account(a, &e).await.unwrap();
    expected.push(e[0].clone());
    expected_operator.push(e[1].clone());

    let records = assert_audit_chain(s, a).await;
    assert_eq!(
        entries_of(&records),
        expected,
        "each mutation appends exactly its entries, in the order given"
    );
    let records = assert_audit_chain(s, operator).await;
    assert_eq!(
        entries_of(&records),
        expected_operator,
        "an entry joins the chain of its own account"
    );
}

/// Representative failures carry entries and append none; entries that cannot be appended
/// make the whole operation fail and write nothing (fail closed).
pub(super) async fn failed_operations_append_no_audit(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let a = t.account;
    let st = store(s, t, "prod").await;
    create_secret(s, t, st, "X").await;
    let token = token_record(a);
    s.create_token(token.clone(), &[]).await.unwrap();
    s.revoke_token(a, token.id, ts(9), &[]).await.unwrap();
    s.append_audit(&[entry(a, "login", "before")])
        .await
        .unwrap();
    let head = s.audit_head(a).await.unwrap();
    assert_eq!(head.map(|h| h.0), Some(1));
    let changes = all_changes(s).await.len();
    let e = [entry(a, "create", "must not appear")];

    let err = s
        .create_store(store_record(a, "prod"), 10, &e)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::NameTaken { .. }), "{err:?}");
    let err = s
        .create_secrets(a, st, vec![secret(t, st, "Y")], 1, &e)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::QuotaExceeded { .. }), "{err:?}");
    let err = s.delete_store(a, st, false, &e).await.unwrap_err();
    assert!(matches!(err, StorageError::NotEmpty), "{err:?}");
    let err = s.revoke_token(a, token.id, ts(10), &e).await.unwrap_err();
    assert!(matches!(err, StorageError::AlreadyRevoked), "{err:?}");
    let err = s
        .delete_account(AccountId::from_bytes(id_bytes()), &[entry(a, "x", "y")])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::NotFound(_)), "{err:?}");
    assert_eq!(
        s.audit_head(a).await.unwrap(),
        head,
        "a failed operation appends no audit entry"
    );

    // Fail closed: an entry storage refuses (no action, or no outcome) fails the operation it
    // records, even after a valid entry, and nothing of it is written.
    let mut no_action = entry(a, "", "bad");
    no_action.action.clear();
    let mut no_outcome = entry(a, "create", "bad");
    no_outcome.outcome.clear();
    for bad in [no_action, no_outcome] {
        let entries = [entry(a, "create", "good"), bad];
        let quiet = store_record(a, "unaudited");
        let err = s
            .create_store(quiet.clone(), 10, &entries)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Invalid(_)), "{err:?}");
        assert_eq!(
            s.get_store(a, quiet.id).await.unwrap(),
            None,
            "a change whose audit entries cannot be written is refused"
        );
        let err = s
            .create_secrets(a, st, vec![secret(t, st, "Z")], 1000, &entries)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Invalid(_)), "{err:?}");
        let err = s.append_audit(&entries).await.unwrap_err();
        assert!(matches!(err, StorageError::Invalid(_)), "{err:?}");
    }
    assert_eq!(s.secret_count(a).await.unwrap(), 1);
    assert_eq!(
        all_changes(s).await.len(),
        changes,
        "refused operations append nothing to the change log"
    );
    assert_eq!(s.audit_head(a).await.unwrap(), head);
    assert_eq!(assert_audit_chain(s, a).await.len(), 1);
}

/// append_audit alone: entries for several accounts in one call, each chain independent and
/// starting at 1; accounts need not exist; audit_entries pages by seq.
pub(super) async fn append_audit_keeps_one_chain_per_account(s: Arc<dyn Storage>) {
    let s = &*s;
    assert!(s.audit_accounts().await.unwrap().is_empty());
    let a = AccountId::from_bytes(id_bytes());
    let b = AccountId::from_bytes(id_bytes());
    assert_eq!(s.audit_head(a).await.unwrap(), None);
    assert!(chain(s, a).await.is_empty());
    s.append_audit(&[]).await.unwrap();
    assert!(
        s.audit_accounts().await.unwrap().is_empty(),
        "no entries, no chain"
    );

    let mut want_a = Vec::new();
    let mut want_b = Vec::new();
    for i in 0..5 {
        let ea = AuditEntry {
            outcome: "denied".into(),
            store_id: Some(StoreId::from_bytes(id_bytes())),
            secret_id: Some(SecretId::from_bytes(id_bytes())),
            actor_token: None,
            at: ts(i),
            ..entry(a, "access", &format!("a{i}"))
        };
        let eb = entry(b, "login", &format!("b{i}"));
        // Interleaved in one call and across calls.
        s.append_audit(&[ea.clone(), eb.clone(), eb.clone()])
            .await
            .unwrap();
        want_a.push(ea);
        want_b.extend([eb.clone(), eb]);
    }
    let ra = assert_audit_chain(s, a).await;
    let rb = assert_audit_chain(s, b).await;
    assert_eq!(entries_of(&ra), want_a);
    assert_eq!(entries_of(&rb), want_b);
    assert_eq!(rb.len(), 10, "identical entries are still separate records");
    assert_ne!(
        rb[0].hash, rb[1].hash,
        "the chain makes identical entries differ"
    );

    let mut accounts = vec![a, b];
    accounts.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    assert_eq!(s.audit_accounts().await.unwrap(), accounts);

    // audit_entries pages by seq.
    let page = s.audit_entries(b, 3, 4).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );
    assert_eq!(page, rb[3..7]);
    assert!(s.audit_entries(b, 10, 5).await.unwrap().is_empty());
    assert!(s.audit_entries(b, 0, 0).await.unwrap().is_empty());
    assert!(s.audit_entries(b, u64::MAX, 5).await.unwrap().is_empty());
}

/// Many tasks appending (alone and with mutations, some failing) to one chain: gap-free.
pub(super) async fn concurrent_audit_appenders_stay_gap_free(s: Arc<dyn Storage>) {
    const TASKS: usize = 30;
    let t = tenant(&*s, "acme").await;
    let a = t.account;
    let st = store(&*s, t, "prod").await;
    let other = AccountId::from_bytes(id_bytes());
    let mut tasks = JoinSet::new();
    for i in 0..TASKS {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            let e = [entry(a, "access", &format!("append {i}"))];
            s.append_audit(&e).await.unwrap();
            // Every third task's create clashes on a name and must leave no entry.
            let name = if i % 3 == 0 {
                "contested".to_owned()
            } else {
                format!("S{i}")
            };
            let e = [
                entry(a, "create", &format!("create {i}")),
                entry(other, "create", &format!("other {i}")),
            ];
            s.create_secrets(a, st, vec![secret(t, st, &name)], 1000, &e)
                .await
                .is_ok()
        });
    }
    let created = tasks.join_all().await.iter().filter(|ok| **ok).count();
    let records = assert_audit_chain(&*s, a).await;
    assert_eq!(
        records.len(),
        TASKS + created,
        "one entry per append and per successful create, none for failed ones"
    );
    assert_eq!(assert_audit_chain(&*s, other).await.len(), created);
    assert_eq!(s.secret_count(a).await.unwrap(), created as u64);
    assert_chain(&all_changes(&*s).await);
}

/// The audit log outlives the account: delete_account keeps its records and checkpoints, and
/// its chain continues.
pub(super) async fn audit_survives_delete_account(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let a = t.account;
    let st = store(s, t, "prod").await;
    s.append_audit(&[entry(a, "create", "1"), entry(a, "create", "2")])
        .await
        .unwrap();
    let (seq, hash) = s.audit_head(a).await.unwrap().unwrap();
    let cp = AuditCheckpoint {
        account_id: a,
        seq,
        hash,
        mac: vec![1, 2, 3],
        at: ts(50),
    };
    s.put_audit_checkpoint(cp.clone()).await.unwrap();
    let mut e = entry(a, "delete", "account");
    e.store_id = Some(st);
    s.delete_account(a, std::slice::from_ref(&e)).await.unwrap();
    assert_eq!(s.get_account(a).await.unwrap(), None);

    let records = assert_audit_chain(s, a).await;
    assert_eq!(records.len(), 3);
    assert_eq!(
        records[2].entry, e,
        "delete_account's own entry is recorded"
    );
    assert_eq!(
        s.audit_checkpoints(a, 0, 10).await.unwrap(),
        vec![cp.clone()]
    );
    assert_eq!(s.last_audit_checkpoint(a).await.unwrap(), Some(cp));
    assert_eq!(s.audit_accounts().await.unwrap(), vec![a]);
    // Denials against the deleted account still join its chain.
    s.append_audit(&[entry(a, "access", "after")])
        .await
        .unwrap();
    assert_eq!(assert_audit_chain(s, a).await.len(), 4);
    let page = s
        .list_audit(
            a,
            &crate::AuditQuery {
                page: 1,
                per_page: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.total_count, 4);
}

/// Checkpoints round-trip, ordered by seq whatever the insertion order, paged by seq; one per
/// (account, seq).
pub(super) async fn audit_checkpoints_round_trip(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = AccountId::from_bytes(id_bytes());
    let b = AccountId::from_bytes(id_bytes());
    assert!(s.audit_checkpoints(a, 0, 10).await.unwrap().is_empty());
    assert_eq!(s.last_audit_checkpoint(a).await.unwrap(), None);
    let cp = |account: AccountId, seq: u64| AuditCheckpoint {
        account_id: account,
        seq,
        hash: [seq as u8; 32],
        mac: vec![seq as u8; 32],
        at: ts(seq as i64),
    };
    for seq in [5, 2, 9] {
        s.put_audit_checkpoint(cp(a, seq)).await.unwrap();
    }
    s.put_audit_checkpoint(cp(b, 5)).await.unwrap();
    assert_eq!(
        s.audit_checkpoints(a, 0, 10).await.unwrap(),
        vec![cp(a, 2), cp(a, 5), cp(a, 9)]
    );
    assert_eq!(s.audit_checkpoints(b, 0, 10).await.unwrap(), vec![cp(b, 5)]);
    // Paged by seq.
    assert_eq!(
        s.audit_checkpoints(a, 0, 2).await.unwrap(),
        vec![cp(a, 2), cp(a, 5)]
    );
    assert_eq!(s.audit_checkpoints(a, 5, 2).await.unwrap(), vec![cp(a, 9)]);
    assert_eq!(s.audit_checkpoints(a, 2, 0).await.unwrap(), vec![]);
    assert_eq!(s.audit_checkpoints(a, 9, 10).await.unwrap(), vec![]);
    assert_eq!(s.last_audit_checkpoint(a).await.unwrap(), Some(cp(a, 9)));

    let mut again = cp(a, 5);
    again.mac = vec![0xFF];
    let err = s.put_audit_checkpoint(again).await.unwrap_err();
    assert!(
        matches!(err, StorageError::AlreadyExists(Entity::AuditCheckpoint)),
        "{err:?}"
    );
    let err = s.put_audit_checkpoint(cp(a, 0)).await.unwrap_err();
    assert!(matches!(err, StorageError::Invalid(_)), "{err:?}");
    assert_eq!(
        s.audit_checkpoints(a, 0, 10).await.unwrap().len(),
        3,
        "unchanged"
    );

    // An account with checkpoints but no records still has a chain to verify (an empty one
    // that should not be).
    let mut accounts = vec![a, b];
    accounts.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    assert_eq!(s.audit_accounts().await.unwrap(), accounts);
}
