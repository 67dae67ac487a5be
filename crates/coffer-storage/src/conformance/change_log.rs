//! The change log: one entry per change, gap-free, hash-chained, nothing for failures.

use std::sync::Arc;

use coffer_types::{Scope, Scopes, SecretId, Version};

use super::fixtures::{
    account_record, all_changes, assert_chain, assert_chain_from, assert_head, create_secret,
    id_bytes, retained_changes, secret, store, store_record, tenant, token_record, ts, wrapped_key,
};
use crate::{Change, DekRecord, SecretUpdate, Storage, StorageError, VersionRecord};

/// Runs one of every mutation and compares the whole log with what each must append.
pub(super) async fn log_records_each_mutation(s: Arc<dyn Storage>) {
    let s = &*s;
    assert_eq!(s.change_head().await.unwrap(), 0, "a fresh log is empty");
    assert!(all_changes(s).await.is_empty());

    let account = account_record("acme");
    s.create_account(account.clone(), &[]).await.unwrap();
    let key = wrapped_key(9);
    s.put_dek(DekRecord {
        account_id: account.id,
        key: key.clone(),
        rk: None,
    })
    .await
    .unwrap();
    let t = super::fixtures::Tenant {
        account: account.id,
        dek: key.id,
    };
    let token = token_record(account.id);
    s.create_token(token.clone(), &[]).await.unwrap();
    s.touch_tokens(vec![(token.id, ts(7))]).await.unwrap();
    s.revoke_token(account.id, token.id, ts(8), &[])
        .await
        .unwrap();
    s.put_instance_key_if_absent("token-mac", wrapped_key(3))
        .await
        .unwrap();
    let st = store_record(account.id, "prod");
    s.create_store(st.clone(), 10, &[]).await.unwrap();
    let x = secret(t, st.id, "X");
    let mut y = secret(t, st.id, "Y");
    y.record.scopes = Scopes::new([Scope::Workers, Scope::AiGateway]);
    s.create_secrets(t.account, st.id, vec![x.clone(), y.clone()], 10, &[])
        .await
        .unwrap();
    let x2 = VersionRecord {
        version: Version(2),
        sealed: b"x2".to_vec(),
        created: ts(40),
        ..x.value.clone()
    };
    s.update_secret(
        SecretUpdate {
            account_id: t.account,
            store_id: st.id,
            secret_id: x.record.id,
            expected_version: Version::FIRST,
            value: Some(x2),
            scopes: None,
            comment: None,
            modified: ts(40),
            dek: None,
        },
        &[],
    )
    .await
    .unwrap();
    s.update_secret(
        SecretUpdate {
            account_id: t.account,
            store_id: st.id,
            secret_id: y.record.id,
            expected_version: Version::FIRST,
            value: None,
            scopes: Some(Scopes::default()),
            comment: Some("now unscoped".into()),
            modified: ts(41),
            dek: None,
        },
        &[],
    )
    .await
    .unwrap();
    s.delete_secrets(t.account, st.id, &[x.record.id], &[])
        .await
        .unwrap();
    s.delete_store(t.account, st.id, true, &[]).await.unwrap();
    let gone = store_record(account.id, "gone");
    s.create_store(gone.clone(), 10, &[]).await.unwrap();
    let z = secret(t, gone.id, "Z");
    s.create_secrets(t.account, gone.id, vec![z.clone()], 10, &[])
        .await
        .unwrap();
    // Read before the deletion compacts it away.
    let before_delete = all_changes(s).await;
    s.delete_account(account.id, &[]).await.unwrap();

    let put =
        |n: &crate::NewSecret, scopes: &[&str], version: u32, sealed: &[u8]| Change::SecretPut {
            account_id: t.account,
            store_id: st.id,
            secret_id: n.record.id,
            name: n.record.name.as_str().to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            version,
            dek_id: t.dek,
            sealed_hex: hex::encode(sealed),
        };
    let deleted = |id: SecretId| Change::SecretDeleted {
        account_id: t.account,
        store_id: st.id,
        secret_id: id,
    };
    let expected = vec![
        Change::AccountPut {
            account_id: account.id,
            name: "acme".into(),
        },
        Change::DekPut {
            account_id: account.id,
            dek_id: key.id,
            kek_id: key.kek_id.clone(),
            wrapped_hex: hex::encode(&key.wrapped),
        },
        Change::StorePut {
            account_id: account.id,
            store_id: st.id,
            name: "prod".into(),
        },
        put(&x, &["workers"], 1, &x.value.sealed),
        put(&y, &["workers", "ai_gateway"], 1, &y.value.sealed),
        put(&x, &["workers"], 2, b"x2"),
        put(&y, &[], 1, &y.value.sealed),
        deleted(x.record.id),
        deleted(y.record.id),
        Change::StoreDeleted {
            account_id: account.id,
            store_id: st.id,
        },
        Change::StorePut {
            account_id: account.id,
            store_id: gone.id,
            name: "gone".into(),
        },
        Change::SecretPut {
            account_id: t.account,
            store_id: gone.id,
            secret_id: z.record.id,
            name: "Z".into(),
            scopes: vec!["workers".into()],
            version: 1,
            dek_id: t.dek,
            sealed_hex: hex::encode(&z.value.sealed),
        },
        Change::SecretDeleted {
            account_id: account.id,
            store_id: gone.id,
            secret_id: z.record.id,
        },
        Change::StoreDeleted {
            account_id: account.id,
            store_id: gone.id,
        },
        Change::AccountDeleted {
            account_id: account.id,
        },
    ];

    // Deleting the account compacted the log through the last entry naming its DEK (Z's
    // SecretPut, seq 12): what is retained is the rest, exactly.
    let (base, base_hash, log) = retained_changes(s).await;
    assert_eq!(
        base, 12,
        "compacted through the last entry naming the deleted DEK"
    );
    assert_chain_from(base, base_hash, &log);
    let changes: Vec<Change> = log
        .iter()
        .map(|r| r.change().expect("every payload decodes to a Change"))
        .collect();
    assert_eq!(
        changes,
        expected[base as usize..],
        "the log holds exactly one entry per change, in order"
    );
    assert_chain(&before_delete);
    let earlier: Vec<Change> = before_delete
        .iter()
        .map(|r| r.change().expect("every payload decodes to a Change"))
        .collect();
    assert_eq!(
        earlier,
        expected[..before_delete.len()],
        "the log held exactly one entry per change, in order, before the deletion"
    );
    assert_eq!(s.change_head().await.unwrap(), expected.len() as u64);
}

pub(super) async fn changes_after_pages_through_the_log(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let st = store(s, t, "prod").await;
    for i in 0..5 {
        create_secret(s, t, st, &format!("S{i}")).await;
    }
    let log = all_changes(s).await;
    assert_chain(&log);
    let n = log.len() as u64;
    assert_eq!(n, 8, "account, DEK, store and five secrets");
    assert_eq!(s.change_head().await.unwrap(), n);
    for after in 0..=n + 2 {
        for limit in [1usize, 2, 3, 100] {
            let got = s.changes_after(after, limit).await.unwrap();
            let start = (after as usize).min(log.len());
            let end = (start + limit).min(log.len());
            assert_eq!(
                got,
                log[start..end].to_vec(),
                "changes_after({after}, {limit}) is the next {limit} entries"
            );
        }
        assert!(
            s.changes_after(after, 0).await.unwrap().is_empty(),
            "limit 0 returns nothing"
        );
    }
}

pub(super) async fn failed_operations_append_nothing(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let full = store(s, t, "full").await;
    let existing = create_secret(s, t, full, "EXISTS").await;
    let head = s.change_head().await.unwrap();

    let results: Vec<(&str, crate::Result<()>)> = vec![
        (
            "create_account with an existing id",
            s.create_account(
                crate::AccountRecord {
                    id: t.account,
                    ..account_record("again")
                },
                &[],
            )
            .await,
        ),
        (
            "create_store with a taken name",
            s.create_store(store_record(t.account, "full"), 10, &[])
                .await,
        ),
        (
            "create_store over the limit",
            s.create_store(store_record(t.account, "more"), 1, &[])
                .await,
        ),
        (
            "delete_store on a non-empty store",
            s.delete_store(t.account, full, false, &[]).await,
        ),
        (
            // The first item is valid and would be appended before the clash is found.
            "create_secrets whose second item clashes",
            s.create_secrets(
                t.account,
                full,
                vec![secret(t, full, "NEW"), secret(t, full, "EXISTS")],
                10,
                &[],
            )
            .await,
        ),
        (
            "create_secrets over the quota",
            s.create_secrets(t.account, full, vec![secret(t, full, "NEW")], 1, &[])
                .await,
        ),
        (
            "update_secret with a stale version",
            s.update_secret(
                SecretUpdate {
                    account_id: t.account,
                    store_id: full,
                    secret_id: existing.record.id,
                    expected_version: Version(7),
                    value: None,
                    scopes: None,
                    comment: Some("x".into()),
                    modified: ts(1),
                    dek: None,
                },
                &[],
            )
            .await
            .map(drop),
        ),
        (
            "delete_secrets with a missing id",
            s.delete_secrets(
                t.account,
                full,
                &[existing.record.id, SecretId::from_bytes(id_bytes())],
                &[],
            )
            .await,
        ),
        (
            "delete_account of an unknown account",
            s.delete_account(account_record("ghost").id, &[]).await,
        ),
        (
            "revoke_token of an unknown token",
            s.revoke_token(
                t.account,
                crate::TokenId::from_bytes(id_bytes()),
                ts(1),
                &[],
            )
            .await
            .map(drop),
        ),
        (
            "put_dek for an unknown account",
            s.put_dek(DekRecord {
                account_id: account_record("ghost").id,
                key: wrapped_key(4),
                rk: None,
            })
            .await,
        ),
    ];
    for (what, result) in results {
        assert!(result.is_err(), "{what} must fail");
        assert_head(s, head, what).await;
    }

    // The next successful operation continues the chain right after the last success.
    create_secret(s, t, full, "AFTER").await;
    let log = all_changes(s).await;
    assert_eq!(log.len() as u64, head + 1);
    assert_chain(&log);
    assert!(matches!(
        log[head as usize].change().unwrap(),
        Change::SecretPut { .. }
    ));
    let err = s
        .delete_store(t.account, full, false, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::NotEmpty));
}
